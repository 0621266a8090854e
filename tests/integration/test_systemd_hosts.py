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


def test_the_murder_deploys_as_systemd_units(syslab):
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
    # the instance's logs are in the host's journal (Cyrus logs to syslog; journald holds /dev/log)
    assert 'cyrus-be1/master' in ssh('be1', 'journalctl --no-pager -t cyrus-be1/master').stdout
    # running the runbook again changes nothing
    again = play('warm_spare.yml')
    assert all(counts['changed'] == 0 for counts in labutil.recap(again.stdout).values()), again.stdout[-3000:]


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
        assert labutil.poll(lambda: unit('fe1', 'cyrus-imapd@fe1.service')['ActiveState'] in ('failed', 'activating'),
                            60)
        assert SERVICE['fe1'] not in addresses('fe1')
        journal = ssh('fe1', 'journalctl --no-pager -b -u cyrus-imapd@fe1.service').stdout
        assert f'{SERVICE["fe1"]} answers from' in journal and 'refusing to take it' in journal, journal[-2000:]
    finally:
        ssh('spare', f'ip addr del {SERVICE["fe1"]}/24 dev eth0')
    # with the address free again, the unit's next start takes it
    assert ssh('fe1', 'systemctl restart cyrus-imapd@fe1.service').returncode == 0
    assert SERVICE['fe1'] in addresses('fe1')
    assert labutil.poll(login_works, 60)
