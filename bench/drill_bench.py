# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failover drills of be1 on the built-in lab, again and again, per failure kind: the outage as clients saw
it, beside the failover time each drill's own report gives (failure injected to the first IMAP login through a
frontend, stamped by the playbook), and the time the delivery made during the outage stayed queued.

The lab must be up and deployed with the warm-spare pairs (`make lab` does both), alice's mailbox
on be1. Each drill fails be1 over to the spare and back, so drills can follow each other.
Nothing here is a test: it prints medians and maxima.

Usage (root, repository root): .venv/bin/python bench/drill_bench.py [--rounds 5]
    [--kinds planned,instance-killed,link-down] [--json FILE] [--baseline REV] [--no-traffic]

Each drill runs under the lab's mail traffic from its client host (lab/vars/traffic.yml), with alice's
prober: a login (LOGIN, SELECT, LOGOUT) and an LMTP delivery through fe1 every 0.1 s. The clients' outage of a
move is, per kind of probe, the time from the end of alice's last success before the failure to the end of
her first success after it (the longest such gap in the failover, and in the failback); `--no-traffic`
drills without traffic (the drill's own figures only).

With --baseline REV the same drills also run on the collection as it was at git revision REV (a
worktree of it, deployed over the same lab), each round deploying and drilling one tree, then the
other: both columns come from the same run on the same machine (e.g. the failover before and after the
one-call takeover: --baseline 3489771).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'lab', 'rigs'))

import labutil  # noqa: E402  (the tests' helper that runs Ansible against the lab)

VARS = ['-e', '@lab/vars/murder.yml', '-e', '@lab/vars/murder_hosts.yml',
        '-e', '@lab/vars/warm_spare.yml', '-e', '@lab/vars/replication.yml', '-e', '@lab/vars/drill.yml']


def playbook(tree: str, path: str, *extra: str) -> subprocess.CompletedProcess:
    """ansible-playbook of the collection checked out at tree (this checkout or a baseline worktree)."""
    return subprocess.run([os.path.join(labutil.BIN, 'ansible-playbook'), '-i', labutil.inventory(), path, *extra],
                          capture_output=True, text=True, timeout=1800, cwd=tree, check=False,
                          env=labutil.env(ANSIBLE_CONFIG=os.path.join(tree, 'ansible.cfg')))


def deploy(tree: str) -> None:
    proc = playbook(tree, 'playbooks/warm_spare.yml', *VARS)
    if proc.returncode != 0:
        raise SystemExit(f'deploying {tree} failed:\n{proc.stdout[-3000:]}')


def client_outages(report: dict) -> dict:
    """alice's outage as her prober saw it, per kind of probe (login, deliver): the longest gap from her last
    success to her first success after it, in the failover (gaps opening from a second before the failure to the
    failover's last phase) and in the failback (after it). Empty without traffic."""
    traffic = report.get('traffic')
    if not isinstance(traffic, dict):
        return {}
    over = [p['at'] for p in report['phases'] if p.get('section', 'failover') == 'failover']
    start, boundary = min(over), max(over)
    figures = {}
    for kind in ('login', 'deliver'):
        gaps = [(a, b) for a, b, user in traffic['outages'].get(kind, {}).get('gaps', []) if user == 'alice']
        figures[f'client_{kind}_failover_s'] = round(max((b - a for a, b in gaps if start - 1 <= a <= boundary),
                                                         default=0.0), 3)
        figures[f'client_{kind}_failback_s'] = round(max((b - a for a, b in gaps if a > boundary), default=0.0), 3)
    return figures


def drill(kind: str, index: int, report_dir: str, tree: str = REPO, label: str = 'current', traffic: bool = False) -> dict:
    started = time.monotonic()
    name = f'bench-{label}-{kind}-{index}'
    proc = playbook(tree, 'playbooks/drill.yml', *VARS, '-e', 'warm_spare_instance=be1', '-e', 'drill_frontend=fe1',
                    '-e', 'drill_user=alice', '-e', 'drill_password=cyha-lab-alice',
                    '-e', f'drill_report_dir={report_dir}', '-e', f'drill_id={name}', '-e', f'drill_failure={kind}',
                    *(['-e', '@lab/vars/traffic.yml'] if traffic else []))
    wall = time.monotonic() - started
    path = os.path.join(report_dir, f'drill-be1-{name}.json')
    if not os.path.exists(path):
        raise SystemExit(f'drill {kind} #{index} ({label}) wrote no report:\n{proc.stdout[-3000:]}')
    with open(path, encoding='utf-8') as handle:
        report = json.load(handle)
    return dict({'tree': label, 'kind': kind, 'passed': report['passed'], 'failover_s': report['failover_seconds'],
                 'failback_s': report.get('failback_seconds'),
                 'queued_s': float(report['outage_delivery'].get('queued_seconds') or 0), 'playbook_s': round(wall, 2)},
                **client_outages(report))


def baseline_tree(revision: str, directory: str) -> str:
    """A worktree of revision with its own collection link (build/collections), as `make env` makes it."""
    tree = os.path.join(directory, 'baseline')
    subprocess.run(['git', '-C', REPO, 'worktree', 'add', '--detach', tree, revision], check=True,
                   capture_output=True, text=True)
    link = os.path.join(tree, 'build', 'collections', 'ansible_collections', 'cyrus', 'ha')
    os.makedirs(os.path.dirname(link))
    os.symlink('../../../..', link)
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--kinds', default='planned,instance-killed,link-down')
    parser.add_argument('--json', help='write every drill\'s figures to this file')
    parser.add_argument('--baseline', help='also drill the collection at this git revision, round by round')
    parser.add_argument('--no-traffic', dest='traffic', action='store_false',
                        help='drill without mail traffic: the drill\'s own figures only, no clients\' outage')
    args = parser.parse_args()
    kinds = args.kinds.split(',')
    rows = []
    with tempfile.TemporaryDirectory(prefix='cyha-drill-bench-') as report_dir:
        trees = [('current', REPO)]
        if args.baseline:
            trees.append((f'baseline {args.baseline}', baseline_tree(args.baseline, report_dir)))
        try:
            for index in range(args.rounds):
                for label, tree in trees:
                    if len(trees) > 1:
                        deploy(tree)     # the Murder as this tree deploys it
                    for kind in kinds:   # kinds alternate, so a noisy minute hits all of them
                        rows.append(drill(kind, index, report_dir, tree, label.split()[0], args.traffic))
                        rows[-1]['tree'] = label
                        print(json.dumps(rows[-1]), flush=True)
        finally:
            if args.baseline:
                subprocess.run(['git', '-C', REPO, 'worktree', 'remove', '--force', trees[1][1]], check=False,
                               capture_output=True)
                shutil.rmtree(trees[1][1], ignore_errors=True)
                deploy(REPO)             # leave the lab as this checkout deploys it
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump(rows, handle, indent=2)
    print()
    if args.traffic:
        print('Clients\' outage (alice\'s prober through fe1: last success to first success, every 0.1 s), beside the '
              'drill\'s own figure (failure injected to its first IMAP login task), seconds, median / max:\n')
        print('| tree | failure | drills | passed | login, failover | delivery, failover | login, failback '
              '| delivery, failback | drill\'s own failover figure |')
        print('|---|---|---|---|---|---|---|---|---|')
        for kind in kinds:
            for label in dict.fromkeys(r['tree'] for r in rows):
                mine = [r for r in rows if r['kind'] == kind and r['tree'] == label]
                cells = []
                for key in ('client_login_failover_s', 'client_deliver_failover_s', 'client_login_failback_s',
                            'client_deliver_failback_s', 'failover_s'):
                    values = [r[key] for r in mine if r.get(key) is not None]
                    cells.append(f'{statistics.median(values):.2f} / {max(values):.2f}' if values else '-')
                print(f'| {label} | {kind} | {len(mine)} | {sum(r["passed"] for r in mine)} | {" | ".join(cells)} |')
        print()
    print('| tree | failure | drills | passed | failover median (s) | min | max | outage mail queued median (s) '
          '| playbook median (s) |')
    print('|---|---|---|---|---|---|---|---|---|')
    for kind in kinds:
        for label in dict.fromkeys(r['tree'] for r in rows):
            mine = [r for r in rows if r['kind'] == kind and r['tree'] == label]
            times = [r['failover_s'] for r in mine]
            print(f'| {label} | {kind} | {len(mine)} | {sum(r["passed"] for r in mine)} | {statistics.median(times):.2f} | '
                  f'{min(times):.2f} | {max(times):.2f} | {statistics.median(r["queued_s"] for r in mine):.2f} | '
                  f'{statistics.median(r["playbook_s"] for r in mine):.1f} |')
    return 0 if all(r['passed'] for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
