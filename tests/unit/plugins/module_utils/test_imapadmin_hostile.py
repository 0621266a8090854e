# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus_mailbox's hostile pass against a scripted IMAP server that refuses, drops or SIGKILLs the
client at a chosen command: every bad input refused before the first packet, a failure after a change
reported as changed with what was done, and the next run finishing the job."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import imapadmin, imapcheck
from ansible_collections.cyrus.ha.plugins.module_utils.imapcheck import CheckError

from imapscript import Script, Server

BASE = {'host': '127.0.0.1', 'user': 'cyrus', 'password': 'secret', 'state': 'present', 'quota': None,
        'partition': None, 'name': 'user.alice', 'timeout': 5.0, 'wait': 0.0}


def run(server, **params):
    return imapadmin.manage(dict(BASE, port=server.port, **params))


def box(quota=None, **acl):
    return {'quota': quota, 'acl': dict(acl)}


@pytest.mark.parametrize('params, message', [
    ({'name': 'user.*'}, "mailbox name 'user.*' is not a plain Cyrus mailbox name"),
    ({'name': 'user.a\r\nA1 DELETE user.bob'}, 'is not a plain Cyrus mailbox name'),
    ({'name': 'user.a\x00b'}, 'is not a plain Cyrus mailbox name'),
    ({'name': 'user.a&b'}, 'is not a plain Cyrus mailbox name'),
    ({'name': 'user.\u202ealice'}, 'is not a plain Cyrus mailbox name'),          # bidi override (Cf)
    ({'name': 'user.' + 'a' * 500}, 'is not a plain Cyrus mailbox name'),
    ({'name': 'user.' + '\u00e9' * 200}, 'is not a plain Cyrus mailbox name'),   # 540 once encoded
    ({'name': None}, 'is not a plain Cyrus mailbox name'),
    ({'quota': -1}, 'quota -1 for user.alice must be 0 (no limit) or a size in KiB'),
    ({'quota': 2 ** 63}, 'is beyond what IMAP carries'),
    ({'quota': float('nan')}, 'must be 0 (no limit) or a size in KiB'),
    ({'quota': float('inf')}, 'must be 0 (no limit) or a size in KiB'),
    ({'quota': True}, 'must be 0 (no limit) or a size in KiB'),
    ({'partition': 'a b'}, "partition 'a b' is not a partition name"),
    ({'partition': 'd\u0660'}, 'is not a partition name'),                         # Arabic-Indic digit
    ({'timeout': float('nan')}, 'timeout must be a finite number'),
    ({'timeout': float('inf')}, 'timeout must be a finite number'),
    ({'timeout': 0.0}, 'timeout must be a finite number'),
    ({'wait': float('nan')}, 'wait must be a finite number'),
    ({'wait': float('inf')}, 'wait must be a finite number'),
    ({'wait': -1.0}, 'wait must be a finite number'),
    ({'port': 0}, 'port must be a port number from 1 to 65535'),
    ({'port': 70000}, 'port must be a port number from 1 to 65535'),
    ({'password': 'x\r\nA1 LOGOUT'}, 'password must be non-empty text without control characters'),
    ({'password': ''}, 'password must be non-empty text without control characters'),
    ({'user': 'cy\x00rus'}, 'user must be non-empty text without control characters'),
    ({'host': 'a\x00b'}, 'host must be non-empty text without control characters'),
    ({'state': 'gone'}, "state 'gone' must be present or absent"),
])
def test_bad_input_is_refused_before_the_first_packet(params, message):
    script = Script()
    with Server(script) as server:
        with pytest.raises(CheckError) as caught:
            imapadmin.manage(dict(dict(BASE, port=server.port), **params))
    assert message in caught.value.msg
    assert script.log == [] and 'secret' not in caught.value.msg


def test_a_non_ascii_name_is_created_in_modified_utf7_and_found_again():
    script = Script()
    with Server(script) as server:
        first = run(server, name='user.jürgen.Entwürfe', quota=10)
        again = run(server, name='user.jürgen.Entwürfe', quota=10)
    assert list(script.boxes) == ['user.j&APw-rgen.Entw&APw-rfe'] and first['imap_name'] == 'user.j&APw-rgen.Entw&APw-rfe'
    assert first['actions'] == ['create', 'quota 10 KiB'] and again['changed'] is False


@pytest.mark.parametrize('text, encoded', [
    ('INBOX', 'INBOX'), ('a&b', 'a&b'), ('Entwürfe', 'Entw&APw-rfe'), ('日本語', '&ZeVnLIqe-'),
    ('x&ü', 'x&-&APw-'), ('😀', '&2D3eAA-'),
])
def test_modified_utf7(text, encoded):
    assert imapcheck.encode_mailbox(text) == encoded


def test_a_non_ascii_password_logs_in_with_sasl_plain():
    script = Script(users={'cyrus': 'pässwörd'})
    with Server(script) as server:
        out = run(server, password='pässwörd')
    assert out['actions'] == ['create'] and [c for c, dummy in script.log][:3] == ['CAPABILITY', 'AUTHENTICATE', 'LIST']


def test_a_non_ascii_password_without_auth_plain_fails_clearly():
    script = Script(users={'cyrus': 'pässwörd'}, capabilities='IMAP4rev1 QUOTA ACL')
    with Server(script) as server:
        with pytest.raises(CheckError) as caught:
            run(server, password='pässwörd')
    assert 'offers no AUTH=PLAIN' in caught.value.msg and 'pässwörd' not in caught.value.msg
    assert script.boxes == {}


@pytest.mark.parametrize('answer', ['NO', 'BAD', 'drop'])
def test_a_refused_quota_after_create_reports_changed_and_the_next_run_finishes(answer):
    script = Script(fail={'SETQUOTA': answer})
    with Server(script) as server:
        with pytest.raises(CheckError) as caught:
            run(server, quota=100)
        assert caught.value.details['changed'] is True and caught.value.details['actions'] == ['create']
        assert 'after create' in caught.value.msg and 'run again to finish' in caught.value.msg
        assert script.boxes == {'user.alice': box()}
        script.fail.clear()
        out = run(server, quota=100)
    assert out['actions'] == ['quota 100 KiB'] and script.boxes == {'user.alice': box(100)}


@pytest.mark.parametrize('answer', ['NO', 'BAD', 'drop'])
def test_a_refused_create_changes_nothing_and_says_so(answer):
    script = Script(fail={'CREATE': answer})
    with Server(script) as server:
        with pytest.raises(CheckError) as caught:
            run(server, quota=100)
    assert caught.value.details.get('changed', False) is False and script.boxes == {}


@pytest.mark.parametrize('answer', ['NO', 'BAD'])
def test_a_refused_delete_puts_the_acl_back(answer):
    script = Script(boxes={'user.alice': box(cyrus='lr')}, fail={'DELETE': answer})
    with Server(script) as server:
        with pytest.raises(CheckError) as caught:
            run(server, state='absent')
    assert script.boxes == {'user.alice': box(cyrus='lr')}
    assert caught.value.details.get('changed', False) is False


def test_a_refused_delete_removes_an_acl_entry_the_admin_did_not_have():
    script = Script(boxes={'user.alice': box(alice='lrswipkxtecda')}, fail={'DELETE': 'NO'})
    with Server(script) as server:
        with pytest.raises(CheckError):
            run(server, state='absent')
    assert script.boxes == {'user.alice': box(alice='lrswipkxtecda')}
    assert [c for c, dummy in script.log if c.endswith('ACL')] == ['GETACL', 'SETACL', 'DELETEACL']


def test_a_dropped_delete_reports_the_grant_it_could_not_undo():
    script = Script(boxes={'user.alice': box()}, fail={'DELETE': 'drop'})
    with Server(script) as server:
        with pytest.raises(CheckError) as caught:
            run(server, state='absent')
        assert caught.value.details['changed'] is True and 'putting back the ACL of cyrus failed too' in caught.value.msg
        script.fail.clear()
        out = run(server, state='absent')
    assert out['changed'] is True and script.boxes == {}
    assert [c for c, dummy in script.log if c.endswith('ACL')].count('SETACL') == 1   # x already there: no grant


def test_delete_grants_nothing_when_the_admin_already_may_delete():
    script = Script(boxes={'user.alice': box(cyrus='lrx')})
    with Server(script) as server:
        run(server, state='absent')
    assert script.boxes == {} and not any(c in ('SETACL', 'GETACL') for c, dummy in script.log)


def test_a_server_whose_myrights_claims_x_still_gets_the_grant_delete_needs():
    script = Script(boxes={'user.alice': box()})
    script.implied_rights = 'lax'
    with Server(script) as server:
        out = run(server, state='absent')
    assert out['changed'] is True and script.boxes == {}
    assert [c for c, dummy in script.log if c in ('DELETE', 'SETACL')] == ['DELETE', 'SETACL', 'DELETE']


@pytest.mark.parametrize('command', ['LOGIN', 'LIST', 'GETQUOTAROOT'])
def test_a_failure_while_reading_changes_nothing_and_raises_a_check_error(command):
    script = Script(boxes={'user.alice': box(5)}, fail={command: 'drop'})
    with Server(script) as server:
        with pytest.raises(CheckError) as caught:
            run(server, quota=100)
    assert script.boxes == {'user.alice': box(5)} and caught.value.details.get('changed', False) is False


CHILD = '''
import json, sys
from ansible_collections.cyrus.ha.plugins.module_utils.imapadmin import manage
print(json.dumps(manage(json.loads(sys.argv[1]))))
'''


def run_killed(script, server, **params):
    """manage() in a child process that the server SIGKILLs at the scripted command."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    child = subprocess.Popen([sys.executable, '-c', CHILD, json.dumps(dict(BASE, port=server.port, **params))],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    script.client_pid = child.pid
    try:
        out, err = child.communicate(timeout=60)
    finally:
        script.client_pid = None
    return child.returncode, out, err


@pytest.mark.parametrize('boundary, state_after_kill', [
    ('CREATE', {}),                                        # killed before create: nothing done
    ('SETQUOTA', {'user.alice': box()}),                   # after create, before quota
    ('LOGOUT', {'user.alice': box(100)}),                  # after both
])
def test_sigkill_at_each_step_of_present_then_the_next_run_finishes(boundary, state_after_kill):
    script = Script(fail={boundary: 'kill'})
    with Server(script) as server:
        code, dummy, err = run_killed(script, server, quota=100)
        assert code == -signal.SIGKILL, err
        assert script.boxes == state_after_kill
        script.fail.clear()
        out = run(server, quota=100)
        again = run(server, quota=100)
    assert script.boxes == {'user.alice': box(100)} and again['changed'] is False
    assert out['changed'] is (boundary != 'LOGOUT')


@pytest.mark.parametrize('boundary, acl_after_kill', [
    ('GETACL', {}),                        # before anything changed
    ('SETACL', {}),                        # before the grant
    ('DELETE', {'cyrus': imapadmin.ALL_RIGHTS}),   # granted, not deleted
    ('LOGOUT', None),                      # deleted
])
def test_sigkill_at_each_step_of_absent_then_the_next_run_finishes(boundary, acl_after_kill):
    script = Script(boxes={'user.alice': box(7)}, fail={boundary: 'kill'})
    with Server(script) as server:
        code, dummy, err = run_killed(script, server, state='absent')
        assert code == -signal.SIGKILL, err
        assert script.boxes == ({} if acl_after_kill is None else {'user.alice': box(7, **acl_after_kill)})
        script.fail.clear()
        out = run(server, state='absent')
        again = run(server, state='absent')
    assert script.boxes == {} and again['changed'] is False and out['changed'] is (acl_after_kill is not None)


def test_check_mode_sends_no_change():
    script = Script(boxes={'user.alice': box(5)})
    with Server(script) as server:
        out = imapadmin.manage(dict(BASE, port=server.port, quota=9), check_mode=True)
        gone = imapadmin.manage(dict(BASE, port=server.port, state='absent'), check_mode=True)
    assert out['actions'] == ['quota 9 KiB'] and gone['actions'] == ['delete'] and script.boxes == {'user.alice': box(5)}
    assert not {c for c, dummy in script.log} & {'CREATE', 'SETQUOTA', 'SETACL', 'DELETE', 'DELETEACL'}


def test_timeouts_are_finite_numbers_only():
    assert imapcheck.check_number('x', 1, 0, 2) == 1
    with pytest.raises(CheckError):
        imapcheck.check_number('x', math.nan, 0, 2)
