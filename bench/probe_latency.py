# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How fast does a live holder answer cyrus.ha.service_ip's conflict probe? The data behind the
default probe window (probe_timeout).

On the IP takeover rig the holder keeps the service address; the spare sends one conflict probe at a
time (an ARP probe from 0.0.0.0 for IPv4, a DAD neighbour solicitation from :: for IPv6) with the
module's own code and listens up to 1 s for the holder's answer. Printed: the answer's delay after
the send (median, 99th percentile, maximum) and the whole probe as the module pays it (raw socket
opened and bound, probe sent, answer matched), with the machine idle and with every CPU busy (one
spinning process per CPU plus one), next to the module's default window. A default that a live holder's
answer reliably beats is safe; anything longer only slows every takeover down.

Usage (root): .venv/bin/python bench/probe_latency.py [--probes 500] [--families 4,6] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'lab', 'rigs'))

import cyha_iprig as rig  # noqa: E402
from ansible_collections.cyrus.ha.plugins.module_utils import announce as ann  # noqa: E402
from ansible_collections.cyrus.ha.plugins.module_utils import service_ip  # noqa: E402

ADDRESS = {4: rig.VIP4, 6: rig.VIP6}
PREFIX = {4: 24, 6: 64}


def spin(stop) -> None:
    while not stop.is_set():
        pass


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def measure(family: int, probes: int) -> dict:
    """`probes` conflict probes from the spare for the holder's address, each as the module sends it
    (a fresh raw socket): the answer's delay after the send, and the whole probe (socket included)."""
    spare_mac = rig.mac(rig.SPARE)
    address = ADDRESS[family]
    if family == 4:
        ethertype, frame, conflict = ann.ETH_P_ARP, ann.arp_probe(spare_mac, address), ann.arp_conflict
    else:
        ethertype, frame, conflict = ann.ETH_P_IPV6, ann.dad_probe(spare_mac, address), ann.nd_conflict
    answers, whole, unanswered = [], [], 0
    for dummy in range(probes):
        sock = rig.socket_in(rig.SPARE, ann.socket.AF_PACKET, ann.socket.SOCK_RAW, 0)
        started = time.monotonic()
        with ann.Link('eth0', ethertype, lambda *a, s=sock: s) as link:
            sent = link.send(frame)
            found = link.watch(lambda f: conflict(f, address, spare_mac), sent + 1.0)
            answered = time.monotonic()
        if found:
            answers.append(answered - sent)
            whole.append(answered - started)
        else:
            unanswered += 1
        time.sleep(0.005)
    return {'answers': answers, 'whole': whole, 'unanswered': unanswered}


def summary(answers: list[float]) -> dict:
    if not answers:
        return {}
    return {'median': statistics.median(answers), 'p95': percentile(answers, 0.95),
            'p99': percentile(answers, 0.99), 'max': max(answers)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--probes', type=int, default=500, help='probes per family and load (default 500)')
    parser.add_argument('--families', default='4,6')
    parser.add_argument('--json', help='also write the raw answer times here')
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error('needs root (network namespaces, raw sockets)')
    families = [int(f) for f in args.families.split(',')]
    window, count = service_ip.PROBE_TIMEOUT, service_ip.PROBE_COUNT
    rows, raw = [], {}
    rig.up()
    try:
        for family in families:
            rig.sh('ip', '-n', rig.HOLDER, 'addr', 'add', f'{ADDRESS[family]}/{PREFIX[family]}', 'dev', 'eth0',
                   *(['nodad'] if family == 6 else []))
            for load in ('idle', 'busy'):
                stop = multiprocessing.Event()
                hogs = [multiprocessing.Process(target=spin, args=(stop,), daemon=True)
                        for dummy in range((os.cpu_count() or 1) + 1 if load == 'busy' else 0)]
                for hog in hogs:
                    hog.start()
                try:
                    result = measure(family, args.probes)
                finally:
                    stop.set()
                    for hog in hogs:
                        hog.join(5)
                raw[f'ipv{family}-{load}'] = result
                rows.append((family, load, len(hogs), result['unanswered'], summary(result['answers']),
                             summary(result['whole'])))
            rig.sh('ip', '-n', rig.HOLDER, 'addr', 'del', f'{ADDRESS[family]}/{PREFIX[family]}', 'dev', 'eth0')
    finally:
        left = rig.down()
    print(f'conflict probe answer time from a live holder, {args.probes} probes per row '
          f'(module default: {count} probes over a {window} s window, answers to any of them count until its end)\n')
    print('| family | load | hogs | unanswered | answer median ms | p99 ms | max ms | max / window '
          '| whole probe median ms | max ms |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for family, load, hogs, unanswered, stats, whole in rows:
        if stats:
            print(f'| IPv{family} | {load} | {hogs} | {unanswered} | {stats["median"] * 1000:.3f} | '
                  f'{stats["p99"] * 1000:.3f} | {stats["max"] * 1000:.3f} | {stats["max"] / window:.3f} | '
                  f'{whole["median"] * 1000:.3f} | {whole["max"] * 1000:.3f} |')
        else:
            print(f'| IPv{family} | {load} | {hogs} | {unanswered} | - | - | - | - | - | - |')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump(raw, handle, indent=1)
    if left:
        print(f'left behind: {left}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
