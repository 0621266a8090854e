# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.cyrus.ha.plugins.filter.drill_report import drill_report
from ansible_collections.cyrus.ha.plugins.plugin_utils.drill_report import DrillReportError, render, summarize

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
