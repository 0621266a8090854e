# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real IMAP and LMTP client for the Murder tests (imaplib over IMAPS with the lab's CA, smtplib.LMTP),
and the cleanup of the lab Murder's instances (daemons found by their -C argument, files, service
addresses)."""

from __future__ import annotations

import contextlib
import imaplib
import os
import shutil
import signal
import smtplib
import ssl
import subprocess
import time
import uuid

TIMEOUT = 15
LAB_CA = os.path.join(os.environ.get('CYHA_LAB_DIR', '/var/lib/cyha-lab'), 'tls', 'ca.pem')


def lab_tls() -> ssl.SSLContext:
    """What a mail client of the site trusts: the lab's CA, certificates checked with host names."""
    return ssl.create_default_context(cafile=LAB_CA)


@contextlib.contextmanager
def imap(address: str, user: str, password: str):
    """A logged-in IMAPS session (the Murder serves TLS only) checked against the lab's CA."""
    conn = imaplib.IMAP4_SSL(address, 993, timeout=TIMEOUT, ssl_context=lab_tls())
    try:
        status, detail = conn.login(user, password)
        assert status == 'OK', f'LOGIN {user} at {address}: {status} {detail}'
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.logout()


def mailboxes(conn: imaplib.IMAP4) -> list[str]:
    status, lines = conn.list('""', '*')
    assert status == 'OK', lines
    names = []
    for line in lines:
        if line:
            names.append(line.decode().rsplit(' ', 1)[1].strip('"'))
    return names


def list_as(address: str, user: str, password: str) -> list[str]:
    with imap(address, user, password) as conn:
        return mailboxes(conn)


def append_and_fetch(conn: imaplib.IMAP4, mailbox: str = 'INBOX') -> str:
    """APPEND a message with a fresh Subject to mailbox, SELECT it, FETCH the message back by that
    Subject; return the subject."""
    subject = f'cyha-{uuid.uuid4().hex[:12]}'
    message = f'From: cyha@cyha.test\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n'.encode()
    status, detail = conn.append(mailbox, None, None, message)
    assert status == 'OK', detail
    status, detail = conn.select(mailbox)
    assert status == 'OK', detail
    status, found = conn.search(None, 'SUBJECT', subject)
    assert status == 'OK' and found[0].split(), (status, found)
    status, data = conn.fetch(found[0].split()[-1], '(BODY.PEEK[])')
    assert status == 'OK', data
    assert f'body of {subject}'.encode() in data[0][1]
    return subject


def count_header(address: str, user: str, password: str, header: str, value: str) -> int:
    with imap(address, user, password) as conn:
        status, detail = conn.select('INBOX', readonly=True)
        assert status == 'OK', detail
        status, found = conn.search(None, 'HEADER', header, value)
        assert status == 'OK', found
        return len(found[0].split())


def lmtp_deliver(address: str, recipient: str) -> str:
    """Deliver one message over LMTP (port 24); return its Message-ID."""
    message_id = f'<cyha-{uuid.uuid4().hex}@cyha.test>'
    body = (f'From: cyha@cyha.test\r\nTo: {recipient}\r\nSubject: lmtp test\r\nMessage-ID: {message_id}\r\n\r\n'
            'delivered over LMTP\r\n')
    with smtplib.LMTP(address, 24, timeout=TIMEOUT) as conn:
        refused = conn.sendmail('cyha@cyha.test', [recipient], body)
    assert refused == {}, refused
    return message_id


def netns_id(netns: str) -> str:
    """How /proc/PID/ns/net names the lab host's network namespace."""
    return f'net:[{os.stat(f"/run/netns/{netns}").st_ino}]'


def instance_pids(instance: str, netns: str | None = None) -> list[int]:
    """Live processes of one instance on the lab host whose network namespace is netns (default
    cyha-<instance>). The lab's hosts share one PID namespace, and a warm spare may run its own
    copy of the instance with the same config path: only the host's own processes count."""
    conf = f'/etc/cyrus-ha/{instance}/imapd.conf'.encode()
    own = netns_id(netns or f'cyha-{instance}')
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f'/proc/{entry}/ns/net') != own:
                continue
            with open(f'/proc/{entry}/cmdline', 'rb') as handle:
                argv = handle.read().split(b'\0')
            with open(f'/proc/{entry}/stat', encoding='utf-8') as handle:
                state = handle.read().rpartition(')')[2].split()[0]
        except OSError:
            continue
        if state not in ('Z', 'X') and any(a == b'-C' and b == conf for a, b in zip(argv, argv[1:])):
            pids.append(int(entry))
    return pids


def master_pid(instance: str, netns: str | None = None) -> int | None:
    for pid in instance_pids(instance, netns):
        with contextlib.suppress(OSError):
            with open(f'/proc/{pid}/cmdline', 'rb') as handle:
                if os.path.basename(handle.read().split(b'\0')[0]) == b'master':
                    return pid
    return None


def stop_instance(instance: str, netns: str | None = None, timeout: float = 20) -> None:
    """End one instance's daemons by PID (never by name): TERM, then KILL what is left."""
    for pid in instance_pids(instance, netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while instance_pids(instance, netns) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in instance_pids(instance, netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while instance_pids(instance, netns):
        time.sleep(0.1)


def remove_instance(host: dict) -> None:
    """Stop the lab host's instance and remove everything the Murder deployment made for it."""
    instance = host['name']
    stop_instance(instance, host['netns'])
    for path in (f'/etc/cyrus-ha/{instance}', f'/var/lib/cyrus-ha/{instance}', f'/var/spool/cyrus-ha/{instance}'):
        shutil.rmtree(path, ignore_errors=True)
    subprocess.run(['ip', '-n', host['netns'], 'addr', 'del', f'{host["service_addr4"]}/24', 'dev', 'eth0'],
                   capture_output=True, check=False)
