# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.cyrus.ha.plugins.filter.drill_record import drill_record
from ansible_collections.cyrus.ha.plugins.filter.drill_report import drill_report
from ansible_collections.cyrus.ha.plugins.plugin_utils.drill_report import DrillReportError, build_record, render, summarize

from ansible.errors import AnsibleFilterError

T0 = 1700000000.0
DRILL = {
    'instance': 'be1', 'failure': 'planned', 'from': 'be1', 'to': 'spare',
    'phases': [
        {'phase': 'first IMAP login', 'at': T0 + 6.5, 'host': 'fe1'},
        {'phase': 'failure injected', 'at': T0, 'host': 'be1'},
        {'phase': 'volume mounted', 'at': str(T0 + 3), 'host': 'spare'},
        {'phase': 'failed back', 'at': T0 + 20},
    ],
    'canaries': {'expected': 3, 'found': 3, 'missing': 0, 'changed': 0},
    'checks': [{'name': 'outage delivery', 'ok': True, 'detail': 'queued | delivered'}],
}


def test_summary_sorts_phases_and_measures_from_the_first():
    report = summarize(DRILL)
    assert [p['phase'] for p in report['phases']] == [
        'failure injected', 'volume mounted', 'first IMAP login', 'failed back']
    assert [p['offset'] for p in report['phases']] == [0.0, 3.0, 6.5, 20.0]
    assert [p['duration'] for p in report['phases']] == [3.0, 3.5, 13.5, 0.0]
    assert report['failover_seconds'] == 6.5 and report['total_seconds'] == 20.0
    assert report['passed'] is True and report['instance'] == 'be1' and report['started_at'] == T0
    json.dumps(report)     # JSON-ready


@pytest.mark.parametrize('change, passed', [
    ({'canaries': {'expected': 3, 'found': 2, 'missing': 1, 'changed': 0}}, False),
    ({'canaries': {'expected': 3, 'found': 2, 'missing': 0, 'changed': 1}}, False),
    ({'checks': [{'name': 'failback', 'ok': False}]}, False),
    ({'canaries': None, 'checks': None}, True),
])
def test_passed_only_without_loss_and_with_every_check_ok(change, passed):
    assert summarize(dict(DRILL, **change))['passed'] is passed


def test_no_login_phase_means_no_failover_time():
    report = summarize({'phases': [{'phase': 'a', 'at': T0}]})
    assert report['failover_seconds'] is None and report['total_seconds'] == 0.0


def test_markdown_names_the_result_the_time_and_every_phase():
    text = render(DRILL, 'markdown')
    assert text.startswith('# Failover drill: be1 (planned)\n')
    assert '- result: **PASSED**' in text and '**6.50 s**' in text
    assert '| volume mounted | spare | 3.00 | 3.50 |' in text
    assert '| outage delivery | yes | queued \\| delivered |' in text
    assert '- canaries: 3 of 3 intact (0 missing, 0 changed)' in text


def test_svg_is_well_formed_with_one_bar_per_phase_and_escapes_names():
    drill = dict(DRILL, instance='be<1>')
    svg = render(drill, 'svg')
    root = ET.fromstring(svg)
    ns = '{http://www.w3.org/2000/svg}'
    bars = [r for r in root.iter(f'{ns}rect') if r.find(f'{ns}title') is not None]
    assert len(bars) == 4
    assert 'be&lt;1&gt; planned failover: 6.50 s to first IMAP login, passed' in svg
    assert any(r.get('fill') == '#2a7' for r in bars)   # the login phase stands out


@pytest.mark.parametrize('drill, fmt, message', [
    ([], 'data', 'the drill record must be a mapping, not list'),
    ({}, 'data', 'phases must be a non-empty list'),
    ({'phases': 'x'}, 'data', 'phases must be a non-empty list'),
    ({'phases': [{'at': 1}]}, 'data', 'phases[0] must be a mapping with a non-empty string "phase"'),
    ({'phases': [{'phase': 'a', 'at': 'soon'}]}, 'data', "phases[0].at (a) must be a number of seconds since the epoch, not 'soon'"),
    ({'phases': [{'phase': 'a', 'at': True}]}, 'data', 'phases[0].at (a) must be a number'),
    ({'phases': [{'phase': 'a', 'at': float('nan')}]}, 'data', 'phases[0].at (a) must be a finite number'),
    ({'phases': [{'phase': 'a', 'at': 1}], 'checks': [{'ok': True}]}, 'data', 'checks[0] must be a mapping with "name" and "ok"'),
    (DRILL, 'pdf', "format must be one of data, markdown, svg, not 'pdf'"),
])
def test_bad_input_names_the_item(drill, fmt, message):
    with pytest.raises(DrillReportError) as info:
        render(drill, fmt)
    assert message in str(info.value)


def test_filter_wraps_errors_with_its_name():
    assert drill_report(DRILL)['failover_seconds'] == 6.5
    with pytest.raises(AnsibleFilterError) as info:
        drill_report({}, 'data')
    assert str(info.value).startswith('cyrus.ha.drill_report: phases must be')


# -- build_record: the record from the evidence a drill gathered -------------------------------------

def verified(expected=3, found=3, missing=(), mismatched=()):
    return {'expected': expected, 'found': found, 'missing': list(missing),
            'mismatched': [{'message_id': m} for m in mismatched]}


def outage_job(attempts=3, message_id='<m-outage@x>', finished=True, failed=False):
    return {'finished': finished, 'failed': failed,
            'canaries': [{'message_id': message_id, 'attempts': attempts, 'queued_seconds': 2.5,
                          'first_refusal': '451 4.4.1 backend gone'}]}


EVIDENCE = {
    'instance': 'be1', 'failure': 'planned', 'engine': 'ansible', 'from': 'be1', 'to': 'spare', 'frontend': 'fe1',
    'name': 'drill-be1-0', 'unused': 'dropped',
    'timelines': [[{'phase': 'failure injected', 'at': T0, 'host': 'be1'}], [],
                  [{'phase': 'first IMAP login', 'at': T0 + 4, 'host': 'fe1'}], None],
    'verifications': [{'name': 'after the failover', 'result': verified()},
                      {'name': 'after the failback', 'result': verified()}],
    'outage_job': outage_job(),
    'checks': [{'name': 'instance back on its home node', 'ok': True, 'detail': 'be1'}],
}


def test_record_from_evidence_keeps_the_drill_and_lists_every_check_in_order():
    record = build_record(EVIDENCE)
    assert {k: record[k] for k in ('instance', 'failure', 'engine', 'from', 'to', 'frontend', 'name')} == {
        'instance': 'be1', 'failure': 'planned', 'engine': 'ansible', 'from': 'be1', 'to': 'spare',
        'frontend': 'fe1', 'name': 'drill-be1-0'}
    assert 'unused' not in record and 'timelines' not in record
    assert [p['phase'] for p in record['phases']] == ['failure injected', 'first IMAP login']
    assert record['canaries'] == {'expected': 3, 'found': 3, 'missing': 0, 'changed': 0}
    assert [(c['name'], c['ok']) for c in record['checks']] == [
        ('every canary intact after the failover', True), ('every canary intact after the failback', True),
        ('the delivery made during the outage arrives, intact', True), ('instance back on its home node', True)]
    assert record['checks'][2]['detail'] == ('refused 2 time(s) while the instance was away (451 4.4.1 backend '
                                             'gone), kept queued and accepted after 2.5 s')
    assert record['outage_delivery'] == {'delivered': True, 'found': True, 'attempts': 3, 'queued_seconds': 2.5,
                                         'first_refusal': '451 4.4.1 backend gone', 'error': ''}
    report = summarize(record)
    assert report['passed'] is True and report['failover_seconds'] == 4.0


@pytest.mark.parametrize('change, failed_check, detail', [
    ({'verifications': [{'name': 'after the failover', 'result': verified(found=2, missing=['<a@x>'])}]},
     'every canary intact after the failover', '2 of 3'),
    ({'verifications': [{'name': 'after the failover', 'result': verified(mismatched=['<m-outage@x>'])}]},
     'every canary intact after the failover', '3 of 3'),
    ({'outage_job': outage_job(finished=False) | {'msg': ''}}, 'the delivery made during the outage arrives, intact',
     'not delivered: not finished'),
    ({'outage_job': {'finished': True, 'failed': True, 'msg': 'gave up after 300 s'}},
     'the delivery made during the outage arrives, intact', 'not delivered: gave up after 300 s'),
    ({'outage_job': outage_job(message_id='<a@x>'), 'verifications': [
        {'name': 'after the failover', 'result': verified(found=2, missing=['<a@x>'])}]},
     'the delivery made during the outage arrives, intact',
     'refused 2 time(s) while the instance was away (451 4.4.1 backend gone), kept queued and accepted after 2.5 s'),
])
def test_a_loss_fails_the_check_that_names_it(change, failed_check, detail):
    record = build_record(dict(EVIDENCE, **change))
    failed = {c['name']: c['detail'] for c in record['checks'] if not c['ok']}
    assert failed[failed_check] == detail
    assert summarize(record)['passed'] is False


def test_without_an_outage_delivery_there_is_no_outage_check():
    evidence = {k: v for k, v in EVIDENCE.items() if k != 'outage_job'}
    record = build_record(evidence)
    assert 'outage_delivery' not in record
    assert [c['name'] for c in record['checks']] == [
        'every canary intact after the failover', 'every canary intact after the failback', 'instance back on its home node']


def test_first_attempt_is_said_plainly():
    record = build_record(dict(EVIDENCE, outage_job=outage_job(attempts=1)))
    assert record['checks'][2]['detail'] == 'accepted at the first attempt'


@pytest.mark.parametrize('evidence, message', [
    ([], 'the drill evidence must be a mapping, not list'),
    (dict(EVIDENCE, timelines='x'), 'timelines must be a list of phase lists'),
    (dict(EVIDENCE, timelines=[{'phase': 'a'}]), 'timelines[0] must be a list of phases, not dict'),
    (dict(EVIDENCE, verifications=[]), 'verifications must hold at least one check of the canaries'),
    (dict(EVIDENCE, verifications=[{'name': 'x'}]),
     'verifications[0] must be a mapping with a string "name" and the imap_check verify result as "result"'),
    (dict(EVIDENCE, verifications=[{'name': 'x', 'result': {'expected': '3', 'found': 3}}]),
     "verifications[0] (x): result.expected must be a whole number, not '3'"),
    (dict(EVIDENCE, checks='ok'), 'checks must be a list of {name, ok, detail} mappings'),
])
def test_bad_evidence_is_named(evidence, message):
    with pytest.raises(DrillReportError) as info:
        build_record(evidence)
    assert str(info.value) == message


def test_the_filter_names_itself_in_its_error():
    with pytest.raises(AnsibleFilterError) as info:
        drill_record([])
    assert str(info.value) == 'cyrus.ha.drill_record: the drill evidence must be a mapping, not list'
