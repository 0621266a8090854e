# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.storage_probe on real filesystems: local ones are safe, each FUSE fault fails the right check,
ping_pong agrees, bad input fails clearly, the work directory never stays behind."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import cyha_fsrig
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import probe
from cyha_fsrig import run_module

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='mounts filesystems: needs root')

QUICK = {'fsx_ops': 500, 'scale_files': 512, 'scale_rounds': 3, 'timeout': 90}
LOCAL = ['tmpfs', 'ext4', 'xfs', 'btrfs', 'overlayfs']
FAULTS = ['none', 'locks', 'direct_io', 'nolink', 'fsync_eio']
CRITICAL = ('mmap_sees_write', 'mmap_write_msync', 'fcntl_locks', 'rename_reopen', 'excl_race', 'fsync', 'fsx')
NO_SCALE = ['identity', 'mmap_sees_write', 'mmap_write_msync', 'fcntl_locks', 'flock', 'rename_reopen',
            'hard_links', 'excl_race', 'fsync', 'fsx']


@pytest.fixture(scope='module')
def rig():
    made = cyha_fsrig.Rig()
    try:
        yield made
    finally:
        made.close()
    assert not os.path.exists(made.base)


@pytest.fixture(scope='module')
def local_paths(rig):
    paths = {'tmpfs': rig.tmpfs('tmpfs'), 'ext4': rig.loop_image('ext4', 'ext4', 64),
             'xfs': rig.loop_image('xfs', 'xfs', 320), 'overlayfs': rig.overlay('overlay')}
    if shutil.which('mkfs.btrfs'):
        paths['btrfs'] = rig.loop_image('btrfs', 'btrfs', 128)
    return paths


@pytest.fixture(scope='module')
def local_results(local_paths):
    out = run_module([local_paths[name] for name in LOCAL if name in local_paths], **QUICK)
    assert out['rc'] == 0, out
    return out


@pytest.fixture(scope='module')
def fault_paths(rig):
    return {fault: rig.faultfs(fault) for fault in FAULTS}


@pytest.fixture(scope='module')
def fault_results(fault_paths):
    out = run_module([fault_paths[fault] for fault in FAULTS], checks=NO_SCALE, **QUICK)
    assert out['rc'] == 0, out
    return out


def report(out: dict, path: str) -> dict:
    return out['ansible_facts']['storage_probe'][os.path.realpath(path)]


def statuses(rep: dict) -> dict:
    """The status of every check that ran (`all` leaves out the opt-in ones: they show as not selected)."""
    return {name: check['status'] for name, check in rep['checks'].items()
            if not (name in probe.OPT_IN and check['reason'] == 'not selected')}


def no_workdir_left(path: str) -> bool:
    return not glob.glob(os.path.join(path, '.cyrus-ha-probe-*'))


@pytest.mark.parametrize('fs', LOCAL)
def test_local_filesystem_is_safe(fs, local_paths, local_results):
    if fs not in local_paths:
        pytest.skip('mkfs.%s is not installed' % fs)
    rep = report(local_results, local_paths[fs])
    assert local_results['changed'] is False
    assert rep['verdict'] == 'safe', rep['reasons']
    assert set(statuses(rep).values()) == {'pass'}, statuses(rep)
    assert rep['identity']['fs_type'] == fs
    assert rep['identity']['mount_point'] == os.path.realpath(local_paths[fs])
    assert rep['workdir_cleanup'] == 'removed' and no_workdir_left(local_paths[fs])
    assert rep['checks']['fcntl_locks']['evidence']['getlk_holder']['type'] == 'w'
    assert [b['files'] for b in rep['checks']['metadata_scale']['evidence']['batches']] == [128, 384, 896]
    assert rep['checks']['fsx']['evidence']['counts']['mapwrite'] > 0


def test_ext4_under_cpu_load_is_safe_ten_times_in_a_row(local_paths):
    """Every core busy twice over (busy loops, like stress --cpu): the probe, all checks at their default sizes,
    must still call a local ext4 safe, each time: a busy machine is not a slow filesystem."""
    hogs = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for dummy in range(2 * (os.cpu_count() or 1))]
    runs = []
    try:
        for dummy in range(10):
            rep = probe.probe_path(local_paths['ext4'], ['all'])
            runs.append((rep['verdict'], [reason for reason in rep['reasons'] if 'passed' not in reason]))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert runs == [('safe', [])] * 10, runs
    assert no_workdir_left(local_paths['ext4'])


def test_facts_carry_the_worst_verdict(local_results, fault_results):
    assert local_results['ansible_facts']['storage_probe_single_verdict'] == 'safe'
    assert fault_results['ansible_facts']['storage_probe_single_verdict'] == 'unsafe'


EXPECTED_FAULTS = {
    # fault: (verdict, {check: status}, words in that check's reason)
    'none': ('safe', {}, {}),
    'locks': ('unsafe', {'fcntl_locks': 'fail', 'flock': 'fail'},
              {'fcntl_locks': 'a second process got a write lock while another held a whole-file write lock',
               'flock': 'flock LOCK_EX was granted to two processes'}),
    'direct_io': ('unsafe', {'mmap_sees_write': 'fail', 'mmap_write_msync': 'fail', 'fsx': 'warn'},
                  {'mmap_sees_write': 'mmap unsupported: MAP_SHARED mmap() failed with ENODEV',
                   'mmap_write_msync': 'mmap unsupported: MAP_SHARED mmap() failed with ENODEV'}),
    'nolink': ('degraded', {'hard_links': 'warn'},
               {'hard_links': 'link() not supported (EPERM): Cyrus falls back to copying'}),
    'fsync_eio': ('unsafe', {'fsync': 'fail', 'mmap_write_msync': 'fail', 'fsx': 'fail'},
                  {'fsync': 'sync calls failed: fsync: EIO, fdatasync: EIO, msync: EIO'}),
}


@pytest.mark.parametrize('fault', FAULTS)
def test_fuse_fault_fails_the_right_check(fault, fault_paths, fault_results):
    verdict, failing, words = EXPECTED_FAULTS[fault]
    rep = report(fault_results, fault_paths[fault])
    got = statuses(rep)
    expected = {name: 'pass' for name in NO_SCALE}
    expected.update(failing)
    expected['metadata_scale'] = 'skip'
    assert got == expected, {name: rep['checks'][name]['reason'] for name in got if got[name] != expected[name]}
    assert rep['verdict'] == verdict, rep['reasons']
    for name, text in words.items():
        assert rep['checks'][name]['reason'].startswith(text), rep['checks'][name]['reason']
    assert rep['identity']['fuse_subtype'] == 'cyhafault'
    assert no_workdir_left(fault_paths[fault])


def test_ping_pong_agrees_with_the_probe(local_paths, local_results, fault_paths, fault_results):
    """ping_pong says the same as the probe: locks work (-l sees the holder, -rw increments by 2) exactly
    where fcntl_locks passes; where locks work, shared mappings stay coherent (-rwm increments by 2)
    exactly where mmap_sees_write passes."""
    rows = []
    for name, path in list(local_paths.items()) + [('fuse-' + f, p) for f, p in fault_paths.items()]:
        rep = report(local_results if name in local_paths else fault_results, path)
        work = os.path.join(path, 'cyha-pingpong')
        os.mkdir(work)
        try:
            locked = cyha_fsrig.ping_pong_locked(os.path.join(work, 'l'))
            rw, rw_out = cyha_fsrig.ping_pong_increment(os.path.join(work, 'rw'), '-rw')
            rwm, rwm_out = cyha_fsrig.ping_pong_increment(os.path.join(work, 'rwm'), '-rwm')
        finally:
            shutil.rmtree(work, ignore_errors=True)
        pp_locks = 'Working POSIX byte range locks' in locked and rw == [2, 2]
        pp_mmap = rwm == [2, 2]
        probe_locks = rep['checks']['fcntl_locks']['status'] == 'pass'
        probe_mmap = rep['checks']['mmap_sees_write']['status'] == 'pass'
        rows.append((name, pp_locks, probe_locks, pp_mmap, probe_mmap, locked.strip().splitlines()[-1:], rw, rwm))
    assert all(row[1] == row[2] for row in rows), json.dumps(rows)
    # ping_pong -rwm serialises its mmap increments with the same fcntl locks: where locks are broken its
    # increments are lost whatever the mapping does, so it judges mmap only where locks work.
    judged = [row for row in rows if row[1]]
    assert all(row[3] == row[4] for row in judged), json.dumps(rows)
    # and the rig did give both answers: agreement is not trivially all-pass
    assert {row[2] for row in rows} == {True, False} and {row[4] for row in judged} == {True, False}, rows


def test_hung_filesystem_fails_within_the_budget(rig):
    point = rig.faultfs('hang')
    with open(os.path.join(rig.base, 'fault-hang-backing', 'cyha-hang'), 'w', encoding='ascii'):
        pass
    try:
        out = run_module(point, stat_timeout=2)
    finally:
        rig.stop_fuse(point)
    assert out['rc'] != 0
    assert out['msg'] == '%s did not answer stat()/statfs() within 2 s: the filesystem hangs' % point


def test_bad_input_fails_with_a_clear_message(rig):
    base = rig.path('badinput')
    missing = os.path.join(base, 'missing')
    afile = os.path.join(base, 'afile')
    with open(afile, 'w', encoding='ascii'):
        pass
    readonly = rig.tmpfs('readonly', '8m', 'ro')
    tiny = rig.tmpfs('tiny', '4m')
    cases = [
        (dict(paths=missing), '%s does not exist' % missing),
        (dict(paths=afile), '%s is not a directory: give the directory that will hold the mail store' % afile),
        (dict(paths=readonly),
         '%s is on a read-only filesystem: the probe needs to write a work directory there' % readonly),
        (dict(paths=tiny), '%s has 4 MiB free, the probe needs 31 MiB: the filesystem is (nearly) full' % tiny),
        (dict(paths=base, fsx_ops=0), 'fsx_ops must be between 1 and 10000000, got 0'),
        (dict(paths=base, timeout=5, stat_timeout=10), 'stat_timeout (10.0) must not exceed timeout (5.0)'),
    ]
    for args, message in cases:
        paths = args.pop('paths')
        out = run_module(paths, **args)
        assert out['rc'] != 0 and out['msg'] == message, (args, out)
    out = run_module(base, checks=['bogus'])
    expected = 'value of checks must be one or more of: all, identity, mmap_sees_write'
    assert out['rc'] != 0 and out['msg'].startswith(expected), out
    assert os.listdir(base) == ['afile']


def test_no_write_permission_fails_clearly(rig):
    """As an unprivileged user, the real module code on a root-owned directory."""
    base = rig.path('noperm')
    os.chmod(base, 0o755)
    os.chmod(rig.base, 0o755)
    code = ('import sys, json; sys.path.insert(0, %r)\n'
            'from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import probe\n'
            'try:\n    probe.probe_path(%r)\nexcept probe.ProbeError as exc:\n    print(json.dumps(str(exc)))\n'
            % (os.path.join(cyha_fsrig.REPO, 'build', 'collections'), base))
    proc = subprocess.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', sys.executable, '-c', code],
                          capture_output=True, text=True, timeout=60, check=False)
    assert json.loads(proc.stdout) == ('%s is not writable by uid 65534: run the probe as a user that may create '
                                       'files there' % base), proc.stderr


def test_leftovers_changed_then_not_changed_and_check_mode(rig):
    base = rig.path('leftovers')
    dead = subprocess.Popen(['true'])
    dead.wait()
    stale = os.path.join(base, '.cyrus-ha-probe-stale1')
    live = os.path.join(base, '.cyrus-ha-probe-live1')
    with open('/proc/self/stat', encoding='ascii') as handle:
        my_start = int(handle.read().rpartition(')')[2].split()[19])
    for where, pid, start in ((stale, dead.pid, 1), (live, os.getpid(), my_start)):
        os.mkdir(where)
        with open(os.path.join(where, 'owner.json'), 'w', encoding='utf-8') as handle:
            json.dump({'host': socket.gethostname(), 'pid': pid, 'start': start}, handle)
    args = dict(QUICK, checks=['identity', 'fcntl_locks'], clean_leftovers=True)

    first = run_module(base, check_mode=True, **args)
    rep = report(first, base)
    assert first['changed'] is True and rep['leftovers_removed'] == [stale]
    assert os.path.isdir(stale), 'check mode removed a leftover'
    assert sorted((item['path'], item['stale']) for item in rep['leftovers']) == [(live, False), (stale, True)]

    second = run_module(base, **args)
    assert second['changed'] is True and report(second, base)['leftovers_removed'] == [stale]
    assert not os.path.exists(stale) and os.path.isdir(live)

    third = run_module(base, **args)
    rep = report(third, base)
    assert third['changed'] is False and rep['leftovers_removed'] == []
    assert [(item['path'], item['stale']) for item in rep['leftovers']] == [(live, False)]
    assert sorted(os.listdir(base)) == ['.cyrus-ha-probe-live1']

    fourth = run_module(base, check_mode=True, **args)
    assert fourth['changed'] is False and report(fourth, base)['verdict'] == 'safe'


def test_sigterm_removes_the_work_directory(rig):
    """The module itself, killed with SIGTERM in the middle of a check: it cleans up and says why."""
    base = rig.tmpfs('sigterm', '512m')
    args_file = os.path.join(rig.base, 'sigterm-args.json')
    with open(args_file, 'w', encoding='utf-8') as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': {'path': [base], 'checks': ['fsx'], 'fsx_ops': 10 ** 7}}, handle)
    env = dict(os.environ, PYTHONPATH=os.path.join(cyha_fsrig.REPO, 'build', 'collections'))
    proc = subprocess.Popen([sys.executable, os.path.join(cyha_fsrig.REPO, 'plugins', 'modules', 'storage_probe.py'),
                             args_file], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while not glob.glob(os.path.join(base, '.cyrus-ha-probe-*', 'fsx', 'fsx.data')):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = json.loads(out)
    assert result['failed'] is True and result['msg'] == 'interrupted by SIGTERM', (out, err)
    assert os.listdir(base) == []


def test_filesystem_hanging_mid_probe_costs_the_budget_not_a_hang(rig):
    """The fs hangs after the preflight: the running check is killed at the budget, later checks are
    skipped, the verdict is unsafe, and the work directory it could not remove is said so."""
    point = rig.faultfs('hang')
    backing = os.path.join(rig.base, 'fault-hang-backing')
    try:
        tree = os.path.join(rig.base, 'hang-tree')
        argv = [os.path.join(cyha_fsrig.BIN, 'ansible'), 'localhost', '-c', 'local', '-m', 'cyrus.ha.storage_probe',
                '-a', json.dumps({'path': [point], 'timeout': 6, 'stat_timeout': 2,
                                  'checks': ['fcntl_locks', 'fsx', 'metadata_scale']}), '--tree', tree]
        proc = subprocess.Popen(argv, cwd=cyha_fsrig.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(cyha_fsrig.REPO, 'ansible.cfg')))
        deadline = time.monotonic() + 60
        while not glob.glob(os.path.join(backing, '.cyrus-ha-probe-*', 'fcntl_locks')):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        with open(os.path.join(backing, 'cyha-hang'), 'w', encoding='ascii'):
            pass
        proc.communicate(timeout=120)
        with open(os.path.join(tree, 'localhost'), encoding='utf-8') as handle:
            rep = json.load(handle)['ansible_facts']['storage_probe'][point]
    finally:
        rig.stop_fuse(point)
    hung = [name for name, check in rep['checks'].items()
            if check['status'] == 'fail' and check['reason'].startswith('did not finish within the time budget')]
    assert len(hung) == 1 and hung[0] in ('fcntl_locks', 'fsx'), rep['checks']
    later = ['fcntl_locks', 'fsx', 'metadata_scale']
    later = later[later.index(hung[0]) + 1:]
    assert all(rep['checks'][name]['reason'] == 'not run: the time budget of 6 s was used up' for name in later)
    assert rep['verdict'] == 'unsafe'
    assert rep['workdir_cleanup'].startswith('failed: ') and rep['workdir'].startswith(point)


def test_the_deep_metadata_check_reports_its_curve_as_it_goes_and_leaves_nothing(rig, local_paths, tmp_path):
    """metadata_deep through the module: opt-in, a curve up to deep_files with a progress line per batch, the
    tree removed; on a budget too small for the next batch it stops there and says so."""
    ext4, tmpfs = local_paths['ext4'], local_paths['tmpfs']
    progress = tmp_path / 'deep.jsonl'
    out = run_module(tmpfs, checks=['metadata_deep'], deep_files=16384, deep_budget_mb=128, progress_file=str(progress))
    assert out['rc'] == 0, out
    check = out['ansible_facts']['storage_probe'][os.path.realpath(tmpfs)]['checks']['metadata_deep']
    curve = check['evidence']['curve']
    assert [row['files'] for row in curve] == [1024, 2048, 4096, 8192, 16384], check['evidence'].get('stopped')
    said = [json.loads(line) for line in progress.read_text().splitlines()]
    # the run's plan, each batch of the curve as it ended, the check's end, and the run's end (no id given)
    assert [line.get('event') for line in said] == ['plan'] + [None] * len(curve) + ['check', 'done'], said
    assert said[1:-2] == curve
    assert (said[-2]['check'], said[-2]['status'], said[-1]['ok']) == ('metadata_deep', check['status'], True)
    assert check['status'] in ('pass', 'warn') and check['evidence']['removed']['files'] == 16384
    if check['status'] == 'pass':
        assert check['reason'].startswith('no fall-off up to 16384 files: create ')
    assert os.listdir(tmpfs) == []
    # a 16 MiB budget holds the tree of 2048 files (4 KiB each) but not the batch to 4096
    tight = run_module(ext4, checks=['metadata_deep'], deep_files=65536, deep_budget_mb=16)
    check = tight['ansible_facts']['storage_probe'][os.path.realpath(ext4)]['checks']['metadata_deep']
    assert 'would take the tree past the disk budget of 16 MiB' in check['evidence']['stopped'], check
    assert 'stopped at' in check['reason'] or check['status'] == 'warn'
    assert os.listdir(ext4) in ([], ['lost+found'])
    # opt-in: `all` does not run it
    quick = run_module(ext4, checks=['all'], **QUICK)
    assert quick['ansible_facts']['storage_probe'][os.path.realpath(ext4)]['checks']['metadata_deep']['status'] == 'skip'
