# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The seed's cliff, looked for where it happens: a Cyrus-like tree grown to hundreds of thousands of
messages (opt-in: check ``metadata_deep``).

The tree doubles batch by batch (1,024 files, then 2,048, 4,096, ... up to ``largest``). After each
batch: the create rate of that batch, and the stat and open rates over a random sample of the whole
tree (what a busy server touches is spread over all of it). Each batch is reported as it ends (a
JSON line in ``progress_file`` and a syslog line), so a run of many minutes can be watched. Growth
stops before a batch that would take the tree past the disk budget, leave the filesystem under
MIN_FREE_SHARE free, or not finish in the time left; every file is removed before the check returns,
whatever stopped it (the probe removes the work directory after a check it had to kill). The curve
falls off where a phase's rate at the median drops under half of the first batch's and stays there
(scale.find_cliffs, the rule of the small check).
"""

from __future__ import annotations

import os
import random
import syslog
import time

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import progress
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import result
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import scale

FIRST_BATCH = 1024
SAMPLE = 8192
MIN_FREE_SHARE = 0.05
MIB = 1024 * 1024
# A batch is started only when the time left covers this many times what the last batch took (the next
# one is twice as large) plus removing the whole tree at the rate files were created.
TIME_MARGIN = 3.0


def tree_sizes(largest: int) -> list:
    """Sizes of the tree after each batch: 1024, 2048, 4096, ... and largest itself last."""
    sizes, size = [], FIRST_BATCH
    while size < largest:
        sizes.append(size)
        size *= 2
    return sizes + [largest]


def _progress(progress_file, line: dict, label: str) -> None:
    """One batch as it ends: a JSON line appended to progress_file (when given) and a syslog line."""
    progress.append(progress_file, line)
    syslog.openlog('cyrus-ha-storage-probe', 0, syslog.LOG_USER)
    syslog.syslog(syslog.LOG_INFO, '%s: %s' % (label, ', '.join('%s %s' % (k, v) for k, v in sorted(line.items()))))


def _used(path: str) -> int:
    vfs = os.statvfs(path)
    return (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize


def _free_share(path: str) -> tuple:
    vfs = os.statvfs(path)
    return vfs.f_bavail * vfs.f_frsize, vfs.f_blocks * vfs.f_frsize


def _row(row: dict) -> dict:
    """A batch as the curve shows it."""
    return {'files': row['files'], 'create_per_s': row['create']['median_rate'], 'stat_per_s': row['stat']['median_rate'],
            'open_per_s': row['open']['median_rate'], 'create_p99_ms': row['create']['p99_ms'],
            'used_mib': round(row['used_bytes'] / MIB, 1), 'seconds': row['seconds']}


def why_stop(size: int, files: int, used: int, budget: int, free: int, total: int, left: float,
             last_seconds: float, create_rate: float) -> str:
    """Why the batch that grows the tree from files to size must not start ('' when it may)."""
    per_file = used / files if files else 4096
    more = int(per_file * (size - files))
    if used + more > budget:
        return ('the batch to %d files would take the tree past the disk budget of %d MiB (%d MiB used by %d files)'
                % (size, budget // MIB, used // MIB, files))
    if total and free - more < MIN_FREE_SHARE * total:
        return ('the batch to %d files would leave under %d%% of the filesystem free' % (size, MIN_FREE_SHARE * 100))
    if left is not None and files:
        needed = TIME_MARGIN * 2 * last_seconds + (size / create_rate if create_rate else 0)
        if left < needed:
            return ('the batch to %d files would not finish (and the tree be removed) in the %.0f s left of the '
                    'time budget (about %.0f s needed)' % (size, left, needed))
    return ''


def metadata_deep(workdir: str, largest: int = 500000, budget_bytes: int = 2048 * MIB, deadline: float | None = None,
                  progress_file: str | None = None, floor_ms: float = 5.0, label: str = 'metadata_deep') -> dict:
    """Grow the tree to largest files within budget_bytes and before deadline (time.monotonic()); the curve."""
    steps = result.Steps('metadata_deep')
    root = os.path.join(workdir, 'deep')
    os.mkdir(root, 0o700)
    base_used = _used(workdir)
    made_dirs, paths, rows = set(), [], []
    stopped = ''
    started = time.monotonic()
    removal = {}
    try:
        for size in tree_sizes(largest):
            free, total = _free_share(workdir)
            left = None if deadline is None else deadline - time.monotonic()
            stopped = why_stop(size, len(paths), max(0, _used(workdir) - base_used), budget_bytes, free, total, left,
                               rows[-1]['seconds'] if rows else 0.0,
                               rows[-1]['create']['rate'] if rows else 0.0)
            if stopped:
                break
            one = time.monotonic()
            new = [scale.message_path(root, len(paths) + index) for index in range(size - len(paths))]
            for path in new:
                parent = os.path.dirname(path)
                if parent not in made_dirs:
                    os.makedirs(parent, exist_ok=True)
                    made_dirs.add(parent)
            row = {'batch_files': len(new), 'create': scale._timed(new, scale._create)}  # pylint: disable=protected-access
            paths.extend(new)
            row['files'] = len(paths)
            sample = random.sample(paths, min(SAMPLE, len(paths)))
            row['stat'] = scale._timed(sample, os.stat)  # pylint: disable=protected-access
            row['open'] = scale._timed(sample, scale._open)  # pylint: disable=protected-access
            row['used_bytes'] = max(0, _used(workdir) - base_used)
            row['seconds'] = round(time.monotonic() - one, 3)
            rows.append(row)
            _progress(progress_file, _row(row), label)
    finally:
        gone = time.monotonic()
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        for directory, dirs, files in os.walk(root, topdown=False):
            for name in files:     # a file of a batch cut short
                try:
                    os.unlink(os.path.join(directory, name))
                except OSError:
                    pass
            try:
                os.rmdir(directory)
            except OSError:
                pass
        removal = {'files': len(paths), 'seconds': round(time.monotonic() - gone, 3)}
        removal['per_s'] = round(len(paths) / removal['seconds'], 1) if removal['seconds'] > 0 else None
    steps.evidence['curve'] = [_row(row) for row in rows]
    steps.evidence['batches'] = rows
    steps.evidence['removed'] = removal
    steps.evidence['largest'] = largest
    steps.evidence['budget_mib'] = budget_bytes // MIB
    steps.evidence['seconds'] = round(time.monotonic() - started, 3)
    if stopped:
        steps.evidence['stopped'] = stopped
    if not rows:
        return result.result('metadata_deep', 'skip', 'not run: %s' % stopped, steps.evidence,
                             time.monotonic() - started)
    falls, spikes = scale.find_cliffs(rows, floor_ms)
    steps.evidence['falls_off'] = falls
    steps.evidence['flagged'] = spikes
    for phase, why in sorted(falls.items()):
        steps.warn('%s rate falls off %s' % (phase, why))
    last = rows[-1]
    tail = ('; stopped at %d of %d files: %s' % (last['files'], largest, stopped)) if stopped else ''
    return steps.finish('no fall-off up to %d files: create %s/s, stat %s/s, open %s/s at the median (first batch: '
                        'create %s/s)%s' % (last['files'], last['create']['median_rate'], last['stat']['median_rate'],
                                            last['open']['median_rate'], rows[0]['create']['median_rate'], tail))
