# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.cyrus_mailbox against a real Cyrus instance (the `cyhaimap` instance of test_imap_check on
lab host be2), run by Ansible on another lab host (fe1): changed, not changed, check mode, bad input."""

from __future__ import annotations

import contextlib
import imaplib
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

import cyha_imapserver
import cyha_tls
import labutil

pytestmark = pytest.mark.lab

ADDRESS, PASSWORDS = cyha_imapserver.ADDRESS, cyha_imapserver.PASSWORDS
ADMIN = {'host': ADDRESS, 'password': PASSWORDS['cyrus']}


def mailbox(tmp_path, *, check_mode: bool = False, diff: bool = False, **args) -> dict:
    """Run cyrus.ha.cyrus_mailbox on fe1 over SSH as the instance's administrator."""
    return labutil.module_result('fe1', 'cyrus.ha.cyrus_mailbox', dict(ADMIN, **args), tmp_path,
                                 check_mode=check_mode, diff=diff)


def state(name: str):
    """(exists, storage limit in KiB) as the server says, read with imaplib directly."""
    conn = imaplib.IMAP4(ADDRESS, 143, timeout=10)
    try:
        conn.login('cyrus', PASSWORDS['cyrus'])
        exists = any(item is not None for item in conn.list('""', f'"{name}"')[1])
        limit = None
        if exists:
            typ, data = conn.getquotaroot(f'"{name}"')
            for line in data[1] if typ == 'OK' and len(data) > 1 else []:
                text = line.decode() if isinstance(line, bytes) else str(line)
                if 'STORAGE' in text:
                    limit = int(text.split('STORAGE')[1].split()[1].rstrip(')'))
        return exists, limit
    finally:
        conn.logout()


def test_create_with_quota_then_unchanged_then_check_mode(imap_server, tmp_path):
    predicted = mailbox(tmp_path, check_mode=True, name='user.bob', quota=10240)
    assert not predicted['failed'] and predicted['changed'] is True, predicted['_output']
    assert predicted['actions'] == ['create', 'quota 10240 KiB'] and state('user.bob') == (False, None)
    created = mailbox(tmp_path, diff=True, name='user.bob', quota=10240)
    assert created['changed'] is True and created['exists_before'] is False
    assert '-    "exists": false' in created['_output'] and '+    "exists": true,' in created['_output'] \
        and '+    "quota": 10240' in created['_output'], created['_output']
    assert state('user.bob') == (True, 10240)
    again = mailbox(tmp_path, name='user.bob', quota=10240)
    assert again['changed'] is False and again['actions'] == [] and again['quota_before'] == 10240
    assert mailbox(tmp_path, check_mode=True, name='user.bob', quota=10240)['changed'] is False
    assert PASSWORDS['cyrus'] not in created['_output'] + again['_output']


def test_quota_changed_and_removed_leaves_the_mail(imap_server, tmp_path):
    mailbox(tmp_path, name='user.carol', quota=2048)
    conn = imaplib.IMAP4(ADDRESS, 143, timeout=10)
    conn.login('cyrus', PASSWORDS['cyrus'])
    assert conn.setacl('user.carol', 'cyrus', 'lrswipkxtecda')[0] == 'OK'
    assert conn.append('user.carol', None, None, b'Subject: kept\r\n\r\nbody\r\n')[0] == 'OK'
    conn.logout()
    check = mailbox(tmp_path, check_mode=True, name='user.carol', quota=4096)
    assert check['changed'] is True and state('user.carol') == (True, 2048)
    assert mailbox(tmp_path, name='user.carol', quota=4096)['actions'] == ['quota 4096 KiB']
    assert state('user.carol') == (True, 4096)
    assert mailbox(tmp_path, name='user.carol', quota=0)['actions'] == ['quota removed']
    assert state('user.carol') == (True, None)
    assert mailbox(tmp_path, name='user.carol', quota=0)['changed'] is False
    assert mailbox(tmp_path, name='user.carol')['changed'] is False     # quota omitted: left alone
    conn = imaplib.IMAP4(ADDRESS, 143, timeout=10)
    conn.login('cyrus', PASSWORDS['cyrus'])
    assert conn.select('user.carol', readonly=True)[1] == [b'1']
    conn.logout()


def test_absent_deletes_once_and_check_mode_keeps_it(imap_server, tmp_path):
    mailbox(tmp_path, name='user.dave')
    predicted = mailbox(tmp_path, check_mode=True, name='user.dave', state='absent')
    assert predicted['changed'] is True and predicted['actions'] == ['delete'] and state('user.dave')[0] is True
    deleted = mailbox(tmp_path, name='user.dave', state='absent')
    assert deleted['changed'] is True and state('user.dave')[0] is False
    assert mailbox(tmp_path, name='user.dave', state='absent')['changed'] is False


@pytest.mark.parametrize('args, message', [
    ({'name': 'user.*'}, "mailbox name 'user.*' is not a plain Cyrus mailbox name (letters, digits, _ + = @ -, "
                         "levels separated by '.', no wildcards), e.g. user.alice"),
    ({'name': 'user.erin', 'partition': 'a b'}, "partition 'a b' is not a partition name (letters, digits, _ and -)"),
    ({'name': 'user.erin', 'quota': -5}, 'quota -5 for user.erin must be 0 (no limit) or a size in KiB'),
    ({'name': 'user.erin', 'password': 'wrong'}, f'IMAP login as cyrus@{ADDRESS}:143 failed after 1 attempt(s)'),
    ({'name': 'user.erin', 'partition': 'nosuch'}, 'IMAP CREATE user.erin as cyrus@%s:143 failed: NO' % ADDRESS),
    ({'name': 'user.erin', 'host': 'nowhere.invalid'}, 'host nowhere.invalid does not resolve'),
])
def test_bad_input_fails_clearly_and_changes_nothing(imap_server, tmp_path, args, message):
    result = mailbox(tmp_path, **args)
    assert result['failed'] and result['msg'].startswith(message), result['msg']
    assert 'Traceback' not in result['_output']
    assert state('user.erin') == (False, None)


# ---------------------------------------------------------------------------------------------
# hostile pass on the real server: non-ASCII names, IMAP's limits, SIGKILL at each step boundary
# ---------------------------------------------------------------------------------------------

def admin_conn():
    conn = imaplib.IMAP4(ADDRESS, 143, timeout=10)
    conn.login('cyrus', PASSWORDS['cyrus'])
    return conn


def test_a_non_ascii_name_is_created_in_modified_utf7_then_unchanged_then_deleted(imap_server, tmp_path):
    created = mailbox(tmp_path, name='user.alice.Entwürfe', quota=100)
    assert created['changed'] is True and created['imap_name'] == 'user.alice.Entw&APw-rfe', created['_output']
    assert state('user.alice.Entw&APw-rfe') == (True, 100)
    assert mailbox(tmp_path, name='user.alice.Entwürfe', quota=100)['changed'] is False
    assert mailbox(tmp_path, name='user.alice.Entwürfe', state='absent')['changed'] is True
    assert state('user.alice.Entw&APw-rfe') == (False, None)


@pytest.mark.parametrize('args, message', [
    ({'name': 'user.erin', 'quota': 2 ** 63}, f'quota {2 ** 63} for user.erin is beyond what IMAP carries'),
    ({'name': 'user.erin', 'wait': 'inf'}, 'wait must be a finite number from 0 to 86400, not inf'),
    ({'name': 'user.erin', 'timeout': 'nan'}, 'timeout must be a finite number above 0 up to 3600, not nan'),
    ({'name': 'user.erin\r\nA1 DELETE user.alice'}, 'is not a plain Cyrus mailbox name'),
    ({'name': 'user.erin', 'password': 'x\r\nA1 DELETE user.alice'}, 'password must be non-empty text without'),
    ({'name': 'user.erin', 'port': 70000}, 'port must be a port number from 1 to 65535, not 70000'),
])
def test_hostile_input_fails_before_the_first_packet_and_changes_nothing(imap_server, tmp_path, args, message):
    result = mailbox(tmp_path, **args)
    assert result['failed'] and message in result['msg'], result['msg']
    # (ansible's ad-hoc "Origin:" excerpt of a failed task echoes the -a arguments itself: only the module's
    # own result is checked for the password)
    assert 'Traceback' not in result['_output'] and PASSWORDS['cyrus'] not in json.dumps(
        {k: v for k, v in result.items() if k != '_output'})
    assert state('user.erin') == (False, None) and state('user.alice')[0] is True


class KillingProxy:
    """A TCP proxy to the real server that SIGKILLs its client process when the client sends the
    scripted IMAP command (before the server sees it): a run killed at a step boundary."""

    def __init__(self, command: str):
        self.command = command.encode()
        self.pid = None
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        with contextlib.suppress(OSError):
            client, dummy = self.listener.accept()
            upstream = socket.create_connection((ADDRESS, 143), timeout=10)
            threading.Thread(target=self.pump, args=(upstream, client, False), daemon=True).start()
            self.pump(client, upstream, True)

    def pump(self, source, sink, inspect):
        with contextlib.suppress(OSError):
            reader = source.makefile('rb')
            for line in reader:
                words = line.rstrip(b'\r\n').split(b' ', 2)
                if inspect and len(words) > 1 and words[1].upper() == self.command and self.pid:
                    os.kill(self.pid, signal.SIGKILL)
                    break
                sink.sendall(line)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.close()

    def close(self):
        self.listener.close()


CHILD = '''
import json, sys
from ansible_collections.cyrus.ha.plugins.module_utils.imapadmin import manage
print(json.dumps(manage(json.loads(sys.argv[1]))))
'''


def killed_run(command: str, killed: bool = True, **params):
    """cyrus_mailbox's logic in a child process, SIGKILLed as it sends `command` to the real server."""
    proxy = KillingProxy(command)
    args = dict({'host': '127.0.0.1', 'port': proxy.port, 'user': 'cyrus', 'password': PASSWORDS['cyrus'],
                 'state': 'present', 'quota': None, 'partition': None, 'timeout': 10.0, 'wait': 0.0}, **params)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    child = subprocess.Popen([sys.executable, '-c', CHILD, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    proxy.pid = child.pid
    try:
        out, err = child.communicate(timeout=60)
    finally:
        proxy.close()
    assert (child.returncode == -signal.SIGKILL) is killed, (out, err)


def admin_acl(name: str) -> str:
    conn = admin_conn()
    try:
        typ, data = conn.getacl(f'"{name}"')
        words = data[0].decode().split() if typ == 'OK' else []
        return dict(zip(words[1::2], words[2::2])).get('cyrus', '')
    finally:
        conn.logout()


@pytest.mark.parametrize('boundary, after_kill', [
    ('CREATE', (False, None)), ('SETQUOTA', (True, None)), ('LOGOUT', (True, 4096))])
def test_sigkill_at_each_step_of_a_create_then_the_next_run_finishes(imap_server, tmp_path, boundary, after_kill):
    name = f'user.kill{boundary.lower()}'
    killed_run(boundary, name=name, quota=4096)
    assert state(name) == after_kill
    finished = mailbox(tmp_path, name=name, quota=4096)
    assert finished['changed'] is (after_kill != (True, 4096)) and state(name) == (True, 4096)
    assert mailbox(tmp_path, name=name, quota=4096)['changed'] is False
    mailbox(tmp_path, name=name, state='absent')


@pytest.mark.parametrize('boundary, granted', [('GETACL', False), ('SETACL', False), ('DELETE', True)])
def test_sigkill_at_each_step_of_a_delete_then_the_next_run_finishes(imap_server, tmp_path, boundary, granted):
    name = f'user.del{boundary.lower()}'
    mailbox(tmp_path, name=name)
    killed_run(boundary, name=name, state='absent')
    assert state(name)[0] is True and ('x' in admin_acl(name)) is granted
    finished = mailbox(tmp_path, name=name, state='absent')
    assert finished['changed'] is True and state(name) == (False, None)
    assert mailbox(tmp_path, name=name, state='absent')['changed'] is False


def test_delete_grants_nothing_when_the_admin_may_already_delete(imap_server, tmp_path):
    mailbox(tmp_path, name='user.hank')
    conn = admin_conn()
    assert conn.setacl('"user.hank"', 'cyrus', 'lrx')[0] == 'OK'
    conn.logout()
    killed_run('SETACL', killed=False, name='user.hank', state='absent')  # a grant would be killed: none is sent
    assert state('user.hank') == (False, None)


def test_over_tls_the_certificate_is_checked_before_anything_is_sent(imap_server, tmp_path):
    tls = dict(port=993, ssl=True, ca_path=cyha_tls.lab_ca_path())
    created = mailbox(tmp_path, name='user.tlsbox', quota=2048, **tls)
    assert not created['failed'] and created['changed'] is True, created['_output']
    assert state('user.tlsbox') == (True, 2048)
    assert mailbox(tmp_path, name='user.tlsbox', quota=2048, **tls)['changed'] is False
    other = tmp_path / 'other-ca.pem'
    other.write_text(cyha_tls.Authority('not the site CA').pem)
    refused = mailbox(tmp_path, name='user.tlsbox', state='absent', wait=20, port=993, ssl=True, ca_path=str(other))
    assert refused['failed'] and (f'the server certificate of {ADDRESS} was refused: unable to get local issuer '
                                  f'certificate (trusting the CA in {other})') in refused['msg'], refused['msg']
    assert state('user.tlsbox') == (True, 2048)       # nothing was sent: the mailbox is still there
    assert PASSWORDS['cyrus'] not in refused['_output']
    assert mailbox(tmp_path, name='user.tlsbox', state='absent', **tls)['changed'] is True
