# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render a failover drill (timestamped phases, canary evidence) as JSON data, a Markdown summary
and an SVG timeline, on the controller."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

FORMATS = ('data', 'markdown', 'svg')
# The phase that ends the outage as users see it: the failover time runs from the first phase to it.
SERVED_PHASE = 'first IMAP login'


class DrillReportError(ValueError):
    """The drill record cannot be rendered; the message names the offending item."""


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DrillReportError(f'{where} must be a number of seconds since the epoch, not {value!r}')
    try:
        number = float(value)
    except ValueError:
        raise DrillReportError(f'{where} must be a number of seconds since the epoch, not {value!r}') from None
    if not math.isfinite(number):
        raise DrillReportError(f'{where} must be a finite number, not {value!r}')
    return number


def summarize(drill) -> dict:
    """Check and normalise a drill record: phases sorted by time, each with its offset from the
    first phase and its duration (until the next phase); failover_seconds (first phase to the first
    IMAP login) and passed (nothing lost or changed, every step ok)."""
    if not isinstance(drill, Mapping):
        raise DrillReportError(f'the drill record must be a mapping, not {type(drill).__name__}')
    phases = drill.get('phases')
    if not isinstance(phases, Sequence) or isinstance(phases, (str, bytes)) or not phases:
        raise DrillReportError('phases must be a non-empty list of {phase, at} mappings')
    rows = []
    for index, phase in enumerate(phases):
        if not isinstance(phase, Mapping) or not isinstance(phase.get('phase'), str) or not phase['phase']:
            raise DrillReportError(f'phases[{index}] must be a mapping with a non-empty string "phase"')
        row = dict(phase)
        row['at'] = _number(phase.get('at'), f'phases[{index}].at ({phase["phase"]})')
        rows.append(row)
    rows.sort(key=lambda r: r['at'])
    start = rows[0]['at']
    for index, row in enumerate(rows):
        row['offset'] = round(row['at'] - start, 3)
        row['duration'] = round(rows[index + 1]['at'] - row['at'], 3) if index + 1 < len(rows) else 0.0
    served = [r for r in rows if r['phase'] == SERVED_PHASE]
    canaries = dict(drill.get('canaries') or {})
    checks = list(drill.get('checks') or [])
    for index, check in enumerate(checks):
        if not isinstance(check, Mapping) or 'name' not in check or 'ok' not in check:
            raise DrillReportError(f'checks[{index}] must be a mapping with "name" and "ok"')
    lost = int(canaries.get('missing', 0) or 0) + int(canaries.get('changed', 0) or 0)
    report = {key: value for key, value in drill.items() if key not in ('phases', 'canaries', 'checks')}
    report.update({
        'phases': rows,
        'started_at': start,
        'total_seconds': round(rows[-1]['at'] - start, 3),
        'failover_seconds': round(served[0]['at'] - start, 3) if served else None,
        'canaries': canaries,
        'checks': checks,
        'passed': lost == 0 and all(bool(c['ok']) for c in checks),
    })
    return report


# What a drill's evidence is made of (build_record's input): imap_check results and the async job of the
# delivery made during the outage, as the cyrus.ha.drill role registers them.
RECORD_KEYS = ('instance', 'failure', 'engine', 'from', 'to', 'frontend', 'name')


def _verification(item, index: int) -> tuple[str, Mapping]:
    if not isinstance(item, Mapping) or not isinstance(item.get('name'), str) or not isinstance(item.get('result'), Mapping):
        raise DrillReportError(f'verifications[{index}] must be a mapping with a string "name" and the imap_check '
                               f'verify result as "result"')
    result = item['result']
    for key in ('expected', 'found'):
        if isinstance(result.get(key), bool) or not isinstance(result.get(key), int):
            raise DrillReportError(f'verifications[{index}] ({item["name"]}): result.{key} must be a whole number, '
                                   f'not {result.get(key)!r}')
    return item['name'], result


def _outage_delivery(job, verified: Mapping) -> dict:
    """What became of the delivery made during the outage (the async imap_check deliver job)."""
    job = job if isinstance(job, Mapping) else {}
    canaries = job.get('canaries') if isinstance(job.get('canaries'), list) else []
    canary = canaries[0] if len(canaries) == 1 and isinstance(canaries[0], Mapping) else {}
    delivered = bool(job.get('finished')) and not job.get('failed') and bool(canary)
    missing = set(verified.get('missing') or [])
    mismatched = {m.get('message_id') for m in verified.get('mismatched') or [] if isinstance(m, Mapping)}
    found = bool(canary) and canary.get('message_id') not in missing | mismatched
    return {'delivered': delivered, 'found': found, 'attempts': int(canary.get('attempts') or 0),
            'queued_seconds': canary.get('queued_seconds', 0), 'first_refusal': canary.get('first_refusal'),
            'error': '' if delivered else str(job.get('msg') or ('not finished' if job else 'not started'))}


def _outage_detail(outage: Mapping) -> str:
    if not outage['delivered']:
        return f'not delivered: {outage["error"]}'
    if outage['attempts'] > 1:
        return (f'refused {outage["attempts"] - 1} time(s) while the instance was away ({outage["first_refusal"]}), '
                f'kept queued and accepted after {outage["queued_seconds"]} s')
    return 'accepted at the first attempt'


def build_record(pieces) -> dict:
    """The drill record summarize() reads, from the evidence a drill gathered on its hosts.

    pieces: instance, failure, engine, from, to, frontend, name (kept as they are); timelines, a list of
    phase lists (one per host that timestamped phases; empty or missing ones are skipped); verifications,
    [{name, result}] with the imap_check verify result of each check of the canaries (the first one gives
    the canary counts); outage_job, the async job of the delivery made during the outage (or nothing when
    the drill made none); checks, further checks of the engine ({name, ok, detail}), appended last.
    """
    if not isinstance(pieces, Mapping):
        raise DrillReportError(f'the drill evidence must be a mapping, not {type(pieces).__name__}')
    record = {key: pieces[key] for key in RECORD_KEYS if pieces.get(key) not in (None, '')}
    timelines = pieces.get('timelines') or []
    if not isinstance(timelines, Sequence) or isinstance(timelines, (str, bytes)):
        raise DrillReportError('timelines must be a list of phase lists')
    record['phases'] = []
    for index, timeline in enumerate(timelines):
        if timeline in (None, ''):
            continue
        if not isinstance(timeline, Sequence) or isinstance(timeline, (str, bytes)):
            raise DrillReportError(f'timelines[{index}] must be a list of phases, not {type(timeline).__name__}')
        record['phases'].extend(timeline)
    verifications = [_verification(item, index) for index, item in enumerate(pieces.get('verifications') or [])]
    if not verifications:
        raise DrillReportError('verifications must hold at least one check of the canaries')
    first = verifications[0][1]
    record['canaries'] = {'expected': first['expected'], 'found': first['found'],
                          'missing': len(first.get('missing') or []), 'changed': len(first.get('mismatched') or [])}
    checks = [{'name': f'every canary intact {name}', 'ok': result['found'] == result['expected']
               and not result.get('missing') and not result.get('mismatched'),
               'detail': f'{result["found"]} of {result["expected"]}'} for name, result in verifications]
    if 'outage_job' in pieces:
        outage = _outage_delivery(pieces['outage_job'], first)
        record['outage_delivery'] = outage
        checks.append({'name': 'the delivery made during the outage arrives, intact',
                       'ok': outage['delivered'] and outage['found'], 'detail': _outage_detail(outage)})
    extra = pieces.get('checks') or []
    if not isinstance(extra, Sequence) or isinstance(extra, (str, bytes)):
        raise DrillReportError('checks must be a list of {name, ok, detail} mappings')
    record['checks'] = checks + list(extra)
    return record


def _seconds(value) -> str:
    return '-' if value is None else f'{value:.2f} s'


def to_markdown(report: Mapping) -> str:
    """A Markdown summary of a summarize()d drill."""
    title = f'# Failover drill: {report.get("instance", "?")} ({report.get("failure", "?")})'
    lines = [title, '',
             f'- result: **{"PASSED" if report["passed"] else "FAILED"}**',
             f'- failover time (first phase to first IMAP login through a frontend): '
             f'**{_seconds(report.get("failover_seconds"))}**',
             f'- whole drill: {_seconds(report.get("total_seconds"))}']
    for key in ('from', 'to', 'frontend', 'name'):
        if report.get(key):
            lines.append(f'- {key}: {report[key]}')
    canaries = report.get('canaries') or {}
    if canaries:
        lines.append(f'- canaries: {canaries.get("found", "?")} of {canaries.get("expected", "?")} intact'
                     f' ({canaries.get("missing", 0)} missing, {canaries.get("changed", 0)} changed)')
    lines += ['', '| phase | host | at (s) | until next (s) |', '|---|---|---|---|']
    for row in report['phases']:
        lines.append(f'| {row["phase"]} | {row.get("host", "-")} | {row["offset"]:.2f} | {row["duration"]:.2f} |')
    if report.get('checks'):
        lines += ['', '| check | ok | detail |', '|---|---|---|']
        for check in report['checks']:
            detail = str(check.get('detail', '')).replace('|', '\\|').replace('\n', ' ')
            lines.append(f'| {check["name"]} | {"yes" if check["ok"] else "NO"} | {detail} |')
    return '\n'.join(lines) + '\n'


def to_svg(report: Mapping, width: int = 900) -> str:
    """An SVG timeline: one row per phase, a bar from its time to the next phase's."""
    rows = report['phases']
    total = max(report['total_seconds'], 0.001)
    left, right, top, row_h = 190, 30, 50, 24
    span = width - left - right
    height = top + row_h * len(rows) + 40
    esc = html.escape
    title = (f'{report.get("instance", "?")} {report.get("failure", "?")} failover: '
             f'{_seconds(report.get("failover_seconds"))} to first IMAP login, '
             f'{"passed" if report["passed"] else "FAILED"}')
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<title>{esc(title)}</title>',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{esc(title)}</text>']
    for tick in range(int(math.floor(total)) + 1):
        if total > 60 and tick % 10:
            continue
        x = left + span * tick / total
        out.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{height - 30}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 14}" text-anchor="middle" fill="#555">{tick}s</text>')
    for index, row in enumerate(rows):
        y = top + index * row_h
        x = left + span * row['offset'] / total
        w = max(span * row['duration'] / total, 2)
        colour = '#2a7' if row['phase'] == SERVED_PHASE else '#48c'
        out.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{esc(row["phase"])}</text>')
        out.append(f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{colour}">'
                   f'<title>{esc(row["phase"])} on {esc(str(row.get("host", "-")))}: '
                   f'+{row["offset"]:.2f} s</title></rect>')
        out.append(f'<text x="{x + w + 4:.1f}" y="{y + 15}" fill="#333">+{row["offset"]:.2f} s</text>')
    out.append('</svg>')
    return '\n'.join(out) + '\n'


def render(drill, fmt: str = 'data'):
    """summarize() the drill, then return it as data (JSON-ready), Markdown or SVG."""
    if fmt not in FORMATS:
        raise DrillReportError(f'format must be one of {", ".join(FORMATS)}, not {fmt!r}')
    report = summarize(drill)
    if fmt == 'markdown':
        return to_markdown(report)
    if fmt == 'svg':
        return to_svg(report)
    return report
