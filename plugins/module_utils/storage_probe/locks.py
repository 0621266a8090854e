# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fcntl and flock semantics between processes on one host, and a lock rate."""

from __future__ import annotations

import fcntl
import os
import signal
import time

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import helpers
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import procs
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import result
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import ring
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi

WAKE_LIMIT = 1.0  # seconds an F_SETLKW waiter may take to get a released lock


def _refused(fd: int, kind: str, start: int = 0, length: int = 0):
    """True if refused with a conflict, False if granted (then released), else the errno name."""
    try:
        sysapi.setlk(fd, kind, start, length)
    except OSError as exc:
        if exc.errno in sysapi.CONFLICT:
            return True
        return sysapi.errname(exc)
    sysapi.setlk(fd, 'u', start, length)
    return False


def _io_allowed(fd: int) -> bool:
    try:
        os.pwrite(fd, b'x', 4000)
        os.pread(fd, 1, 4000)
    except OSError:
        return False
    return True


def lock_rate(fd: int, seconds: float = 0.2) -> float:
    """Uncontended lock + unlock pairs of one byte per second in one process."""
    count = 0
    started = time.monotonic()
    deadline = started + seconds
    while True:
        for dummy in range(200):
            sysapi.setlk(fd, 'w', 0, 1)
            sysapi.setlk(fd, 'u', 0, 1)
        count += 200
        now = time.monotonic()
        if now >= deadline:
            return round(count / (now - started), 1)


def pingpong(workdir: str, procs_total: int = 2, iterations: int = 4000) -> dict:
    """ping_pong -rw among local processes: {'increment_ok', 'locks_per_s', 'judged', 'bad', 'values'}."""
    path = os.path.join(workdir, 'pingpong')
    ring.make(path)
    workers = []
    try:
        for index in range(procs_total):
            workers.append(procs.Child(ring.worker, path, index, procs_total, 'rw', iterations, deadline=30))
        answers = [worker.recv(25) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    rates = sorted(answer['locks_per_s'] or 0 for answer in answers)
    judged = min(answer['judged'] for answer in answers)
    return {'increment_ok': judged > 0 and all(answer['bad'] == 0 for answer in answers),
            'locks_per_s': rates[len(rates) // 2], 'judged': judged, 'bad': sum(answer['bad'] for answer in answers),
            'values': sorted(set(v for answer in answers for v in answer['values']))}


def fcntl_locks(workdir: str) -> dict:
    steps = result.Steps('fcntl_locks')
    path = os.path.join(workdir, 'cyrus.lock')
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.pwrite(fd, bytes(8192), 0)
    try:
        with helpers.helper() as holder:
            helpers.value(holder.call(op='open', path=path))
            try:
                helpers.value(holder.call(op='lock', kind='w'))
            except OSError as exc:
                return steps.fail_now('a whole-file write lock could not be taken: %s' % sysapi.errname(exc))
            refused = _refused(fd, 'w')
            steps.expect('whole_write_excludes_write', refused is True,
                         'a second process got a write lock while another held a whole-file write lock')
            steps.expect('whole_write_excludes_read', _refused(fd, 'r') is True,
                         'a second process got a read lock while another held a whole-file write lock')
            holder_seen = sysapi.getlk(fd, 'w')
            steps.evidence['getlk_holder'] = holder_seen
            steps.expect('getlk_names_holder', holder_seen['type'] == 'w' and holder_seen['pid'] == holder.pid,
                         'F_GETLK did not name the holder (pid %d): it answered %s' % (holder.pid, holder_seen))
            steps.expect('advisory_not_mandatory', _io_allowed(fd),
                         'I/O through another fd failed under a fcntl lock: mandatory locking')
            helpers.value(holder.call(op='lock', kind='r'))
            steps.expect('read_shares_read', _refused(fd, 'r') is False, 'two processes could not share a read lock')
            steps.expect('read_excludes_write', _refused(fd, 'w') is True,
                         'a write lock was granted while another process held a read lock')
            helpers.value(holder.call(op='lock', kind='u'))
            # Cyrus's sub-page ranges inside one 4 KiB block
            helpers.value(holder.call(op='lock', kind='w', start=0, length=16))
            helpers.value(holder.call(op='lock', kind='w', start=40, length=8))
            steps.expect('range_gap_free', _refused(fd, 'w', 16, 24) is False,
                         'bytes 16-40 were refused although only 0-16 and 40-48 were locked')
            steps.expect('range_overlap_refused', _refused(fd, 'w', 10, 2) is True and
                         _refused(fd, 'w', 44, 1) is True,
                         'a byte-range lock overlapping another process\'s range was granted')
            steps.expect('range_after_free', _refused(fd, 'w', 48, 100) is False,
                         'bytes 48-148 were refused although nothing locked them')
            seen = sysapi.getlk(fd, 'w', 40, 8)
            steps.expect('range_getlk_names_holder', seen['pid'] == holder.pid and seen['start'] == 40,
                         'F_GETLK on bytes 40-48 did not name the holder: %s' % seen)
            # closing any fd on the file releases all of the process's locks on it
            helpers.value(holder.call(op='open', path=path, name='second'))
            helpers.value(holder.call(op='close', name='second'))
            steps.expect('close_any_fd_releases', _refused(fd, 'w', 0, 16) is False,
                         'closing another fd of the holder did not release its locks')
            # F_SETLKW wakes promptly once the lock is released
            helpers.value(holder.call(op='lock', kind='w'))
            with helpers.helper() as waiter:
                helpers.value(waiter.call(op='open', path=path))
                waiter.send({'op': 'lock', 'kind': 'w', 'wait': True})
                waiter.recv(5)
                time.sleep(0.05)
                steps.expect('setlkw_blocks', not waiter.chan.poll(), 'F_SETLKW did not wait for the holder')
                released = time.monotonic()
                helpers.value(holder.call(op='lock', kind='u'))
                try:
                    helpers.value(waiter.recv(5))
                    wake = time.monotonic() - released
                except procs.ChildError:
                    wake = None
                steps.evidence['setlkw_wake_s'] = None if wake is None else round(wake, 4)
                steps.expect('setlkw_wakes', wake is not None and wake < WAKE_LIMIT,
                             'an F_SETLKW waiter did not get the released lock within %.1f s' % WAKE_LIMIT)
        # SIGKILL of a holder releases its locks
        with helpers.helper() as victim:
            helpers.value(victim.call(op='open', path=path))
            helpers.value(victim.call(op='lock', kind='w'))
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(5)
            steps.expect('sigkill_releases', _refused(fd, 'w') is False,
                         'the locks of a SIGKILLed holder were not released')
        steps.evidence['locks_per_s'] = lock_rate(fd)
        try:
            pong = pingpong(workdir)
        except procs.ChildError as exc:
            pong = {'increment_ok': False, 'error': str(exc), 'values': [], 'locks_per_s': None}
        steps.evidence['pingpong'] = pong
        steps.expect('pingpong_increment', pong['increment_ok'],
                     'two processes incrementing bytes under a ring of byte locks (ping_pong -rw) saw increments '
                     '%s, not 2' % (pong['values'] or pong.get('error') or 'none: they never met in the ring'))
    finally:
        os.close(fd)
    return steps.finish('fcntl locks exclude, share, split by range, name the holder, are released by close '
                        'and SIGKILL, F_SETLKW wakes promptly, and a two-process ping-pong increments by 2')


def flock_locks(workdir: str) -> dict:
    steps = result.Steps('flock')
    path = os.path.join(workdir, 'cyrus.flock')
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.pwrite(fd, bytes(8192), 0)

    def refused(op):
        try:
            fcntl.flock(fd, helpers.FLOCK_OPS[op] | fcntl.LOCK_NB)
        except OSError as exc:
            return True if exc.errno in sysapi.CONFLICT else sysapi.errname(exc)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False

    try:
        with helpers.helper() as holder:
            helpers.value(holder.call(op='open', path=path))
            try:
                helpers.value(holder.call(op='flock', mode='ex'))
            except OSError as exc:
                return steps.fail_now('flock(LOCK_EX) failed: %s' % sysapi.errname(exc))
            steps.expect('ex_excludes_ex', refused('ex') is True, 'flock LOCK_EX was granted to two processes')
            steps.expect('ex_excludes_sh', refused('sh') is True,
                         'flock LOCK_SH was granted while another process held LOCK_EX')
            steps.expect('flock_not_mandatory', _io_allowed(fd),
                         'I/O through another fd failed under flock: flock is a mandatory lock here')
            fcntl_free = _refused(fd, 'w') is False
            steps.evidence['flock_fcntl_independent'] = fcntl_free
            helpers.value(holder.call(op='flock', mode='sh'))
            steps.expect('sh_shares_sh', refused('sh') is False, 'two processes could not share flock LOCK_SH')
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(5)
            steps.expect('sigkill_releases', refused('ex') is False,
                         'the flock of a SIGKILLed holder was not released')
    finally:
        os.close(fd)
    return steps.finish('flock excludes and shares as it should and is released by SIGKILL; flock and fcntl are '
                        '%s' % ('independent' if steps.evidence.get('flock_fcntl_independent') else 'the same lock'))
