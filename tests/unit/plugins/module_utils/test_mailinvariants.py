# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each invariant of a traffic run, broken once against backends given as data (reading real backends is
tests/integration/test_drill_traffic.py's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import mailinvariants
from ansible_collections.cyrus.ha.plugins.module_utils.imapcheck import CheckError, sha256

BACKENDS = [{'name': 'be1', 'host': '198.51.100.121', 'port': 993},
            {'name': 'be2', 'host': '198.51.100.122', 'port': 993}]
PASSWORDS = {'alice': 'a', 'bob': 'b'}
M1, M2, M3 = '<cyrus-ha-traffic-t-deliver-1-x@i>', '<cyrus-ha-traffic-t-append-2-y@i>', '<cyrus-ha-traffic-t-append-3-z@i>'
# what was sent, and what the backend holds: an APPEND as sent, a delivery behind the headers LMTP prepends
B1, B2, B3 = b'Message-ID: ' + M1.encode() + b'\r\n\r\nbody one\r\n', b'm2\r\n', b'm3\r\n'
S1 = b'Return-Path: <t@i>\r\nReceived: from fe1 by be1\r\n' + B1
JOURNAL = [
    {'op': 'deliver', 'user': 'alice', 't': 1.0, 'end': 1.1, 'outcome': 'ok', 'message_id': M1, 'sha256': sha256(B1),
     'size': len(B1)},
    {'op': 'append', 'user': 'alice', 't': 2.0, 'end': 2.1, 'outcome': 'ok', 'message_id': M2, 'sha256': sha256(B2),
     'uidvalidity': 77, 'uid': 5},
    {'op': 'append', 'user': 'alice', 't': 3.0, 'end': 3.1, 'outcome': 'unknown', 'message_id': M3, 'sha256': sha256(B3)},
    {'op': 'store', 'user': 'alice', 't': 4.0, 'end': 4.1, 'outcome': 'ok', 'message_id': M2, 'uid': 5,
     'uidvalidity': 77, 'flag': '\\Flagged'},
    {'op': 'fetch', 'user': 'bob', 't': 4.0, 'end': 4.1, 'outcome': 'ok'},
]


def inbox(backend='be1', messages=None, uidvalidity=77, by_uid=None, mailbox_id='id-1'):
    messages = {M1: [{'uid': 4, 'flags': [], 'body': S1}],
                M2: [{'uid': 5, 'flags': ['\\Flagged'], 'body': B2}]} if messages is None else messages
    return {'backend': backend, 'uidvalidity': uidvalidity, 'mailbox_id': mailbox_id, 'messages': messages,
            'by_uid': {4: M1, 5: M2} if by_uid is None else by_uid, 'exists': 2}


def reader_of(alice=None, bob=None):
    """Backends as data: alice's INBOX on be1 (or as given per backend), bob's on be2."""
    held = {('alice', 'be1'): inbox() if alice is None else alice.get('be1'),
            ('alice', 'be2'): None if alice is None else alice.get('be2'),
            ('bob', 'be2'): inbox('be2', messages={}, by_uid={}, mailbox_id='id-2') if bob is None else bob}

    def reader(backend, user, password, tag, ca_path, timeout):
        assert (password, tag) == (PASSWORDS[user], 't')
        found = held.get((user, backend['name']))
        if isinstance(found, Exception):
            raise found
        return found
    return reader


def run(reader, journal=None):
    return mailinvariants.check(JOURNAL if journal is None else journal, BACKENDS, PASSWORDS, 't', reader=reader)


def test_a_clean_run_holds_every_invariant():
    result = run(reader_of())
    assert (result['ok'], result['violations'], result['errors']) == (True, [], [])
    assert result['checked'] == {'acknowledged': 2, 'acknowledged_found': 2, 'unacknowledged': 1,
                                 'unacknowledged_found': 0, 'flags': 1, 'users': 2,
                                 'mailboxes': {'alice': 'be1', 'bob': 'be2'}}


def only(result):
    assert not result['ok'] and len(result['violations']) == 1, result['violations']
    return result['violations'][0]


@pytest.mark.parametrize('alice, invariant, detail', [
    ({'be1': inbox(messages={M2: [{'uid': 5, 'flags': ['\\Flagged'], 'body': B2}]})}, 'acknowledged-present',
     'deliver acknowledged at 1.0 and missing from the INBOX of alice on be1'),
    ({'be1': inbox(messages={M1: [{'uid': 4, 'flags': [], 'body': S1}, {'uid': 6, 'flags': [], 'body': S1}],
                             M2: [{'uid': 5, 'flags': ['\\Flagged'], 'body': B2}]})}, 'exactly-once',
     'deliver acknowledged once and stored 2 times in the INBOX of alice on be1 (UIDs 4, 6)'),
    ({'be1': inbox(messages={M1: [{'uid': 4, 'flags': [], 'body': S1 + b'x'}],
                             M2: [{'uid': 5, 'flags': ['\\Flagged'], 'body': B2}]})}, 'byte-for-byte',
     'deliver acknowledged at 1.0 differs byte for byte in the INBOX of alice on be1'),
    ({'be1': inbox(by_uid={4: M1, 5: M1})}, 'uid-stable',
     f'UID 5 of the INBOX of alice on be1 was acknowledged for this message and now names {M1}'),
    ({'be1': inbox(uidvalidity=78)}, 'uidvalidity-kept',
     'UIDVALIDITY of the INBOX of alice on be1 is 78, was 77 when the APPEND was acknowledged'),
    ({'be1': inbox(messages={M1: [{'uid': 4, 'flags': [], 'body': S1}],
                             M2: [{'uid': 5, 'flags': ['\\Seen'], 'body': B2}]})}, 'flag-kept',
     '\\Flagged set on UID 5 at 4.0 is gone from the INBOX of alice on be1'),
    ({'be1': inbox(messages=dict(inbox()['messages'], **{M3: [{'uid': 7, 'flags': [], 'body': B3},
                                                              {'uid': 8, 'flags': [], 'body': B3}]}))},
     'exactly-once', 'append never acknowledged (unknown) and stored 2 times in the INBOX of alice on be1'),
    ({'be1': inbox(), 'be2': inbox('be2', mailbox_id='id-9')}, 'mailbox-once',
     'the INBOX of alice exists on 2 backends: be1 (id id-1), be2 (id id-9)'),
])
def test_each_broken_invariant_is_named_with_the_message_and_the_backend(alice, invariant, detail):
    violation = only(run(reader_of(alice=alice)))
    assert (violation['invariant'], violation['detail']) == (invariant, detail)
    assert violation['user'] == 'alice'


def test_an_inbox_on_no_backend_loses_every_acknowledged_message():
    result = run(reader_of(alice={}))
    assert [v['invariant'] for v in result['violations']] == ['acknowledged-present', 'acknowledged-present']
    assert result['violations'][0]['detail'] == 'deliver acknowledged at 1.0 and the INBOX of alice is on no backend'


def test_a_backend_that_cannot_be_read_is_an_error_not_a_pass():
    result = run(reader_of(alice={'be1': CheckError('reading alice on backend be1 (198.51.100.121): timed out')}))
    assert not result['ok'] and result['violations'] == []
    assert result['errors'] == ['reading alice on backend be1 (198.51.100.121): timed out']


def test_a_user_without_a_password_is_not_checked_and_says_so():
    journal = JOURNAL + [{'op': 'fetch', 'user': 'carol', 't': 5.0, 'end': 5.1, 'outcome': 'ok'}]
    result = run(reader_of(), journal)
    assert result['errors'] == ['carol: no password in the traffic profile: not checked'] and not result['ok']


def test_a_corrupt_read_during_the_run_is_a_violation():
    journal = JOURNAL + [{'op': 'fetch', 'user': 'alice', 't': 6.0, 'end': 6.1, 'outcome': 'failed', 'kind': 'corrupt',
                          'message_id': M1, 'error': f'{M1} read back differs from what was acknowledged'}]
    violation = only(run(reader_of(), journal))
    assert violation['invariant'] == 'no-corrupt-read' and violation['message_id'] == M1


def test_the_fetch_answer_is_parsed_with_flags_before_or_after_the_body():
    data = [(b'1 (UID 4 FLAGS (\\Seen \\Flagged) BODY[] {3}', b'abc'), b')',
            (b'2 (UID 9 BODY[] {3}', b'def'), b' FLAGS (\\Answered))']
    assert mailinvariants._parse_fetch(data) == [{'uid': 4, 'flags': ['\\Seen', '\\Flagged'], 'body': b'abc'},
                                                 {'uid': 9, 'flags': ['\\Answered'], 'body': b'def'}]


# -- the Murder's mailbox lists (mupdate-list), from ctl_mboxlist -d as Debian 12's Cyrus 3.6.1 prints it --------
FIXTURES = Path(__file__).parent / 'fixtures' / 'cyrus' / 'debian12'
MASTER_DUMP = json.loads((FIXTURES / 'ctl_mboxlist-d-mupdate.json').read_text())
BE2_DUMP = json.loads((FIXTURES / 'ctl_mboxlist-d-be2.json').read_text())


def entry(uniqueid, mbtype='e'):
    return {'mbtype': mbtype, 'partition': 'default', 'uniqueid': uniqueid}


def murder(master=None, be1=None, be2=None, be3=None, frontend=None, spare_be1=False):
    """Every host's Cyrus facts: the lab's Murder with its lists as the fixtures and the arguments say."""
    def instance(role, servername, mailboxes, running=True):
        found = {'murder_role': role, 'servername': servername, 'running': running}
        if running:
            found['mailboxes'] = mailboxes
        return found
    master = {n: {k: e[k] for k in ('server', 'partition', 'mbtype')} for n, e in MASTER_DUMP.items()} \
        if master is None else master
    be1 = {'user.alice': entry('a1')} if be1 is None else be1
    be2 = {n: {k: e[k] for k in ('partition', 'mbtype', 'uniqueid')} for n, e in BE2_DUMP.items()} if be2 is None else be2
    be3 = {'user.dave': entry('d1'), 'cyrus-ha-lag-be3': entry('l1')} if be3 is None else be3
    return {
        'mupdate': {'instances': {'mupdate': instance('mupdate', 'mupdate-svc.cyha.test', master)}},
        'fe1': {'instances': {'fe1': instance('frontend', 'fe1-svc.cyha.test', master if frontend is None else frontend)}},
        'be1': {'instances': {'be1': instance('backend', 'be1-svc.cyha.test', be1, running=not spare_be1)}},
        'spare': {'instances': {'be1': instance('backend', 'be1-svc.cyha.test', be1, running=spare_be1),
                                'be2': instance('backend', 'be2-svc.cyha.test', be2, running=False)}},
        'be2': {'instances': {'be2': instance('backend', 'be2-svc.cyha.test', be2)}},
        'be3': {'instances': {'be3': instance('backend', 'be3-svc.cyha.test', be3)}},
        # the replica of be3: the same mailboxes, not a Murder member (no mupdate keys)
        'replica': {'instances': {'be3': instance('standalone', 'be3-svc.cyha.test', be3)}},
    }


@pytest.mark.parametrize('spare_be1', [False, True])
def test_the_mupdate_list_of_the_lab_holds_wherever_be1_runs(spare_be1):
    result = mailinvariants.mupdate_list(murder(spare_be1=spare_be1))
    assert result == {'ok': True, 'violations': [], 'errors': [], 'checked': {
        'backends': ['be1-svc.cyha.test', 'be2-svc.cyha.test', 'be3-svc.cyha.test'], 'frontends': ['fe1@fe1'],
        'mailboxes': 4, 'mupdate_master': 'mupdate@mupdate', 'mupdate_mailboxes': 4, 'violations_by_kind': {}}}


def kinds(result):
    return [(v['kind'], v['mailbox'], v['detail']) for v in result['violations']]


def test_each_way_the_mupdate_list_can_be_wrong_is_named():
    master = {n: dict(e) for n, e in MASTER_DUMP.items()}
    del master['user.bob']                                           # lost at the master
    master['user.dave']['server'] = 'be1-svc.cyha.test'              # placed on the wrong backend
    master['user.gone'] = {'server': 'be2-svc.cyha.test!default', 'mbtype': 'er'}   # the backend lost it
    master['user.nowhere'] = {'server': 'be9-svc.cyha.test', 'mbtype': 'er'}
    master['DELETED.user.old'] = {'server': 'be2-svc.cyha.test', 'mbtype': 'erd'}   # a tombstone: not compared
    result = mailinvariants.mupdate_list(murder(master=master, frontend={}))
    assert result['ok'] is False and result['errors'] == []
    assert kinds(result) == [
        ('missing-at-master', 'user.bob', "user.bob is on backend be2-svc.cyha.test and not in the mupdate master's list"),
        ('misplaced', 'user.dave', 'the mupdate master places user.dave on be1-svc.cyha.test, and backend '
                                   'be3-svc.cyha.test holds it'),
        ('not-on-backend', 'user.gone', 'the mupdate master places user.gone on be2-svc.cyha.test, which does not hold it'),
        ('unknown-backend', 'user.nowhere', 'the mupdate master places user.nowhere on be9-svc.cyha.test, which no '
                                            'running backend read here is'),
        ('frontend-differs', 'cyrus-ha-lag-be3', 'frontend fe1 on fe1 differs from the mupdate master: lacks '
         'cyrus-ha-lag-be3, user.alice, user.dave, user.gone, user.nowhere (5)')]
    assert result['checked']['violations_by_kind'] == {
        'frontend-differs': 1, 'misplaced': 1, 'missing-at-master': 1, 'not-on-backend': 1, 'unknown-backend': 1}


def test_a_mailbox_on_two_backends_and_a_backend_running_twice():
    hosts = murder(be2={'user.bob': entry('b1'), 'user.alice': entry('a2'), 'user.copy': entry('d1')})
    hosts['spare']['instances']['be1'].update(running=True, mailboxes={'user.alice': entry('a1')})
    result = mailinvariants.mupdate_list(hosts)
    assert ('two-masters', '*', 'backend be1-svc.cyha.test runs twice: instance be1 on be1 and instance be1 on spare') \
        in kinds(result)
    assert ('held-twice', 'user.alice', 'user.alice is held by backend be1-svc.cyha.test and by backend '
                                        'be2-svc.cyha.test') in kinds(result)
    assert ('held-twice', 'user.dave', 'user.dave on be3-svc.cyha.test has the unique id d1 of user.copy on '
                                       'be2-svc.cyha.test') in kinds(result)


def test_lists_that_cannot_be_read_are_errors_not_a_pass():
    hosts = murder()
    hosts['be2']['instances']['be2'] = {'murder_role': 'backend', 'servername': 'be2-svc.cyha.test', 'running': True,
                                        'mailboxes_error': 'ctl_mboxlist failed (exit status 75): fatal error: '
                                                           "can't read mailboxes file"}
    hosts['fe1'] = None                                          # unreachable: no facts
    hosts['be3']['instances']['odd'] = 'not a mapping'
    hosts['be3']['instances']['nameless'] = {'murder_role': 'backend', 'servername': None, 'running': True,
                                             'mailboxes': {}}
    hosts['fe2'] = {'instances': {'fe2': {'murder_role': 'frontend', 'servername': 'fe2', 'running': True}}}
    del hosts['mupdate']
    result = mailinvariants.mupdate_list(hosts)
    assert result['ok'] is False
    assert result['errors'] == [
        "be2: the mailbox list of instance be2 could not be read: ctl_mboxlist failed (exit status 75): fatal error: "
        "can't read mailboxes file",
        'be3: instance nameless runs as a backend without a servername',
        'be3: the facts of instance odd are not a mapping',
        'fe1: no Cyrus facts (cyrus.ha.cyrus_facts with mailbox_lists: true)',
        'fe2: instance fe2 runs and its mailbox list was not gathered (mailbox_lists: true)',
        'expected one running mupdate master, found 0 (none)']


def test_a_long_list_of_violations_is_cut_and_counted():
    master = {f'user.u{i}': {'server': 'be1-svc.cyha.test', 'mbtype': 'er'} for i in range(50)}
    result = mailinvariants.mupdate_list(murder(master=master, frontend=master), limit=3)
    assert [v['kind'] for v in result['violations']] == ['missing-at-master'] * 3 + ['not-on-backend'] * 3
    assert result['checked']['violations_by_kind'] == {'missing-at-master': 4, 'not-on-backend': 50}
