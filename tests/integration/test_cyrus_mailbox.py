# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.cyrus_mailbox against a real Cyrus instance (the `cyhaimap` instance of test_imap_check on
lab host be2), run by Ansible on another lab host (fe1): changed, not changed, check mode, bad input."""

from __future__ import annotations

import imaplib

import pytest

import cyha_imapserver
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
