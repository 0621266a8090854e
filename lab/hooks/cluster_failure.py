# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inject one failure into a node of the built-in lab's cluster, from the lab machine (root).

    python3 cluster_lab_failure.py --failure KIND --host NAME [--instance NAME]

node-crash: the lab's power switch (fence_cyhalab off: the link goes dark, every process dies);
node-hang: SIGSTOP to every process of the host; link-down: the host's link goes down;
instance-killed: SIGKILL to every process of the Cyrus instance on that host. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys


def netns_pids(host: str) -> list[int]:
    out = subprocess.run(['ip', 'netns', 'pids', f'cyha-{host}'], capture_output=True, text=True,
                         check=True).stdout
    return [int(p) for p in out.split()]


def instance_pids(host: str, instance: str) -> list[int]:
    conf = f'/etc/cyrus-ha/{instance}/imapd.conf'.encode()
    found = []
    for pid in netns_pids(host):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as handle:
                argv = handle.read().split(b'\0')
        except OSError:
            continue
        if any(a == b'-C' and b == conf for a, b in zip(argv, argv[1:])):
            found.append(pid)
    return found


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--failure', required=True, choices=['node-crash', 'node-hang', 'link-down', 'instance-killed'])
    parser.add_argument('--host', required=True)
    parser.add_argument('--instance', default='be1')
    args = parser.parse_args()
    if args.failure == 'node-crash':
        subprocess.run(['/usr/sbin/fence_cyhalab', '-o', 'off', '-n', args.host], check=True, stdin=subprocess.DEVNULL)
        victims = []
    elif args.failure == 'node-hang':
        victims = netns_pids(args.host)
        signal_all(victims, signal.SIGSTOP)
    elif args.failure == 'link-down':
        subprocess.run(['ip', '-n', f'cyha-{args.host}', 'link', 'set', 'eth0', 'down'], check=True)
        victims = []
    else:
        victims = instance_pids(args.host, args.instance)
        signal_all(victims, signal.SIGKILL)
    print(json.dumps({'changed': True, 'failure': args.failure, 'host': args.host, 'signalled': len(victims)}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
