# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.storage_probe with the lab: one sshfs mount of a lab host's export is safe (and ping_pong
agrees); the module runs on a lab host over SSH; playbooks/storage_probe.yml reports and gates."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

import pytest

import cyha_fsrig
import labutil

pytestmark = pytest.mark.lab

QUICK = {'fsx_ops': 500, 'scale_files': 256, 'scale_rounds': 3, 'timeout': 120}
KEY = os.path.join(labutil.LAB_DIR, 'id_ed25519')
KNOWN_HOSTS = os.path.join(labutil.LAB_DIR, 'known_hosts')


@pytest.fixture(scope='module')
def export(lab):
    """A directory exported over SSH by be1 (the lab hosts share the root filesystem)."""
    path = tempfile.mkdtemp(prefix='sshfs-export-', dir=labutil.LAB_DIR)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='module')
def sshfs_mount(export):
    rig = cyha_fsrig.Rig()
    try:
        be1 = [host for host in labutil.lab_hosts() if host['name'] == 'be1'][0]
        yield rig.sshfs('sshfs', 'root@%s:%s' % (be1['addr4'], export), KEY, KNOWN_HOSTS)
    finally:
        rig.close()
    assert not os.path.exists(rig.base)


def test_one_sshfs_mount_is_coherent_and_ping_pong_agrees(sshfs_mount, export):
    """Locks, mmap, rename, O_EXCL, fsync and fsx hold on one sshfs mount; only link counts do not:
    SFTP attributes carry no link count, so sshfs reports nlink 1 for every file (degraded, not unsafe)."""
    out = cyha_fsrig.run_module(sshfs_mount, **QUICK)
    assert out['rc'] == 0 and out['changed'] is False, out
    rep = out['ansible_facts']['storage_probe'][sshfs_mount]
    assert rep['verdict'] == 'degraded', rep['reasons']
    # The sftp-server behind the mount competes for the CPUs with everything else on a busy test machine:
    # its metadata rate may sag between batches (a metadata_scale warning, never unsafe). Nothing else may.
    assert rep['reasons'][0] == 'hard_links: nlink went [1, 1, 1] instead of [2, 2, 1]'
    assert all(reason.startswith('metadata_scale: ') for reason in rep['reasons'][1:]), rep['reasons']
    expected = dict.fromkeys(rep['checks'], 'pass')
    expected['hard_links'] = 'fail'
    expected['metadata_scale'] = rep['checks']['metadata_scale']['status']
    assert expected['metadata_scale'] in ('pass', 'warn')
    expected['metadata_deep'] = 'skip'        # opt-in: `all` leaves it out
    assert {name: check['status'] for name, check in rep['checks'].items()} == expected
    assert rep['checks']['hard_links']['evidence']['same_file'] is True
    assert rep['identity']['fuse_subtype'] == 'sshfs' and rep['identity']['shared'] is True
    assert rep['identity']['source'].endswith(':' + export)
    assert os.listdir(export) == []
    work = os.path.join(sshfs_mount, 'cyha-pingpong')
    os.mkdir(work)
    try:
        locked = cyha_fsrig.ping_pong_locked(os.path.join(work, 'l'))
        rw, dummy = cyha_fsrig.ping_pong_increment(os.path.join(work, 'rw'), '-rw')
        rwm, dummy = cyha_fsrig.ping_pong_increment(os.path.join(work, 'rwm'), '-rwm')
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert 'Working POSIX byte range locks' in locked and rw == [2, 2] and rwm == [2, 2], (locked, rw, rwm)


def _lab_result(proc) -> dict:
    return json.loads(proc.stdout.partition('=>')[2])


def test_module_runs_on_a_lab_host_over_ssh(export):
    checks = ['identity', 'mmap_sees_write', 'fcntl_locks', 'rename_reopen', 'excl_race']
    args = json.dumps(dict(QUICK, path=[export], checks=checks))
    proc = labutil.ansible('be1', 'cyrus.ha.storage_probe', args)
    out = _lab_result(proc)
    rep = out['ansible_facts']['storage_probe'][export]
    assert out['changed'] is False and rep['verdict'] == 'safe', rep['reasons']
    assert rep['checks']['fcntl_locks']['status'] == 'pass' and rep['checks']['fsx']['status'] == 'skip'
    bad = labutil.ansible('be1', 'cyrus.ha.storage_probe', json.dumps({'path': [export + '/missing']}), check=False)
    assert bad.returncode != 0 and _lab_result(bad)['msg'] == '%s/missing does not exist' % export
    assert os.listdir(export) == []


def _report_rows(stdout: str) -> list:
    return [line.strip().strip('",') for line in stdout.splitlines() if '    pass    ' in line or '    fail    ' in line]


def test_playbook_reports_each_host_and_writes_json(export, tmp_path):
    report_file = tmp_path / 'storage_probe.json'
    proc = labutil.playbook('playbooks/storage_probe.yml', '-e', 'storage_probe_hosts=be1:be2', '-e',
                            json.dumps({'storage_probe_paths': [export], 'storage_probe_fsx_ops': 300,
                                        'storage_probe_scale_files': 256, 'storage_probe_checks':
                                        ['identity', 'fcntl_locks', 'mmap_sees_write', 'fsx']}),
                            '-e', 'storage_probe_report_file=%s' % report_file, '-e', 'storage_probe_report_dir=%s' % tmp_path)
    recap = labutil.recap(proc.stdout)
    assert recap['be1']['failed'] == 0 and recap['be2']['failed'] == 0 and recap['localhost']['failed'] == 0
    assert '"%s: SAFE",' % export in proc.stdout
    # the probe ran in the background on both hosts and each check of each host showed as it ended, in order
    for host in ('be1', 'be2'):
        shown = re.findall(r'ok: \[%s\] => \(item=%s: (\w+)\)' % (host, re.escape(export)), proc.stdout)
        assert shown == ['identity', 'mmap_sees_write', 'fcntl_locks', 'fsx'], (host, shown)   # the module's order
    assert sum('fcntl_locks       pass    fcntl locks exclude' in row for row in _report_rows(proc.stdout)) == 2
    written = json.loads(report_file.read_text())
    assert sorted(written) == ['be1', 'be2']
    assert {host: item['verdict'] for host, item in written.items()} == {'be1': 'safe', 'be2': 'safe'}
    assert written['be1']['paths'][export]['checks']['fsx']['status'] == 'pass'
    assert os.listdir(export) == []


def test_playbook_fails_on_unsafe_unless_told_not_to(tmp_path):
    rig = cyha_fsrig.Rig()
    try:
        broken = rig.faultfs('locks')
        base = ['-c', 'local', '-e', 'ansible_python_interpreter=%s' % cyha_fsrig.sys.executable,
                '-e', 'storage_probe_hosts=localhost', '-e',
                json.dumps({'storage_probe_paths': [broken], 'storage_probe_checks': ['identity', 'fcntl_locks']}),
                '-e', 'storage_probe_report_file=%s' % (tmp_path / 'r.json'), '-e', 'storage_probe_report_dir=%s' % tmp_path]
        gated = labutil.playbook('playbooks/storage_probe.yml', *base, check=False)
        assert gated.returncode != 0
        assert 'unsafe storage on localhost; see %s' % (tmp_path / 'r.json') in gated.stdout
        assert json.loads((tmp_path / 'r.json').read_text())['localhost']['verdict'] == 'unsafe'
        reported = labutil.playbook('playbooks/storage_probe.yml', *base, '-e', 'storage_probe_fail_on_unsafe=false')
        assert labutil.recap(reported.stdout)['localhost']['failed'] == 0
        empty = labutil.playbook('playbooks/storage_probe.yml', '-c', 'local', '-e', 'storage_probe_hosts=localhost',
                                 check=False)
        assert empty.returncode != 0 and 'storage_probe_paths is empty: give the mail-store directories to probe' \
            in empty.stdout
    finally:
        rig.close()


def test_the_background_probe_fails_with_the_modules_message_and_predicts_in_check_mode(tmp_path):
    """The role's background run on the controller: a path that is not there fails with the module's own message
    (as the foreground task did) and leaves no progress file or job status behind; in check mode each check
    still shows as it ends and nothing changes."""
    jobs = os.path.expanduser('~/.ansible_async')
    before = (set(os.listdir(tempfile.gettempdir())), set(os.listdir(jobs)) if os.path.isdir(jobs) else set())
    base = ['-c', 'local', '-e', 'ansible_python_interpreter=%s' % cyha_fsrig.sys.executable,
            '-e', 'storage_probe_hosts=localhost', '-e', 'storage_probe_report_dir=%s' % tmp_path]
    missing = tmp_path / 'missing'
    proc = labutil.playbook('playbooks/storage_probe.yml', *base,
                            '-e', json.dumps({'storage_probe_paths': [str(missing)]}), check=False)
    assert proc.returncode != 0 and '"msg": "%s does not exist"' % missing in proc.stdout, proc.stdout[-3000:]
    after = (set(os.listdir(tempfile.gettempdir())), set(os.listdir(jobs)) if os.path.isdir(jobs) else set())
    assert [sorted(a - b) for a, b in zip(after, before)] == [[], []]
    probed = tmp_path / 'store'
    probed.mkdir()
    checked = labutil.playbook('playbooks/storage_probe.yml', *base, '--check', '-e', json.dumps(
        {'storage_probe_paths': [str(probed)], 'storage_probe_checks': ['identity', 'fcntl_locks', 'rename_reopen']}))
    shown = re.findall(r'ok: \[localhost\] => \(item=%s: (\w+)\)' % re.escape(str(probed)), checked.stdout)
    assert shown == ['identity', 'fcntl_locks', 'rename_reopen'], checked.stdout[-3000:]
    # the only predicted changes are the two reports (JSON and Markdown) check mode does not write
    assert labutil.recap(checked.stdout)['localhost']['changed'] == 2
    assert sorted(os.listdir(tmp_path)) == ['store'] and os.listdir(probed) == []
