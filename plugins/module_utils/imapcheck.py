# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""IMAP and LMTP evidence for failover drills: canary messages in, canary messages verified.

A canary is a small RFC 5322 message with a unique Message-ID and an X-Cyrus-HA-Canary header. It
goes in by IMAP APPEND or by LMTP delivery; it is found again by searching its Message-ID and
compared byte for byte by SHA-256 of what the server returns. Everything here uses only
imaplib, smtplib and hashlib, so it runs on any managed node's Python.
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import math
import os
import re
import smtplib
import socket
import ssl as tls
import time
import unicodedata

DEFAULT_DOMAIN = 'canary.invalid'
# The connection options of every module that talks IMAP (documented by the cyrus.ha.imap_connection fragment).
CONNECTION_ARGS = dict(port=dict(type='int', default=143), ssl=dict(type='bool', default=False),
                       starttls=dict(type='bool', default=False), timeout=dict(type='float', default=10),
                       validate_certs=dict(type='bool', default=True), ca_path=dict(type='path'))


DEFAULT_SENDER = 'drill@canary.invalid'
MAX_SIZE = 10 * 1024 * 1024
_PRINTABLE = re.compile(r'[\x21-\x7e]{1,998}')
_ADDRESS = re.compile(r'[\x21-\x7e]{1,254}')
# Bounds of the numbers that reach sockets, select() and sleep(): finite, and within what the kernel takes.
MAX_TIMEOUT = 3600.0
MAX_WAIT = 86400.0


class CheckError(Exception):
    """A check could not be done; the message names the server, user and step."""

    def __init__(self, msg: str, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details


def check_number(name: str, value, low: float, high: float, low_open: bool = False) -> float:
    """A finite number within [low, high] (]low, high] when low_open); CheckError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            value > high or value < low or (low_open and value == low):
        raise CheckError(f'{name} must be a finite number {"above" if low_open else "from"} {low:g} '
                         f'{"up " if low_open else ""}to {high:g}, not {value!r}')
    return value


def check_port(name: str, value, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (0 if allow_zero else 1) <= value <= 65535:
        raise CheckError(f'{name} must be a port number from {0 if allow_zero else 1} to 65535, not {value!r}')
    return value


def check_text(name: str, value, allow_empty: bool = False) -> str:
    """Text that goes on one protocol line: no control characters (CR/LF would inject a command), no NUL."""
    if not isinstance(value, str) or (not value and not allow_empty) or \
            any(unicodedata.category(c) in ('Cc', 'Cs') for c in value):
        raise CheckError(f'{name} must be {"" if allow_empty else "non-empty "}text without control characters')
    return value


def tls_context(validate_certs: bool = True, ca_path: str | None = None) -> tls.SSLContext:
    """The client side of TLS: the server's certificate must chain to ca_path (the system's trust store
    without it) and name the host connected to, unless validate_certs is false."""
    if not validate_certs:
        context = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = tls.CERT_NONE
        return context
    try:
        return tls.create_default_context(cafile=ca_path) if ca_path else tls.create_default_context()
    except (OSError, tls.SSLError) as exc:
        raise CheckError(f'ca_path {ca_path} cannot be used as a CA file: {getattr(exc, "strerror", None) or exc}') from exc


def check_session(p: dict) -> None:
    """The connection options every IMAP module shares, checked before anything is sent."""
    check_text('host', p.get('host'))
    check_port('port', p.get('port', 143))
    if p.get('ca_path') is not None:
        check_text('ca_path', p['ca_path'])
        tls_context(True, p['ca_path'])   # a missing or non-PEM CA file fails here, before the first packet
    check_number('timeout', p.get('timeout', 10.0), 0, MAX_TIMEOUT, low_open=True)
    check_number('wait', p.get('wait', 0.0), 0, MAX_WAIT)
    for key in ('user', 'password'):
        if p.get(key) is not None:
            check_text(key, p[key])


def encode_mailbox(name: str) -> str:
    """A mailbox name as IMAP sends it: ASCII as is, anything else in modified UTF-7 (RFC 3501 5.1.3)."""
    if name.isascii():
        return name
    out, run = [], []

    def flush():
        if run:
            data = ''.join(run).encode('utf-16-be')
            out.append('&' + base64.b64encode(data).decode('ascii').rstrip('=').replace('/', ',') + '-')
            run.clear()
    for char in name:
        if 0x20 <= ord(char) <= 0x7e:
            flush()
            out.append('&-' if char == '&' else char)
        else:
            run.append(char)
    flush()
    return ''.join(out)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_digests(stored: bytes, size: int) -> list[str]:
    """The SHA-256 a stored copy may match a sent message of `size` bytes by: the whole copy (IMAP APPEND
    stores the bytes as sent) and its last `size` bytes (LMTP delivery prepends Return-Path and Received)."""
    digests = [sha256(stored)]
    if size and len(stored) > size:
        digests.append(sha256(stored[-size:]))
    return digests


def make_canary(tag: str, index: int, size: int = 512, domain: str = DEFAULT_DOMAIN) -> tuple[str, bytes]:
    """A canary message with CRLF line ends (what IMAP stores), its Message-ID and random body."""
    token = os.urandom(8).hex()
    message_id = f'<cyrus-ha-{tag}-{index}-{token}@{domain}>'
    lines = [f'From: cyrus.ha drill <drill@{domain}>', f'To: canary@{domain}',
             f'Subject: cyrus.ha canary {tag} #{index}', f'Message-ID: {message_id}',
             f'X-Cyrus-HA-Canary: {tag} {index}', f'Date: {time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())}',
             'MIME-Version: 1.0', 'Content-Type: text/plain; charset=us-ascii', '']
    body = os.urandom(max(16, size // 2)).hex()
    lines += [body[i:i + 76] for i in range(0, len(body), 76)]
    return message_id, ('\r\n'.join(lines) + '\r\n').encode('ascii')


class Imap:
    """An IMAP session: connect (retrying until a deadline), LOGIN, and the few commands drills need."""

    def __init__(self, host: str, port: int, user: str, password: str, ssl: bool = False, starttls: bool = False,
                 timeout: float = 10.0, validate_certs: bool = True, ca_path: str | None = None):
        self.host, self.port, self.user, self.password = host, port, user, password
        self.ssl, self.starttls, self.timeout = ssl, starttls, timeout
        self.validate_certs, self.ca_path = validate_certs, ca_path
        self.conn = None
        self.greeting = ''
        self.attempts = 0
        self.login_seconds = None
        self.last_error = ''

    def where(self) -> str:
        return f'{self.user}@{self.host}:{self.port}'

    def connect(self, wait: float = 0.0, interval: float = 0.2, select: str | None = None) -> int | None:
        """Log in (and SELECT the mailbox `select`, when given: through a Murder frontend only that reaches
        the backend); when wait > 0 keep trying until both succeed or wait seconds have passed. The
        number of messages of the selected mailbox, or None."""
        start = time.monotonic()
        deadline = start + wait
        while True:
            self.attempts += 1
            try:
                self._login_once()
                messages = self.select(select) if select is not None else None
                self.login_seconds = round(time.monotonic() - start, 3)
                return messages
            except tls.SSLCertVerificationError as exc:
                # a certificate that is refused now is refused in a minute: no retry
                self.close()
                raise CheckError(f'IMAP login as {self.where()}: the server certificate of {self.host} was refused: '
                                 f'{exc.verify_message or exc} (trusting {self.trust()})',
                                 attempts=self.attempts) from exc
            except (OSError, imaplib.IMAP4.error, EOFError, CheckError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                self.close()
                if time.monotonic() + interval > deadline:
                    raise CheckError(f'IMAP login as {self.where()} failed after {self.attempts} attempt(s) in '
                                     f'{time.monotonic() - start:.1f} s: {self.last_error}',
                                     attempts=self.attempts) from exc
                time.sleep(interval)

    def trust(self) -> str:
        if not self.validate_certs:
            return 'any certificate: validate_certs is false'
        return f'the CA in {self.ca_path}' if self.ca_path else "the system's trust store"

    def _login_once(self) -> None:
        if self.ssl:
            self.conn = imaplib.IMAP4_SSL(self.host, self.port, timeout=self.timeout, ssl_context=tls_context(
                self.validate_certs, self.ca_path))
        else:
            self.conn = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
        self.greeting = self.conn.welcome.decode('utf-8', 'replace') if self.conn.welcome else ''
        if self.starttls:
            self.conn.starttls(ssl_context=tls_context(self.validate_certs, self.ca_path))
        if self.user.isascii() and self.password.isascii():
            self.conn.login(self.user, self.password)
            return
        # LOGIN carries ASCII only: SASL PLAIN carries UTF-8 (RFC 4616), which Cyrus's saslauthd/sasldb check
        if 'AUTH=PLAIN' not in self.conn.capabilities:
            raise CheckError(f'IMAP login as {self.where()}: the user name or password is not ASCII and the server '
                             'offers no AUTH=PLAIN to send it in UTF-8')
        token = b'\0' + self.user.encode('utf-8') + b'\0' + self.password.encode('utf-8')
        self.conn.authenticate('PLAIN', lambda challenge: token)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.logout()
            except (OSError, imaplib.IMAP4.error, EOFError):
                pass
            self.conn = None

    def _ok(self, step: str, response) -> list:
        status, data = response
        if status != 'OK':
            raise CheckError(f'IMAP {step} as {self.where()} failed: {status} {data!r}')
        return data

    def select(self, mailbox: str, readonly: bool = True) -> int:
        data = self._ok(f'SELECT {mailbox}', self.conn.select(_quote(encode_mailbox(mailbox)), readonly=readonly))
        return int(data[0]) if data and data[0] else 0

    def append(self, mailbox: str, message: bytes) -> None:
        self._ok(f'APPEND to {mailbox}', self.conn.append(_quote(encode_mailbox(mailbox)), None, None, message))

    def find(self, message_id: str) -> list[bytes]:
        """Every stored copy of the message with this Message-ID (full RFC 822 bytes)."""
        data = self._ok('SEARCH', self.conn.uid('SEARCH', None, 'HEADER', 'Message-ID', _quote(message_id)))
        uids = data[0].split() if data and data[0] else []
        copies = []
        for uid in uids:
            fetched = self._ok('FETCH', self.conn.uid('FETCH', uid, '(BODY.PEEK[])'))
            for item in fetched:
                if isinstance(item, tuple) and len(item) == 2:
                    copies.append(item[1])
        return copies


def _quote(text: str) -> str:
    return '"' + text.replace('\\', '\\\\').replace('"', '\\"') + '"'


def _temporary(code) -> bool:
    """A refusal an MTA keeps the message queued for: 4xx, or no answer at all (connection level)."""
    return code is None or 400 <= code < 500


def lmtp_deliver(host: str, port: int, sender: str, recipients: list[str], message: bytes,
                 timeout: float = 10.0, lhlo: str = 'cyrus-ha-drill') -> dict:
    """Deliver by LMTP; returns per-recipient status. A unix socket path is given as host with port 0.
    A refusal raises CheckError with details code (None: no SMTP answer) and temporary (an MTA would
    queue the message and retry)."""
    try:
        if port == 0:
            client = smtplib.LMTP(host, timeout=timeout, local_hostname=lhlo)
        else:
            client = smtplib.LMTP(host, port, timeout=timeout, local_hostname=lhlo)
    except (OSError, smtplib.SMTPException) as exc:
        raise CheckError(f'LMTP connection to {host}:{port} failed: {exc}', code=None, temporary=True) from exc
    try:
        refused = client.sendmail(sender, recipients, message)
    except smtplib.SMTPRecipientsRefused as exc:
        code = max(v[0] for v in exc.recipients.values()) if exc.recipients else None
        raise CheckError(f'LMTP at {host}:{port} refused every recipient: {exc.recipients}', code=code,
                         temporary=_temporary(code), refused={k: [v[0], v[1].decode('utf-8', 'replace')]
                                                              for k, v in exc.recipients.items()}) from exc
    except smtplib.SMTPResponseException as exc:
        raise CheckError(f'LMTP delivery to {host}:{port} failed: {exc}', code=exc.smtp_code,
                         temporary=_temporary(exc.smtp_code)) from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise CheckError(f'LMTP delivery to {host}:{port} failed: {exc}', code=None, temporary=True) from exc
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            pass
    if refused:
        code = max(v[0] for v in refused.values())
        raise CheckError(f'LMTP at {host}:{port} refused {sorted(refused)}', code=code, temporary=_temporary(code),
                         refused={k: [v[0], v[1].decode('utf-8', 'replace')] for k, v in refused.items()})
    return {'accepted': list(recipients)}


def deliver_queued(p: dict, message: bytes, sleep=time.sleep) -> dict:
    """Deliver one message as a queueing MTA would: a temporary refusal (4xx, no answer) keeps the same
    message queued and tried again every p['retry_interval'] s for up to p['retry_for'] s; a permanent
    refusal (5xx) or the end of that time raises CheckError. Returns attempts, seconds queued and the
    first refusal."""
    started = time.monotonic()
    attempts = 0
    first = None
    while True:
        attempts += 1
        try:
            lmtp_deliver(p['lmtp_host'] or p['host'], p['lmtp_port'], p['sender'], p['recipients'], message,
                         p['timeout'])
            return {'attempts': attempts, 'queued_seconds': round(time.monotonic() - started, 3) if first else 0.0,
                    'first_refusal': first}
        except CheckError as exc:
            first = first or exc.msg
            waited = time.monotonic() - started
            if not exc.details.get('temporary') or waited + p.get('retry_interval', 1.0) > p.get('retry_for', 0):
                exc.details.update(attempts=attempts, first_refusal=first)
                if attempts > 1:
                    exc.msg = f'{exc.msg} (after {attempts} attempts in {waited:.1f} s)'
                raise
            sleep(p.get('retry_interval', 1.0))


def run_check(p: dict, check_mode: bool = False) -> dict:
    """Do what p['action'] asks; return the module's result (without exit/fail)."""
    action = p['action']
    started = time.monotonic()
    result = {'action': action, 'changed': action in ('append', 'deliver'), 'canaries': []}
    if action == 'deliver':
        canaries = []
        for index in range(p['count']):
            message_id, message = make_canary(p['tag'], index, p['size'])
            canaries.append({'message_id': message_id, 'sha256': sha256(message), 'size': len(message),
                             'recipients': p['recipients']})
            if not check_mode:
                canaries[-1].update(deliver_queued(p, message))
        result['canaries'] = [] if check_mode else canaries
        result['elapsed'] = round(time.monotonic() - started, 3)
        return result

    imap = Imap(p['host'], p['port'], p['user'], p['password'], p['ssl'], p['starttls'], p['timeout'],
                p.get('validate_certs', True), p.get('ca_path'))
    try:
        # a frontend may accept the login while the backend it proxies to is still coming up: the
        # SELECT is part of what is waited for
        messages = imap.connect(wait=p['wait'], select=p['mailbox'] if action == 'login' else None)
        result.update(greeting=imap.greeting, login_seconds=imap.login_seconds, attempts=imap.attempts)
        if action == 'login':
            result['messages'] = messages
        elif action == 'append':
            canaries = []
            for index in range(p['count']):
                message_id, message = make_canary(p['tag'], index, p['size'])
                canaries.append({'message_id': message_id, 'sha256': sha256(message), 'size': len(message),
                                 'mailbox': p['mailbox']})
                if not check_mode:
                    imap.append(p['mailbox'], message)
            result['canaries'] = [] if check_mode else canaries
        elif action == 'verify':
            imap.select(p['mailbox'])
            found, missing, mismatched, duplicated = [], [], [], []
            for canary in p['canaries']:
                copies = imap.find(canary['message_id'])
                size = int(canary.get('size') or 0)
                hashes = [digest for c in copies for digest in stored_digests(c, size)]
                if not copies:
                    missing.append(canary['message_id'])
                elif canary.get('sha256') not in hashes:
                    mismatched.append({'message_id': canary['message_id'], 'expected': canary.get('sha256'),
                                       'found': hashes})
                else:
                    found.append(canary['message_id'])
                    if len(copies) > 1:
                        duplicated.append(canary['message_id'])
            result.update(found=len(found), missing=missing, mismatched=mismatched, duplicated=duplicated,
                          expected=len(p['canaries']))
            if (missing or mismatched) and p['fail_on_loss']:
                raise CheckError(f"{len(missing)} of {len(p['canaries'])} canaries missing and {len(mismatched)} "
                                 f"changed in {p['mailbox']} of {imap.where()}", **result)
    finally:
        imap.close()
    result['elapsed'] = round(time.monotonic() - started, 3)
    return result


def canaries_valid(canaries) -> str:
    """'' when every canary has a message_id and a sha256, else what is wrong."""
    for index, canary in enumerate(canaries or []):
        if not isinstance(canary, dict) or not canary.get('message_id') or not canary.get('sha256'):
            return f'canaries[{index}] needs message_id and sha256 (as returned by action=append or deliver)'
        message_id, digest, size = canary['message_id'], canary['sha256'], canary.get('size')
        if not isinstance(message_id, str) or not _PRINTABLE.fullmatch(message_id):
            return f'canaries[{index}].message_id must be printable ASCII (a Message-ID such as <id@example.org>)'
        if not isinstance(digest, str):
            return f'canaries[{index}].sha256 must be a hexadecimal string'
        if size is not None and (isinstance(size, bool) or not (isinstance(size, int) and 0 <= size <= MAX_SIZE)
                                 and not (isinstance(size, str) and size.isascii() and size.isdigit()
                                          and int(size) <= MAX_SIZE)):
            return f'canaries[{index}].size must be a whole number of bytes from 0 to {MAX_SIZE}'
    return ''


def check_params(p: dict) -> None:
    """Everything imap_check sends or waits on, checked before the first packet: CheckError names the option."""
    check_session(p)
    check_text('mailbox', p.get('mailbox', 'INBOX'))
    tag = p.get('tag', 'drill')
    if not isinstance(tag, str) or not re.fullmatch(r'[A-Za-z0-9_-]{1,64}', tag):
        raise CheckError(f"tag {tag!r} may hold only ASCII letters, digits, - and _ (1 to 64 of them)")
    if p.get('lmtp_host') is not None:
        check_text('lmtp_host', p['lmtp_host'])
    check_port('lmtp_port', p.get('lmtp_port', 24), allow_zero=True)
    for option in ('retry_for', 'retry_interval'):
        if option in p:
            check_number(option, p[option], 0, MAX_WAIT)
    for address in [p.get('sender', DEFAULT_SENDER)] + list(p.get('recipients') or []):
        if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
            raise CheckError(f'mail address {address!r} must be ASCII without spaces, quotes, <> or control '
                             'characters (LMTP here speaks no SMTPUTF8), e.g. alice@example.org')


def resolve(host: str) -> str:
    """Fail early and clearly on a host name that does not resolve."""
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError, ValueError) as exc:   # IDNA refuses empty or 64+ character labels
        raise CheckError(f'host {host} does not resolve: {exc}') from exc
    return host
