# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replica pairs on the built-in lab, measured as users see them, beside the shared-volume (SAN) pair.

1. Replication lag under delivery load: LMTP deliveries to dave (be3) through fe1 at --rate per second;
   each acknowledgement's time, against the first time be3's replica (read on the replica host with
   mbexamine, every ~50 ms) holds that message. Once with the collection's sync_repeat_interval (1 s) and
   once with Cyrus's default (3 s), the peer setting.
2. The marker lag (cyrus.ha.cyrus_replication_lag, what playbooks/replication_lag.yml keeps for an unplanned
   promotion): --samples measurements with nothing else running, then as many under the deliveries of 1.
3. Planned moves: --rounds times, be3 promoted to the replica host and back (playbooks/promote.yml), and
   be1 failed over to the spare and back (playbooks/failover.yml / failback.yml), each under a client
   that logs in and SELECTs through fe1 every 100 ms: the runbook's wall time and the clients' outage
   (last success before the move to the first success after it).

The lab must be up with the Murder, the warm-spare pairs and the replica pair deployed (`make lab`).
Nothing here is a test: it prints what it measured.

Usage (root, repository root): .venv/bin/python bench/replication_bench.py [--rounds 5] [--rate 10]
    [--messages 100] [--samples 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'lab', 'rigs'))

import cyha_imap  # noqa: E402
import labutil  # noqa: E402

VARS = ['-e', '@lab/vars/murder.yml', '-e', '@lab/vars/warm_spare.yml', '-e', '@lab/vars/replication.yml']
HOSTS_VARS = ['-e', '@lab/vars/murder_hosts.yml']
FE1 = '198.51.100.111'
USERS = {'be3': ('dave', 'cyha-lab-dave'), 'be1': ('alice', 'cyha-lab-alice')}
MBEXAMINE = ['/usr/lib/cyrus/bin/mbexamine', '-C', '/etc/cyrus-ha/be3/imapd.conf', '-u', '4294967295', 'user.dave']


def playbook(path: str, *extra: str) -> float:
    started = time.monotonic()
    proc = labutil.playbook(path, '-i', os.path.join(labutil.LAB_DIR, 'topology.yml'), *VARS, *extra, check=False)
    if proc.returncode != 0:
        raise SystemExit(f'{path} {" ".join(extra)} failed:\n{proc.stdout[-3000:]}')
    return time.monotonic() - started


def last_uid(host: str) -> int:
    """dave's last UID on host's copy of be3, read in the host's mount namespace (its own /run)."""
    with open(os.path.join(labutil.LAB_DIR, 'lab.json'), encoding='utf-8') as handle:
        sshd = json.load(handle)['pids'][host]
    out = subprocess.run(['nsenter', f'--mount=/proc/{sshd}/ns/mnt', *MBEXAMINE], capture_output=True, text=True,
                         timeout=30, check=False).stdout
    found = re.search(r'Last UID: (\d+)', out)
    return int(found.group(1)) if found else 0


def replica_last_uid() -> int:
    return last_uid('replica')


def master_last_uid() -> int:
    return last_uid('be3')


def lag(messages: int, rate: float) -> list:
    """Seconds from each delivery's acknowledgement to its visibility on the replica."""
    base = master_last_uid()
    acks, seen, done = [], [], threading.Event()

    def watch():
        while not done.is_set() or (seen and seen[-1][1] < base + messages):
            seen.append((time.monotonic(), replica_last_uid()))
            if done.is_set() and time.monotonic() - acks[-1] > 60:
                return
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for index in range(messages):
        due = time.monotonic() + 1 / rate
        cyha_imap.lmtp_deliver(FE1, 'dave')
        acks.append(time.monotonic())
        time.sleep(max(0.0, due - time.monotonic()))
    done.set()
    watcher.join()
    lags = []
    for index, ack in enumerate(acks):
        visible = next((t for t, uid in seen if uid >= base + index + 1 and t >= ack), None)
        if visible is not None:
            lags.append(visible - ack)
    if len(lags) != messages:
        raise SystemExit(f'only {len(lags)} of {messages} deliveries became visible on the replica')
    return lags


def marker_lags(samples: int, rate: float) -> list:
    """The module's measurements on be3, one every 0.5 s; under LMTP deliveries to dave at rate when rate > 0."""
    stop = threading.Event()

    def load():
        while not stop.is_set():
            due = time.monotonic() + 1 / rate
            cyha_imap.lmtp_deliver(FE1, 'dave')
            time.sleep(max(0.0, due - time.monotonic()))
    if rate > 0:
        threading.Thread(target=load, daemon=True).start()
        time.sleep(2)
    tree = tempfile.mkdtemp(prefix='replication-bench-')
    lags = []
    try:
        for dummy in range(samples):
            result = labutil.module_result('be3', 'cyrus.ha.cyrus_replication_lag', {'instance': 'be3'}, tree)
            if result['failed'] or not result['lag']['caught_up']:
                raise SystemExit(f'the lag could not be measured: {result.get("msg") or result.get("lag")}')
            lags.append(result['lag']['seconds'])
            time.sleep(0.5)
    finally:
        stop.set()
        subprocess.run(['rm', '-rf', tree], check=False)
    return lags


class Prober:
    """Login + SELECT through fe1 every 100 ms as one user; (time, ok) of every try."""

    def __init__(self, user: tuple):
        self.user, self.tries, self.stop = user, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with cyha_imap.imap(FE1, *self.user) as conn:
                    ok = conn.select('INBOX', readonly=True)[0] == 'OK'
            except Exception:   # noqa: BLE001 - any failure is an outage as the user sees it
                ok = False
            self.tries.append((started, ok))
            time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))

    def outage(self) -> float:
        self.stop.set()
        self.thread.join()
        failed = [i for i, (dummy, ok) in enumerate(self.tries) if not ok]
        if not failed:
            return 0.0
        first, last = failed[0], failed[-1]
        before = self.tries[first - 1][0] if first > 0 else self.tries[first][0]
        after = self.tries[last + 1][0] if last + 1 < len(self.tries) else self.tries[last][0]
        return after - before


def move(kind: str) -> tuple:
    """One planned move and its return: [(runbook seconds, clients' outage seconds)] for both."""
    result = []
    steps = ([('playbooks/promote.yml', '-e', 'replication_instance=be3')] * 2 if kind == 'replica'
             else [('playbooks/failover.yml', '-e', 'warm_spare_instance=be1', *HOSTS_VARS),
                   ('playbooks/failback.yml', '-e', 'warm_spare_instance=be1', *HOSTS_VARS)])
    for step in steps:
        prober = Prober(USERS['be3' if kind == 'replica' else 'be1'])
        time.sleep(0.5)
        seconds = playbook(*step)
        time.sleep(3)
        result.append((seconds, prober.outage()))
    return tuple(result)


def stats(values: list) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(round(0.99 * (len(values) - 1))))]
    return f'{statistics.median(values):.2f} / {p99:.2f} / {values[-1]:.2f}'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--rate', type=float, default=10.0)
    parser.add_argument('--messages', type=int, default=100)
    parser.add_argument('--samples', type=int, default=20)
    parser.add_argument('--json')
    args = parser.parse_args()
    os.chdir(REPO)
    results = {'lag': {}, 'marker': {}, 'moves': {'replica': [], 'san': []}}
    for interval in (1, 3):
        playbook('playbooks/site.yml', *HOSTS_VARS, '--limit', 'be3', '-e', f'murder_replication_interval={interval}')
        time.sleep(2)
        results['lag'][interval] = lag(args.messages, args.rate)
        print(f'lag with sync_repeat_interval {interval} s: median / p99 / max {stats(results["lag"][interval])} s',
              flush=True)
    playbook('playbooks/site.yml', *HOSTS_VARS, '--limit', 'be3')
    time.sleep(2)
    for label, rate in (('idle', 0.0), ('load', args.rate)):
        results['marker'][label] = marker_lags(args.samples, rate)
        print(f'marker lag {label}: median / p99 / max {stats(results["marker"][label])} s', flush=True)
    for round_no in range(args.rounds):
        for kind in ('replica', 'san'):
            results['moves'][kind].append(move(kind))
            there, back = results['moves'][kind][-1]
            print(f'round {round_no + 1} {kind}: move {there[0]:.1f} s (clients {there[1]:.2f} s), '
                  f'back {back[0]:.1f} s (clients {back[1]:.2f} s)', flush=True)
    print(f'\nReplication lag, {args.messages} LMTP deliveries at {args.rate:g}/s through fe1 (acknowledged -> on the '
          'replica), median / p99 / max:')
    print('| sync_repeat_interval | lag |\n|---|---|')
    for interval, label in ((1, '1 s (cyrus.ha)'), (3, "3 s (Cyrus's default)")):
        print(f'| {label} | {stats(results["lag"][interval])} s |')
    print(f'\nThe marker lag (cyrus.ha.cyrus_replication_lag on be3, sync_repeat_interval 1 s), {args.samples} '
          'measurements, median / p99 / max:')
    print('| while | marker lag |\n|---|---|')
    print(f'| nothing else runs | {stats(results["marker"]["idle"])} s |')
    print(f'| LMTP deliveries at {args.rate:g}/s | {stats(results["marker"]["load"])} s |')
    print(f'\nPlanned moves, median of {args.rounds} (runbook wall time; clients\' outage: login + SELECT through fe1 '
          'every 100 ms):')
    print('| pair | move: runbook | move: clients | back: runbook | back: clients |\n|---|---|---|---|---|')
    for kind, label in (('replica', 'replica pair (promote.yml, be3)'), ('san', 'SAN pair (failover/failback.yml, be1)')):
        rows = results['moves'][kind]
        cells = [statistics.median(r[i][j] for r in rows) for i in (0, 1) for j in (0, 1)]
        print(f'| {label} | {cells[0]:.1f} s | {cells[1]:.2f} s | {cells[2]:.1f} s | {cells[3]:.2f} s |')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
