# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/site.yml on the lab: a Cyrus Murder (mupdate master, two backends, two frontends),
each instance on its own service address, proved with a real IMAP and LMTP client."""

from __future__ import annotations

import contextlib
import datetime
import glob
import grp
import hashlib
import imaplib
import json
import os
import poplib
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time
import uuid

import pytest

import cyha_imap
import cyha_secrets
import cyha_tls
import labutil

pytestmark = pytest.mark.lab

SITE = 'playbooks/site.yml'
LAB_VARS = '@lab/vars/murder.yml'
LAB_HOSTS = '@lab/vars/murder_hosts.yml'   # the plain lab inventory's host vars
REPLICATION = '@lab/vars/replication.yml'   # be3 replicates to the replica host
TOPOLOGY = os.path.join(labutil.REPO, 'lab', 'rigs', 'lab-topology.yml')
INSTANCES = ('mupdate', 'be1', 'be2', 'be3', 'fe1', 'fe2')   # be3: the replica pair's home (its master)
ADMIN = ('cyrus', 'cyha-lab-admin')
USERS = {'alice': 'cyha-lab-alice', 'bob': 'cyha-lab-bob', 'carol': 'cyha-lab-carol'}
HOME = {'alice': 'be1', 'bob': 'be2'}
SYNC_TIMEOUT = 60   # mupdate slaves sync in seconds; generous for a loaded machine


def site(*extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return labutil.playbook(SITE, '-e', LAB_VARS, '-e', LAB_HOSTS, '-e', REPLICATION, *extra, check=check)


def changed_tasks(stdout: str) -> set[tuple[str, str]]:
    """(task name, host) of every task result reported as changed."""
    found, task = set(), ''
    for line in stdout.splitlines():
        if line.startswith('TASK ['):
            task = line[len('TASK ['):line.rindex(']')].split(' : ', 1)[-1]
        elif line.startswith('changed: ['):
            found.add((task, line[len('changed: ['):line.index(']')]))
    return found


def snapshot() -> dict:
    """What the deployment consists of on disk and in the process table."""
    state = {}
    for instance in INSTANCES:
        for name in ('imapd.conf', 'cyrus.conf'):
            path = f'/etc/cyrus-ha/{instance}/{name}'
            with open(path, 'rb') as handle:
                state[path] = hashlib.sha256(handle.read()).hexdigest()
        state[f'{instance} master'] = cyha_imap.master_pid(instance)
    return state


def listeners(netns: str) -> list[tuple[str, str]]:
    """(local address, process) of every TCP listener in a lab host's namespace."""
    out = subprocess.run(['ip', 'netns', 'exec', netns, 'ss', '-Hltnp'], capture_output=True, text=True,
                         check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        found.append((fields[3], fields[5] if len(fields) > 5 else ''))
    return found


@pytest.fixture(scope='module')
def murder(lab):
    """The lab Murder, deployed from nothing by site.yml (timed); removed again afterwards."""
    hosts = {h['name']: h for h in lab if h['name'] in INSTANCES}
    for host in hosts.values():
        cyha_imap.remove_instance(host)
    started, since = time.monotonic(), time.time()
    first = site()
    first_seconds = time.monotonic() - started
    try:
        # The backends own the users' mailboxes: site.yml created them there (murder_mailboxes).
        for user, backend in HOME.items():
            with cyha_imap.imap(hosts[backend]['service_addr4'], *ADMIN) as conn:
                assert f'user.{user}' in cyha_imap.mailboxes(conn), (user, backend)
                status, data = conn.getquotaroot(f'user.{user}')
                assert status == 'OK' and b'STORAGE 0 1048576' in b' '.join(
                    part for part in data[1] if isinstance(part, bytes)), data
        yield {'hosts': hosts, 'first': first, 'first_seconds': first_seconds, 'since': since}
    finally:
        for host in hosts.values():
            cyha_imap.remove_instance(host)


def addr(murder: dict, name: str) -> str:
    return murder['hosts'][name]['service_addr4']


def test_first_deploy_changes_every_host_and_runs_every_instance(murder):
    counts = labutil.recap(murder['first'].stdout)
    assert set(counts) == set(INSTANCES), murder['first'].stdout[-3000:]
    for name, count in counts.items():
        assert count['failed'] == 0 and count['unreachable'] == 0, murder['first'].stdout[-3000:]
        assert count['changed'] > 0, name
    print(f'first deploy: {murder["first_seconds"]:.1f} s')
    for instance in INSTANCES:
        assert cyha_imap.master_pid(instance), f'{instance}: no master running'
    with open('/etc/cyrus-ha/mupdate/imapd.conf', encoding='utf-8') as handle:
        master_conf = handle.read()
    assert 'admins: mupdate\n' in master_conf     # computed from the backends and frontends
    assert 'mupdate_server' not in master_conf
    with open('/etc/cyrus-ha/be1/imapd.conf', encoding='utf-8') as handle:
        backend_conf = handle.read()
    for line in ('mupdate_server: mupdate-svc.cyha.test:3905', 'proxyservers: proxy', 'lmtp_admins: proxy',
                 'master_bind_errors_fatal: yes', 'client_bind_name: 198.51.100.121', 'syslog_prefix: cyrus-be1'):
        assert line + '\n' in backend_conf, line
    with open('/etc/cyrus-ha/fe1/imapd.conf', encoding='utf-8') as handle:
        frontend_conf = handle.read()
    assert 'proxyservers' not in frontend_conf and 'proxy_authname: proxy\n' in frontend_conf
    assert os.stat('/etc/cyrus-ha/fe1/imapd.conf').st_mode & 0o777 == 0o640
    assert os.stat('/var/lib/cyrus-ha/fe1/sasldb2').st_mode & 0o777 == 0o640
    with open('/etc/services', encoding='utf-8') as handle:
        services = handle.read().splitlines()
    assert any(line.split()[:2] == ['lmtp', '24/tcp'] for line in services if line.strip())
    assert any(line.split()[:2] == ['mupdate', '3905/tcp'] for line in services if line.strip())


def test_each_instance_listens_only_on_its_service_address(murder):
    for name, host in murder['hosts'].items():
        cyrus = [(local, proc) for local, proc in listeners(host['netns']) if 'sshd' not in proc]
        assert cyrus, f'{name}: nothing listens'
        assert all(local.rsplit(':', 1)[0] == host['service_addr4'] for local, dummy in cyrus), (name, cyrus)
    ports = {local.rsplit(':', 1)[1] for local, dummy in listeners('cyha-fe1') if local.startswith('198.51.100.111')}
    assert ports == {'143', '993', '24', '3905'}


def test_second_run_changes_nothing_and_tells_no_secret(murder):
    """The second run (at -vvv) changes nothing, and neither its whole output nor any host's syslog holds a
    secret of the lab."""
    before = snapshot()
    started = time.monotonic()
    proc = site('-vvv')
    print(f'second run: {time.monotonic() - started:.1f} s')
    counts = labutil.recap(proc.stdout)
    assert set(counts) == set(INSTANCES)
    assert all(c['changed'] == 0 and c['failed'] == 0 for c in counts.values()), proc.stdout[-3000:]
    assert snapshot() == before
    secrets = cyha_secrets.lab_secrets()
    assert cyha_secrets.leaks(proc.stdout + proc.stderr, secrets) == []
    assert cyha_secrets.syslog_leaks(secrets) == {}


def test_check_mode_with_the_topology_inventory_predicts_no_change(murder):
    """site.yml in check mode, with the cyrus.ha.murder inventory (no per-host extra vars) on the lab deployed
    from the plain inventory: it predicts no change and changes nothing. (be3's murder_replication_peer comes
    from the topology's replicas here, from lab/vars/murder_hosts.yml there: the same address. Check mode on the
    plain inventory is test_a_hand_edit_is_detected_then_corrected's.)"""
    before = snapshot()
    proc = labutil.run([os.path.join(labutil.BIN, 'ansible-playbook'), '-i', TOPOLOGY, '-i', labutil.inventory(), SITE,
                        '-e', LAB_VARS, '-e', REPLICATION, '--check', '--diff'], check=True)
    counts = labutil.recap(proc.stdout)
    assert set(counts) == set(INSTANCES), proc.stdout[-3000:]
    assert all(c['changed'] == 0 and c['failed'] == 0 for c in counts.values()), proc.stdout[-3000:]
    assert snapshot() == before


def test_the_master_admins_are_the_mupdate_users_of_every_backend_and_frontend(murder):
    """The lab's peers share one mupdate user, which cannot tell a computed admins line from a fixed
    one; give each peer its own and check mode must predict exactly the master's new admins line and
    its new SASL users, and change nothing."""
    before = snapshot()
    per_peer = {'murder_mupdate_authname': "{{ 'mupdate-' ~ inventory_hostname }}"}
    proc = site('--check', '--diff', '--limit', 'mupdate', '-e', json.dumps(per_peer))
    lines = proc.stdout.splitlines()
    assert '-admins: mupdate' in lines, proc.stdout[-3000:]
    assert '+admins: mupdate-be1 mupdate-be2 mupdate-be3 mupdate-fe1 mupdate-fe2' in lines, proc.stdout[-3000:]
    assert ('    "msg": "would set the password of: mupdate-be1, mupdate-be2, mupdate-be3, mupdate-fe1, mupdate-fe2"'
            in lines)
    assert labutil.recap(proc.stdout)['mupdate']['changed'] == 3      # imapd.conf, SASL users, restart
    assert snapshot() == before


@pytest.mark.parametrize('frontend', ['fe1', 'fe2'])
@pytest.mark.parametrize('user', sorted(HOME))
def test_users_of_both_backends_work_through_either_frontend(murder, frontend, user):
    # mupdate slaves learn the backends' new mailboxes within seconds: poll.
    seen = labutil.poll(lambda: 'INBOX' in cyha_imap.list_as(addr(murder, frontend), user, USERS[user]),
                        SYNC_TIMEOUT, interval=0.5)
    assert seen, f'{user} has no INBOX through {frontend}'
    with cyha_imap.imap(addr(murder, frontend), user, USERS[user]) as conn:
        assert 'INBOX' in cyha_imap.mailboxes(conn)
        subject = cyha_imap.append_and_fetch(conn)
    # The message is on the user's own backend, and not on the other one.
    with cyha_imap.imap(addr(murder, HOME[user]), user, USERS[user]) as conn:
        conn.select('INBOX', readonly=True)
        assert conn.search(None, 'SUBJECT', subject)[1][0].split()
    other = 'be2' if HOME[user] == 'be1' else 'be1'
    with cyha_imap.imap(addr(murder, other), *ADMIN) as conn:
        assert f'user.{user}' not in cyha_imap.mailboxes(conn)


@pytest.mark.parametrize('frontend', ['fe1', 'fe2'])
def test_lmtp_to_a_frontend_lands_on_the_right_backend(murder, frontend):
    for user in sorted(HOME):
        assert labutil.poll(lambda: 'INBOX' in cyha_imap.list_as(addr(murder, frontend), user, USERS[user]),
                            SYNC_TIMEOUT, interval=0.5)
        message_id = cyha_imap.lmtp_deliver(addr(murder, frontend), user)
        assert cyha_imap.count_header(addr(murder, HOME[user]), user, USERS[user], 'Message-ID', message_id) == 1


def lmtp_held(address: str, recipient: str, sent: threading.Event, timeout: float,
              gate: threading.Barrier | None = None) -> tuple[int, str, str]:
    """One LMTP delivery, by hand so the caller knows when the whole message is sent and only the reply is
    awaited (`sent`), and can have many sessions open at once before any message ends (`gate`); returns
    (reply code, reply text, Message-ID). A broken connection is code 0."""
    message_id = f'<cyha-{uuid.uuid4().hex}@cyha.test>'
    try:
        with socket.create_connection((address, 24), timeout=timeout) as sock:
            reader = sock.makefile('rb')

            def reply() -> tuple[int, str]:
                lines = []
                while True:
                    line = reader.readline().decode('ascii', 'replace')
                    if not line:
                        raise ConnectionError('connection closed')
                    lines.append(line.rstrip())
                    if line[3:4] != '-':
                        return int(line[:3]), ' '.join(lines)

            reply()
            for command in ('LHLO cyha.test', 'MAIL FROM:<cyha@cyha.test>', f'RCPT TO:<{recipient}>', 'DATA'):
                sock.sendall(command.encode() + b'\r\n')
                code, text = reply()
                if code >= 400:
                    return code, text, message_id
            if gate is not None:
                gate.wait(timeout)
            sock.sendall(f'From: cyha@cyha.test\r\nTo: {recipient}\r\nSubject: held\r\nMessage-ID: {message_id}\r\n\r\n'
                         'held by a hung backend\r\n.\r\n'.encode())
            sent.set()
            return (*reply(), message_id)
    except (OSError, ValueError, threading.BrokenBarrierError) as exc:
        return 0, f'{type(exc).__name__}: {exc}', message_id


def test_a_frontend_s_cached_connections_do_not_use_up_a_backend(murder):
    """30 deliveries to bob open at once through fe1, so 30 of fe1's lmtpd each open a connection to be2 and keep
    it after (Cyrus caches it for the process's life), more than the 20 lmtpd a backend used to run: every one
    is accepted, and is in bob's INBOX once."""
    fe1 = addr(murder, 'fe1')
    assert labutil.poll(lambda: 'INBOX' in cyha_imap.list_as(fe1, 'bob', USERS['bob']), SYNC_TIMEOUT, interval=0.5)
    gate = threading.Barrier(30)
    sent = [threading.Event() for _index in range(30)]
    done: dict[int, tuple] = {}

    def bob(index: int) -> None:
        done[index] = lmtp_held(fe1, 'bob', sent[index], 60, gate)

    threads = [threading.Thread(target=bob, args=(index,), daemon=True) for index in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(code for code, _text, _id in done.values()) == [250] * 30, done
    for _code, _text, message_id in done.values():
        assert cyha_imap.count_header(addr(murder, 'be2'), 'bob', USERS['bob'], 'Message-ID', message_id) == 1


def test_a_hung_backend_does_not_hold_up_mail_for_the_other_backend(murder):
    """be1's instance frozen (SIGSTOP: its kernel still takes connections, nothing answers), as a hung node
    looks to a frontend. 30 deliveries to alice through fe1 are held, each in one of fe1's lmtpd processes,
    more than a backend's maxchild of 20; a delivery to bob (be2) through fe1 is still accepted before any of
    alice's gets its reply. Thawed, each of alice's was accepted (and is in her INBOX once) or deferred (4xx),
    never refused."""
    fe1 = addr(murder, 'fe1')
    for user in sorted(HOME):
        assert labutil.poll(lambda: 'INBOX' in cyha_imap.list_as(fe1, user, USERS[user]), SYNC_TIMEOUT, interval=0.5)
    frozen = cyha_imap.instance_pids('be1')
    assert frozen
    held: dict[int, tuple] = {}
    sent = [threading.Event() for _index in range(30)]

    def alice(index: int) -> None:
        held[index] = lmtp_held(fe1, 'alice', sent[index], 120)

    threads = [threading.Thread(target=alice, args=(index,), daemon=True) for index in range(30)]
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        for thread in threads:
            thread.start()
        assert labutil.poll(lambda: all(event.is_set() for event in sent) or held, 30, interval=0.1)
        early = dict(held)
        bob = cyha_imap.lmtp_deliver(fe1, 'bob')
        answered_before_bob = dict(held)
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    for thread in threads:
        thread.join(400)
    assert early == {} and answered_before_bob == {}, (early, answered_before_bob)
    assert sum(event.is_set() for event in sent) == 30
    assert cyha_imap.count_header(addr(murder, 'be2'), 'bob', USERS['bob'], 'Message-ID', bob) == 1
    codes = sorted({code for code, _text, _id in held.values()})
    assert len(held) == 30 and all(code == 250 or 400 <= code < 500 for code in codes), held
    accepted = [message_id for code, _text, message_id in held.values() if code == 250]
    for message_id in accepted:
        assert cyha_imap.count_header(addr(murder, 'be1'), 'alice', USERS['alice'], 'Message-ID', message_id) == 1
    print(f'a hung be1: bob accepted through fe1 while 30 deliveries to alice were held; then {len(accepted)} '
          f'accepted, replies {codes}')


def test_mailbox_created_through_a_frontend_reaches_the_backend_and_the_other_frontend(murder):
    assert labutil.poll(lambda: 'INBOX' in cyha_imap.list_as(addr(murder, 'fe1'), 'alice', USERS['alice']),
                        SYNC_TIMEOUT, interval=0.5)
    folder = f'INBOX.cyha-{uuid.uuid4().hex[:8]}'
    with cyha_imap.imap(addr(murder, 'fe1'), 'alice', USERS['alice']) as conn:
        status, detail = conn.create(folder)
        assert status == 'OK', detail
        cyha_imap.append_and_fetch(conn, folder)
    assert folder in cyha_imap.list_as(addr(murder, 'be1'), 'alice', USERS['alice'])
    assert labutil.poll(lambda: folder in cyha_imap.list_as(addr(murder, 'fe2'), 'alice', USERS['alice']),
                        SYNC_TIMEOUT, interval=0.5), f'{folder} never reached fe2'
    with cyha_imap.imap(addr(murder, 'be2'), *ADMIN) as conn:
        assert not [m for m in cyha_imap.mailboxes(conn) if m.startswith('user.alice')]


def test_a_hand_edit_is_detected_then_corrected(murder):
    path = '/etc/cyrus-ha/be2/imapd.conf'
    with open(path, encoding='utf-8') as handle:
        deployed = handle.read()
    assert 'allowallsubscribe: yes\n' in deployed
    pid_before = cyha_imap.master_pid('be2')
    others = {k: v for k, v in snapshot().items() if not k.startswith(('be2', '/etc/cyrus-ha/be2/'))}
    edited = deployed.replace('allowallsubscribe: yes\n', 'allowallsubscribe: no\n')
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(edited)

    # Check mode reports the drift on be2 only, and leaves it (and master) alone. (No diff is
    # shown: imapd.conf holds passwords, so its task is no_log.)
    proc = site('--check')
    counts = labutil.recap(proc.stdout)
    assert counts['be2']['changed'] > 0, proc.stdout[-3000:]
    assert all(c['changed'] == 0 for name, c in counts.items() if name != 'be2'), proc.stdout[-3000:]
    with open(path, encoding='utf-8') as handle:
        assert handle.read() == edited
    assert cyha_imap.master_pid('be2') == pid_before

    # A real run on be2 (check mode above showed that only be2 drifted) puts the file back and restarts master so
    # that every process reads it.
    proc = site('-l', 'be2')
    counts = labutil.recap(proc.stdout)
    assert counts['be2']['changed'] > 0 and counts['be2']['failed'] == 0, proc.stdout[-3000:]
    assert {k: v for k, v in snapshot().items() if k in others} == others
    with open(path, encoding='utf-8') as handle:
        assert handle.read() == deployed
    pid_after = cyha_imap.master_pid('be2')
    assert pid_after and pid_after != pid_before
    assert labutil.poll(lambda: 'INBOX' in cyha_imap.list_as(addr(murder, 'fe1'), 'bob', USERS['bob']),
                        SYNC_TIMEOUT, interval=0.5)
    with cyha_imap.imap(addr(murder, 'fe1'), 'bob', USERS['bob']) as conn:
        cyha_imap.append_and_fetch(conn)
    # (that a run after it changes nothing is test_second_run_changes_nothing_and_tells_no_secret's, on the same tree)


BAD_VARIABLES = [
    ({'murder_role': 'banana'},
     'value of murder_role must be one of: mupdate, backend, frontend, replica, got: banana'),
    ({'murder_mupdate_port': 'three'},
     "murder_mupdate_port"),
    ({'murder_users': [{'name': 'dave'}]},
     'missing required arguments: password found in murder_users'),
    ({'murder_address': '198.51.100.300'},
     'murder_address must be one IPv4 or IPv6 address without a prefix length, got "198.51.100.300"'),
    ({'murder_servername': '198.51.100.121'},
     'murder_servername must be a host name, not an IP literal (got "198.51.100.121")'),
    ({'murder_mupdate_password': ''},
     'murder_mupdate_password'),
]


@pytest.mark.parametrize('variables, message', BAD_VARIABLES, ids=[next(iter(v)) for v, m in BAD_VARIABLES])
def test_bad_role_variables_fail_before_anything_changes(murder, variables, message):
    before = snapshot()
    proc = site('-e', json.dumps(variables), check=False)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    counts = labutil.recap(proc.stdout)
    assert counts and all(c['changed'] == 0 for c in counts.values()), proc.stdout[-3000:]
    assert 'PLAY [Configure every instance (nothing starts yet)]' not in proc.stdout
    assert snapshot() == before


def test_an_instance_without_its_address_is_not_started(murder, tmp_path):
    """The instance role refuses to start master before the service address is up."""
    playbook = tmp_path / 'noaddr.yml'
    cert, key = cyha_tls.lab_authority().issue(['noaddr-svc.cyha.test', '198.51.100.199'])
    (tmp_path / 'noaddr.pem').write_text(cert)
    (tmp_path / 'noaddr.key').write_text(key)
    playbook.write_text(
        '- hosts: spare\n  gather_facts: true\n  gather_subset: [min]\n  roles:\n'
        '    - role: cyrus.ha.cyrus_instance\n'
        '      cyrus_instance_name: cyha-noaddr\n'
        '      cyrus_instance_address: 198.51.100.199\n'
        '      cyrus_instance_servername: noaddr-svc.cyha.test\n'
        f'      cyrus_instance_tls_certificate_src: {tmp_path}/noaddr.pem\n'
        f'      cyrus_instance_tls_key_src: {tmp_path}/noaddr.key\n'
        f'      cyrus_instance_tls_ca_src: {cyha_tls.lab_ca_path()}\n', encoding='utf-8')
    try:
        proc = labutil.playbook(str(playbook), check=False)
        assert proc.returncode != 0
        assert ('service address 198.51.100.199 of instance cyha-noaddr is not configured on spare: '
                'take it up (cyrus.ha.service_ip) before starting the instance') in proc.stdout, proc.stdout[-3000:]
        assert cyha_imap.master_pid('cyha-noaddr', 'cyha-spare') is None
    finally:
        cyha_imap.remove_instance({'name': 'cyha-noaddr', 'netns': 'cyha-spare', 'service_addr4': '198.51.100.199'})


# ---------------------------------------------------------------------------------------------
# TLS: what users and the instances themselves see
# ---------------------------------------------------------------------------------------------

def other_ca_context() -> ssl.SSLContext:
    other = cyha_tls.Authority('not the site CA')
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=other.pem)
    return context


@pytest.mark.parametrize('frontend', ['fe1', 'fe2'])
def test_users_log_in_over_imaps_and_starttls_and_never_in_plaintext(murder, frontend):
    address = addr(murder, frontend)
    for user in ('alice', 'bob'):     # the frontend's mupdate slave has the users' mailboxes
        assert labutil.poll(lambda: 'INBOX' in cyha_imap.list_as(address, user, USERS[user]), SYNC_TIMEOUT,
                            interval=0.5), (frontend, user)
    with cyha_imap.imap(address, 'alice', USERS['alice']) as conn:          # IMAPS, the lab CA, host name checked
        assert conn.select('INBOX', readonly=True)[0] == 'OK'               # proxied to be1
    plain = imaplib.IMAP4(address, 143, timeout=15)
    try:
        assert 'STARTTLS' in plain.capabilities and 'LOGINDISABLED' in plain.capabilities
        with pytest.raises(imaplib.IMAP4.error, match='Login only available under a layer'):
            plain.login('bob', USERS['bob'])
        plain.starttls(ssl_context=cyha_imap.lab_tls())
        assert plain.login('bob', USERS['bob'])[0] == 'OK'
        assert plain.select('INBOX', readonly=True)[0] == 'OK'              # proxied to be2
    finally:
        with contextlib.suppress(Exception):
            plain.logout()
    # a client that trusts another CA stops at the handshake, before any password is sent
    with pytest.raises(ssl.SSLCertVerificationError, match='unable to get local issuer certificate'):
        imaplib.IMAP4_SSL(address, 993, timeout=15, ssl_context=other_ca_context())
    starttls = imaplib.IMAP4(address, 143, timeout=15)
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match='unable to get local issuer certificate'):
            starttls.starttls(ssl_context=other_ca_context())
    finally:
        with contextlib.suppress(Exception):
            starttls.shutdown()


def cyrus_lines(host: str, since: float) -> list[str]:
    """The lab syslog lines of host's Cyrus processes written after `since` (time.time())."""
    stamp = datetime.datetime.fromtimestamp(since, datetime.timezone.utc).isoformat()
    with open(os.path.join(labutil.LAB_DIR, 'log', f'{host}.log'), encoding='utf-8', errors='replace') as handle:
        return [line for line in handle if ' cyrus-' in line and line[:32] >= stamp[:26]]


def mupdate_banner(address: str) -> str:
    with socket.create_connection((address, 3905), timeout=15) as conn:
        data = b''
        while b'* OK' not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode('ascii', 'replace')


def test_instances_speak_tls_to_each_other_and_scram_to_mupdate(murder):
    """Frontend to backend (IMAP and LMTP proxy): STARTTLS, then PLAIN inside TLS, the peer's certificate
    checked against the site CA. To the mupdate master (which Cyrus 3.6.1 cannot run with TLS): SCRAM, so
    no password crosses in the clear; the mupdate services offer nothing else."""
    since = time.time() - 1
    for frontend, user in (('fe1', 'alice'), ('fe2', 'bob')):
        assert labutil.poll(lambda: 'INBOX' in cyha_imap.list_as(addr(murder, frontend), user, USERS[user]),
                            SYNC_TIMEOUT, interval=0.5), (frontend, user)
        with cyha_imap.imap(addr(murder, frontend), user, USERS[user]) as conn:
            assert conn.select('INBOX', readonly=True)[0] == 'OK'
        cyha_imap.lmtp_deliver(addr(murder, frontend), user)
    # a backend's mupdate client: a mailbox created on be2 is pushed to the master
    with cyha_imap.imap(addr(murder, 'be2'), *ADMIN) as conn:
        name = f'user.bob.tls{uuid.uuid4().hex[:6]}'
        assert conn.create(name)[0] == 'OK'
        assert conn.setacl(name, ADMIN[0], 'lrswipkxtecda')[0] == 'OK' and conn.delete(name)[0] == 'OK'

    # A frontend's lmtpd keeps its backend connection open from one session to the next (Cyrus caches
    # it for the life of the process), so the LMTP proxy's login may predate this test: look for it
    # since the deployment. An IMAP session opens its own backend connection and closes it at logout.
    wanted = {
        'fe1 imap to be1': ('be1', since, lambda l: '/imap[' in l and 'login: fe1-svc.cyha.test' in l
                            and 'alice PLAIN+TLS' in l),
        'fe1 lmtp to be1': ('be1', murder['since'], lambda l: '/lmtp[' in l and 'login: fe1-svc.cyha.test' in l
                            and 'proxy PLAIN+TLS' in l),
        'fe2 imap to be2': ('be2', since, lambda l: '/imap[' in l and 'login: fe2-svc.cyha.test' in l
                            and 'bob PLAIN+TLS' in l),
        'fe2 lmtp to be2': ('be2', murder['since'], lambda l: '/lmtp[' in l and 'login: fe2-svc.cyha.test' in l
                            and 'proxy PLAIN+TLS' in l),
        'be2 to mupdate': ('mupdate', since, lambda l: 'login: be2-svc.cyha.test' in l
                           and 'mupdate SCRAM-SHA-256 User logged in' in l),
    }

    def missing() -> list[str]:
        return [what for what, (host, start, match) in wanted.items()
                if not any(match(l) for l in cyrus_lines(host, start))]
    assert labutil.poll(lambda: not missing(), 20, interval=0.5), \
        (missing(), {h: cyrus_lines(h, since)[-8:] for h in ('be1', 'be2', 'mupdate')})
    # since the deployment: every login inside TLS, but for mupdate's SCRAM; no certificate failed its check
    everything = [line for host in INSTANCES for line in cyrus_lines(host, murder['since'])]
    outside = [l for l in everything if 'User logged in' in l and '+TLS' not in l
               and ' mupdate SCRAM-SHA-256 User logged in' not in l]
    assert outside == [], outside[:5]
    assert [l for l in everything if 'verify error' in l] == []
    master = cyrus_lines('mupdate', murder['since'])
    for instance in ('be1', 'be2', 'fe1', 'fe2'):
        assert any(f'login: {instance}-svc.cyha.test' in l and 'mupdate SCRAM-SHA-256' in l for l in master), instance
    for instance in ('mupdate', 'fe1'):
        banner = mupdate_banner(addr(murder, instance))
        assert '* AUTH "SCRAM-SHA-256"' in banner or '* AUTH SCRAM-SHA-256' in banner, banner
        assert 'PLAIN' not in banner and 'STARTTLS' not in banner, banner


def test_tls_keys_are_readable_by_root_and_the_cyrus_group_only(murder):
    mail = grp.getgrnam('mail').gr_gid
    for instance in INSTANCES:
        directory = f'/etc/cyrus-ha/{instance}'
        st = os.stat(f'{directory}/tls.pem')
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, mail), instance
        assert stat.S_IMODE(os.stat(f'{directory}/ca.pem').st_mode) == 0o644
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o750
        with open(f'{directory}/imapd.conf', encoding='utf-8') as handle:
            conf = handle.read().splitlines()
        for line in (f'tls_server_cert: {directory}/tls.pem', f'tls_server_key: {directory}/tls.pem',
                     f'tls_server_ca_file: {directory}/ca.pem', 'allowplaintext: no', 'force_sasl_client_mech: PLAIN',
                     'tls_versions: tls1_2 tls1_3'):
            assert line in conf, (instance, line)
    for path in glob.glob('/etc/cyrus-ha/**', recursive=True) + glob.glob('/var/lib/cyrus-ha/*/sasldb2'):
        if os.path.isfile(path) and not path.endswith('ca.pem'):
            assert not os.stat(path).st_mode & 0o007, f'{path} is readable by every user'


def served_fingerprint(address: str) -> str:
    pem = ssl.get_server_certificate((address, 993), timeout=15)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def tls_override(cert: str, key: str) -> str:
    return json.dumps({'murder_tls_certificate': cert, 'murder_tls_certificate_src': '',
                       'murder_tls_key': key, 'murder_tls_key_src': ''})


def test_a_bad_certificate_is_refused_and_the_instance_keeps_serving_its_own_then_a_renewal_is_served(murder):
    site_ca = cyha_tls.lab_authority()
    names = ['fe1-svc.cyha.test', 'fe1-svc', addr(murder, 'fe1')]
    own, pid = served_fingerprint(addr(murder, 'fe1')), cyha_imap.master_pid('fe1')
    with open('/etc/cyrus-ha/fe1/tls.pem', 'rb') as handle:
        own_file = handle.read()
    expired = site_ca.issue(names, not_before=cyha_tls.days(-90), not_after=cyha_tls.days(-1))
    cases = [
        (expired, 'certificate commonName=fe1-svc.cyha.test expired on'),
        (cyha_tls.Authority('not the site CA').issue(names),
         'a client expecting fe1-svc.cyha.test would refuse it: unable to get local issuer certificate'),
        ((site_ca.issue(names)[0], cyha_tls.new_key()), 'private_key does not belong to the certificate'),
        (site_ca.issue(names[:2]), 'does not cover 198.51.100.111 (its subjectAltNames: DNS:fe1-svc.cyha.test, '
                                   'DNS:fe1-svc)'),
    ]
    for (cert, key), message in cases:
        proc = site('-l', 'fe1', '-e', tls_override(cert, key), check=False)
        assert proc.returncode != 0 and message in proc.stdout, (message, proc.stdout[-3000:])
        assert key.split('\n')[1] not in proc.stdout + proc.stderr
        with open('/etc/cyrus-ha/fe1/tls.pem', 'rb') as handle:
            assert handle.read() == own_file, message
        assert cyha_imap.master_pid('fe1') == pid and served_fingerprint(addr(murder, 'fe1')) == own, message
    renewed_cert, renewed_key = site_ca.issue(names)
    renewed = site('-l', 'fe1', '-e', tls_override(renewed_cert, renewed_key))
    assert ('Install the TLS key and certificate, and the site CA (checked first; a bad one changes nothing)',
            'fe1') in changed_tasks(renewed.stdout)
    new = hashlib.sha256(ssl.PEM_cert_to_DER_cert(renewed_cert)).hexdigest()
    assert labutil.poll(lambda: served_fingerprint(addr(murder, 'fe1')) == new, 30, interval=0.5)
    with cyha_imap.imap(addr(murder, 'fe1'), 'alice', USERS['alice']) as conn:
        assert conn.select('INBOX', readonly=True)[0] == 'OK'
    site('-l', 'fe1')                                  # the lab's own certificate again
    assert labutil.poll(lambda: served_fingerprint(addr(murder, 'fe1')) == own, 30, interval=0.5)


def test_a_backend_certificate_from_another_ca_is_logged_by_the_frontend_and_not_refused(murder, tmp_path):
    """What Cyrus 3.6 does as a client (roles/murder/README.md): it checks a backend's certificate against
    the site CA (tls_server_ca_file) and logs the failure, but goes on (SSL_VERIFY_NONE)."""
    other = cyha_tls.Authority('a CA the frontends do not trust')
    cert, key = other.issue(['be2-svc.cyha.test', 'be2-svc', addr(murder, 'be2')])
    (tmp_path / 'ca.pem').write_text(other.pem)
    override = json.dumps({'murder_tls_certificate': cert, 'murder_tls_certificate_src': '', 'murder_tls_key': key,
                           'murder_tls_key_src': '', 'murder_tls_ca_src': str(tmp_path / 'ca.pem')})
    try:
        site('-l', 'be2', '-e', override)
        since = time.time() - 1
        assert labutil.poll(lambda: 'INBOX' in cyha_imap.list_as(addr(murder, 'fe1'), 'bob', USERS['bob']),
                            SYNC_TIMEOUT, interval=0.5)
        with cyha_imap.imap(addr(murder, 'fe1'), 'bob', USERS['bob']) as conn:
            assert conn.select('INBOX', readonly=True)[0] == 'OK'      # proxied to be2 all the same
        assert labutil.poll(lambda: any('verify error' in line and 'unable to get local issuer certificate' in line
                                        for line in cyrus_lines('fe1', since)), 20, interval=0.5), \
            cyrus_lines('fe1', since)[-10:]
    finally:
        site('-l', 'be2')                                # the lab's own certificate and CA again


def test_pop3_when_enabled_is_pop3s_and_stls_only(murder):
    """murder_pop3 on fe1 and be1: POP3S on 995 and STLS on 110 through the frontend to the backend; USER
    outside TLS is refused. Back to IMAP only afterwards."""
    try:
        site('-l', 'fe1,be1', '-e', json.dumps({'murder_pop3': True}))
        address = addr(murder, 'fe1')
        assert labutil.poll(lambda: 'INBOX' in cyha_imap.list_as(address, 'alice', USERS['alice']), SYNC_TIMEOUT,
                            interval=0.5)
        secure = poplib.POP3_SSL(address, 995, timeout=15, context=cyha_imap.lab_tls())
        try:
            secure.user('alice')
            assert secure.pass_(USERS['alice']).startswith(b'+OK')
            assert secure.stat()[0] >= 0
        finally:
            secure.quit()
        plain = poplib.POP3(address, 110, timeout=15)
        try:
            with pytest.raises(poplib.error_proto, match='only available under a layer'):
                plain.user('alice')
            plain.stls(context=cyha_imap.lab_tls())
            plain.user('alice')
            assert plain.pass_(USERS['alice']).startswith(b'+OK')
        finally:
            with contextlib.suppress(Exception):
                plain.quit()
    finally:
        site('-l', 'fe1,be1')
    ports = {local.rsplit(':', 1)[1] for local, dummy in listeners('cyha-fe1') if local.startswith(addr(murder, 'fe1'))}
    assert ports == {'143', '993', '24', '3905'}


def test_a_backend_with_its_own_proxy_password(murder):
    """Last (it changes the proxy passwords): each backend gets its own proxy password, the
    frontends write <short>_password for it, and users still reach both backends through them."""
    variables = {'murder_backend_proxy_password': "{{ 'cyha-lab-proxy-' ~ inventory_hostname }}",
                 'cyrus_instance_sasl_update_passwords': True}
    proc = site('-e', json.dumps(variables))
    counts = labutil.recap(proc.stdout)
    assert all(counts[name]['changed'] > 0 for name in ('be1', 'be2', 'fe1', 'fe2')), proc.stdout[-3000:]
    for frontend in ('fe1', 'fe2'):
        with open(f'/etc/cyrus-ha/{frontend}/imapd.conf', encoding='utf-8') as handle:
            conf = handle.read().splitlines()
        assert 'be1-svc_password: cyha-lab-proxy-be1' in conf and 'be2-svc_password: cyha-lab-proxy-be2' in conf
        assert 'proxy_password: cyha-lab-proxy' in conf
    with open('/etc/cyrus-ha/be2/imapd.conf', encoding='utf-8') as handle:
        assert 'proxy_password: cyha-lab-proxy-be2' in handle.read().splitlines()
    for frontend in ('fe1', 'fe2'):
        for user in sorted(HOME):
            assert labutil.poll(lambda: 'INBOX' in cyha_imap.list_as(addr(murder, frontend), user, USERS[user]),
                                SYNC_TIMEOUT, interval=0.5), (frontend, user)
            with cyha_imap.imap(addr(murder, frontend), user, USERS[user]) as conn:
                cyha_imap.append_and_fetch(conn)
