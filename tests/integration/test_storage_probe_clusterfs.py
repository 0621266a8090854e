# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The storage probe on real clustered filesystems: servers on the controller, one FUSE client on each of
two lab hosts (lab/rigs/cyha_clusterfs.py), qualified with playbooks/storage_probe.yml as a site would.

Each verdict's reasons are asserted: they name the Cyrus property that broke, with the figures measured,
never a lost host. A filesystem whose servers are stopped in the middle of a run gives a clear reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

import cyha_clusterfs
import labutil

pytestmark = pytest.mark.lab
# MooseFS 3.0 can deadlock a client in the kernel (a cache invalidation it sends waits on a page whose read it
# must itself answer): its threads then stay in D state until the rig aborts the FUSE connection at unmount.

SINGLE = ['identity', 'fcntl_locks', 'mmap_sees_write', 'mmap_write_msync', 'rename_reopen', 'excl_race', 'fsync']
HOSTS = ['be1', 'be2']


def qualify(path: str, tmp_path, *extra: str) -> tuple:
    """playbooks/storage_probe.yml over be1 and be2 (no gate); returns (process, path report, JSON results).
    A ring of byte-range locks that never moves costs step_timeout + iterations / 100 s: kept short."""
    proc = labutil.playbook('playbooks/storage_probe.yml', '-e', 'storage_probe_hosts=be1:be2', '-e',
                            json.dumps({'storage_probe_paths': [path], 'storage_probe_checks': SINGLE,
                                        'storage_probe_timeout': 150, 'storage_probe_fail_on_unsafe': False,
                                        'storage_probe_step_timeout': 5, 'storage_probe_pingpong_iterations': 500}),
                            '-e', 'storage_probe_report_dir=%s' % tmp_path, *extra, check=False)
    slug = re.sub('[^A-Za-z0-9]+', '-', path)
    try:
        report = json.loads((tmp_path / ('storage-probe%s.json' % slug)).read_text())
        results = json.loads((tmp_path / 'storage_probe.json').read_text())
    except OSError:
        raise AssertionError('no report:\n%s\n%s' % (proc.stdout[-4000:], proc.stderr[-2000:]))
    return proc, report, results


def reasons(report: dict) -> dict:
    """{(where, check): reason} of every failure and warning."""
    return {(item['where'], item['check']): item['reason'] for item in report['failures']}


def serving(fs):
    """A clustered filesystem's servers for a module's tests; closed (a start that failed half-way too) and
    checked gone after."""
    try:
        yield fs.start()
    finally:
        fs.close()
        assert cyha_clusterfs.until_gone(fs, HOSTS)


@pytest.fixture(scope='module')
def moosefs(lab):
    yield from serving(cyha_clusterfs.MooseFS())


VISIBILITY = ['append_visibility', 'rename_visibility', 'metadata_coherence']
PINGPONG = ('pingpong_rw', 'pingpong_cyrus', 'pingpong_mmap')


def no_lost_host(report: dict) -> None:
    """No reason of the report blames a host that was there all along."""
    for item in report['failures']:
        assert 'did not answer' not in item['reason'] and 'probe process is gone' not in item['reason'], item


def test_moosefs_defaults_keep_data_coherent_but_not_posix_locks(moosefs, tmp_path):
    moosefs.mount(HOSTS)
    try:
        proc, report, results = qualify(moosefs.point, tmp_path)
        # the leader removed its run directory; the other client may list the name for its 1 s entry cache
        left = labutil.poll(lambda: os.listdir(cyha_clusterfs.inside_path(moosefs, 'be2')) == [], 5)
        seen = {host: os.listdir(cyha_clusterfs.inside_path(moosefs, host)) for host in HOSTS}
        seen.update({name: os.listdir(cyha_clusterfs.inside_path(moosefs, 'be1', name)) for name in seen['be1']})
    finally:
        moosefs.unmount()
    assert labutil.recap(proc.stdout)['localhost']['failed'] == 0
    assert report['verdict'] == 'unsafe'
    found = reasons(report)
    for host in HOSTS:  # POSIX says closing any fd releases the process's locks; a replaced file has nlink 0
        assert found[(host, 'fcntl_locks')] == 'closing another fd of the holder did not release its locks'
        assert found[(host, 'rename_reopen')] == 'the replaced file has nlink 1, not 0'
    # a ring of byte-range locks may hang or lose increments, in some flavour on some runs (about one in five
    # here none does): each either passes or fails naming the byte-range lock
    statuses = {row['check']: row['be1 > be2'] for row in report['pairs']}
    for check in PINGPONG:
        assert (statuses[check] == 'pass' and ('be1 > be2', check) not in found) or (
            'byte-range lock' in found.get(('be1 > be2', check), '')), (check, statuses[check], found)
    assert {check: statuses[check] for check in statuses if check not in PINGPONG} == dict.fromkeys(
        ['lock_exclusion', 'append_visibility', 'rename_visibility', 'metadata_coherence', 'excl_race',
         'lock_recovery', 'neighbour_stat'], 'pass')
    # every change was seen at the first look after the lock, every time; the run directory, made before any
    # lock, was seen in the end, at once or after the client's 1 s entry cache (about one run in six here)
    seen_at = {row['property']: (row['at once'], row['never']) for row in report['visibility']}
    assert seen_at.pop('new directory (the run directory) seen') in (('1/1', '0/1'), ('0/1', '0/1'))
    assert {prop: seen for prop, seen in seen_at.items() if prop != 'lock of a killed holder released'} == {
        'appended message seen by read()': ('5/5', '0/5'),
        'appended message seen by an mmap of the index': ('5/5', '0/5'),
        'renamed cyrus.header seen': ('5/5', '0/5'),
        'new message file seen': ('5/5', '0/5'),
        'unlinked message file gone': ('5/5', '0/5')}
    no_lost_host(report)
    # lock requests MooseFS never answers keep the ring's files open: the leader says it could not remove them
    cleanup = results['be1']['cross'][moosefs.point]['run_dir_cleanup']
    assert (cleanup == 'removed' and left) or cleanup.startswith(
        'failed: the removal did not finish within 5.256 s (requests stuck in the filesystem hold its files): '
        'remove %s/.cyrus-ha-probe-xh-' % moosefs.point), (cleanup, seen)


def test_moosefs_with_the_page_cache_forced_on_serves_stale_names(moosefs, tmp_path):
    """mfscachemode=YES and 5 s name and attribute caches, as a site tuning for speed might mount it."""
    moosefs.mount(HOSTS, 'mfscachemode=YES,mfsattrcacheto=5,mfsentrycacheto=5,mfsdirentrycacheto=5')
    try:
        proc, report, dummy = qualify(moosefs.point, tmp_path, '-e', json.dumps(
            {'storage_probe_single': False, 'storage_probe_cross_checks': VISIBILITY + ['lock_exclusion']}))
    finally:
        moosefs.unmount()
    assert labutil.recap(proc.stdout)['localhost']['failed'] == 0 and report['verdict'] == 'unsafe'
    assert reasons(report) == {
        ('be1 > be2', 'rename_visibility'):
            'a cyrus.header renamed into place on be1 is not visible to stat() and open() on be2 after 2 s (1 of 1 '
            'tries): Cyrus on be2 would keep using a header and index replaced on be1 (after an expunge or a mailbox '
            'rename) and write over the new ones',
        ('be1 > be2', 'metadata_coherence'):
            'the unlink of a message file on be1 is not visible to stat() on be2 after 2 s (1 of 1 tries): Cyrus on '
            'be2 would serve messages expunged and mailboxes deleted on be1'}
    rows = {row['property']: (row['at once'], row['never']) for row in report['visibility']}
    assert rows['appended message seen by an mmap of the index'] == ('5/5', '0/5')
    assert rows['renamed cyrus.header seen'] == ('0/1', '1/1') and rows['unlinked message file gone'] == ('0/1', '1/1')


# single-host checks GlusterFS fails now and then, with the reasons it may give (the check's own messages)
GLUSTER_NOW_AND_THEN = {
    'fcntl_locks': ['closing another fd of the holder did not release its locks'],
    'rename_reopen': ['stat() after the rename still showed the old inode',
                      'reopening after the rename did not read the new file',
                      'another process did not see the renamed file at once',
                      'another process did not read the new contents at once',
                      'the replaced file has nlink 1, not 0'],
}


@pytest.fixture(scope='module')
def glusterfs(lab):
    yield from serving(cyha_clusterfs.GlusterFS())


def test_glusterfs_defaults_serve_stale_data_for_a_second(glusterfs, tmp_path):
    """GlusterFS 10 as created, clients as mounted: its metadata cache keeps another client's appends and unlinks
    out of sight for about a second, and a header replaced on one client goes stale under the other."""
    glusterfs.mount(HOSTS)
    try:
        proc, report, results = qualify(glusterfs.point, tmp_path)
        left = labutil.poll(lambda: os.listdir(cyha_clusterfs.inside_path(glusterfs, 'be2')) == [], 5)
    finally:
        glusterfs.unmount()
    assert labutil.recap(proc.stdout)['localhost']['failed'] == 0 and report['verdict'] == 'unsafe'
    found = reasons(report)
    single = {row['check']: (row['be1'], row['be2']) for row in report['single'] if row['check'] in SINGLE}
    # one client alone passes, but now and then (2 runs in 6 on one machine) the FUSE client breaks one of two
    # rules: closing another fd of the lock holder did not release its locks at once, or the replaced cyrus.header
    # was not seen as replaced at once. Either is a judged failure with the check's own reason, never an error.
    assert {check: status for check, status in single.items() if check not in GLUSTER_NOW_AND_THEN} == \
        dict.fromkeys(set(SINGLE) - set(GLUSTER_NOW_AND_THEN), ('pass', 'pass')), single
    for check, reasons_seen in GLUSTER_NOW_AND_THEN.items():
        for host, status in zip(HOSTS, single[check]):
            assert status == 'pass' or (status == 'fail' and set(found[(host, check)].split('; ')) <= set(reasons_seen)), \
                (host, check, found)
    pair = 'be1 > be2'
    assert found[(pair, 'append_visibility')].startswith(
        'a message appended on be1 (under a lock, then fdatasync) became visible to fstat() and read() on be2 only '
        'after ') and found[(pair, 'append_visibility')].endswith(
        'Cyrus on be2 would read a stale cyrus.index and miss or mangle new messages')
    assert found[(pair, 'metadata_coherence')].startswith(
        'the unlink of a message file on be1 became visible to stat() on be2 only after ')
    assert 'ESTALE' in found[(pair, 'rename_visibility')], found
    broken = [check for check in PINGPONG if (pair, check) in found]
    assert broken and all('byte-range lock' in found[(pair, check)] for check in broken), found
    rows = {row['property']: (row['at once'], row['never']) for row in report['visibility']}
    assert rows['appended message seen by read()'][1] == '0/5' and rows['appended message seen by read()'][0] != '5/5'
    assert rows['appended message seen by an mmap of the index'] == ('5/5', '0/5')
    assert rows['new message file seen'] == ('5/5', '0/5')
    statuses = {row['check']: row[pair] for row in report['pairs']}
    assert {check: statuses[check] for check in ('excl_race', 'lock_recovery', 'neighbour_stat')} == dict.fromkeys(
        ('excl_race', 'lock_recovery', 'neighbour_stat'), 'pass')
    no_lost_host(report)
    assert results['be1']['cross'][glusterfs.point]['run_dir_cleanup'] == 'removed' and left


def test_a_clustered_filesystem_stopped_mid_run_says_so(glusterfs, tmp_path):
    """The servers stopped while the hosts run the visibility checks: the clients hang, and the reason says that
    the filesystem stopped answering, not that a host is gone."""
    moosefs = glusterfs  # last in this file: its servers are stopped for good
    try:
        moosefs.mount(HOSTS)
        argv = [os.path.join(labutil.BIN, 'ansible-playbook'), '-i', labutil.inventory(), 'playbooks/storage_probe.yml',
                '-e', 'storage_probe_hosts=be1:be2', '-e', json.dumps({
                    'storage_probe_paths': [moosefs.point], 'storage_probe_single': False, 'storage_probe_tries': 100,
                    'storage_probe_cross_checks': VISIBILITY, 'storage_probe_timeout': 120,
                    'storage_probe_step_timeout': 3, 'storage_probe_fail_on_unsafe': False}),
                '-e', 'storage_probe_report_dir=%s' % tmp_path]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=labutil.env(),
                                cwd=labutil.REPO)
        try:
            started = labutil.poll(lambda: proc.poll() is not None or any(
                name.startswith('.cyrus-ha-probe-xh-') for name in os.listdir(
                    cyha_clusterfs.inside_path(moosefs, 'be1'))), 120, 0.05)
            assert started and proc.poll() is None, proc.communicate(timeout=60)[0][-3000:]
            time.sleep(1)
            moosefs.stop_servers()
            out, dummy = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        moosefs.unmount()
    assert labutil.recap(out)['localhost']['failed'] == 0, out[-3000:]
    slug = re.sub('[^A-Za-z0-9]+', '-', moosefs.point)
    report = json.loads((tmp_path / ('storage-probe%s.json' % slug)).read_text())
    found = reasons(report)
    pair = 'be1 > be2'
    assert report['verdict'] == 'unsafe' and set(found) <= {(pair, check) for check in VISIBILITY}, found
    # the check it stopped in says how the filesystem went (its client answers ENOTCONN, or hangs); the later
    # checks were not run
    first = [check for check in VISIBILITY if (pair, check) in found][0]
    assert any(why in found[(pair, first)] for why in (
        'the filesystem is gone here: stat() of the run directory failed with ENOTCONN (its server or client '
        'stopped, or the directory was removed) (during %s)' % first,
        'the filesystem stopped answering here: stat() of the run directory did not return within 3 s (its server '
        'is down or unreachable); Cyrus would hang on every mailbox (during %s)' % first)), found[(pair, first)]
    for check in VISIBILITY[VISIBILITY.index(first) + 1:]:
        assert found[(pair, check)].startswith('not run: the filesystem '), found[(pair, check)]
    no_lost_host(report)
