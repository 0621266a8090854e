# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replica pairs on the lab: be3's instance replicates (Cyrus rolling replication, over TLS) to the host
"replica", which keeps its own /etc/cyrus-ha, /var/lib/cyrus-ha and /var/spool/cyrus-ha. Deployed by
playbooks/replication.yml after the Murder; mail is delivered through a frontend and read back on both
sides with cyrus.ha.cyrus_replication_facts (mbexamine), never through the replication itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

import cyha_imap
import cyha_traffic
import labutil
from cyha_iprig import has_address
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusreplication import utc_text
from ansible_collections.cyrus.ha.plugins.module_utils.replicacompare import diff

pytestmark = pytest.mark.lab

VARS = ('-e', '@lab/vars/murder.yml', '-e', '@lab/vars/warm_spare.yml', '-e', '@lab/vars/replication.yml')
# the lab's topology declares the pair (replicas:): cyrus.ha.murder gives replication_pairs to the runbooks
TOPOLOGY = ('-i', os.path.join(labutil.LAB_DIR, 'topology.yml'))
HOSTS_VARS = ('-e', '@lab/vars/murder_hosts.yml')   # the plain inventory's host vars, for site.yml only
DEPLOYED = 'mupdate,fe1,fe2,be3'
FE1_ADDR = '198.51.100.111'
BE3_ADDR = '198.51.100.123'
DAVE = ('dave', 'cyha-lab-dave')
OWN = ('/etc/cyrus-ha/be3', '/var/lib/cyrus-ha/be3', '/var/spool/cyrus-ha/be3')
SYNC_DIR = '/var/lib/cyrus-ha/be3/sync'
CTL = '/usr/local/lib/cyrus-ha/cyrus_instance_ctl.py'
LAG_FILE = '/var/lib/cyrus-ha/replication-lag-be3.json'      # on the replica host (its own /var/lib/cyrus-ha)
PROMOTED_FILE = '/var/lib/cyrus-ha/replication-promoted-be3.json'   # what a promoted copy held, on the new master
UNPLANNED = ('-e', 'replication_failure=unplanned')
SYNC_PORT = 2015        # the lab pair's own port (lab/lab.py), not Cyrus's usual 2005


def replication(*extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return labutil.playbook('playbooks/replication.yml', *TOPOLOGY, *VARS, *extra, check=check)


def promote(*extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """playbooks/promote.yml for be3; the topology inventory names the mupdate master's servername."""
    return labutil.playbook('playbooks/promote.yml', *TOPOLOGY, *VARS,
                            '-e', 'replication_instance=be3', *extra, check=check)


def measure_lag(*extra: str) -> dict:
    """playbooks/replication_lag.yml for be3; the figure the replica keeps."""
    proc = labutil.playbook('playbooks/replication_lag.yml', *TOPOLOGY, *VARS, '-e', 'replication_instance=be3', *extra)
    assert all(c['failed'] == 0 for c in labutil.recap(proc.stdout).values()), proc.stdout[-3000:]
    return json.loads(inside('replica', ['cat', LAG_FILE]).stdout)


def refused(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout[-3000:]
    return ' '.join(proc.stdout.split())


def login_works() -> bool:
    try:
        with cyha_imap.imap(FE1_ADDR, *DAVE) as conn:
            return conn.select('INBOX', readonly=True)[0] == 'OK'
    except Exception:   # noqa: BLE001 - any failure means "not yet"
        return False


inside = labutil.inside     # a command in a lab host's mount namespace (the replica's own /etc/cyrus-ha)


def facts(host: str, tmp_path, **args) -> dict:
    result = labutil.module_result(host, 'cyrus.ha.cyrus_replication_facts', {'instance': 'be3', **args}, tmp_path)
    assert not result['failed'], result['_output'][-2000:]
    return result['replication']


def wipe_replica() -> None:
    """The replica host without its copy of be3: instance stopped, its own directories emptied."""
    cyha_imap.stop_instance('be3', 'cyha-replica')
    for path in OWN:
        inside('replica', ['rm', '-rf', path])
    if has_address('cyha-replica', BE3_ADDR):       # left by a promotion that did not move back
        subprocess.run(['ip', '-n', 'cyha-replica', 'addr', 'del', f'{BE3_ADDR}/24', 'dev', 'eth0'], check=True)


def start(host: str) -> None:
    """Start be3's instance on host again with the control script the roles install (as a reboot would)."""
    address = BE3_ADDR if host == 'be3' else '198.51.100.50'
    proc = labutil.ansible(host, 'ansible.builtin.command', json.dumps({'argv': [
        'python3', CTL, 'start', '--imapd-conf', '/etc/cyrus-ha/be3/imapd.conf', '--cyrus-conf',
        '/etc/cyrus-ha/be3/cyrus.conf', '--pidfile', '/run/cyrus-ha/be3/master.pid', '--master',
        '/usr/lib/cyrus/bin/master', '--address', address, '--user', 'cyrus', '--group', 'mail']}), check=False)
    assert proc.returncode == 0, proc.stdout[-2000:]


def deliver(count: int) -> list[str]:
    return [cyha_imap.lmtp_deliver(FE1_ADDR, 'dave') for index in range(count)]


@pytest.fixture(scope='module')
def pair(lab):
    """mupdate, the frontends and be3 deployed (be3 with rolling replication on); the replica host empty."""
    repaired = labutil.lab_up()
    assert repaired.returncode == 0, repaired.stderr
    hosts = {h['name']: h for h in lab}
    wipe_replica()
    cyha_imap.remove_instance(hosts['be3'])
    try:
        site = labutil.playbook('playbooks/site.yml', *VARS, *HOSTS_VARS, '--limit', DEPLOYED)
        assert all(c['failed'] == 0 for c in labutil.recap(site.stdout).values()), site.stdout[-3000:]
        with open('/etc/cyrus-ha/be3/imapd.conf', encoding='utf-8') as handle:
            conf = handle.read()
        assert 'sync_log: yes\n' in conf and 'sync_host: 198.51.100.50\n' in conf and 'sync_try_imap: no\n' in conf
        assert f'sync_port: {SYNC_PORT}\n' in conf
        yield hosts
    finally:
        wipe_replica()


def test_check_mode_predicts_the_replica_and_changes_nothing(pair):
    proc = replication('--check')
    counts = labutil.recap(proc.stdout)
    assert counts['replica']['changed'] > 0 and counts['be3']['changed'] > 0, proc.stdout[-3000:]
    assert 'is not deployed yet: the run would copy the master' in proc.stdout
    assert all(inside('replica', ['test', '-e', path]).returncode != 0 for path in OWN)
    assert not cyha_imap.master_pid('be3', 'cyha-replica')


def test_deploy_replicates_everything_and_a_second_run_changes_nothing(pair, tmp_path):
    started = time.monotonic()
    proc = replication()
    print(f'replica pair deployed in {time.monotonic() - started:.1f} s')
    counts = labutil.recap(proc.stdout)
    assert counts['replica']['changed'] > 0 and counts['be3']['failed'] == 0, proc.stdout[-3000:]
    # its own disk: the replica's copy is not the home node's (the lab machine sees be3's)
    assert inside('replica', ['test', '-d', '/var/lib/cyrus-ha/be3/db']).returncode == 0
    assert inside('replica', ['ls', '/etc/cyrus-ha']).stdout.split() == ['be3']
    assert f'listen="198.51.100.50:{SYNC_PORT}"' in inside('replica', ['cat', '/etc/cyrus-ha/be3/cyrus.conf']).stdout
    replica_conf = inside('replica', ['cat', '/etc/cyrus-ha/be3/imapd.conf']).stdout
    assert 'mupdate_server' not in replica_conf and 'sync_log' not in replica_conf
    # the master tries a replica that is away every 10 s at most (Cyrus's default grows to 20 minutes)
    master_conf = inside('be3', ['cat', '/etc/cyrus-ha/be3/imapd.conf']).stdout.splitlines()
    assert 'sync_reconnect_maxwait: 10' in master_conf and 'sync_repeat_interval: 1' in master_conf, master_conf
    master, replica = facts('be3', tmp_path, mailboxes=True), facts('replica', tmp_path, mailboxes=True)
    assert master['role'] == 'master' and master['sync_client']['running'] and master['peer'] == f'198.51.100.50:{SYNC_PORT}'
    assert replica['role'] == 'replica' and replica['sync_server']['configured'] and not replica['sync_client']['running']
    assert 'user.dave' in master['mailboxes']
    assert diff(master['mailboxes'], replica['mailboxes'])['equal'], (master['mailboxes'], replica['mailboxes'])
    again = replication()
    assert all(c['changed'] == 0 and c['failed'] == 0 for c in labutil.recap(again.stdout).values()), \
        again.stdout[-3000:]
    check = replication('--check')
    assert all(c['changed'] == 0 for c in labutil.recap(check.stdout).values()), check.stdout[-3000:]


def test_mail_reaches_the_replica_within_the_rolling_interval(pair, tmp_path):
    deliver(5)
    master = facts('be3', tmp_path, mailboxes=True)
    assert master['mailboxes']['user.dave']['messages'] >= 5
    replica = facts('replica', tmp_path, wait_for=master['mailboxes'], wait_timeout=30)
    print(f"replica caught up with 5 deliveries in {replica['waited']} s after the master was read")
    assert replica['caught_up'] and replica['lacking'] == []
    assert replica['mailboxes']['user.dave'] == master['mailboxes']['user.dave']


def lag(host: str, tmp_path, check_mode: bool = False, **args) -> dict:
    return labutil.module_result(host, 'cyrus.ha.cyrus_replication_lag', {'instance': 'be3', **args}, tmp_path,
                                 check_mode=check_mode)


def test_the_lag_is_measured_with_a_marker_on_the_master(pair, tmp_path):
    predicted = lag('be3', tmp_path, check_mode=True)
    assert not predicted['failed'] and predicted['changed'], predicted['_output'][-2000:]
    assert predicted['lag']['created'] and not predicted['lag']['measured'] and predicted['lag']['seconds'] is None
    assert lag('be3', tmp_path, check_mode=True)['changed']             # check mode created nothing
    first = lag('be3', tmp_path)
    assert not first['failed'] and first['changed'] and first['lag']['created'], first['_output'][-2000:]
    measured = first['lag']
    assert measured['caught_up'] and 0 < measured['seconds'] < 30 and measured['mailbox'] == 'cyrus-ha-lag-be3'
    assert measured['peer'] == f'198.51.100.50:{SYNC_PORT}' and measured['seen_at'] >= measured['marked_at']
    print(f"replication lag of be3: {measured['seconds']} s ({measured['polls']} questions to the replica)")
    second = lag('be3', tmp_path)
    assert not second['failed'] and not second['changed'] and second['lag']['caught_up']
    assert second['lag']['modseq'] > measured['modseq']                 # a new change, waited for again
    assert not lag('be3', tmp_path, check_mode=True)['changed']
    # the marker is the replication user's alone: dave, through a frontend, does not see it
    assert not any('cyrus-ha-lag' in name for name in cyha_imap.list_as(FE1_ADDR, *DAVE))
    # bad input: each refused with its cause
    assert lag('be3', tmp_path, timeout=0)['msg'] == 'timeout must be more than 0 and at most 3600 seconds, not 0.0'
    assert lag('be3', tmp_path, instance='nosuch')['msg'] == (
        "instance nosuch: /etc/cyrus-ha/nosuch/imapd.conf does not exist: is nosuch the instance's name, and "
        "/etc/cyrus-ha its config root?")
    assert lag('replica', tmp_path)['msg'] == (
        'instance be3 is no replicating master with an address of its own: /etc/cyrus-ha/be3/imapd.conf sets no '
        'sync_host, sync_authname, sync_password')


def test_backlog_grows_while_the_replica_is_down_and_drains_after(pair, tmp_path):
    cyha_imap.stop_instance('be3', 'cyha-replica')
    down = lag('be3', tmp_path)
    assert down['failed'] and down['msg'] == (f'the replica 198.51.100.50:{SYNC_PORT} (sync_server) cannot be reached: '
                                              'Connection refused'), down['_output'][-2000:]
    deliver(3)
    assert labutil.poll(lambda: facts('be3', tmp_path)['backlog']['entries'] > 0, 20, interval=0.5)
    master = facts('be3', tmp_path, mailboxes=True)
    assert master['backlog']['bytes'] > 0 and master['backlog']['leftovers'] == []
    lagging = facts('replica', tmp_path, wait_for=master['mailboxes'], wait_timeout=2)
    assert not lagging['caught_up']
    assert [item['mailbox'] for item in lagging['lacking']] == ['user.dave']
    proc = replication()      # starts the replica again; the rolling client then ships the backlog
    counts = labutil.recap(proc.stdout)
    assert counts['replica']['changed'] > 0 and counts['be3']['failed'] == 0, proc.stdout[-3000:]
    assert facts('replica', tmp_path, wait_for=master['mailboxes'], wait_timeout=30)['caught_up']
    assert labutil.poll(lambda: facts('be3', tmp_path)['backlog']['entries'] == 0, 30, interval=0.5)


def test_sync_refuses_to_overwrite_what_only_the_replica_holds(pair, tmp_path):
    """A lost sync log: the master deleted a folder while the replica was down, and the log that would
    have told the replica is gone. The replica then holds a folder the master does not: the sync refuses
    to throw it away, names it, and the documented recovery (a full sync of the user) clears it."""
    with cyha_imap.imap(FE1_ADDR, *DAVE) as conn:
        assert conn.create('INBOX.planted')[0] == 'OK'
    master = facts('be3', tmp_path, mailboxes=True)
    assert facts('replica', tmp_path, wait_for=master['mailboxes'], wait_timeout=30)['caught_up']
    cyha_imap.stop_instance('be3', 'cyha-replica')
    with cyha_imap.imap(FE1_ADDR, *DAVE) as conn:
        assert conn.delete('INBOX.planted')[0] == 'OK'
    cyha_imap.stop_instance('be3')           # the sync log is lost with the master's in-flight batch
    for name in os.listdir(SYNC_DIR):
        os.unlink(os.path.join(SYNC_DIR, name))
    start('be3')
    proc = replication(check=False)
    assert proc.returncode != 0
    assert ('the replica of be3 on replica holds mailboxes the master on be3 does not hold the same way (1, each '
            'only on the replica, created apart with another unique id, or newer there): user.dave.planted. A full '
            'sync would delete or replace them.') in ' '.join(proc.stdout.split()), proc.stdout[-3000:]
    replica = facts('replica', tmp_path, mailboxes=True)
    assert 'user.dave.planted' in replica['mailboxes']          # refused: nothing was thrown away
    # the recovery the message documents for a folder that must not be kept: a full sync of its user
    proc = labutil.ansible('be3', 'ansible.builtin.command', json.dumps({'argv': [
        '/usr/lib/cyrus/bin/sync_client', '-C', '/etc/cyrus-ha/be3/imapd.conf', '-u', 'dave']}), check=False)
    assert proc.returncode == 0, proc.stdout[-2000:]
    again = replication()
    assert labutil.recap(again.stdout)['be3']['failed'] == 0
    assert 'user.dave.planted' not in facts('replica', tmp_path, mailboxes=True)['mailboxes']


def test_planned_promotion_and_back_lose_no_message(pair, tmp_path):
    before = deliver(4)
    proc = promote()
    counts = labutil.recap(proc.stdout)
    assert all(c['failed'] == 0 for c in counts.values()), proc.stdout[-3000:]
    assert counts['replica']['changed'] > 0 and counts['be3']['changed'] > 0
    assert cyha_imap.master_pid('be3', 'cyha-replica') and cyha_imap.master_pid('be3')   # master there, replica here
    assert has_address('cyha-replica', BE3_ADDR) and not has_address('cyha-be3', BE3_ADDR)
    promoted, old = facts('replica', tmp_path, mailboxes=True), facts('be3', tmp_path)
    assert (promoted['role'], promoted['peer'], old['role']) == ('master', f'198.51.100.23:{SYNC_PORT}', 'replica')
    assert labutil.poll(login_works, 60, interval=0.2), 'dave cannot log in through fe1 after the promotion'
    during = deliver(3)
    for message_id in before + during:
        assert cyha_imap.count_header(FE1_ADDR, *DAVE, 'Message-ID', message_id) == 1, message_id
    # the old master, now the replica, receives what the promoted master takes
    assert facts('be3', tmp_path, wait_for=facts('replica', tmp_path, mailboxes=True)['mailboxes'],
                 wait_timeout=30)['caught_up']
    # neither runbook that deploys a master or a replica may now make a second master
    site = labutil.playbook('playbooks/site.yml', *VARS, *HOSTS_VARS, '--limit', 'be3', check=False)
    assert site.returncode != 0 and ('instance be3 on be3 is the replica of its pair now (after a promotion, its '
                                     'master runs on the other node): refusing to deploy it as a backend '
                                     'here') in ' '.join(site.stdout.split()), site.stdout[-3000:]
    again = replication(check=False)
    assert again.returncode != 0 and ('instance be3 on replica is the master of its pair now (after a promotion): '
                                      'refusing to deploy it as the replica') in ' '.join(again.stdout.split())
    assert cyha_imap.master_pid('be3', 'cyha-replica') and has_address('cyha-replica', BE3_ADDR)
    back = promote()
    assert all(c['failed'] == 0 for c in labutil.recap(back.stdout).values()), back.stdout[-3000:]
    assert has_address('cyha-be3', BE3_ADDR) and not has_address('cyha-replica', BE3_ADDR)
    assert (facts('be3', tmp_path)['role'], facts('replica', tmp_path)['role']) == ('master', 'replica')
    assert labutil.poll(login_works, 60, interval=0.2), 'dave cannot log in through fe1 after the move back'
    for message_id in before + during:
        assert cyha_imap.count_header(FE1_ADDR, *DAVE, 'Message-ID', message_id) == 1, message_id
    master = facts('be3', tmp_path, mailboxes=True)
    assert diff(master['mailboxes'], facts('replica', tmp_path, wait_for=master['mailboxes'])['mailboxes'])['equal']


def test_promotion_is_refused_without_a_drained_master_and_with_two_masters(pair, tmp_path):
    alone = tmp_path / 'promote_alone.yml'     # the promote entry point without drain before it
    alone.write_text('- hosts: replica\n  tasks:\n    - ansible.builtin.include_role:\n        name: cyrus.ha.replication\n'
                     '        tasks_from: promote\n      vars:\n        replication_instance: be3\n')
    proc = labutil.playbook(str(alone), *TOPOLOGY, *VARS, check=False)
    assert proc.returncode != 0
    assert ('refusing to promote be3 on replica: its master on be3 was not drained in this run'
            in ' '.join(proc.stdout.split())), proc.stdout[-3000:]
    assert facts('replica', tmp_path)['role'] == 'replica' and cyha_imap.master_pid('be3', 'cyha-replica')
    assert facts('be3', tmp_path)['sync_client']['running']


def test_a_missing_replication_secret_is_refused_before_anything_changes(pair):
    before = inside('replica', ['stat', '-c', '%Y', '/etc/cyrus-ha/be3/imapd.conf']).stdout
    proc = replication('-e', 'murder_replication_password=', check=False)
    assert proc.returncode != 0
    assert ('murder_replication_password must be set (non-empty) for replica: its instance be3 is a replica'
            in ' '.join(proc.stdout.split())), proc.stdout[-3000:]
    assert inside('replica', ['stat', '-c', '%Y', '/etc/cyrus-ha/be3/imapd.conf']).stdout == before


def drill_secret(tmp_path) -> str:
    path = tmp_path / 'drill-secret.json'
    path.write_text(json.dumps({'drill_password': DAVE[1]}), encoding='utf-8')
    path.chmod(0o600)
    return '@' + str(path)


def acknowledged(journal: str) -> list[str]:
    """The Message-IDs the traffic generator's journal records as acknowledged (delivery or APPEND)."""
    with open(journal, encoding='utf-8') as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return sorted({r['message_id'] for r in records
                   if r.get('op') in ('deliver', 'append') and r.get('outcome') == 'ok' and r.get('message_id')})


def held_ids() -> list[str]:
    """The Message-ID of every message in dave's INBOX through fe1 (one session), with repeats."""
    with cyha_imap.imap(FE1_ADDR, *DAVE) as conn:
        conn.select('INBOX', readonly=True)
        status, data = conn.uid('FETCH', '1:*', '(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
    assert status == 'OK', data
    ids = []
    for item in data:
        if isinstance(item, tuple):
            value = item[1].decode('utf-8', 'replace').split(':', 1)
            if len(value) == 2 and value[1].strip():
                ids.append(value[1].strip())
    return ids


def spool_messages(conf: str, mailbox: str, host: str = 'be3', moved: str = '') -> dict:
    """Message-ID to the bytes of every message file of a mailbox, read where the host keeps its spool (in the
    copy moved aside as `moved`, when given: the same path under /var/spool/cyrus-ha/<moved>)."""
    spool = inside(host, ['/usr/lib/cyrus/bin/mbpath', '-C', conf, mailbox]).stdout.strip()
    if moved:
        spool = spool.replace('/var/spool/cyrus-ha/be3/', f'/var/spool/cyrus-ha/{moved}/', 1)
    found = {}
    for name in os.listdir(spool):
        if name.endswith('.') and name[:-1].isdigit():
            with open(os.path.join(spool, name), 'rb') as handle:
                data = handle.read()
            head = data.split(b'\r\n\r\n', 1)[0]
            for line in head.split(b'\r\n'):
                if line.lower().startswith(b'message-id:'):
                    found[line.split(b':', 1)[1].strip().decode()] = data
    return found


def test_crash_promotion_checks_fencing_and_lag_and_reports_exactly_what_was_lost(pair, tmp_path):
    """be3's rolling client stalls, then be3 crashes (the replica drill, node-crash, under mail traffic to dave):
    the unplanned promotion refuses without fencing and over the lag threshold; forced, the drill promotes and
    reports the lag and, message by message, what be3 had acknowledged and the replica lacked: exactly the
    acknowledged messages of the traffic's journal that are missing. be3, back, is refused as the replica (it
    holds them) until they are copied to the new master and its copy moved aside; then be3 moves back."""
    # nothing pending in be3's sync log: in sync now
    assert labutil.poll(lambda: facts('be3', tmp_path)['last_sync']['source'] == 'backlog', 30, interval=0.5)
    record = measure_lag()
    assert record['master'] == 'be3' and record['replica'] == 'replica' and record['caught_up']
    assert 0 < record['seconds'] < 30 and abs(record['measured_at'] - time.time()) < 120
    # refused before anything changes: no fencing; a lag over the threshold (be3 is alive: only a statement)
    text = refused(promote(*UNPLANNED, check=False))
    assert ('an unplanned promotion needs replication_fence_tasks with replication_failed_master=THE-FAILED-MASTER, '
            'or replication_fenced_peer=THE-FAILED-MASTER (one of be3, replica; refusing to promote a replica whose '
            'master may still be alive)') in text, text[-2000:]
    text = refused(promote(*UNPLANNED, '-e', 'replication_fenced_peer=be3', '-e', 'replication_max_lag=0.0001',
                           check=False))
    assert (f"refusing to promote be3 on replica after a failure of be3: the last measured lag, {record['seconds']} s, "
            'is above replication_max_lag (0.0001 s); writes the master acknowledged may not be here. Nothing was '
            'changed.') in text, text[-2000:]
    assert facts('replica', tmp_path)['role'] == 'replica' and facts('be3', tmp_path)['sync_client']['running']
    # the operator states be3 is fenced, but it still answers at the service address: the address is not taken,
    # and the replica, stopped and configured as master by then, is put back as it was
    text = refused(promote(*UNPLANNED, '-e', 'replication_fenced_peer=be3', '-e', 'replication_max_lag=300',
                           check=False))
    assert (f'{BE3_ADDR}' in text and 'is already in use on the link of' in text and 'answered the conflict probe' in text
            and 'Not promoted: replica runs be3 as the replica again, as before.' in text), text[-3000:]
    assert 'was drained and is stopped' not in text          # unplanned: the old master was never touched
    again = facts('replica', tmp_path)
    assert again['role'] == 'replica' and again['sync_server']['configured'] and cyha_imap.master_pid('be3', 'cyha-replica')
    assert has_address('cyha-be3', BE3_ADDR) and not has_address('cyha-replica', BE3_ADDR)
    assert inside('replica', ['test', '-e', PROMOTED_FILE]).returncode == 1     # no record of a promotion
    # it replicates again (waited for here); then the rolling client stalls: from now on the replica gets nothing
    # of what be3 acknowledges
    assert facts('replica', tmp_path, wait_for=facts('be3', tmp_path, mailboxes=True)['mailboxes'],
                 wait_timeout=30)['caught_up']
    for pid in facts('be3', tmp_path)['sync_client']['pids']:
        os.kill(pid, signal.SIGSTOP)
    behind = measure_lag('-e', 'replication_lag_timeout=2')
    assert not behind['caught_up'] and behind['seconds'] >= 2
    # the replica's last known sync stays the measurement that saw it catch up; the master has a backlog
    kept = behind['last_caught_up']
    assert (kept['marked_at'], kept['seen_at']) == (record['measured_at'], record['seen_at']), kept
    assert abs(kept['seconds'] - record['seconds']) < 0.01, kept
    last = facts('replica', tmp_path)['last_sync']
    assert (last['source'], last['record'], last['age'] >= 0) == ('marker', LAG_FILE, True), last
    assert last['through'] == utc_text(record['measured_at']) and last['at'] == utc_text(record['seen_at'])
    # the marker's own change waits in be3's sync log: a stalled client, so no sync now
    assert facts('be3', tmp_path)['last_sync']['source'] is None
    text = refused(promote(*UNPLANNED, '-e', 'replication_fenced_peer=be3', check=False))
    assert ('refusing to promote be3 on replica after a failure of be3: the last measurement did not see the replica '
            'catch up within 2.0 s (it was at least that far behind)') in text, text[-2000:]
    # the drill: traffic to dave through fe1, canaries, be3 powered off, the replica promoted (forced past
    # its lag), the first login; be3 booted again holds writes that never replicated: no way back
    drill = labutil.playbook('playbooks/replica_drill.yml', *VARS, *TOPOLOGY,
                             '-e', '@lab/vars/traffic.yml', '-e', '@lab/vars/replica_drill.yml',
                             '-e', 'drill_discard_diverged=false', '-e', 'replication_instance=be3',
                             '-e', 'drill_frontend=fe1', '-e', 'drill_user=dave', '-e', drill_secret(tmp_path),
                             '-e', f'drill_report_dir={tmp_path}', '-e', 'drill_id=crash', '-e', 'drill_failure=node-crash',
                             '-e', 'drill_force=true', '-e', 'replication_lag_timeout=2', check=False)
    assert drill.returncode != 0 and 'the drill FAILED' in drill.stdout, drill.stdout[-4000:]
    with open(tmp_path / 'drill-be3-crash.json', encoding='utf-8') as handle:
        report = json.load(handle)
    replication = report['replication']
    assert replication['promotion'] == 'unplanned' and replication['forced'] is True
    assert replication['caught_up_before_failure'] is False and replication['lag_before_failure'] >= 2
    assert replication['diverged'] and 'user.dave' in replication['diverged'] and not replication['discarded']
    assert report['failover_seconds'] is not None and report['failover_seconds'] > 0
    # the RPO, exactly: the acknowledged messages of the journal that the promoted master lacks
    journal = f'{cyha_traffic.TRAFFIC_DIR}/drill-be3-crash/journal.jsonl'
    acked = acknowledged(journal)
    promoted = set(held_ids())
    missing = sorted(m for m in acked if m not in promoted)
    assert missing and sorted(replication['lost_messages']) == missing, (missing, replication['lost_messages'])
    failed = sorted(c['name'] for c in report['checks'] if not c['ok'])
    assert 'no acknowledged message lost (RPO 0)' in failed and 'traffic: every invariant holds' in failed
    assert 'the instance is back on its first master, replicating to the other node' in failed
    # be3 is back, stopped; made the replica it would throw those writes away: refused, nothing changes
    assert not cyha_imap.master_pid('be3') and not has_address('cyha-be3', BE3_ADDR)
    rejoin = ('playbooks/rejoin.yml', *TOPOLOGY, *VARS, '-e', 'replication_instance=be3', '-e', 'replication_old_master=be3')
    text = refused(labutil.playbook(*rejoin, check=False))
    assert 'refusing to make be3 the replica of be3: it holds what the new master on replica lacks' in text
    assert 'user.dave: ' in text, text[-3000:]
    assert facts('be3', tmp_path)['role'] == 'master' and not cyha_imap.master_pid('be3')
    # the documented recovery: what the new master lacks is copied from be3's spool, then be3's copy moved aside
    held = spool_messages('/etc/cyrus-ha/be3/imapd.conf', 'user.dave')
    assert set(missing) <= set(held)
    promoted = set(held_ids())
    with cyha_imap.imap(FE1_ADDR, *DAVE) as conn:
        for message_id, data in held.items():
            if message_id not in promoted:
                assert conn.append('INBOX', None, None, data)[0] == 'OK'
    earlier = {n for n in os.listdir('/var/lib/cyrus-ha') if n.startswith('be3.diverged-')}
    proc = labutil.playbook(*rejoin, '-e', 'replication_discard_diverged=true')
    counts = labutil.recap(proc.stdout)
    assert counts['be3']['changed'] > 0 and counts['replica']['failed'] == 0, proc.stdout[-3000:]
    aside = sorted(n for n in os.listdir('/var/lib/cyrus-ha') if n.startswith('be3.diverged-') and n not in earlier)
    assert len(aside) == 1 and os.path.isdir(f'/var/lib/cyrus-ha/{aside[0]}/db')
    assert os.path.isdir(f'/var/spool/cyrus-ha/{aside[0]}')           # the partition, moved with the same stamp
    assert set(missing) <= set(spool_messages('/etc/cyrus-ha/be3/imapd.conf', 'user.dave', moved=aside[0]))
    assert facts('be3', tmp_path)['role'] == 'replica'
    # back home, planned: every message acknowledged during the whole run is there, once
    back = promote()
    assert all(c['failed'] == 0 for c in labutil.recap(back.stdout).values()), back.stdout[-3000:]
    assert (facts('be3', tmp_path)['role'], facts('replica', tmp_path)['role']) == ('master', 'replica')
    assert labutil.poll(login_works, 60, interval=0.2), 'dave cannot log in through fe1 after the move back'
    counts = {}
    for message_id in held_ids():
        counts[message_id] = counts.get(message_id, 0) + 1
    assert [m for m in acked if counts.get(m) != 1] == []
    for name in aside:
        for root in ('/var/lib/cyrus-ha', '/var/spool/cyrus-ha'):
            subprocess.run(['rm', '-rf', os.path.join(root, name)], check=True)
