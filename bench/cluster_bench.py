# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unattended failover on the lab's Pacemaker cluster (be1 and spare, cyrus.ha.cluster), per failure
kind: from the failure to the service address's IMAP greeting and to the first IMAP login through
frontend fe1, nothing done but the injection. Beside it, the same group (Filesystem, IPaddr2) with
ocf:heartbeat:anything running a greeter in place of the Cyrus instance, on the same rig: what the
cluster alone costs, and what the Cyrus instance adds.

The lab must be up and deployed with the warm-spare pairs (`make lab`); the bench forms the cluster
(playbooks/cluster.yml) when it is not formed, and leaves it running. Every failed node is brought
back and rejoins before the next round. Nothing here is a test: it prints medians.

Usage (root, repository root): .venv/bin/python bench/cluster_bench.py [--rounds 5]
    [--kinds node-crash,node-hang,link-down,instance-killed] [--anything-rounds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'lab', 'rigs'))

import cyha_cluster as lab  # noqa: E402  (the tests' rig for the lab cluster)
import labutil  # noqa: E402

GREETER = '''import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(16)
while True:
    conn, peer = srv.accept()
    conn.sendall(b'* OK anything greeter ready\\r\\n')
    conn.close()
'''


def greets(address: str = lab.BE1_ADDR, port: int = 143) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.3) as conn:
            conn.settimeout(0.5)
            return conn.recv(64).startswith(b'* OK')
    except OSError:
        return False


def restore(failure: str, victim: str, survivor: str) -> None:
    if failure == 'link-down':
        lab.subprocess.run(['ip', '-n', f'cyha-{victim}', 'link', 'set', 'eth0', 'up'], check=False)
    if failure == 'instance-killed':
        lab.crm(survivor, 'crm_resource', '--cleanup')
    else:
        lab.rejoin(victim)
    if not labutil.poll(lambda: lab.both_online(survivor), lab.JOIN_TIMEOUT, interval=0.5):
        raise SystemExit(f'{victim} did not rejoin:\n{lab.crm(survivor, "crm_mon", "-1r").stdout}')


def one_round(failure: str, with_login: bool = True) -> dict:
    victim = lab.active() if with_login else anything_node()
    if victim not in lab.NODES:
        raise SystemExit('the service does not run on exactly one node')
    survivor = lab.NODES[1 - lab.NODES.index(victim)]
    subject = lab.canary() if with_login else None
    started = time.monotonic()
    lab.inject(failure, victim)
    greeted = login = None
    deadline = started + lab.FAILOVER_TIMEOUT
    while time.monotonic() < deadline and (greeted is None or (with_login and login is None)):
        if greeted is None and greets() and (not with_login or lab.active() == survivor):
            greeted = time.monotonic() - started
        if with_login and login is None and lab.active() == survivor and lab.login_works():
            login = time.monotonic() - started
        time.sleep(0.05)
    row = {'failure': failure, 'from': victim, 'to': survivor, 'greeting_s': round(greeted, 2) if greeted else None,
           'login_s': round(login, 2) if login else None}
    try:
        if with_login:
            row['canary_found'] = lab.canary_count(subject) == 1
    finally:
        restore(failure, victim, survivor)
    return row


def anything_node() -> str | None:
    for node in lab.NODES:
        if any('cyha-greeter.py' in _cmdline(pid) for pid in lab.netns_pids(node)):
            return node
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def cib(args: dict) -> None:
    proc = labutil.ansible('be1', 'cyrus.ha.pacemaker_cib', json.dumps(args), check=False)
    if proc.returncode != 0:
        raise SystemExit(f'pacemaker_cib failed:\n{proc.stdout[-3000:]}')


def anything_group(greeter: str, present: bool) -> None:
    """Swap be1's Cyrus group for the same group with a greeter under ocf:heartbeat:anything (or back)."""
    if present:
        lab.crm('be1', 'crm_resource', '--resource', 'cyrus-be1', '--meta', '--set-parameter', 'target-role',
                '--parameter-value', 'Stopped')
        labutil.poll(lambda: lab.active() is None and not any(lab.mounted(n) for n in lab.NODES), 60, 0.5)
        volume = {'id': 'bench-volume', 'agent': 'ocf:heartbeat:Filesystem',
                  'params': {'device': '-L cyha-be1', 'directory': lab.MOUNT, 'fstype': 'ext4'}}
        address = {'id': 'bench-address', 'agent': 'ocf:heartbeat:IPaddr2',
                   'params': {'ip': lab.BE1_ADDR, 'cidr_netmask': 24, 'nic': 'eth0'},
                   'operations': [{'name': 'monitor', 'interval': '10s', 'timeout': '20s'}]}
        service = {'id': 'bench-greeter', 'agent': 'ocf:heartbeat:anything',
                   'params': {'binfile': '/usr/bin/python3', 'cmdline_options': f'{greeter} {lab.BE1_ADDR} 143',
                              'pidfile': '/run/cyha-greeter.pid'},
                   'operations': [{'name': 'monitor', 'interval': '10s', 'timeout': '20s'}]}
        cib({'resources': [{'id': 'bench-anything', 'resources': [volume, address, service]}]})
        if not labutil.poll(lambda: anything_node() and greets(), 60, 0.5):
            raise SystemExit('the anything group did not start')
    else:
        cib({'absent': ['bench-anything']})
        labutil.poll(lambda: not anything_node() and not any(lab.mounted(n) for n in lab.NODES), 60, 0.5)
        # back to the configuration the role made (no target-role left behind)
        lab.crm('be1', 'crm_resource', '--resource', 'cyrus-be1', '--meta', '--delete-parameter', 'target-role')
        labutil.poll(lambda: lab.active() in lab.NODES and lab.login_works(), 90, 0.5)


def summary(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return 'n/a'
    return f'{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f}, n={len(values)})'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--kinds', default=','.join(lab.FAILURES))
    parser.add_argument('--anything-rounds', type=int, default=5)
    parser.add_argument('--json', help='write every round to this file')
    args = parser.parse_args()
    # every node up (a node a previous run left fenced boots again) and in the cluster
    labutil.lab_up()
    if not os.path.exists('/etc/cyrus-ha/be1/imapd.conf'):
        raise SystemExit('be1\'s instance is not deployed on the lab: run `make lab` first')
    if not all(lab.pacemakerd_pid(node) for node in lab.NODES):
        lab.play()
        if not labutil.poll(lambda: lab.active() and lab.login_works(), lab.JOIN_TIMEOUT, 0.5):
            raise SystemExit('the cluster did not start be1\'s instance')
    rows = []
    for index in range(args.rounds):
        for kind in args.kinds.split(','):
            row = one_round(kind)
            rows.append(dict(row, service='cyrus', round=index))
            print(json.dumps(rows[-1]), flush=True)
    greeter = os.path.join(labutil.LAB_DIR, 'cyha-greeter.py')
    if args.anything_rounds:
        with open(greeter, 'w', encoding='utf-8') as handle:
            handle.write(GREETER)
        anything_group(greeter, True)
        try:
            for index in range(args.anything_rounds):
                row = one_round('node-crash', with_login=False)
                rows.append(dict(row, service='anything', round=index))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            anything_group(greeter, False)
            os.unlink(greeter)
    print('\n| service | failure | greeting on the service address | first IMAP login through fe1 | canaries |')
    print('|---|---|---|---|---|')
    for service in ('cyrus', 'anything'):
        for kind in lab.FAILURES:
            subset = [r for r in rows if r['service'] == service and r['failure'] == kind]
            if subset:
                found = sum(1 for r in subset if r.get('canary_found'))
                canaries = f'{found}/{len(subset)} rounds intact' if service == 'cyrus' else '-'
                print(f'| {service} | {kind} | {summary(subset, "greeting_s")} | {summary(subset, "login_s")} '
                      f'| {canaries} |')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
