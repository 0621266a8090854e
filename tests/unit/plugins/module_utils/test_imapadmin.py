# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mailbox management decisions against a fake IMAP connection that answers like Cyrus (the real
server is in tests/integration/test_cyrus_mailbox.py): quota parsing and what each state does."""

from __future__ import annotations

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import imapadmin
from ansible_collections.cyrus.ha.plugins.module_utils.imapcheck import CheckError


class FakeConn:
    """imaplib.IMAP4's answers for LIST, GETQUOTAROOT, CREATE, SETQUOTA, SETACL, DELETE."""

    def __init__(self, boxes):
        self.boxes = dict(boxes)   # name -> quota KiB or None
        self.calls = []

    def list(self, ref, pattern):
        name = pattern.strip('"')
        return 'OK', [b'(\\HasNoChildren) "." "%s"' % name.encode()] if name in self.boxes else [None]

    def getquotaroot(self, mailbox):
        name = mailbox.strip('"')
        limit = self.boxes.get(name)
        if limit is None:
            return 'OK', [[b'"%s"' % name.encode()], []]
        return 'OK', [[b'"%s" %s' % (name.encode(), name.encode())], [b'%s (STORAGE 12 %d)' % (name.encode(), limit)]]

    def _simple_command(self, cmd, *args):
        self.calls.append((cmd,) + args)
        name = args[0].strip('"')
        if len(args) > 1 and args[1] != 'default':
            return 'NO', [b'Invalid partition']
        self.boxes[name] = None
        return 'OK', [b'Completed']

    def setquota(self, mailbox, limits):
        self.calls.append(('SETQUOTA', mailbox, limits))
        self.boxes[mailbox.strip('"')] = None if limits == '()' else int(limits.split()[1].rstrip(')'))
        return 'OK', [b'Completed']

    def setacl(self, mailbox, who, rights):
        self.calls.append(('SETACL', mailbox, who, rights))
        return 'OK', [b'Completed']

    def delete(self, mailbox):
        self.calls.append(('DELETE', mailbox))
        del self.boxes[mailbox.strip('"')]
        return 'OK', [b'Completed']

    def myrights(self, mailbox):
        return 'OK', [b'%s la' % mailbox.encode()]

    def getacl(self, mailbox):
        return 'OK', [b'%s anyone lrs' % mailbox.encode()]

    def deleteacl(self, mailbox, who):
        self.calls.append(('DELETEACL', mailbox, who))
        return 'OK', [b'Completed']

    def logout(self):
        pass


def session(conn):
    class Session(imapadmin.Admin):
        def _login_once(self):
            self.conn = conn
    return Session


P = {'host': 'be1', 'port': 143, 'user': 'cyrus', 'password': 'x', 'state': 'present', 'quota': None,
     'partition': None, 'name': 'user.alice'}


def run(conn, check=False, **params):
    return imapadmin.manage(dict(P, **params), check, session=session(conn))


def test_create_with_quota_then_nothing():
    conn = FakeConn({})
    out = run(conn, quota=1024)
    assert out['actions'] == ['create', 'quota 1024 KiB'] and conn.boxes == {'user.alice': 1024}
    again = run(conn, quota=1024)
    assert again['changed'] is False and again['quota_before'] == 1024 and again['quota_root'] == 'user.alice'


@pytest.mark.parametrize('boxes, params, actions, after', [
    ({}, {}, ['create'], {'user.alice': None}),
    ({}, {'quota': 0}, ['create'], {'user.alice': None}),
    ({'user.alice': 10}, {'quota': 0}, ['quota removed'], {'user.alice': None}),
    ({'user.alice': 10}, {}, [], {'user.alice': 10}),
    ({'user.alice': None}, {'state': 'absent'}, ['delete'], {}),
    ({}, {'state': 'absent'}, [], {}),
    ({}, {'partition': 'default'}, ['create on partition default'], {'user.alice': None}),
])
def test_each_state_does_only_what_differs(boxes, params, actions, after):
    conn = FakeConn(boxes)
    predicted = run(conn, check=True, **params)
    assert predicted['actions'] == actions and conn.boxes == boxes and conn.calls == []
    done = run(conn, **params)
    assert done['actions'] == actions and done['changed'] is bool(actions) and conn.boxes == after


def test_delete_grants_the_admin_every_right_first():
    conn = FakeConn({'user.alice': None})
    run(conn, state='absent')
    assert conn.calls == [('SETACL', '"user.alice"', 'cyrus', imapadmin.ALL_RIGHTS), ('DELETE', '"user.alice"')]


def test_a_refused_create_names_the_mailbox_and_the_answer():
    with pytest.raises(CheckError) as caught:
        run(FakeConn({}), partition='nosuch')
    assert caught.value.msg == "IMAP CREATE user.alice as cyrus@be1:143 failed: NO [b'Invalid partition']"


@pytest.mark.parametrize('name', ['user.*', 'user.%', 'user."x"', '', 'user..alice', '.user', 'a\r\nb'])
def test_names_that_are_not_plain_mailbox_names_are_refused(name):
    with pytest.raises(CheckError) as caught:
        imapadmin.check_name(name)
    assert caught.value.msg.startswith('mailbox name %r is not a plain Cyrus mailbox name' % name)
