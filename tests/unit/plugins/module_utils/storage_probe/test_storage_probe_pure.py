# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure parts of storage_probe: mountinfo, risky options, verdict rules, cliff rules, argument limits."""

from __future__ import annotations

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import identity, probe, result, scale, spec, verdict

MOUNTINFO = (
    '22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n'
    '40 22 0:50 / /srv/mail rw,relatime shared:20 - nfs4 nas:/export/mail '
    'rw,vers=4.2,local_lock=none,actimeo=30,addr=203.0.113.5\n'
    '41 22 0:51 / /srv/with\\040space rw - fuse.sshfs root@be1:/x rw,user_id=0\n'
    '42 40 0:52 / /srv/mail/part2 rw - nfs nas:/p2 rw,nolock,local_lock=all\n'
    '43 22 0:53 / /srv/mail2 rw - tmpfs t1 rw\n'
    '44 22 0:54 / /srv/mail2 rw - xfs /dev/sdb rw\n'
)


@pytest.mark.parametrize('path, point, fstype', [
    ('/srv/mail', '/srv/mail', 'nfs4'),
    ('/srv/mail/user/a', '/srv/mail', 'nfs4'),
    ('/srv/mail/part2/x', '/srv/mail/part2', 'nfs'),
    ('/srv/mailbox', '/', 'ext4'),
    ('/srv/with space/d', '/srv/with space', 'fuse.sshfs'),
    ('/srv/mail2', '/srv/mail2', 'xfs'),  # the later of two stacked mounts is the visible one
])
def test_find_mount(path, point, fstype):
    mount = identity.find_mount(identity.parse_mountinfo(MOUNTINFO), path)
    assert (mount['mount_point'], mount['fstype']) == (point, fstype)


@pytest.mark.parametrize('options, flagged', [
    (['rw', 'local_lock=none', 'actimeo=30'], ['actimeo=30']),
    (['rw', 'nolock', 'local_lock=all'], ['nolock', 'local_lock=all']),
    (['rw', 'relatime'], []),
    (['localflocks', 'nobrl', 'cache=loose'], ['localflocks', 'nobrl', 'cache=loose']),
])
def test_risky_options(options, flagged):
    assert [item['option'] for item in identity.risky_options(options)] == flagged


def test_identify_names_the_type_and_warns_on_risky_options():
    vfs = {'free_bytes': 5 * 2 ** 20, 'free_inodes': 7}
    got = identity.identify('/srv/mail/user', 0x6969, vfs, MOUNTINFO)
    assert got['status'] == 'warn'
    assert got['reason'] == "mount option actimeo=30: attribute cache hides other hosts' changes (actimeo)"
    assert got['evidence']['fs_type'] == 'nfs' and got['evidence']['shared'] is True
    assert got['evidence']['source'] == 'nas:/export/mail'
    sshfs = identity.identify('/srv/with space', 0x65735546, vfs, MOUNTINFO)
    assert sshfs['status'] == 'pass' and sshfs['evidence']['fuse_subtype'] == 'sshfs'
    assert sshfs['evidence']['shared'] is True
    assert sshfs['reason'] == 'fuse.sshfs (0x65735546) from root@be1:/x on /srv/with space; 5 MiB and 7 inodes free'
    assert identity.identify('/x', 0x12345678, vfs, '')['evidence']['fs_type'] == 'unknown'


def _results(**statuses):
    return {name: result.result(name, status, '%s said %s' % (name, status)) for name, status in statuses.items()}


@pytest.mark.parametrize('statuses, expected', [
    ({'fcntl_locks': 'pass', 'hard_links': 'pass'}, 'safe'),
    ({'fcntl_locks': 'pass', 'hard_links': 'warn'}, 'degraded'),
    ({'fcntl_locks': 'pass', 'flock': 'fail'}, 'degraded'),
    ({'fcntl_locks': 'fail', 'hard_links': 'warn'}, 'unsafe'),
    ({'fsx': 'warn'}, 'degraded'),
    ({'mmap_sees_write': 'fail'}, 'unsafe'),
    ({'fsync': 'skip'}, 'safe'),
])
def test_verdict_rules(statuses, expected):
    assert verdict.decide(_results(**statuses))['verdict'] == expected


def test_verdict_reasons_put_corruption_first():
    decided = verdict.decide(_results(hard_links='warn', fsync='fail'))
    assert decided['reasons'] == ['fsync: fsync said fail', 'hard_links: hard_links said warn']


def test_budget_exhausted_skip_is_not_safe():
    skipped = {'fsync': result.result('fsync', 'skip', 'not run: time', {'budget_exhausted': True})}
    assert verdict.decide(skipped)['verdict'] == 'degraded'
    assert verdict.worst(['safe', 'unsafe', 'degraded']) == 'unsafe'


def _row(rate, median_ms, p99_ms, wall_rate=None):
    return {'median_rate': rate, 'median_ms': median_ms, 'p99_ms': p99_ms, 'rate': wall_rate or rate}


@pytest.mark.parametrize('rows, cliff', [
    ([_row(1000, 1, 2), _row(900, 1, 2), _row(800, 1, 2)], False),
    ([_row(1000, 1, 2), _row(400, 2, 3), _row(300, 3, 4)], True),  # rate halved and stays down
    ([_row(1000, 1, 2), _row(400, 2, 3), _row(900, 1, 2)], False),  # one bad batch is a blip
    ([_row(1000, 0.01, 0.02), _row(1000, 0.01, 9.0, 1000), _row(1000, 0.01, 9.0, 1000)], False),  # spikes only
    ([_row(1000, 0.01, 0.02), _row(1000, 0.01, 9.0, 300), _row(1000, 0.01, 20.0, 200)], True),  # spikes that cost
    ([_row(1000, 0.01, 0.02), _row(1000, 0.01, 0.9, 300)], False),  # under the 5 ms floor
])
def test_cliff_rules(rows, cliff):
    batches = [{'files': 100 * (index + 1), 'create': row} for index, row in enumerate(rows)]
    cliffs, dummy = scale.find_cliffs(batches, 5.0)
    assert ('create' in cliffs) is cliff, cliffs


@pytest.mark.parametrize('largest, rounds, sizes', [(2048, 4, [256, 512, 1024, 2048]), (8, 1, [8]), (4, 4, [1, 1, 2, 4])])
def test_batch_sizes(largest, rounds, sizes):
    assert scale.batch_sizes(largest, rounds) == sizes


def test_message_paths_look_like_cyrus():
    assert scale.message_path('/r', 0) == '/r/user/u0000/f0/1.'
    assert scale.message_path('/r', 64 * 4 + 65) == '/r/user/u0001/f1/2.'
    assert scale.percentile([5, 1, 3], 0.5) == 3 and scale.percentile([], 0.99) == 0.0


def _params(**over):
    params = {key: value['default'] if 'default' in value else None for key, value in spec.argument_spec().items()}
    params['path'] = ['/x']
    params.update(over)
    return params


@pytest.mark.parametrize('over, message', [
    ({'fsx_ops': 0}, 'fsx_ops must be between 1 and 10000000, got 0'),
    ({'scale_rounds': 13}, 'scale_rounds must be between 1 and 12, got 13'),
    ({'timeout': 0.5}, 'timeout must be between 1 and 86400, got 0.5'),
    ({'fsx_seed': -1}, 'fsx_seed must be between 0 and 4294967295, got -1'),
    ({'timeout': 5.0, 'stat_timeout': 6.0}, 'stat_timeout (6.0) must not exceed timeout (5.0)'),
    ({'path': []}, 'path must name at least one directory'),
])
def test_argument_limits(over, message):
    with pytest.raises(probe.ProbeError) as caught:
        spec.validate(_params(**over))
    assert str(caught.value) == message


def test_needs_scale_with_the_tree():
    small = probe.needs(dict(probe.DEFAULTS, scale_files=8, scale_rounds=1))
    large = probe.needs(dict(probe.DEFAULTS))
    assert small[0] < large[0] and large == (probe.MIN_FREE + 3840 * 4096, probe.MIN_INODES + 3840 + 60)


def test_result_rejects_unknown_status():
    with pytest.raises(ValueError):
        result.result('x', 'maybe', 'r')


def test_spikes_no_higher_than_the_machines_own_noise_are_not_a_cliff():
    noisy = dict(_row(1000, 0.01, 9.0, 300), noise_p99_ms=8.0)
    rows = [_row(1000, 0.01, 0.02), noisy, dict(noisy)]
    batches = [{'files': 100 * (index + 1), 'create': row} for index, row in enumerate(rows)]
    assert scale.find_cliffs(batches, 5.0)[0] == {}


def test_a_cliff_stands_only_when_it_reproduces():
    rows = [_row(1000, 1, 2), _row(400, 2, 3), _row(300, 3, 4)]
    batches = [{'files': 100 * (index + 1), 'batch_files': 100, 'create': row} for index, row in enumerate(rows)]
    cliffs, dummy = scale.find_cliffs(batches, 5.0)
    assert 'create' in cliffs
    seen = []

    def fast(phase, root, files):
        seen.append((phase, len(files)))
        return _row(950, 1, 2)

    kept, notes = scale.confirm(dict(cliffs), batches, '/x', ['f%d' % n for n in range(300)], 5.0, fast)
    assert kept == {} and seen == [('create', 100)] * scale.REPEATS
    assert notes == ['create batch 2: did not reproduce when measured again (950/s at the median, p99 2.000 ms, '
                     '950/s at the median, p99 2.000 ms)']
    kept, notes = scale.confirm(dict(cliffs), batches, '/x', [], 5.0, lambda *args: _row(300, 3, 4))
    assert kept == cliffs and notes == []
