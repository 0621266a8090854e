# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unattended failover on the lab's Pacemaker cluster (be1 and spare, cyrus.ha.cluster), per failure
kind: the outage alice's prober saw through frontend fe1 (a login and a delivery every 0.1 s: from her last
success before the failure to her first success after it, lab/rigs/cyha_prober.py), beside the bench's own
figures from the failure (polled from the lab machine every 0.05 s): to the service address's IMAP greeting
and to the first IMAP login through fe1. Nothing is done but the injection. Beside it, the same group
(Filesystem, IPaddr2) with ocf:heartbeat:anything running a greeter in place of the Cyrus instance, on the
same rig: what the cluster alone costs, and what the Cyrus instance adds.

With --settings, the timing table instead: for each setting of Corosync's token and consensus and of the fence
ping heuristics (the cluster formed anew with it), node crashes with the clients' outage, and a node that is
only slow (its processes at full CPU on both cores, its processes paused for 60 % of the token, --loss % of its
packets dropped both ways for 10 s, 30 by default): any failover, fence or restart there is a false failover.

The lab must be up and deployed with the warm-spare pairs (`make lab`); the bench forms the cluster
(playbooks/cluster.yml) when it is not formed, and leaves it running (with --settings, as the lab forms it).
Every failed node is brought back and rejoins before the next round. Nothing here is a test: it prints medians.

Usage (root, repository root): .venv/bin/python bench/cluster_bench.py [--rounds 5]
    [--kinds node-crash,node-hang,link-down,instance-killed] [--anything-rounds 5] [--json FILE]
    [--settings token=1000,token=3000,...] [--slow-kinds cpu-busy,pause,packet-loss] [--loss 30]
A setting is token=MS[/consensus=MS][/ping=COUNT|/ping=off], for example token=1000/ping=1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'lab', 'rigs'))

import cyha_cluster as lab  # noqa: E402  (the tests' rig for the lab cluster)
import cyha_prober  # noqa: E402  (alice's prober through fe1)
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
        subprocess.run(['ip', '-n', f'cyha-{victim}', 'link', 'set', 'eth0', 'up'], check=False)
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
    prober = cyha_prober.Prober() if with_login else None
    if prober:
        prober.__enter__()
        time.sleep(1)                       # a second of successes before the failure
    injected = time.time()
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
        if prober:
            time.sleep(1)                   # a second of successes after it
            prober.stop()
            seen = prober.outage(injected)
            row.update(client_login_s=seen['login'], client_deliver_s=seen['deliver'], client_lost=seen['lost'])
        if with_login:
            row['canary_found'] = lab.canary_count(subject) == 1
    finally:
        restore(failure, victim, survivor)
    return row


# -- the timing table: settings against crash failover and slow nodes ------------------------------------

SLOW_KINDS = ('cpu-busy', 'pause', 'packet-loss')


def parse_setting(text: str) -> dict:
    """token=MS[/consensus=MS][/ping=COUNT|off] -> the cluster role's variables for it."""
    setting = {'cluster_token': None, 'cluster_consensus': 0, 'cluster_fence_ping_count': 2}
    for part in text.split('/'):
        key, _sep, value = part.partition('=')
        if key == 'token':
            setting['cluster_token'] = int(value)
        elif key == 'consensus':
            setting['cluster_consensus'] = int(value)
        elif key == 'ping' and value == 'off':
            setting['cluster_fence_ping_targets'] = []
        elif key == 'ping':
            setting['cluster_fence_ping_count'] = int(value)
        else:
            raise SystemExit(f'a setting is token=MS[/consensus=MS][/ping=COUNT|off], not {text!r}')
    if not setting['cluster_token']:
        raise SystemExit(f'a setting needs token=MS: {text!r}')
    return setting


def form(setting: dict) -> None:
    """The cluster formed anew with this setting (no CIB or corosync.conf left from the one before)."""
    lab.wipe()
    proc = lab.play('-e', json.dumps(setting), check=False)
    if proc.returncode != 0:
        raise SystemExit(f'forming the cluster with {setting} failed:\n{proc.stdout[-3000:]}')
    if not labutil.poll(lambda: lab.active() and lab.both_online('be1') and lab.login_works(), lab.JOIN_TIMEOUT, 0.5):
        raise SystemExit(f'the cluster with {setting} did not start be1\'s instance')


def cluster_state() -> dict:
    """What a false failover changes: where the instance runs, and each node's pacemakerd (a fenced or
    restarted node has a new one, or none)."""
    return {'active': lab.active(), 'pacemakerd': {node: lab.pacemakerd_pid(node) for node in lab.NODES}}


def nft(node: str, *rules: str) -> None:
    subprocess.run(['ip', 'netns', 'exec', f'cyha-{node}', 'nft', *rules], check=True, capture_output=True)


def slow_round(kind: str, token_ms: int, loss: int = 30) -> dict:
    """The active node only slow for a while: nothing may move, be fenced or restart."""
    node = lab.active()
    if node not in lab.NODES:
        raise SystemExit('the service does not run on exactly one node')
    before = cluster_state()
    prober = cyha_prober.Prober()
    busy = []
    with prober:
        time.sleep(1)
        injected = time.time()
        if kind == 'cpu-busy':
            # as many spinning processes as the machine has cores, twice over, in the node for 15 s
            loop = ['ip', 'netns', 'exec', f'cyha-{node}', sys.executable, '-c', 'while True: pass']
            busy = [subprocess.Popen(loop) for _core in range(2 * (os.cpu_count() or 2))]
            time.sleep(15)
            for proc in busy:
                proc.kill()
                proc.wait()
        elif kind == 'pause':
            pids = lab.netns_pids(node)
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            time.sleep(0.6 * token_ms / 1000)
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        else:
            nft(node, 'add', 'table', 'inet', 'cyha_loss')
            for hook in ('input', 'output'):
                nft(node, 'add', 'chain', 'inet', 'cyha_loss', hook, f'{{ type filter hook {hook} priority 0; }}')
                nft(node, 'add', 'rule', 'inet', 'cyha_loss', hook, 'numgen', 'random', 'mod', '100', '<', str(loss),
                    'drop')
            time.sleep(10)
            nft(node, 'delete', 'table', 'inet', 'cyha_loss')
        time.sleep(3 * token_ms / 1000 + 5)  # long enough for a membership change and a move to show
    after = cluster_state()
    seen = prober.outage(injected)
    false = after != before
    row = {'slow': kind, 'node': node, 'false_failover': false, 'before': before, 'after': after,
           'client_login_s': seen['login'], 'client_deliver_s': seen['deliver'], 'client_lost': seen['lost']}
    if false:                               # bring the cluster back as it was for the next round
        labutil.lab_up()
        for other in lab.NODES:
            if not lab.pacemakerd_pid(other):
                lab.rejoin(other)
    return row


def settings_table(settings: list[str], rounds: int, slow_kinds: list[str], loss: int = 30) -> list[dict]:
    rows = []
    for text in settings:
        setting = parse_setting(text)
        form(setting)
        for index in range(rounds):
            row = one_round('node-crash')
            rows.append(dict(row, setting=text, round=index))
            print(json.dumps(rows[-1]), flush=True)
        for kind in slow_kinds:
            row = slow_round(kind, setting['cluster_token'], loss)
            rows.append(dict(row, setting=text))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def print_settings(rows: list[dict], slow_kinds: list[str]) -> None:
    print('\n| setting | node crash: login outage (clients) | delivery outage (clients) | first login (bench poll) | '
          + ' | '.join(f'{k}: false failovers (login outage)' for k in slow_kinds) + ' |')
    print('|---|---|---|---|' + '---|' * len(slow_kinds))
    for text in dict.fromkeys(r['setting'] for r in rows):
        crashes = [r for r in rows if r['setting'] == text and r.get('failure') == 'node-crash']
        cells = [summary(crashes, 'client_login_s'), summary(crashes, 'client_deliver_s'), summary(crashes, 'login_s')]
        for kind in slow_kinds:
            slow = [r for r in rows if r['setting'] == text and r.get('slow') == kind]
            cells.append(f'{sum(r["false_failover"] for r in slow)}/{len(slow)} '
                         f'({max((r["client_login_s"] for r in slow), default=0):.2f} s)' if slow else '-')
        print(f'| {text} | ' + ' | '.join(cells) + ' |')


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
    """Median (min-max, n) of one figure over rows."""
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
    parser.add_argument('--settings', help='the timing table: comma-separated settings, token=MS[/consensus=MS]'
                                           '[/ping=COUNT|off]; node crashes (--rounds) and slow nodes for each')
    parser.add_argument('--slow-kinds', default=','.join(SLOW_KINDS))
    parser.add_argument('--loss', type=int, default=30, help='percent of packets packet-loss drops (both ways, 10 s)')
    args = parser.parse_args()
    # every node up (a node a previous run left fenced boots again) and in the cluster
    labutil.lab_up()
    if not os.path.exists('/etc/cyrus-ha/be1/imapd.conf'):
        raise SystemExit('be1\'s instance is not deployed on the lab: run `make lab` first')
    if not all(lab.pacemakerd_pid(node) for node in lab.NODES):
        lab.play()
        if not labutil.poll(lambda: lab.active() and lab.login_works(), lab.JOIN_TIMEOUT, 0.5):
            raise SystemExit('the cluster did not start be1\'s instance')
    if args.settings:
        slow_kinds = [k for k in args.slow_kinds.split(',') if k]
        try:
            rows = settings_table(args.settings.split(','), args.rounds, slow_kinds, args.loss)
        finally:
            form(parse_setting('token=1000'))        # the lab's own setting again (lab/vars/cluster.yml)
        print_settings(rows, slow_kinds)
        if args.json:
            with open(args.json, 'w', encoding='utf-8') as handle:
                json.dump(rows, handle, indent=2)
        return 0
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
    print('\n| service | failure | clients: login outage | clients: delivery outage | bench poll: greeting on the '
          'service address | bench poll: first IMAP login through fe1 | canaries |')
    print('|---|---|---|---|---|---|---|')
    for service in ('cyrus', 'anything'):
        for kind in lab.FAILURES:
            subset = [r for r in rows if r['service'] == service and r['failure'] == kind]
            if subset:
                found = sum(1 for r in subset if r.get('canary_found'))
                canaries = f'{found}/{len(subset)} rounds intact' if service == 'cyrus' else '-'
                print(f'| {service} | {kind} | {summary(subset, "client_login_s")} | '
                      f'{summary(subset, "client_deliver_s")} | {summary(subset, "greeting_s")} | '
                      f'{summary(subset, "login_s")} | {canaries} |')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
