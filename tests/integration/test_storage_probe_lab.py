# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cross-host storage qualification on the lab: the storage_probe role through playbooks/storage_probe.yml
and cyrus.ha.storage_probe_peer.

A directory every lab host sees through the same local filesystem is safe; one export mounted on each lab
host through its own sshfs mount (or its own FUSE passthrough mount) is two cluster clients with broken
locks: unsafe, and ping_pong run one process per host agrees.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import cyha_fsrig
import labutil

pytestmark = pytest.mark.lab

KEY = os.path.join(labutil.LAB_DIR, 'id_ed25519')
KNOWN_HOSTS = os.path.join(labutil.LAB_DIR, 'known_hosts')
FAULTFS = cyha_fsrig.FAULTFS
SINGLE = ['identity', 'fcntl_locks', 'mmap_sees_write', 'rename_reopen']
CROSS = ['lock_exclusion', 'pingpong_rw', 'pingpong_cyrus', 'pingpong_mmap', 'append_visibility',
         'rename_visibility', 'metadata_coherence', 'excl_race', 'lock_recovery', 'neighbour_stat']


def addr(name: str) -> str:
    return [host for host in labutil.lab_hosts() if host['name'] == name][0]['addr4']


def ssh_argv(host: str, argv: list) -> list:
    return ['ssh', '-i', KEY, '-o', 'UserKnownHostsFile=%s' % KNOWN_HOSTS, '-o', 'StrictHostKeyChecking=yes',
            '-o', 'BatchMode=yes', 'root@%s' % addr(host), shlex.join(argv)]


def ssh(host: str, argv: list, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(ssh_argv(host, argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError('%s on %s exited %d: %s' % (argv, host, proc.returncode, proc.stderr))
    return proc


def mounted_on(host: str, point: str) -> bool:
    return ssh(host, ['findmnt', '-n', point], check=False).returncode == 0


def open_fds_under(path: str) -> list:
    """Processes (pid, fd target) with a file under path open: a probe process left behind."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            for fd in os.listdir('/proc/%s/fd' % pid):
                target = os.readlink('/proc/%s/fd/%s' % (pid, fd))
                if target.startswith(path):
                    found.append((pid, target))
        except OSError:
            continue
    return found


@pytest.fixture
def shared(lab):
    """A directory all lab hosts see through the same local filesystem."""
    path = tempfile.mkdtemp(prefix='cyha-xh-shared-', dir=labutil.LAB_DIR)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class PerHostMounts:
    """One export mounted by each lab host separately (in its own mount namespace) at the same path."""

    def __init__(self, kind: str, hosts: list):
        self.kind = kind
        self.hosts = hosts
        self.export = tempfile.mkdtemp(prefix='cyha-xh-export-', dir=labutil.LAB_DIR)
        self.point = tempfile.mkdtemp(prefix='cyha-xh-mnt-', dir=labutil.LAB_DIR)
        self.pids = {}
        self.done = []

    def mount(self) -> None:
        for host in self.hosts:
            if self.kind == 'sshfs':
                ssh(host, ['sshfs', 'root@%s:%s' % (addr('mupdate'), self.export), self.point, '-o',
                           'IdentityFile=%s,UserKnownHostsFile=%s,StrictHostKeyChecking=yes,BatchMode=yes' % (
                               KEY, KNOWN_HOSTS)])
            else:
                pidfile = os.path.join(self.export + '.pids', host)
                os.makedirs(os.path.dirname(pidfile), exist_ok=True)
                ssh(host, ['sh', '-c', 'setsid "$@" </dev/null >/dev/null 2>&1 & echo $! > %s' % shlex.quote(pidfile),
                           'faultfs', sys.executable, FAULTFS, self.export, self.point, '--fault', 'none'])
                assert labutil.poll(lambda: os.path.exists(pidfile) and mounted_on(host, self.point), 15), host
                with open(pidfile, encoding='ascii') as handle:
                    self.pids[host] = int(handle.read())
            self.done.append(host)
            assert mounted_on(host, self.point), host

    def close(self) -> None:
        for host in self.done:
            if mounted_on(host, self.point):
                if ssh(host, ['umount', self.point], check=False).returncode != 0:
                    ssh(host, ['umount', '-l', self.point], check=False)
        for pid in self.pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for host in self.done:
            assert not mounted_on(host, self.point), host
        shutil.rmtree(self.export + '.pids', ignore_errors=True)
        os.rmdir(self.point)
        shutil.rmtree(self.export, ignore_errors=True)


def per_host(kind: str, hosts: list):
    rig = PerHostMounts(kind, hosts)
    try:
        rig.mount()
        yield rig
    finally:
        rig.close()


@pytest.fixture
def sshfs_each(lab):
    yield from per_host('sshfs', ['be1', 'be2'])


@pytest.fixture
def fuse_each(lab):
    yield from per_host('faultfs', ['be1', 'be2'])


def qualify(hosts: str, path: str, tmp_path, *extra: str, check: bool = True):
    """playbooks/storage_probe.yml over hosts; returns (process, path report, JSON results)."""
    report_file = tmp_path / 'storage_probe.json'  # the playbook's default name in storage_probe_report_dir
    proc = labutil.playbook('playbooks/storage_probe.yml', '-e', 'storage_probe_hosts=%s' % hosts, '-e',
                            json.dumps({'storage_probe_paths': [path], 'storage_probe_checks': SINGLE,
                                        'storage_probe_timeout': 90}),
                            '-e', 'storage_probe_report_dir=%s' % tmp_path, *extra, check=check)
    slug = re.sub('[^A-Za-z0-9]+', '-', path)
    report = json.loads((tmp_path / ('storage-probe%s.json' % slug)).read_text())
    markdown = (tmp_path / ('storage-probe%s.md' % slug)).read_text()
    return proc, dict(report, markdown_file=markdown), json.loads(report_file.read_text())


def pair_statuses(report: dict, pair: str) -> dict:
    return {row['check']: row[pair] for row in report['pairs']}


def test_shared_local_dir_is_safe_across_two_hosts(shared, tmp_path):
    proc, report, results = qualify('be1:be2', shared, tmp_path)
    assert labutil.recap(proc.stdout)['be1']['failed'] == 0
    assert report['verdict'] == 'safe', report['failures']
    assert report['hosts'] == {'be1': 'safe', 'be2': 'safe'} and report['leader'] == 'be1'
    assert pair_statuses(report, 'be1 > be2') == dict.fromkeys(CROSS, 'pass')
    assert {row['check']: (row['be1'], row['be2']) for row in report['single'] if row['check'] in SINGLE} == \
        dict.fromkeys(SINGLE, ('pass', 'pass'))
    assert report['lock_recovery_s']['be2'] is not None
    assert '| lock_exclusion | pass |' in report['markdown_file'] and 'Verdict: **safe**' in report['markdown_file']
    assert {host: item['verdict'] for host, item in results.items()} == {'be1': 'safe', 'be2': 'safe'}
    cross = results['be2']['cross'][shared]
    assert cross['leader'] == 'be1' and cross['checks']['pingpong_rw']['evidence']['values'] == [2]
    assert results['be1']['cross'][shared]['run_dir_cleanup'] == 'removed'
    assert os.listdir(shared) == []
    # each cross-host check was shown on each host as it ended (the role runs the module in the background)
    for host in ('be1', 'be2'):
        shown = re.findall(r'ok: \[%s\] => \(item=%s: cross-host (\w+)\)' % (host, re.escape(shared)), proc.stdout)
        # (the results file has its keys sorted; the checks show in the order they ran)
        assert sorted(c for c in shown if c in CROSS) == sorted(c for c in cross['checks'] if c in CROSS), \
            proc.stdout[-3000:]


def test_three_hosts_share_one_ring(shared, tmp_path):
    proc, report, dummy = qualify('fe1:be1:be2', shared, tmp_path, '-e', '{"storage_probe_checks": ["identity"]}')
    assert report['verdict'] == 'safe', report['failures']
    assert [key for key in report['pairs'][0] if key != 'check'] == ['be1 > be2', 'be1 > fe1']
    for pair in ('be1 > be2', 'be1 > fe1'):
        assert pair_statuses(report, pair) == dict.fromkeys(CROSS, 'pass')
    assert os.listdir(shared) == []


AT = 'import os, sys, time; time.sleep(max(0, float(sys.argv[1]) - time.time())); os.execvp(sys.argv[2], sys.argv[2:])'


def ping_pong_across(hosts: list, path: str) -> dict:
    """ping_pong -l held on the first host, tried on the second; ping_pong -rw one process per host."""
    holder = subprocess.Popen(ssh_argv(hosts[0], ['timeout', '20', 'stdbuf', '-oL', 'ping_pong', '-l', path + '.l']),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        seen = b''
        deadline = time.monotonic() + 10
        while b'Holding lock' not in seen and time.monotonic() < deadline:
            chunk = holder.stdout.read1(4096)
            if not chunk:
                break
            seen += chunk
        assert b'Holding lock' in seen, seen
        second = ssh(hosts[1], ['timeout', '5', 'ping_pong', '-l', path + '.l'], check=False).stdout
    finally:
        holder.stdin.write(b'\n')
        holder.stdin.close()
        holder.wait(15)
    start = time.time() + 3  # every host starts (and is killed) at the same time, whatever ssh takes
    runners = [subprocess.Popen(ssh_argv(host, ['python3', '-c', AT, str(start), 'timeout', '-s', 'KILL', '5',
                                                'stdbuf', '-oL', 'ping_pong', '-rw', path + '.rw',
                                                str(len(hosts) + 1)]),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for host in hosts]
    increments = [cyha_fsrig.ping_pong_steady(runner.communicate(timeout=30)[0]) for runner in runners]
    return {'second_lock': second, 'increments': increments}


def test_per_host_sshfs_mounts_are_unsafe_and_ping_pong_agrees(sshfs_each, shared, tmp_path):
    point = sshfs_each.point
    proc, report, results = qualify('be1:be2', point, tmp_path, check=False)
    assert proc.returncode != 0 and 'unsafe storage on be1, be2' in proc.stdout
    assert report['verdict'] == 'unsafe'
    statuses = pair_statuses(report, 'be1 > be2')
    assert statuses['lock_exclusion'] == 'fail' and statuses['pingpong_rw'] == 'fail', statuses
    failed = {item['check']: item for item in report['failures'] if item['where'] == 'be1 > be2'}
    assert 'a whole-file fcntl write lock was granted here while be1 held one' in failed['lock_exclusion']['reason']
    assert failed['lock_exclusion']['consequence'].startswith('two backends (or a backend and its spare) lock')
    assert results['be2']['cross'][point]['checks']['lock_exclusion']['evidence']['fcntl_refused'] is False
    # the single-host checks pass on each mount: the hosts' facts are unsafe because of the cross-host ones
    assert {host: item['paths'][point]['verdict'] for host, item in results.items()} == {'be1': 'safe', 'be2': 'safe'}
    assert {host: item['verdict'] for host, item in results.items()} == {'be1': 'unsafe', 'be2': 'unsafe'}
    assert sshfs_each.export and os.listdir(sshfs_each.export) == []
    broken = ping_pong_across(['be1', 'be2'], os.path.join(point, 'pp'))
    good = ping_pong_across(['be1', 'be2'], os.path.join(shared, 'pp'))
    assert 'Working POSIX byte range locks' not in broken['second_lock'] and broken['increments'] != [2, 2], broken
    assert 'Working POSIX byte range locks' in good['second_lock'] and good['increments'] == [2, 2], good


def test_per_host_fuse_mounts_are_unsafe(fuse_each, tmp_path):
    point = fuse_each.point
    proc, report, dummy = qualify('be1:be2', point, tmp_path, '-e', 'storage_probe_fail_on_unsafe=false')
    assert labutil.recap(proc.stdout)['localhost']['failed'] == 0
    assert report['verdict'] == 'unsafe'
    statuses = pair_statuses(report, 'be1 > be2')
    assert statuses['lock_exclusion'] == 'fail' and statuses['pingpong_rw'] == 'fail', statuses
    assert os.listdir(fuse_each.export) == []


def probe_workers(host: str) -> list:
    """The cross-host worker of the storage_probe_peer module running on a lab host: a Python process in the
    host's network namespace whose parent is the module's Python process (forked: the same command line), whose
    own parent is not Python (the shell Ansible started it from)."""
    netns = os.stat('/run/netns/cyha-%s' % host).st_ino
    found = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            if os.stat('/proc/%s/ns/net' % pid).st_ino != netns:
                continue
            with open('/proc/%s/cmdline' % pid, 'rb') as handle:
                if b'python' not in handle.read().split(b'\0')[0]:
                    continue
            with open('/proc/%s/stat' % pid, encoding='ascii', errors='replace') as handle:
                found[int(pid)] = int(handle.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return [pid for pid, parent in found.items() if parent in found and found[parent] not in found]


def channel_args(leader: str = 'be1') -> dict:
    return {'channel_address': addr(leader), 'channel_key': 'lab-' + os.urandom(16).hex()}


def test_killed_peer_fails_the_check_clearly_and_leaves_nothing(shared):
    run_id = 'killtest%d' % os.getpid()
    rundir = os.path.join(shared, '.cyrus-ha-probe-xh-' + run_id)
    args = json.dumps(dict({'path': shared, 'peers': ['be1', 'be2'], 'me': '{{ inventory_hostname }}',
                            'run_id': run_id, 'checks': ['lock_exclusion', 'pingpong_rw', 'lock_recovery'],
                            'step_timeout': 3}, **channel_args()))
    argv = [os.path.join(labutil.BIN, 'ansible'), '-i', labutil.inventory(), 'be1:be2', '-m', 'cyrus.ha.storage_probe_peer',
            '-a', args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=labutil.env(),
                            cwd=labutil.REPO)
    try:
        # be1 holds the lock (its data file is there), be2 is trying: kill be2's worker
        assert labutil.poll(lambda: os.path.exists(os.path.join(rundir, 'lockx')) and probe_workers('be2'), 60, 0.005)
        victim, = probe_workers('be2')
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    found = {m.group(1): json.loads(m.group(2)) for m in re.finditer(r'^(be\d) \| \w+ => (\{.*?^\})', out, re.M | re.S)}
    be1 = found['be1']['ansible_facts']['storage_probe_peer'][shared]
    be2 = found['be2']['ansible_facts']['storage_probe_peer'][shared]
    assert be1['checks']['lock_recovery']['status'] == 'fail'
    assert be1['checks']['lock_recovery']['reason'] == \
        'be2 did not answer within 3 s: the host or its probe process is gone'
    assert be1['gone'] == ['be2'] and be1['run_dir_cleanup'] == 'removed'
    assert be1['channel'] == '%s port 4743' % addr('be1') and 'channel_key' not in out
    assert be2['error'] == 'the cross-host probe process on be2 died (killed by SIGKILL)'
    selected = ('lock_exclusion', 'pingpong_rw', 'lock_recovery')
    assert {name: check['status'] for name, check in be2['checks'].items() if check['status'] != 'skip'} == \
        dict.fromkeys(selected, 'fail')
    statuses = [be1['checks'][name]['status'] for name in selected]  # from the check be2 died in on, all fail
    assert 'fail' in statuses and set(statuses[statuses.index('fail'):]) == {'fail'}, statuses
    assert labutil.poll(lambda: not os.path.exists('/proc/%d' % victim), 5)
    assert open_fds_under(shared) == [] and os.listdir(shared) == []


def test_module_bad_input_and_check_mode(shared):
    base = {'path': shared, 'peers': ['be1'], 'me': 'be1', 'run_id': 'solo0001'}
    ok = json.loads(labutil.ansible('be1', 'cyrus.ha.storage_probe_peer', json.dumps(base), '--check').stdout
                    .partition('=>')[2])
    rep = ok['ansible_facts']['storage_probe_peer'][shared]
    assert ok['changed'] is False and rep['skipped'] is True and rep['verdict'] == 'safe'
    cases = [
        (dict(base, me='be9'), 'me (be9) is not one of the peers (be1)'),
        (dict(base, run_id='a/b'), "run_id 'a/b' must be 6 to 64 letters, digits, - or _"),
        (dict(base, peers=['be1', 'be1']), 'peers name a host twice: be1, be1'),
        (dict(base, path=shared + '/missing'), '%s/missing does not exist' % shared),
        (dict(base, step_timeout=100), 'step_timeout (100.0) must be at most half of timeout (120.0)'),
        (dict(base, neighbour_files=0), 'neighbour_files must be between 1 and 1000000, got 0'),
        (dict(base, peers=['be1', 'be2']), "channel_address None must be the address (or name) of the leader that "
                                           "every host reaches it on: letters, digits, ., -, _ and :"),
        (dict(base, peers=['be1', 'be2'], channel_address=addr('be1')),
         'channel_key must be 16 to 256 letters, digits, - or _, the same on every host of the run (a random string '
         'made once on the controller)'),
    ]
    for args, message in cases:
        bad = labutil.ansible('be1', 'cyrus.ha.storage_probe_peer', json.dumps(args), check=False)
        assert bad.returncode != 0 and json.loads(bad.stdout.partition('=>')[2])['msg'] == message, bad.stdout
    assert os.listdir(shared) == []
