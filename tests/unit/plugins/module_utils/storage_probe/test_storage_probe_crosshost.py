# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cross-host checks in one process tree: every 'host' is a forked process on one local directory."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import crosshost, crosshost_checks, result, verdict


def _host(queue, path, run_id, me, peers, checks, opts):
    queue.put((me, crosshost.run(path, run_id, me, peers, checks, opts)))


def run_hosts(path, peers, checks, channel, present=None, **opts):
    opts = dict({'step_timeout': 2.0, 'pingpong_iterations': 400, 'neighbour_files': 32, 'tries': 2}, **channel,
                **opts)
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    procs = [ctx.Process(target=_host, args=(queue, path, 'unit%06d' % os.getpid(), me, peers, checks, opts))
             for me in (present or peers)]
    for proc in procs:
        proc.start()
    out = dict(queue.get(timeout=120) for dummy in procs)
    for proc in procs:
        proc.join(30)
    return out


def test_three_hosts_on_one_local_directory_pass_everything(tmp_path, side_channel):
    out = run_hosts(str(tmp_path), ['a', 'b', 'c'], ['all'], side_channel)
    for me, rep in out.items():
        assert rep['verdict'] == 'safe', (me, rep['reasons'])
        assert {c['status'] for c in rep['checks'].values()} == {'pass'}
    assert out['b']['checks']['pingpong_rw']['evidence']['values'] == [3]
    assert sorted(out['a']['checks']['excl_race']['evidence']['winners']).__len__() == 1
    assert out['a']['run_dir_cleanup'] == 'removed' and os.listdir(tmp_path) == []
    assert out['b']['channel'] == '127.0.0.1 port %d' % side_channel['channel_port']
    # one local directory: each host sees the run directory as soon as it looks (no timing asserted: the
    # figures are how long the look itself took on a loaded machine)
    seen = out['a']['run_dir_seen_s']
    assert isinstance(out['b']['run_dir_seen_s'], float) and sorted(seen) == ['b', 'c']
    assert all(isinstance(value, float) and value >= 0 for value in seen.values())
    assert out['b']['checks']['append_visibility']['evidence']['mmap']['at_once'] == 2


def test_a_missing_host_is_named_and_not_waited_for_twice(tmp_path, side_channel):
    out = run_hosts(str(tmp_path), ['a', 'b'], ['lock_exclusion', 'metadata_coherence'], side_channel, present=['a'],
                    step_timeout=1.0)
    rep = out['a']
    assert rep['gone'] == ['b'] and rep['verdict'] == 'unsafe'
    assert rep['checks']['lock_exclusion']['reason'] == 'b did not answer within 1 s: the host or its probe process ' \
                                                        'is gone'
    assert rep['checks']['metadata_coherence']['status'] == 'fail'
    assert rep['checks']['pingpong_rw']['status'] == 'skip' and os.listdir(tmp_path) == []


def test_a_peer_without_the_leader_says_so(tmp_path, side_channel):
    out = run_hosts(str(tmp_path), ['a', 'b'], ['lock_exclusion'], side_channel, present=['b'], step_timeout=0.5)
    assert out['b']['error'] == "the leader a could not be heard: could not connect to the leader's probe at " \
                                "127.0.0.1 port %d (ECONNREFUSED)" % side_channel['channel_port']
    assert out['b']['checks']['lock_exclusion']['status'] == 'fail'


def test_a_killed_leader_is_named_and_nobody_else_removes_its_run_directory(tmp_path, side_channel):
    # The leader 'a' dies (SIGKILL, its module and worker with it) once the run has begun.
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    opts = dict({'step_timeout': 1.0, 'pingpong_iterations': 400, 'neighbour_files': 32, 'recovery_timeout': 1.0,
                 'tries': 2}, **side_channel)
    run_id = 'kill%06d' % os.getpid()
    hosts = {me: ctx.Process(target=_host, args=(queue, str(tmp_path), run_id, me, ['a', 'b', 'c'],
                                                 ['lock_exclusion', 'metadata_coherence'], opts))
             for me in ('a', 'b', 'c')}
    for proc in hosts.values():
        proc.start()
    rundir = tmp_path / ('.cyrus-ha-probe-xh-' + run_id)
    deadline = time.monotonic() + 20
    while not (rundir / 'lockx').exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(hosts['a'].pid, signal.SIGKILL)
    out = dict(queue.get(timeout=60) for dummy in range(2))
    for proc in hosts.values():
        proc.join(30)
    assert sorted(out) == ['b', 'c']
    assert 'a' in out['b']['gone'] and out['b']['verdict'] == 'unsafe'
    assert out['b']['run_dir_cleanup'] == out['c']['run_dir_cleanup'] == 'not mine'
    assert os.listdir(tmp_path) == [rundir.name]


def test_one_host_skips_everything(tmp_path):
    rep = crosshost.run(str(tmp_path), 'solo0001', 'a', ['a'])
    assert rep['skipped'] is True and rep['verdict'] == 'safe'
    assert {c['status'] for c in rep['checks'].values()} == {'skip'}


@pytest.mark.parametrize('run_id, me, peers, message', [
    ('short', 'a', ['a', 'b'], "run_id 'short' must be 6 to 64 letters, digits, - or _"),
    ('abcdef', 'c', ['a', 'b'], 'me (c) is not one of the peers (a, b)'),
    ('abcdef', 'a', ['a', 'a'], 'peers name a host twice: a, a'),
])
def test_names_are_checked(run_id, me, peers, message):
    with pytest.raises(ValueError) as err:
        crosshost.check_names(run_id, me, peers)
    assert str(err.value) == message


@pytest.mark.parametrize('statuses, expected', [
    ({'lock_exclusion': 'pass', 'neighbour_stat': 'pass'}, 'safe'),
    ({'lock_exclusion': 'pass', 'neighbour_stat': 'fail'}, 'degraded'),
    ({'metadata_coherence': 'warn'}, 'degraded'),
    ({'lock_exclusion': 'fail', 'neighbour_stat': 'warn'}, 'unsafe'),
])
def test_decide(statuses, expected):
    results = {name: result.result(name, status, 'r') for name, status in statuses.items()}
    assert verdict.decide(results, crosshost_checks.CRITICAL)['verdict'] == expected


def test_each_host_writes_its_plan_each_check_as_it_ends_and_done(tmp_path, side_channel):
    """progress_file: the lines the storage_probe role waits for, one file per host, in order."""
    import json
    store = tmp_path / 'store'
    store.mkdir()
    files = {me: str(tmp_path / f'progress-{me}.jsonl') for me in ('a', 'b')}
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    checks = ['lock_exclusion', 'metadata_coherence']
    procs = []
    for me in ('a', 'b'):
        opts = dict({'step_timeout': 2.0, 'pingpong_iterations': 400, 'neighbour_files': 32, 'tries': 2,
                     'progress_file': files[me], 'progress_id': f'xh-{me}'}, **side_channel)
        procs.append(ctx.Process(target=_host, args=(queue, str(store), 'prog%06d' % os.getpid(), me, ['a', 'b'],
                                                     checks, opts)))
    for proc in procs:
        proc.start()
    out = dict(queue.get(timeout=120) for dummy in procs)
    for proc in procs:
        proc.join(30)
    for me in ('a', 'b'):
        assert out[me]['verdict'] == 'safe', out[me]['reasons']
        with open(files[me], encoding='ascii') as handle:
            raw = handle.read().splitlines()
        lines = [json.loads(line) for line in raw]
        assert all(line.startswith('{"id": "xh-%s", "step": ' % me) for line in raw), raw
        assert [(x['step'], x['event']) for x in lines] == [(0, 'plan'), (1, 'check'), (2, 'check'), (-1, 'done')]
        assert lines[0]['paths'] == [str(store)] and lines[0]['checks'] == checks
        assert [(x['check'], x['status']) for x in lines[1:3]] == [(c, 'pass') for c in checks]
        assert lines[-1]['ok'] is True
    assert oct(os.stat(files['a']).st_mode & 0o777) == '0o600'


def test_a_relative_progress_file_is_refused(tmp_path):
    params = {'path': str(tmp_path), 'peers': ['a', 'b'], 'me': 'a', 'run_id': 'rel00001', 'checks': ['all'],
              'channel_address': '127.0.0.1', 'channel_port': 4743, 'channel_key': 'k' * 40,
              'progress_file': 'progress.jsonl', 'progress_id': None}
    params.update(crosshost.DEFAULTS)
    with pytest.raises(ValueError) as err:
        crosshost.run_checked(params)
    assert str(err.value) == 'progress_file progress.jsonl must be an absolute path in an existing directory'
