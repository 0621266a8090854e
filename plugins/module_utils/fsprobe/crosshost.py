# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cross-host checks: hosts sharing a path cooperate through token files in a run directory there.

Every host of a run executes run() at the same time (one Ansible task over the group). The first host
of ``peers`` is the leader ("A"): it creates the run directory, sets each check up and plays A's part;
every other host plays B's part at the same time, so N hosts cost about the wall time of two. A step
is "post token, wait for tokens": a token is a file ``t-<step>-<host>`` made with O_EXCL, holding JSON.
A host that does not post its token within ``step_timeout`` is marked gone: its checks fail with a
message naming it, and nobody waits for it again. The whole run happens in one forked worker per host
with a hard deadline (SIGALRM) that dies with the module (PR_SET_PDEATHSIG); the lock holder of the
recovery check is a helper process of that worker, killed by PID. The leader removes the run
directory once every other host has finished or is gone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import signal
import socket
import time

from ansible_collections.cyrus.ha.plugins.module_utils.fsprobe import helpers
from ansible_collections.cyrus.ha.plugins.module_utils.fsprobe import procs
from ansible_collections.cyrus.ha.plugins.module_utils.fsprobe import result
from ansible_collections.cyrus.ha.plugins.module_utils.fsprobe import ring as ring_proc
from ansible_collections.cyrus.ha.plugins.module_utils.fsprobe import sysapi
from ansible_collections.cyrus.ha.plugins.module_utils.fsprobe import verdict
from ansible_collections.cyrus.ha.plugins.module_utils.fsprobe import workdir as workdirs

PREFIX = workdirs.PREFIX + 'xh-'
RUN_ID = re.compile(r'^[A-Za-z0-9_-]{6,64}$')
PING_PONG_FLAGS = {'rw': '-rw', 'cyrus': '-rw with mmap reads', 'mmap': '-rwm'}
CHECK_NAMES = ('lock_exclusion', 'pingpong_rw', 'pingpong_cyrus', 'pingpong_mmap', 'append_visibility',
               'rename_visibility', 'metadata_coherence', 'excl_race', 'lock_recovery', 'neighbour_stat')
CRITICAL = CHECK_NAMES[:-1]
DEFAULTS = {'timeout': 120.0, 'step_timeout': 10.0, 'pingpong_iterations': 2000, 'neighbour_files': 256,
            'recovery_timeout': 10.0}


class Gone(Exception):
    """A peer did not post a token in time."""


class Interrupted(Exception):
    """The module was told to stop (SIGTERM, SIGINT, SIGHUP) in the middle of a run."""


def _interrupt(signum, frame):
    raise Interrupted('stopped by signal %d in the middle of the cross-host checks; the run directory was '
                      'removed where this host owned it' % signum)


class Run:
    """Tokens in the run directory; the set of peers that stopped answering."""

    def __init__(self, rundir: str, me: str, peers: list, step_timeout: float):
        self.dir = rundir
        self.me = me
        self.peers = peers
        self.leader = peers[0]
        self.others = [p for p in peers if p != peers[0]]
        self.step_timeout = step_timeout
        self.gone = set()

    def file(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def post(self, step: str, data=None) -> None:
        name = self.file('t-%s-%s' % (step, self.me))
        tmp = name + '.tmp'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, json.dumps(data).encode())
        finally:
            os.close(fd)
        os.rename(tmp, name)

    def wait(self, step: str, host: str, timeout: float | None = None):
        """The data host posted for step; raises Gone (and remembers it) when it does not come in time."""
        if host in self.gone:
            raise Gone(host)
        name = self.file('t-%s-%s' % (step, host))
        deadline = time.monotonic() + (timeout or self.step_timeout)
        while True:
            try:
                with open(name, encoding='utf-8') as handle:
                    text = handle.read()
                if text:
                    return json.loads(text)
            except FileNotFoundError:
                pass
            except ValueError:
                pass
            if time.monotonic() > deadline:
                self.gone.add(host)
                raise Gone(host)
            time.sleep(0.01)

    def gather(self, step: str, hosts=None) -> dict:
        """{host: data} of every host (others by default) that posted step; the rest become gone."""
        out = {}
        for host in self.others if hosts is None else hosts:
            try:
                out[host] = self.wait(step, host)
            except Gone:
                pass
        return out


def _refused(fd: int, kind: str = 'w'):
    try:
        sysapi.setlk(fd, kind)
    except OSError as exc:
        return True if exc.errno in sysapi.CONFLICT else sysapi.errname(exc)
    sysapi.setlk(fd, 'u')
    return False


def _flock_refused(fd: int):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return True if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK) else sysapi.errname(exc)
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _make(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _gone_result(name: str, run: Run, host: str, started: float) -> dict:
    who = 'the leader %s' % host if host == run.leader else host
    return result.result(name, 'fail', '%s did not answer within %g s: the host or its probe process is gone' % (
        who, run.step_timeout), {'gone': [host]}, time.monotonic() - started)


# ---- the checks: each returns this host's result; the leader's names peers that failed or were gone

def lock_exclusion(run: Run, opts: dict) -> dict:
    steps = result.Steps('lock_exclusion')
    path = run.file('lockx')
    if run.me == run.leader:
        _make(path, bytes(4096))
        fd = os.open(path, os.O_RDWR)
        ffd = os.open(path, os.O_RDWR)
        try:
            sysapi.setlk(fd, 'w')
            fcntl.flock(ffd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            run.post('lockx-held', {'pid': os.getpid()})
            answers = run.gather('lockx-done')
        finally:
            os.close(fd)
            os.close(ffd)
        return _leader_summary(steps, run, answers, 'held a whole-file fcntl write lock and a flock while '
                                                    'every peer tried them')
    try:
        run.wait('lockx-held', run.leader)
    except Gone:
        return _gone_result('lock_exclusion', run, run.leader, steps.started)
    fd = os.open(path, os.O_RDWR)
    try:
        steps.expect('fcntl_refused', _refused(fd) is True,
                     'a whole-file fcntl write lock was granted here while %s held one' % run.leader)
        steps.expect('fcntl_read_refused', _refused(fd, 'r') is True,
                     'a fcntl read lock was granted here while %s held a write lock' % run.leader)
        seen = sysapi.getlk(fd, 'w')
        steps.evidence['getlk'] = seen
        steps.expect('getlk_sees_holder', seen['type'] == 'w',
                     'F_GETLK here does not see the write lock %s holds (answered %s)' % (run.leader, seen['type']))
        steps.expect('flock_refused', _flock_refused(fd) is True,
                     'flock(LOCK_EX) was granted here while %s held it' % run.leader)
    finally:
        os.close(fd)
    out = steps.finish('the fcntl and flock locks of %s refused here and F_GETLK saw the holder' % run.leader)
    run.post('lockx-done', out)
    return out


def _leader_summary(steps, run: Run, answers: dict, passed: str) -> dict:
    """The leader's result of a check judged on the peers: which failed, which were gone."""
    failed = sorted(host for host, answer in answers.items() if answer and answer.get('status') == 'fail')
    gone = sorted(set(run.others) - set(answers))
    steps.evidence['failed_peers'] = failed
    steps.evidence['gone'] = gone
    if failed:
        steps.failures.append('failed on %s' % ', '.join(failed))
    if gone:
        steps.failures.append('%s did not answer within %g s: the host or its probe process is gone' % (
            ', '.join(gone), run.step_timeout))
    return steps.finish(passed)


def pingpong(run: Run, opts: dict, flavour: str) -> dict:
    name = 'pingpong_' + flavour
    steps = result.Steps(name)
    path = run.file('pingpong-' + flavour)
    hosts = len(run.peers)
    if run.me == run.leader:
        _make(path, bytes(ring_proc.SIZE))
        run.post(name + '-go')
    else:
        try:
            run.wait(name + '-go', run.leader)
        except Gone:
            return _gone_result(name, run, run.leader, steps.started)
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
        answers = run.gather(name + '-done')
        mine = out
        out = _leader_summary(result.Steps(name), run, answers, mine['reason'])
        out['evidence'].update(mine['evidence'])
        if mine['status'] == 'fail':
            out = result.result(name, 'fail', '; '.join(filter(None, [mine['reason'], '' if out['status'] == 'pass'
                                                                      else out['reason']])), out['evidence'])
    else:
        run.post(name + '-done', out)
    return out


def append_visibility(run: Run, opts: dict) -> dict:
    steps = result.Steps('append_visibility')
    path = run.file('append')
    first = b'a' * 4096
    more = b'b' * 4096
    if run.me == run.leader:
        _make(path, first)
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
        return _leader_summary(steps, run, run.gather('append-seen'),
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
    except Gone:
        return _gone_result('append_visibility', run, run.leader, steps.started)
    out = steps.finish('fstat, pread and an older mapping here saw what %s appended' % run.leader)
    run.post('append-seen', out)
    return out


def _mapped_equals(mapping, offset: int, data: bytes) -> bool:  # pragma: no cover - runs in a child
    return mapping.read(offset, len(data)) == data


def rename_visibility(run: Run, opts: dict) -> dict:
    steps = result.Steps('rename_visibility')
    path = run.file('cyrus.header')
    if run.me == run.leader:
        _make(path, b'o' * 5000)
        run.post('rename-made')
        run.gather('rename-opened')
        _make(path + '.NEW', b'n' * 6000)
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
        return _leader_summary(steps, run, run.gather('rename-seen'),
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
    except Gone:
        return _gone_result('rename_visibility', run, run.leader, steps.started)
    out = steps.finish('right after locking, this host saw the new inode and bytes')
    run.post('rename-seen', out)
    return out


def metadata_coherence(run: Run, opts: dict) -> dict:
    steps = result.Steps('metadata_coherence')
    one = run.file('meta-one')
    two = run.file('meta-two')
    if run.me == run.leader:
        _make(one, b'm' * 100)
        os.link(one, two)
        run.post('meta-made')
        run.gather('meta-seen')
        os.unlink(two)
        run.post('meta-unlinked')
        return _leader_summary(steps, run, run.gather('meta-seen2'),
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
    except Gone:
        return _gone_result('metadata_coherence', run, run.leader, steps.started)
    out = steps.finish('create, link and unlink by %s were seen here at once' % run.leader)
    run.post('meta-seen2', out)
    return out


def excl_race(run: Run, opts: dict) -> dict:
    steps = result.Steps('excl_race')
    path = run.file('excl')
    if run.me == run.leader:
        run.post('excl-go', {'at': time.time() + 0.3})
        go = time.time() + 0.3
    else:
        try:
            go = run.wait('excl-go', run.leader)['at']
        except Gone:
            return _gone_result('excl_race', run, run.leader, steps.started)
    time.sleep(max(0.0, go - time.time()))
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
    answers = run.gather('excl-done')
    winners = sorted(([run.me] if won else []) + [h for h, a in answers.items() if a and a.get('won')])
    steps.evidence['winners'] = winners
    steps.evidence['gone'] = sorted(set(run.others) - set(answers))
    steps.expect('one_winner', len(winners) == 1, '%s each won one O_EXCL create' % ', '.join(winners)
                 if winners else 'nobody won the O_EXCL create')
    if steps.evidence['gone']:
        steps.failures.append('%s did not answer' % ', '.join(steps.evidence['gone']))
    return steps.finish('%d hosts raced one O_EXCL create; only %s won' % (len(run.peers), winners[0] if winners
                                                                           else '?'))


def lock_recovery(run: Run, opts: dict) -> dict:
    steps = result.Steps('lock_recovery')
    path = run.file('recover')
    if run.me == run.leader:
        _make(path, bytes(4096))
        with helpers.helper(deadline=run.step_timeout * 3 + opts['recovery_timeout']) as holder:
            helpers.value(holder.call(op='open', path=path))
            helpers.value(holder.call(op='lock', kind='w'))
            run.post('recover-held', {'pid': holder.pid})
            run.gather('recover-refused')
            os.kill(holder.pid, signal.SIGKILL)
            killed = time.time()
            holder.wait(5)
            run.post('recover-killed', {'at': killed})
        return _leader_summary(steps, run, run.gather('recover-done'),
                               'SIGKILLed the holder; every peer '
                               'got the lock')
    try:
        run.wait('recover-held', run.leader)
        fd = os.open(path, os.O_RDWR)
        try:
            steps.expect('held_refused', _refused(fd) is True,
                         'the lock held by a process on %s was granted here before it was killed' % run.leader)
            run.post('recover-refused')
            killed = run.wait('recover-killed', run.leader)['at']
            seen_token = time.time()
            got = None
            limit = time.monotonic() + opts['recovery_timeout']
            while time.monotonic() < limit:
                if _refused(fd) is False:
                    got = time.time()
                    break
                time.sleep(0.01)
        finally:
            os.close(fd)
    except Gone:
        return _gone_result('lock_recovery', run, run.leader, steps.started)
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


def neighbour_stat(run: Run, opts: dict) -> dict:
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
        return _leader_summary(steps, run, run.gather('tree-seen'), 'every peer saw the %d files created here'
                               % count)
    try:
        run.wait('tree-made', run.leader)
    except Gone:
        return _gone_result('neighbour_stat', run, run.leader, steps.started)
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


CHECKS = {
    'lock_exclusion': lock_exclusion,
    'pingpong_rw': lambda run, opts: pingpong(run, opts, 'rw'),
    'pingpong_cyrus': lambda run, opts: pingpong(run, opts, 'cyrus'),
    'pingpong_mmap': lambda run, opts: pingpong(run, opts, 'mmap'),
    'append_visibility': append_visibility,
    'rename_visibility': rename_visibility,
    'metadata_coherence': metadata_coherence,
    'excl_race': excl_race,
    'lock_recovery': lock_recovery,
    'neighbour_stat': neighbour_stat,
}


DONE = {'lock_exclusion': 'lockx-done', 'pingpong_rw': 'pingpong_rw-done', 'pingpong_cyrus': 'pingpong_cyrus-done',
        'pingpong_mmap': 'pingpong_mmap-done', 'append_visibility': 'append-seen', 'rename_visibility': 'rename-seen',
        'metadata_coherence': 'meta-seen2', 'excl_race': 'excl-done', 'lock_recovery': 'recover-done',
        'neighbour_stat': 'tree-seen'}


def _one_check(run: Run, name: str, opts: dict) -> dict:  # pragma: no cover - runs in a child
    started = time.monotonic()
    try:
        out = CHECKS[name](run, opts)
    except Exception as exc:  # noqa: BLE001 - an error is this check's failure
        out = result.result(name, 'fail', 'stopped on an error: %s' % exc, {'error': sysapi.errname(exc)},
                            time.monotonic() - started)
        if run.me != run.leader:
            try:
                run.post(DONE[name], out)
            except OSError:
                pass
    return {'result': out, 'gone': sorted(run.gone)}


def _worker(chan, path, run_id, me, peers, checks, opts):  # pragma: no cover - runs in a child
    """The whole cross-host run of this host, in one process with a hard deadline."""
    rundir = os.path.join(path, PREFIX + run_id)
    leader = me == peers[0]
    if leader:
        try:
            os.mkdir(rundir, 0o700)
        except OSError as exc:
            chan.send({'error': 'could not create the run directory %s: %s (a run_id used twice?)' % (
                rundir, sysapi.errname(exc))})
            return
        os.chmod(rundir, 0o700)
        owner = {'host': socket.gethostname(), 'pid': os.getpid(), 'start': workdirs.process_start(os.getpid())}
        with open(os.path.join(rundir, workdirs.OWNER), 'x', encoding='utf-8') as handle:
            handle.write(json.dumps(owner))
    run = Run(rundir, me, peers, opts['step_timeout'])
    results = {}
    if not leader:
        deadline = time.monotonic() + opts['step_timeout']
        while not os.path.isdir(rundir):
            if time.monotonic() > deadline:
                chan.send({'error': 'the run directory %s made by %s did not appear here within %g s: it is not '
                                    'the same shared filesystem, or %s is not running' % (
                                        rundir, peers[0], opts['step_timeout'], peers[0])})
                return
            time.sleep(0.01)
    run.post('pid', {'pid': os.getpid(), 'host': socket.gethostname()})
    for name in checks:
        started = time.monotonic()
        limit = opts['step_timeout'] * 4 + opts['recovery_timeout'] + opts['pingpong_iterations'] / 100.0
        try:
            answer = procs.run_in_child(_one_check, (run, name, opts), timeout=limit)
            results[name] = answer['result']
            run.gone.update(answer['gone'])
        except (procs.ChildError, OSError) as exc:  # a fault (SIGBUS on a mapping), a hang or a kill
            results[name] = result.result(name, 'fail', 'the check process here stopped: %s' % exc,
                                          {'error': str(exc)}, time.monotonic() - started)
            if not leader:  # never leave the leader waiting out a timeout for this check
                try:
                    run.post(DONE[name], results[name])
                except OSError:
                    pass
    if leader:
        run.gather('end')
    else:
        run.post('end')
    chan.send({'results': results, 'gone': sorted(run.gone)})


def check_names(run_id: str, me: str, peers: list) -> None:
    if not RUN_ID.match(run_id):
        raise ValueError('run_id %r must be 6 to 64 letters, digits, - or _' % run_id)
    if me not in peers:
        raise ValueError('me (%s) is not one of the peers (%s)' % (me, ', '.join(peers)))
    if len(set(peers)) != len(peers):
        raise ValueError('peers name a host twice: %s' % ', '.join(peers))


def run(path: str, run_id: str, me: str, peers: list, checks=None, opts: dict | None = None) -> dict:
    """This host's part of a cross-host run; returns its report for the path. Raises ValueError on bad input."""
    opts = dict(DEFAULTS, **(opts or {}))
    check_names(run_id, me, peers)
    checks = [c for c in CHECK_NAMES if not checks or 'all' in checks or c in checks]
    path = os.path.abspath(path)
    started = time.monotonic()
    leader = me == peers[0]
    rundir = os.path.join(path, PREFIX + run_id)
    report = {'path': path, 'me': me, 'leader': peers[0], 'peers': list(peers), 'run_dir': rundir,
              'checks': {}, 'gone': [], 'run_dir_cleanup': 'not mine' if not leader else 'removed'}
    if len(peers) < 2:
        report.update(verdict='safe', reasons=['one host: nothing to compare'], skipped=True,
                      checks={n: result.result(n, 'skip', 'one host') for n in CHECK_NAMES},
                      duration=0.0)
        return report
    child = procs.Child(_worker, path, run_id, me, list(peers), checks, opts, deadline=opts['timeout'] + 1)
    old_handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    interrupted = None
    answer = {}
    try:
        answer = child.recv(opts['timeout'])
    except procs.ChildError as exc:
        child.kill()
        why = 'did not finish within %g s' % opts['timeout'] if 'no answer' in str(exc) else \
            'the cross-host probe process on %s died (%s)' % (me, child.describe_exit())
        answer = {'error': why}
    except Interrupted as exc:
        interrupted = exc
        answer = {'error': str(exc)}
    finally:
        child.kill()
        for sig in old_handlers:
            signal.signal(sig, signal.SIG_IGN)
        # The leader removes the run directory; when the leader is gone, the first peer still here does.
        gone = set(answer.get('gone', []))
        survivors = [peer for peer in peers if peer not in gone]
        if leader or (peers[0] in gone and survivors and survivors[0] == me):
            if not leader:
                report['run_dir_cleanup'] = 'removed (the leader %s was gone)' % peers[0]
            try:
                procs.run_in_child(_remove, (rundir,), timeout=max(5.0, opts['step_timeout']))
            except (procs.ChildError, OSError) as exc:
                report['run_dir_cleanup'] = 'failed: %s' % exc
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    if interrupted is not None:
        raise interrupted
    results = answer.get('results', {})
    for name in CHECK_NAMES:
        if name not in results:
            status = 'skip' if name not in checks else 'fail'
            results[name] = result.result(name, status, 'not selected' if status == 'skip' else answer.get(
                'error', 'not run'))
    decision = decide(results)
    report.update(checks=results, gone=answer.get('gone', []), verdict=decision['verdict'],
                  reasons=decision['reasons'], duration=round(time.monotonic() - started, 3))
    if 'error' in answer:
        report['error'] = answer['error']
    return report


def _remove(rundir: str) -> None:
    if os.path.isdir(rundir):
        workdirs.remove(rundir)


def decide(results: dict) -> dict:
    unsafe = []
    degraded = []
    for name in CHECK_NAMES:
        item = results.get(name)
        if item is None:
            continue
        line = '%s: %s' % (name, item['reason'])
        if item['status'] == 'fail':
            (unsafe if name in CRITICAL else degraded).append(line)
        elif item['status'] == 'warn':
            degraded.append(line)
    if unsafe:
        return {'verdict': 'unsafe', 'reasons': unsafe + degraded}
    if degraded:
        return {'verdict': 'degraded', 'reasons': degraded}
    return {'verdict': 'safe', 'reasons': ['every cross-host check run passed']}


def worst(verdicts) -> str:
    return verdict.worst(verdicts)


def _is_writable_dir(path: str) -> str:
    if not os.path.exists(path):
        return 'does not exist'
    if not os.path.isdir(path):
        return 'is not a directory: give the shared directory that will hold the mail store'
    if not os.access(path, os.W_OK | os.X_OK):
        return 'is not writable by uid %d' % os.geteuid()
    return ''


def run_checked(params: dict, limits=()) -> dict:
    """The module's one call: validate params, then run(). Raises ValueError with a message for the user."""
    for key, low, high in limits:
        if not low <= params[key] <= high:
            raise ValueError('%s must be between %s and %s, got %s' % (key, low, high, params[key]))
    if params['step_timeout'] * 2 > params['timeout']:
        raise ValueError('step_timeout (%s) must be at most half of timeout (%s)' % (params['step_timeout'],
                                                                                     params['timeout']))
    check_names(params['run_id'], params['me'], params['peers'])
    path = os.path.abspath(params['path'])
    try:
        problem = procs.run_in_child(_is_writable_dir, (path,), timeout=params['step_timeout'])
    except procs.ChildError as exc:
        raise ValueError('%s did not answer stat() within %g s (%s): the filesystem hangs' % (
            path, params['step_timeout'], exc))
    if problem:
        raise ValueError('%s %s' % (path, problem))
    opts = {key: params[key] for key in DEFAULTS}
    return run(path, params['run_id'], params['me'], params['peers'], params['checks'], opts)
