# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mail traffic through a Murder's frontends, journalled as clients see it.

A steady mix of operations at a fixed rate (seeded, so a run can be repeated):

- ``deliver``: an LMTP delivery of a unique message to one recipient, kept queued and retried as an MTA
  does on a temporary refusal (4xx, or no answer), counted against the site on a permanent one (5xx) or
  when it stays queued longer than ``queue_for``;
- ``append``: an IMAP session that logs in and APPENDs a unique message to the user's INBOX (the
  APPENDUID answer recorded);
- ``fetch``: an IMAP session that logs in, SELECTs the INBOX and FETCHes one message; a message this run
  stored is compared byte for byte with what was acknowledged;
- ``store``: an IMAP session that sets \\Flagged on a message this run appended (by UID);
- ``idle``: long-lived sessions that log in once and send NOOP every ``idle_interval`` s, reconnecting
  when the server drops them (each reconnection is an operation);
- ``login``: with ``probe_interval``, a prober per user of ``probe_users``: a new IMAP session that logs in,
  SELECTs the INBOX and logs out every ``probe_interval`` s, beside a delivery to that user at the same
  cadence (a ``deliver`` operation like the others, queued and retried): what a user trying again and again
  sees, to a tenth of a second, outside the rate and the mix.

Every attempt is one line of a JSON journal, written line by line and flushed at once, so it survives
the generator being killed: ``t`` (start, seconds since the epoch), ``end``, ``op``, ``user``,
``outcome`` (``ok``; ``deferred``: a delivery refused for now, kept queued; ``failed``: refused for good;
``unknown``: the connection broke after the command was sent, so the server may or may not have done
it), ``error`` (what the client saw) and ``kind`` (the class of that error: ``connect``, ``tls``,
``login``, ``select``, ``refused``, ``timeout``, ``broken``, ``corrupt``). A delivery and an APPEND
carry ``message_id`` and ``sha256`` of the message; an acknowledged APPEND carries ``uidvalidity`` and
``uid``; a delivery still queued when the generator stops is journalled once more as ``queued``.

summarize() reads a journal back: counts per operation and outcome, errors by kind, the outage as users
saw it (per operation kind, from the first failed operation to the end of the first one that succeeded
after it; and the gaps, the times a user went half a second or more between two successes), deliveries
deferred and later accepted. Python 3.9+, standard library only: it runs on any
host that reaches the frontends (the drill role installs it with ``cyrus_ha_traffic.py``).
"""

from __future__ import annotations

import imaplib
import json
import os
import random
import re
import socket
import ssl as tls
import threading
import time

try:
    from ansible_collections.cyrus.ha.plugins.module_utils.imapcheck import (
        CheckError, Imap, check_number, check_port, check_text, lmtp_deliver, sha256, stored_digests, tls_context)
except ImportError:   # a standalone script's copy, beside imapcheck.py in the support directory
    from imapcheck import (CheckError, Imap, check_number, check_port, check_text, lmtp_deliver, sha256, stored_digests,
                           tls_context)

KINDS = ('deliver', 'append', 'fetch', 'store', 'idle', 'login')
# The profile's keys and their defaults (rate: operations per second of all kinds together, idle
# sessions apart; mix: the weight of each kind).
DEFAULTS = {
    'imap_port': 993, 'lmtp_port': 24, 'ca_path': None, 'lmtp_host': None,
    'rate': 20.0, 'mix': {'deliver': 5, 'append': 2, 'fetch': 2, 'store': 1},
    'idle_sessions': 2, 'idle_interval': 1.0, 'timeout': 10.0, 'workers': 16,
    'queue_for': 600.0, 'queue_interval': 0.5, 'size': 1024, 'seed': 0, 'duration': 0.0,
    'drain': 60.0, 'sender': 'traffic@cyrus-ha.invalid', 'probe_interval': 0.0, 'probe_users': None,
}
MAX_RATE = 1000.0
# Probes of one user and kind under way at once: enough for a stall of 1.6 s at 0.1 s, few enough that a prober
# never holds a frontend's LMTP service (maxchild=20 in the murder role's cyrus.conf) by itself during a longer one.
MAX_PROBES = 16
_APPENDUID = re.compile(rb'\[APPENDUID (\d+) (\d+)\]', re.I)
_FETCH_UID = re.compile(rb'UID (\d+)')
_MESSAGE_ID = re.compile(rb'^Message-ID:[ \t]*(<[^>\r\n]+>)', re.I | re.M)


class ProfileError(ValueError):
    """The traffic profile cannot be used; the message names the key and the cause."""


def load_profile(data: dict) -> dict:
    """The profile with its defaults, every value checked; ProfileError naming the first bad key."""
    if not isinstance(data, dict):
        raise ProfileError(f'the traffic profile must be a mapping, not {type(data).__name__}')
    unknown = sorted(set(data) - set(DEFAULTS) - {'imap_host', 'users', 'recipients', 'tag'})
    if unknown:
        raise ProfileError(f'unknown key(s) in the traffic profile: {", ".join(unknown)}')
    p = dict(DEFAULTS, **data)
    try:
        check_text('imap_host', p.get('imap_host'))
        if p['lmtp_host'] is not None:
            check_text('lmtp_host', p['lmtp_host'])
        check_port('imap_port', p['imap_port'])
        check_port('lmtp_port', p['lmtp_port'])
        if p['ca_path'] is not None:
            check_text('ca_path', p['ca_path'])
            tls_context(True, p['ca_path'])
        check_number('rate', p['rate'], 0, MAX_RATE, low_open=True)
        check_number('idle_interval', p['idle_interval'], 0.05, 3600)
        check_number('timeout', p['timeout'], 0, 3600, low_open=True)
        check_number('queue_for', p['queue_for'], 0, 86400)
        check_number('queue_interval', p['queue_interval'], 0.05, 3600)
        check_number('duration', p['duration'], 0, 30 * 86400)
        check_number('drain', p['drain'], 0, 86400)
        check_number('probe_interval', p['probe_interval'], 0, 3600)
        if 0 < p['probe_interval'] < 0.05:
            raise CheckError(f'probe_interval must be 0 (no prober) or from 0.05 to 3600 s, not {p["probe_interval"]!r}')
        check_text('tag', p.get('tag'))
        check_text('sender', p['sender'])
    except CheckError as exc:
        raise ProfileError(f'traffic profile: {exc.msg}') from None
    for key, low, high in (('idle_sessions', 0, 1000), ('workers', 1, 1000), ('seed', 0, 2 ** 63),
                           ('size', 64, 10 * 1024 * 1024)):
        if isinstance(p[key], bool) or not isinstance(p[key], int) or not low <= p[key] <= high:
            raise ProfileError(f'traffic profile: {key} must be a whole number from {low} to {high}, not {p[key]!r}')
    if not re.fullmatch(r'[A-Za-z0-9._-]{1,64}', p['tag']):
        raise ProfileError(f'traffic profile: tag must be 1 to 64 letters, digits, dots, dashes or underscores, '
                           f'not {p["tag"]!r}')
    mix = p['mix']
    if not isinstance(mix, dict) or not mix or set(mix) - set(KINDS[:4]) or any(
            isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 1000 for w in mix.values()) \
            or not sum(mix.values()) > 0:
        raise ProfileError(f'traffic profile: mix must map some of {", ".join(KINDS[:4])} to weights from 0 to 1000, '
                           f'not all 0, not {mix!r}')
    users = p.get('users')
    if not isinstance(users, list) or not users:
        raise ProfileError('traffic profile: users must be a non-empty list of {name, password}')
    for index, user in enumerate(users):
        if not isinstance(user, dict) or set(user) != {'name', 'password'}:
            raise ProfileError(f'traffic profile: users[{index}] must be a mapping of name and password')
        try:
            check_text(f'users[{index}].name', user['name'])
            check_text(f'users[{index}].password', user['password'])
        except CheckError as exc:
            raise ProfileError(f'traffic profile: {exc.msg}') from None
    recipients = p.get('recipients')
    if recipients is None:
        p['recipients'] = [u['name'] for u in users]
    elif not isinstance(recipients, list) or not recipients or not all(
            isinstance(r, str) and re.fullmatch(r'[\x21-\x7e]{1,254}', r) for r in recipients):
        raise ProfileError('traffic profile: recipients must be a non-empty list of addresses (printable ASCII, '
                           'no spaces)')
    elif set(recipients) - {u['name'] for u in users}:
        raise ProfileError(f'traffic profile: recipients {", ".join(sorted(set(recipients) - {u["name"] for u in users}))} '
                           'are not among the users: every mailbox delivered to is read back with its user\'s password')
    probe_users = p.get('probe_users')
    if probe_users is None:
        p['probe_users'] = [u['name'] for u in users]
    elif not isinstance(probe_users, list) or not all(isinstance(u, str) for u in probe_users) \
            or set(probe_users) - {u['name'] for u in users}:
        raise ProfileError(f'traffic profile: probe_users must be a list of some of the users\' names, not {probe_users!r}')
    if p['lmtp_host'] is None:
        p['lmtp_host'] = p['imap_host']
    return p


def make_message(tag: str, serial: int, kind: str, to: str, size: int, rng: random.Random,
                 run_id: str = '0') -> tuple[str, bytes]:
    """A unique RFC 5322 message (CRLF line ends, as IMAP stores it) and its Message-ID. run_id sets apart
    two runs with the same tag and seed (a drill run again under its name)."""
    message_id = f'<cyrus-ha-traffic-{tag}-{run_id}-{kind}-{serial}-{rng.getrandbits(48):012x}@cyrus-ha.invalid>'
    head = ['From: cyrus.ha traffic <traffic@cyrus-ha.invalid>', f'To: {to}',
            f'Subject: cyrus.ha traffic {tag} {kind} #{serial}', f'Message-ID: {message_id}',
            f'X-Cyrus-HA-Traffic: {tag} {kind} {serial}',
            f'Date: {time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())}',
            'MIME-Version: 1.0', 'Content-Type: text/plain; charset=us-ascii', '']
    body = rng.randbytes(max(8, size // 2)).hex()
    lines = head + [body[i:i + 76] for i in range(0, len(body), 76)]
    return message_id, ('\r\n'.join(lines) + '\r\n').encode('ascii')


def message_id_of(message: bytes) -> str | None:
    """The Message-ID of a stored message (its header block only)."""
    head = message.split(b'\r\n\r\n', 1)[0]
    found = _MESSAGE_ID.search(head)
    return found.group(1).decode('ascii', 'replace') if found else None


def error_kind(exc: BaseException, step: str) -> str:
    """The class of what a client saw, for the journal and the report."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return 'timeout'
    if isinstance(exc, tls.SSLCertVerificationError):
        return 'tls'
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)) or step == 'connect':
        return 'connect'
    if isinstance(exc, tls.SSLError):
        return 'tls'
    if isinstance(exc, (EOFError, imaplib.IMAP4.abort, ConnectionError, BrokenPipeError)):
        return 'broken'
    return step


class Journal:
    """The run's journal: one JSON object per line, written and flushed as it happens (append mode, so a
    killed generator leaves every line it finished, and a restarted one adds to them)."""

    def __init__(self, path: str):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o640)
        self.file = os.fdopen(fd, 'a', buffering=1, encoding='utf-8')
        self.lock = threading.Lock()

    def write(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True, separators=(',', ':'))
        with self.lock:
            self.file.write(line + '\n')

    def close(self) -> None:
        """Flush; the file stays open, so an operation that outlives the stop still lands its line
        (its process's exit closes it)."""
        with self.lock:
            self.file.flush()


def read_journal(path: str) -> list[dict]:
    """Every complete line of a journal (a line cut short by a kill is skipped)."""
    records = []
    with open(path, encoding='utf-8', errors='replace') as handle:
        for line in handle:
            if not line.endswith('\n'):
                break
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


class Traffic:
    """One run of the generator: the scheduler, the workers, the delivery queue and the idle sessions."""

    def __init__(self, profile: dict, journal: Journal, clock=time.time):
        self.p = profile
        self.journal = journal
        self.clock = clock
        self.rng = random.Random(profile['seed'])
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.serial = 0
        self.queue: list[dict] = []                 # deliveries refused for now: {message, due, first}
        self.appended: dict[str, list] = {}          # user -> [(uidvalidity, uid, message_id)] acknowledged
        self.acknowledged: dict[str, tuple] = {}     # message_id -> (sha256, size) of what was acknowledged
        self.in_flight = threading.Semaphore(profile['workers'])
        self.busy = 0                                # operations under way
        self.probing: dict[tuple, int] = {}          # (user, kind) -> probes under way
        self.threads: list[threading.Thread] = []
        kinds = [k for k in KINDS[:4] if profile['mix'].get(k, 0) > 0]
        self.kinds = kinds
        self.weights = [profile['mix'][k] for k in kinds]
        self.passwords = {u['name']: u['password'] for u in profile['users']}
        self.run_id = os.urandom(4).hex()

    # -- the journal -----------------------------------------------------------------------------
    def record(self, op: str, user: str, started: float, outcome: str, **extra) -> None:
        entry = {'t': round(started, 3), 'end': round(self.clock(), 3), 'op': op, 'user': user, 'outcome': outcome}
        entry.update({k: v for k, v in extra.items() if v is not None})
        self.journal.write(entry)

    # -- the operations ----------------------------------------------------------------------------
    def session(self, user: str) -> Imap:
        return Imap(self.p['imap_host'], self.p['imap_port'], user, self.passwords[user], ssl=True,
                    timeout=self.p['timeout'], ca_path=self.p['ca_path'])

    def deliver(self, item: dict | None = None, to: str | None = None) -> None:
        if item is None:
            with self.lock:
                to = to or self.rng.choice(self.p['recipients'])
                serial = self.serial = self.serial + 1
                message_id, message = make_message(self.p['tag'], serial, 'deliver', to, self.p['size'], self.rng,
                                                   self.run_id)
            item = {'to': to, 'message_id': message_id, 'message': message, 'first': None, 'attempts': 0}
        started = self.clock()
        item['attempts'] += 1
        digest = sha256(item['message'])
        common = {'message_id': item['message_id'], 'sha256': digest, 'size': len(item['message']),
                  'attempt': item['attempts']}
        try:
            lmtp_deliver(self.p['lmtp_host'], self.p['lmtp_port'], self.p['sender'], [item['to']], item['message'],
                         timeout=self.p['timeout'], lhlo='cyrus-ha-traffic')
        except CheckError as exc:
            kind = 'refused' if exc.details.get('code') else 'connect'
            if exc.details.get('temporary'):
                first = item['first'] if item['first'] is not None else started
                if self.clock() - first + self.p['queue_interval'] > self.p['queue_for']:
                    self.record('deliver', item['to'], started, 'failed', error=f'{exc.msg} (queued too long)',
                                kind='expired', code=exc.details.get('code'), **common)
                    return
                item['first'] = first
                item['due'] = self.clock() + self.p['queue_interval']
                self.record('deliver', item['to'], started, 'deferred', error=exc.msg, kind=kind,
                            code=exc.details.get('code'), **common)
                with self.lock:
                    self.queue.append(item)
                return
            self.record('deliver', item['to'], started, 'failed', error=exc.msg, kind='refused',
                        code=exc.details.get('code'), **common)
            return
        queued = round(started - item['first'], 3) if item['first'] is not None else 0.0
        with self.lock:
            self.acknowledged[item['message_id']] = (digest, len(item['message']))
        self.record('deliver', item['to'], started, 'ok', queued=queued, **common)

    def append(self) -> None:
        with self.lock:
            user = self.rng.choice(sorted(self.passwords))
            serial = self.serial = self.serial + 1
            message_id, message = make_message(self.p['tag'], serial, 'append', user, self.p['size'], self.rng,
                                               self.run_id)
        digest = sha256(message)
        started = self.clock()
        session = self.session(user)
        step = 'connect'
        try:
            session._login_once()
            step = 'append'
            status, data = session.conn.append('INBOX', None, None, message)
        except CheckError as exc:
            session.close()
            self.record('append', user, started, 'failed', error=exc.msg, kind='login', message_id=message_id,
                        sha256=digest, size=len(message))
            return
        except (OSError, imaplib.IMAP4.error, EOFError) as exc:
            session.close()
            refused = isinstance(exc, imaplib.IMAP4.error) and not isinstance(exc, imaplib.IMAP4.abort)
            sent = step == 'append' and not refused      # the answer was lost: stored or not, nobody knows
            kind = 'login' if step == 'connect' and refused else error_kind(exc, step)
            self.record('append', user, started, 'unknown' if sent else 'failed', error=str(exc) or type(exc).__name__,
                        kind=kind, message_id=message_id, sha256=digest, size=len(message))
            return
        session.close()
        if status != 'OK':
            self.record('append', user, started, 'failed', error=f'{status} {data!r}', kind='refused',
                        message_id=message_id, sha256=digest, size=len(message))
            return
        found = _APPENDUID.search(b' '.join(d for d in data if isinstance(d, bytes)))
        uidvalidity, uid = (int(found.group(1)), int(found.group(2))) if found else (None, None)
        with self.lock:
            self.acknowledged[message_id] = (digest, len(message))
            if uid is not None:
                self.appended.setdefault(user, []).append((uidvalidity, uid, message_id))
        self.record('append', user, started, 'ok', message_id=message_id, sha256=digest, size=len(message),
                    uidvalidity=uidvalidity, uid=uid)

    def _imap_op(self, op: str, user: str, action) -> None:
        started = self.clock()
        session = self.session(user)
        step = 'connect'
        try:
            session._login_once()
            step = 'select'
            status, data = session.conn.select('INBOX', readonly=(op == 'fetch'))
            if status != 'OK':
                raise CheckError(f'SELECT INBOX: {status} {data!r}')
            step = op
            extra = action(session, int(data[0]) if data and data[0] else 0)
        except CheckError as exc:
            session.close()
            self.record(op, user, started, 'failed', error=exc.msg, kind=step if step != 'connect' else 'login')
            return
        except (OSError, imaplib.IMAP4.error, EOFError) as exc:
            session.close()
            refused = isinstance(exc, imaplib.IMAP4.error) and not isinstance(exc, imaplib.IMAP4.abort)
            kind = 'login' if step == 'connect' and refused else error_kind(exc, step)
            self.record(op, user, started, 'failed', error=str(exc) or type(exc).__name__, kind=kind)
            return
        session.close()
        outcome = extra.pop('outcome', 'ok')
        self.record(op, user, started, outcome, **extra)

    def fetch(self) -> None:
        with self.lock:
            user = self.rng.choice(sorted(self.passwords))
            pick = self.rng.random()

        def action(session: Imap, exists: int) -> dict:
            if not exists:
                return {'messages': 0}
            number = 1 + int(pick * exists)
            status, data = session.conn.fetch(str(number), '(UID BODY.PEEK[])')
            if status != 'OK':
                raise CheckError(f'FETCH {number}: {status} {data!r}')
            body = next((d[1] for d in data if isinstance(d, tuple) and len(d) == 2), None)
            if body is None:
                return {'messages': exists, 'seq': number}
            message_id = message_id_of(body)
            with self.lock:
                expected = self.acknowledged.get(message_id) if message_id else None
            if expected is not None and expected[0] not in stored_digests(body, expected[1]):
                return {'outcome': 'failed', 'kind': 'corrupt', 'message_id': message_id,
                        'error': f'{message_id} read back differs from what was acknowledged'}
            return {'messages': exists, 'seq': number, 'message_id': message_id if expected else None}
        self._imap_op('fetch', user, action)

    def store(self) -> None:
        with self.lock:
            candidates = sorted(u for u in self.appended if self.appended[u])
            if not candidates:
                user, target = self.rng.choice(sorted(self.passwords)), None
            else:
                user = self.rng.choice(candidates)
                target = self.rng.choice(self.appended[user])

        def action(session: Imap, exists: int) -> dict:
            if target is None:
                status, data = session.conn.noop()
                return {'target': None}
            uidvalidity, uid, message_id = target
            status, data = session.conn.uid('STORE', str(uid), '+FLAGS.SILENT', r'(\Flagged)')
            if status != 'OK':
                raise CheckError(f'UID STORE {uid}: {status} {data!r}')
            return {'uidvalidity': uidvalidity, 'uid': uid, 'message_id': message_id, 'flag': '\\Flagged'}
        self._imap_op('store', user, action)

    def login(self, user: str) -> None:
        """A new session: LOGIN, SELECT INBOX, LOGOUT (the prober's IMAP operation)."""
        self._imap_op('login', user, lambda session, exists: {'messages': exists})

    def prober(self, user: str, kind: str) -> None:
        """One user's prober of one kind (login or deliver): a new operation every probe_interval s, started
        whether the one before has ended or not (as a user trying again would), at most MAX_PROBES under way:
        a probe stalled behind an unreachable backend does not hold back the one that finds the service back."""
        interval = self.p['probe_interval']
        due = time.monotonic()
        while not self.stopping.is_set():
            with self.lock:
                free = self.probing.get((user, kind), 0) < MAX_PROBES
                if free:
                    self.probing[(user, kind)] = self.probing.get((user, kind), 0) + 1
                    self.busy += 1
            if free:
                threading.Thread(target=self._probe, args=(user, kind), daemon=True).start()
            due = max(due + interval, time.monotonic() - interval)
            self.stopping.wait(max(0.0, due - time.monotonic()))

    def _probe(self, user: str, kind: str) -> None:
        try:
            if kind == 'login':
                self.login(user)
            else:
                self.deliver(to=user)
        except Exception as exc:  # noqa: BLE001 -- a bug in one probe must not end the prober unjournalled
            self.record(kind, user, self.clock(), 'failed', error=f'{type(exc).__name__}: {exc}', kind='internal')
        finally:
            with self.lock:
                self.probing[(user, kind)] -= 1
                self.busy -= 1

    def idle_session(self, index: int) -> None:
        """A client that stays logged in: NOOP every idle_interval s; on a drop, reconnects (journalled)."""
        users = sorted(self.passwords)
        user = users[index % len(users)]
        while not self.stopping.is_set():
            started = self.clock()
            session = self.session(user)
            step = 'login'
            try:
                session._login_once()
                step = 'select'
                status, data = session.conn.select('INBOX', readonly=True)
                if status != 'OK':
                    raise CheckError(f'SELECT INBOX: {status} {data!r}')
            except (CheckError, OSError, imaplib.IMAP4.error, EOFError) as exc:
                session.close()
                self.record('idle', user, started, 'failed', error=getattr(exc, 'msg', None) or str(exc)
                            or type(exc).__name__, kind=error_kind(exc, step), session=index)
                self.stopping.wait(self.p['idle_interval'])
                continue
            self.record('idle', user, started, 'ok', session=index, step='login')
            try:
                while not self.stopping.wait(self.p['idle_interval']):
                    started = self.clock()
                    status, data = session.conn.noop()
                    if status != 'OK':
                        raise CheckError(f'NOOP: {status} {data!r}')
            except (CheckError, OSError, imaplib.IMAP4.error, EOFError) as exc:
                self.record('idle', user, started, 'failed', error=getattr(exc, 'msg', None) or str(exc)
                            or type(exc).__name__, kind=error_kind(exc, 'noop'), session=index)
            finally:
                session.close()

    # -- the run -----------------------------------------------------------------------------------
    def _run_op(self, kind: str, item: dict | None = None) -> None:
        try:
            if kind == 'deliver':
                self.deliver(item)
            else:
                getattr(self, kind)()
        except Exception as exc:  # noqa: BLE001 -- a bug in one operation must not end the run unjournalled
            self.record(kind, '-', self.clock(), 'failed', error=f'{type(exc).__name__}: {exc}', kind='internal')
        finally:
            with self.lock:
                self.busy -= 1
            self.in_flight.release()

    def _spawn(self, kind: str, item: dict | None = None) -> None:
        self.in_flight.acquire()
        with self.lock:
            self.busy += 1
        thread = threading.Thread(target=self._run_op, args=(kind, item), daemon=True)
        thread.start()

    def run(self, should_stop=lambda: False) -> dict:
        p = self.p
        started = self.clock()
        self.journal.write({'t': round(started, 3), 'op': 'run', 'outcome': 'started', 'tag': p['tag'], 'run': self.run_id,
                            'rate': p['rate'], 'mix': p['mix'], 'seed': p['seed'], 'pid': os.getpid(),
                            'imap_host': p['imap_host'], 'lmtp_host': p['lmtp_host']})
        for index in range(p['idle_sessions']):
            thread = threading.Thread(target=self.idle_session, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)
        if p['probe_interval']:
            for user in p['probe_users']:
                for kind in ('login', 'deliver'):
                    thread = threading.Thread(target=self.prober, args=(user, kind), daemon=True)
                    thread.start()
                    self.threads.append(thread)
        interval = 1.0 / p['rate']
        due = time.monotonic()
        end = due + p['duration'] if p['duration'] else None
        lag = 0.0
        while not should_stop() and (end is None or time.monotonic() < end):
            now = time.monotonic()
            if now < due:
                time.sleep(min(due - now, 0.2))
                continue
            lag = max(lag, now - due)
            due += interval
            with self.lock:
                ready = [i for i in self.queue if i['due'] <= self.clock()]
                for item in ready:
                    self.queue.remove(item)
                kind = self.rng.choices(self.kinds, self.weights)[0]
            for item in ready:
                self._spawn('deliver', item)
            self._spawn(kind)
        return self.drain(started, lag)

    def drain(self, started: float, lag: float) -> dict:
        """No new operation: the operations under way finish, and the queued deliveries are retried for
        up to `drain` s (an MTA that stays up); what is still queued then is journalled as queued."""
        self.stopping.set()
        deadline = time.monotonic() + self.p['drain']
        while time.monotonic() < deadline:
            with self.lock:
                ready = [i for i in self.queue if i['due'] <= self.clock()]
                for item in ready:
                    self.queue.remove(item)
                waiting = bool(self.queue)
                busy = self.busy
            for item in ready:
                self._spawn('deliver', item)
            if not ready and not waiting and not busy:
                break
            time.sleep(0.1)
        # an operation is at most a few timeouts (connect, TLS, login, command): wait for every one under way
        settle = time.monotonic() + 4 * self.p['timeout']
        while time.monotonic() < settle:
            with self.lock:
                if not self.busy:
                    break
            time.sleep(0.05)
        with self.lock:
            left = list(self.queue)
        for item in left:
            self.record('deliver', item['to'], self.clock(), 'queued', message_id=item['message_id'],
                        sha256=sha256(item['message']), size=len(item['message']), attempt=item['attempts'],
                        error='still queued when the traffic stopped', kind='queued')
        for thread in self.threads:
            thread.join(self.p['timeout'] + self.p['idle_interval'] + 1)
        self.journal.write({'t': round(self.clock(), 3), 'op': 'run', 'outcome': 'stopped',
                            'seconds': round(self.clock() - started, 3), 'max_lag': round(lag, 3),
                            'still_queued': len(left)})
        return {'still_queued': len(left), 'max_lag': round(lag, 3)}


# -- reading a journal back ------------------------------------------------------------------------

def _windows(ops: list[dict]) -> list[list[float]]:
    """Outage windows of one user's operations of one kind: from the start of the first failed operation
    after a success (or the run's start) to the end of the first operation that succeeded after it; a
    window still open at the end of the journal ends with the last operation."""
    windows, opened = [], None
    for op in sorted(ops, key=lambda o: o['t']):
        if op['outcome'] == 'ok':
            if opened is not None and op['t'] >= opened:
                windows.append([opened, op['end']])
                opened = None
        elif op['outcome'] in ('failed', 'deferred', 'unknown') and opened is None:
            opened = op['t']
    if opened is not None and ops:
        windows.append([opened, max(o['end'] for o in ops)])
    return windows


GAP_MIN = 0.5     # a time between two successes kept in the summary's gaps from this long


def _gaps(ops: list[dict]) -> list[list[float]]:
    """The times one user went without a success of one kind: from the end of one successful operation to the end
    of the next (GAP_MIN s or longer). With a prober (an operation every 0.1 s) the longest is the outage as that
    user saw it, from the last success before the failure to the first success after, whether the operations
    in between failed or only hung; with a sparse mix it is bounded below by the rate as well."""
    ends = sorted(o['end'] for o in ops if o['outcome'] == 'ok')
    failed = [o for o in ops if o['outcome'] in ('failed', 'deferred', 'unknown')]
    if failed and (not ends or min(o['t'] for o in failed) < ends[0]):     # failing from the start
        ends.insert(0, min(o['t'] for o in failed))
    after = [o['end'] for o in failed if o['t'] > ends[-1]]
    if after:                                                              # still failing at the end
        ends.append(max(after))
    return [[a, b] for a, b in zip(ends, ends[1:]) if b - a >= GAP_MIN]


def outage(ops: list[dict]) -> dict:
    """The outage as each user saw it (users apart: a user served by another backend does not end the
    outage of one whose backend is away): every window, the longest, and the longest per user; and the times
    a user went without a success (gaps, longest_gap)."""
    by_user: dict[str, list] = {}
    for op in ops:
        by_user.setdefault(str(op.get('user')), []).append(op)
    windows, longest, gaps, longest_gap = [], {}, [], {}
    for user, mine in sorted(by_user.items()):
        found = _windows(mine)
        windows += [[round(a, 3), round(b, 3), user] for a, b in found]
        longest[user] = round(max((b - a for a, b in found), default=0.0), 3)
        spans = _gaps(mine)
        gaps += [[round(a, 3), round(b, 3), user] for a, b in spans]
        longest_gap[user] = round(max((b - a for a, b in spans), default=0.0), 3)
    return {'windows': sorted(windows), 'longest': max(longest.values(), default=0.0), 'by_user': longest,
            'gaps': sorted(gaps), 'longest_gap': max(longest_gap.values(), default=0.0)}


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summarize(records: list[dict]) -> dict:
    """What users saw, from a journal: counts per kind and outcome, errors by kind, the outage per kind
    (windows with their length; the longest), deliveries deferred and later accepted, and the run's
    start, end and rate of operations per second."""
    ops = [r for r in records if r.get('op') in KINDS and isinstance(r.get('t'), (int, float))
           and isinstance(r.get('end'), (int, float))]
    runs = [r for r in records if r.get('op') == 'run']
    start = min((r['t'] for r in runs if r.get('outcome') == 'started'), default=min((o['t'] for o in ops), default=None))
    stop = max((r['t'] for r in runs if r.get('outcome') == 'stopped'), default=max((o['end'] for o in ops), default=None))
    out = {'started': start, 'stopped': stop, 'operations': len(ops),
           'seconds': round(stop - start, 3) if start is not None and stop is not None else 0.0,
           'complete': any(r.get('outcome') == 'stopped' for r in runs), 'kinds': {}, 'outages': {}}
    out['rate'] = round(len(ops) / out['seconds'], 2) if out['seconds'] else 0.0
    for kind in KINDS:
        mine = [o for o in ops if o['op'] == kind and o['outcome'] != 'queued']
        if not mine:
            continue
        outcomes: dict[str, int] = {}
        errors: dict[str, int] = {}
        for op in mine:
            outcomes[op['outcome']] = outcomes.get(op['outcome'], 0) + 1
            if op['outcome'] != 'ok':
                errors[str(op.get('kind') or '?')] = errors.get(str(op.get('kind') or '?'), 0) + 1
        latencies = [o['end'] - o['t'] for o in mine if o['outcome'] == 'ok']
        out['kinds'][kind] = {'total': len(mine), 'outcomes': outcomes, 'errors': errors,
                              'p50_ms': _ms(_percentile(latencies, 0.5)), 'p95_ms': _ms(_percentile(latencies, 0.95))}
        out['outages'][kind] = outage(mine)
    out['outages']['any'] = outage([o for o in ops if o['outcome'] != 'queued'])
    deliveries = [o for o in ops if o['op'] == 'deliver']
    accepted = [o for o in deliveries if o['outcome'] == 'ok']
    deferred_then = [o for o in accepted if o.get('attempt', 1) > 1]
    # what became of each message: its last attempt (a run killed or stopped mid-retry leaves a deferred one)
    last: dict = {}
    for o in sorted(deliveries, key=lambda o: (o['t'], o.get('attempt', 1))):
        last[o.get('message_id')] = o['outcome']
    out['deliveries'] = {
        'accepted': len(accepted),
        'deferred_then_accepted': len(deferred_then),
        'max_queued': round(max((o.get('queued', 0.0) for o in accepted), default=0.0), 3),
        'failed': sum(1 for outcome in last.values() if outcome == 'failed'),
        'still_queued': sum(1 for outcome in last.values() if outcome not in ('ok', 'failed')),
    }
    out['corrupt_reads'] = sum(1 for o in ops if o.get('kind') == 'corrupt')
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def outage_text(summary: dict) -> str:
    """One line: the longest outage per kind as users saw it."""
    parts = [f'{kind} {o["longest"]:.2f} s' for kind, o in summary.get('outages', {}).items() if kind != 'any']
    return ', '.join(parts) or 'no operation'
