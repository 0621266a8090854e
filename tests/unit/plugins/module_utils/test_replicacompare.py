# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugin_utils.replication and its filters: a master's mailboxes against its replica's, and what an old
master holds that the new one lacks."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.filter.replication_diff import FilterModule as DiffFilters
from ansible_collections.cyrus.ha.plugins.filter.replication_diverged import FilterModule as DivergedFilters
from ansible_collections.cyrus.ha.plugins.module_utils.replicacompare import ReplicationDataError, diff, diverged


def box(uniqueid='tqbkjob05xvk3u2rj297w2n0', uidvalidity=1796290794, uidnext=17, highestmodseq=17, messages=16,
        **extra):
    return dict(uniqueid=uniqueid, uidvalidity=uidvalidity, uidnext=uidnext, highestmodseq=highestmodseq,
                messages=messages, **extra)


UNREADABLE = {'uniqueid': None, 'uidvalidity': None, 'uidnext': None, 'highestmodseq': None, 'messages': None,
              'problem': 'mbexamine could not open it (see the syslog of mbexamine)'}


def test_equal_sides():
    side = {'user.alice': box(), 'user.alice.2nd level with spaces': box('b' * 24, uidnext=1, messages=0)}
    assert diff(side, dict(side)) == {'equal': True, 'missing': [], 'extra': [], 'differ': [],
                                      'counts': {'master': 2, 'replica': 2}}


def test_missing_extra_and_differing_mailboxes_sorted():
    master = {'user.zed': box('z' * 24), 'user.alice': box(), 'user.carol': box('c' * 24), 'user.bob': box('b' * 24)}
    replica = {'user.alice': box(uidnext=12, messages=11), 'user.dave': box('d' * 24), 'user.bob': box('x' * 24),
               'user.aaron': box('a' * 24)}
    assert diff(master, replica) == {
        'equal': False,
        'missing': ['user.carol', 'user.zed'],
        'extra': ['user.aaron', 'user.dave'],
        'differ': [{'mailbox': 'user.alice', 'fields': {'uidnext': {'master': 17, 'replica': 12},
                                                        'messages': {'master': 16, 'replica': 11}}},
                   {'mailbox': 'user.bob', 'fields': {'uniqueid': {'master': 'b' * 24, 'replica': 'x' * 24}}}],
        'counts': {'master': 4, 'replica': 4}}


def test_a_mailbox_unreadable_on_both_sides_is_never_equal():
    result = diff({'user.bob': dict(UNREADABLE)}, {'user.bob': dict(UNREADABLE)})
    assert result['equal'] is False
    assert result['differ'] == [{'mailbox': 'user.bob', 'fields': {
        'uniqueid': {'master': None, 'replica': None}, 'uidvalidity': {'master': None, 'replica': None},
        'uidnext': {'master': None, 'replica': None}, 'highestmodseq': {'master': None, 'replica': None},
        'messages': {'master': None, 'replica': None},
        'problem': {'master': UNREADABLE['problem'], 'replica': UNREADABLE['problem']}}}]


def test_one_unknown_field_differs_with_the_problem():
    master = {'user.bob': box(highestmodseq=None, problem='no highestmodseq in its mbexamine output')}
    result = diff(master, {'user.bob': box()})
    assert result['differ'] == [{'mailbox': 'user.bob', 'fields': {
        'highestmodseq': {'master': None, 'replica': 17},
        'problem': {'master': 'no highestmodseq in its mbexamine output', 'replica': None}}}]


def test_numbers_as_digit_strings_and_missing_keys():
    result = diff({'user.a': box(uidnext='17', messages=' 16')}, {'user.a': {'uniqueid': 'tqbkjob05xvk3u2rj297w2n0'}})
    assert result['differ'][0]['fields'] == {'uidvalidity': {'master': 1796290794, 'replica': None},
                                             'uidnext': {'master': 17, 'replica': None},
                                             'highestmodseq': {'master': 17, 'replica': None},
                                             'messages': {'master': 16, 'replica': None}}


def test_empty_sides():
    assert diff({}, {}) == {'equal': True, 'missing': [], 'extra': [], 'differ': [],
                            'counts': {'master': 0, 'replica': 0}}
    assert diff({'user.a': box()}, {})['missing'] == ['user.a']


@pytest.mark.parametrize('master, replica, message', [
    (None, {}, 'the master mailboxes must be a mapping of mailbox name to its state (the mailboxes of '
               'cyrus.ha.cyrus_replication_facts), not NoneType'),
    ({}, ['user.a'], 'the replica mailboxes must be a mapping of mailbox name to its state (the mailboxes of '
                     'cyrus.ha.cyrus_replication_facts), not list'),
    ({}, 'user.a', 'the replica mailboxes must be a mapping of mailbox name to its state (the mailboxes of '
                   'cyrus.ha.cyrus_replication_facts), not str'),
    ({'user.a': 17}, {}, 'master mailbox user.a: its state must be a mapping with uniqueid, uidvalidity, uidnext, '
                         'highestmodseq, messages, not int'),
    ({'user.a': box(uidnext='seventeen')}, {}, "master mailbox user.a: uidnext is 'seventeen', not a whole number"),
    ({'user.a': box(uidnext=True)}, {}, 'master mailbox user.a: uidnext is True, not a whole number'),
    ({'user.a': box(uidnext=1.5)}, {}, 'master mailbox user.a: uidnext is 1.5, not a whole number'),
    ({'user.a': box(uniqueid=42)}, {}, 'master mailbox user.a: uniqueid is 42, not a string'),
    ({7: box()}, {}, 'master mailbox name 7 is not a string'),
])
def test_hostile_inputs_are_refused_with_a_clear_message(master, replica, message):
    with pytest.raises(ReplicationDataError) as caught:
        diff(master, replica)
    assert str(caught.value) == message
    with pytest.raises(AnsibleFilterError) as caught:
        DiffFilters().filters()['replication_diff'](master, replica)
    assert caught.value.message == f'cyrus.ha.replication_diff: {message}'


def test_the_filter_returns_the_diff():
    assert DiffFilters().filters()['replication_diff']({'user.a': box()}, {'user.a': box()})['equal'] is True


# ---------------------------------------------------------------------------------------------
# diverged
# ---------------------------------------------------------------------------------------------

def test_nothing_diverged_when_the_new_master_has_everything_and_more():
    old = {'user.alice': box(), 'user.bob': box('b' * 24, uidnext=5, highestmodseq=7)}
    new = {'user.alice': box(uidnext=20, highestmodseq=25, messages=19), 'user.bob': box('b' * 24, uidnext=5,
                                                                                         highestmodseq=7),
           'user.carol': box('c' * 24)}
    assert diverged(old, new) == []


def test_the_lag_marker_is_left_out_only_when_asked():
    old = {'cyrus-ha-lag-be3': box(uidnext=2, highestmodseq=9), 'user.alice': box()}
    new = {'cyrus-ha-lag-be3': box(uidnext=2, highestmodseq=8), 'user.alice': box()}
    assert diverged(old, new, skip_markers=True) == []
    assert diverged({'cyrus-ha-lag-be3': box()}, {}, skip_markers=True) == []
    # a replica that must hold everything lacks the marker like any mailbox
    assert diverged({'cyrus-ha-lag-be3': box()}, {}) == [{'mailbox': 'cyrus-ha-lag-be3', 'reason': 'only on the old master'}]


def test_every_kind_of_divergence_sorted():
    old = {'user.zed': box('z' * 24),
           'user.alice': box(),
           'user.bob': box('b' * 24, highestmodseq=30),
           'user.carol': box('c' * 24),
           'user.dave': box('d' * 24, uidvalidity=1),
           'user.erin': dict(UNREADABLE),
           'user.fay': box('f' * 24, uidnext=9, highestmodseq=40)}
    new = {'user.alice': box(uidnext=12, messages=11),
           'user.bob': box('b' * 24, highestmodseq=20),
           'user.carol': box('x' * 24),
           'user.dave': box('d' * 24, uidvalidity=2),
           'user.erin': box('e' * 24),
           'user.fay': box('f' * 24, uidnext=5, highestmodseq=10)}
    assert diverged(old, new) == [
        {'mailbox': 'user.alice', 'reason': 'uidnext 17 on the old master > 12 on the new: messages the new master '
                                            'lacks'},
        {'mailbox': 'user.bob', 'reason': 'highestmodseq 30 on the old master > 20 on the new: changes (flags, '
                                          'expunges) the new master lacks'},
        {'mailbox': 'user.carol', 'reason': f'created on both sides (split brain): uniqueid {"c" * 24} on the old '
                                            f'master, {"x" * 24} on the new'},
        {'mailbox': 'user.dave', 'reason': 'uidvalidity 1 on the old master, 2 on the new'},
        {'mailbox': 'user.erin', 'reason': 'cannot be compared (old master: mbexamine could not open it (see the '
                                           'syslog of mbexamine); uniqueid, uidvalidity, uidnext, highestmodseq, '
                                           'messages unknown)'},
        {'mailbox': 'user.fay', 'reason': 'uidnext 9 on the old master > 5 on the new: messages the new master '
                                          'lacks; highestmodseq 40 on the old master > 10 on the new: changes '
                                          '(flags, expunges) the new master lacks'},
        {'mailbox': 'user.zed', 'reason': 'only on the old master'}]


def test_unknown_on_the_new_side_counts_too():
    found = diverged({'user.a': box()}, {'user.a': box(highestmodseq=None, problem='no highestmodseq in its '
                                                                                   'mbexamine output')})
    assert found == [{'mailbox': 'user.a', 'reason': 'cannot be compared (new master: no highestmodseq in its '
                                                     'mbexamine output; highestmodseq unknown)'}]


def test_the_diverged_filter_and_its_errors():
    replication_diverged = DivergedFilters().filters()['replication_diverged']
    assert replication_diverged({'user.a': box()}, {}) == [{'mailbox': 'user.a', 'reason': 'only on the old master'}]
    assert replication_diverged({'cyrus-ha-lag-be1': box()}, {}, skip_markers=True) == []
    with pytest.raises(AnsibleFilterError) as caught:
        replication_diverged({'user.a': box()}, {}, skip_markers='yes')
    assert caught.value.message == "cyrus.ha.replication_diverged: skip_markers must be true or false, not 'yes'"
    with pytest.raises(AnsibleFilterError) as caught:
        replication_diverged({'user.a': box()}, None)
    assert caught.value.message == ('cyrus.ha.replication_diverged: the new master mailboxes must be a mapping of '
                                    'mailbox name to its state (the mailboxes of cyrus.ha.cyrus_replication_facts), '
                                    'not NoneType')
