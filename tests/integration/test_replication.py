# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replica pairs on the lab: be3's instance replicates (Cyrus rolling replication, over TLS) to the host
"replica", which keeps its own /etc/cyrus-ha, /var/lib/cyrus-ha and /var/spool/cyrus-ha. Deployed by
playbooks/replication.yml after the Murder; mail is delivered through a frontend and read back on both
sides with cyrus.ha.cyrus_replication_facts (mbexamine), never through the replication itself."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

import cyha_imap
import labutil
from cyha_iprig import has_address
from ansible_collections.cyrus.ha.plugins.module_utils.replicacompare import diff

pytestmark = pytest.mark.lab

VARS = ('-e', '@lab/vars/murder.yml', '-e', '@lab/vars/warm_spare.yml', '-e', '@lab/vars/replication.yml')
HOSTS_VARS = ('-e', '@lab/vars/murder_hosts.yml')   # the plain inventory's host vars, for site.yml only
DEPLOYED = 'mupdate,fe1,fe2,be3'
FE1_ADDR = '198.51.100.111'
BE3_ADDR = '198.51.100.123'
DAVE = ('dave', 'cyha-lab-dave')
OWN = ('/etc/cyrus-ha/be3', '/var/lib/cyrus-ha/be3', '/var/spool/cyrus-ha/be3')
SYNC_DIR = '/var/lib/cyrus-ha/be3/sync'
CTL = '/usr/local/lib/cyrus-ha/cyrus_instance_ctl.py'


def replication(*extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return labutil.playbook('playbooks/replication.yml', *VARS, *extra, check=check)


def promote(*extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """playbooks/promote.yml for be3; the topology inventory names the mupdate master's servername."""
    return labutil.playbook('playbooks/promote.yml', '-i', os.path.join(labutil.LAB_DIR, 'topology.yml'), *VARS,
                            '-e', 'replication_instance=be3', *extra, check=check)


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
    assert 'syncserver' in inside('replica', ['cat', '/etc/cyrus-ha/be3/cyrus.conf']).stdout
    replica_conf = inside('replica', ['cat', '/etc/cyrus-ha/be3/imapd.conf']).stdout
    assert 'mupdate_server' not in replica_conf and 'sync_log' not in replica_conf
    master, replica = facts('be3', tmp_path, mailboxes=True), facts('replica', tmp_path, mailboxes=True)
    assert master['role'] == 'master' and master['sync_client']['running'] and master['peer'] == '198.51.100.50:2005'
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


def test_backlog_grows_while_the_replica_is_down_and_drains_after(pair, tmp_path):
    cyha_imap.stop_instance('be3', 'cyha-replica')
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
    assert (promoted['role'], promoted['peer'], old['role']) == ('master', '198.51.100.23:2005', 'replica')
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
    proc = labutil.playbook(str(alone), '-i', os.path.join(labutil.LAB_DIR, 'topology.yml'), *VARS, check=False)
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
