# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Warm-spare pairs on the lab: be1's instance (configdirectory and partitions on be1's "SAN"
volume) moved to the spare and back by playbooks/failover.yml and failback.yml, the split-brain
refusals, an interrupted failover completed by the next run, and the failover drill (drill.yml)
with its report. Mail is proved with a real IMAP/LMTP client through a frontend."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

import cyha_imap
import cyha_secrets
import cyha_traffic
import labutil
from cyha_cluster import login_works

pytestmark = pytest.mark.lab

VARS = ('-e', '@lab/vars/murder.yml', '-e', '@lab/vars/murder_hosts.yml',
        '-e', '@lab/vars/warm_spare.yml', '-e', '@lab/vars/replication.yml')
INSTANCES = ('mupdate', 'be1', 'be2', 'fe1', 'fe2')
ADMIN = ('cyrus', 'cyha-lab-admin')
ALICE = ('alice', 'cyha-lab-alice')
MOUNT = '/srv/cyrus-ha/be1'
STATE_FILE = f'{MOUNT}/cyrus-ha-warm-spare.json'
BE1_ADDR = '198.51.100.121'
FE1_ADDR = '198.51.100.111'
SYNC_TIMEOUT = 60
SAN: dict = {}


def san() -> dict:
    with open(os.path.join(labutil.LAB_DIR, 'lab.json'), encoding='utf-8') as handle:
        return json.load(handle)['san']


def play(name: str, *extra: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return labutil.playbook(f'playbooks/{name}', *VARS, *extra, check=check, **kwargs)


def on(host: str, argv: list[str], check: bool = False) -> subprocess.CompletedProcess:
    """Run a command inside a lab host (its network and mount namespaces) over SSH."""
    return labutil.ansible(host, 'ansible.builtin.command', json.dumps({'argv': argv}), check=check)


inside = labutil.inside     # a command in a lab host's mount namespace, without SSH


def mounted(host: str, mountpoint: str = MOUNT) -> bool:
    return inside(host, ['findmnt', '-n', mountpoint]).returncode == 0


def has_address(netns: str, address: str) -> bool:
    out = subprocess.run(['ip', '-n', netns, '-j', 'addr', 'show'], capture_output=True, text=True, check=True).stdout
    return address in {a['local'] for link in json.loads(out) for a in link.get('addr_info', [])}


def master_netns(instance: str) -> str | None:
    """The lab host (network namespace name) whose master runs the instance."""
    found = [netns for netns in ('cyha-be1', 'cyha-spare') if cyha_imap.master_pid(instance, netns)]
    return ','.join(found) or None


def record(host: str) -> dict:
    proc = inside(host, ['cat', STATE_FILE])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def placement() -> dict:
    return {'master': master_netns('be1'), 'address_on_be1': has_address('cyha-be1', BE1_ADDR),
            'address_on_spare': has_address('cyha-spare', BE1_ADDR), 'mounted_on_be1': mounted('be1'),
            'mounted_on_spare': mounted('spare')}


HOME = {'master': 'cyha-be1', 'address_on_be1': True, 'address_on_spare': False, 'mounted_on_be1': True,
        'mounted_on_spare': False}
SPARE = {'master': 'cyha-spare', 'address_on_be1': False, 'address_on_spare': True, 'mounted_on_be1': False,
         'mounted_on_spare': True}


def cleanup(hosts: dict) -> None:
    for instance in INSTANCES:
        cyha_imap.stop_instance(instance)
    for instance in ('be1', 'be2'):
        cyha_imap.stop_instance(instance, 'cyha-spare')
    for name in ('be1', 'be2', 'spare'):
        for volume in ('be1', 'be2'):
            on(name, ['umount', f'/srv/cyrus-ha/{volume}'])
    for host in hosts.values():
        for other in hosts.values():
            subprocess.run(['ip', '-n', host['netns'], 'addr', 'del', f'{other["service_addr4"]}/24', 'dev', 'eth0'],
                           capture_output=True, check=False)
    for host in hosts.values():
        if host['name'] in INSTANCES:
            cyha_imap.remove_instance(host)


def lists_if(condition) -> dict | None:
    """The Murder's mailbox lists compared now, when the result meets the condition."""
    result = cyha_traffic.murder_lists()
    return result if condition(result) else None


def deploy_pair(lab) -> dict:
    """The lab Murder with be1 and be2 on their SAN volumes, deployed by playbooks/warm_spare.yml from nothing:
    every instance removed, the volumes emptied (a previous run's mailboxes would not match the fresh mupdate
    master)."""
    hosts = {h['name']: h for h in lab if h['name'] in INSTANCES + ('spare',)}
    repaired = labutil.lab_up()     # a module before this one may have left a link cut or a host fenced
    assert repaired.returncode == 0, repaired.stderr
    cleanup(hosts)
    SAN.update(san())
    for backend in ('be1', 'be2'):
        labutil.ansible(backend, 'cyrus.ha.shared_volume', json.dumps({
            'label': f'cyha-{backend}', 'mountpoint': f'/srv/cyrus-ha/{backend}',
            'devices': [SAN[backend]['devices'][backend]],
            'mmp_probe_timeout': 3}))
        on(backend, ['find', f'/srv/cyrus-ha/{backend}', '-mindepth', '1', '-maxdepth', '1',
                     '!', '-name', 'lost+found', '-exec', 'rm', '-rf', '{}', '+'], check=True)
    started = time.monotonic()
    deployed = play('warm_spare.yml')
    seconds = time.monotonic() - started
    # be3 (the replica pair's backend, not one of these pairs) may still run from an earlier module, its list
    # unknown to this fresh mupdate master: a backend does not push again by itself, so it is given Cyrus's
    # documented recovery (ctl_mboxlist -m on the backend), as a site does after it lost its mupdate master's list
    if cyha_imap.master_pid('be3', 'cyha-be3'):
        pushed = on('be3', ['/usr/lib/cyrus/bin/ctl_mboxlist', '-C', '/etc/cyrus-ha/be3/imapd.conf', '-m'])
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    # the frontends' mupdate slaves follow the master within seconds: the Murder's lists agree before any test
    agreed = labutil.poll(lambda: lists_if(lambda r: r['ok']), 90, interval=2)
    assert agreed, cyha_traffic.murder_lists()
    with cyha_imap.imap(BE1_ADDR, *ADMIN) as conn:   # made by site.yml (murder_mailboxes), on the volume
        assert 'user.alice' in cyha_imap.mailboxes(conn)
    assert labutil.poll(login_works, SYNC_TIMEOUT, interval=0.5), 'alice cannot log in through fe1'
    return {'hosts': hosts, 'deployed': deployed, 'seconds': seconds}


@pytest.fixture(scope='module')
def pair(lab):
    """The pairs deployed from nothing. They stay deployed afterwards, as `make lab` leaves the lab:
    test_warm_spare_cluster.py forms its cluster on them (without deploying them again)."""
    yield deploy_pair(lab)


def test_deploy_puts_the_instance_on_its_volume_on_the_home_node(pair):
    counts = labutil.recap(pair['deployed'].stdout)
    assert all(c['failed'] == 0 for c in counts.values()), pair['deployed'].stdout[-3000:]
    print(f'deploy with warm-spare pairs: {pair["seconds"]:.1f} s')
    with open('/etc/cyrus-ha/be1/imapd.conf', encoding='utf-8') as handle:
        conf = handle.read()
    assert f'configdirectory: {MOUNT}/lib\n' in conf and f'partition-default: {MOUNT}/spool\n' in conf
    assert placement() == HOME
    assert record('be1')['active'] == 'be1' and record('be1')['servername'] == 'be1-svc.cyha.test'
    assert inside('spare', ['test', '-e', STATE_FILE]).returncode != 0, 'the volume must not be visible on spare'


def test_planned_failover_moves_the_instance_and_keeps_the_mail(pair):
    with cyha_imap.imap(FE1_ADDR, *ALICE) as conn:
        subject = cyha_imap.append_and_fetch(conn)
    started = time.monotonic()
    proc = play('failover.yml', '-e', 'warm_spare_instance=be1')
    print(f'planned failover playbook: {time.monotonic() - started:.1f} s')
    counts = labutil.recap(proc.stdout)
    assert counts['be1']['changed'] > 0 and counts['spare']['changed'] > 0, proc.stdout[-3000:]
    assert placement() == SPARE
    assert record('spare')['active'] == 'spare'
    assert labutil.poll(login_works, SYNC_TIMEOUT, interval=0.2), 'no login through fe1 after the failover'
    with cyha_imap.imap(FE1_ADDR, *ALICE) as conn:
        conn.select('INBOX', readonly=True)
        assert len(conn.search(None, 'SUBJECT', subject)[1][0].split()) == 1
    # Mail written on the spare lands on the volume.
    with cyha_imap.imap(FE1_ADDR, *ALICE) as conn:
        pair['written_on_spare'] = cyha_imap.append_and_fetch(conn)


def test_second_failover_changes_nothing(pair):
    pid = cyha_imap.master_pid('be1', 'cyha-spare')
    proc = play('failover.yml', '-e', 'warm_spare_instance=be1')
    counts = labutil.recap(proc.stdout)
    assert counts and all(c['changed'] == 0 and c['failed'] == 0 for c in counts.values()), proc.stdout[-3000:]
    assert placement() == SPARE and cyha_imap.master_pid('be1', 'cyha-spare') == pid


def test_spare_holding_the_instance_refuses_a_second_mount_at_home(pair):
    # be1 (home) must not mount the volume while the spare's MMP heartbeat is live.
    proc = labutil.ansible('be1', 'cyrus.ha.shared_volume', json.dumps({
        'label': 'cyha-be1', 'mountpoint': MOUNT, 'devices': [SAN['be1']['devices']['be1']],
        'mmp_probe_timeout': 3}), check=False)
    assert proc.returncode != 0
    assert 'heartbeat' in proc.stdout.lower() or 'in use' in proc.stdout.lower(), proc.stdout[-2000:]
    assert not mounted('be1') and placement() == SPARE


def test_failback_restores_the_home_placement(pair):
    proc = play('failback.yml', '-e', 'warm_spare_instance=be1')
    counts = labutil.recap(proc.stdout)
    assert counts['be1']['changed'] > 0 and counts['spare']['changed'] > 0, proc.stdout[-3000:]
    assert placement() == HOME and record('be1')['active'] == 'be1'
    assert labutil.poll(login_works, SYNC_TIMEOUT, interval=0.2)
    with cyha_imap.imap(FE1_ADDR, *ALICE) as conn:
        conn.select('INBOX', readonly=True)
        assert len(conn.search(None, 'SUBJECT', pair['written_on_spare'])[1][0].split()) == 1
    again = play('failback.yml', '-e', 'warm_spare_instance=be1')
    assert all(c['changed'] == 0 for c in labutil.recap(again.stdout).values()), again.stdout[-3000:]


def test_spare_refuses_the_address_and_the_volume_while_home_serves(pair):
    address = labutil.ansible('spare', 'cyrus.ha.service_ip', json.dumps({'address': f'{BE1_ADDR}/24'}), check=False)
    assert address.returncode != 0 and 'answered' in address.stdout, address.stdout[-2000:]
    volume = labutil.ansible('spare', 'cyrus.ha.shared_volume', json.dumps({
        'label': 'cyha-be1', 'mountpoint': MOUNT, 'devices': [SAN['be1']['devices']['spare']],
        'mmp_probe_timeout': 3}), check=False)
    assert volume.returncode != 0, volume.stdout[-2000:]
    # An unplanned move without fencing and without the operator's statement is refused up front.
    refused = play('failover.yml', '-e', 'warm_spare_instance=be1', '-e', 'warm_spare_failure=unplanned', check=False)
    assert refused.returncode != 0
    assert 'refusing to take over from a node that may still be alive' in refused.stdout, refused.stdout[-2000:]
    assert placement() == HOME


def test_interrupted_failover_is_completed_by_the_next_run(pair):
    with cyha_imap.imap(FE1_ADDR, *ALICE) as conn:
        subject = cyha_imap.append_and_fetch(conn)
    argv = [os.path.join(labutil.BIN, 'ansible-playbook'), '-i', labutil.inventory(), 'playbooks/failover.yml', *VARS,
            '-e', 'warm_spare_instance=be1']
    proc = subprocess.Popen(argv, cwd=labutil.REPO, env=labutil.env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # Killed half-way: the home node has released the address, the spare has not taken it yet.
        assert labutil.poll(lambda: not has_address('cyha-be1', BE1_ADDR), 120, interval=0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    halfway = placement()
    assert halfway['master'] is None and not halfway['address_on_spare'], halfway
    done = play('failover.yml', '-e', 'warm_spare_instance=be1')
    assert all(c['failed'] == 0 for c in labutil.recap(done.stdout).values())
    assert placement() == SPARE and record('spare')['active'] == 'spare'
    assert labutil.poll(login_works, SYNC_TIMEOUT, interval=0.2)
    with cyha_imap.imap(FE1_ADDR, *ALICE) as conn:
        conn.select('INBOX', readonly=True)
        assert len(conn.search(None, 'SUBJECT', subject)[1][0].split()) == 1
    play('failback.yml', '-e', 'warm_spare_instance=be1')
    assert placement() == HOME


def takeover_args(state: str, host: str, **extra) -> dict:
    """cyrus.ha.warm_spare_takeover's arguments for be1's pair on host (as the warm_spare role passes them)."""
    args = {'instance': 'be1', 'state': state, 'address': f'{BE1_ADDR}/24', 'label': 'cyha-be1',
            'devices': [SAN['be1']['devices'][host]], 'mmp_probe_timeout': 3}
    if state == 'acquired':
        args.update(mountpoint=MOUNT, record_file=STATE_FILE, record={'active': host, 'home': 'be1', 'spare': 'spare'})
    args.update(extra)
    return args


NOWHERE = {'master': None, 'address_on_be1': False, 'address_on_spare': False, 'mounted_on_be1': False,
           'mounted_on_spare': False}


def test_the_takeover_module_moves_the_pair_in_one_call_each_way(pair, tmp_path):
    """warm_spare_takeover: released, then not changed; acquired predicted by check mode without a change, then
    changed, then not changed; the phases stamped in order on the node; the record names the node."""
    assert placement() == HOME
    released = labutil.module_result('be1', 'cyrus.ha.warm_spare_takeover', takeover_args('released', 'be1'), tmp_path)
    assert not released['failed'] and released['changed'] is True, released['_output'][-2000:]
    assert [p['phase'] for p in released['phases']] == ['instance stopped', 'address released', 'volume unmounted']
    assert all(p['changed'] for p in released['phases'])
    assert [p['at'] for p in released['phases']] == sorted(p['at'] for p in released['phases'])
    assert placement() == NOWHERE
    again = labutil.module_result('be1', 'cyrus.ha.warm_spare_takeover', takeover_args('released', 'be1'), tmp_path)
    assert not again['failed'] and again['changed'] is False and not any(p['changed'] for p in again['phases'])

    predicted = labutil.module_result('spare', 'cyrus.ha.warm_spare_takeover', takeover_args('acquired', 'spare'),
                                      tmp_path, check_mode=True)
    assert not predicted['failed'] and predicted['changed'] is True, predicted['_output'][-2000:]
    assert [p['changed'] for p in predicted['phases']] == [True, True, True, True]
    assert placement() == NOWHERE, 'check mode changed nothing'

    acquired = labutil.module_result('spare', 'cyrus.ha.warm_spare_takeover', takeover_args('acquired', 'spare'),
                                     tmp_path)
    assert not acquired['failed'] and acquired['changed'] is True, acquired['_output'][-2000:]
    assert [p['phase'] for p in acquired['phases']] == ['volume mounted', 'address taken', 'instance up',
                                                        'record written']
    assert placement() == SPARE and record('spare')['active'] == 'spare'
    assert acquired['address_result']['announcements']['sent'] == 1 and acquired['announced']['announcements']['sent'] == 2
    assert labutil.poll(login_works, SYNC_TIMEOUT, interval=0.2), 'no login through fe1 after the takeover'
    pid = cyha_imap.master_pid('be1', 'cyha-spare')
    again = labutil.module_result('spare', 'cyrus.ha.warm_spare_takeover', takeover_args('acquired', 'spare'), tmp_path)
    assert not again['failed'] and again['changed'] is False and again['record_changed'] is False
    assert cyha_imap.master_pid('be1', 'cyha-spare') == pid
    predicted = labutil.module_result('spare', 'cyrus.ha.warm_spare_takeover', takeover_args('released', 'spare'),
                                      tmp_path, check_mode=True)
    assert predicted['changed'] is True and placement() == SPARE

    # back home, by the same two calls
    assert labutil.module_result('spare', 'cyrus.ha.warm_spare_takeover', takeover_args('released', 'spare'),
                                 tmp_path)['changed'] is True
    home = labutil.module_result('be1', 'cyrus.ha.warm_spare_takeover', takeover_args('acquired', 'be1'), tmp_path)
    assert home['changed'] is True and placement() == HOME and record('be1')['active'] == 'be1'


def test_the_takeover_module_refuses_bad_requests_and_undoes_a_failed_acquire(pair, tmp_path):
    def run(host, args, **kwargs):
        return labutil.module_result(host, 'cyrus.ha.warm_spare_takeover', args, tmp_path, **kwargs)

    bad = run('be1', takeover_args('released', 'be1', instance='../be1'))
    assert bad['failed'] and bad['msg'] == ("instance '../be1': not a valid instance name (letters, digits, dot, dash, "
                                            'underscore; starting with a letter or digit)')
    bad = run('be1', {k: v for k, v in takeover_args('acquired', 'be1').items() if k != 'mountpoint'})
    assert bad['failed'] and bad['msg'] == 'state is acquired but all of the following are missing: mountpoint'
    bad = run('be1', takeover_args('released', 'be1', force=True))
    assert bad['failed'] and bad['msg'] == 'force is True but all of the following are missing: peer_state'
    bad = run('be1', takeover_args('released', 'be1', timeout=0))
    assert bad['failed'] and bad['msg'] == 'instance be1: timeout must be a number of seconds from 1 to 3600, not 0.0'
    assert placement() == HOME

    # while be1 serves, the spare is refused by the volume's multiple-mount protection: nothing changes
    refused = run('spare', takeover_args('acquired', 'spare'))
    assert refused['failed'] and refused['msg'].startswith('instance be1: volume: '), refused['msg']
    assert refused['msg'].endswith('. Nothing was changed') and refused['changed'] is False
    assert placement() == HOME

    # an acquire whose instance cannot start undoes the address and the mount it made
    assert run('be1', takeover_args('released', 'be1'))['changed'] is True
    failed = run('spare', takeover_args('acquired', 'spare', master='/bin/false'))
    assert failed['failed'], failed['_output'][-2000:]
    assert failed['msg'] == ('instance be1: the control script could not start the instance: master for '
                             '/etc/cyrus-ha/be1/imapd.conf did not start (exit status 1): see the syslog lines of '
                             'cyrus-be1. Undone: address released, volume unmounted'), failed['msg']
    assert failed['undone'] == ['address released', 'volume unmounted']
    assert placement() == NOWHERE
    assert run('be1', takeover_args('acquired', 'be1'))['changed'] is True
    assert placement() == HOME


def test_a_takeover_killed_between_two_phases_is_finished_by_the_next_call(pair, tmp_path):
    """SIGKILLed right after the address was taken (the test hook): the volume and the address are held, the
    instance not started; the next call starts it and changes only that."""
    assert labutil.module_result('be1', 'cyrus.ha.warm_spare_takeover', takeover_args('released', 'be1'),
                                 tmp_path)['changed'] is True
    book = tmp_path / 'killed.yml'
    book.write_text(json.dumps([{'hosts': 'spare', 'gather_facts': False,
                                 'environment': {'CYRUS_HA_TEST_KILL_AT': 'address-taken'},
                                 'tasks': [{'cyrus.ha.warm_spare_takeover': takeover_args('acquired', 'spare')}]}]),
                    encoding='utf-8')
    killed = labutil.playbook(str(book), check=False)
    assert killed.returncode != 0
    assert placement() == {'master': None, 'address_on_be1': False, 'address_on_spare': True, 'mounted_on_be1': False,
                           'mounted_on_spare': True}
    done = labutil.module_result('spare', 'cyrus.ha.warm_spare_takeover', takeover_args('acquired', 'spare'), tmp_path)
    assert not done['failed'], done['_output'][-2000:]
    assert [(p['phase'], p['changed']) for p in done['phases']] == [
        ('volume mounted', False), ('address taken', False), ('instance up', True), ('record written', True)]
    assert placement() == SPARE
    assert labutil.module_result('spare', 'cyrus.ha.warm_spare_takeover', takeover_args('released', 'spare'),
                                 tmp_path)['changed'] is True
    assert labutil.module_result('be1', 'cyrus.ha.warm_spare_takeover', takeover_args('acquired', 'be1'),
                                 tmp_path)['changed'] is True
    assert placement() == HOME and labutil.poll(login_works, SYNC_TIMEOUT, interval=0.2)


FAILOVER_PHASES = {
    'planned': ('instance stopped', 'address released', 'volume unmounted', 'volume mounted', 'address taken',
                'instance up', 'first IMAP login'),
    'instance-killed': ('instance killed', 'instance stopped', 'address released', 'volume unmounted',
                        'volume mounted', 'address taken', 'instance up', 'first IMAP login'),
}


def drill_password_file(tmp_path) -> str:
    """The drill user's password in a variables file (0600), as a site passes a vault: not on the command line."""
    path = tmp_path / 'drill-secret.json'
    path.write_text(json.dumps({'drill_password': ALICE[1]}), encoding='utf-8')
    path.chmod(0o600)
    return str(path)


# The drills run under mail traffic from the lab's client host (lab/vars/traffic.yml): the first with -vvv
# (its users' passwords must not leak either), the third through a crash.


# (A link-down failover is proven by the certification run below, under traffic with its invariants, and by the
# unplanned failover's fencing test; its drill is left out of make test for time.)
@pytest.mark.parametrize('run, failure', [('1', 'planned'), ('3', 'instance-killed')])
def test_drill_passes_for_each_failure_in_a_row(pair, tmp_path, run, failure):
    traffic = ('-e', '@lab/vars/traffic.yml')
    proc = play('drill.yml', '-e', '@lab/vars/drill.yml', '-e', 'warm_spare_instance=be1',
                '-e', 'drill_frontend=fe1', '-e', 'drill_user=alice', '-e', '@' + drill_password_file(tmp_path),
                '-e', f'drill_report_dir={tmp_path}', '-e', f'drill_id={run}', '-e', f'drill_failure={failure}',
                *traffic, *(['-vvv'] if run == '1' else []), check=False)
    if run == '1':    # the whole verbose output and the hosts' syslog hold no secret of the lab
        secrets = cyha_secrets.lab_secrets()
        assert cyha_secrets.leaks(proc.stdout + proc.stderr, secrets) == []
        assert cyha_secrets.syslog_leaks(secrets) == {}
    base = tmp_path / f'drill-be1-{run}'
    assert os.path.exists(f'{base}.json'), proc.stdout[-4000:]
    with open(f'{base}.json', encoding='utf-8') as handle:
        report = json.load(handle)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert report['passed'] is True and report['failure'] == failure
    assert report['canaries']['missing'] == 0 and report['canaries']['changed'] == 0
    assert report['canaries']['found'] == report['canaries']['expected'] == 8   # 3 APPEND, 3 LMTP, 1 after, 1 outage
    outage = report['outage_delivery']
    assert outage['delivered'] is True and outage['found'] is True, outage
    # the delivery starts once the home node has released the instance, while the spare takes it over (one play,
    # each host at its own pace): refused (451) and kept queued when it reaches the frontend first, accepted at
    # once when the spare was faster. The queueing itself is proven by the traffic's deliveries (deferred, then
    # accepted: check_drill_traffic below).
    assert int(outage['attempts']) == 1 or outage['first_refusal'], outage
    phases = [p['phase'] for p in report['phases']]
    # each phase was said in the run's output as it happened, one line each, with its host
    said = re.findall(r'"msg": "phase: (.+?) \((\S+)\) at \d\d:\d\d:\d\d\.\d{3} UTC[^"]*"', proc.stdout)
    assert sorted(said) == sorted((p['phase'], p['host']) for p in report['phases']), (said, phases)
    order = [phases.index(phase) for phase in FAILOVER_PHASES[failure]]
    assert order == sorted(order), (failure, phases)
    assert phases.index('failure injected') <= order[0]
    assert 'canaries verified' in phases and 'failed back, canaries verified' in phases
    with open(f'{base}.md', encoding='utf-8') as handle:
        assert '- result: **PASSED**' in handle.read()
    ET.parse(f'{base}.svg')
    print(f'drill {run} ({failure}): failure to first IMAP login {report["failover_seconds"]:.2f} s; outage '
          f'delivery {outage["attempts"]} attempts, queued {outage["queued_seconds"]} s')
    cyha_traffic.check_drill_traffic(report, f'{base}.md', failure)
    assert placement() == HOME


def test_the_invariant_check_finds_a_lost_and_a_duplicated_message_on_the_backend(pair):
    """After drill 3 the invariants hold; then one of alice's acknowledged messages is expunged on be1 and another
    stored a second time, behind the check's back: the check names exactly those two messages and their invariants."""
    assert cyha_traffic.check_again('drill-be1-3')['ok'] is True
    with open(f'{cyha_traffic.TRAFFIC_DIR}/drill-be1-3/journal.jsonl', encoding='utf-8') as handle:
        acked = [json.loads(line) for line in handle]
    # alice's acknowledged messages (her prober delivers every 0.1 s), found on be1 by Message-ID: the APPENDs' UIDs
    # alone would leave the test to chance (with twelve users, alice may have acknowledged one APPEND or none)
    acked = [r['message_id'] for r in acked if r.get('op') in ('append', 'deliver') and r.get('outcome') == 'ok'
             and r.get('user') == 'alice' and r.get('message_id')]
    assert len(set(acked)) >= 2, acked
    lost, doubled = acked[0], next(m for m in reversed(acked) if m != acked[0])
    with cyha_imap.imap(BE1_ADDR, *ALICE) as conn:
        assert conn.select('INBOX')[0] == 'OK'

        def uid_of(message_id: str) -> str:
            status, data = conn.uid('SEARCH', 'HEADER', 'Message-ID', f'"{message_id}"')
            assert status == 'OK' and len(data[0].split()) == 1, (message_id, status, data)
            return data[0].decode()
        lost_uid, doubled_uid = uid_of(lost), uid_of(doubled)
        assert conn.uid('STORE', lost_uid, '+FLAGS.SILENT', r'(\Deleted)')[0] == 'OK'
        assert conn.uid('EXPUNGE', lost_uid)[0] == 'OK'
        body = conn.uid('FETCH', doubled_uid, '(BODY.PEEK[])')[1][0][1]
        assert conn.append('INBOX', None, None, body)[0] == 'OK'
    result = cyha_traffic.check_again('drill-be1-3')
    assert result['ok'] is False and result['errors'] == []
    assert sorted((v['invariant'], v['message_id']) for v in result['violations']) == sorted(
        [('acknowledged-present', lost), ('exactly-once', doubled)])
    assert result['checked']['acknowledged_found'] == result['checked']['acknowledged'] - 1


def test_the_mupdate_list_check_finds_a_mailbox_the_master_lost_and_the_backends_push_puts_it_back(pair):
    """The Murder's lists agree; then the mupdate master's database loses user.bob (its entry deleted in place, as a
    restore of an older copy would): the check names exactly that mailbox, missing at the master, and both
    frontends, which still list it. be2's own push (ctl_mboxlist -m, the START entry of every backend, and Cyrus's
    documented recovery) puts it back."""
    before = labutil.poll(lambda: lists_if(lambda r: r['ok']), 60, interval=2) or cyha_traffic.murder_lists()
    assert (before['ok'], before['violations'], before['errors']) == (True, [], []), before
    assert before['checked']['mupdate_mailboxes'] == before['checked']['mailboxes'] >= 12
    lost = inside('mupdate', ['/usr/lib/cyrus/bin/cyr_dbtool', '-C', '/etc/cyrus-ha/mupdate/imapd.conf',
                              '/var/lib/cyrus-ha/mupdate/mailboxes.db', 'twoskip', 'delete', 'Nuser\x1fbob'])
    try:
        assert lost.returncode == 0, lost.stdout + lost.stderr
        found = cyha_traffic.murder_lists()
        assert found['ok'] is False and found['errors'] == [], found
        assert [(v['invariant'], v['kind'], v['mailbox'], v['detail']) for v in found['violations']] == [
            ('mupdate-list', 'missing-at-master', 'user.bob',
             "user.bob is on backend be2-svc.cyha.test and not in the mupdate master's list")] + [
            ('mupdate-list', 'frontend-differs', 'user.bob',
             f'frontend {fe} on {fe} differs from the mupdate master: has besides user.bob (1)') for fe in ('fe1', 'fe2')]
        assert found['checked']['mupdate_mailboxes'] == before['checked']['mupdate_mailboxes'] - 1
    finally:
        pushed = on('be2', ['/usr/lib/cyrus/bin/ctl_mboxlist', '-C', '/etc/cyrus-ha/be2/imapd.conf', '-m'])
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    after = labutil.poll(lambda: lists_if(lambda r: r['ok']), 60, interval=2)
    assert after and after['checked'] == before['checked'], after


@pytest.mark.parametrize('failure', ['instance killed', 'home link down'])
def test_unplanned_failover_fences_the_home_node_first(pair, failure):
    with cyha_imap.imap(FE1_ADDR, *ALICE) as conn:
        subject = cyha_imap.append_and_fetch(conn)
    fence = os.path.join(labutil.REPO, 'lab', 'hooks', 'fence_home.yml')
    try:
        if failure == 'instance killed':
            for pid in cyha_imap.instance_pids('be1', 'cyha-be1'):
                os.kill(pid, signal.SIGKILL)
        else:
            subprocess.run(['ip', '-n', 'cyha-be1', 'link', 'set', 'eth0', 'down'], check=True)
        assert not login_works()
        started = time.monotonic()
        proc = play('failover.yml', '-e', 'warm_spare_instance=be1', '-e', 'warm_spare_failure=unplanned',
                    '-e', f'warm_spare_fence_tasks={fence}')
        print(f'unplanned failover ({failure}) with the lab fencing step: {time.monotonic() - started:.1f} s')
        assert 'be1' not in labutil.recap(proc.stdout), 'the failed home node must not be asked'
        assert placement() == SPARE, 'fencing deletes the address and unmounts the volume on the home node'
        assert record('spare')['fenced_peer'] == 'be1'
        assert labutil.poll(login_works, SYNC_TIMEOUT, interval=0.2)
        with cyha_imap.imap(FE1_ADDR, *ALICE) as conn:
            conn.select('INBOX', readonly=True)
            assert len(conn.search(None, 'SUBJECT', subject)[1][0].split()) == 1
    finally:
        subprocess.run(['ip', '-n', 'cyha-be1', 'link', 'set', 'eth0', 'up'], check=False)
    assert labutil.poll(lambda: on('be1', ['true']).returncode == 0, 30, interval=0.5), 'be1 is not back'
    play('failback.yml', '-e', 'warm_spare_instance=be1')
    assert placement() == HOME


def test_a_drill_killed_in_the_middle_then_a_fresh_drill_keep_every_invariant(pair, tmp_path):
    """The drill's playbook is SIGKILLed once be1 runs on the spare (traffic running, nothing failed back);
    the same drill run again completes the move back, takes the traffic over and passes: every message the
    site acknowledged, before, during and after the kill, is on the backends once and intact."""
    argv = [os.path.join(labutil.BIN, 'ansible-playbook'), '-i', labutil.inventory(), 'playbooks/drill.yml', *VARS,
            '-e', '@lab/vars/drill.yml', '-e', '@lab/vars/traffic.yml', '-e', 'warm_spare_instance=be1',
            '-e', 'drill_frontend=fe1', '-e', 'drill_user=alice', '-e', '@' + drill_password_file(tmp_path),
            '-e', f'drill_report_dir={tmp_path}', '-e', 'drill_id=killed']
    first = subprocess.Popen(argv, cwd=labutil.REPO, env=labutil.env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert labutil.poll(lambda: master_netns('be1') == 'cyha-spare', 300, interval=0.2), 'be1 never reached the spare'
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not os.path.exists(tmp_path / 'drill-be1-killed.json'), 'the killed drill must not have reported'
    again = play('drill.yml', '-e', '@lab/vars/drill.yml', '-e', '@lab/vars/traffic.yml', '-e', 'warm_spare_instance=be1',
                 '-e', 'drill_frontend=fe1', '-e', 'drill_user=alice', '-e', '@' + drill_password_file(tmp_path),
                 '-e', f'drill_report_dir={tmp_path}', '-e', 'drill_id=killed', check=False)
    with open(tmp_path / 'drill-be1-killed.json', encoding='utf-8') as handle:
        report = json.load(handle)
    assert again.returncode == 0 and report['passed'] is True, again.stdout[-4000:]
    invariants = report['traffic']['invariants']
    assert (invariants['ok'], invariants['violations'], invariants['errors']) == (True, [], [])
    # the fresh drill took over the traffic the killed one started: one journal holds both drills
    with open(f'{cyha_traffic.TRAFFIC_DIR}/drill-be1-killed/journal.jsonl', encoding='utf-8') as handle:
        runs = [json.loads(line) for line in handle if '"op":"run"' in line]
    assert [r['outcome'] for r in runs] == ['started', 'stopped'], runs
    assert report['traffic']['seconds'] > report['total_seconds']
    assert placement() == HOME


def test_a_short_certification_run_survives_every_kind_of_failure(pair, tmp_path):
    """bench/certify.py, short: two failures of two kinds under light traffic, the invariants checked after
    each (the 100-failure run of bench/README.md is the same program; the drills above cover planned moves and
    a killed instance)."""
    proc = subprocess.run([sys.executable, os.path.join(labutil.REPO, 'bench', 'certify.py'), '--sequence',
                           'frontend-killed,link-down', '--rate', '5',
                           '--out', str(tmp_path)], capture_output=True, text=True, timeout=1200, check=False,
                          cwd=labutil.REPO)
    runs = os.listdir(tmp_path)
    assert len(runs) == 1, proc.stdout + proc.stderr
    with open(tmp_path / runs[0] / 'summary.json', encoding='utf-8') as handle:
        summary = json.load(handle)
    assert proc.returncode == 0 and summary['verdict'] == 'passed', proc.stdout[-4000:] + proc.stderr[-2000:]
    assert [s['kind'] for s in summary['steps']] == ['frontend-killed', 'link-down']
    assert all(s['invariants_ok'] for s in summary['steps'])
    checked = summary['invariants']['checked']
    assert checked['acknowledged'] == checked['acknowledged_found'] > 0
    assert summary['invariants']['violations'] == [] and summary['invariants']['errors'] == []
    assert set(summary['outage_by_kind']) == {'frontend-killed', 'link-down'}
    # a killed frontend is an outage for every user of the traffic, seen by its clients
    assert summary['outage_by_kind']['frontend-killed']['max'] > 0
    with open(tmp_path / runs[0] / 'summary.md', encoding='utf-8') as handle:
        print(handle.read())
    for backend in ('be1', 'be2'):
        if cyha_imap.master_pid(backend, 'cyha-spare'):
            play('failback.yml', '-e', f'warm_spare_instance={backend}')
    assert placement() == HOME
