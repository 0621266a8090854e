# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cross-host checks, one function each, every host running the same function at the same time.

A check gets this host's protocol.Run and the options. The leader ("A") sets the check up and plays
A's part; every other host plays B's part, posts its own result on the check's final step (CHECKS[i].done)
and returns it. The leader gathers those results and returns a result naming the peers where the check
failed or that were gone (leader_summary). Data files live in the run directory (run.file()); the
messages go through the run's side channel, never the filesystem under test. A failure of a critical check
makes the storage unsafe, and its reason names the Cyrus property that broke and what Cyrus would do wrong.

Visibility is measured, not assumed: the leader changes a file (append, rename, create, unlink) ``tries``
times; after each change a peer takes its lock and looks at once, as Cyrus does, then keeps looking for up
to ``visibility_timeout``. A change seen at the first look every time passes; one seen late fails with the
measured delay (median and max over the tries), one never seen fails saying so. Latency (neighbour_stat)
is judged over repeated passes against this host's own noise in the same run, so a busy machine is not
called slow.

What another host posts is checked before it is used (valid= of run.wait/gather): a result has a known
status, a time is a finite number, a verdict a bool. A host that sends anything else is gone, with the
reason, and named as such; a start time is never waited on for longer than START_WAIT.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import math
import os
import shutil
import signal
import time

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import crosshost_protocol as protocol
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import helpers
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import procs
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import result
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import ring as ring_proc
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi

PING_PONG_FLAGS = {'rw': '-rw', 'cyrus': '-rw with mmap reads', 'mmap': '-rwm'}
START_WAIT = 1.0  # seconds at most a host waits for the start time another host set (0.3 s ahead)


def valid_result(data) -> str:
    """What is wrong with a check result another host posted ('' when nothing)."""
    if not isinstance(data, dict) or data.get('status') not in result.STATUSES or \
            not isinstance(data.get('reason'), str):
        return 'not a check result (a status of %s and a reason)' % ', '.join(result.STATUSES)
    return ''


def valid_at(data) -> str:
    """What is wrong with a time another host posted ({'at': seconds since the epoch})."""
    at = data.get('at') if isinstance(data, dict) else None
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        return 'at is not a finite number of seconds'
    return ''


def valid_won(data) -> str:
    """What is wrong with a peer's excl_race answer: {'won': bool}, or its failed result."""
    if isinstance(data, dict) and (isinstance(data.get('won'), bool) or not valid_result(data)):
        return ''
    return 'won is not true or false'


def refused(fd: int, kind: str = 'w'):
    """True when a whole-file fcntl lock of kind conflicts with a holder, False when granted (and released),
    else the name of the error."""
    try:
        sysapi.setlk(fd, kind)
    except OSError as exc:
        return True if exc.errno in sysapi.CONFLICT else sysapi.errname(exc)
    sysapi.setlk(fd, 'u')
    return False


def flock_refused(fd: int):
    """As refused(), for flock(LOCK_EX)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return True if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK) else sysapi.errname(exc)
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def make_file(path: str, data: bytes) -> None:
    """A new data file (O_EXCL) holding data, fsynced."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def gone_result(name: str, run: protocol.Run, host: str, started: float) -> dict:
    """This host's failed result of check name when host (the leader, for a peer) did not answer, or sent
    something that is not a message."""
    who = 'the leader %s' % host if host == run.leader else host
    return result.result(name, 'fail', '%s %s' % (who, run.why(host)), {'gone': [host]},
                         time.monotonic() - started)


def gone_reasons(run: protocol.Run, gone: list) -> list:
    """One line for the hosts that did not answer, one for each that sent something else."""
    silent = [host for host in gone if host not in run.bad]
    lines = ['%s did not answer within %g s: the host or its probe process is gone' % (
        ', '.join(silent), run.step_timeout)] if silent else []
    return lines + ['%s %s' % (host, run.bad[host]) for host in gone if host in run.bad]


def leader_summary(steps, run: protocol.Run, answers: dict, passed: str) -> dict:
    """The leader's result of a check judged on the peers: which failed, which were gone."""
    failed = sorted(host for host, answer in answers.items() if answer and answer.get('status') == 'fail')
    gone = sorted(set(run.others) - set(answers))
    steps.evidence['failed_peers'] = failed
    steps.evidence['gone'] = gone
    if failed:
        steps.failures.append('failed on %s' % ', '.join(failed))
    steps.failures.extend(gone_reasons(run, gone))
    return steps.finish(passed)


# ---- the checks: each returns this host's result; the leader's names peers that failed or were gone

def lock_exclusion(run: protocol.Run, opts: dict) -> dict:
    steps = result.Steps('lock_exclusion')
    path = run.file('lockx')
    if run.me == run.leader:
        make_file(path, bytes(4096))
        fd = os.open(path, os.O_RDWR)
        ffd = os.open(path, os.O_RDWR)
        try:
            sysapi.setlk(fd, 'w')
            # where flock is carried out with fcntl locks (FUSE filesystems may), the flock conflicts with
            # this process's own fcntl lock: said, and the peers try the fcntl lock only
            flock = flock_refused(ffd) is False and not fcntl.flock(ffd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not flock:
                steps.warn('flock(LOCK_EX) here conflicts with this process\'s own fcntl lock on the file: flock is '
                           'carried out with fcntl locks, so a Cyrus built with flock locking would deadlock on '
                           'itself')
            run.post('lockx-held', {'pid': os.getpid(), 'flock': flock})
            answers = run.gather('lockx-done', valid=valid_result)
        finally:
            os.close(fd)
            os.close(ffd)
        return leader_summary(steps, run, answers, 'held a whole-file fcntl write lock and a flock while '
                                                   'every peer tried them')
    try:
        held = run.wait('lockx-held', run.leader)
    except protocol.Gone:
        return gone_result('lock_exclusion', run, run.leader, steps.started)
    fd = os.open(path, os.O_RDWR)
    try:
        steps.expect('fcntl_refused', refused(fd) is True,
                     'a whole-file fcntl write lock was granted here while %s held one: Cyrus processes on both '
                     'hosts would rewrite cyrus.index at once and corrupt it' % run.leader)
        steps.expect('fcntl_read_refused', refused(fd, 'r') is True,
                     'a fcntl read lock was granted here while %s held a write lock: Cyrus here would read '
                     'cyrus.index while it is half rewritten' % run.leader)
        seen = sysapi.getlk(fd, 'w')
        steps.evidence['getlk'] = seen
        steps.expect('getlk_sees_holder', seen['type'] == 'w',
                     'F_GETLK here does not see the write lock %s holds (answered %s)' % (run.leader, seen['type']))
        steps.expect('flock_refused', not (isinstance(held, dict) and held.get('flock', True)) or
                     flock_refused(fd) is True,
                     'flock(LOCK_EX) was granted here while %s held it: a Cyrus built with flock locking '
                     '(and its databases) would have two writers' % run.leader)
    finally:
        os.close(fd)
    out = steps.finish('the fcntl and flock locks of %s refused here and F_GETLK saw the holder' % run.leader)
    run.post('lockx-done', out)
    return out


def pingpong(run: protocol.Run, opts: dict, flavour: str) -> dict:
    name = 'pingpong_' + flavour
    steps = result.Steps(name)
    path = run.file('pingpong-' + flavour)
    hosts = len(run.peers)
    if run.me == run.leader:
        make_file(path, bytes(ring_proc.SIZE))
        run.post(name + '-go')
    else:
        try:
            run.wait(name + '-go', run.leader)
        except protocol.Gone:
            return gone_result(name, run, run.leader, steps.started)
    index = run.peers.index(run.me)
    # an msync per step makes the mapped flavour ~100x slower: a quarter of the steps
    iterations = max(100, opts['pingpong_iterations'] // 4) if flavour == 'mmap' else opts['pingpong_iterations']
    limit = run.step_timeout + iterations / 100.0
    child = procs.Child(ring_proc.worker, path, index, hosts, flavour, iterations, deadline=limit + 2)
    try:
        ring = child.recv(limit)
    except procs.ChildError as exc:
        child.kill()
        ring = {'error': 'the ring of %d hosts made no progress within %.0f s: a byte-range lock released on one '
                'host was never granted on the next (or a host stopped), so Cyrus processes on two hosts would block '
                'on each other\'s mailbox locks for good' % (hosts, limit) if 'no answer' in str(exc) else
                'the ring process died (%s)' % child.describe_exit()}
    finally:
        child.kill()
    steps.evidence.update(ring)
    steps.evidence['hosts'] = hosts
    if 'error' in ring:
        steps.failures.append(ring['error'])
    else:
        steps.expect('hosts_met', ring['judged'] > 0, 'the %d hosts never saw each other in the ring: bytes each '
                     'wrote under a byte-range lock were not seen by the others, so Cyrus index updates made on one '
                     'host would not be seen on another' % hosts)
        steps.expect('increment_ok', ring['bad'] == 0,
                     '%d hosts incrementing bytes under a ring of %d byte locks (ping_pong %s) saw increments '
                     '%s, not %d: byte-range locks do not order writes across hosts, so index updates Cyrus makes '
                     'under its lock would be lost or read torn' % (hosts, hosts + 1, PING_PONG_FLAGS[flavour],
                                                                    ring['values'], hosts))
    out = steps.finish('%d hosts incremented by %d under %d byte locks (%s locks/s)' % (
        hosts, hosts, hosts + 1, ring.get('locks_per_s')))
    if run.me == run.leader:
        answers = run.gather(name + '-done', valid=valid_result)
        mine = out
        out = leader_summary(result.Steps(name), run, answers, mine['reason'])
        out['evidence'].update(mine['evidence'])
        if mine['status'] == 'fail':
            out = result.result(name, 'fail', '; '.join(filter(None, [mine['reason'], '' if out['status'] == 'pass'
                                                                      else out['reason']])), out['evidence'])
    else:
        run.post(name + '-done', out)
    return out


def take_lock(fd: int, kind: str, limit: float):
    """Seconds until a whole-file fcntl lock of kind was granted (never blocking in the kernel: a lock on a broken
    filesystem may never come), None when not within limit."""
    started = time.monotonic()
    while True:
        try:
            sysapi.setlk(fd, kind)
            return round(time.monotonic() - started, 3)
        except OSError as exc:
            if exc.errno not in sysapi.CONFLICT or time.monotonic() - started > limit:
                return None
        time.sleep(0.005)


def until(probe, limit: float, started: float):
    """Seconds from started until probe() was true, 0.0 when the first look was (the one Cyrus makes right
    after taking its lock); None when not by started + limit."""
    if probe():
        return 0.0
    while time.monotonic() - started <= limit:
        time.sleep(0.005)
        if probe():
            return round(time.monotonic() - started, 3)
    return None


def delays(values: list) -> dict:
    """Tries, how many were seen at once, how many never, median and max of the seen ones (seconds)."""
    seen = sorted(value for value in values if value is not None)
    return {'tries': len(values), 'at_once': sum(1 for value in values if value == 0.0),
            'never': len(values) - len(seen), 'median_s': seen[len(seen) // 2] if seen else None,
            'max_s': seen[-1] if seen else None}


def judge_visibility(steps, key: str, values: list, subject: str, seen_by: str, harm: str, limit: float) -> None:
    """A change seen at once in every try passes; otherwise the failure says how late, or never, and what Cyrus
    would do wrong. Cyrus reads right after taking its lock: it tolerates no delay."""
    summary = delays(values)
    steps.evidence[key] = summary
    if not values:
        return
    if summary['never']:
        steps.failures.append('%s is not visible to %s after %g s (%d of %d tries): %s' % (
            subject, seen_by, limit, summary['never'], summary['tries'], harm))
    elif summary['at_once'] < summary['tries']:
        steps.failures.append('%s became visible to %s only after %g s (median %g s, max %g s over %d tries; Cyrus '
                              'reads right after taking its lock and tolerates no delay): %s' % (
                                  subject, seen_by, summary['max_s'], summary['median_s'], summary['max_s'],
                                  summary['tries'], harm))


def _acks(run: protocol.Run, step: str, active: set) -> set:
    """The peers still taking part after a try: those that acknowledged it and want more."""
    answers = run.gather(step, hosts=sorted(active), valid=valid_ack)
    return {host for host, data in answers.items() if data['more']}


def valid_ack(data) -> str:
    if not isinstance(data, dict) or not isinstance(data.get('more'), bool):
        return 'more is not true or false'
    return ''


RECORD = 4096


def _record(index: int) -> bytes:
    return bytes([ord('b') + index % 24]) * RECORD


def append_visibility(run: protocol.Run, opts: dict) -> dict:
    steps = result.Steps('append_visibility')
    path = run.file('append')
    tries = opts['tries']
    limit = opts['visibility_timeout']
    if run.me == run.leader:
        make_file(path, b'a' * RECORD)
        run.post('append-made')
        active = set(run.gather('append-mapped'))
        fd = os.open(path, os.O_RDWR)
        try:
            for index in range(tries):
                if not active:
                    break
                sysapi.setlk(fd, 'w', wait=True)
                os.pwrite(fd, _record(index), RECORD * (index + 1))
                os.fdatasync(fd)
                sysapi.setlk(fd, 'u')
                run.post('append-%d' % index)
                active = _acks(run, 'append-ack-%d' % index, active)
        finally:
            os.close(fd)
        return leader_summary(steps, run, run.gather('append-seen', valid=valid_result),
                              'appended %d records of 4 KiB under a lock + fdatasync; every peer saw each at once '
                              'through read() and an older mapping' % tries)
    reads, maps = [], []
    try:
        run.wait('append-made', run.leader)
        fd = os.open(path, os.O_RDWR)
        try:
            try:
                mapping = sysapi.Mapping(fd, RECORD * (tries + 2))
            except OSError as exc:
                mapping = None
                steps.evidence['mmap_errno'] = sysapi.errname(exc)
                steps.failures.append('a shared read-only mapping of a file here failed (%s): Cyrus cannot map '
                                      'cyrus.index on this filesystem' % sysapi.errname(exc))
            try:
                run.post('append-mapped')
                for index in range(tries):
                    run.wait('append-%d' % index, run.leader)
                    started = time.monotonic()
                    if take_lock(fd, 'r', limit) is None:
                        steps.failures.append('a read lock was still refused here %g s after %s released its '
                                              'write lock: Cyrus on %s would wait on the mailbox' % (
                                                  limit, run.leader, run.me))
                        run.post('append-ack-%d' % index, {'more': False})
                        break
                    want = RECORD * (index + 2)
                    record = _record(index)
                    reads.append(until(lambda: os.fstat(fd).st_size >= want and  # noqa: B023 - used at once
                                       os.pread(fd, RECORD, want - RECORD) == record, limit, started))  # noqa: B023
                    if mapping is not None:
                        try:
                            maps.append(procs.run_in_child(_mapping_until, (mapping, want - RECORD, record, limit,
                                                                            started), timeout=limit + 5))
                        except procs.ChildError as exc:
                            steps.failures.append(
                                'reading an appended record through a mapping made here before the append failed '
                                '(%s): the mapping does not follow the file\'s new size, Cyrus would crash reading '
                                'cyrus.index' % exc)
                            mapping.close()
                            mapping = None
                    sysapi.setlk(fd, 'u')
                    lost = reads[-1] is None and (mapping is None or maps[-1] is None)
                    run.post('append-ack-%d' % index, {'more': not lost})
                    if lost:  # never seen: another try would only wait the limit out again
                        break
            finally:
                if mapping is not None:
                    mapping.close()
        finally:
            os.close(fd)
    except protocol.Gone:
        return gone_result('append_visibility', run, run.leader, steps.started)
    judge_visibility(steps, 'read', reads, 'a message appended on %s (under a lock, then fdatasync)' % run.leader,
                     'fstat() and read() on %s' % run.me,
                     'Cyrus on %s would read a stale cyrus.index and miss or mangle new messages' % run.me, limit)
    judge_visibility(steps, 'mmap', maps, 'a message appended on %s' % run.leader,
                     'an mmap of the index on %s' % run.me, 'Cyrus would serve stale indexes and corrupt cyrus.index',
                     limit)
    out = steps.finish('fstat, read() and an older mapping here saw each of the %d records %s appended at once' % (
        len(reads), run.leader))
    run.post('append-seen', out)
    return out


def _mapping_until(mapping, offset: int, data: bytes, limit: float, started: float):  # pragma: no cover - a child
    return until(lambda: mapping.read(offset, len(data)) == data, limit, started)


def rename_visibility(run: protocol.Run, opts: dict) -> dict:
    steps = result.Steps('rename_visibility')
    path = run.file('cyrus.header')
    tries = opts['tries']
    limit = opts['visibility_timeout']
    if run.me == run.leader:
        make_file(path, b'o' * 5000)
        run.post('rename-made')
        active = set(run.gather('rename-opened'))
        for index in range(tries):
            if not active:
                break
            make_file(path + '.NEW', _record(index))
            fd = os.open(path, os.O_RDWR)
            try:
                sysapi.setlk(fd, 'w', wait=True)
                os.rename(path + '.NEW', path)
                dfd = os.open(run.dir, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                except OSError:
                    pass
                finally:
                    os.close(dfd)
                try:
                    sysapi.setlk(fd, 'u')
                except OSError as exc:  # ESTALE: the replaced file's lock cannot be released by its fd
                    if not steps.failures:
                        steps.failures.append(
                            'releasing the lock on a cyrus.header after renaming a new one over it failed here with '
                            '%s: Cyrus would report an I/O error on every rewrite of a mailbox header' %
                            sysapi.errname(exc))
            finally:
                os.close(fd)
            run.post('rename-%d' % index, {'ino': os.stat(path).st_ino})
            active = _acks(run, 'rename-ack-%d' % index, active)
        return leader_summary(steps, run, run.gather('rename-seen', valid=valid_result),
                              'renamed a new cyrus.header over the open one %d times; every peer saw the new inode '
                              'and bytes at once' % tries)

    seen = []
    try:
        run.wait('rename-made', run.leader)
        fd = os.open(path, os.O_RDWR)
        try:
            old = os.fstat(fd).st_ino
            run.post('rename-opened')
            for index in range(tries):
                run.wait('rename-%d' % index, run.leader)
                started = time.monotonic()
                try:
                    locked = take_lock(fd, 'r', limit)
                except OSError as exc:  # ESTALE: the open file was replaced under this host
                    steps.failures.append(
                        'after %s renamed a new cyrus.header over the one open here, locking the open file failed '
                        'with %s: Cyrus holding the old header open would fail with an I/O error instead of '
                        'noticing the new one' % (run.leader, sysapi.errname(exc)))
                    run.post('rename-ack-%d' % index, {'more': False})
                    break
                if locked is None:
                    steps.failures.append('a read lock was still refused here %g s after %s released its write '
                                          'lock on the header it replaced: Cyrus here would wait on the mailbox' % (
                                              limit, run.leader))
                    run.post('rename-ack-%d' % index, {'more': False})
                    break
                seen.append(until(lambda: _is_new(path, old, _record(index)), limit, started))  # noqa: B023
                try:
                    sysapi.setlk(fd, 'u')
                except OSError:
                    pass
                steps.evidence['old_ino'] = old
                if seen[-1] is not None:
                    _close_replaced(fd, steps, run.leader)
                    try:
                        fd = os.open(path, os.O_RDWR)
                    except OSError as exc:  # ESTALE: the name still leads to the replaced inode here
                        fd = os.open(os.devnull, os.O_RDONLY)
                        steps.failures.append(
                            'opening cyrus.header by its name here right after %s renamed a new one in failed with %s: '
                            'Cyrus here would fail to open the mailbox (IOERROR)' % (run.leader, sysapi.errname(exc)))
                        run.post('rename-ack-%d' % index, {'more': False})
                        break
                    old = os.fstat(fd).st_ino
                run.post('rename-ack-%d' % index, {'more': seen[-1] is not None})
                if seen[-1] is None:
                    break
        finally:
            _close_replaced(fd, steps, run.leader)
    except protocol.Gone:
        return gone_result('rename_visibility', run, run.leader, steps.started)
    judge_visibility(steps, 'rename', seen, 'a cyrus.header renamed into place on %s' % run.leader,
                     'stat() and open() on %s' % run.me,
                     'Cyrus on %s would keep using a header and index replaced on %s (after an expunge or a mailbox '
                     'rename) and write over the new ones' % (run.me, run.leader), limit)
    out = steps.finish('right after locking, this host saw each of the %d new inodes and their bytes' % len(seen))
    run.post('rename-seen', out)
    return out


def _close_replaced(fd: int, steps, leader: str) -> None:
    """close() of the header another host replaced: an error (ESTALE from a FUSE flush) is a finding, said once."""
    try:
        os.close(fd)
    except OSError as exc:
        why = 'closing the cyrus.header open here after %s renamed a new one over it failed with %s: Cyrus would ' \
              'report an I/O error whenever another host rewrites a mailbox header' % (leader, sysapi.errname(exc))
        if why not in steps.failures:
            steps.failures.append(why)


def _is_new(path: str, old: int, data: bytes) -> bool:
    try:
        if os.stat(path).st_ino == old:
            return False
        with open(path, 'rb') as handle:
            return handle.read() == data
    except OSError:
        return False


def _readable(path: str, data: bytes) -> bool:
    try:
        with open(path, 'rb') as handle:
            return handle.read() == data
    except OSError:
        return False


def metadata_coherence(run: protocol.Run, opts: dict) -> dict:
    steps = result.Steps('metadata_coherence')
    tries = opts['tries']
    limit = opts['visibility_timeout']
    if run.me == run.leader:
        active = set(run.others)
        for index in range(tries):
            if not active:
                break
            one = run.file('meta-%d' % index)
            make_file(one, b'm' * 100)
            os.link(one, one + '.link')
            run.post('meta-%d' % index)
            active = _acks(run, 'meta-ack-%d' % index, active)
            os.unlink(one + '.link')
            run.post('unlink-%d' % index)
            active = _acks(run, 'unlink-ack-%d' % index, active)
        return leader_summary(steps, run, run.gather('meta-seen', valid=valid_result),
                              'created, linked and unlinked %d files; every peer saw each change at once, link '
                              'counts agree' % tries)
    made, gone = [], []
    try:
        for index in range(tries):
            link = run.file('meta-%d.link' % index)
            run.wait('meta-%d' % index, run.leader)
            made.append(until(lambda: _readable(link, b'm' * 100), limit, time.monotonic()))  # noqa: B023
            if made[-1] is not None:
                nlink = os.stat(link).st_nlink
                steps.evidence.setdefault('nlink_after_link', nlink)
                if nlink != 2 and not steps.warnings:
                    steps.warn('nlink here is %d after %s linked the file (not 2)' % (nlink, run.leader))
            run.post('meta-ack-%d' % index, {'more': made[-1] is not None})
            if made[-1] is None:
                break
            run.wait('unlink-%d' % index, run.leader)
            gone.append(until(lambda: not os.path.lexists(link), limit, time.monotonic()))  # noqa: B023
            run.post('unlink-ack-%d' % index, {'more': gone[-1] is not None})
            if gone[-1] is None:
                break
    except protocol.Gone:
        return gone_result('metadata_coherence', run, run.leader, steps.started)
    judge_visibility(steps, 'new_entry', made, 'a message file created and linked on %s' % run.leader,
                     'stat() and open() on %s' % run.me,
                     'Cyrus on %s would not find messages delivered or mailboxes created on %s' % (run.me, run.leader),
                     limit)
    judge_visibility(steps, 'unlink', gone, 'the unlink of a message file on %s' % run.leader, 'stat() on %s' % run.me,
                     'Cyrus on %s would serve messages expunged and mailboxes deleted on %s' % (run.me, run.leader),
                     limit)
    out = steps.finish('each of the %d creates, links and unlinks by %s was seen here at once' % (
        len(made), run.leader))
    run.post('meta-seen', out)
    return out


def excl_race(run: protocol.Run, opts: dict) -> dict:
    steps = result.Steps('excl_race')
    path = run.file('excl')
    if run.me == run.leader:
        run.post('excl-go', {'at': time.time() + 0.3})
        go = time.time() + 0.3
    else:
        try:
            go = run.wait('excl-go', run.leader, valid=valid_at)['at']
        except protocol.Gone:
            return gone_result('excl_race', run, run.leader, steps.started)
    time.sleep(min(START_WAIT, max(0.0, go - time.time())))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, run.me.encode())
        os.close(fd)
        won = True
    except OSError as exc:  # EEXIST; some FUSE filesystems (sshfs) answer EPERM for an existing name
        won = False
        steps.evidence['lost_with'] = sysapi.errname(exc)
    if run.me != run.leader:
        run.post('excl-done', {'won': won})
        steps.evidence['won'] = won
        return steps.finish('won the O_EXCL create' if won else 'lost the O_EXCL create (judged by %s)' % run.leader)
    answers = run.gather('excl-done', valid=valid_won)
    winners = sorted(([run.me] if won else []) + [h for h, a in answers.items() if a.get('won') is True])
    failed = sorted(h for h, a in answers.items() if a.get('status') == 'fail')
    steps.evidence['winners'] = winners
    steps.evidence['gone'] = sorted(set(run.others) - set(answers))
    steps.expect('one_winner', len(winners) == 1, '%s each won one O_EXCL create: Cyrus processes on both '
                 'would create the same lock or message file and overwrite each other' % ', '.join(winners)
                 if winners else 'nobody won the O_EXCL create: Cyrus could not create a new file here')
    if failed:
        steps.evidence['failed_peers'] = failed
        steps.failures.append('failed on %s' % ', '.join(failed))
    steps.failures.extend(gone_reasons(run, steps.evidence['gone']))
    return steps.finish('%d hosts raced one O_EXCL create; only %s won' % (len(run.peers), winners[0] if winners
                                                                           else '?'))


def lock_recovery(run: protocol.Run, opts: dict) -> dict:
    steps = result.Steps('lock_recovery')
    path = run.file('recover')
    if run.me == run.leader:
        make_file(path, bytes(4096))
        with helpers.helper(deadline=run.step_timeout * 3 + opts['recovery_timeout']) as holder:
            helpers.value(holder.call(op='open', path=path))
            helpers.value(holder.call(op='lock', kind='w'))
            run.post('recover-held', {'pid': holder.pid})
            run.gather('recover-refused')
            os.kill(holder.pid, signal.SIGKILL)
            killed = time.time()
            holder.wait(5)
            run.post('recover-killed', {'at': killed})
        return leader_summary(steps, run, run.gather('recover-done', valid=valid_result),
                              'SIGKILLed the holder; every peer '
                              'got the lock')
    try:
        run.wait('recover-held', run.leader)
        fd = os.open(path, os.O_RDWR)
        try:
            steps.expect('held_refused', refused(fd) is True,
                         'the lock held by a process on %s was granted here before it was killed' % run.leader)
            run.post('recover-refused')
            killed = run.wait('recover-killed', run.leader, valid=valid_at)['at']
            seen_token = time.time()
            got = None
            limit = time.monotonic() + opts['recovery_timeout']
            while time.monotonic() < limit:
                if refused(fd) is False:
                    got = time.time()
                    break
                time.sleep(0.01)
        finally:
            os.close(fd)
    except protocol.Gone:
        return gone_result('lock_recovery', run, run.leader, steps.started)
    if got is None:
        steps.failures.append('the lock of a process SIGKILLed on %s was still held here after %g s: after a '
                              'crash there, Cyrus here would wait on that mailbox for good' % (
                                  run.leader, opts['recovery_timeout']))
    else:
        steps.evidence['recovery_s'] = round(max(0.0, got - killed), 3)
        steps.evidence['after_token_s'] = round(max(0.0, got - seen_token), 3)
    out = steps.finish('got the lock %s s after the holder on %s was SIGKILLed' % (
        steps.evidence.get('recovery_s'), run.leader))
    run.post('recover-done', out)
    return out


def neighbour_stat(run: protocol.Run, opts: dict) -> dict:
    steps = result.Steps('neighbour_stat')
    tree = run.file('tree')
    count = opts['neighbour_files']
    names = ['user/u%03d/%d.' % (i // 64, i) for i in range(count)]
    if run.me == run.leader:
        for i in range(0, count, 64):
            os.makedirs(os.path.join(tree, 'user', 'u%03d' % (i // 64)))
        for name in names:
            with open(os.path.join(tree, name), 'xb') as handle:
                handle.write(b'x' * 64)
        run.post('tree-made')
        out = leader_summary(steps, run, run.gather('tree-seen', valid=valid_result),
                             'every peer saw the %d files created here' % count)
        shutil.rmtree(tree, ignore_errors=True)  # within this check's time, not the run directory's removal
        return out
    try:
        run.wait('tree-made', run.leader)
    except protocol.Gone:
        return gone_result('neighbour_stat', run, run.leader, steps.started)
    passes = [_stat_pass(tree, names) for dummy in range(STAT_PASSES)]
    # the same number of stats of a name the kernel has cached on the local root: this run's noise floor
    baseline = _stat_pass('/', ['.'] * count)
    missing = passes[-1]['missing']
    floor = max(STAT_FLOOR_S, 3 * baseline['p99'])
    slow = [one for one in passes if one['p99'] > 10 * one['median'] and one['p99'] > floor]
    steps.evidence.update(files=count, missing=missing, stats_per_s=passes[-1]['rate'],
                          median_ms=round(passes[-1]['median'] * 1000, 3), p99_ms=round(passes[-1]['p99'] * 1000, 3),
                          passes=[{'median_ms': round(one['median'] * 1000, 3), 'p99_ms': round(one['p99'] * 1000, 3),
                                   'missing': one['missing']} for one in passes],
                          baseline_p99_ms=round(baseline['p99'] * 1000, 3))
    steps.expect('all_seen', missing == 0, '%d of the %d files %s created were still missing here after %d passes: '
                 'Cyrus here would not find messages delivered there' % (missing, count, run.leader, STAT_PASSES))
    if len(slow) == len(passes):
        steps.warn('p99 stat latency over 10x the median in each of %d passes (%s), well over this host\'s own '
                   'noise (p99 %.2f ms stat of a cached local name): listing a large mailbox will stall' % (
                       STAT_PASSES, ', '.join('%.1f ms vs %.2f ms' % (one['p99'] * 1000, one['median'] * 1000)
                                              for one in passes), baseline['p99'] * 1000))
    out = steps.finish('stat here of the %d files %s created: %s/s, p99 %.2f ms' % (
        count, run.leader, steps.evidence['stats_per_s'], passes[-1]['p99'] * 1000))
    run.post('tree-seen', out)
    return out


STAT_PASSES = 3
STAT_FLOOR_S = 0.005


def _stat_pass(root: str, names: list) -> dict:
    """One stat of each name under root: median and p99 latency (seconds), rate, names missing."""
    lat = []
    missing = 0
    started = time.monotonic()
    for name in names:
        one = time.monotonic()
        try:
            os.stat(os.path.join(root, name))
        except FileNotFoundError:
            missing += 1
        lat.append(time.monotonic() - one)
    wall = max(time.monotonic() - started, 1e-9)
    lat.sort()
    return {'median': lat[len(lat) // 2], 'p99': lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            'rate': round(len(names) / wall, 1), 'missing': missing}


class Check:
    """One cross-host check: its name, the function every host runs, the step on which a peer posts its
    result (a peer whose check broke posts its failure there, so the leader never waits it out), and
    whether a failure makes the storage unsafe (critical) or only degraded."""

    def __init__(self, name: str, play, done: str, critical: bool = True):
        self.name = name
        self.play = play
        self.done = done
        self.critical = critical

    def __repr__(self):
        return 'Check(%r)' % self.name


CHECKS = (
    Check('lock_exclusion', lock_exclusion, 'lockx-done'),
    Check('pingpong_rw', functools.partial(pingpong, flavour='rw'), 'pingpong_rw-done'),
    Check('pingpong_cyrus', functools.partial(pingpong, flavour='cyrus'), 'pingpong_cyrus-done'),
    Check('pingpong_mmap', functools.partial(pingpong, flavour='mmap'), 'pingpong_mmap-done'),
    Check('append_visibility', append_visibility, 'append-seen'),
    Check('rename_visibility', rename_visibility, 'rename-seen'),
    Check('metadata_coherence', metadata_coherence, 'meta-seen'),
    Check('excl_race', excl_race, 'excl-done'),
    Check('lock_recovery', lock_recovery, 'recover-done'),
    Check('neighbour_stat', neighbour_stat, 'tree-seen', critical=False),
)
BY_NAME = {check.name: check for check in CHECKS}
CHECK_NAMES = tuple(check.name for check in CHECKS)
CRITICAL = tuple(check.name for check in CHECKS if check.critical)
