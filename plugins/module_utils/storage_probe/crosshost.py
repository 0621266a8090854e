# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cross-host run of one host: validates the input, drives the checks, judges the results.

Every host of a run executes run() at the same time (one Ansible task over the group). The whole run
happens in one forked worker per host with a hard deadline (SIGALRM) that dies with the module
(PR_SET_PDEATHSIG). The hosts talk over a TCP side channel (crosshost_protocol), never through the
filesystem under test: the leader listens and keeps the messages in a broker process, creates the run
directory and posts its peers and checks ('meet'); every other host checks they are its own, measures
how long the run directory takes to appear ('ready') and waits for the leader's word ('go'). Then each
selected check of crosshost_checks runs in a child process of its own with a deadline, so a fault
(SIGBUS on a mapping) or a hang fails that check and the next one still runs. A peer whose check process
broke posts the failure on the check's final step, so the leader never waits it out. Only the leader
removes the run directory; no host removes another's files. verdict.decide judges the results, with the
cross-host checks' critical set.

Every input is checked (inputs) before the run directory is made. A host given other peers or checks
(another order too) than the leader stops there, saying so, instead of playing a ring or a check the
others do not.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import traceback

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import crosshost_checks
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import crosshost_protocol as protocol
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import inputs
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import procs
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import progress
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import result
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import verdict
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import workdir as workdirs

CHECK_NAMES = crosshost_checks.CHECK_NAMES
DEFAULTS = {'timeout': 120.0, 'step_timeout': 10.0, 'pingpong_iterations': 2000, 'neighbour_files': 256,
            'recovery_timeout': 10.0, 'visibility_timeout': 2.0, 'tries': 5}
LIMITS = (('timeout', 5, 86400), ('step_timeout', 0.5, 3600), ('recovery_timeout', 0.5, 3600),
          ('visibility_timeout', 0.1, 600), ('tries', 1, 100),
          ('pingpong_iterations', 100, 10 ** 7), ('neighbour_files', 1, 10 ** 6))
PASSED = 'every cross-host check run passed'
CHANNEL_PORT = 4743  # the leader's port by default (unassigned by IANA)


class Interrupted(Exception):
    """The module was told to stop (SIGTERM, SIGINT, SIGHUP) in the middle of a run."""


def _interrupt(signum, frame):
    raise Interrupted('stopped by signal %d in the middle of the cross-host checks; the run directory was '
                      'removed where this host owned it' % signum)


def _post_done(run: protocol.Run, name: str, out: dict) -> None:
    """A host's failure of a check, posted on the check's final step: nobody waits it out (the leader gathers the
    peers' final steps; a peer waiting on the leader sees the leader's there and stops)."""
    try:
        run.post(crosshost_checks.BY_NAME[name].done, out)
    except (OSError, ValueError):
        pass


def _one_check(run: protocol.Run, name: str, opts: dict) -> dict:  # pragma: no cover - runs in a child
    started = time.monotonic()
    run.done = crosshost_checks.BY_NAME[name].done
    try:
        out = crosshost_checks.BY_NAME[name].play(run, opts)
    except Exception as exc:  # noqa: BLE001 - an error is this check's failure
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = '%s:%d %s' % (os.path.basename(frame.filename), frame.lineno, frame.line)
        out = result.result(name, 'fail', 'stopped on an error: %s' % exc, {'error': sysapi.errname(exc), 'at': where},
                            time.monotonic() - started)
        _post_done(run, name, out)
    return {'result': out, 'gone': sorted(run.gone), 'bad': run.bad}


def _check_limit(opts: dict) -> float:
    """The deadline of one check's process: every step may take step_timeout, every try visibility_timeout,
    plus the longest check's own time (a ring of pingpong_iterations steps, the neighbour_files tree at 2 ms a
    file on a slow network filesystem, read twice)."""
    return opts['step_timeout'] * (4 + opts['tries']) + opts['recovery_timeout'] + \
        opts['visibility_timeout'] * 3 * opts['tries'] + opts['pingpong_iterations'] / 100.0 + \
        opts['neighbour_files'] / 250.0


def cleanup_timeout(opts: dict) -> float:
    """Seconds the removal of the run directory may take: a neighbour_stat check cut short leaves its tree."""
    return max(5.0, opts['step_timeout']) + opts['neighbour_files'] / 1000.0


def _valid_meet(data) -> str:
    """The leader's peers (host names), checks (known ones) and its problem: nothing else is printed."""
    if not isinstance(data, dict) or not isinstance(data.get('peers'), list) or \
            not isinstance(data.get('checks'), list) or not isinstance(data.get('problem'), str) or \
            not all(isinstance(name, str) and inputs.HOST.fullmatch(name) for name in data['peers']) or \
            not all(name in crosshost_checks.BY_NAME for name in data['checks']):
        return 'not the peers and checks of a run'
    return ''


REFUSALS = {
    'peers': '%s was given other peers (or another order) than the leader: give every host the same peers in the '
             'same order',
    'checks': '%s was given other checks than the leader: give every host the same checks',
    'symlink': 'the run directory is a symlink on %s: refused (remove it)',
}


def _valid_ready(data) -> str:
    """A peer's word on the run directory: seen after a number of seconds, or not (null), or why it refused."""
    seen = data.get('seen', False) if isinstance(data, dict) else False
    if seen is not None and (isinstance(seen, bool) or not isinstance(seen, (int, float)) or seen < 0):
        return 'seen is not a number of seconds or null'
    if data.get('refused') not in (None,) + tuple(REFUSALS):
        return 'refused is not one of %s' % ', '.join(REFUSALS)
    return ''


def _valid_go(data) -> str:
    if not isinstance(data, dict) or not isinstance(data.get('why'), str):
        return 'not the leader\'s go'
    return ''


def _unseen_dir(where: str, leader: str, waited: float) -> str:
    return 'the run directory %s created on %s was not visible on %s after %g s: a directory created on one ' \
           'host is not seen on another, so Cyrus on %s would not find a mailbox or message file created on %s ' \
           '(or the path is not the same filesystem on both hosts)' % ('%s', leader, where, waited, where, leader)


def _agree(run: protocol.Run, peers: list, checks: list, opts: dict) -> tuple:
    """Meet: the leader posts its peers and checks, every other host checks they are its own, says whether
    and when it saw the run directory, and waits for the leader's go.
    Returns (why not or '', the leader's checks, {'run_dir_seen_s': ...} evidence)."""
    step = opts['step_timeout']
    if run.me == run.leader:
        run.post('meet', {'peers': list(peers), 'checks': list(checks), 'problem': ''})
        ready = run.gather('ready', valid=_valid_ready)
        # a peer that never saw the run directory cannot use its data files: no check can run there
        unseen = sorted(host for host, data in ready.items() if data.get('seen') is None and not data.get('refused'))
        refusals = [REFUSALS[data['refused']] % host for host, data in sorted(ready.items()) if data.get('refused')]
        why = ''
        if unseen or refusals:
            why = '; '.join(refusals + [_unseen_dir(host, run.leader, step) % run.dir for host in unseen])
        elif run.gone:
            why = '; '.join(crosshost_checks.gone_reasons(run, sorted(run.gone)))
        run.post('go', {'why': why})
        return why, checks, {'run_dir_seen_s': {host: data.get('seen') for host, data in sorted(ready.items())}}
    try:
        # the leader may start a few seconds after this host: its channel is retried meanwhile
        theirs = run.wait('meet', run.leader, timeout=step * 2, valid=_valid_meet)
    except protocol.Gone:
        return 'the leader %s %s' % (run.leader, run.why(run.leader)), [], {}
    leader_checks = theirs['checks']
    if theirs['problem']:
        return 'the leader %s could not start the run: %s' % (run.leader, theirs['problem']), [], {}
    if theirs['peers'] != list(peers):
        run.post('ready', {'seen': None, 'refused': 'peers'})
        return 'the peers here (%s) are not those of the leader %s (%s): give every host the same peers in the ' \
               'same order' % (', '.join(peers), run.leader, ', '.join(theirs['peers'])), leader_checks, {}
    if theirs['checks'] != list(checks):
        run.post('ready', {'seen': None, 'refused': 'checks'})
        return 'the checks here (%s) are not those of the leader %s (%s): give every host the same checks' % (
            ', '.join(checks), run.leader, ', '.join(theirs['checks'])), leader_checks, {}
    seen = protocol.await_dir(run.dir, step)
    if seen == 'symlink':
        problem = 'the run directory %s is a symlink, not the directory %s makes: refused (remove it)' % (
            run.dir, run.leader)
        run.post('ready', {'seen': None, 'refused': 'symlink'})
        return problem, [], {}
    run.post('ready', {'seen': seen})
    if seen is None:
        return _unseen_dir(run.me, run.leader, step) % run.dir, [], {'run_dir_seen_s': None}
    try:
        go = run.wait('go', run.leader, timeout=step * (2 * len(run.others) + 1), valid=_valid_go)
    except protocol.Gone:
        return 'the leader %s %s' % (run.leader, run.why(run.leader)), [], {}
    if go['why']:
        return 'the leader %s stopped the run: %s' % (run.leader, go['why']), [], {'run_dir_seen_s': seen}
    return '', checks, {'run_dir_seen_s': seen}


def _start_leader(rundir: str, opts: dict):
    """The leader's listening socket, broker process and run directory: (broker or None, why not or '')."""
    try:
        sock = protocol.listen(opts['channel_address'], opts['channel_port'])
    except protocol.ChannelError as exc:
        return None, exc.strerror
    try:
        broker = procs.Child(protocol.serve, sock, opts['channel_key'], opts['run_id'], deadline=opts['timeout'] + 5)
    finally:
        sock.close()
    try:
        protocol.create_rundir(rundir)
    except OSError as exc:
        return broker, 'could not create the run directory %s: %s (a run_id used twice?)' % (
            rundir, sysapi.errname(exc))
    return broker, ''


def _worker(chan, path, run_id, me, peers, checks, opts):  # pragma: no cover - runs in a child
    """The whole cross-host run of this host, in one process with a hard deadline."""
    rundir = protocol.rundir_of(path, run_id)
    channel = protocol.TcpChannel(opts['channel_address'], opts['channel_port'], opts['channel_key'], run_id)
    # a host whose heartbeat goes on is waited for up to most of one check's deadline, never past it
    run = protocol.Run(rundir, me, peers, opts['step_timeout'], channel, longest=_check_limit(opts) * 0.8)
    broker = None
    if me == peers[0]:
        broker, problem = _start_leader(rundir, opts)
        if broker is None:
            chan.send({'error': problem})
            return
        if problem:
            # the others hear why at once instead of waiting out the run
            run.post('meet', {'peers': list(peers), 'checks': list(checks), 'problem': problem})
            run.gather('end', valid=None)
            chan.send({'error': problem, 'gone': sorted(run.gone), 'made': False})
            broker.kill()
            return
    beat = procs.Child(protocol.heartbeat, channel, me, deadline=opts['timeout'] + 5)
    try:
        _run_checks(chan, run, peers, checks, opts)
    finally:
        beat.kill()
        if broker is not None:
            broker.kill()


def _run_checks(chan, run, peers, checks, opts):  # pragma: no cover - runs in a child
    problem, leader_checks, meeting = _agree(run, peers, checks, opts)
    if problem:
        # the leader hears it at the end of each of its checks instead of waiting it out
        for name in leader_checks:
            _post_done(run, name, result.result(name, 'fail', problem))
        if run.me != run.leader:
            try:
                run.post('end')
            except (OSError, ValueError):
                pass
        else:
            run.gather('end')
        chan.send({'error': problem, 'gone': sorted(run.gone), 'meeting': meeting})
        return
    results = {}
    dead = ''
    reporter = progress.Reporter(opts.get('progress_file'), opts.get('progress_id'))
    done = None
    for name in checks:
        if done is not None:                # the check before, as it ended (a line in progress_file)
            reporter.check(opts['path'], done, results[done])
        done = name
        started = time.monotonic()
        if dead:
            results[name] = result.result(name, 'fail', 'not run: %s' % dead)
            _post_done(run, name, results[name])
            continue
        try:
            answer = procs.run_watched(_one_check, (run, name, opts), timeout=_check_limit(opts),
                                       watch=lambda: _answers(run.dir, opts['step_timeout']),
                                       every=opts['step_timeout'])
            results[name] = answer['result']
            _still_gone(run, answer['gone'], answer['bad'])
            if results[name]['status'] == 'fail' and results[name]['evidence'].get('error') in LOST:
                dead = _answers(run.dir, opts['step_timeout'])  # an error from a filesystem that went away
                if dead:
                    results[name]['reason'] = '%s (during %s)' % (dead, name)
                    _post_done(run, name, results[name])
        except (procs.ChildError, OSError) as exc:  # a fault (SIGBUS on a mapping), a hang or a kill
            dead = _answers(run.dir, opts['step_timeout'])
            why = '%s (during %s)' % (dead, name) if dead else 'the check process here stopped: %s' % exc
            results[name] = result.result(name, 'fail', why, {'error': str(exc)}, time.monotonic() - started)
            _post_done(run, name, results[name])
    if done is not None:
        reporter.check(opts['path'], done, results[done])
    if run.me == run.leader:
        run.gather('end')
    else:
        try:
            run.post('end')
        except (OSError, ValueError):
            pass
    chan.send({'results': results, 'gone': sorted(run.gone), 'meeting': meeting})


LOST = ('ENOTCONN', 'EIO', 'ESTALE', 'ENOENT', 'EBADFD')


def _stat(path: str) -> None:  # pragma: no cover - runs in a child
    os.stat(path)


def _answers(rundir: str, limit: float) -> str:
    """'' while the filesystem answers a stat() of the run directory within limit; else why not, plainly."""
    try:
        procs.run_in_child(_stat, (rundir,), timeout=limit)
    except procs.ChildError:
        return 'the filesystem stopped answering here: stat() of the run directory did not return within %g s ' \
               '(its server is down or unreachable); Cyrus would hang on every mailbox' % limit
    except OSError as exc:
        if exc.errno in (errno.ENOTCONN, errno.EIO, errno.ESTALE, errno.ENOENT):
            return 'the filesystem is gone here: stat() of the run directory failed with %s (its server or client ' \
                   'stopped, or the directory was removed)' % sysapi.errname(exc)
    return ''


def _still_gone(run: protocol.Run, gone: list, bad: dict) -> None:
    """After a check, the hosts that are gone for the next ones: those whose heartbeat stopped. A host that was
    only slow, or stopped that one check, plays the next."""
    for host in gone:
        try:
            age = run.channel.age(host)
        except (protocol.ChannelError, protocol.BadMessage):
            age = None
        if age is None or age > run.silence():
            run.gone.add(host)
            if host in bad and not bad[host].startswith(('stopped this check', 'was still running')):
                run.bad[host] = bad[host]


def check_names(run_id: str, me: str, peers: list) -> None:
    """run_id is a run token, me and the peers host names, no host named twice in any spelling. Raises ValueError."""
    if not isinstance(run_id, str) or not protocol.RUN_ID.fullmatch(run_id):
        raise ValueError('run_id %r must be 6 to 64 letters, digits, - or _' % (run_id,))
    inputs.peers(me, peers)


def check_channel(opts: dict, hosts: int) -> None:
    """The side channel's address, port and key. Raises ValueError."""
    if hosts < 2:
        return
    address = opts.get('channel_address')
    if not isinstance(address, str) or not inputs.HOST.fullmatch(address):
        raise ValueError('channel_address %r must be the address (or name) of the leader that every host reaches '
                         'it on: %s' % (address, inputs.HOST_CHARS))
    inputs.number('channel_port', opts.get('channel_port'), 1, 65535)
    key = opts.get('channel_key')
    if not isinstance(key, str) or not protocol.KEY.fullmatch(key):
        raise ValueError('channel_key must be 16 to 256 letters, digits, - or _, the same on every host of the run '
                         '(a random string made once on the controller)')


def run(path: str, run_id: str, me: str, peers: list, checks=None, opts: dict | None = None) -> dict:
    """This host's part of a cross-host run; returns its report for the path. Raises ValueError on bad input.
    With opts progress_file (and progress_id), a plan line, a line per check as it ends and a done line are
    appended to it (progress.Reporter), as the single-host probe writes them."""
    opts = dict(DEFAULTS, **(opts or {}))
    check_names(run_id, me, peers)
    opts['run_id'] = run_id
    checks = inputs.checks(checks, CHECK_NAMES)
    checks = [c for c in CHECK_NAMES if 'all' in checks or c in checks]
    path = inputs.path(path)
    opts['path'] = path
    check_channel(opts, len(peers))
    reporter = progress.Reporter(opts.get('progress_file'), opts.get('progress_id'))
    reporter.plan([path], checks if len(peers) > 1 else [])
    try:
        report = _run(path, run_id, me, peers, checks, opts)
    except BaseException as exc:
        reporter.done(False, str(exc) or type(exc).__name__)
        raise
    reporter.done('error' not in report, report.get('error', ''))
    return report


def _run(path: str, run_id: str, me: str, peers: list, checks: list, opts: dict) -> dict:
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
        # Only the leader removes the run directory: a peer never removes what another host made.
        if leader:
            try:
                procs.run_in_child(_remove, (rundir,), timeout=cleanup_timeout(opts))
            except (procs.ChildError, OSError) as exc:
                report['run_dir_cleanup'] = 'failed: %s' % (
                    'the removal did not finish within %g s (requests stuck in the filesystem hold its files): '
                    'remove %s once they are gone' % (cleanup_timeout(opts), rundir)
                    if 'no answer' in str(exc) else exc)
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
                  reasons=decision['reasons'], duration=round(time.monotonic() - started, 3),
                  channel='%s port %s' % (opts['channel_address'], opts['channel_port']))
    report.update(answer.get('meeting') or {})
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


CHANNEL = ('channel_address', 'channel_port', 'channel_key')


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
    check_channel(params, len(params['peers']))
    watched = params.get('progress_file')
    if watched is not None and (not os.path.isabs(watched) or not os.path.isdir(os.path.dirname(watched))):
        raise ValueError('progress_file %s must be an absolute path in an existing directory' % watched)
    opts = {key: params[key] for key in tuple(DEFAULTS) + CHANNEL}
    opts.update(progress_file=watched, progress_id=params.get('progress_id'))
    return run(path, params['run_id'], params['me'], params['peers'], params['checks'], opts)
