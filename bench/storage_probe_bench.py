# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""storage_probe beside CTDB's ping_pong, per filesystem (run as root from the repository root):

    .venv/bin/python bench/storage_probe_bench.py [--fs tmpfs,ext4,xfs,btrfs,overlayfs,fuse] [--json FILE]

For each filesystem: the default probe's wall time and peak memory (largest RSS of the probe's
process tree), its uncontended fcntl lock rate beside ping_pong's locks/s on the same file (one
process, then two), and the metadata rates of the largest batch. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'lab', 'rigs'))
import cyha_fsrig  # noqa: E402  (the test rig: real mounts, cleaned up by PID and mount point)

COLLECTIONS = os.path.join(REPO, 'build', 'collections')
PROBE = ('import json, sys\nsys.path.insert(0, %r)\n'
         'from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import probe\n'
         'print(json.dumps(probe.probe_path(sys.argv[1])))\n' % COLLECTIONS)


def probe_once(path: str) -> dict:
    """The default probe in its own process: its report, wall time and the peak RSS of its tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    proc = subprocess.run([sys.executable, '-c', PROBE, path], capture_output=True, text=True, timeout=600,
                          check=True)
    wall = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report = json.loads(proc.stdout)
    return {'report': report, 'wall_s': round(wall, 2),
            'peak_rss_mib': round(max(peak, before, report['peak_rss_kib']) / 1024, 1)}


def ping_pong_rate(path: str, procs: int, seconds: float = 3.0) -> float | None:
    """ping_pong's locks/s with `procs` processes on one file (median over the processes' last lines)."""
    runners = [subprocess.Popen(['stdbuf', '-oL', 'ping_pong', path, str(procs + 1)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for dummy in range(procs)]
    time.sleep(seconds)
    for runner in runners:
        runner.terminate()
    rates = []
    for runner in runners:
        out = runner.communicate(timeout=10)[0]
        found = re.findall(r'(\d+) locks/sec', out)
        if found:
            rates.append(int(found[-1]))
    return sorted(rates)[len(rates) // 2] if rates else None


def measure(name: str, path: str) -> dict:
    run = probe_once(path)
    report = run['report']
    batches = report['checks']['metadata_scale']['evidence'].get('batches', [{}])
    last = batches[-1]
    work = os.path.join(path, 'cyha-bench-pingpong')
    os.mkdir(work)
    try:
        one = ping_pong_rate(os.path.join(work, 'one'), 1)
        two = ping_pong_rate(os.path.join(work, 'two'), 2)
    finally:
        subprocess.run(['rm', '-rf', work], check=False)
    return {
        'fs': name, 'verdict': report['verdict'], 'wall_s': run['wall_s'], 'probe_duration_s': report['duration'],
        'peak_rss_mib': run['peak_rss_mib'],
        'probe_locks_per_s': report['checks']['fcntl_locks']['evidence'].get('locks_per_s'),
        'probe_2p_locks_per_s': report['checks']['fcntl_locks']['evidence'].get('pingpong', {}).get('locks_per_s'),
        'ping_pong_1p_locks_per_s': one, 'ping_pong_2p_locks_per_s': two,
        'files': last.get('files'),
        'create_per_s': last.get('create', {}).get('rate'), 'stat_per_s': last.get('stat', {}).get('rate'),
        'open_per_s': last.get('open', {}).get('rate'), 'unlink_per_s': last.get('unlink', {}).get('rate'),
        'slowest_check': max(report['checks'].values(), key=lambda c: c['duration'])['name'],
    }


COLUMNS = ['fs', 'verdict', 'wall_s', 'peak_rss_mib', 'probe_locks_per_s', 'ping_pong_1p_locks_per_s',
           'probe_2p_locks_per_s', 'ping_pong_2p_locks_per_s', 'files', 'create_per_s', 'stat_per_s', 'open_per_s', 'unlink_per_s',
           'slowest_check']


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--fs', default='tmpfs,ext4,xfs,btrfs,overlayfs,fuse')
    parser.add_argument('--json', help='also write the rows as JSON to this file')
    args = parser.parse_args(argv)
    rig = cyha_fsrig.Rig()
    rows = []
    try:
        makers = {'tmpfs': lambda: rig.tmpfs('tmpfs', '512m'), 'ext4': lambda: rig.loop_image('ext4', 'ext4', 256),
                  'xfs': lambda: rig.loop_image('xfs', 'xfs', 512), 'btrfs': lambda: rig.loop_image('btrfs', 'btrfs', 512),
                  'overlayfs': lambda: rig.overlay('overlay'), 'fuse': lambda: rig.faultfs('none')}
        for name in args.fs.split(','):
            rows.append(measure(name, makers[name]()))
            print('measured %s' % name, file=sys.stderr)
    finally:
        rig.close()
    print('| ' + ' | '.join(COLUMNS) + ' |')
    print('|' + '---|' * len(COLUMNS))
    for row in rows:
        print('| ' + ' | '.join(str(row[c]) for c in COLUMNS) + ' |')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
