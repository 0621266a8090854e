# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start, stop and inspect Corosync and Pacemaker on a node without a service manager.

    python3 cluster_ctl.py status|start|stop [--timeout SECONDS] [--check]

For hosts where systemd does not run (containers, the built-in lab). start runs `corosync -f`,
waits until the ring answers (corosync-cfgtool -s), then runs pacemakerd, both in a session of their
own; stop asks pacemakerd to shut down, waits for it to exit (stopping Corosync first would get the
node fenced by its peer), then shuts Corosync down. The processes are those of THIS node: same
network and mount namespace as the caller. The answer is one JSON object on stdout
(changed, state, pids, msg); the exit status is 0 unless the action failed.
Python 3.9+, standard library only. Installed in the support directory (/usr/local/lib/cyrus-ha) beside
the collection's procfs.py, the one reader of /proc/<pid>/stat.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

try:
    from ansible_collections.cyrus.ha.plugins.module_utils import procfs
except ImportError:   # installed: procfs.py is beside this file, in the support directory
    import procfs

DAEMONS = ('corosync', 'pacemakerd')
# Where each daemon's own output goes (their logs proper go to syslog and their log files).
OUTPUT = {'corosync': '/var/log/corosync/corosync.out', 'pacemakerd': '/var/log/pacemaker/pacemakerd.out'}


def same_node(pid: int, proc_root: str = procfs.PROC) -> bool:
    """Whether a process shares the caller's network and mount namespaces (this node's, in the lab)."""
    for kind in ('net', 'mnt'):
        theirs = procfs.namespace(pid, kind, proc_root)
        if theirs is None or theirs != procfs.namespace('self', kind, proc_root):
            return False
    return True


def daemon_pid(name: str, proc_root: str = procfs.PROC):
    """The PID of this node's live process whose comm is name, None when there is none."""
    for pid in procfs.pids(proc_root):
        found = procfs.read_stat(pid, proc_root)
        if found is not None and found.comm == name and found.state not in procfs.GONE_STATES \
                and same_node(pid, proc_root):
            return pid
    return None


def pids(proc_root: str = procfs.PROC) -> dict:
    return {name: daemon_pid(name, proc_root) for name in DAEMONS}


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def ring_up() -> bool:
    return subprocess.run(['corosync-cfgtool', '-s'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          check=False).returncode == 0


def spawn(argv: list) -> None:
    output = OUTPUT[argv[0]]
    os.makedirs(os.path.dirname(output), mode=0o750, exist_ok=True)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        with open(os.devnull, 'rb') as null:
            subprocess.Popen(argv, stdin=null, stdout=fd, stderr=fd, start_new_session=True, close_fds=True)
    finally:
        os.close(fd)


def start(args) -> dict:
    before = pids(args.proc_root)
    if all(before.values()):
        return {'changed': False, 'state': 'started', 'pids': before, 'msg': 'corosync and pacemakerd are running'}
    if args.check:
        return {'changed': True, 'state': 'started', 'pids': before, 'msg': 'the cluster stack would be started'}
    if not before['corosync']:
        spawn(['corosync', '-f'])
    if not wait(ring_up, args.timeout):
        raise RuntimeError(f'corosync did not form its ring within {args.timeout:g} s: see {OUTPUT["corosync"]} '
                           'and the corosync log')
    if not before['pacemakerd']:
        spawn(['pacemakerd'])
    if not wait(lambda: daemon_pid('pacemakerd', args.proc_root), args.timeout):
        raise RuntimeError(f'pacemakerd did not start: see {OUTPUT["pacemakerd"]}')
    return {'changed': True, 'state': 'started', 'pids': pids(args.proc_root), 'msg': 'cluster stack started'}


def stop(args) -> dict:
    before = pids(args.proc_root)
    if not any(before.values()):
        return {'changed': False, 'state': 'stopped', 'pids': before, 'msg': 'the cluster stack is not running'}
    if args.check:
        return {'changed': True, 'state': 'stopped', 'pids': before, 'msg': 'the cluster stack would be stopped'}
    pcmk = before['pacemakerd']
    if pcmk:
        # --shutdown returns at once; the resources move away while pacemakerd winds down
        subprocess.run(['pacemakerd', '--shutdown'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False, timeout=30)
        if not wait(lambda: daemon_pid('pacemakerd', args.proc_root) is None, args.timeout):
            raise RuntimeError(f'pacemakerd (pid {pcmk}) did not stop within {args.timeout:g} s: its resources may '
                               'still be stopping; corosync left running so that the peer does not fence this node')
    coro = daemon_pid('corosync', args.proc_root)
    if coro:
        subprocess.run(['corosync-cfgtool', '-H'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False, timeout=30)
        if not wait(lambda: daemon_pid('corosync', args.proc_root) is None, args.timeout):
            os.kill(coro, signal.SIGTERM)
            if not wait(lambda: daemon_pid('corosync', args.proc_root) is None, 10):
                raise RuntimeError(f'corosync (pid {coro}) did not stop')
    return {'changed': True, 'state': 'stopped', 'pids': before, 'msg': 'cluster stack stopped'}


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description='Corosync and Pacemaker without a service manager')
    parser.add_argument('action', choices=['status', 'start', 'stop'])
    parser.add_argument('--timeout', type=float, default=120)
    parser.add_argument('--check', action='store_true')
    parser.add_argument('--proc-root', default=procfs.PROC, help=argparse.SUPPRESS)   # a recorded /proc, for tests
    args = parser.parse_args(argv)
    try:
        if args.action == 'status':
            now = pids(args.proc_root)
            state = 'started' if all(now.values()) else 'stopped' if not any(now.values()) else 'partial'
            result = {'changed': False, 'state': state, 'pids': now, 'msg': f'cluster stack {state}'}
        else:
            result = (start if args.action == 'start' else stop)(args)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(json.dumps({'changed': True, 'failed': True, 'msg': str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
