# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CTDB ping_pong's ring of byte locks, as one process of the ring (on this host or on one of several).

K processes chase each other round K+1 one-byte fcntl locks, each incrementing the byte it holds. Once
every process is in the ring, each process finds every byte incremented by exactly K since its last
visit: a lost or stale update shows as another increment. A process only judges a step when every
process has been in the ring for a whole lap and none has left, so a process that starts late or
finishes early (a busy machine) is not mistaken for a broken filesystem.

File layout (the file is made by the caller, at least 256 bytes long): bytes 0..K are the ring;
64+i "process i has opened the file", 192+i "process i holds a ring lock" (so nobody can lap it any
more), 128+i "process i has left" (the others stop judging).
"""

from __future__ import annotations

import os
import time

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi

PRESENT, IN_RING, LEFT = 64, 192, 128
SIZE = 4096


def worker(chan, path, index, procs_total, flavour, iterations, presence_wait=3.0):  # pragma: no cover - a child
    """One process of the ring; sends {'locks_per_s', 'judged', 'bad', 'values', 'presence_wait_s'}.

    flavour: 'rw' (pread/pwrite, ping_pong -rw), 'cyrus' (reads from a never-remapped read-only
    mapping, pwrite writes) or 'mmap' (reads and writes through a shared mapping + msync, -rwm).
    """
    locks_total = procs_total + 1
    fd = os.open(path, os.O_RDWR)
    mapping = None
    if flavour != 'rw':
        mapping = sysapi.Mapping(fd, SIZE, writable=flavour == 'mmap')

    def read(at):
        return os.pread(fd, 1, at)[0] if mapping is None else mapping.read(at, 1)[0]

    def write(at, value):
        if flavour == 'mmap':
            mapping.write(at, bytes([value]))
            mapping.sync()
        else:
            os.pwrite(fd, bytes([value]), at)

    os.pwrite(fd, b'\x01', PRESENT + index)
    everyone = b'\x01' * procs_total
    nobody = bytes(procs_total)
    # Enter the ring at a lock of its own (process i at lock i, one lock stays free), then wait (briefly)
    # until every process holds its lock: nobody starts running round the ring alone, however late
    # the others were scheduled. From now on this process always holds a lock, so nobody can lap it.
    at = index % locks_total
    sysapi.setlk(fd, 'w', at, 1, wait=True)
    os.pwrite(fd, b'\x01', IN_RING + index)
    waited = time.monotonic()
    deadline = waited + presence_wait
    while os.pread(fd, procs_total, IN_RING) != everyone and time.monotonic() < deadline:
        time.sleep(0.0005)
    waited = time.monotonic() - waited
    last = [0] * locks_total
    judged = 0
    bad = 0
    values = set()
    started = time.monotonic()
    since = None
    for step in range(iterations):
        nxt = (at + 1) % locks_total
        sysapi.setlk(fd, 'w', nxt, 1, wait=True)
        value = read(at)
        incr = (value - last[at]) % 256
        last[at] = value
        write(at, (value + 1) % 256)
        # judge a step only when every process is in the ring (present, not left) and past a whole lap
        if since is None and os.pread(fd, procs_total, IN_RING) == everyone:
            since = step
        if since is not None and step >= since + locks_total and os.pread(fd, procs_total, LEFT) == nobody:
            judged += 1
            values.add(incr)
            bad += incr != procs_total
        sysapi.setlk(fd, 'u', at, 1)
        at = nxt
    elapsed = time.monotonic() - started
    os.pwrite(fd, b'\x01', LEFT + index)  # left (still holding a lock): the others stop judging
    chan.send({'locks_per_s': round(iterations / elapsed, 1) if elapsed > 0 else None, 'judged': judged,
               'bad': bad, 'values': sorted(values)[:8], 'presence_wait_s': round(waited, 3)})


def make(path: str) -> None:
    """The ring's file, created exclusively and zeroed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.pwrite(fd, bytes(SIZE), 0)
    finally:
        os.close(fd)
