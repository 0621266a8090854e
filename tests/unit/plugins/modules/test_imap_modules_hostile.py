# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""imap_check and cyrus_mailbox main() against the scripted IMAP server of the module_utils tests:
every hostile input a fail_json naming the option and the cause, before the first packet; never a
traceback, a hang, or a secret in the output. The real server is in tests/integration."""

from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.cyrus.ha.plugins.modules import cyrus_mailbox, imap_check
from hostile import run_main  # shared by the hostile tests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'module_utils'))
from imapscript import Script, Server  # noqa: E402  pylint: disable=wrong-import-position

SECRET = 'pw-Geheim-42'


@pytest.fixture
def server():
    script = Script(users={'alice': SECRET, 'jürgen': 'pässwört', 'cyrus': SECRET})
    with Server(script) as running:
        running.script = script
        yield running


def check(server, capsys, **args):
    base = {'host': '127.0.0.1', 'port': server.port, 'user': 'alice', 'password': SECRET, 'timeout': 5}
    return run_main(imap_check, dict(base, **args), capsys)


@pytest.mark.parametrize('args, message', [
    ({'wait': 'nan'}, 'wait must be a finite number'),
    ({'wait': 'inf'}, 'wait must be a finite number'),
    ({'timeout': 'nan'}, 'timeout must be a finite number'),
    ({'timeout': 'inf'}, 'timeout must be a finite number'),
    ({'timeout': 1e9}, 'timeout must be a finite number'),
    ({'port': 0}, 'port must be a port number from 1 to 65535'),
    ({'port': 70000}, 'port must be a port number from 1 to 65535'),
    ({'action': 'deliver', 'recipients': ['a@b'], 'lmtp_port': 70000}, 'lmtp_port must be a port number'),
    ({'password': 'x\r\nA9 DELETE INBOX'}, 'password must be non-empty text without control characters'),
    ({'user': 'al\x00ice'}, 'user must be non-empty text without control characters'),
    ({'host': '127.0.0.1\x00evil'}, 'host must be non-empty text without control characters'),
    ({'host': ''}, 'host must be non-empty text without control characters'),
    ({'host': 'bü..example'}, 'host bü..example does not resolve'),
    ({'host': 'ü' + 'x' * 70 + '.example'}, 'does not resolve'),
    ({'mailbox': 'INBOX\r\nA9 DELETE user.bob'}, 'mailbox must be non-empty text without control characters'),
    ({'action': 'append', 'tag': 'drillé'}, "tag 'drillé' may hold only ASCII letters, digits, - and _"),
    ({'action': 'append', 'tag': 'x' * 65}, 'may hold only ASCII letters, digits, - and _ (1 to 64 of them)'),
    ({'action': 'verify', 'canaries': [{'message_id': '<a>\r\nA9 LOGOUT', 'sha256': 'x'}]},
     'canaries[0].message_id must be printable ASCII'),
    ({'action': 'verify', 'canaries': [{'message_id': '<a>', 'sha256': 'x', 'size': 'abc'}]},
     'canaries[0].size must be a whole number of bytes'),
    ({'action': 'verify', 'canaries': [{'message_id': '<a>', 'sha256': 'x', 'size': '\u0661\u0662'}]},
     'canaries[0].size must be a whole number of bytes'),
    ({'action': 'verify', 'canaries': [{'message_id': '<a>', 'sha256': 5}]}, 'canaries[0].sha256 must be a hexadecimal'),
    ({'action': 'deliver', 'recipients': ['jürgen@example.org']}, "mail address 'jürgen@example.org' must be ASCII"),
    ({'action': 'deliver', 'recipients': ['a@b'], 'sender': 'a b@c'}, "mail address 'a b@c' must be ASCII"),
    ({'action': 'deliver', 'recipients': ['a@b'], 'retry_for': 'nan'}, 'retry_for must be between 0 and 86400 s'),
    ({'action': 'append', 'count': 0}, 'count must be between 1 and 1000, not 0'),
    ({'action': 'append', 'size': 2 ** 40}, 'size must be between 16 bytes and 10 MiB'),
    ({'action': 'verify', 'canaries': []}, 'canaries must not be empty'),
])
def test_imap_check_refuses_hostile_input_before_the_first_packet(server, capsys, args, message):
    result, out = check(server, capsys, **args)
    assert result['failed'] and message in result['msg'], result['msg']
    assert server.script.log == [] and SECRET not in out and 'Traceback' not in out


def test_imap_check_logs_in_with_a_non_ascii_user_and_password_and_selects_a_non_ascii_mailbox(server, capsys):
    server.script.boxes['Entw&APw-rfe'] = {'quota': None, 'acl': {}}
    result, out = check(server, capsys, user='jürgen', password='pässwört', mailbox='Entwürfe')
    assert not result.get('failed') and result['messages'] == 0, result
    assert [c for c, dummy in server.script.log][:2] == ['CAPABILITY', 'AUTHENTICATE']
    assert ('SELECT', '"Entw&APw-rfe"') in server.script.log or ('EXAMINE', '"Entw&APw-rfe"') in server.script.log
    assert 'pässwört' not in out


@pytest.mark.parametrize('command, answer', [('LOGIN', 'NO'), ('LOGIN', 'BAD'), ('LOGIN', 'drop'),
                                             ('EXAMINE', 'NO'), ('EXAMINE', 'drop')])
def test_imap_check_reports_a_misbehaving_server_without_a_traceback(server, capsys, command, answer):
    server.script.fail[command] = answer
    result, out = check(server, capsys, wait=0.5)
    assert result['failed'] and 'IMAP login as alice@127.0.0.1' in result['msg'] and 'Traceback' not in out
    assert 1 <= result['attempts'] <= 4 and SECRET not in out


def mailbox(server, capsys, **args):
    base = {'host': '127.0.0.1', 'port': server.port, 'password': SECRET, 'timeout': 5, 'name': 'user.alice'}
    return run_main(cyrus_mailbox, dict(base, **args), capsys)


@pytest.mark.parametrize('args, message', [
    ({'wait': 'nan'}, 'wait must be a finite number'),
    ({'wait': 'inf'}, 'wait must be a finite number'),
    ({'timeout': 'nan'}, 'timeout must be a finite number'),
    ({'port': 99999}, 'port must be a port number'),
    ({'quota': 2 ** 64}, 'is beyond what IMAP carries'),
    ({'name': 'user.a\r\nA1 DELETE user.b'}, 'is not a plain Cyrus mailbox name'),
    ({'name': 'user.a&b'}, 'is not a plain Cyrus mailbox name'),
    ({'password': 'a\nb'}, 'password must be non-empty text'),
    ({'host': 'a\x00b'}, 'host must be non-empty text'),
])
def test_cyrus_mailbox_refuses_hostile_input_before_the_first_packet(server, capsys, args, message):
    result, out = mailbox(server, capsys, **args)
    assert result['failed'] and message in result['msg'], result['msg']
    assert server.script.log == [] and SECRET not in out and 'Traceback' not in out and 'exception' not in result


def test_cyrus_mailbox_failing_after_a_change_says_changed_and_what_was_done(server, capsys):
    server.script.fail['SETQUOTA'] = 'NO'
    result, out = mailbox(server, capsys, quota=100)
    assert result['failed'] and result['changed'] is True and result['actions'] == ['create']
    assert 'run again to finish' in result['msg'] and 'exception' not in result
    server.script.fail.clear()
    again, dummy = mailbox(server, capsys, quota=100)
    assert again['changed'] is True and again['actions'] == ['quota 100 KiB']
    assert server.script.boxes == {'user.alice': {'quota': 100, 'acl': {}}}


def test_cyrus_mailbox_a_refused_delete_leaves_no_acl_and_reports_no_change(server, capsys):
    server.script.boxes['user.alice'] = {'quota': None, 'acl': {'alice': 'lrs'}}
    server.script.fail['DELETE'] = 'NO'
    result, dummy = mailbox(server, capsys, state='absent')
    assert result['failed'] and result.get('changed', False) is False
    assert server.script.boxes == {'user.alice': {'quota': None, 'acl': {'alice': 'lrs'}}}
