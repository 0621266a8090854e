# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One page for one lab run: index.html in the reports directory of `make lab`, gathering every report.

    python3 lab/report_index.py build/reports

It reads what the run wrote there: hosts.txt (the table of hosts), storage-probe-*.json (the storage
qualification, one per path) and drill/*.json with their .svg timelines (the failover drills), and
writes index.html beside them: the verdicts and results at the top, then one section per report with
its key figures, its failures or checks, the drill's timeline as an image, the traffic as clients saw
it, and a link to every file. One self-contained page: inline CSS, no script, no fetch; the paths are
relative, so the directory can be copied or mailed as it is. Python 3.9+, standard library only.
"""

from __future__ import annotations

import datetime
import glob
import html
import json
import os
import sys

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1d2430; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d5dae3; }
h3 { margin-bottom: .4rem; }
.meta { color: #5a6474; margin-top: 0; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid #d5dae3; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f2f4f8; }
.ok { color: #0b6b2e; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; }
.unknown { color: #8a5a00; font-weight: 600; }
pre { background: #f7f8fa; border: 1px solid #e2e6ec; padding: .6rem; overflow-x: auto; font-size: .85rem; }
img.timeline { max-width: 100%; border: 1px solid #e2e6ec; }
.files a { margin-right: .8rem; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def verdict_class(ok) -> str:
    return 'ok' if ok is True else 'bad' if ok is False else 'unknown'


def table(headers: list | None, rows: list) -> str:
    """An HTML table; headers None: rows of (name, value) with the names as row headers."""
    if headers is None:
        return '<table><tbody>' + ''.join(f'<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in rows) + '</tbody></table>'
    out = ['<table><thead><tr>' + ''.join(f'<th>{esc(h)}</th>' for h in headers) + '</tr></thead><tbody>']
    for row in rows:
        out.append('<tr>' + ''.join(cell if isinstance(cell, Raw) else f'<td>{esc(cell)}</td>' for cell in row) + '</tr>')
    out.append('</tbody></table>')
    return '\n'.join(out)


class Raw(str):
    """A table cell already written as HTML (<td ...>...</td>)."""


def status_cell(text: str, ok) -> Raw:
    return Raw(f'<td class="{verdict_class(ok)}">{esc(text)}</td>')


def links(directory: str, base: str, extensions: tuple) -> str:
    found = [f'<a href="{esc(base + ext)}">{esc(os.path.basename(base + ext))}</a>'
             for ext in extensions if os.path.exists(os.path.join(directory, base + ext))]
    return f'<p class="files">{"".join(found)}</p>' if found else ''


def load(path: str):
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        return {'error': f'{os.path.basename(path)} cannot be read: {exc}'}


def storage_section(directory: str, path: str) -> tuple[str, tuple]:
    report = load(path)
    base = os.path.relpath(path, directory)[:-len('.json')]
    title = report.get('path', base)
    if 'error' in report:
        return f'<h3>{esc(title)}</h3><p class="bad">{esc(report["error"])}</p>', (title, None, report['error'])
    verdict = report.get('verdict', '?')
    ok = {'safe': True, 'unsafe': False}.get(verdict)
    parts = [f'<h3>Storage: {esc(title)} <span class="{verdict_class(ok)}">{esc(str(verdict).upper())}</span></h3>']
    hosts = report.get('hosts') or {}
    if hosts:
        rows = [[h, status_cell(v, {'safe': True, 'unsafe': False}.get(v))] for h, v in sorted(hosts.items())]
        parts.append(table(['host', 'verdict'], rows))
    failures = report.get('failures') or []
    if failures:
        parts.append(table(['check', 'where', 'status', 'reason', 'what it means for Cyrus'],
                           [[f.get('check'), f.get('where'), f.get('status'), f.get('reason'), f.get('consequence', '')]
                            for f in failures]))
    parts.append(links(directory, base, ('.md', '.json')))
    return '\n'.join(parts), (f'storage {title}', ok, verdict)


def drill_section(directory: str, path: str) -> tuple[str, tuple]:
    report = load(path)
    base = os.path.relpath(path, directory)[:-len('.json')]
    if 'error' in report:
        return f'<h3>{esc(base)}</h3><p class="bad">{esc(report["error"])}</p>', (base, None, report['error'])
    ok = report.get('passed')
    name = report.get('name') or os.path.basename(base)
    parts = [f'<h3>Drill: {esc(name)} <span class="{verdict_class(ok)}">{"PASSED" if ok else "FAILED"}</span></h3>']
    facts = [['instance', report.get('instance', '?')], ['failure', report.get('failure', '?')],
             ['engine', report.get('engine', '?')], ['from / to', f'{report.get("from", "?")} / {report.get("to", "?")}'],
             ['failover (failure to first IMAP login)', seconds(report.get('failover_seconds'))],
             ['failback outage', seconds(report.get('failback_seconds'))],
             ['whole drill', seconds(report.get('total_seconds'))]]
    canaries = report.get('canaries') or {}
    if canaries:
        facts.append(['canaries', f'{canaries.get("found", "?")} of {canaries.get("expected", "?")} intact '
                                  f'({canaries.get("missing", 0)} missing, {canaries.get("changed", 0)} changed)'])
    parts.append(table(None, facts))
    svg = base + '.svg'
    if os.path.exists(os.path.join(directory, svg)):
        parts.append(f'<p><img class="timeline" src="{esc(svg)}" alt="timeline of {esc(name)}"></p>')
    traffic = report.get('traffic')
    if isinstance(traffic, dict) and isinstance(traffic.get('kinds'), dict):
        parts.append(traffic_table(traffic))
    checks = report.get('checks') or []
    if checks:
        parts.append(table(['check', 'ok', 'detail'], [[c.get('name'), status_cell('yes' if c.get('ok') else 'NO', bool(c.get('ok'))),
                                                        c.get('detail', '')] for c in checks]))
    parts.append(links(directory, base, ('.md', '.json', '.svg')))
    return '\n'.join(parts), (f'drill {name}', ok, 'passed' if ok else 'failed')


def traffic_table(traffic: dict) -> str:
    outages = traffic.get('outages') or {}
    rows = []
    for kind, stats in traffic['kinds'].items():
        outcomes = stats.get('outcomes') or {}
        outage = outages.get(kind) or {}
        by_user = ', '.join(f'{u} {s:.2f} s' for u, s in sorted((outage.get('by_user') or {}).items()))
        rows.append([kind, stats.get('total', 0), outcomes.get('ok', 0), stats.get('total', 0) - outcomes.get('ok', 0),
                     ', '.join(f'{k} {v}' for k, v in sorted((stats.get('errors') or {}).items())) or '-',
                     by_user or '-', f'{stats.get("p50_ms")} / {stats.get("p95_ms")}'])
    deliveries = traffic.get('deliveries') or {}
    head = (f'<p>Traffic through the frontend: {esc(traffic.get("operations", 0))} operations in '
            f'{esc(traffic.get("seconds", 0))} s ({esc(traffic.get("rate", 0))}/s); '
            f'{esc(deliveries.get("accepted", 0))} deliveries accepted, {esc(deliveries.get("deferred_then_accepted", 0))} '
            f'after being deferred. The outage is per user, as that user\'s clients saw it.</p>')
    return head + table(['operation', 'done', 'ok', 'not ok', 'errors', 'longest outage per user', 'ms p50 / p95'], rows)


def seconds(value) -> str:
    return '-' if not isinstance(value, (int, float)) else f'{value:.2f} s'


def build(directory: str, now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    sections, summary = [], []
    hosts = os.path.join(directory, 'hosts.txt')
    if os.path.exists(hosts):
        with open(hosts, encoding='utf-8', errors='replace') as handle:
            sections.append(f'<h2 id="hosts">Hosts</h2>\n<pre>{esc(handle.read())}</pre>')
    storage = sorted(glob.glob(os.path.join(directory, 'storage-probe*.json')))
    if storage:
        sections.append('<h2 id="storage">Storage qualification</h2>')
        for path in storage:
            text, line = storage_section(directory, path)
            sections.append(text)
            summary.append(line)
    drills = sorted(glob.glob(os.path.join(directory, 'drill', '*.json')) + glob.glob(os.path.join(directory, 'drill-*.json')))
    if drills:
        sections.append('<h2 id="drills">Failover drills</h2>')
        for path in drills:
            text, line = drill_section(directory, path)
            sections.append(text)
            summary.append(line)
    if not sections:
        sections.append('<p class="unknown">No report in this directory yet: run <code>make lab</code>.</p>')
    rows = [[what, status_cell(str(result), ok)] for what, ok, result in summary]
    title = f'cyrus.ha lab run, {now.strftime("%Y-%m-%d %H:%M UTC")}'
    return '\n'.join([
        '<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">', f'<title>{esc(title)}</title>',
        f'<style>{CSS}</style>', '</head>', '<body>', f'<h1>{esc(title)}</h1>',
        f'<p class="meta">Reports in {esc(os.path.abspath(directory))}</p>',
        table(['report', 'result'], rows) if rows else '', *sections, '</body>', '</html>', ''])


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not os.path.isdir(argv[0]):
        sys.stderr.write('usage: report_index.py REPORTS_DIRECTORY (an existing directory)\n')
        return 2
    target = os.path.join(argv[0], 'index.html')
    tmp = target + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as handle:
        handle.write(build(argv[0]))
    os.replace(tmp, target)
    print(target)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
