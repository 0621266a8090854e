# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start, stop and inspect one Cyrus instance's master without a service manager.

    python3 cyrus_instance_ctl.py ACTION --imapd-conf F --cyrus-conf F --pidfile F --master BIN
                                  [--address IP ...] [--check] [--timeout SECONDS]

ACTION is status, layout, prepare, start, stop, restart, kill or take-address (layout creates the --directory
paths, owned by --user/--group, mode 0750; prepare creates the run-time directories; kill is a
crash for failover drills: SIGKILL to every process of the instance, the pidfile left behind; take-address,
run by the systemd unit before master at boot, adds the instance's own service address --address IP/PREFIX
[--interface IF] after a conflict probe, refusing an address another host answers). The answer is one JSON object on stdout
(changed, state, pid, msg); the exit status is 0 unless the action failed. The instance is
identified by its pidfile and by its imapd.conf path, which every process of the instance
carries after -C: processes of other instances on the same machine are never touched.
Python 3.9+, standard library only (it runs on the managed node). The cyrus_instance role installs it
in the support directory (/usr/local/lib/cyrus-ha) beside the collection's module_utils it imports:
the instance conventions (cyrusinstance.py, procfs.py), the imapd.conf parser (cyrusconf.py) and the
test hook (testhook.py).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import grp
import signal
import socket
import subprocess
import sys
import time

try:
    from ansible_collections.cyrus.ha.plugins.module_utils import announce, cyrusinstance, procfs, testhook
    from ansible_collections.cyrus.ha.plugins.module_utils.cyrusconf import SOCKET_KEYS, parse_imapd_lines
except ImportError:   # installed: the module_utils are beside this file, in the support directory
    import announce
    import cyrusinstance
    import procfs
    import testhook
    from cyrusconf import SOCKET_KEYS, parse_imapd_lines

RUN_KEYS = ('proc_path', 'mboxname_lockpath')
# The step boundaries of testhook.kill_point (CYRUS_HA_TEST_KILL_AT), where tests interrupt a run: the next
# run of the same action finishes it (a started master is found by its pidfile and -C; a stop or kill
# goes on with the processes left). A pidfile whose process is gone is never trusted (master_pid).
STEPS = ('prepared', 'spawned', 'signalled', 'reaped', 'killed-first')


def read_imapd_conf(path: str) -> dict[str, str]:
    """The options of an imapd.conf (keys lower-cased, as Cyrus reads them); RuntimeError naming the
    file and line when it does not parse."""
    with open(path, encoding='utf-8', newline='') as handle:
        conf, problems = parse_imapd_lines(handle.read(), path)
    if problems:
        raise RuntimeError(f'{path} does not parse: ' + '; '.join(str(p) for p in problems))
    return conf.options


def master_pid(args) -> int | None:
    """The PID of this instance's running master (cyrusinstance.master_status: the pidfile, checked
    against /proc for a live master binary carrying -C imapd.conf); None when it does not run."""
    names = cyrusinstance.MASTER_NAMES + (os.path.basename(args.master),)
    status = cyrusinstance.master_status(args.pidfile, args.imapd_conf, args.proc_root, names)
    return status['pid'] if status['running'] else None


def instance_pids(args) -> list[int]:
    """Every live process started for this instance (its master and the services it forked) on this
    node: processes in another network namespace are another node's copy of the instance (a warm
    spare's, when nodes share a PID namespace) and are never counted."""
    return cyrusinstance.instance_pids(args.imapd_conf, args.proc_root, exclude=(os.getpid(),))


def address_is_local(address: str) -> bool:
    family = socket.AF_INET6 if ':' in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def take_address(spec: str, interface: str | None, check: bool = False) -> dict:
    """The instance's own service address (IP/PREFIX) on this host, as its unit takes it at boot before master
    binds it: nothing when it is here already; else a conflict probe (ARP, or IPv6 duplicate address detection)
    on the interface that reaches its subnet, refusing an address another host answers, then the address and
    its announcements."""
    address, sep, prefix = spec.partition('/')
    if not sep or not prefix.isdigit():
        raise ValueError(f'take-address needs --address IP/PREFIX, not {spec!r}')
    # the kernel's own list (a bind() test would pass for any address with ip_nonlocal_bind set)
    links = json.loads(subprocess.run(['ip', '-j', 'addr', 'show'], capture_output=True, text=True, check=True,
                                      timeout=10).stdout or '[]')
    if address.lower() in {a.get('local', '').lower() for link in links for a in link.get('addr_info', [])}:
        return {'changed': False, 'state': 'present', 'pid': None, 'msg': f'{address} is already on this host'}
    if not interface:
        route = json.loads(subprocess.run(['ip', '-j', 'route', 'get', address], capture_output=True, text=True,
                                          check=True, timeout=10).stdout or '[]')
        interface = route[0].get('dev') if route else None
        if not interface or interface == 'lo':
            raise RuntimeError(f'no interface of this host reaches {address}: set the instance\'s interface')
    with open(f'/sys/class/net/{interface}/operstate', encoding='ascii') as handle:
        operstate = handle.read().strip()
    if operstate not in ('up', 'unknown'):
        # a probe on a link that is not forwarding hears nothing and would wrongly find the address free
        raise RuntimeError(f'{interface} is {operstate}: cannot probe for {address}, not taking it')
    with open(f'/sys/class/net/{interface}/address', encoding='ascii') as handle:
        mac = handle.read().strip()
    # RFC 5227's probing: three probes, a second apart
    seen = announce.probe(interface, mac, address, count=3, timeout=3.0)
    if seen['conflict']:
        raise RuntimeError(f'{address} answers from {seen["mac"]} on {interface}: another host holds the service '
                           'address, refusing to take it (and to start the instance)')
    if check:
        return {'changed': True, 'state': 'present', 'pid': None, 'msg': f'{address} would be added on {interface}'}
    extra = ['nodad'] if ':' in address else []
    subprocess.run(['ip', 'addr', 'add', f'{address}/{prefix}', 'dev', interface, *extra], check=True, timeout=10,
                   capture_output=True)
    announce.announce(interface, mac, address, count=3, interval=0.2)
    return {'changed': True, 'state': 'present', 'pid': None, 'msg': f'{address}/{prefix} added on {interface}'}


def make_dirs(paths: list[str], user: str, group: str, check: bool = False) -> list[str]:
    """Create each directory (and its parents) owned by user:group with mode 0750; return
    the ones created or corrected."""
    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    changed = []
    for path in dict.fromkeys(paths):
        if not os.path.isabs(path):
            raise RuntimeError(f'directory {path!r} is not an absolute path')
        if not os.path.isdir(path):
            changed.append(path)
            if not check:
                os.makedirs(path, mode=0o750)
                os.chown(path, uid, gid)
                os.chmod(path, 0o750)
            continue
        stat = os.stat(path)
        if (stat.st_uid, stat.st_gid, stat.st_mode & 0o7777) != (uid, gid, 0o750):
            changed.append(path)
            if not check:
                os.chown(path, uid, gid)
                os.chmod(path, 0o750)
    return changed


def prepare(args) -> list[str]:
    """Create the run-time directories (under /run, gone after a reboot) the instance needs."""
    options = read_imapd_conf(args.imapd_conf)
    wanted = [os.path.dirname(args.pidfile)]
    wanted += [options[k] for k in RUN_KEYS if k in options]
    wanted += [os.path.dirname(options[k]) for k in SOCKET_KEYS if k in options]
    return make_dirs(wanted, args.user, args.group, args.check)


def syslog_prefix(path: str) -> str:
    """The instance's syslog_prefix, for messages ('cyrus' when the file does not tell)."""
    try:
        return read_imapd_conf(path).get('syslog_prefix', 'cyrus')
    except (OSError, RuntimeError):
        return 'cyrus'


def start(args) -> dict:
    pid = master_pid(args)
    if pid:
        return {'changed': False, 'state': 'started', 'pid': pid, 'msg': 'master is running'}
    missing = [a for a in args.address if not address_is_local(a)]
    if missing:
        raise RuntimeError(f'service address {", ".join(missing)} is not configured on this host: '
                           'take the address up before starting the instance')
    if args.check:
        return {'changed': True, 'state': 'started', 'pid': None, 'msg': 'master would be started'}
    prepare(args)
    testhook.kill_point('prepared')
    argv = [args.master, '-C', args.imapd_conf, '-M', args.cyrus_conf, '-p', args.pidfile, '-d']
    with open(os.devnull, 'r+b') as null:
        # A new session: master outlives the SSH session that started it.
        proc = subprocess.run(argv, stdin=null, stdout=null, stderr=null, start_new_session=True,
                              timeout=args.timeout, check=False)
    testhook.kill_point('spawned')
    deadline = time.monotonic() + args.timeout
    pid = master_pid(args)
    while not pid and time.monotonic() < deadline:
        time.sleep(0.05)
        pid = master_pid(args)
    if proc.returncode != 0 or not pid:
        raise RuntimeError(f'master for {args.imapd_conf} did not start (exit status {proc.returncode}): '
                           f'see the syslog lines of {syslog_prefix(args.imapd_conf)}')
    return {'changed': True, 'state': 'started', 'pid': pid, 'msg': 'master started'}


# Cyrus 3.6 to 3.8's master can hang in its clean shutdown after every service process has exited: it
# spins, still counting a child it never reaped (cyrus-imapd#5309; seen here whenever clients' connections
# were open at the stop, so at every busy site). Once it is the instance's last process for this long,
# nothing of the instance runs but master itself, and it is killed rather than waited for until the timeout.
# A healthy master exits within milliseconds of reaping its last child and holds no mail data of its own, so
# killing it then loses nothing; every moment waited here is an outage (2 s was measured in half the planned
# drills under a prober's traffic before this was 0.5 s).
MASTER_ALONE_GRACE = 0.5


def live_children(pid: int, proc_root: str) -> list[int]:
    """Master's children that still run (a zombie it never reaped is not one), whatever their command line:
    a service of a hand-written cyrus.conf without -C would be invisible to instance_pids."""
    kids = []
    task_dir = os.path.join(proc_root, str(pid), 'task')
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return []
    for tid in tids:
        try:
            with open(os.path.join(task_dir, tid, 'children'), encoding='ascii') as handle:
                kids += [int(x) for x in handle.read().split()]
        except (OSError, ValueError):
            continue
    return [kid for kid in kids if procfs.state(kid, proc_root) not in ('Z', 'X', '')]


def stop(args) -> dict:
    pid = master_pid(args)
    others = instance_pids(args)
    if not pid and not others:
        return {'changed': False, 'state': 'stopped', 'pid': None, 'msg': 'master is not running'}
    if args.check:
        return {'changed': True, 'state': 'stopped', 'pid': pid, 'msg': 'master would be stopped'}
    if pid:
        os.kill(pid, signal.SIGTERM)
        testhook.kill_point('signalled')
    deadline = time.monotonic() + args.timeout
    alone_since, hung = None, False
    left = instance_pids(args)
    while left and time.monotonic() < deadline:
        if pid and left == [pid] and not live_children(pid, args.proc_root):
            alone_since = alone_since if alone_since is not None else time.monotonic()
            if time.monotonic() - alone_since >= MASTER_ALONE_GRACE:
                hung = True
                break
        else:
            alone_since = None
        time.sleep(0.05)
        left = instance_pids(args)
    for left in instance_pids(args):
        os.kill(left, signal.SIGKILL)
    while instance_pids(args):
        time.sleep(0.05)
    testhook.kill_point('reaped')
    try:
        os.unlink(args.pidfile)
    except FileNotFoundError:
        pass
    msg = 'master stopped'
    if hung:
        msg += (f' (every service had exited and master still ran {MASTER_ALONE_GRACE:g} s later, hung in its '
                'shutdown: killed)')
    return {'changed': True, 'state': 'stopped', 'pid': pid, 'msg': msg}


def kill(args) -> dict:
    """A crash, for drills: SIGKILL to the master and every service of the instance at once."""
    victims = instance_pids(args)
    if not victims:
        return {'changed': False, 'state': 'stopped', 'pid': None, 'msg': 'no process of the instance runs'}
    if args.check:
        return {'changed': True, 'state': 'killed', 'pid': master_pid(args), 'msg': 'would be killed'}
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        testhook.kill_point('killed-first')
    deadline = time.monotonic() + args.timeout
    while instance_pids(args) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {'changed': True, 'state': 'killed', 'pid': None, 'msg': f'killed {len(victims)} processes',
            'killed': sorted(victims)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('action', choices=('status', 'layout', 'prepare', 'start', 'stop', 'restart', 'kill',
                                           'take-address'))
    parser.add_argument('--imapd-conf')
    parser.add_argument('--cyrus-conf')
    parser.add_argument('--pidfile')
    parser.add_argument('--master')
    parser.add_argument('--interface')
    parser.add_argument('--directory', action='append', default=[])
    parser.add_argument('--address', action='append', default=[])
    parser.add_argument('--user', default='cyrus')
    parser.add_argument('--group', default='mail')
    parser.add_argument('--timeout', type=float, default=30.0)
    parser.add_argument('--check', action='store_true', help='report what would change, change nothing')
    parser.add_argument('--proc-root', default='/proc', help=argparse.SUPPRESS)   # a recorded /proc, for tests
    args = parser.parse_args(argv)
    if args.action == 'take-address':
        if len(args.address) != 1:
            parser.error('take-address needs one --address IP/PREFIX')
    else:
        missing = [f'--{k.replace("_", "-")}' for k in ('imapd_conf', 'cyrus_conf', 'pidfile', 'master')
                   if not getattr(args, k)]
        if missing:
            parser.error(f'{args.action} needs {", ".join(missing)}')
    try:
        if args.action == 'take-address':
            result = take_address(args.address[0], args.interface, args.check)
        elif args.action == 'status':
            pid = master_pid(args)
            result = {'changed': False, 'state': 'started' if pid else 'stopped', 'pid': pid,
                      'msg': 'master is running' if pid else 'master is not running'}
        elif args.action == 'layout':
            made = make_dirs(args.directory, args.user, args.group, args.check)
            result = {'changed': bool(made), 'state': 'laid out', 'pid': None, 'msg': ' '.join(made)}
        elif args.action == 'prepare':
            made = prepare(args)
            result = {'changed': bool(made), 'state': 'prepared', 'pid': None, 'msg': ' '.join(made)}
        elif args.action == 'start':
            result = start(args)
        elif args.action == 'stop':
            result = stop(args)
        elif args.action == 'kill':
            result = kill(args)
        else:
            stopped = stop(args)
            result = start(args) if not args.check else dict(stopped, state='started', msg='master would be restarted')
            result['changed'] = True
    except (OSError, RuntimeError, KeyError, ValueError, subprocess.SubprocessError, announce.AnnounceError) as exc:
        print(json.dumps({'changed': False, 'failed': True, 'msg': str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
