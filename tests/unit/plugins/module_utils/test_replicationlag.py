# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""replicationlag: the answer of a replica's sync_server (recorded from Cyrus 3.6), the settings read from
imapd.conf, and the measurement's loop with the master's and the replica's sessions replaced."""

from __future__ import annotations

import pathlib
import socket
import threading

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import replicationlag
from ansible_collections.cyrus.ha.plugins.module_utils.imapcheck import CheckError

GET = (pathlib.Path(__file__).parent / 'fixtures' / 'cyrus' / 'debian12' / 'sync-get-mailboxes.txt').read_bytes()
MASTER = ('servername: be3-svc.example.org\nsync_log: 1\nsync_host: 192.0.2.50\nsync_authname: replication\n'
          'sync_password: pw-Secret-42\nclient_bind_name: 192.0.2.123\ntls_server_ca_file: /etc/cyrus-ha/be3/ca.pem\n')


def write(root, text, name='be3'):
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / 'imapd.conf').write_text(text)
    return str(root)


def test_the_replicas_answer_is_read():
    line = GET.splitlines()[0]
    fields = replicationlag.parse_mailbox(line)
    assert fields == {'UNIQUEID': 'x18vi4hta1trwb3nyad5aydx', 'MBOXNAME': 'user.dave', 'LAST_UID': 0,
                      'HIGHESTMODSEQ': 1, 'UIDVALIDITY': 1796317869}


def test_settings_of_a_replicating_master(tmp_path):
    conf = replicationlag.settings('be3', write(tmp_path, MASTER))
    assert conf['peer'] == '192.0.2.50' and conf['peer_port'] == 2005 and conf['mailbox'] == 'cyrus-ha-lag-be3'
    assert conf['address'] == '192.0.2.123' and conf['ca_path'] == '/etc/cyrus-ha/be3/ca.pem'


@pytest.mark.parametrize('text, instance, message', [
    (MASTER, 'Be3', "instance 'Be3': not a valid instance name (a lower-case letter, then up to 30 of a-z 0-9 _ -)"),
    (MASTER, 'be4', "instance be4: {root}/be4/imapd.conf does not exist: is be4 the instance's name, and {root} its "
                    "config root?"),
    ('servername: be3\nclient_bind_name: 192.0.2.50\n', 'be3',
     'instance be3 is no replicating master with an address of its own: {root}/be3/imapd.conf sets no sync_host, '
     'sync_authname, sync_password, tls_server_ca_file'),
    (MASTER + 'sync_port: imap\n', 'be3', "instance be3: {root}/be3/imapd.conf: sync_port 'imap' is not a port number"),
])
def test_settings_refuse_with_the_cause(tmp_path, text, instance, message):
    root = write(tmp_path, text)
    with pytest.raises(replicationlag.LagError) as caught:
        replicationlag.settings(instance, root)
    assert caught.value.msg == message.format(root=root)


class FakeMarker:
    created = False
    fail = None

    def __init__(self, *args, **kwargs):
        self.toggles = 0

    def connect(self):
        if self.fail:
            raise CheckError(self.fail)

    def ensure(self, mailbox, check_mode):
        return self.created

    def toggle(self, mailbox):
        return 42

    def close(self):
        pass


class FakePeer:
    """Holds modseq 41 for `lagging` questions, then 42."""
    lagging = 3
    connected = False

    def __init__(self, *args, **kwargs):
        self.asked = 0

    def connect(self):
        FakePeer.connected = True

    def mailbox(self, name):
        self.asked += 1
        return {'MBOXNAME': name, 'HIGHESTMODSEQ': 41 if self.asked <= self.lagging else 42}

    def close(self):
        pass


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def measure(root, **kwargs):
    clock = Clock()
    return replicationlag.measure('be3', kwargs.pop('timeout', 30.0), config_root=root, clock=clock,
                                  wall=lambda: 1796318143.0 + clock.now - 100, sleep=clock.sleep,
                                  peer_class=FakePeer, marker_class=FakeMarker, **kwargs)


def test_the_lag_is_the_time_until_the_replica_holds_the_change(tmp_path):
    result = measure(write(tmp_path, MASTER))
    assert result['caught_up'] and result['measured'] and result['modseq'] == 42 and result['polls'] == 4
    assert result['seconds'] == pytest.approx(3 * replicationlag.POLL)
    assert result['seen_at'] == pytest.approx(result['marked_at'] + result['seconds'])


def test_a_replica_that_does_not_catch_up_is_reported_not_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(FakePeer, 'lagging', 10 ** 6)
    result = measure(write(tmp_path, MASTER), timeout=1.0)
    assert result['measured'] and not result['caught_up'] and result['seen_at'] is None
    assert result['seconds'] >= 1.0


def test_check_mode_writes_and_asks_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(FakeMarker, 'created', True)
    FakePeer.connected = False
    result = measure(write(tmp_path, MASTER), check_mode=True)
    assert result['created'] and not result['measured'] and result['seconds'] is None and not FakePeer.connected


def test_a_master_that_refuses_the_login_names_the_marker(tmp_path, monkeypatch):
    monkeypatch.setattr(FakeMarker, 'fail', 'IMAP login as replication@192.0.2.123:993 failed: authentication failure')
    with pytest.raises(replicationlag.LagError) as caught:
        measure(write(tmp_path, MASTER))
    assert caught.value.msg == ('instance be3: the marker on the master: IMAP login as replication@192.0.2.123:993 '
                                'failed: authentication failure')


def test_a_replica_without_starttls_never_gets_the_password():
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    server.settimeout(10)
    received = []

    def serve():
        conn, dummy = server.accept()
        conn.sendall(b'* SASL PLAIN\r\n* OK replica Cyrus sync server 3.6.1\r\n')
        conn.settimeout(2)
        try:
            received.append(conn.recv(4096))
        except OSError:
            pass
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    port = server.getsockname()[1]
    peer = replicationlag.SyncPeer('127.0.0.1', port, 'replication', 'pw-Secret-42', None)
    with pytest.raises(replicationlag.LagError) as caught:
        peer.connect()
    thread.join(10)
    server.close()
    assert caught.value.msg == ('the replica 127.0.0.1:%d (sync_server) offers no STARTTLS: the replication password '
                                'is not sent in the clear' % port)
    assert b'pw-Secret-42' not in b''.join(received)


class FakeConn:
    """The IMAP commands Marker.ensure sends, recorded; the ACL as the server would hold it."""

    def __init__(self, acl):
        self.acl, self.sent = dict(acl), []

    def setacl(self, mailbox, who, rights):
        self.sent.append(('SETACL', who, rights))
        self.acl[who] = rights
        return 'OK', [b'done']

    def deleteacl(self, mailbox, who):
        self.sent.append(('DELETEACL', who))
        self.acl.pop(who, None)
        return 'OK', [b'done']


def marker_with(acl, exists=True):
    marker = replicationlag.Marker('192.0.2.123', 993, 'replication', 'pw-Secret-42', ssl=True)
    marker.conn = FakeConn(acl)
    marker.exists = lambda name: exists
    marker.acl_of = lambda name, who: marker.conn.acl.get(who, '')
    marker.create = lambda name: marker.conn.sent.append(('CREATE', name))
    return marker


def test_a_marker_readable_by_anyone_is_put_right_and_check_mode_only_says_so():
    left = {'anyone': 'lrs', 'replication': replicationlag.MARKER_RIGHTS}
    marker = marker_with(left)
    assert marker.ensure('cyrus-ha-lag-be3', check_mode=True) is True and marker.conn.sent == []
    assert marker.ensure('cyrus-ha-lag-be3', check_mode=False) is True
    assert marker.conn.sent == [('DELETEACL', 'anyone')] and 'anyone' not in marker.conn.acl
    assert marker.ensure('cyrus-ha-lag-be3', check_mode=False) is False


def test_a_missing_marker_is_created_for_the_replication_user_alone():
    marker = marker_with({}, exists=False)
    assert marker.ensure('cyrus-ha-lag-be3', check_mode=True) is True and marker.conn.sent == []
    assert marker.ensure('cyrus-ha-lag-be3', check_mode=False) is True
    assert marker.conn.sent == [('CREATE', 'cyrus-ha-lag-be3'), ('SETACL', 'replication', replicationlag.MARKER_RIGHTS),
                                ('DELETEACL', 'anyone')]
