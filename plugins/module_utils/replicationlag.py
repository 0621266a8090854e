# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The measured replication lag of one instance, on its master: a marker written there and timed, on one
clock, until the replica holds it.

- The marker is the ``\\Flagged`` flag of the one message of the instance's marker mailbox
  ``cyrus-ha-lag-<instance>`` (a shared mailbox only the replication user can see). Each measurement
  toggles it over IMAPS as the replication user (``sync_authname``/``sync_password`` of the instance's
  imapd.conf, an admin of the instance), on the instance's own address (``client_bind_name``), trusting
  the instance's CA (``tls_server_ca_file``). A flag change creates no file, so the marker leaves nothing
  behind however often it is measured; its MODSEQ says which change to wait for.
- The replica is asked over the replication protocol itself, as sync_client asks it (STARTTLS, then SASL
  PLAIN as the replication user, then ``GET MAILBOXES (<marker>)``): read only, about a millisecond per
  question, and from the master, so the measurement is the time from the master's acknowledgement of the
  change to the first answer of the replica that holds it, both on the master's monotonic clock.

Standard library only (managed node, Python 3.9+).
"""

from __future__ import annotations

import base64
import imaplib
import re
import socket
import ssl as tls
import time

from ansible_collections.cyrus.ha.plugins.module_utils import cyrusconf, cyrusinstance
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusinstance import CONFIG_ROOT
from ansible_collections.cyrus.ha.plugins.module_utils.imapadmin import Admin
from ansible_collections.cyrus.ha.plugins.module_utils.imapcheck import CheckError, _quote
from ansible_collections.cyrus.ha.plugins.module_utils.replicacompare import MARKER_PREFIX

MARKER_RIGHTS = 'lrswipkxtecda'
IMAPS_PORT = 993
SYNC_PORT = 2005
POLL = 0.01
_FETCH_MODSEQ = re.compile(rb'MODSEQ \((\d+)\)')
_ATOM = re.compile(r'\b(UNIQUEID|MBOXNAME|LAST_UID|HIGHESTMODSEQ|UIDVALIDITY) ("[^"]*"|[^\s()]+)')


class LagError(Exception):
    """What stops a measurement; ``msg`` names the instance, the peer or the file and the cause."""

    def __init__(self, msg: str):
        super().__init__(msg)
        self.msg = msg


def marker_mailbox(instance: str) -> str:
    return MARKER_PREFIX + instance


def settings(instance: str, config_root: str = CONFIG_ROOT) -> dict:
    """What a measurement needs from the instance's imapd.conf; LagError when it is not a replicating master."""
    if not cyrusinstance.valid_name(instance):
        raise LagError('instance %r: not a valid instance name (a lower-case letter, then up to 30 of a-z 0-9 _ -)'
                       % (instance,))
    path = cyrusinstance.paths(instance, config_root)['imapd_conf']
    try:
        imapd, dummy = cyrusconf.parse_imapd_lines(cyrusconf.read_config(path), path)
    except FileNotFoundError:
        raise LagError('instance %s: %s does not exist: is %s the instance\'s name, and %s its config root?'
                       % (instance, path, instance, config_root)) from None
    except cyrusconf.FileRefused as exc:
        raise LagError('instance %s: %s' % (instance, exc)) from None
    except OSError as exc:
        raise LagError('instance %s: %s cannot be read: %s' % (instance, path, exc.strerror or exc)) from None
    found = {key: imapd.get(key) for key in ('sync_host', 'sync_port', 'sync_authname', 'sync_password',
                                             'client_bind_name', 'tls_server_ca_file', 'servername')}
    missing = [key for key in ('sync_host', 'sync_authname', 'sync_password', 'client_bind_name',
                               'tls_server_ca_file') if not found[key]]
    if missing:
        raise LagError('instance %s is no replicating master with an address of its own: %s sets no %s'
                       % (instance, path, ', '.join(missing)))
    try:
        port = int(found['sync_port'] or SYNC_PORT)
    except ValueError:
        raise LagError('instance %s: %s: sync_port %r is not a port number' % (instance, path, found['sync_port'])) from None
    return {
        'instance': instance, 'imapd_conf': path, 'mailbox': marker_mailbox(instance),
        'peer': found['sync_host'], 'peer_port': port, 'authname': found['sync_authname'],
        'password': found['sync_password'], 'address': found['client_bind_name'], 'ca_path': found['tls_server_ca_file'],
    }


# ---------------------------------------------------------------------------------------------
# the replica, over the replication protocol (read only)
# ---------------------------------------------------------------------------------------------

def parse_mailbox(line: bytes) -> dict:
    """The fields of one ``* MAILBOX %(...)`` answer of GET MAILBOXES that a measurement uses."""
    text = line.decode('utf-8', 'replace')
    fields = {key: value.strip('"') for key, value in _ATOM.findall(text)}
    for key in ('LAST_UID', 'HIGHESTMODSEQ', 'UIDVALIDITY'):
        if key in fields:
            fields[key] = int(fields[key]) if fields[key].isdigit() else None
    return fields


class SyncPeer:
    """A read-only session with a replica's sync_server."""

    def __init__(self, host: str, port: int, user: str, password: str, ca_path: str, timeout: float = 10.0):
        self.host, self.port, self.user, self.password = host, port, user, password
        self.ca_path, self.timeout = ca_path, timeout
        self.sock = None
        self.file = None

    def where(self) -> str:
        return 'the replica %s:%d (sync_server)' % (self.host, self.port)

    def _lines(self) -> list:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise LagError('%s closed the connection' % self.where())
            lines.append(line.rstrip(b'\r\n'))
            if not line.startswith(b'* ') or line.startswith(b'* OK '):
                return lines

    def _command(self, text: bytes, what: str) -> list:
        self.file.write(text + b'\r\n')
        self.file.flush()
        lines = self._lines()
        if not lines[-1].startswith(b'OK'):
            raise LagError('%s refused %s: %s' % (self.where(), what, lines[-1].decode('utf-8', 'replace')[:200]))
        return lines[:-1]

    def connect(self) -> None:
        try:
            context = tls.create_default_context(cafile=self.ca_path)
        except (OSError, tls.SSLError) as exc:
            raise LagError('%s cannot be used as a CA file: %s' % (self.ca_path, getattr(exc, 'strerror', None) or exc)) from None
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.file = self.sock.makefile('rwb')
            banner = self._lines()
            if b'* STARTTLS' not in banner:
                raise LagError('%s offers no STARTTLS: the replication password is not sent in the clear' % self.where())
            self._command(b'STARTTLS', 'STARTTLS')
            self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
            self.file = self.sock.makefile('rwb')
            self._lines()
            token = base64.b64encode(b'\0' + self.user.encode('utf-8') + b'\0' + self.password.encode('utf-8'))
            self._command(b'AUTHENTICATE PLAIN ' + token, 'the login of %s' % self.user)
        except tls.SSLCertVerificationError as exc:
            self.close()
            raise LagError('%s: its certificate was refused: %s (trusting the CA in %s)'
                           % (self.where(), exc.verify_message or exc, self.ca_path)) from None
        except (OSError, tls.SSLError) as exc:
            self.close()
            raise LagError('%s cannot be reached: %s' % (self.where(), getattr(exc, 'strerror', None) or exc)) from None
        except LagError:
            self.close()
            raise

    def mailbox(self, name: str) -> dict | None:
        """The replica's fields of mailbox ``name``; None when it has no such mailbox."""
        try:
            lines = self._command(b'GET MAILBOXES (' + name.encode('utf-8') + b')', 'GET MAILBOXES')
        except OSError as exc:
            raise LagError('%s: GET MAILBOXES failed: %s' % (self.where(), exc.strerror or exc)) from None
        for line in lines:
            if line.startswith(b'* MAILBOX '):
                fields = parse_mailbox(line)
                if fields.get('MBOXNAME') == name:
                    return fields
        return None

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.write(b'EXIT\r\n')
                self.file.flush()
            except OSError:
                pass
        for thing in (self.file, self.sock):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    pass
        self.file = self.sock = None


# ---------------------------------------------------------------------------------------------
# the marker, on the master (IMAPS)
# ---------------------------------------------------------------------------------------------

MARKER_MESSAGE = (b'From: cyrus-ha <cyrus-ha@invalid>\r\nSubject: replication lag marker\r\n'
                  b'Message-ID: <replication-lag-marker@cyrus-ha.invalid>\r\n\r\n'
                  b'Its \\Flagged flag is toggled to measure how long the replica takes to hold a change.\r\n')


def _said(exc) -> str:
    return getattr(exc, 'msg', None) or '%s: %s' % (type(exc).__name__, exc)


class Marker(Admin):
    """The replication user's IMAP session on the master, with the marker's few commands."""

    def ensure(self, mailbox: str, check_mode: bool) -> bool:
        """The marker mailbox, the replication user's alone: created when missing, and its ACL put right on every
        run (a creation cut short leaves Cyrus's default ``anyone lrs``); True when anything was (or, in check
        mode, would be) changed."""
        if not self.exists(mailbox):
            if check_mode:
                return True
            self.create(mailbox)
            self._ok('SETACL %s' % mailbox, self.conn.setacl(_quote(mailbox), self.user, MARKER_RIGHTS))
            self._ok('DELETEACL %s anyone' % mailbox, self.conn.deleteacl(_quote(mailbox), 'anyone'))
            return True
        changed = False
        if self.acl_of(mailbox, 'anyone'):
            changed = True
            if not check_mode:
                self._ok('DELETEACL %s anyone' % mailbox, self.conn.deleteacl(_quote(mailbox), 'anyone'))
        if self.acl_of(mailbox, self.user) != MARKER_RIGHTS:
            changed = True
            if not check_mode:
                self._ok('SETACL %s' % mailbox, self.conn.setacl(_quote(mailbox), self.user, MARKER_RIGHTS))
        return changed

    def toggle(self, mailbox: str) -> int:
        """Toggle the flag of the marker message (appended when the mailbox is empty); its new MODSEQ."""
        self._ok('ENABLE CONDSTORE', self.conn._simple_command('ENABLE', 'CONDSTORE'))
        if self.select(mailbox, readonly=False) == 0:
            self.append(mailbox, MARKER_MESSAGE)
            self.select(mailbox, readonly=False)
        data = self._ok('FETCH FLAGS in %s' % mailbox, self.conn.uid('FETCH', '1:*', '(FLAGS)'))
        flagged = any(b'\\Flagged' in (item if isinstance(item, bytes) else b'') for item in data)
        change = '-FLAGS' if flagged else '+FLAGS'
        self.conn.untagged_responses.pop('FETCH', None)
        data = self._ok('STORE in %s' % mailbox, self.conn.uid('STORE', '1:*', change, '(\\Flagged)'))
        modseqs = [int(m) for item in data if isinstance(item, bytes) for m in _FETCH_MODSEQ.findall(item)]
        if not modseqs:
            raise CheckError('STORE in %s as %s: the answer carries no MODSEQ (%r)' % (mailbox, self.where(), data[:3]))
        return max(modseqs)


# What an IMAP session may raise besides CheckError: the socket, the TLS layer, imaplib's own errors.
_SESSION_ERRORS = (CheckError, OSError, EOFError, imaplib.IMAP4.error)


def measure(instance: str, timeout: float, config_root: str = CONFIG_ROOT, check_mode: bool = False,
            clock=time.monotonic, wall=time.time, sleep=time.sleep, peer_class=SyncPeer, marker_class=Marker,
            conf: dict | None = None) -> dict:
    """Write the marker on the master and time it until the replica holds it (see the module's RETURN).
    ``conf``: settings() already read (the module reads them first, to keep the password out of its output)."""
    conf = conf or settings(instance, config_root)
    result = {'instance': instance, 'mailbox': conf['mailbox'], 'peer': '%s:%d' % (conf['peer'], conf['peer_port']),
              'created': False, 'measured': False, 'modseq': None, 'marked_at': None, 'seen_at': None,
              'seconds': None, 'caught_up': False, 'timeout': timeout, 'polls': 0}
    peer = peer_class(conf['peer'], conf['peer_port'], conf['authname'], conf['password'], conf['ca_path'])
    marker = marker_class(conf['address'], IMAPS_PORT, conf['authname'], conf['password'], ssl=True,
                          ca_path=conf['ca_path'])
    try:
        try:
            marker.connect()
            result['created'] = marker.ensure(conf['mailbox'], check_mode)
        except _SESSION_ERRORS as exc:
            raise LagError('instance %s: the marker on the master: %s' % (instance, _said(exc))) from None
        if check_mode:
            return result
        peer.connect()
        try:
            modseq = marker.toggle(conf['mailbox'])
        except _SESSION_ERRORS as exc:
            raise LagError('instance %s: the marker on the master: %s' % (instance, _said(exc))) from None
        acknowledged, result['marked_at'] = clock(), round(wall(), 3)
        result['modseq'] = modseq
        deadline = acknowledged + timeout
        while True:
            result['polls'] += 1
            held = peer.mailbox(conf['mailbox'])
            now = clock()
            if held is not None and (held.get('HIGHESTMODSEQ') or 0) >= modseq:
                result.update(measured=True, caught_up=True, seconds=round(now - acknowledged, 3),
                              seen_at=round(result['marked_at'] + (now - acknowledged), 3))
                return result
            if now >= deadline:
                result.update(measured=True, seconds=round(now - acknowledged, 3))
                return result
            sleep(POLL)
    finally:
        marker.close()
        peer.close()
