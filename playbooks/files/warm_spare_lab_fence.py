# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The built-in lab's fence device: "power off" one lab host as far as one backend instance goes.

    warm_spare_lab_fence.py --netns cyha-be1 --imapd-conf /etc/cyrus-ha/be1/imapd.conf \
        --mount /srv/cyrus-ha/be1 --address 198.51.100.121/24

Runs on the lab machine (where the host namespaces are), as root. In order: cuts the host's link
(eth0 down), kills the instance's processes in that host's network namespace by PID (SIGKILL),
lazily unmounts the volume inside the host's mount namespace (with the instance dead nothing holds
it, so the kernel unmounts it cleanly and stops updating MMP), and deletes the service address
there (a powered-off node holds no runtime address when it comes back). Prints one JSON object
(changed, steps). Python 3.9+, standard library only.
"""

from __future__ import annotations

import argparse
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
    anchor = next(iter(sorted(netns_pids(args.netns))), None)
    if anchor is not None:
        mnt = f'/proc/{anchor}/ns/mnt'
        if run(['nsenter', f'--mount={mnt}', 'findmnt', '-n', args.mount]).returncode == 0:
            umount = run(['nsenter', f'--mount={mnt}', 'umount', '-l', args.mount])
            if umount.returncode != 0:
                raise RuntimeError(f'cannot unmount {args.mount} in {args.netns}: {umount.stderr.strip()}')
            steps.append(f'{args.mount} unmounted in {args.netns}')
    if run(['ip', '-n', args.netns, 'addr', 'del', args.address, 'dev', args.interface]).returncode == 0:
        steps.append(f'{args.address} deleted in {args.netns}')
    return {'changed': bool(steps), 'steps': steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--netns', required=True)
    parser.add_argument('--interface', default='eth0')
    parser.add_argument('--imapd-conf', required=True)
    parser.add_argument('--mount', required=True)
    parser.add_argument('--address', required=True)
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
