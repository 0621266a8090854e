# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cross-host checks, one function each, every host running the same function at the same time.

A check gets this host's protocol.Run and the options. The leader ("A") sets the check up and plays
A's part; every other host plays B's part, posts its own result on the check's final step (CHECKS[i].done)
and returns it. The leader gathers those results and returns a result naming the peers where the check
failed or that were gone (leader_summary). Data files live in the run directory (run.file()); the
messages go through the run's channel. A failure of a critical check makes the storage unsafe.

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
            fcntl.flock(ffd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            run.post('lockx-held', {'pid': os.getpid()})
            answers = run.gather('lockx-done', valid=valid_result)
        finally:
            os.close(fd)
            os.close(ffd)
        return leader_summary(steps, run, answers, 'held a whole-file fcntl write lock and a flock while '
                                                   'every peer tried them')
    try:
        run.wait('lockx-held', run.leader)
    except protocol.Gone:
        return gone_result('lock_exclusion', run, run.leader, steps.started)
    fd = os.open(path, os.O_RDWR)
    try:
        steps.expect('fcntl_refused', refused(fd) is True,
                     'a whole-file fcntl write lock was granted here while %s held one' % run.leader)
        steps.expect('fcntl_read_refused', refused(fd, 'r') is True,
                     'a fcntl read lock was granted here while %s held a write lock' % run.leader)
        seen = sysapi.getlk(fd, 'w')
        steps.evidence['getlk'] = seen
        steps.expect('getlk_sees_holder', seen['type'] == 'w',
                     'F_GETLK here does not see the write lock %s holds (answered %s)' % (run.leader, seen['type']))
        steps.expect('flock_refused', flock_refused(fd) is True,
                     'flock(LOCK_EX) was granted here while %s held it' % run.leader)
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
        ring = {'error': 'no progress within %.0f s (%s): a lock in the ring was never granted, or a host '
                'stopped' % (limit, exc) if 'no answer' in str(exc) else 'the ring process died (%s)' %
                child.describe_exit()}
    finally:
        child.kill()
    steps.evidence.update(ring)
    steps.evidence['hosts'] = hosts
    if 'error' in ring:
        steps.failures.append(ring['error'])
    else:
        steps.expect('hosts_met', ring['judged'] > 0, 'the %d hosts never saw each other in the ring: the '
                     'presence bytes each wrote were not seen by the others' % hosts)
        steps.expect('increment_ok', ring['bad'] == 0,
                     '%d hosts incrementing bytes under a ring of %d byte locks (ping_pong %s) saw increments '
                     '%s, not %d' % (hosts, hosts + 1, PING_PONG_FLAGS[flavour], ring['values'], hosts))
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


def append_visibility(run: protocol.Run, opts: dict) -> dict:
    steps = result.Steps('append_visibility')
    path = run.file('append')
    first = b'a' * 4096
    more = b'b' * 4096
    if run.me == run.leader:
        make_file(path, first)
        run.post('append-made')
        run.gather('append-mapped')
        fd = os.open(path, os.O_RDWR)
        try:
            sysapi.setlk(fd, 'w')
            os.pwrite(fd, more, len(first))
            os.fdatasync(fd)
            sysapi.setlk(fd, 'u')
        finally:
            os.close(fd)
        run.post('append-done')
        return leader_summary(steps, run, run.gather('append-seen', valid=valid_result),
                              'appended 4 KiB under a lock + fdatasync; '
                              'every peer saw it')
    try:
        run.wait('append-made', run.leader)
        fd = os.open(path, os.O_RDWR)
        try:
            mapping = sysapi.Mapping(fd, 8192)
        except OSError as exc:
            mapping = None
            steps.evidence['mmap_errno'] = sysapi.errname(exc)
        try:
            run.post('append-mapped')
            run.wait('append-done', run.leader)
            sysapi.setlk(fd, 'r', wait=True)
            size = os.fstat(fd).st_size
            data = os.pread(fd, len(more), len(first))
            steps.evidence['size'] = size
            steps.expect('size_seen', size == len(first) + len(more),
                         'after locking, fstat here said %d bytes, %s had written %d' % (
                             size, run.leader, len(first) + len(more)))
            steps.expect('bytes_seen', data == more, 'pread here did not return the bytes %s appended' % run.leader)
            if mapping is not None:
                try:
                    same = procs.run_in_child(_mapped_equals, (mapping, len(first), more), timeout=5)
                    why = 'a mapping made here before the append does not show the appended bytes'
                except procs.ChildError as exc:
                    same = False
                    why = 'reading the appended bytes through a mapping made here before the append failed (%s): ' \
                          'the mapping does not know the new size' % exc
                steps.expect('mapping_seen', same, why)
            sysapi.setlk(fd, 'u')
        finally:
            if mapping is not None:
                mapping.close()
            os.close(fd)
    except protocol.Gone:
        return gone_result('append_visibility', run, run.leader, steps.started)
    out = steps.finish('fstat, pread and an older mapping here saw what %s appended' % run.leader)
    run.post('append-seen', out)
    return out


def _mapped_equals(mapping, offset: int, data: bytes) -> bool:  # pragma: no cover - runs in a child
    return mapping.read(offset, len(data)) == data


def rename_visibility(run: protocol.Run, opts: dict) -> dict:
    steps = result.Steps('rename_visibility')
    path = run.file('cyrus.header')
    if run.me == run.leader:
        make_file(path, b'o' * 5000)
        run.post('rename-made')
        run.gather('rename-opened')
        make_file(path + '.NEW', b'n' * 6000)
        fd = os.open(path, os.O_RDWR)
        try:
            sysapi.setlk(fd, 'w')
            os.rename(path + '.NEW', path)
            dfd = os.open(run.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            except OSError:
                pass
            finally:
                os.close(dfd)
            sysapi.setlk(fd, 'u')
        finally:
            os.close(fd)
        run.post('rename-done', {'ino': os.stat(path).st_ino})
        return leader_summary(steps, run, run.gather('rename-seen', valid=valid_result),
                              'renamed a new cyrus.header over the open '
                              'one; every peer saw the new inode at once')
    try:
        run.wait('rename-made', run.leader)
        fd = os.open(path, os.O_RDWR)
        try:
            old = os.fstat(fd).st_ino
            run.post('rename-opened')
            run.wait('rename-done', run.leader)
            sysapi.setlk(fd, 'r', wait=True)
            new = os.stat(path).st_ino
            steps.evidence.update(old_ino=old, new_ino=new)
            steps.expect('new_inode_seen', new != old, 'right after locking, stat here still named the old inode '
                         '%d after %s renamed a new file over it' % (old, run.leader))
            with open(path, 'rb') as handle:
                data = handle.read()
            steps.expect('new_bytes_seen', data == b'n' * 6000,
                         'reopening here read %d bytes, not the 6000 new ones' % len(data))
        finally:
            os.close(fd)
    except protocol.Gone:
        return gone_result('rename_visibility', run, run.leader, steps.started)
    out = steps.finish('right after locking, this host saw the new inode and bytes')
    run.post('rename-seen', out)
    return out


def metadata_coherence(run: protocol.Run, opts: dict) -> dict:
    steps = result.Steps('metadata_coherence')
    one = run.file('meta-one')
    two = run.file('meta-two')
    if run.me == run.leader:
        make_file(one, b'm' * 100)
        os.link(one, two)
        run.post('meta-made')
        run.gather('meta-seen')
        os.unlink(two)
        run.post('meta-unlinked')
        return leader_summary(steps, run, run.gather('meta-seen2', valid=valid_result),
                              'create, link and unlink were seen by every '
                              'peer at once, link counts agree')
    try:
        run.wait('meta-made', run.leader)
        try:
            st = os.stat(two)
            steps.expect('link_seen', True, '')
            steps.evidence['nlink_after_link'] = st.st_nlink
            with open(two, 'rb') as handle:
                steps.expect('open_reads', handle.read() == b'm' * 100, 'the new link read other bytes here')
            if st.st_nlink != 2:
                steps.warn('nlink here is %d after %s linked the file (not 2)' % (st.st_nlink, run.leader))
        except FileNotFoundError:
            steps.expect('link_seen', False, 'a link %s just created was not there' % run.leader)
        run.post('meta-seen')
        run.wait('meta-unlinked', run.leader)
        steps.expect('unlink_seen', not os.path.exists(two), 'a name %s just unlinked was still there' % run.leader)
        try:
            steps.evidence['nlink_after_unlink'] = os.stat(one).st_nlink
        except FileNotFoundError:
            steps.expect('file_kept', False, 'the remaining link disappeared here')
    except protocol.Gone:
        return gone_result('metadata_coherence', run, run.leader, steps.started)
    out = steps.finish('create, link and unlink by %s were seen here at once' % run.leader)
    run.post('meta-seen2', out)
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
    steps.expect('one_winner', len(winners) == 1, '%s each won one O_EXCL create' % ', '.join(winners)
                 if winners else 'nobody won the O_EXCL create')
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
        steps.failures.append('the lock of a process SIGKILLed on %s was still held here after %g s' % (
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
    lat = []
    missing = 0
    for name in names:
        one = time.monotonic()
        try:
            os.stat(os.path.join(tree, name))
        except FileNotFoundError:
            missing += 1
        lat.append(time.monotonic() - one)
    lat.sort()
    median = lat[len(lat) // 2]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    steps.evidence.update(files=count, missing=missing, stats_per_s=round(count / max(sum(lat), 1e-9), 1),
                          median_ms=round(median * 1000, 3), p99_ms=round(p99 * 1000, 3))
    steps.expect('all_seen', missing == 0, '%d of the %d files %s created were missing here' % (
        missing, count, run.leader))
    if p99 > 10 * median and p99 > 0.005:
        steps.warn('p99 stat latency %.1f ms is over 10x the median %.2f ms' % (p99 * 1000, median * 1000))
    out = steps.finish('stat here of the %d files %s created: %s/s, p99 %.2f ms' % (
        count, run.leader, steps.evidence['stats_per_s'], p99 * 1000))
    run.post('tree-seen', out)
    return out


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
    Check('metadata_coherence', metadata_coherence, 'meta-seen2'),
    Check('excl_race', excl_race, 'excl-done'),
    Check('lock_recovery', lock_recovery, 'recover-done'),
    Check('neighbour_stat', neighbour_stat, 'tree-seen', critical=False),
)
BY_NAME = {check.name: check for check in CHECKS}
CHECK_NAMES = tuple(check.name for check in CHECKS)
CRITICAL = tuple(check.name for check in CHECKS if check.critical)
