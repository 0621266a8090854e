# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""From check results to a verdict: safe, degraded or unsafe, with the reasons."""

from __future__ import annotations

# A failure here corrupts a mail store: the verdict is unsafe.
CRITICAL = ('mmap_sees_write', 'mmap_write_msync', 'fcntl_locks', 'rename_reopen', 'excl_race', 'fsync', 'fsx')
# A failure or warning here costs space, speed or a fallback: the verdict is degraded.
ADVISORY = ('identity', 'flock', 'hard_links', 'metadata_scale', 'metadata_deep')
ORDER = ('safe', 'degraded', 'unsafe')


def worst(verdicts) -> str:
    level = 0
    for item in verdicts:
        level = max(level, ORDER.index(item))
    return ORDER[level]


def decide(results: dict, critical: tuple = CRITICAL, passed: str = 'every check run passed') -> dict:
    """results: {name: result}; critical: the checks whose failure is unsafe (the single-host ones by default,
    crosshost_checks.CRITICAL for the cross-host run). Returns {'verdict', 'reasons'}: the critical checks'
    reasons first, in the order of critical, then the others by name.

    A failed critical check is unsafe; any other failure, a warning, or a critical check skipped because
    the time budget ran out is degraded.
    """
    unsafe = []
    degraded = []
    for name in tuple(critical) + tuple(sorted(set(results) - set(critical))):
        item = results.get(name)
        if item is None:
            continue
        line = '%s: %s' % (name, item['reason'])
        if item['status'] == 'fail':
            (unsafe if name in critical else degraded).append(line)
        elif item['status'] == 'warn':
            degraded.append(line)
        elif item['status'] == 'skip' and name in critical and item['evidence'].get('budget_exhausted'):
            degraded.append(line)
    if unsafe:
        return {'verdict': 'unsafe', 'reasons': unsafe + degraded}
    if degraded:
        return {'verdict': 'degraded', 'reasons': degraded}
    return {'verdict': 'safe', 'reasons': [passed]}
