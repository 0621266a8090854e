# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One storage qualification report per path: single-host checks per host, cross-host checks per host pair.

Input (per path): {host: {'single': <cyrus.ha.storage_probe report of the path or None>,
                          'cross': <cyrus.ha.storage_probe_peer report of the path or None>}}.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.cyrus.ha.plugins.plugin_utils.text_table import render

ORDER = ('safe', 'degraded', 'unsafe')
STATUS_ORDER = ('skip', 'pass', 'warn', 'fail')
# What a failure means for a Cyrus mail store, in plain words
CONSEQUENCES = {
    'mmap_sees_write': 'Cyrus reads indexes through mappings: it would read stale records (index corruption)',
    'mmap_write_msync': 'databases written through mappings lose writes (twoskip/skiplist corruption)',
    'fcntl_locks': 'two processes on one host lock the same mailbox at once: index corruption',
    'flock': 'flock-based locking (some databases, sieve) does not exclude: rare database corruption',
    'rename_reopen': 'a replaced cyrus.header/index is not noticed: stale mailbox metadata',
    'hard_links': 'single-instance store falls back to copies: more space, slower delivery to many recipients',
    'excl_race': 'two O_EXCL creates both win: duplicate lock or spool files, two deliveries of one UID',
    'fsync': 'acknowledged mail can be lost on a crash',
    'fsx': 'reads and writes return wrong data: message and index corruption',
    'metadata_scale': 'large mailboxes get slow to open, list and expunge',
    'metadata_deep': 'past the fall-off, a store of that many messages gets slow to deliver to, open and expunge: '
                     'the seed\'s cliff at a few hundred thousand files',
    'identity': 'the filesystem or its mount options are risky for Cyrus',
    'lock_exclusion': 'two backends (or a backend and its spare) lock the same mailbox at once: mailbox index '
                      'corruption, duplicate or lost UIDs',
    'pingpong_rw': 'locked read-modify-write across hosts loses updates: cyrus.index and mailboxes.db corruption '
                   'when two hosts open the same mailbox',
    'pingpong_cyrus': 'Cyrus reads its index through a never-remapped mapping and writes with pwrite: another '
                      'host\'s updates are not seen and get overwritten (index corruption, lost flags)',
    'pingpong_mmap': 'writes through shared mappings (twoskip/skiplist databases) are lost or stale across hosts: '
                     'database corruption',
    'append_visibility': 'a host sees a message file or index short or stale after another appended to it: '
                         'truncated messages, cache records pointing past the end',
    'rename_visibility': 'a host keeps using the replaced cyrus.header/index after another renamed a new one in: '
                         'stale mailbox metadata, reconstruct needed',
    'metadata_coherence': 'a host does not see files another created or removed: missing or ghost messages, '
                          'failed deliveries and expunges',
    'lock_recovery': 'a crashed host\'s locks are not released to the others: mailboxes stay locked, failover '
                     'stalls',
    'neighbour_stat': 'files another host created are slow or missing on stat: slow mailbox opens after failover',
}
SINGLE = ('identity', 'mmap_sees_write', 'mmap_write_msync', 'fcntl_locks', 'flock', 'rename_reopen', 'hard_links',
          'excl_race', 'fsync', 'fsx', 'metadata_scale', 'metadata_deep')
CROSS = ('lock_exclusion', 'pingpong_rw', 'pingpong_cyrus', 'pingpong_mmap', 'append_visibility',
         'rename_visibility', 'metadata_coherence', 'excl_race', 'lock_recovery', 'neighbour_stat')


# The cross-host properties measured over tries: (check, evidence key, what it is, in Cyrus's terms)
PROPERTIES = (
    ('append_visibility', 'read', 'appended message seen by read()'),
    ('append_visibility', 'mmap', 'appended message seen by an mmap of the index'),
    ('rename_visibility', 'rename', 'renamed cyrus.header seen'),
    ('metadata_coherence', 'new_entry', 'new message file seen'),
    ('metadata_coherence', 'unlink', 'unlinked message file gone'),
)


def _seconds(value) -> str:
    return '-' if value is None else f'{value:g} s'


def visibility_rows(crosses: Mapping, pairs: list) -> list:
    """Per pair and property: how often the peer saw the leader's change at once, never, and the delays."""
    rows = []
    for lead, peer in pairs:
        checks = (crosses.get(peer) or {}).get('checks') or {}
        seen = (crosses.get(peer) or {}).get('run_dir_seen_s', False)
        if seen is not False:
            rows.append({'pair': f'{lead} > {peer}', 'property': 'new directory (the run directory) seen',
                         'at once': '-' if seen is None else ('1/1' if seen == 0 else '0/1'),
                         'never': '1/1' if seen is None else '0/1', 'median': _seconds(seen), 'max': _seconds(seen)})
        for check, key, what in PROPERTIES:
            got = ((checks.get(check) or {}).get('evidence') or {}).get(key)
            if not isinstance(got, Mapping) or not got.get('tries'):
                continue
            rows.append({'pair': f'{lead} > {peer}', 'property': what,
                         'at once': f"{got.get('at_once')}/{got['tries']}", 'never': f"{got.get('never')}/{got['tries']}",
                         'median': _seconds(got.get('median_s')), 'max': _seconds(got.get('max_s'))})
        recovery = ((checks.get('lock_recovery') or {}).get('evidence') or {}).get('recovery_s')
        if recovery is not None:
            rows.append({'pair': f'{lead} > {peer}', 'property': 'lock of a killed holder released',
                         'at once': '-', 'never': '0/1', 'median': _seconds(recovery), 'max': _seconds(recovery)})
    return rows


class ReportError(ValueError):
    """The input is not what the probe modules return; the message names the host and key."""


def worst(verdicts) -> str:
    return ORDER[max([0] + [ORDER.index(v) for v in verdicts])]


def _worst_status(statuses) -> str:
    return STATUS_ORDER[max([0] + [STATUS_ORDER.index(s) for s in statuses])]


def pair_result(leader: Mapping, peer: Mapping, peer_name: str, check: str) -> dict:
    """Status and reason of one cross-host check for the pair (leader, peer)."""
    mine = peer.get('checks', {}).get(check) or {'status': 'fail', 'reason': 'no result'}
    theirs = leader.get('checks', {}).get(check) or {'status': 'skip', 'reason': '', 'evidence': {}}
    evidence = theirs.get('evidence') or {}
    gone = evidence.get('gone') or []
    named = (evidence.get('failed_peers') or []) + gone
    if peer_name in gone:
        return {'status': 'fail', 'reason': theirs['reason']}
    if theirs['status'] == 'fail' and (peer_name in named or not named):
        status = 'fail'
        reasons = [r for r in (mine['reason'] if mine['status'] == 'fail' else '',
                               theirs['reason'] if not named else '') if r]
        reasons = list(dict.fromkeys(reasons))  # both hosts saw the same thing: say it once
        return {'status': status, 'reason': '; '.join(reasons) or theirs['reason']}
    return {'status': mine['status'], 'reason': mine['reason']}


def deep_rows(path_data: Mapping, hosts: list) -> list:
    """The deep metadata curve of every host that ran it: one row per batch (rates at the median)."""
    rows = []
    for host in hosts:
        item = (((path_data[host].get('single') or {}).get('checks') or {}).get('metadata_deep') or {})
        evidence = item.get('evidence') or {}
        falls = evidence.get('falls_off') or {}
        for point in evidence.get('curve') or []:
            if not isinstance(point, Mapping):
                continue
            rows.append({'host': host, 'files': point.get('files'), 'create/s': point.get('create_per_s'),
                         'stat/s': point.get('stat_per_s'), 'open/s': point.get('open_per_s'),
                         'used MiB': point.get('used_mib'),
                         'falls off': ', '.join(sorted(phase for phase, why in falls.items()
                                                       if f'({point.get("files")} files)' in str(why)))})
    return rows


def build(path_data: Mapping, title: str | None = None) -> dict:
    """The report of one path: {'path', 'verdict', 'hosts', 'single', 'pairs', 'failures', 'markdown'}."""
    if not isinstance(path_data, Mapping) or not path_data:
        raise ReportError('the input must be a non-empty mapping of host -> {single, cross}')
    hosts = sorted(path_data)
    for host in hosts:
        if not isinstance(path_data[host], Mapping):
            raise ReportError(f'host {host}: expected a mapping with "single" and "cross", got {path_data[host]!r}')
    crosses = {h: path_data[h].get('cross') for h in hosts if path_data[h].get('cross')}
    leader_name = next((c['leader'] for c in crosses.values() if c.get('leader')), None)
    leader = crosses.get(leader_name) or {}
    path = title or (leader.get('path') if leader else None) or next(
        (d['single']['path'] for d in path_data.values() if d.get('single')), '?')
    failures = []
    host_verdicts = {}
    single_rows = []
    for check in SINGLE:
        row = {'check': check}
        for host in hosts:
            single = path_data[host].get('single') or {}
            item = (single.get('checks') or {}).get(check)
            row[host] = item['status'] if item else '-'
            if item and item['status'] in ('fail', 'warn'):
                failures.append({'check': check, 'where': host, 'status': item['status'], 'reason': item['reason'],
                                 'consequence': CONSEQUENCES.get(check, '')})
        single_rows.append(row)
    for host in hosts:
        verdicts = [(path_data[host].get('single') or {}).get('verdict', 'safe'),
                    (crosses.get(host) or {}).get('verdict', 'safe')]
        host_verdicts[host] = worst(verdicts)
    pairs = [(leader_name, peer) for peer in (leader.get('peers') or [])[1:]] if leader_name else []
    cross_rows = []
    for check in CROSS:
        row = {'check': check}
        for lead, peer in pairs:
            key = f'{lead} > {peer}'
            peer_report = crosses.get(peer) or {'checks': {}}
            if peer not in crosses:
                got = {'status': 'fail', 'reason': f'{peer} returned no cross-host result (unreachable or failed)'}
            else:
                got = pair_result(leader, peer_report, peer, check)
            row[key] = got['status']
            if got['status'] in ('fail', 'warn'):
                failures.append({'check': check, 'where': key, 'status': got['status'], 'reason': got['reason'],
                                 'consequence': CONSEQUENCES.get(check, '')})
        cross_rows.append(row)
    cross_failed = any(f['where'] and '>' in f['where'] and f['status'] == 'fail' for f in failures)
    verdict = worst(list(host_verdicts.values()) + (['unsafe'] if cross_failed else []))
    pair_keys = [f'{a} > {b}' for a, b in pairs]
    lines = [f'# Storage qualification of {path}', '', f'Verdict: **{verdict}**', '',
             f'Hosts: {", ".join(f"{h} ({v})" for h, v in host_verdicts.items())}', '', '## Single-host checks', '',
             render(single_rows, ['check'] + hosts, 'markdown').rstrip('\n'), '']
    if pair_keys:
        lines += ['## Cross-host checks (leader > peer)', '',
                  render(cross_rows, ['check'] + pair_keys, 'markdown').rstrip('\n'), '']
    visibility = visibility_rows(crosses, pairs)
    if visibility:
        lines += ['## Measured across hosts (Cyrus reads right after taking its lock: only "at once" is safe)', '',
                  render(visibility, ['pair', 'property', 'at once', 'never', 'median', 'max'],
                         'markdown').rstrip('\n'), '']
    deep = deep_rows(path_data, hosts)
    if deep:
        lines += ['## Deep metadata curve (tree size against rates at the median; sampled stat and open)', '',
                  render(deep, ['host', 'files', 'create/s', 'stat/s', 'open/s', 'used MiB', 'falls off'],
                         'markdown').rstrip('\n'), '']
    if failures:
        lines += ['## Failures and what they mean for Cyrus', '',
                  render(failures, ['check', 'where', 'status', 'reason', 'consequence'], 'markdown').rstrip('\n'), '']
    recovery = {peer: (crosses.get(peer, {}).get('checks', {}).get('lock_recovery', {}).get('evidence') or {}).get(
        'recovery_s') for dummy, peer in pairs}
    return {'path': path, 'verdict': verdict, 'hosts': host_verdicts, 'leader': leader_name,
            'single': single_rows, 'pairs': cross_rows, 'failures': failures, 'lock_recovery_s': recovery,
            'visibility': visibility, 'deep_curve': deep,
            'markdown': '\n'.join(lines)}
