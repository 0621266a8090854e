# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deep metadata check's curve on several filesystems, side by side (run as root from the repository
root):

    .venv/bin/python bench/metadata_curve.py [--files 200000] [--fs ext4,xfs,fuse] [--budget-mb 4096]
        [--json FILE]

For each filesystem (a fresh loop image, or the FUSE passthrough filesystem of the tests over a
directory of the root filesystem), the storage probe runs only the check `metadata_deep` up to --files
files, in its own process as the module runs it, with a progress file the bench follows and prints
batch by batch. Then one table: per tree size, each filesystem's create, stat and open rates at the
median, and where each curve falls off. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'lab', 'rigs'))
import cyha_fsrig  # noqa: E402  (the test rig: real mounts, cleaned up by PID and mount point)

COLLECTIONS = os.path.join(REPO, 'build', 'collections')
PROBE = ('import json, sys\nsys.path.insert(0, %r)\n'
         'from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import probe\n'
         'opts = json.loads(sys.argv[2])\n'
         'print(json.dumps(probe.probe_path(sys.argv[1], ["metadata_deep"], opts)))\n' % COLLECTIONS)


def curve(name: str, path: str, files: int, budget_mb: int, timeout: float, progress: str) -> dict:
    """The probe's metadata_deep result on path, printing each batch as the progress file gets it."""
    opts = {'deep_files': files, 'deep_budget_mb': budget_mb, 'timeout': timeout, 'progress_file': progress}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, '-c', PROBE, path, json.dumps(opts)], stdout=subprocess.PIPE, text=True)
    seen = 0
    while proc.poll() is None:
        time.sleep(1)
        if os.path.exists(progress):
            with open(progress, encoding='ascii') as handle:
                lines = handle.read().splitlines()
            for line in lines[seen:]:
                print(f'{name}: {line}', flush=True)
            seen = len(lines)
    out, dummy = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f'{name}: the probe failed (exit {proc.returncode})')
    check = json.loads(out)['checks']['metadata_deep']
    return {'fs': name, 'status': check['status'], 'reason': check['reason'], 'wall_s': round(time.monotonic() - started, 1),
            'curve': check['evidence'].get('curve', []), 'falls_off': check['evidence'].get('falls_off', {}),
            'stopped': check['evidence'].get('stopped', ''), 'removed': check['evidence'].get('removed', {})}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--files', type=int, default=200000)
    parser.add_argument('--fs', default='ext4,xfs,fuse')
    parser.add_argument('--budget-mb', type=int, default=4096)
    parser.add_argument('--timeout', type=float, default=3600)
    parser.add_argument('--json')
    args = parser.parse_args(argv)
    rig = cyha_fsrig.Rig()
    results = []
    try:
        size_mb = max(1024, args.budget_mb + 512)
        makers = {'ext4': lambda: rig.loop_image('ext4', 'ext4', size_mb),
                  'xfs': lambda: rig.loop_image('xfs', 'xfs', size_mb),
                  'fuse': lambda: rig.faultfs('none')}
        for name in args.fs.split(','):
            point = makers[name]()
            results.append(curve(name, point, args.files, args.budget_mb, args.timeout,
                                 os.path.join(rig.base, f'{name}.progress')))
    finally:
        rig.close()
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump(results, handle, indent=2)
    sizes = sorted({row['files'] for r in results for row in r['curve']})
    print()
    print('| files | ' + ' | '.join(f'{r["fs"]} create/s | {r["fs"]} stat/s | {r["fs"]} open/s' for r in results) + ' |')
    print('|---|' + '---|---|---|' * len(results))
    for size in sizes:
        cells = []
        for r in results:
            row = next((p for p in r['curve'] if p['files'] == size), None)
            cells += [f'{row[k]:.0f}' if row else '-' for k in ('create_per_s', 'stat_per_s', 'open_per_s')]
        print(f'| {size} | ' + ' | '.join(cells) + ' |')
    print()
    for r in results:
        falls = '; '.join(f'{phase} {why}' for phase, why in sorted(r['falls_off'].items())) or 'no fall-off'
        print(f'- {r["fs"]}: {r["status"]}, {falls}; {r["removed"].get("files", 0)} files removed at '
              f'{r["removed"].get("per_s")}/s; whole run {r["wall_s"]} s' + (f'; stopped: {r["stopped"]}' if r['stopped'] else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
