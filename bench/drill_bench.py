# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failover drills of be1 on the built-in lab, again and again, per failure kind: the failover time
each drill's own report gives (failure injected to the first IMAP login through a frontend), and
the time the delivery made during the outage stayed queued.

The lab must be up and deployed with the warm-spare pairs (`make lab` does both), alice's mailbox
on be1. Each drill fails be1 over to the spare and back, so drills can follow each other.
Nothing here is a test: it prints the medians of what it measured.

Usage (root, repository root): .venv/bin/python bench/drill_bench.py [--rounds 5]
    [--kinds planned,instance-killed,link-down] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'lab', 'rigs'))

import labutil  # noqa: E402  (the tests' helper that runs Ansible against the lab)

VARS = ['-e', '@lab/vars/murder.yml', '-e', '@lab/vars/murder_hosts.yml',
        '-e', '@lab/vars/warm_spare.yml', '-e', '@lab/vars/drill.yml']


def drill(kind: str, index: int, report_dir: str) -> dict:
    started = time.monotonic()
    proc = labutil.playbook('playbooks/drill.yml', *VARS, '-e', 'warm_spare_instance=be1', '-e', 'drill_frontend=fe1',
                            '-e', 'drill_user=alice', '-e', 'drill_password=cyha-lab-alice',
                            '-e', f'drill_report_dir={report_dir}', '-e', f'drill_id=bench-{kind}-{index}',
                            '-e', f'drill_failure={kind}', check=False)
    wall = time.monotonic() - started
    path = os.path.join(report_dir, f'drill-be1-bench-{kind}-{index}.json')
    if not os.path.exists(path):
        raise SystemExit(f'drill {kind} #{index} wrote no report:\n{proc.stdout[-3000:]}')
    with open(path, encoding='utf-8') as handle:
        report = json.load(handle)
    return {'kind': kind, 'passed': report['passed'], 'failover_s': report['failover_seconds'],
            'queued_s': float(report['outage_delivery'].get('queued_seconds') or 0), 'playbook_s': round(wall, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--kinds', default='planned,instance-killed,link-down')
    parser.add_argument('--json', help='write every drill\'s figures to this file')
    args = parser.parse_args()
    kinds = args.kinds.split(',')
    rows = []
    with tempfile.TemporaryDirectory(prefix='cyha-drill-bench-') as report_dir:
        for index in range(args.rounds):
            for kind in kinds:   # kinds alternate, so a noisy minute hits all of them
                rows.append(drill(kind, index, report_dir))
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump(rows, handle, indent=2)
    print()
    print('| failure | drills | passed | failover median (s) | min | max | outage mail queued median (s) | playbook median (s) |')
    print('|---|---|---|---|---|---|---|---|')
    for kind in kinds:
        mine = [r for r in rows if r['kind'] == kind]
        times = [r['failover_s'] for r in mine]
        print(f'| {kind} | {len(mine)} | {sum(r["passed"] for r in mine)} | {statistics.median(times):.2f} | '
              f'{min(times):.2f} | {max(times):.2f} | {statistics.median(r["queued_s"] for r in mine):.2f} | '
              f'{statistics.median(r["playbook_s"] for r in mine):.1f} |')
    return 0 if all(r['passed'] for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
