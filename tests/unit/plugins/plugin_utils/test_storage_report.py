# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.cyrus.ha.plugins.plugin_utils.storage_report import (CONSEQUENCES, CROSS, ReportError, build,
                                                                              pair_result)


def check(name, status='pass', reason='ok', **evidence):
    return {'name': name, 'status': status, 'reason': reason, 'evidence': evidence, 'duration': 0.1}


def cross(me, leader='be1', peers=('be1', 'be2', 'be3'), **checks):
    out = {name: check(name) for name in CROSS}
    out.update(checks)
    verdict = 'unsafe' if any(c['status'] == 'fail' for c in out.values()) else 'safe'
    return {'path': '/srv/mail', 'me': me, 'leader': leader, 'peers': list(peers), 'verdict': verdict, 'checks': out}


def single(verdict='safe', **checks):
    return {'path': '/srv/mail', 'verdict': verdict, 'checks': {name: check(name) for name in ('fcntl_locks', 'fsx')}
            | checks}


def test_all_pass_is_safe_with_one_column_per_pair_and_markdown():
    data = {h: {'single': single(), 'cross': cross(h)} for h in ('be1', 'be2', 'be3')}
    data['be2']['cross']['checks']['lock_recovery']['evidence']['recovery_s'] = 0.02
    rep = build(data)
    assert rep['verdict'] == 'safe' and rep['failures'] == [] and rep['leader'] == 'be1'
    assert rep['hosts'] == {'be1': 'safe', 'be2': 'safe', 'be3': 'safe'}
    assert rep['pairs'][0] == {'check': 'lock_exclusion', 'be1 > be2': 'pass', 'be1 > be3': 'pass'}
    assert rep['lock_recovery_s'] == {'be2': 0.02, 'be3': None}
    assert '| lock_exclusion | pass | pass |' in rep['markdown'] and 'Verdict: **safe**' in rep['markdown']
    assert '## Failures' not in rep['markdown']


def test_a_peer_failure_marks_only_its_pair_and_says_what_it_means():
    data = {h: {'single': single(), 'cross': cross(h)} for h in ('be1', 'be2', 'be3')}
    data['be3']['cross'] = cross('be3', lock_exclusion=check('lock_exclusion', 'fail', 'granted here'))
    data['be1']['cross'] = cross('be1', lock_exclusion=check('lock_exclusion', 'fail', 'failed on be3',
                                                             failed_peers=['be3'], gone=[]))
    rep = build(data)
    assert rep['verdict'] == 'unsafe'
    assert rep['pairs'][0] == {'check': 'lock_exclusion', 'be1 > be2': 'pass', 'be1 > be3': 'fail'}
    assert rep['failures'] == [{'check': 'lock_exclusion', 'where': 'be1 > be3', 'status': 'fail',
                                'reason': 'granted here', 'consequence': CONSEQUENCES['lock_exclusion']}]


@pytest.mark.parametrize('leader_check, peer_check, status, reason', [
    (check('excl_race', 'fail', 'be1, be2 each won', failed_peers=[], gone=[]), check('excl_race'), 'fail',
     'be1, be2 each won'),
    (check('excl_race', 'fail', 'be2 did not answer', failed_peers=[], gone=['be2']), check('excl_race'), 'fail',
     'be2 did not answer'),
    (check('excl_race', 'fail', 'be3 did not answer', failed_peers=[], gone=['be3']), check('excl_race'), 'pass',
     'ok'),
    (check('excl_race'), check('excl_race', 'warn', 'nlink 1'), 'warn', 'nlink 1'),
])
def test_pair_result_combines_leader_and_peer(leader_check, peer_check, status, reason):
    got = pair_result({'checks': {'excl_race': leader_check}}, {'checks': {'excl_race': peer_check}}, 'be2',
                      'excl_race')
    assert got == {'status': status, 'reason': reason}


def test_missing_peer_result_fails_its_pair_and_single_host_failures_are_listed():
    data = {'be1': {'single': single('unsafe', fsx=check('fsx', 'fail', 'mismatch')),
                    'cross': cross('be1', peers=('be1', 'be2'))},
            'be2': {'single': None, 'cross': None}}
    rep = build(data, '/srv/mail')
    assert rep['verdict'] == 'unsafe' and rep['hosts'] == {'be1': 'unsafe', 'be2': 'safe'}
    assert {f['where'] for f in rep['failures']} == {'be1', 'be1 > be2'}
    assert rep['single'][1] == {'check': 'mmap_sees_write', 'be1': '-', 'be2': '-'}
    assert [f for f in rep['failures'] if f['where'] == 'be1'][0]['consequence'] == CONSEQUENCES['fsx']


@pytest.mark.parametrize('data, message', [
    ({}, 'the input must be a non-empty mapping of host -> {single, cross}'),
    ([], 'the input must be a non-empty mapping of host -> {single, cross}'),
    ({'be1': 'x'}, "host be1: expected a mapping with \"single\" and \"cross\", got 'x'"),
])
def test_bad_input_names_the_problem(data, message):
    with pytest.raises(ReportError) as err:
        build(data)
    assert str(err.value) == message


def test_measured_visibility_is_a_table_per_pair_and_property():
    data = {h: {'single': single(), 'cross': cross(h, peers=('be1', 'be2'))} for h in ('be1', 'be2')}
    peer = data['be2']['cross']
    peer['run_dir_seen_s'] = 0.0
    peer['checks']['append_visibility'] = check('append_visibility', 'fail', 'late', read={
        'tries': 5, 'at_once': 5, 'never': 0, 'median_s': 0.0, 'max_s': 0.0}, mmap={
        'tries': 5, 'at_once': 1, 'never': 0, 'median_s': 0.38, 'max_s': 0.5})
    peer['checks']['metadata_coherence'] = check('metadata_coherence', 'fail', 'never', new_entry={
        'tries': 1, 'at_once': 0, 'never': 1, 'median_s': None, 'max_s': None})
    rep = build(data)
    assert rep['visibility'] == [
        {'pair': 'be1 > be2', 'property': 'new directory (the run directory) seen', 'at once': '1/1', 'never': '0/1',
         'median': '0 s', 'max': '0 s'},
        {'pair': 'be1 > be2', 'property': 'appended message seen by read()', 'at once': '5/5', 'never': '0/5',
         'median': '0 s', 'max': '0 s'},
        {'pair': 'be1 > be2', 'property': 'appended message seen by an mmap of the index', 'at once': '1/5',
         'never': '0/5', 'median': '0.38 s', 'max': '0.5 s'},
        {'pair': 'be1 > be2', 'property': 'new message file seen', 'at once': '0/1', 'never': '1/1', 'median': '-',
         'max': '-'}]
    assert '| be1 > be2 | appended message seen by an mmap of the index | 1/5 | 0/5 | 0.38 s | 0.5 s |' in rep['markdown']


def test_a_reason_both_hosts_give_is_said_once():
    same = check('append_visibility', 'fail', 'the filesystem stopped answering here')
    leader = cross('be1', peers=('be1', 'be2'), append_visibility=same)
    peer = cross('be2', peers=('be1', 'be2'), append_visibility=same)
    assert pair_result(leader, peer, 'be2', 'append_visibility') == {
        'status': 'fail', 'reason': 'the filesystem stopped answering here'}


def test_the_deep_metadata_curve_is_a_table_with_where_it_falls_off():
    curve = [{'files': 1024, 'create_per_s': 9000.0, 'stat_per_s': 200000.0, 'open_per_s': 90000.0, 'used_mib': 4.0},
             {'files': 262144, 'create_per_s': 3000.0, 'stat_per_s': 150000.0, 'open_per_s': 80000.0,
              'used_mib': 1024.0}]
    single = {'path': '/srv/mail', 'verdict': 'degraded', 'checks': {'metadata_deep': {
        'status': 'warn', 'reason': 'create rate falls off from batch 2 (262144 files): rate 3000/s under half',
        'evidence': {'curve': curve, 'falls_off': {'create': 'from batch 2 (262144 files): rate 3000/s under half'}}}}}
    report = build({'be1': {'single': single}})
    assert report['deep_curve'] == [
        {'host': 'be1', 'files': 1024, 'create/s': 9000.0, 'stat/s': 200000.0, 'open/s': 90000.0, 'used MiB': 4.0,
         'falls off': ''},
        {'host': 'be1', 'files': 262144, 'create/s': 3000.0, 'stat/s': 150000.0, 'open/s': 80000.0,
         'used MiB': 1024.0, 'falls off': 'create'}]
    assert '## Deep metadata curve' in report['markdown']
    assert any(f['check'] == 'metadata_deep' and 'few hundred thousand files' in f['consequence']
               for f in report['failures'])
