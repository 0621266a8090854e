# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fsx-lite: seeded random pread/pwrite/mapped read/mapped write/truncate against an in-memory model."""

from __future__ import annotations

import os
import random

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import result
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi

MAX_SIZE = 256 * 1024
OPS = ('read', 'write', 'mapread', 'mapwrite', 'truncate')


def _first_diff(seen: bytes, want: bytes) -> int:
    for index, (one, two) in enumerate(zip(seen, want)):
        if one != two:
            return index
    return min(len(seen), len(want))


def run_fsx(workdir: str, ops: int = 1000, seed: int = 1, max_size: int = MAX_SIZE) -> dict:
    steps = result.Steps('fsx')
    rng = random.Random(seed)
    path = os.path.join(workdir, 'fsx.data')
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    model = bytearray()
    log = []
    counts = dict.fromkeys(OPS, 0)
    use_mmap = True
    steps.evidence.update({'seed': seed, 'ops': ops, 'max_size': max_size})

    def mismatch(number, op, offset, seen, want):
        at = offset + _first_diff(seen, want)
        steps.evidence.update({'failed_op': number, 'failed_at_offset': at, 'last_ops': log[-10:]})
        return steps.fail_now('op %d (%s) read wrong data at offset %d (seed %d replays it)' % (
            number, op, at, seed))

    try:
        for number in range(ops):
            op = rng.choice(OPS)
            if op.startswith('map') and not use_mmap:
                op = op[3:]
            size = len(model)
            if op in ('read', 'mapread'):
                if size == 0:
                    continue
                offset = rng.randrange(size)
                length = rng.randint(1, min(size - offset, 65536))
                log.append([op, offset, length])
                if op == 'read':
                    seen = os.pread(fd, length, offset)
                else:
                    page_end = -(-size // sysapi.PAGE) * sysapi.PAGE
                    try:
                        mapping = sysapi.Mapping(fd, page_end)
                    except OSError as exc:
                        use_mmap = False
                        steps.evidence['mmap_errno'] = sysapi.errname(exc)
                        continue
                    with mapping:
                        seen = mapping.read(offset, length)
                        tail = ctypes_tail(mapping, size, page_end)
                    if tail is not None and tail != bytes(len(tail)):
                        steps.evidence.update({'failed_op': number, 'last_ops': log[-10:]})
                        return steps.fail_now('op %d: bytes past EOF in the last mapped page are not zero '
                                              '(seed %d replays it)' % (number, seed))
                if seen != bytes(model[offset:offset + length]):
                    return mismatch(number, op, offset, seen, bytes(model[offset:offset + length]))
            elif op in ('write', 'mapwrite'):
                offset = rng.randrange(max_size - 1)
                length = rng.randint(1, min(max_size - offset, 65536))
                data = bytes(rng.getrandbits(8) for dummy in range(min(length, 64))) * (length // 64 + 1)
                data = data[:length]
                log.append([op, offset, length])
                if op == 'write':
                    os.pwrite(fd, data, offset)
                else:
                    if offset + length > size:
                        os.ftruncate(fd, offset + length)
                    try:
                        mapping = sysapi.Mapping(fd, offset + length, writable=True)
                    except OSError as exc:
                        use_mmap = False
                        steps.evidence['mmap_errno'] = sysapi.errname(exc)
                        if offset + length > size:
                            os.ftruncate(fd, size)
                        continue
                    with mapping:
                        mapping.write(offset, data)
                        mapping.sync()
                if offset > size:
                    model.extend(bytes(offset - size))
                model[offset:offset + length] = data
            else:
                new_size = rng.randrange(max_size)
                log.append([op, new_size])
                os.ftruncate(fd, new_size)
                if new_size < size:
                    del model[new_size:]
                else:
                    model.extend(bytes(new_size - size))
            counts[op] += 1
        final = os.pread(fd, len(model) + 1, 0)
        if final != bytes(model):
            return mismatch(ops, 'final read', 0, final, bytes(model))
    finally:
        os.close(fd)
    steps.evidence['counts'] = counts
    if not use_mmap:
        steps.warn('mmap unsupported (%s): mapped operations were replaced by pread/pwrite'
                   % steps.evidence['mmap_errno'])
    return steps.finish('%d random operations (seed %d) matched the model; bytes past EOF read as zero' % (
        ops, seed))


def ctypes_tail(mapping, size: int, page_end: int):
    """The bytes between EOF and the end of its page, which must read as zero (None: EOF on a page edge)."""
    if page_end <= size or page_end > mapping.length:
        return None
    return mapping.read(size, page_end - size)
