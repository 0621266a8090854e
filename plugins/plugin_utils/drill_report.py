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
