# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metadata at scale: a Cyrus-like tree grown in doubling batches, looking for a cliff.

A busy machine is not a slow filesystem: each timed phase is followed by the same number of stats of a
name the kernel has cached on the local root (the noise of this moment), latency spikes count only when
they stand well above that noise, and a cliff in create, stat or open is measured again before it is
reported: it stands only when it reproduces.
"""

from __future__ import annotations

import os
import time

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import result

PHASES = ('create', 'stat', 'open', 'unlink')
FILES_PER_FOLDER = 64
FOLDERS_PER_USER = 4
BODY = b'From: probe@example.org\r\nSubject: probe\r\n\r\n' + b'x' * 460 + b'\r\n'


def percentile(values: list, fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def batch_sizes(largest: int, rounds: int) -> list:
    return [max(1, largest >> (rounds - 1 - index)) for index in range(rounds)]


def message_path(root: str, number: int) -> str:
    folder, uid = divmod(number, FILES_PER_FOLDER)
    user, box = divmod(folder, FOLDERS_PER_USER)
    return os.path.join(root, 'user', 'u%04d' % user, 'f%d' % box, '%d.' % (uid + 1))


BASELINE_OPS = 2000
REPEATS = 2


def _latencies(paths: list, func) -> tuple:
    latencies = []
    started = time.monotonic()
    for path in paths:
        one = time.monotonic()
        func(path)
        latencies.append(time.monotonic() - one)
    return latencies, time.monotonic() - started


def _timed(paths: list, func) -> dict:
    """Rate, median and p99 of func over paths, and the p99 of as many stats of '/' right after (the noise)."""
    latencies, wall = _latencies(paths, func)
    noise, dummy = _latencies(['/'] * min(len(paths), BASELINE_OPS), os.stat)
    median = percentile(latencies, 0.5)
    return {'ops': len(paths), 'rate': round(len(paths) / wall, 1) if wall > 0 else None,
            'median_rate': round(1 / median, 1) if median > 0 else None,
            'median_ms': round(median * 1000, 4),
            'p99_ms': round(percentile(latencies, 0.99) * 1000, 4),
            'noise_p99_ms': round(percentile(noise, 0.99) * 1000, 4)}


def _create(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, BODY)
    finally:
        os.close(fd)


def _open(path: str) -> None:
    with open(path, 'rb') as handle:
        handle.read(64)


def flagged(batch: dict, first: dict, floor_ms: float) -> dict:
    """The rules a batch's phase breaks: {'rate': why, 'p99': why} (either may be absent).

    'rate': the rate at the median latency is under half the first batch's (a few operations delayed
    by a busy machine do not move it; a cache that stops holding the tree does).
    'p99': p99 latency over 10x the median, over floor_ms and over 3x the machine's own noise measured right
    after the phase (a busy machine delays any operation, not just the filesystem's).
    """
    why = {}
    if first.get('median_rate') and batch.get('median_rate') is not None and \
            batch['median_rate'] < first['median_rate'] / 2:
        why['rate'] = 'rate %.0f/s under half of the first batch\'s %.0f/s' % (batch['median_rate'],
                                                                               first['median_rate'])
    if batch['p99_ms'] > 10 * batch['median_ms'] and batch['p99_ms'] > floor_ms and \
            batch['p99_ms'] > 3 * batch.get('noise_p99_ms', 0.0):
        why['p99'] = 'p99 %.3f ms over 10x the median %.3f ms' % (batch['p99_ms'], batch['median_ms'])
    return why


def is_cliff(why: dict, batch: dict, first: dict) -> bool:
    """A cliff: the median rate halved, or latency spikes that halve the batch's overall rate."""
    if 'rate' in why:
        return True
    return 'p99' in why and bool(first.get('rate')) and batch.get('rate') is not None and \
        batch['rate'] < first['rate'] / 2


def find_cliffs(batches: list, floor_ms: float) -> tuple:
    """({phase: reason} where a batch and every later one is a cliff, [flagged batches for the record])."""
    cliffs = {}
    spikes = []
    for phase in PHASES:
        rows = [batch[phase] for batch in batches if phase in batch]
        if len(rows) < 2:
            continue
        marks = [flagged(row, rows[0], floor_ms) for row in rows]
        start = None
        for index in range(1, len(rows)):
            if marks[index]:
                spikes.append('%s batch %d: %s' % (phase, index + 1, '; '.join(marks[index].values())))
            if is_cliff(marks[index], rows[index], rows[0]):
                if start is None:
                    start = index
            else:
                start = None
        if start is not None:
            rows[start]['cliff'] = True
            why = '; '.join(marks[start].values())
            cliffs[phase] = 'from batch %d (%d files): %s' % (start + 1, batches[start]['files'], why)
    return cliffs, spikes


def _remeasure(phase: str, root: str, files: list) -> dict:
    """A phase timed again as it was: stat and open over the same files, create as many new files beside the tree
    (then removed)."""
    if phase == 'create':
        extra = [os.path.join(root, 'again', '%d.' % index) for index in range(len(files))]
        os.makedirs(os.path.join(root, 'again'), exist_ok=True)
        try:
            return _timed(extra, _create)
        finally:
            for path in extra:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
    return _timed(files, os.stat if phase == 'stat' else _open)


def confirm(cliffs: dict, batches: list, root: str, paths: list, floor_ms: float, remeasure=None) -> tuple:
    """The cliffs of create, stat and open that reproduce when their first batch is measured again REPEATS times
    (paths: every file of the tree, in order); and a note for each one that did not."""
    remeasure = remeasure or _remeasure
    kept, gone = {}, []
    for phase, why in cliffs.items():
        index = next((n for n, batch in enumerate(batches) if batch[phase].get('cliff')), len(batches) - 1)
        files = paths[batches[index]['files'] - batches[index]['batch_files']:batches[index]['files']] \
            if phase == 'create' else paths[:batches[index]['files']]
        again = [remeasure(phase, root, files) for dummy in range(REPEATS)]
        batches[index][phase]['again'] = again
        if all(is_cliff(flagged(row, batches[0][phase], floor_ms), row, batches[0][phase]) for row in again):
            kept[phase] = why
        else:
            gone.append('%s batch %d: did not reproduce when measured again (%s)' % (
                phase, index + 1, ', '.join('%s/s at the median, p99 %.3f ms' % (row['median_rate'], row['p99_ms'])
                                            for row in again)))
    return kept, gone


def metadata_scale(workdir: str, largest: int = 2048, rounds: int = 4, floor_ms: float = 5.0) -> dict:
    steps = result.Steps('metadata_scale')
    root = os.path.join(workdir, 'scale')
    made_dirs = set()
    paths = []
    batches = []
    for size in batch_sizes(largest, rounds):
        new = [message_path(root, len(paths) + index) for index in range(size)]
        for path in new:
            parent = os.path.dirname(path)
            if parent not in made_dirs:
                os.makedirs(parent, exist_ok=True)
                made_dirs.add(parent)
        row = {'batch_files': size, 'create': _timed(new, _create)}
        paths.extend(new)
        row['files'] = len(paths)
        row['stat'] = _timed(paths, os.stat)
        row['open'] = _timed(paths, _open)
        batches.append(row)
    cliffs, spikes = find_cliffs(batches, floor_ms)
    cliffs, not_reproduced = confirm(cliffs, batches, root, paths, floor_ms)
    done = 0
    for row in batches:
        row['unlink'] = _timed(paths[done:done + row['batch_files']], os.unlink)
        done += row['batch_files']
    steps.evidence['batches'] = batches
    unlink_cliffs, spikes = find_cliffs(batches, floor_ms)
    if 'unlink' in unlink_cliffs:
        cliffs['unlink'] = unlink_cliffs['unlink']
    steps.evidence['cliffs'] = cliffs
    steps.evidence['flagged'] = spikes + not_reproduced
    for phase, why in sorted(cliffs.items()):
        steps.warn('%s rate cliff %s' % (phase, why))
    first, last = batches[0], batches[-1]
    numbers = (last['files'], last['create']['rate'], last['stat']['rate'], last['open']['rate'],
               last['unlink']['rate'], first['create']['rate'])
    return steps.finish('no metadata cliff up to %d files: create %s/s, stat %s/s, open %s/s, unlink %s/s '
                        '(last batch; first %s/s creates)' % numbers)
