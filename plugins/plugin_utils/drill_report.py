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
    first phase, its duration (until the next phase) and its section (failover or failback);
    failover_seconds (first phase to the first IMAP login), the outages of both moves (outages,
    failback_seconds) and passed (nothing lost or changed, every step ok)."""
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
    outages = _outages(rows, drill.get('to'))
    failback = [o for o in outages if o['section'] == 'failback']
    report = {key: value for key, value in drill.items() if key not in ('phases', 'canaries', 'checks')}
    report.update({
        'phases': rows,
        'started_at': start,
        'total_seconds': round(rows[-1]['at'] - start, 3),
        'failover_seconds': round(served[0]['at'] - start, 3) if served else None,
        'failback_seconds': failback[0]['seconds'] if failback else None,
        'outages': outages,
        'canaries': canaries,
        'checks': checks,
        'passed': lost == 0 and all(bool(c['ok']) for c in checks),
    })
    return report


def _outages(rows: list[dict], moved_to) -> list[dict]:
    """Mark each phase with its section and measure the outage of each move.

    The failover runs from the first phase through the phases of the host that timestamped the first
    IMAP login (the frontend: the login, the delivery, the check); the first later phase of another host
    starts the failback. The failover's outage runs from its first phase (the failure) to the first IMAP
    login; the failback's from its first phase on the host the instance had moved to (the instance
    stopping there) to its next phase on the frontend (the check after the failback, which logs in).
    """
    served = next((i for i, row in enumerate(rows) if row['phase'] == SERVED_PHASE), None)
    cut = len(rows)
    if served is not None:
        frontend = rows[served].get('host')
        cut = next((i for i in range(served + 1, len(rows)) if rows[i].get('host') != frontend), len(rows))
    for index, row in enumerate(rows):
        row['section'] = 'failover' if index < cut else 'failback'
    outages = []
    if served is not None:
        outages.append({'section': 'failover', 'start': rows[0]['offset'], 'end': rows[served]['offset'],
                        'seconds': rows[served]['offset'], 'from': rows[0]['phase'], 'until': SERVED_PHASE})
        back = rows[cut:]
        first = next((r for r in back if moved_to is not None and r.get('host') == moved_to), back[0] if back else None)
        if first is not None:
            later = back[back.index(first) + 1:]
            end = next((r for r in later if r.get('host') == frontend), None)
            if end is not None:
                outages.append({'section': 'failback', 'start': first['offset'], 'end': end['offset'],
                                'seconds': round(end['offset'] - first['offset'], 3), 'from': first['phase'],
                                'until': end['phase']})
    return outages


# What a drill's evidence is made of (build_record's input): imap_check results and the async job of the
# delivery made during the outage, as the cyrus.ha.drill role registers them.
RECORD_KEYS = ('instance', 'failure', 'engine', 'from', 'to', 'frontend', 'name', 'traffic', 'replication')


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

    pieces: instance, failure, engine, from, to, frontend, name and traffic (what a load generator saw
    during the drill, when one ran; kept as they are); timelines, a list of
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
    checks += _traffic_checks(record.get('traffic'))
    extra = pieces.get('checks') or []
    if not isinstance(extra, Sequence) or isinstance(extra, (str, bytes)):
        raise DrillReportError('checks must be a list of {name, ok, detail} mappings')
    record['checks'] = checks + list(extra)
    return record


def _is_traffic_run(traffic) -> bool:
    """A traffic run of the drill role (mailtraffic summary with its invariants), not a free-form entry."""
    return isinstance(traffic, Mapping) and isinstance(traffic.get('kinds'), Mapping) \
        and isinstance(traffic.get('invariants'), Mapping)


def _traffic_checks(traffic) -> list[dict]:
    """The checks a traffic run adds: its invariants, and no delivery refused for good or left queued."""
    if not _is_traffic_run(traffic):
        return []
    inv = traffic['invariants']
    checked = inv.get('checked') or {}
    problems = [f'{v.get("invariant")}: {v.get("detail")}' for v in inv.get('violations') or [] if isinstance(v, Mapping)]
    problems += [str(e) for e in inv.get('errors') or []]
    detail = (f'{checked.get("acknowledged_found", 0)} of {checked.get("acknowledged", 0)} acknowledged messages found '
              f'once and intact on {", ".join(f"{u}@{b}" for u, b in sorted((checked.get("mailboxes") or {}).items()))}')
    if problems:
        detail = f'{len(problems)} problem(s): ' + '; '.join(problems[:5]) + (' ...' if len(problems) > 5 else '')
    deliveries = traffic.get('deliveries') or {}
    lost = int(deliveries.get('failed') or 0) + int(deliveries.get('still_queued') or 0)
    checks = [{'name': 'traffic: every invariant holds', 'ok': bool(inv.get('ok')), 'detail': detail}]
    lists = inv.get('murder_lists')
    if isinstance(lists, Mapping):
        wrong = [v for v in inv.get('violations') or [] if isinstance(v, Mapping) and v.get('invariant') == 'mupdate-list']
        checks.append({'name': 'traffic: the mupdate master lists what the backends hold, the frontends the same',
                       'ok': not wrong and bool(lists.get('mupdate_master')),
                       'detail': (f'{lists.get("mupdate_mailboxes", "?")} mailboxes at the mupdate master '
                                  f'{lists.get("mupdate_master") or "(not read)"}, {lists.get("mailboxes", 0)} on backends '
                                  f'{", ".join(lists.get("backends") or []) or "-"}, frontends '
                                  f'{", ".join(lists.get("frontends") or []) or "-"}'
                                  + (f'; {len(wrong)} wrong: ' + '; '.join(str(v.get('detail')) for v in wrong[:3])
                                     if wrong else ''))})
    return checks + [
        {'name': 'traffic: every delivery accepted, none refused for good or left queued', 'ok': lost == 0,
         'detail': f'{deliveries.get("accepted", 0)} accepted ({deliveries.get("deferred_then_accepted", 0)} after '
                   f'being deferred, queued up to {deliveries.get("max_queued", 0)} s), '
                   f'{deliveries.get("failed", 0)} refused for good, {deliveries.get("still_queued", 0)} left queued'},
        {'name': 'traffic: the generator ran to its end', 'ok': bool(traffic.get('complete')),
         'detail': f'{traffic.get("operations", 0)} operations in {traffic.get("seconds", 0)} s '
                   f'({traffic.get("rate", 0)}/s)'}]


def traffic_rows(traffic) -> list[list[str]]:
    """Per kind of operation: operations, ok, not ok (by error kind), longest outage as users saw it, and
    the latency of the successful ones (median, 95th percentile)."""
    rows = []
    for kind, stats in (traffic.get('kinds') or {}).items():
        outcomes = stats.get('outcomes') or {}
        errors = ', '.join(f'{k} {v}' for k, v in sorted((stats.get('errors') or {}).items())) or '-'
        outage = (traffic.get('outages') or {}).get(kind) or {}
        rows.append([kind, str(stats.get('total', 0)), str(outcomes.get('ok', 0)),
                     str(stats.get('total', 0) - outcomes.get('ok', 0)), errors,
                     f'{float(outage.get("longest") or 0):.2f} s ({len(outage.get("windows") or [])}), '
                     f'{float(outage.get("longest_gap") or 0):.2f} s between two successes',
                     f'{stats.get("p50_ms")} / {stats.get("p95_ms")}'])
    return rows


def _seconds(value) -> str:
    return '-' if value is None else f'{value:.2f} s'


def _canary_text(canaries: Mapping) -> str:
    return (f'{canaries.get("found", "?")} of {canaries.get("expected", "?")} intact'
            f' ({canaries.get("missing", 0)} missing, {canaries.get("changed", 0)} changed)')


def _outage_delivery_text(outage: Mapping) -> str:
    if not outage.get('delivered'):
        return f'NOT delivered: {" ".join(str(outage.get("error") or "?").split())}'
    attempts = int(outage.get('attempts') or 0)
    how = (f'delivered after {float(outage.get("queued_seconds") or 0):.1f} s queued ({attempts} attempts)'
           if attempts > 1 else 'delivered at the first attempt')
    return f'{how}, {"found intact" if outage.get("found") else "NOT found intact"}'


def _traffic_text(traffic) -> tuple[str, bool | None]:
    """What a load generator saw during the drill, when the record has it: a mapping (its `ok`, when a
    boolean, says whether the traffic came through; the other entries are shown as they are), a list or
    a string. Returns the text and the verdict (None when the record gives none)."""
    if _is_traffic_run(traffic):
        outages = traffic.get('outages') or {}
        longest = ', '.join(f'{kind} {float(o.get("longest") or 0):.2f} s' for kind, o in outages.items() if kind != 'any')
        inv = traffic['invariants']
        verdict = bool(inv.get('ok'))
        return (f'{"ok" if verdict else "NOT ok"}: {traffic.get("operations", 0)} operations at {traffic.get("rate", 0)}/s; '
                f'longest outage as clients saw it: {longest or "-"}; '
                f'{len(inv.get("violations") or [])} invariant violation(s)'), verdict
    if isinstance(traffic, Mapping):
        verdict = traffic.get('ok') if isinstance(traffic.get('ok'), bool) else None
        parts = [f'{key} {value}' for key, value in traffic.items() if key != 'ok']
        text = ', '.join(parts) or '-'
        if verdict is not None:
            text = f'{"ok" if verdict else "NOT ok"}: {text}'
        return text, verdict
    if isinstance(traffic, Sequence) and not isinstance(traffic, (str, bytes)):
        return ', '.join(str(item) for item in traffic) or '-', None
    return str(traffic), None


def replication_lines(replication: Mapping) -> list[str]:
    """A replica pair's drill: the lag measured just before the failure, the promotion, the acknowledged
    messages missing after it (RPO) and the old master's diverged mailboxes."""
    lag = replication.get('lag_before_failure')
    caught_up = replication.get('caught_up_before_failure')
    lines = ['lag measured just before the failure: '
             + ('unknown' if lag is None else f'{_seconds(lag)}' + ('' if caught_up in (None, True) else ' (not caught up: at least that)'))]
    forced = ' (forced past its lag checks)' if replication.get('forced') else ''
    lines.append(f'promotion: {replication.get("promotion", "?")}{forced}')
    lost = replication.get('lost_messages') or []
    shown = ', '.join(str(m) for m in lost[:5]) + (' ...' if len(lost) > 5 else '')
    lines.append(f'RPO: {len(lost)} acknowledged message(s) missing after the promotion, counted from '
                 f'{replication.get("lost_counted_from", "?")}' + (f': {shown}' if lost else ''))
    diverged = replication.get('diverged') or []
    if diverged:
        lines.append(f'the old master held writes that never replicated, in {", ".join(str(d) for d in diverged)}'
                     + ('; its copy was moved aside (kept) to move back' if replication.get('discarded') else
                        '; it was not made the replica'))
    return lines


def _results(report: Mapping) -> list[tuple[str, str, bool | None]]:
    """The lines under the timeline and in the summary: (what, result, ok or None when unknown)."""
    lines = []
    canaries = report.get('canaries') or {}
    if canaries:
        intact = not canaries.get('missing') and not canaries.get('changed')
        lines.append(('canaries', _canary_text(canaries), intact))
    else:
        lines.append(('canaries', 'not checked', None))
    outage = report.get('outage_delivery')
    if isinstance(outage, Mapping):
        lines.append(('outage delivery', _outage_delivery_text(outage),
                      bool(outage.get('delivered')) and bool(outage.get('found'))))
    else:
        lines.append(('outage delivery', 'none made', None))
    if 'traffic' in report:
        text, verdict = _traffic_text(report['traffic'])
        lines.append(('traffic', text, verdict))
    replication = report.get('replication')
    if isinstance(replication, Mapping):
        lost = replication.get('lost_messages') or []
        lag = replication.get('lag_before_failure')
        lines.append(('replication', f'lag before the failure {_seconds(lag)}; RPO {len(lost)} acknowledged message(s) '
                      f'lost ({replication.get("lost_counted_from", "?")})', not lost))
    checks = report.get('checks') or []
    if checks:
        failed = [str(c['name']) for c in checks if not c['ok']]
        text = f'{len(checks) - len(failed)} of {len(checks)} ok'
        lines.append(('checks', text + (f'; not ok: {", ".join(failed)}' if failed else ''), not failed))
    return lines


# Mermaid reads ':' as the end of a task's name, ';' as the end of a statement and '#' as the start of
# an entity: written as entities, they show as themselves.
_MERMAID = str.maketrans({'#': '#35;', ':': '#58;', ';': '#59;', '\n': ' ', '\r': ' '})


def _mermaid(text) -> str:
    return str(text).translate(_MERMAID).strip() or '-'


def _sections(report: Mapping) -> list[tuple[str, list[Mapping], Mapping | None]]:
    """(name, phases, outage or None) of the failover and, when there was one, the failback."""
    out = []
    for name in ('failover', 'failback'):
        rows = [row for row in report['phases'] if row.get('section', 'failover') == name]
        if rows:
            outage = next((o for o in report.get('outages') or [] if o['section'] == name), None)
            out.append((name, rows, outage))
    return out


def to_mermaid(report: Mapping) -> str:
    """A Mermaid gantt of a summarize()d drill: a section per move, its outage and one task per phase,
    each from the phase before it to its own time. Times are whole milliseconds since the first phase
    (dateFormat x): Mermaid refuses fractional seconds (dateFormat X with 0.000 is "Invalid date")."""
    def ms(seconds) -> int:
        return int(round(float(seconds) * 1000))

    lines = ['gantt', f'    title {_mermaid(_title(report))}', '    dateFormat x',
             f'    axisFormat {"%S" if report["total_seconds"] < 60 else "%M:%S"}']
    number = 0
    for name, rows, outage in _sections(report):
        lines.append(f'    section {name}')
        if outage:
            label = _mermaid(f'outage {outage["seconds"]:.1f} s')
            lines.append(f'    {label} :crit, {name}_outage, {ms(outage["start"])}, {ms(outage["end"])}')
        for index, row in enumerate(rows):
            label = _mermaid(f'{row["phase"]} ({row.get("host") or "no host"})')
            if index == 0:
                lines.append(f'    {label} :milestone, p{number}, {ms(row["offset"])}, {ms(row["offset"])}')
            else:
                tag = 'active' if row['phase'] == SERVED_PHASE else 'done'
                lines.append(f'    {label} :{tag}, p{number}, {ms(rows[index - 1]["offset"])}, {ms(row["offset"])}')
            number += 1
    return '\n'.join(lines) + '\n'


def _title(report: Mapping) -> str:
    return f'Failover drill {report.get("instance", "?")} ({report.get("failure", "?")})'


def to_markdown(report: Mapping) -> str:
    """A Markdown summary of a summarize()d drill, with its timeline as a Mermaid gantt."""
    title = f'# Failover drill: {report.get("instance", "?")} ({report.get("failure", "?")})'
    lines = [title, '',
             f'- result: **{"PASSED" if report["passed"] else "FAILED"}**',
             f'- failover time (first phase to first IMAP login through a frontend): '
             f'**{_seconds(report.get("failover_seconds"))}**']
    if report.get('failback_seconds') is not None:
        back = next(o for o in report['outages'] if o['section'] == 'failback')
        lines.append(f'- failback outage ({back["from"]} to {back["until"]}): **{_seconds(back["seconds"])}**')
    lines.append(f'- whole drill: {_seconds(report.get("total_seconds"))}')
    for key in ('from', 'to', 'frontend', 'name'):
        if report.get(key):
            lines.append(f'- {key}: {report[key]}')
    canaries = report.get('canaries') or {}
    if canaries:
        lines.append(f'- canaries: {_canary_text(canaries)}')
    if isinstance(report.get('outage_delivery'), Mapping):
        lines.append(f'- outage delivery: {_outage_delivery_text(report["outage_delivery"])}')
    if 'traffic' in report:
        lines.append(f'- traffic: {_traffic_text(report["traffic"])[0]}')
    if isinstance(report.get('replication'), Mapping):
        lines += [f'- replication: {line}' for line in replication_lines(report['replication'])]
    lines += ['', '```mermaid', to_mermaid(report).rstrip('\n'), '```']
    if _is_traffic_run(report.get('traffic')):
        lines += ['', 'Traffic through the frontend as clients saw it (outage: first failed operation to the end of '
                  'the first one that succeeded after it; windows in brackets):', '',
                  '| operation | done | ok | not ok | errors | longest outage | ms p50 / p95 |', '|---|---|---|---|---|---|---|']
        lines += ['| ' + ' | '.join(row) + ' |' for row in traffic_rows(report['traffic'])]
    lines += ['', '| phase | host | at (s) | until next (s) |', '|---|---|---|---|']
    for row in report['phases']:
        lines.append(f'| {row["phase"]} | {row.get("host", "-")} | {row["offset"]:.2f} | {row["duration"]:.2f} |')
    if report.get('checks'):
        lines += ['', '| check | ok | detail |', '|---|---|---|']
        for check in report['checks']:
            detail = str(check.get('detail', '')).replace('|', '\\|').replace('\n', ' ')
            lines.append(f'| {check["name"]} | {"yes" if check["ok"] else "NO"} | {detail} |')
    return '\n'.join(lines) + '\n'


# -- SVG timeline ----------------------------------------------------------------------------------
# Text widths are estimated, not measured (no font is embedded): a character is taken as CHAR_EM of the
# font size (BOLD_EM when bold), wider than most sans-serif faces' average, so nothing is clipped.
CHAR_EM = 0.6
BOLD_EM = 0.68
FONT = 12
TICK_STEPS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
COLOURS = {'step': '#3b6fb6', 'served': '#1e8c4e', 'failure': '#c0392b', 'start': '#555', 'outage': '#f6c9c4',
           'outage_text': '#a02a1c', 'ok': '#1e8c4e', 'bad': '#c0392b', 'unknown': '#999', 'grid': '#cccccc',
           'band': '#f4f6f8', 'text': '#222', 'muted': '#555'}
_XML_INVALID = dict.fromkeys(c for c in range(32) if c not in (9, 10, 13))


def text_width(text: str, size: float = FONT, bold: bool = False) -> float:
    """The estimated width in pixels of text in the timeline's font."""
    return len(text) * size * (BOLD_EM if bold else CHAR_EM)


def _xml(text) -> str:
    return html.escape(str(text).translate(_XML_INVALID), quote=True)


def _fit(text: str, room: float, size: float = FONT, bold: bool = False) -> str:
    """text, cut with an ellipsis when it is wider than room."""
    if text_width(text, size, bold) <= room:
        return text
    keep = max(int(room / (size * (BOLD_EM if bold else CHAR_EM))) - 1, 1)
    return text[:keep].rstrip() + '\u2026'


def _tick_step(seconds: float, px_per_second: float) -> float:
    """The smallest step of TICK_STEPS whose labels (the widest one plus a gap) do not touch."""
    for step in TICK_STEPS:
        if step * px_per_second >= text_width(_tick_label(math.floor(seconds / step) * step)) + 24:
            return step
    return TICK_STEPS[-1] * max(math.ceil(seconds / TICK_STEPS[-1] / 10), 1)


def _tick_label(value: float) -> str:
    return f'{value:g} s'


def _wrap(text: str, room: float, size: float = FONT) -> list[str]:
    """text in lines of at most room pixels, broken between words."""
    lines = ['']
    for word in text.split():
        candidate = f'{lines[-1]} {word}'.strip()
        if lines[-1] and text_width(candidate, size) > room:
            lines.append(word)
        else:
            lines[-1] = candidate
    return [_fit(line, room, size) for line in lines]


class _Svg:
    def __init__(self):
        self.parts: list[str] = []

    def text(self, x, y, text, size=FONT, bold=False, fill=COLOURS['text'], anchor='start', extra='', spans=()):
        """A text element; spans, (text, bold, fill) tuples, follow text on the same line."""
        weight = ' font-weight="bold"' if bold else ''
        anchor_attr = f' text-anchor="{anchor}"' if anchor != 'start' else ''
        tail = ''.join(f'<tspan font-weight="{"bold" if span_bold else "normal"}" fill="{span_fill}">{_xml(span)}</tspan>'
                       for span, span_bold, span_fill in spans)
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}"{weight}{anchor_attr} fill="{fill}"'
                          f'{extra}>{_xml(text)}{tail}</text>')

    def rect(self, x, y, w, h, fill, extra=''):
        self.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{h:.1f}" fill="{fill}"{extra}/>')

    def line(self, x1, y1, x2, y2, stroke, extra=''):
        self.parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}"{extra}/>')


def _place_labels(items: list[dict], left: float, right: float) -> int:
    """Give each bar of a lane a sub-row and a label position (inside the bar when it fits, else beside
    it, else flush with the right edge) so that no two labels or bars of a sub-row overlap; a bar never
    goes above the one before it, so a lane reads down in time. Returns the number of sub-rows."""
    rows: list[list[tuple[float, float]]] = []
    previous = 0
    for item in items:
        x0, x1, width = item['x0'], item['x1'], text_width(item['label'])
        options = []
        if x1 - x0 >= width + 8:
            options.append(('inside', x0 + 4, x0, x1))
        if x1 + 5 + width <= right:
            options.append(('after', x1 + 5, x0, x1 + 5 + width))
        if x0 - 5 - width >= left:
            options.append(('before', x0 - 5 - width, x0 - 5 - width, x1))
        if not options:
            start = max(right - width, left)
            options.append(('edge', start, min(x0, start), max(x1, right)))
        for index in range(previous, len(rows) + 1):
            taken = rows[index] if index < len(rows) else []
            free = [o for o in options if all(o[3] + 6 <= a or b + 6 <= o[2] for a, b in taken)]
            if free:
                where, text_x, extent_0, extent_1 = free[0]
                if index == len(rows):
                    rows.append([])
                rows[index].append((extent_0, extent_1))
                item.update(row=index, where=where, text_x=text_x)
                previous = index
                break
    return max(len(rows), 1)


def to_svg(report: Mapping, width: int = 900) -> str:
    """A self-contained SVG timeline of a summarize()d drill.

    One block per move (failover, then failback), each with its outage shaded from the failure to the
    first login and labelled with its length, one lane per host named on the left, and a bar per phase
    from the phase before it to its own time, labelled with its name and that length; then the canary,
    outage delivery, traffic (when the record has it) and check results. The SVG is at least width pixels
    wide, wider when a label needs it, so that nothing is cut off at the right edge.
    """
    sections = _sections(report)
    passed = report['passed']
    verdict = 'PASSED' if passed else 'FAILED'
    title = f'{_title(report)}: {verdict}'
    route = ' \u2192 '.join(str(report[k]) for k in ('from', 'to') if report.get(k))
    facts = [f'{route}' if route else '', f'through {report["frontend"]}' if report.get('frontend') else '',
             f'engine {report["engine"]}' if report.get('engine') else '', str(report.get('name') or ''),
             f'whole drill {report["total_seconds"]:.1f} s']
    subtitle = ', '.join(f for f in facts if f)

    hosts = [str(row.get('host') or '(no host)') for row in report['phases']]
    left = max(max(text_width(h, bold=True) for h in hosts) + 24, 96)
    right_pad = 24
    labels = [_bar_label(rows, index) for _name, rows, _outage in sections for index in range(len(rows))]
    widest_label = max(text_width(label) for label in labels)
    headers = [text_width(_section_header(name, rows, report), 14, True) for name, rows, _outage in sections]
    width = int(math.ceil(max(width, text_width(title, 17, True) + 32, text_width(subtitle) + 32, max(headers) + 32,
                              left + right_pad + max(widest_label + 40, 600))))
    right = width - right_pad
    longest = max(max(rows[-1]['offset'] - rows[0]['offset'] for _name, rows, _outage in sections), 0.001)
    px = (right - left) / longest
    step = _tick_step(longest, px)

    svg = _Svg()
    y = 30.0
    svg.text(16, y, _title(report) + ': ', size=17, bold=True,
             spans=[(verdict, True, COLOURS['ok'] if passed else COLOURS['bad'])])
    y += 22
    svg.text(16, y, subtitle, fill=COLOURS['muted'])
    y += 14
    for name, rows, outage in sections:
        y = _svg_section(svg, name, rows, outage, report, y + 22, left, right, px, step)
    y += 10
    svg.line(16, y, width - 16, y, COLOURS['grid'])
    y += 6
    for what, text, ok in _results(report):
        y += 20
        colour = COLOURS['unknown'] if ok is None else COLOURS['ok'] if ok else COLOURS['bad']
        svg.rect(16, y - 10, 10, 10, colour)
        head = f'{what}: '
        shown = _fit(text, width - 16 - 32 - text_width(head, bold=True))
        svg.text(32, y, head, bold=True, extra=' class="result"', spans=[(shown, False, COLOURS['text'])])
    y += 6
    for line in _wrap(_legend(report, any(name == 'failback' for name, _rows, _outage in sections)), width - 32, 11):
        y += 16
        svg.text(16, y, line, size=11, fill=COLOURS['muted'])
    height = int(math.ceil(y + 14))
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'font-family="DejaVu Sans, Verdana, Arial, Helvetica, sans-serif" font-size="{FONT}">')
    summary = f'{title}; ' + '; '.join(
        f'{name} outage {outage["seconds"]:.1f} s' for name, _rows, outage in sections if outage)
    return '\n'.join([head, f'<title>{_xml(summary)}</title>', f'<rect width="{width}" height="{height}" fill="white"/>',
                      *svg.parts, '</svg>']) + '\n'


def _bar_label(rows: Sequence[Mapping], index: int) -> str:
    """The phase's name, and (but for a move's first phase) the time since the phase before it."""
    if index == 0:
        return str(rows[0]['phase'])
    return f'{rows[index]["phase"]} ({rows[index]["offset"] - rows[index - 1]["offset"]:.2f} s)'


def _legend(report: Mapping, failback: bool) -> str:
    frontend = report.get('frontend') or 'the frontend'
    back = f' (failback: from the instance stopping on {report.get("to") or "the spare"})' if failback else ''
    return (f'Shaded: the outage, from the failure{back} to the first login through {frontend}. '
            f'A bar runs from the phase before to the phase it names; times in seconds since each move began.')


def _section_header(name: str, rows: Sequence[Mapping], report: Mapping) -> str:
    route = [report.get('from'), report.get('to')]
    route = route if name == 'failover' else route[::-1]
    header = name.capitalize() + (f' ({route[0]} \u2192 {route[1]})' if all(route) else '')
    if name == 'failback':
        header += f', from {rows[0]["offset"]:.1f} s into the drill'
    return header


def _svg_section(svg: _Svg, name: str, rows: Sequence[Mapping], outage, report: Mapping, y: float,
                 left: float, right: float, px: float, step: float) -> float:
    """Draw one move (failover or failback) from y down; returns the y below it."""
    origin = rows[0]['offset']

    def at(offset):
        return left + (offset - origin) * px

    svg.text(16, y, _section_header(name, rows, report), size=14, bold=True)
    y += 8
    lanes: dict[str, list[dict]] = {}
    for index, row in enumerate(rows):
        item = dict(row, first=index == 0, x=at(row['offset']))
        if index:
            item['step'] = row['offset'] - rows[index - 1]['offset']
            item.update(x0=at(rows[index - 1]['offset']), x1=max(item['x'], at(rows[index - 1]['offset']) + 2))
        else:
            item.update(x0=item['x'] - 7, x1=item['x'] + 7)
        item['label'] = _bar_label(rows, index)
        lanes.setdefault(str(row.get('host') or '(no host)'), []).append(item)
    sub_h, band_gap, strip = 22, 4, 18     # strip: the outage label's, above the lanes
    heights = {host: _place_labels(items, left, right) * sub_h + 6 for host, items in lanes.items()}
    top = y + strip
    bottom = top + sum(heights.values()) + band_gap * (len(lanes) - 1)

    lane_y = top
    for number, (host, items) in enumerate(lanes.items()):
        svg.rect(left, lane_y, right - left, heights[host], COLOURS['band'] if number % 2 == 0 else '#fbfbfc')
        lane_y += heights[host] + band_gap
    if outage:
        x0, x1 = at(outage['start']), at(outage['end'])
        svg.rect(x0, y, x1 - x0, bottom - y, COLOURS['outage'], ' fill-opacity="0.75" class="outage"')
        svg.line(x1, y, x1, bottom, COLOURS['outage_text'], ' stroke-width="1.5" stroke-dasharray="4 3"')
        label = f'outage {outage["seconds"]:.1f} s'
        text_x = min(x0 + 4, right - text_width(label, bold=True))
        svg.text(text_x, y + 13, label, bold=True, fill=COLOURS['outage_text'], extra=' class="outage-label"')
    else:
        svg.text(left + 4, y + 13, 'outage not measured (no login through the frontend timestamped)',
                 fill=COLOURS['muted'], extra=' class="outage-label"')
    end = rows[-1]['offset'] - origin
    tick, count = 0.0, 0
    while tick <= end + 1e-9 or count == 0:
        x = left + tick * px
        svg.line(x, top, x, bottom + 4, COLOURS['grid'], ' class="grid"')
        svg.text(x, bottom + 18, _tick_label(tick), size=11, fill=COLOURS['muted'], anchor='middle',
                 extra=' class="tick"')
        count += 1
        tick = round(count * step, 6)

    lane_y = top
    for host, items in lanes.items():
        svg.text(16, lane_y + 16, host, bold=True, extra=' class="lane"')
        for item in items:
            bar_y = lane_y + 3 + item['row'] * sub_h
            after = '' if item['first'] else f', {item["step"]:.2f} s after the phase before'
            svg.parts.append(f'<g class="phase" data-section="{name}">')
            svg.parts.append(f'<title>{_xml(item["phase"])} on {_xml(host)}: {item["offset"]:.2f} s into the drill'
                             f'{after}</title>')
            if item['first']:
                cx, cy = item['x'], bar_y + 8
                colour = COLOURS['failure'] if name == 'failover' else COLOURS['start']
                svg.parts.append(f'<path d="M{cx:.1f},{cy - 7:.1f} L{cx + 7:.1f},{cy:.1f} L{cx:.1f},{cy + 7:.1f} '
                                 f'L{cx - 7:.1f},{cy:.1f} Z" fill="{colour}"/>')
            else:
                colour = COLOURS['served'] if item['phase'] == SERVED_PHASE else COLOURS['step']
                svg.rect(item['x0'], bar_y + 1, item['x1'] - item['x0'], 14, colour, ' rx="2"')
            inside = item['where'] == 'inside'
            svg.text(item['text_x'], bar_y + 12.5, item['label'], fill='white' if inside else COLOURS['text'])
            svg.parts.append('</g>')
        lane_y += heights[host] + band_gap
    return bottom + 24


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
