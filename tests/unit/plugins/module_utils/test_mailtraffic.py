# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The traffic generator's profile, journal and summary (the traffic itself runs against real Cyrus in
tests/integration/test_drill_traffic.py)."""

from __future__ import annotations

import json
import os
import random

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import mailtraffic

USERS = [{'name': 'alice', 'password': 'a'}, {'name': 'bob', 'password': 'b'}]


def profile(**over):
    return dict({'imap_host': 'fe1.example.org', 'tag': 'drill-be1-1', 'users': USERS}, **over)


def test_a_profile_gets_its_defaults_and_the_frontend_for_lmtp():
    p = mailtraffic.load_profile(profile())
    assert p['rate'] == 20.0 and p['imap_port'] == 993 and p['lmtp_port'] == 24
    assert p['lmtp_host'] == 'fe1.example.org' and p['recipients'] == ['alice', 'bob']
    assert p['mix'] == {'deliver': 5, 'append': 2, 'fetch': 2, 'store': 1}
    assert p['probe_interval'] == 0.0 and p['probe_users'] == ['alice', 'bob']


@pytest.mark.parametrize('over, message', [
    ({'rate': 0}, 'traffic profile: rate must be a finite number above 0 up to 1000, not 0'),
    ({'rate': float('nan')}, 'traffic profile: rate must be a finite number above 0 up to 1000, not nan'),
    ({'imap_host': 'fe1\r\nA1 LOGOUT'}, 'traffic profile: imap_host must be non-empty text without control characters'),
    ({'imap_port': 70000}, 'traffic profile: imap_port must be a port number from 1 to 65535, not 70000'),
    ({'tag': '../x'}, "traffic profile: tag must be 1 to 64 letters, digits, dots, dashes or underscores, not '../x'"),
    ({'workers': 0}, 'traffic profile: workers must be a whole number from 1 to 1000, not 0'),
    ({'idle_sessions': True}, 'traffic profile: idle_sessions must be a whole number from 0 to 1000, not True'),
    ({'mix': {'deliver': 0}}, "traffic profile: mix must map some of deliver, append, fetch, store to weights from "
                              "0 to 1000, not all 0, not {'deliver': 0}"),
    ({'mix': {'expunge': 1}}, "traffic profile: mix must map some of deliver, append, fetch, store to weights from "
                              "0 to 1000, not all 0, not {'expunge': 1}"),
    ({'users': []}, 'traffic profile: users must be a non-empty list of {name, password}'),
    ({'users': [{'name': 'alice'}]}, 'traffic profile: users[0] must be a mapping of name and password'),
    ({'users': [{'name': 'alice', 'password': 'x\n'}]},
     'traffic profile: users[0].password must be non-empty text without control characters'),
    ({'recipients': ['alice bob']}, 'traffic profile: recipients must be a non-empty list of addresses '
                                    '(printable ASCII, no spaces)'),
    ({'ca_path': '/nonexistent/ca.pem'}, 'traffic profile: ca_path /nonexistent/ca.pem cannot be used as a CA file: '
                                         'No such file or directory'),
    ({'rate_limit': 3}, 'unknown key(s) in the traffic profile: rate_limit'),
    ({'probe_interval': 0.01}, 'traffic profile: probe_interval must be 0 (no prober) or from 0.05 to 3600 s, not 0.01'),
    ({'probe_interval': -1}, 'traffic profile: probe_interval must be a finite number from 0 to 3600, not -1'),
    ({'probe_users': ['carol']}, "traffic profile: probe_users must be a list of some of the users' names, not ['carol']"),
    ({'size': 1e3}, 'traffic profile: size must be a whole number from 64 to 10485760, not 1000.0'),
    ({'recipients': ['alice', 'carol@example.org']},
     "traffic profile: recipients carol@example.org are not among the users: every mailbox delivered to is read back "
     "with its user's password"),
])
def test_a_bad_profile_is_refused_naming_the_key(over, message):
    with pytest.raises(mailtraffic.ProfileError) as err:
        mailtraffic.load_profile(profile(**over))
    assert str(err.value) == message


def test_messages_are_unique_crlf_and_carry_their_message_id():
    rng = random.Random(7)
    first_id, first = mailtraffic.make_message('t', 1, 'deliver', 'alice', 512, rng)
    second_id, second = mailtraffic.make_message('t', 1, 'deliver', 'alice', 512, rng)
    assert first_id != second_id and first != second
    assert first_id.startswith('<cyrus-ha-traffic-t-0-deliver-1-')
    assert b'\n' not in first.replace(b'\r\n', b'')
    assert mailtraffic.message_id_of(first) == first_id
    assert mailtraffic.message_id_of(b'Subject: x\r\n\r\nMessage-ID: <not-a-header>\r\n') is None


def test_the_journal_keeps_every_whole_line_of_a_killed_run(tmp_path):
    path = str(tmp_path / 'journal.jsonl')
    journal = mailtraffic.Journal(path)
    journal.write({'op': 'deliver', 't': 1.0, 'end': 1.1, 'outcome': 'ok'})
    journal.close()
    with open(path, 'a', encoding='utf-8') as handle:   # what a SIGKILL in the middle of a write leaves
        handle.write('{"op": "append", "t": 2.0, "end"')
    assert mailtraffic.read_journal(path) == [{'op': 'deliver', 't': 1.0, 'end': 1.1, 'outcome': 'ok'}]
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_a_line_written_after_the_stop_still_lands(tmp_path):
    """An operation that outlives the stop (several timeouts long) still journals what the client saw."""
    path = str(tmp_path / 'journal.jsonl')
    journal = mailtraffic.Journal(path)
    journal.write({'op': 'run', 't': 1.0, 'outcome': 'stopped'})
    journal.close()
    journal.write({'op': 'append', 't': 0.5, 'end': 1.5, 'outcome': 'ok'})
    assert [r['op'] for r in mailtraffic.read_journal(path)] == ['run', 'append']


def test_a_delivery_left_deferred_by_a_killed_run_counts_as_not_delivered():
    records = [op('deliver', 1.0, 'deferred', message_id='<m1>', attempt=1, kind='refused'),
               op('deliver', 1.5, 'deferred', message_id='<m1>', attempt=2, kind='refused'),
               op('deliver', 2.0, 'deferred', message_id='<m2>', attempt=1, kind='connect'),
               op('deliver', 2.5, 'ok', message_id='<m2>', attempt=2, queued=0.5)]
    assert mailtraffic.summarize(records)['deliveries'] == {'accepted': 1, 'deferred_then_accepted': 1,
                                                            'max_queued': 0.5, 'failed': 0, 'still_queued': 1}


def test_the_journal_refuses_a_symlink_planted_in_its_place(tmp_path):
    (tmp_path / 'target').write_text('')
    os.symlink(tmp_path / 'target', tmp_path / 'journal.jsonl')
    with pytest.raises(OSError):
        mailtraffic.Journal(str(tmp_path / 'journal.jsonl'))


def op(name, t, outcome, end=None, **extra):
    return dict({'op': name, 'user': 'alice', 't': t, 'end': end if end is not None else t + 0.1,
                 'outcome': outcome}, **extra)


def test_the_outage_runs_from_the_first_failure_to_the_end_of_the_first_success_after_it():
    records = [{'op': 'run', 't': 0.0, 'outcome': 'started'},
               op('append', 1.0, 'ok'), op('append', 2.0, 'failed', kind='refused'),
               op('append', 2.5, 'failed', kind='timeout', end=12.5), op('append', 3.0, 'ok', end=3.4),
               op('fetch', 1.0, 'ok'), op('fetch', 5.0, 'failed', kind='login'), op('fetch', 6.0, 'ok', end=6.2),
               op('fetch', 8.0, 'failed', kind='login'), op('fetch', 9.0, 'ok', end=9.3),
               op('deliver', 1.0, 'deferred', message_id='<m1>', attempt=1, kind='refused'),
               op('deliver', 1.5, 'ok', message_id='<m1>', attempt=2, queued=0.5),
               op('deliver', 1.6, 'failed', message_id='<m2>', attempt=1, kind='refused', code=550),
               op('deliver', 20.0, 'queued', message_id='<m3>', attempt=4, kind='queued'),
               {'op': 'run', 't': 20.0, 'outcome': 'stopped'}]
    summary = mailtraffic.summarize(records)
    assert summary['complete'] and summary['seconds'] == 20.0 and summary['operations'] == 13
    assert summary['outages']['append'] == {'windows': [[2.0, 3.4, 'alice']], 'longest': 1.4, 'by_user': {'alice': 1.4},
                                            'gaps': [[1.1, 3.4, 'alice']], 'longest_gap': 2.3}
    assert summary['outages']['fetch'] == {'windows': [[5.0, 6.2, 'alice'], [8.0, 9.3, 'alice']], 'longest': 1.3,
                                           'by_user': {'alice': 1.3},
                                           'gaps': [[1.1, 6.2, 'alice'], [6.2, 9.3, 'alice']], 'longest_gap': 5.1}
    assert summary['outages']['deliver']['windows'] == [[1.0, 1.6, 'alice'], [1.6, 1.7, 'alice']]
    assert summary['kinds']['append']['outcomes'] == {'ok': 2, 'failed': 2}
    assert summary['kinds']['append']['errors'] == {'refused': 1, 'timeout': 1}
    assert summary['deliveries'] == {'accepted': 1, 'deferred_then_accepted': 1, 'max_queued': 0.5, 'failed': 1,
                                     'still_queued': 1}
    assert 'queued' not in summary['kinds']['deliver']['outcomes']


def test_an_outage_still_open_at_the_end_lasts_to_the_last_operation():
    summary = mailtraffic.summarize([op('fetch', 1.0, 'ok'), op('fetch', 2.0, 'failed', kind='connect'),
                                     op('fetch', 3.0, 'failed', kind='connect', end=3.5)])
    assert summary['outages']['fetch'] == {'windows': [[2.0, 3.5, 'alice']], 'longest': 1.5, 'by_user': {'alice': 1.5},
                                           'gaps': [[1.1, 3.5, 'alice']], 'longest_gap': 2.4}
    assert not summary['complete']
    assert mailtraffic.outage_text(summary) == 'fetch 1.50 s'


def test_a_journal_line_without_times_is_not_counted():
    assert mailtraffic.summarize([{'op': 'fetch', 'outcome': 'ok'}, json.loads('{"op": "fetch", "t": "x"}')])[
        'operations'] == 0


def test_a_user_served_elsewhere_does_not_end_the_outage_of_another():
    """bob's backend serves him throughout; alice's is away from 2.0 to 9.0: her outage is 7 s, not the
    gaps between bob's successes."""
    records = [op('fetch', 1.0, 'ok')]
    records += [dict(op('fetch', t, 'failed', kind='select'), user='alice') for t in (2.0, 4.0, 6.0, 8.0)]
    records += [dict(op('fetch', t, 'ok'), user='bob') for t in (3.0, 5.0, 7.0)]
    records.append(op('fetch', 8.9, 'ok'))
    outage = mailtraffic.summarize(records)['outages']['fetch']
    assert outage == {'windows': [[2.0, 9.0, 'alice']], 'longest': 7.0, 'by_user': {'alice': 7.0, 'bob': 0.0},
                      'gaps': [[1.1, 9.0, 'alice'], [3.1, 5.1, 'bob'], [5.1, 7.1, 'bob']], 'longest_gap': 7.9}
    # alice's gap runs from her last success (the end of the fetch at 1.0), not from bob's at 7.1; bob's sparse
    # operations leave gaps of their own (2 s apart) though he saw no failure


def test_a_prober_whose_operations_hang_then_succeed_shows_the_gap_without_any_failure():
    """A backend cut off the network: the prober's logins (one every 0.1 s) hang and all succeed once it is back.
    No operation failed, so no window opens; the gap between two successes is the outage the user saw."""
    records = [op('login', t / 10, 'ok') for t in range(0, 11)]                  # ok until 1.1
    records += [op('login', t / 10, 'ok', end=3.05) for t in range(11, 30)]       # hung from 1.1, served at 3.05
    records += [op('login', t / 10, 'ok') for t in range(30, 40)]
    outage = mailtraffic.summarize(records)['outages']['login']
    assert outage['windows'] == [] and outage['longest'] == 0.0
    assert outage['gaps'] == [[1.1, 3.05, 'alice']] and outage['longest_gap'] == 1.95
