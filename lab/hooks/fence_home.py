# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The built-in lab's fence device: "power off" one lab host as far as one backend instance goes.

    warm_spare_lab_fence.py --netns cyha-be1 --imapd-conf /etc/cyrus-ha/be1/imapd.conf \
        --mount /srv/cyrus-ha/be1 --address 198.51.100.121/24

Runs on the lab machine (where the host namespaces are), as root. In order: cuts the host's link
(eth0 down), kills the instance's processes in that host's network namespace by PID (SIGKILL),
unmounts the volume inside the host's mount namespace (killing whatever else still holds it), waits
until the kernel has let the block device go (its MMP heartbeat has stopped: the unmount's final
writeback can take seconds on a slow disk), and deletes the service address there (a powered-off
node holds no runtime address when it comes back). Prints one JSON object
(changed, steps). Python 3.9+, standard library only.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import time


def netns_pids(netns: str) -> list[int]:
    inode = os.stat(f'/run/netns/{netns}').st_ino
    pids = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                if os.stat(f'/proc/{entry}/ns/net').st_ino == inode:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def carries_conf(pid: int, conf: str) -> bool:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as handle:
            argv = handle.read().split(b'\0')
    except OSError:
        return False
    return any(a == b'-C' and b == conf.encode() for a, b in zip(argv, argv[1:]))


def holders(mnt_inode: int, mountpoint: str) -> list[int]:
    """PIDs in the mount namespace mnt_inode with a file, directory or mapping under mountpoint."""
    prefix = mountpoint.rstrip('/') + '/'
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        base = f'/proc/{entry}'
        try:
            if os.stat(f'{base}/ns/mnt').st_ino != mnt_inode:
                continue
            paths = [os.readlink(f'{base}/cwd'), os.readlink(f'{base}/root')]
            for fd in os.listdir(f'{base}/fd'):
                try:
                    paths.append(os.readlink(f'{base}/fd/{fd}'))
                except OSError:
                    continue
            with open(f'{base}/maps', encoding='utf-8', errors='replace') as handle:
                paths += [line.split(None, 5)[5].strip() for line in handle if len(line.split(None, 5)) == 6]
        except OSError:
            continue
        if any(p == mountpoint or p.startswith(prefix) for p in paths):
            found.append(int(entry))
    return found


def mount_namespaces(netns: str, victims: list[int], mountpoint: str) -> list[tuple[int, str]]:
    """The mount namespaces of the host's surviving processes where mountpoint is mounted: an open
    handle on each (it keeps the namespace while we work in it, whatever its processes do) and the
    MAJ:MIN of the device mounted there."""
    found, seen = [], set()
    for pid in sorted(set(netns_pids(netns)) - set(victims)):
        try:
            handle = os.open(f'/proc/{pid}/ns/mnt', os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue                    # gone meanwhile
        inode = os.fstat(handle).st_ino
        try:
            if inode in seen:
                raise LookupError(inode)
            with open(f'/proc/{pid}/mountinfo', encoding='utf-8') as info:
                devno = next((f[2] for f in (line.split() for line in info) if f[4] == mountpoint), None)
            seen.add(inode)
            if devno is None:
                raise LookupError(mountpoint)
        except (OSError, LookupError):
            os.close(handle)            # seen already, not mounted there, or the process went meanwhile
            continue
        found.append((handle, devno))
    return found


def unmount(args, handle: int) -> None:
    """Unmount the volume in the host's mount namespace, killing whatever still holds it (a power-off
    spares nothing). A plain umount returns once the kernel has let the filesystem go (MMP stopped)."""
    deadline = time.monotonic() + args.timeout
    mnt_inode = os.fstat(handle).st_ino
    while True:
        umount = subprocess.run(['nsenter', f'--mount=/proc/self/fd/{handle}', 'umount', args.mountpoint],
                                capture_output=True, text=True, check=False, pass_fds=(handle,))
        if umount.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f'cannot unmount {args.mountpoint} in {args.netns}: {umount.stderr.strip()}')
        for pid in holders(mnt_inode, args.mountpoint):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def wait_released(devno: str, timeout: float) -> float:
    """Wait until no mount holds block device devno (MAJ:MIN): an exclusive open succeeds then.
    Returns the seconds waited."""
    started = time.monotonic()
    major, minor = (int(x) for x in devno.split(':'))
    try:
        with open(f'/sys/dev/block/{devno}/uevent', encoding='utf-8') as handle:
            name = dict(line.strip().split('=', 1) for line in handle if '=' in line)['DEVNAME']
    except (OSError, KeyError):
        return 0.0
    path = f'/dev/{name}'
    if not os.path.exists(path) or os.major(os.stat(path).st_rdev) != major or os.minor(os.stat(path).st_rdev) != minor:
        return 0.0
    while True:
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_EXCL))
            return time.monotonic() - started
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() - started > timeout:
                raise RuntimeError(f'{path} is still held {time.monotonic() - started:.1f} s after the unmount: {exc}') from exc
        time.sleep(0.05)


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def fence(args) -> dict:
    steps = []
    link = json.loads(run(['ip', '-n', args.netns, '-j', 'link', 'show', 'dev', args.interface]).stdout or '[]')
    if link and 'UP' in link[0].get('flags', []):
        run(['ip', '-n', args.netns, 'link', 'set', args.interface, 'down'])
        steps.append(f'link {args.interface} of {args.netns} cut')
    victims = [pid for pid in netns_pids(args.netns) if carries_conf(pid, args.imapd_conf)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while [p for p in netns_pids(args.netns) if carries_conf(p, args.imapd_conf)] and time.monotonic() < deadline:
        time.sleep(0.02)
    if victims:
        steps.append(f'killed {len(victims)} processes of the instance')
    for handle, devno in mount_namespaces(args.netns, victims, args.mountpoint):
        try:
            unmount(args, handle)
        finally:
            os.close(handle)
        seconds = wait_released(devno, args.timeout)
        steps.append(f'{args.mountpoint} unmounted in {args.netns}, device {devno} released after {seconds:.2f} s')
    if run(['ip', '-n', args.netns, 'addr', 'del', args.address, 'dev', args.interface]).returncode == 0:
        steps.append(f'{args.address} deleted in {args.netns}')
    return {'changed': bool(steps), 'steps': steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--netns', required=True)
    parser.add_argument('--interface', default='eth0')
    parser.add_argument('--imapd-conf', required=True)
    parser.add_argument('--mount', dest='mountpoint', required=True)
    parser.add_argument('--address', required=True)
    parser.add_argument('--timeout', type=float, default=60.0)
    args = parser.parse_args()
    try:
        result = fence(args)
    except (OSError, RuntimeError) as exc:
        print(json.dumps({'changed': False, 'failed': True, 'msg': str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
