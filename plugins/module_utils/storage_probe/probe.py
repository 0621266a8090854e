# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the single-host checks on a path: preflight, work directory, one child per check, verdict, cleanup.

The parent never touches the probed filesystem itself: every call that could hang on it runs in a
child with a deadline, so a hung filesystem costs at most the time budget.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import time

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import deep
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import durability
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import fsx
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import identity
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import inputs
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import locks
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import mmapchecks
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import namespace
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import procs
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import result
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import scale
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import verdict
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import workdir as workdirs

CHECKS = {
    'mmap_sees_write': lambda path, opts: mmapchecks.mmap_sees_write(path),
    'mmap_write_msync': lambda path, opts: mmapchecks.mmap_write_msync(path),
    'fcntl_locks': lambda path, opts: locks.fcntl_locks(path),
    'flock': lambda path, opts: locks.flock_locks(path),
    'rename_reopen': lambda path, opts: namespace.rename_reopen(path),
    'hard_links': lambda path, opts: namespace.hard_links(path),
    'excl_race': lambda path, opts: namespace.excl_race(path),
    'fsync': lambda path, opts: durability.fsync_family(path),
    'fsx': lambda path, opts: fsx.run_fsx(path, opts['fsx_ops'], opts['fsx_seed']),
    'metadata_scale': lambda path, opts: scale.metadata_scale(path, opts['scale_files'], opts['scale_rounds']),
    'metadata_deep': lambda path, opts: deep.metadata_deep(path, opts['deep_files'], opts['deep_budget_mb'] * deep.MIB,
                                                           opts.get('deadline'), opts['progress_file'],
                                                           label='metadata_deep of %s' % opts.get('probed', path)),
}
CHECK_NAMES = ('identity',) + tuple(CHECKS)
# Checks that run only when named: `all` leaves them out (metadata_deep runs for many minutes).
OPT_IN = ('metadata_deep',)
DEFAULTS = {'timeout': 120.0, 'stat_timeout': 10.0, 'fsx_ops': 1000, 'fsx_seed': None, 'scale_files': 2048,
            'scale_rounds': 4, 'deep_files': 500000, 'deep_budget_mb': 2048, 'progress_file': None}
MIN_FREE = 16 * 1024 * 1024
MIN_INODES = 1000
FULL = ('ENOSPC', 'EDQUOT')
NAME_TRIES = 5


class ProbeError(Exception):
    """Bad input or a path the probe cannot work on: the message is for the user."""


class Interrupted(Exception):
    """A signal stopped the probe (the work directory is removed on the way out)."""


def _interrupt(signum, frame):
    raise Interrupted('interrupted by %s' % signal.Signals(signum).name)


def _scale_files(opts: dict) -> int:
    return sum(scale.batch_sizes(opts['scale_files'], opts['scale_rounds'])) if opts['scale_files'] else 0


def needs(opts: dict) -> tuple:
    """Bytes and inodes the probe needs free."""
    files = _scale_files(opts)
    return MIN_FREE + files * 4096, MIN_INODES + files + files // scale.FILES_PER_FOLDER


def cleanup_timeout(opts: dict) -> float:
    """Seconds the removal of the work directory may take: a metadata_scale or metadata_deep check cut short
    leaves its files (1 ms each, on a slow network filesystem)."""
    deep_files = opts['deep_files'] if opts.get('deep_selected') else 0
    return max(5.0, opts['stat_timeout']) + (_scale_files(opts) + deep_files) / 1000.0


def select_checks(checks) -> list:
    """The checks to run, in their order; None is all. Raises ProbeError for an empty list, an unknown
    name or a name given twice."""
    try:
        checks = inputs.checks(checks, CHECK_NAMES)
    except inputs.InputError as exc:
        raise ProbeError(str(exc))
    chosen = set(checks) | ({name for name in CHECK_NAMES if name not in OPT_IN} if 'all' in checks else set())
    return [name for name in CHECK_NAMES if name in chosen]


def _run_check(name: str, workdir: str, opts: dict) -> dict:  # pragma: no cover - runs in a child
    where = os.path.join(workdir, name)
    started = time.monotonic()
    try:
        os.mkdir(where, 0o700)
        return CHECKS[name](where, opts)
    except Exception as exc:  # noqa: BLE001 - any error is this check's failure, reported, not raised
        reason = 'stopped on an error: %s' % exc
        return result.result(name, 'fail', reason, {'error': sysapi.errname(exc)}, time.monotonic() - started)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc)


def preflight(path: str, opts: dict) -> dict:
    try:
        facts = procs.run_in_child(identity.path_facts, (path,), timeout=opts['stat_timeout'])
    except procs.ChildError as exc:
        if 'no answer' in str(exc):
            raise ProbeError('%s did not answer stat()/statfs() within %g s: the filesystem hangs' % (
                path, opts['stat_timeout']))
        raise ProbeError('%s could not be examined: %s' % (path, exc))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise ProbeError('%s does not exist' % path)
        raise ProbeError('%s cannot be examined: %s' % (path, os.strerror(exc.errno or 0) or exc))
    if facts.get('dangling') is not None:
        raise ProbeError('%s is a symlink to %s, which does not exist' % (path, facts['dangling']))
    if not facts['is_dir']:
        raise ProbeError('%s is not a directory: give the directory that will hold the mail store' % path)
    if facts['statvfs']['read_only']:
        raise ProbeError('%s is on a read-only filesystem: the probe needs to write a work directory there' % path)
    if not facts['writable']:
        raise ProbeError('%s is not writable by uid %d: run the probe as a user that may create files there' % (
            path, os.geteuid()))
    want_bytes, want_inodes = needs(opts)
    vfs = facts['statvfs']
    if vfs['free_bytes'] < want_bytes:
        raise ProbeError('%s has %d MiB free, the probe needs %d MiB: the filesystem is (nearly) full' % (
            path, vfs['free_bytes'] // 2 ** 20, -(-want_bytes // 2 ** 20)))
    if vfs['total_inodes'] and vfs['free_inodes'] < want_inodes:
        raise ProbeError('%s has %d free inodes, the probe needs %d: the filesystem is out of inodes' % (
            path, vfs['free_inodes'], want_inodes))
    return facts


def make_workdir(path: str, real: str, timeout: float) -> str:
    """The work directory under real (the path with its symlinks resolved), made in a child under a name
    chosen here: a name already taken (a symlink planted there too) is never used, and a work directory
    whose child hung is removed by its name. Raises ProbeError."""
    for dummy in range(NAME_TRIES):
        name = workdirs.new_name()
        try:
            return procs.run_in_child(workdirs.create, (real, name), timeout=timeout)
        except (procs.ChildError, Interrupted) as exc:
            # the child may have made it before it hung or was stopped: the name is ours, remove it
            where = os.path.join(real, name)
            try:
                procs.run_in_child(workdirs.remove, (where,), timeout=timeout)
                left = ''
            except (procs.ChildError, OSError):
                left = '; %s may be left behind' % where
            if isinstance(exc, Interrupted):
                raise
            raise ProbeError('%s: could not create the work directory in time (%s): the filesystem hangs%s' % (
                path, exc, left))
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                continue
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ProbeError('%s: no space left to create the work directory: the filesystem is full' % path)
            raise ProbeError('%s: could not create the work directory: %s' % (path, _why(exc)))
    raise ProbeError('%s: could not create the work directory: %d unpredictable names were all taken' % (
        path, NAME_TRIES))


def probe_path(path: str, checks=None, opts: dict | None = None, check_mode: bool = False,
               clean_leftovers: bool = False, reporter=None) -> dict:
    """Probe one directory; returns the per-path report. Raises ProbeError for bad input, Interrupted.
    reporter (progress.Reporter): told each check as it ends."""
    said = reporter.check if reporter is not None else (lambda *args: None)
    opts = dict(DEFAULTS, **(opts or {}))
    if opts['fsx_seed'] is None:
        opts['fsx_seed'] = int.from_bytes(os.urandom(4), 'big')
    checks = select_checks(checks)
    try:
        path = inputs.path(path)
    except inputs.InputError as exc:
        raise ProbeError(str(exc))
    opts['deep_selected'] = 'metadata_deep' in checks
    opts['probed'] = path
    started = time.monotonic()
    deadline = started + opts['timeout']
    old_handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        facts = preflight(path, opts)
        real = facts['real_path']
        call_timeout = max(1.0, min(opts['stat_timeout'], deadline - time.monotonic()))
        removed = []
        if clean_leftovers:
            try:
                removed = procs.run_in_child(workdirs.clean_leftovers, (real, check_mode), timeout=call_timeout)
            except (procs.ChildError, OSError) as exc:
                raise ProbeError('%s: could not remove the work directories of killed runs within %g s (%s); '
                                 'remove them by hand or run again without clean_leftovers' % (
                                     path, call_timeout, _why(exc)))
        workdir = make_workdir(path, real, call_timeout)
        results = {}
        cleanup = 'removed'
        filled = None
        try:
            try:
                leftovers = procs.run_in_child(workdirs.find_leftovers, (real, workdir), timeout=call_timeout)
            except (procs.ChildError, OSError) as exc:
                raise ProbeError('%s: could not list the directory within %g s (%s): the filesystem hangs or '
                                 'refuses readdir()' % (path, call_timeout, _why(exc)))
            if 'identity' in checks:
                results['identity'] = identity.identify(real, facts['magic'], facts['statvfs'],
                                                        identity.read_mountinfo())
                said(path, 'identity', results['identity'])
            for name in checks:
                if name == 'identity':
                    continue
                left = deadline - time.monotonic()
                if left < 1:
                    results[name] = result.result(name, 'skip', 'not run: the time budget of %g s was used up' %
                                                  opts['timeout'], {'budget_exhausted': True})
                    said(path, name, results[name])
                    continue
                one = time.monotonic()
                try:
                    # the check's own deadline (CLOCK_MONOTONIC is the machine's: the child reads the same clock),
                    # a little before the child is killed, so that a long check stops and cleans up by itself
                    child_opts = dict(opts, deadline=time.monotonic() + left - min(10.0, left / 10))
                    results[name] = procs.run_in_child(_run_check, (name, workdir, child_opts), timeout=left)
                except (procs.ChildError, OSError) as exc:
                    why = str(exc)
                    if 'no answer' in why:
                        why = 'did not finish within the time budget (%.0f s left): the filesystem hangs?' % left
                    results[name] = result.result(name, 'fail', why, {}, time.monotonic() - one)
                said(path, name, results[name])
                if results[name]['evidence'].get('error') in FULL:
                    filled = name
                    break
        finally:
            for sig in old_handlers:
                signal.signal(sig, signal.SIG_IGN)
            try:
                procs.run_in_child(workdirs.remove, (workdir,), timeout=cleanup_timeout(opts))
            except (procs.ChildError, OSError) as exc:
                cleanup = 'failed: %s' % exc
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    if filled:
        raise ProbeError('%s ran out of space or inodes during the %s check (%s): the filesystem is full; '
                         'free some space and probe again (work directory %s)' % (
                             path, filled, results[filled]['evidence']['error'], cleanup))
    for name in CHECK_NAMES:
        results.setdefault(name, result.result(name, 'skip', 'not selected'))
    decision = verdict.decide(results)
    usage = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {
        'path': path, 'real_path': real, 'verdict': decision['verdict'], 'reasons': decision['reasons'],
        'identity': results.get('identity', {}).get('evidence', {}),
        'checks': results, 'workdir': workdir, 'workdir_cleanup': cleanup, 'leftovers': leftovers,
        'leftovers_removed': removed, 'fsx_seed': opts['fsx_seed'],
        'duration': round(time.monotonic() - started, 3), 'peak_rss_kib': usage,
    }
