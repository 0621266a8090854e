# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cross-host run of one host: validates the input, drives the checks, judges the results.

Every host of a run executes run() at the same time (one Ansible task over the group). The whole run
happens in one forked worker per host with a hard deadline (SIGALRM) that dies with the module
(PR_SET_PDEATHSIG): the worker meets the other hosts (crosshost_protocol), then runs each selected
check of crosshost_checks in a child process of its own with a deadline, so a fault (SIGBUS on a
mapping) or a hang fails that check and the next one still runs. A peer whose check process broke
posts the failure on the check's final step, so the leader never waits it out. The leader removes the
run directory once every other host has finished or is gone; when the leader is gone, the first peer
still there does. verdict.decide judges the results, with the cross-host checks' critical set.

Every input is checked (inputs) before the run directory is made. The leader posts its peers and
checks ('meet'); a host given other ones (another order too) stops there, saying so, instead of
playing a ring or a check the others do not.
"""

from __future__ import annotations

import os
import signal
import socket
import time

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import crosshost_checks
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import crosshost_protocol as protocol
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import inputs
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import procs
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import result
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import verdict
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import workdir as workdirs

CHECK_NAMES = crosshost_checks.CHECK_NAMES
DEFAULTS = {'timeout': 120.0, 'step_timeout': 10.0, 'pingpong_iterations': 2000, 'neighbour_files': 256,
            'recovery_timeout': 10.0}
LIMITS = (('timeout', 5, 86400), ('step_timeout', 0.5, 3600), ('recovery_timeout', 0.5, 3600),
          ('pingpong_iterations', 100, 10 ** 7), ('neighbour_files', 1, 10 ** 6))
PASSED = 'every cross-host check run passed'


class Interrupted(Exception):
    """The module was told to stop (SIGTERM, SIGINT, SIGHUP) in the middle of a run."""


def _interrupt(signum, frame):
    raise Interrupted('stopped by signal %d in the middle of the cross-host checks; the run directory was '
                      'removed where this host owned it' % signum)


def _post_done(run: protocol.Run, name: str, out: dict) -> None:
    """A peer's failure of a check, posted on the check's final step: the leader does not wait it out."""
    if run.me != run.leader:
        try:
            run.post(crosshost_checks.BY_NAME[name].done, out)
        except OSError:
            pass


def _one_check(run: protocol.Run, name: str, opts: dict) -> dict:  # pragma: no cover - runs in a child
    started = time.monotonic()
    try:
        out = crosshost_checks.BY_NAME[name].play(run, opts)
    except Exception as exc:  # noqa: BLE001 - an error is this check's failure
        out = result.result(name, 'fail', 'stopped on an error: %s' % exc, {'error': sysapi.errname(exc)},
                            time.monotonic() - started)
        _post_done(run, name, out)
    return {'result': out, 'gone': sorted(run.gone)}


def _check_limit(opts: dict) -> float:
    """The deadline of one check's process: every step may take step_timeout, plus the longest check's own time
    (a ring of pingpong_iterations steps, the neighbour_files tree at 2 ms a file on a slow network filesystem)."""
    return opts['step_timeout'] * 4 + opts['recovery_timeout'] + opts['pingpong_iterations'] / 100.0 + \
        opts['neighbour_files'] / 500.0


def cleanup_timeout(opts: dict) -> float:
    """Seconds the removal of the run directory may take: a neighbour_stat check cut short leaves its tree."""
    return max(5.0, opts['step_timeout']) + opts['neighbour_files'] / 1000.0


def _meet(rundir: str, me: str, peers: list, opts: dict) -> str:
    """Create (the leader) or wait for (the others) the run directory; returns why not, or ''."""
    if me == peers[0]:
        try:
            protocol.create_rundir(rundir)
        except OSError as exc:
            return 'could not create the run directory %s: %s (a run_id used twice?)' % (rundir, sysapi.errname(exc))
        return ''
    if not protocol.await_rundir(rundir, opts['step_timeout']):
        if os.path.islink(rundir):
            return 'the run directory %s is a symlink, not the directory %s makes: refused (remove it)' % (
                rundir, peers[0])
        return 'the run directory %s made by %s did not appear here within %g s: it is not the same shared ' \
               'filesystem, or %s is not running' % (rundir, peers[0], opts['step_timeout'], peers[0])
    return ''


def _valid_meet(data) -> str:
    """The leader's peers (host names) and checks (known ones): nothing else is printed in a message."""
    if not isinstance(data, dict) or not isinstance(data.get('peers'), list) or \
            not isinstance(data.get('checks'), list) or \
            not all(isinstance(name, str) and inputs.HOST.fullmatch(name) for name in data['peers']) or \
            not all(name in crosshost_checks.BY_NAME for name in data['checks']):
        return 'not the peers and checks of a run'
    return ''


def _agree(run: protocol.Run, peers: list, checks: list) -> tuple:
    """The leader posts its peers and checks; another host checks that they are its own.
    Returns (why not or '', the leader's checks)."""
    if run.me == run.leader:
        run.post('meet', {'peers': list(peers), 'checks': list(checks)})
        return '', checks
    try:
        theirs = run.wait('meet', run.leader, valid=_valid_meet)
    except protocol.Gone:
        return 'the leader %s %s' % (run.leader, run.why(run.leader)), []
    leader_checks = theirs['checks']
    if theirs['peers'] != list(peers):
        return 'the peers here (%s) are not those of the leader %s (%s): give every host the same peers in the ' \
               'same order' % (', '.join(peers), run.leader, ', '.join(theirs['peers'])), leader_checks
    if theirs['checks'] != list(checks):
        return 'the checks here (%s) are not those of the leader %s (%s): give every host the same checks' % (
            ', '.join(checks), run.leader, ', '.join(theirs['checks'])), leader_checks
    return '', checks


def _worker(chan, path, run_id, me, peers, checks, opts):  # pragma: no cover - runs in a child
    """The whole cross-host run of this host, in one process with a hard deadline."""
    rundir = protocol.rundir_of(path, run_id)
    problem = _meet(rundir, me, peers, opts)
    if problem:
        chan.send({'error': problem})
        return
    run = protocol.Run(rundir, me, peers, opts['step_timeout'])
    problem, leader_checks = _agree(run, peers, checks)
    if problem:
        # the leader hears it at the end of each of its checks instead of waiting it out
        for name in leader_checks:
            _post_done(run, name, result.result(name, 'fail', problem))
        if leader_checks:
            try:
                run.post('end')
            except OSError:
                pass
        chan.send({'error': problem, 'gone': sorted(run.gone)})
        return
    results = {}
    run.post('pid', {'pid': os.getpid(), 'host': socket.gethostname()})
    for name in checks:
        started = time.monotonic()
        try:
            answer = procs.run_in_child(_one_check, (run, name, opts), timeout=_check_limit(opts))
            results[name] = answer['result']
            run.gone.update(answer['gone'])
        except (procs.ChildError, OSError) as exc:  # a fault (SIGBUS on a mapping), a hang or a kill
            results[name] = result.result(name, 'fail', 'the check process here stopped: %s' % exc,
                                          {'error': str(exc)}, time.monotonic() - started)
            _post_done(run, name, results[name])
    if me == run.leader:
        run.gather('end')
    else:
        run.post('end')
    chan.send({'results': results, 'gone': sorted(run.gone)})


def check_names(run_id: str, me: str, peers: list) -> None:
    """run_id is a run token, me and the peers host names, no host named twice in any spelling. Raises ValueError."""
    if not isinstance(run_id, str) or not protocol.RUN_ID.fullmatch(run_id):
        raise ValueError('run_id %r must be 6 to 64 letters, digits, - or _' % (run_id,))
    inputs.peers(me, peers)


def run(path: str, run_id: str, me: str, peers: list, checks=None, opts: dict | None = None) -> dict:
    """This host's part of a cross-host run; returns its report for the path. Raises ValueError on bad input."""
    opts = dict(DEFAULTS, **(opts or {}))
    check_names(run_id, me, peers)
    checks = inputs.checks(checks, CHECK_NAMES)
    checks = [c for c in CHECK_NAMES if 'all' in checks or c in checks]
    path = inputs.path(path)
    started = time.monotonic()
    leader = me == peers[0]
    rundir = protocol.rundir_of(path, run_id)
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
                procs.run_in_child(_remove, (rundir,), timeout=cleanup_timeout(opts))
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
    decision = verdict.decide(results, crosshost_checks.CRITICAL, PASSED)
    report.update(checks=results, gone=answer.get('gone', []), verdict=decision['verdict'],
                  reasons=decision['reasons'], duration=round(time.monotonic() - started, 3))
    if 'error' in answer:
        report['error'] = answer['error']
    return report


def _remove(rundir: str) -> None:
    if protocol.is_rundir(rundir):
        workdirs.remove(rundir)


def _is_writable_dir(path: str) -> str:
    if not os.path.exists(path):
        return 'does not exist'
    if not os.path.isdir(path):
        return 'is not a directory: give the shared directory that will hold the mail store'
    if not os.access(path, os.W_OK | os.X_OK):
        return 'is not writable by uid %d' % os.geteuid()
    return ''


def run_checked(params: dict, limits=LIMITS) -> dict:
    """The module's one call: validate params, then run(). Raises ValueError with a message for the user."""
    for key, low, high in limits:
        inputs.number(key, params[key], low, high)
    if params['step_timeout'] * 2 > params['timeout']:
        raise ValueError('step_timeout (%s) must be at most half of timeout (%s)' % (params['step_timeout'],
                                                                                     params['timeout']))
    check_names(params['run_id'], params['me'], params['peers'])
    inputs.checks(params['checks'], CHECK_NAMES)
    path = inputs.path(params['path'])
    try:
        problem = procs.run_in_child(_is_writable_dir, (path,), timeout=params['step_timeout'])
    except procs.ChildError as exc:
        raise ValueError('%s did not answer stat() within %g s (%s): the filesystem hangs' % (
            path, params['step_timeout'], exc))
    if problem:
        raise ValueError('%s %s' % (path, problem))
    opts = {key: params[key] for key in DEFAULTS}
    return run(path, params['run_id'], params['me'], params['peers'], params['checks'], opts)
