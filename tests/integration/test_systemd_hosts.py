# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The roles' systemd path on hosts as real as a site's: the lab brought up with --systemd (each host its own
root filesystem, systemd as PID 1, sshd as a unit; lab/osroot.py), a Murder with one warm-spare pair deployed
as systemd units, failover with a spare that lost its copy of the instance's configuration, and reboots (a
host's PID 1 killed by the lab's fence agent, then booted again) that bring back exactly what should come back.

This module owns its lab: it runs after every other integration test (conftest.py orders it last), takes the
shared lab down, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

import cyha_imap
import cyha_secrets
import labutil

pytestmark = [pytest.mark.lab, pytest.mark.own_lab]

SHAPE = ('--frontends', '1', '--backends', '1', '--spares', '1', '--replica-pairs', '0', '--systemd')
CYRUS_HOSTS = ('mupdate', 'fe1', 'be1')
ALL_HOSTS = ('mupdate', 'fe1', 'be1', 'spare', 'client')
ADDR = {'mupdate': '198.51.100.10', 'fe1': '198.51.100.11', 'be1': '198.51.100.21', 'spare': '198.51.100.30',
        'client': '198.51.100.40'}
SERVICE = {'mupdate': '198.51.100.110', 'fe1': '198.51.100.111', 'be1': '198.51.100.121'}
ALICE = ('alice', 'cyha-lab-alice')
MOUNT = '/srv/cyrus-ha/be1'
CONFIG = '/etc/cyrus-ha/be1/imapd.conf'


def vars_args() -> tuple:
    return ('-i', os.path.join(labutil.LAB_DIR, 'topology.yml'), '-e', '@lab/vars/murder.yml',
            '-e', '@lab/vars/systemd_hosts.yml')


def play(name: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return labutil.playbook(f'playbooks/{name}', *vars_args(), *extra, check=check)


def ssh(host: str, command: str) -> subprocess.CompletedProcess:
    """A shell command on a lab host over its own sshd (a systemd unit there)."""
    return subprocess.run(['ssh', '-i', os.path.join(labutil.LAB_DIR, 'id_ed25519'), '-o', 'BatchMode=yes',
                           '-o', f'UserKnownHostsFile={os.path.join(labutil.LAB_DIR, "known_hosts")}',
                           '-o', 'StrictHostKeyChecking=yes', '-o', 'ConnectTimeout=10', f'root@{ADDR[host]}',
                           command], capture_output=True, text=True, timeout=120, check=False)


def unit(host: str, name: str) -> dict:
    out = ssh(host, f'systemctl show -p ActiveState -p UnitFileState -p LoadState {name}').stdout
    return dict(line.split('=', 1) for line in out.splitlines() if '=' in line)


def addresses(host: str) -> set:
    out = subprocess.run(['ip', '-n', f'cyha-{host}', '-j', 'addr', 'show'], capture_output=True, text=True,
                         check=True).stdout
    return {a['local'] for link in json.loads(out) for a in link.get('addr_info', [])}


def main_pid(host: str) -> str:
    pid = ssh(host, f'systemctl show -p MainPID --value cyrus-imapd@{host}.service').stdout.strip()
    assert pid not in ('', '0'), f'cyrus-imapd@{host}.service has no main process'
    return pid


def failed_units(host: str) -> list[str]:
    out = ssh(host, 'systemctl list-units --failed --plain --no-legend --no-pager').stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def system_state(host: str) -> str:
    return ssh(host, 'systemctl is-system-running --wait').stdout.strip()


def power_cycle(*hosts: str) -> None:
    """Pull the plug (the lab's fence agent: every process of the host SIGKILLed, PID 1 first among them), then
    boot the host again on the same root filesystem."""
    for host in hosts:
        proc = subprocess.run(['/usr/sbin/fence_cyhalab', '-o', 'off', '-n', host], capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
    revived = labutil.lab('revive')
    assert revived.returncode == 0, revived.stderr
    for host in hosts:
        assert f'host {host} is down: booting it again' in revived.stderr
        assert system_state(host) == 'running', ssh(host, 'systemctl --failed --no-legend').stdout


def login_works() -> bool:
    try:
        with cyha_imap.imap(SERVICE['fe1'], *ALICE) as conn:
            return conn.select('INBOX', readonly=True)[0] == 'OK'
    except Exception:   # noqa: BLE001 - any failure means "not yet"
        return False


@pytest.fixture(scope='module')
def syslab():
    if os.geteuid() != 0:
        pytest.fail('the integration tests need root: they build the lab of network namespaces')
    down = labutil.lab('down')
    assert down.returncode == 0, down.stderr
    up = labutil.run(['python3', labutil.LAB_SCRIPT, '--dir', labutil.LAB_DIR, 'up', *SHAPE], timeout=900)
    assert up.returncode == 0, up.stderr
    yield
    if not os.environ.get('CYHA_LAB_KEEP'):
        assert labutil.lab('down').returncode == 0
        left = labutil.lab('leftovers').stdout.split('\n')
        assert [line for line in left if line.strip()] == []


def test_each_host_has_its_own_root_filesystem_and_runs_systemd(syslab):
    marker = f'/etc/cyha-lab-probe-{uuid.uuid4().hex[:8]}'
    assert ssh('be1', f'echo be1 > {marker} && cat {marker}').stdout == 'be1\n'
    for host in ALL_HOSTS:
        assert ssh(host, 'cat /proc/1/comm').stdout == 'systemd\n', host
        assert ssh(host, 'hostname').stdout == f'{host}\n'
        if host != 'be1':
            assert ssh(host, f'test -e {marker}; echo $?').stdout == '1\n', f'{host} sees be1\'s {marker}'
        # sshd is a unit of the host's own systemd; nothing failed at boot but Debian's own cyrus-imapd.service
        # (enabled by the package, it fails on the package's cyrus.conf: the roles mask it)
        assert unit(host, 'ssh.service')['ActiveState'] == 'active'
        assert set(failed_units(host)) <= {'cyrus-imapd.service'}, host
    assert not os.path.exists(marker), 'the controller sees a lab host\'s /etc'
    # /usr too: a package installed on one host is that host's alone
    assert ssh('spare', 'touch /usr/local/bin/cyha-probe && test -e /usr/local/bin/cyha-probe; echo $?').stdout == '0\n'
    assert ssh('be1', 'test -e /usr/local/bin/cyha-probe; echo $?').stdout == '1\n'


def test_the_murder_deploys_as_systemd_units(syslab, tmp_path):
    play('warm_spare.yml')
    for host in CYRUS_HOSTS:
        own = unit(host, f'cyrus-imapd@{host}.service')
        assert own['ActiveState'] == 'active', (host, own)
        # Debian's own cyrus-imapd.service (master on every address, enabled by the package) is masked
        assert unit(host, 'cyrus-imapd.service')['UnitFileState'] == 'masked', host
        assert system_state(host) == 'running', ssh(host, 'systemctl --failed --no-legend').stdout
    # the mupdate master and the frontend start at boot and take their own address first; the pair's instance
    # is never started by systemd: the runbooks start it where its volume is mounted
    for host in ('mupdate', 'fe1'):
        assert unit(host, f'cyrus-imapd@{host}.service')['UnitFileState'] == 'enabled'
        dropin = ssh(host, f'systemctl cat cyrus-imapd@{host}.service').stdout
        assert f'take-address --address {SERVICE[host]}/24' in dropin, dropin
    assert unit('be1', 'cyrus-imapd@be1.service')['UnitFileState'] == 'disabled'
    assert 'take-address' not in ssh('be1', 'systemctl cat cyrus-imapd@be1.service').stdout
    # the spare is ready for a failover: packages, template unit, the package's unit masked, nothing running
    assert unit('spare', 'cyrus-imapd@be1.service')['LoadState'] == 'loaded'
    assert unit('spare', 'cyrus-imapd@be1.service')['ActiveState'] == 'inactive'
    assert unit('spare', 'cyrus-imapd.service')['UnitFileState'] == 'masked'
    assert labutil.poll(login_works, 60), 'alice cannot log in through fe1'
    # the instance's logs are in the host's journal (Cyrus logs to syslog; journald holds /dev/log): the database
    # recovery its master runs at every start (START in cyrus.conf)
    assert 'recovering cyrus databases' in ssh('be1', 'journalctl --no-pager -t cyrus-be1/ctl_cyrusdb').stdout
    # cyrus_facts sees each instance run by its unit: the master it finds is the unit's main process
    pids = {host: main_pid(host) for host in CYRUS_HOSTS}
    for host in CYRUS_HOSTS:
        facts = labutil.module_result(host, 'cyrus.ha.cyrus_facts', {'partition_usage': False}, tmp_path)
        assert not facts['failed'], facts['_output']
        found = facts['ansible_facts']['cyrus']['instances'][host]
        assert found['running'] is True and str(found['master_pid']) == pids[host], (host, found, pids[host])
    # a changed option restarts that host's unit through the role's handler, and nothing else
    changed = ('-e', '{"murder_options": "{{ {\'timeout\': 33} if inventory_hostname == \'fe1\' else {} }}"}')
    recap = labutil.recap(play('warm_spare.yml', *changed).stdout)
    assert recap['fe1']['changed'] > 0 and recap['be1']['changed'] == recap['mupdate']['changed'] == 0, recap
    assert 'timeout: 33' in ssh('fe1', 'cat /etc/cyrus-ha/fe1/imapd.conf').stdout
    after = {host: main_pid(host) for host in CYRUS_HOSTS}
    assert after['fe1'] != pids['fe1'] and unit('fe1', 'cyrus-imapd@fe1.service')['ActiveState'] == 'active'
    assert (after['be1'], after['mupdate']) == (pids['be1'], pids['mupdate']), (pids, after)
    # running the runbook again changes nothing
    again = labutil.recap(play('warm_spare.yml', *changed).stdout)
    assert set(again) >= set(CYRUS_HOSTS) | {'spare'} and all(c['changed'] == 0 for c in again.values()), again


def test_a_drill_under_traffic_passes_through_systemd(syslab, tmp_path):
    """The failover drill (drill.yml) with the instance SIGKILLed under mail traffic from the client host: the
    unit's Restart= must not bring the instance back on the home node behind the move, every acknowledged message
    is on be1 once and intact, and neither Ansible's output at -vvv nor any host's journal holds a secret."""
    secret = tmp_path / 'drill-secret.json'
    secret.write_text(json.dumps({'drill_password': ALICE[1]}), encoding='utf-8')
    secret.chmod(0o600)
    proc = play('drill.yml', '-e', '@lab/vars/traffic.yml', '-e', 'warm_spare_instance=be1', '-e', 'drill_frontend=fe1',
                '-e', 'drill_user=alice', '-e', f'@{secret}', '-e', f'drill_report_dir={tmp_path}',
                '-e', 'drill_id=systemd', '-e', 'drill_failure=instance-killed', '-vvv', check=False)
    secrets = cyha_secrets.lab_secrets()
    assert cyha_secrets.leaks(proc.stdout + proc.stderr, secrets) == []
    journals = {host: ssh(host, 'journalctl --no-pager -o cat').stdout for host in ALL_HOSTS}
    assert all(len(text) > 1000 for text in journals.values()), {h: len(t) for h, t in journals.items()}
    assert cyha_secrets.journal_leaks(journals, secrets) == {}
    with open(tmp_path / 'drill-be1-systemd.json', encoding='utf-8') as handle:
        report = json.load(handle)
    assert proc.returncode == 0 and report['passed'] is True, proc.stdout[-4000:]
    assert report['canaries']['missing'] == 0 and report['canaries']['changed'] == 0
    invariants = report['traffic']['invariants']
    assert (invariants['ok'], invariants['violations'], invariants['errors']) == (True, [], [])
    deliveries = report['traffic']['deliveries']
    assert deliveries['accepted'] > 0 and (deliveries['failed'], deliveries['still_queued']) == (0, 0), deliveries
    # back home, under its own unit; the spare holds nothing
    assert unit('be1', 'cyrus-imapd@be1.service')['ActiveState'] == 'active'
    assert unit('spare', 'cyrus-imapd@be1.service')['ActiveState'] == 'inactive'
    assert SERVICE['be1'] in addresses('be1') and SERVICE['be1'] not in addresses('spare')


def test_a_spare_without_the_instances_configuration_is_refused_or_restored(syslab):
    home_conf = ssh('be1', f'cat {CONFIG}').stdout
    assert 'servername: be1-svc' in home_conf
    assert ssh('spare', f'rm {CONFIG}').returncode == 0
    # unplanned (the home node is not asked): nothing can restore the file, so nothing moves
    proc = play('failover.yml', '-e', 'warm_spare_instance=be1', '-e', 'warm_spare_failure=unplanned',
                '-e', 'warm_spare_fenced_peer=be1', check=False)
    assert proc.returncode != 0
    assert (f'spare cannot run instance be1: missing {CONFIG}. Nothing was changed (the instance stays where it '
            'is).') in proc.stdout, proc.stdout[-3000:]
    assert unit('be1', 'cyrus-imapd@be1.service')['ActiveState'] == 'active'
    assert SERVICE['be1'] in addresses('be1') and SERVICE['be1'] not in addresses('spare')
    assert ssh('be1', f'findmnt -n {MOUNT}').returncode == 0
    # planned: the spare gets the home node's copy before the home node lets anything go
    play('failover.yml', '-e', 'warm_spare_instance=be1')
    assert ssh('spare', f'cat {CONFIG}').stdout == home_conf
    assert ssh('spare', f'stat -c %U:%G:%a {CONFIG}').stdout == 'root:mail:640\n'
    spare_unit = unit('spare', 'cyrus-imapd@be1.service')
    assert spare_unit['ActiveState'] == 'active' and spare_unit['UnitFileState'] == 'disabled', spare_unit
    assert unit('be1', 'cyrus-imapd@be1.service')['ActiveState'] == 'inactive'
    assert labutil.poll(login_works, 60), 'alice cannot log in through fe1 after the failover'


def test_a_reboot_brings_back_exactly_the_hosts_own_services(syslab):
    assert unit('spare', 'cyrus-imapd@be1.service')['ActiveState'] == 'active', 'the spare should hold be1'
    power_cycle('spare', 'fe1')
    # the spare held be1 when it lost power: after the reboot be1 does not come back there on its own
    # (no master, no volume, no address): the operator decides where it runs
    assert unit('spare', 'cyrus-imapd@be1.service')['ActiveState'] == 'inactive'
    assert ssh('spare', f'findmnt -n {MOUNT}').returncode == 1
    assert SERVICE['be1'] not in addresses('spare')
    # the frontend is home to its instance: the unit took the address back (after its conflict probe) and started
    assert unit('fe1', 'cyrus-imapd@fe1.service')['ActiveState'] == 'active'
    assert SERVICE['fe1'] in addresses('fe1')
    # be1 back on its home node: the spare died holding the volume, so the move is unplanned with the
    # operator's statement that it is fenced (the lab's fence agent did it)
    play('failback.yml', '-e', 'warm_spare_instance=be1', '-e', 'warm_spare_failure=unplanned',
         '-e', 'warm_spare_fenced_peer=spare')
    assert unit('be1', 'cyrus-imapd@be1.service')['ActiveState'] == 'active'
    assert labutil.poll(login_works, 60), 'alice cannot log in through fe1 after the failback'


def test_a_taken_address_is_not_taken_again_at_boot(syslab):
    """The boot-time conflict probe: fe1's service address held by another host (the spare, by hand) makes fe1's
    unit refuse to start after a reboot instead of answering for the same address twice."""
    assert ssh('spare', f'ip addr add {SERVICE["fe1"]}/24 dev eth0').returncode == 0
    try:
        proc = subprocess.run(['/usr/sbin/fence_cyhalab', '-o', 'off', '-n', 'fe1'], capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert labutil.lab('revive').returncode == 0

        def refused() -> bool:
            journal = ssh('fe1', 'journalctl --no-pager -b -u cyrus-imapd@fe1.service').stdout
            return f'{SERVICE["fe1"]} answers from' in journal and 'refusing to take it' in journal
        assert labutil.poll(refused, 60), ssh('fe1', 'journalctl --no-pager -b -u cyrus-imapd@fe1.service').stdout
        state = ssh('fe1', 'systemctl show -p ActiveState -p SubState cyrus-imapd@fe1.service').stdout.split()
        assert state in (['ActiveState=failed', 'SubState=failed'], ['ActiveState=activating', 'SubState=auto-restart'],
                         ['ActiveState=activating', 'SubState=start-pre']), state
        assert SERVICE['fe1'] not in addresses('fe1')
        assert ssh('fe1', 'pgrep -f "[m]aster -C /etc/cyrus-ha/fe1/imapd.conf"').stdout == ''
    finally:
        ssh('spare', f'ip addr del {SERVICE["fe1"]}/24 dev eth0')
    # with the address free again, the unit's next start takes it
    assert ssh('fe1', 'systemctl restart cyrus-imapd@fe1.service').returncode == 0
    assert SERVICE['fe1'] in addresses('fe1')
    assert labutil.poll(login_works, 60)


CLUSTER = ('-e', '@lab/vars/systemd_cluster.yml')
GROUP = ('be1-volume', 'be1-address', 'be1-cyrus')


def group_started_on(node: str) -> bool:
    out = ssh('spare' if node == 'spare' else 'be1', 'crm_mon -1').stdout
    return all(any(line.strip().startswith(f'* {name}') and line.rstrip().endswith(f'Started {node}')
                   for line in out.splitlines()) for name in GROUP)


def instance_masters(host: str) -> list[str]:
    """The PIDs of be1's master processes on the host (by their -C argument), seen from inside it."""
    return ssh(host, 'pgrep -f "[m]aster -C /etc/cyrus-ha/be1/imapd.conf"').stdout.split()


def test_pacemaker_runs_as_systemd_units_and_takes_over_from_a_crashed_node(syslab, tmp_path):
    """The cluster role's systemd path: Corosync and Pacemaker as the hosts' units, the pair's instance units
    disabled, fencing through the lab's network power switch; a node crash under it, and the crashed node's
    reboot brings the stack back but never the instance outside Pacemaker."""
    assert unit('be1', 'cyrus-imapd@be1.service')['ActiveState'] == 'active', 'be1 should be home'
    play('cluster.yml', *CLUSTER)
    for host in ('be1', 'spare'):
        for name in ('corosync.service', 'pacemaker.service'):
            state = unit(host, name)
            assert (state['ActiveState'], state['UnitFileState']) == ('active', 'enabled'), (host, name, state)
        assert unit(host, 'cyrus-imapd@be1.service')['UnitFileState'] == 'disabled', host
    assert labutil.poll(lambda: group_started_on('be1'), 120, interval=1), ssh('be1', 'crm_mon -1r').stdout
    assert labutil.poll(login_works, 60), 'alice cannot log in through fe1 under the cluster'
    # the fence devices reach the switch from inside a host (a monitor asks it)
    assert ssh('spare', 'fence_cyhalab -o monitor --power-switch 198.51.100.1:7099').returncode == 0
    proc = play('cluster_drill.yml', *CLUSTER, '-e', 'warm_spare_instance=be1', '-e', 'drill_frontend=fe1',
                '-e', 'drill_user=alice', '-e', 'drill_password=cyha-lab-alice', '-e', f'drill_report_dir={tmp_path}',
                '-e', 'drill_id=systemd', '-e', 'drill_failure=node-crash', check=False)
    with open(tmp_path / 'cluster-drill-be1-systemd.json', encoding='utf-8') as handle:
        report = json.load(handle)
    assert proc.returncode == 0 and report['passed'], proc.stdout[-4000:]
    assert (report['engine'], report['from'], report['to']) == ('pacemaker', 'be1', 'spare')
    checks = {c['name']: c for c in report['checks']}
    fenced = checks['the failed node fenced before the volume was mounted']
    # the evidence is read in the surviving node's journal (systemd), not in Pacemaker's log file
    assert fenced['ok'] is True and fenced['detail'].startswith('journal lines since the failure'), fenced
    assert checks['every canary intact after the failover']['ok'] is True
    # Pacemaker on the spare fenced be1 through the switch, from inside its own PID namespace
    with open(os.path.join(labutil.LAB_DIR, 'power_switch.log'), encoding='utf-8') as handle:
        switch_log = handle.read()
    assert ' off be1: rc 0' in switch_log or ' reboot be1: rc 0' in switch_log, switch_log
    # be1 was booted again by the drill's recovery: its stack (enabled at boot) rejoins, and the instance runs on
    # the spare only, under Pacemaker; nothing on be1 started it behind the cluster's back
    assert labutil.poll(lambda: 'Online: [ be1 spare ]' in ssh('spare', 'crm_mon -1').stdout, 120, interval=1)
    assert group_started_on('spare')
    assert unit('be1', 'cyrus-imapd@be1.service')['ActiveState'] == 'inactive'
    assert instance_masters('be1') == [] and len(instance_masters('spare')) == 1
    assert labutil.poll(login_works, 60)
