# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
from pngdata import png_pixels, png_size

from ansible_collections.cyrus.ha.plugins.filter.drill_record import drill_record
from ansible_collections.cyrus.ha.plugins.filter.drill_report import drill_report
from ansible_collections.cyrus.ha.plugins.plugin_utils.drill_report import (
    DrillReportError, build_record, render, summarize, text_width, to_markdown)

from ansible.errors import AnsibleFilterError

# Where the test writes the sample timeline as a PNG, for a person to look at.
REPORTS = pathlib.Path(__file__).resolve().parents[4] / 'build' / 'reports'
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
    assert 'failback outage' not in text      # no login through the frontend after the failback


def test_markdown_has_the_timeline_as_a_mermaid_gantt():
    text = render(DRILL, 'markdown')
    block = text.split('```mermaid\n', 1)[1].split('```', 1)[0]
    assert block.splitlines() == [
        'gantt',
        '    title Failover drill be1 (planned)',
        '    dateFormat x',
        '    axisFormat %S',
        '    section failover',
        '    outage 6.5 s :crit, failover_outage, 0, 6500',
        '    failure injected (be1) :milestone, p0, 0, 0',
        '    volume mounted (spare) :done, p1, 0, 3000',
        '    first IMAP login (fe1) :active, p2, 3000, 6500',
        '    section failback',
        '    failed back (no host) :milestone, p3, 20000, 20000',
    ]
    assert text.index('```mermaid') < text.index('| phase | host |')


def test_mermaid_labels_escape_what_mermaid_reads():
    drill = {'phases': [{'phase': 'a', 'at': T0}, {'phase': 'step: #1; done\nnext', 'at': T0 + 75, 'host': 'h:1'}]}
    block = render(drill, 'markdown').split('```mermaid\n', 1)[1]
    assert '    step#58; #35;1#59; done next (h#58;1) :done, p1, 0, 75000\n' in block
    assert '    axisFormat %M:%S\n' in block     # past a minute


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


# -- the timeline: sections, outages, SVG -------------------------------------------------------------

def phases(host, *steps):
    return [{'phase': phase, 'at': T0 + offset, 'host': host} for phase, offset in steps]


# The evidence of a planned drill in the built-in lab (phases and offsets as one such drill recorded
# them): be1 fails over to the spare and back, checked through fe1.
SAMPLE = {
    'instance': 'be1', 'failure': 'planned', 'engine': 'ansible', 'from': 'be1', 'to': 'spare', 'frontend': 'fe1',
    'name': 'drill-be1-lab',
    'timelines': [
        phases('be1', ('failure injected', 0.0)),
        phases('fe1', ('first IMAP login', 6.519), ('LMTP delivery', 6.805), ('canaries verified', 7.483),
               ('failed back, canaries verified', 12.912)),
        phases('be1', ('instance stopped', 1.204), ('address released', 1.615), ('volume unmounted', 2.067),
               ('volume mounted', 9.982), ('address taken', 10.686), ('instance up', 11.67)),
        phases('spare', ('volume mounted', 3.299), ('address taken', 4.022), ('instance up', 5.195),
               ('instance stopped', 8.668), ('address released', 8.951), ('volume unmounted', 9.26)),
    ],
    'verifications': [{'name': 'after the failover', 'result': verified(8, 8)},
                      {'name': 'after the failback', 'result': verified(8, 8)}],
    'outage_job': outage_job(attempts=4),
    'checks': [{'name': 'instance back on its home node', 'ok': True, 'detail': 'be1'}],
}
SVG = '{http://www.w3.org/2000/svg}'


def test_phases_fall_into_the_failover_and_the_failback_with_an_outage_each():
    report = summarize(build_record(SAMPLE))
    sections = [(p['section'], p['phase'], p['host']) for p in report['phases']]
    assert sections[9] == ('failover', 'canaries verified', 'fe1')
    assert sections[10] == ('failback', 'instance stopped', 'spare')
    assert {s for s, _rows, _outage in sections[:10]} == {'failover'} and {s for s, _rows, _outage in sections[10:]} == {'failback'}
    assert report['outages'] == [
        {'section': 'failover', 'start': 0.0, 'end': 6.519, 'seconds': 6.519, 'from': 'failure injected',
         'until': 'first IMAP login'},
        {'section': 'failback', 'start': 8.668, 'end': 12.912, 'seconds': 4.244, 'from': 'instance stopped',
         'until': 'failed back, canaries verified'}]
    assert report['failover_seconds'] == 6.519 and report['failback_seconds'] == 4.244
    text = to_markdown(report)
    assert '- failback outage (instance stopped to failed back, canaries verified): **4.24 s**' in text
    assert '- outage delivery: delivered after 2.5 s queued (4 attempts), found intact' in text


def test_the_failback_outage_starts_when_the_instance_leaves_the_spare():
    evidence = dict(SAMPLE, timelines=SAMPLE['timelines'] + [phases('be1', ('home link up', 8.1))])
    report = summarize(build_record(evidence))
    assert [p['phase'] for p in report['phases'] if p['section'] == 'failback'][:2] == ['home link up', 'instance stopped']
    assert report['outages'][1]['start'] == 8.668 and report['failback_seconds'] == 4.244


def test_without_a_login_there_is_no_outage_and_no_failback():
    report = summarize({'phases': [{'phase': 'a', 'at': T0}, {'phase': 'b', 'at': T0 + 1, 'host': 'x'}]})
    assert report['outages'] == [] and report['failback_seconds'] is None
    assert {p['section'] for p in report['phases']} == {'failover'}


def texts(root, cls=None):
    return [''.join(t.itertext()) for t in root.iter(f'{SVG}text') if cls is None or t.get('class') == cls]


def text_extent(element, text_width):
    """The estimated left and right edges of a text element, tspan by tspan, as to_svg estimates them."""
    size = float(element.get('font-size'))
    bold = element.get('font-weight') == 'bold'
    width = text_width(element.text or '', size, bold)
    for span in element:
        width += text_width(span.text or '', size, span.get('font-weight', 'bold' if bold else 'normal') == 'bold')
        width += text_width(span.tail or '', size, bold)
    x = float(element.get('x'))
    anchor = element.get('text-anchor', 'start')
    left = x - width if anchor == 'end' else x - width / 2 if anchor == 'middle' else x
    return left, left + width


def assert_nothing_past_the_edges(root):
    width = float(root.get('width'))
    assert root.get('viewBox') == f'0 0 {root.get("width")} {root.get("height")}'
    for element in root.iter(f'{SVG}text'):
        left, right = text_extent(element, text_width)
        assert 0 <= left and right <= width, f'{"".join(element.itertext())!r} runs from {left:.0f} to {right:.0f}, width {width:.0f}'


def test_svg_timeline_shows_lanes_outages_and_results():
    svg = render(build_record(SAMPLE), 'svg')
    root = ET.fromstring(svg)
    assert texts(root, 'lane') == ['be1', 'spare', 'fe1', 'spare', 'be1', 'fe1']     # failover, then failback
    assert texts(root, 'outage-label') == ['outage 6.5 s', 'outage 4.2 s']
    assert len(root.findall(f'.//{SVG}rect[@class="outage"]')) == 2
    phases_drawn = root.findall(f'.//{SVG}g[@class="phase"]')
    assert [g.get('data-section') for g in phases_drawn].count('failover') == 10 and len(phases_drawn) == 17
    all_text = texts(root)
    assert 'Failover (be1 \u2192 spare)' in all_text and 'Failback (spare \u2192 be1), from 8.7 s into the drill' in all_text
    assert 'volume mounted (1.23 s)' in all_text and 'first IMAP login (1.32 s)' in all_text
    assert texts(root, 'result') == ['canaries: 8 of 8 intact (0 missing, 0 changed)',
                                     'outage delivery: delivered after 2.5 s queued (4 attempts), found intact',
                                     'checks: 4 of 4 ok']
    assert 'Failover drill be1 (planned): PASSED' in all_text
    assert root.find(f'{SVG}title').text == (
        'Failover drill be1 (planned): PASSED; failover outage 6.5 s; failback outage 4.2 s')
    assert_nothing_past_the_edges(root)
    assert 'http' not in svg.replace('http://www.w3.org/2000/svg', '') and '<script' not in svg   # self-contained


def test_svg_ticks_never_collide():
    root = ET.fromstring(render(build_record(SAMPLE), 'svg'))
    ticks = [t for t in root.iter(f'{SVG}text') if t.get('class') == 'tick']
    assert [t.text for t in ticks] == [f'{n} s' for n in range(8)] + [f'{n} s' for n in range(5)]
    edges = [text_extent(t, text_width) for t in ticks]
    for (_left, right), (left, _right) in zip(edges, edges[1:]):
        assert right < left or left < edges[0][0] + 1      # apart, or the next section's first tick


@pytest.mark.parametrize('seconds, step', [(12.9, 1), (45, 5), (130, 10), (900, 120), (5400, 600)])
def test_svg_tick_step_is_readable_at_any_length(seconds, step):
    drill = {'phases': [{'phase': 'failure injected', 'at': T0, 'host': 'be1'},
                        {'phase': 'first IMAP login', 'at': T0 + seconds, 'host': 'fe1'}]}
    root = ET.fromstring(render(drill, 'svg'))
    ticks = [t.text for t in root.iter(f'{SVG}text') if t.get('class') == 'tick']
    assert ticks[:2] == ['0 s', f'{step} s']
    assert_nothing_past_the_edges(root)


def test_svg_escapes_names_and_keeps_long_labels_inside():
    drill = dict(DRILL, instance='be<1>', phases=DRILL['phases'] + [
        {'phase': 'a phase with a long name & <markup>, at the very end of the drill', 'at': T0 + 21,
         'host': 'backend-with-a-long-name.mail.example.org'}])
    svg = render(drill, 'svg')
    root = ET.fromstring(svg)
    assert 'Failover drill be&lt;1&gt; (planned): ' in svg
    assert 'a phase with a long name &amp; &lt;markup&gt;, at the very end of the drill (1.00 s)' in svg
    assert texts(root, 'lane') == ['be1', 'spare', 'fe1', '(no host)', 'backend-with-a-long-name.mail.example.org']
    assert texts(root, 'outage-label') == ['outage 6.5 s', 'outage not measured (no login through the frontend timestamped)']
    assert_nothing_past_the_edges(root)


def test_a_failed_drill_shows_what_failed_and_the_traffic():
    evidence = dict(SAMPLE, traffic={'ok': False, 'sessions': 120, 'failed': 3},
                    outage_job={'finished': True, 'failed': True, 'msg': 'gave up after 300 s\n' + 'refused; ' * 40},
                    verifications=[{'name': 'after the failover', 'result': verified(8, 7, missing=['<a@x>'])}])
    record = build_record(evidence)
    assert record['traffic'] == {'ok': False, 'sessions': 120, 'failed': 3}
    root = ET.fromstring(render(record, 'svg'))
    results = texts(root, 'result')
    assert results[0] == 'canaries: 7 of 8 intact (1 missing, 0 changed)'
    assert results[1].startswith('outage delivery: NOT delivered: gave up after 300 s refused; ') and results[1].endswith('\u2026')
    assert results[2] == 'traffic: NOT ok: sessions 120, failed 3'
    assert 'Failover drill be1 (planned): FAILED' in texts(root)
    assert_nothing_past_the_edges(root)
    assert '- traffic: NOT ok: sessions 120, failed 3' in render(record, 'markdown')


@pytest.mark.parametrize('traffic, line', [
    ('all 40 sessions served', 'traffic: all 40 sessions served'),
    (['40 sessions', '0 errors'], 'traffic: 40 sessions, 0 errors'),
    ({'ok': True, 'sessions': 40}, 'traffic: ok: sessions 40'),
])
def test_traffic_is_shown_as_the_record_gives_it(traffic, line):
    root = ET.fromstring(render(dict(DRILL, traffic=traffic), 'svg'))
    assert texts(root, 'result')[2] == line


@pytest.mark.skipif(shutil.which('rsvg-convert') is None, reason='rsvg-convert (librsvg2-bin, make deps) is missing')
def test_svg_renders_to_a_png_of_its_size_that_is_not_blank(tmp_path):
    svg = render(build_record(SAMPLE), 'svg')
    root = ET.fromstring(svg)
    source = tmp_path / 'drill.svg'
    source.write_text(svg, encoding='utf-8')
    REPORTS.mkdir(parents=True, exist_ok=True)
    target = REPORTS / 'drill-timeline-sample.png'
    subprocess.run(['rsvg-convert', '--format', 'png', '--output', str(target), str(source)], check=True,
                   capture_output=True, timeout=60)
    data = target.read_bytes()
    assert png_size(data) == (int(root.get('width')), int(root.get('height')))
    assert len(data) > 20000
    pixels = png_pixels(data)
    assert len(set(pixels)) > 50          # bars, shading and text, not a blank page


REPLICATION = {'lag_before_failure': 0.42, 'caught_up_before_failure': True, 'promotion': 'unplanned', 'forced': True,
               'lost_messages': ['<m1@x>', '<m2@x>'], 'lost_counted_from': 'the traffic journal',
               'diverged': ['user.dave'], 'discarded': True}


def test_a_replica_pairs_drill_shows_its_lag_and_what_the_promotion_lost():
    record = build_record(dict(SAMPLE, engine='replication', replication=REPLICATION))
    markdown = render(record, 'markdown')
    assert ('- replication: lag measured just before the failure: 0.42 s\n'
            '- replication: promotion: unplanned (forced past its lag checks)\n'
            '- replication: RPO: 2 acknowledged message(s) missing after the promotion, counted from the traffic '
            'journal: <m1@x>, <m2@x>\n'
            '- replication: the old master held writes that never replicated, in user.dave; its copy was moved aside '
            '(kept) to move back\n') in markdown
    root = ET.fromstring(render(record, 'svg'))
    assert ('replication: lag before the failure 0.42 s; RPO 2 acknowledged message(s) lost (the traffic journal)'
            in texts(root, 'result'))
    assert_nothing_past_the_edges(root)


def test_a_replica_pairs_drill_without_loss_says_so():
    clean = dict(REPLICATION, forced=False, lost_messages=[], diverged=[], lag_before_failure=None,
                 promotion='planned (drained)')
    markdown = render(build_record(dict(SAMPLE, replication=clean)), 'markdown')
    assert ('- replication: lag measured just before the failure: unknown\n- replication: promotion: planned (drained)\n'
            '- replication: RPO: 0 acknowledged message(s) missing after the promotion, counted from the traffic '
            'journal\n') in markdown


# -- a traffic run's checks: the mupdate list beside the invariants ---------------------------------------------
TRAFFIC_RUN = {'kinds': {'deliver': {'total': 10, 'outcomes': {'ok': 10}}}, 'operations': 10, 'seconds': 1, 'rate': 10,
               'complete': True, 'deliveries': {'accepted': 10, 'failed': 0, 'still_queued': 0},
               'invariants': {'ok': True, 'violations': [], 'errors': [],
                              'checked': {'acknowledged': 10, 'acknowledged_found': 10, 'mailboxes': {'alice': 'be1'}},
                              'murder_lists': {'backends': ['be1.example.org', 'be2.example.org'], 'frontends': ['fe1@fe1'],
                                               'mailboxes': 2, 'mupdate_master': 'mupdate@mupdate',
                                               'mupdate_mailboxes': 2}}}
LISTS_CHECK = 'traffic: the mupdate master lists what the backends hold, the frontends the same'


def test_the_mupdate_list_is_a_check_of_its_own():
    checks = {c['name']: c for c in build_record(dict(EVIDENCE, traffic=TRAFFIC_RUN))['checks']}
    assert checks[LISTS_CHECK] == {'name': LISTS_CHECK, 'ok': True, 'detail': (
        '2 mailboxes at the mupdate master mupdate@mupdate, 2 on backends be1.example.org, be2.example.org, '
        'frontends fe1@fe1')}
    wrong = {'invariant': 'mupdate-list', 'kind': 'missing-at-master', 'mailbox': 'user.bob',
             'detail': "user.bob is on backend be2.example.org and not in the mupdate master's list"}
    broken = json.loads(json.dumps(TRAFFIC_RUN))
    broken['invariants'].update(ok=False, violations=[wrong])
    record = build_record(dict(EVIDENCE, traffic=broken))
    checks = {c['name']: c for c in record['checks']}
    assert checks[LISTS_CHECK]['ok'] is False
    assert checks[LISTS_CHECK]['detail'].endswith(
        "frontends fe1@fe1; 1 wrong: user.bob is on backend be2.example.org and not in the mupdate master's list")
    assert checks['traffic: every invariant holds']['ok'] is False
    assert summarize(record)['passed'] is False
    del broken['invariants']['murder_lists']
    assert LISTS_CHECK not in {c['name'] for c in build_record(dict(EVIDENCE, traffic=broken))['checks']}
