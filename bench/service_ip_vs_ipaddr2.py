# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Move a service address from holder to spare, again and again: cyrus.ha.service_ip against
Pacemaker's IPaddr2 (resource-agents, run without a cluster), on the IP takeover test rig.

Each round the holder gets the address (plain `ip addr add`, untimed), the client connects to it
(so its neighbour entry points at the holder), the holder releases it with the tool under test,
and at T0 the spare takes it with that tool. Measured from T0, the same way for every tool:
  usable   the spare's kernel reports the address, not tentative (`ip monitor address` in the spare)
  announce the first gratuitous ARP / neighbour advertisement from the spare for the address,
           seen on the client's link (raw AF_PACKET socket in the client namespace)
  reach    the client's TCP connection (retried every 50 ms) reaches the server on the spare
  wall     the take command returned
Tools, alternated round by round: `ipaddr2`; `module` (the module's code run directly as one
python3 process, as Ansible would run it on the node minus Ansible's own start-up);
`ansible` (`ansible localhost -m cyrus.ha.service_ip`, connection local). The module's
internal timings (usable, first_announcement, total) are reported as well.

Usage (root): .venv/bin/python bench/service_ip_vs_ipaddr2.py [--rounds 20] [--no-probe]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'lab', 'rigs'))

import cyha_iprig as rig  # noqa: E402
from ansible_collections.cyrus.ha.plugins.module_utils import announce as ann  # noqa: E402
from ansible_collections.cyrus.ha.plugins.module_utils import service_ip as sip  # noqa: E402

IPADDR2 = '/usr/lib/ocf/resource.d/heartbeat/IPaddr2'
PYTHON = rig.PYTHON
DIRECT = (
    'import json, sys\n'
    f'sys.path.insert(0, {os.path.join(REPO, "build", "collections")!r})\n'
    'from ansible_collections.cyrus.ha.plugins.module_utils.service_ip import manage\n'
    'print(json.dumps(manage(json.loads(sys.argv[1]))))\n'
)
DEFAULTS = {'state': 'present', 'announce_count': 3, 'announce_interval': 0.2, 'announce_mode': 'request', 'conflict_probe': True,
            'probe_count': sip.PROBE_COUNT, 'probe_timeout': sip.PROBE_TIMEOUT, 'ipv6_dad': True, 'dad_timeout': 10, 'require_link_up': True,
            'noprefixroute': False, 'force': False}


class AddressMonitor:
    """`ip -o monitor address` in a namespace; lines with their arrival time."""

    def __init__(self, netns: str):
        self.proc = subprocess.Popen(['ip', '-n', netns, '-o', 'monitor', 'address'], stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line))

    def drain(self):
        while not self.lines.empty():
            self.lines.get_nowait()

    def usable(self, address: str, since: float, timeout: float = 15) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                stamp, line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if f' {address}/' in line and not line.startswith('Deleted') and 'tentative' not in line:
                return stamp - since
        return None

    def close(self):
        self.proc.kill()
        self.proc.wait()


class Capture(threading.Thread):
    """First announcement for `address` from `mac`, seen on the client's link."""

    def __init__(self, address: str, mac: str):
        super().__init__(daemon=True)
        self.address, self.mac = address, mac
        self.sock = rig.socket_in(rig.CLIENT, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ann.ETH_P_ALL))
        self.sock.bind(('eth0', ann.ETH_P_ALL))
        self.seen: float | None = None
        self.stop = False
        self.start()

    def match(self, frame: bytes) -> bool:
        if ':' in self.address:
            nd = ann.parse_nd(frame)
            return bool(nd and nd['type'] == ann.ICMP6_NA and nd['target'] == self.address and nd['eth_src'] == self.mac)
        arp = ann.parse_arp(frame)
        return bool(arp and arp['spa'] == self.address and arp['sha'] == self.mac)

    def run(self):
        while not self.stop and self.seen is None:
            ready, dummy, dummy = select.select([self.sock], [], [], 0.1)
            if ready:
                frame = self.sock.recv(65535)
                if self.match(frame):
                    self.seen = time.monotonic()
        self.sock.close()


class Reach(threading.Thread):
    """The client connects every 50 ms until the spare answers."""

    def __init__(self, address: str, timeout: float = 15):
        super().__init__(daemon=True)
        self.address, self.deadline = address, time.monotonic() + timeout
        self.reached: float | None = None
        self.start()

    def run(self):
        while time.monotonic() < self.deadline:
            if rig.connect(rig.CLIENT, self.address, timeout=0.05) == rig.SPARE:
                self.reached = time.monotonic()
                return


def ipaddr2(netns: str, action: str, address: str, prefix: int, rsc: str) -> float:
    env = ['env', 'OCF_ROOT=/usr/lib/ocf', f'HA_RSCTMP={rsc}', 'OCF_RESOURCE_INSTANCE=cyha-vip',
           f'OCF_RESKEY_ip={address}', f'OCF_RESKEY_cidr_netmask={prefix}', 'OCF_RESKEY_nic=eth0']
    # Its background sender (send_arp/send_ua) inherits stdout/stderr: give it a file, not a pipe,
    # so that the wall time is IPaddr2's own and not the sender's.
    with tempfile.TemporaryFile() as log:
        start = time.monotonic()
        proc = subprocess.run(['ip', 'netns', 'exec', netns, *env, IPADDR2, action], stdout=log, stderr=log,
                              stdin=subprocess.DEVNULL, check=False)
        wall = time.monotonic() - start
        if proc.returncode != 0:
            log.seek(0)
            raise RuntimeError(f'IPaddr2 {action} failed: {log.read().decode(errors="replace")}')
    return wall


def direct(params: dict) -> tuple[float, dict]:
    start = time.monotonic()
    proc = subprocess.run([PYTHON, '-c', DIRECT, json.dumps(dict(DEFAULTS, **params))], capture_output=True,
                          text=True, check=False)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f'module failed: {proc.stderr[-2000:]}')
    return wall, json.loads(proc.stdout)


def via_ansible(params: dict) -> tuple[float, dict]:
    start = time.monotonic()
    result = rig.module(params)
    wall = time.monotonic() - start
    if result['cyha_status'] != 'ok':
        raise RuntimeError(f'module failed: {result.get("msg")}')
    return wall, result


def one_move(tool: str, family: int, monitor: AddressMonitor, rsc: dict, probe: bool) -> dict:
    address, prefix = (rig.VIP4, 24) if family == 4 else (rig.VIP6, 64)
    rig.sh('ip', '-n', rig.HOLDER, 'addr', 'add', f'{address}/{prefix}', 'dev', 'eth0',
           *(['nodad'] if family == 6 else []))
    deadline = time.monotonic() + 10
    while rig.connect(rig.CLIENT, address) != rig.HOLDER:
        if time.monotonic() > deadline:
            raise RuntimeError('the client cannot reach the holder')
    params = {'address': f'{address}/{prefix}', 'conflict_probe': probe, **({} if probe else {'peer_state': 'down'})}
    if tool == 'ipaddr2':
        ipaddr2(rig.HOLDER, 'stop', address, prefix, rsc[rig.HOLDER])
    else:
        direct(dict(params, namespace=rig.HOLDER, state='absent'))
    monitor.drain()
    capture = Capture(address, rig.mac(rig.SPARE))
    t0 = time.monotonic()
    reach = Reach(address)
    internal = {}
    if tool == 'ipaddr2':
        wall = ipaddr2(rig.SPARE, 'start', address, prefix, rsc[rig.SPARE])
    elif tool == 'module':
        wall, result = direct(dict(params, namespace=rig.SPARE))
        internal = result['timings']
    else:
        wall, result = via_ansible(dict(params, namespace=rig.SPARE))
        internal = result['timings']
    usable = monitor.usable(address, t0)
    reach.join()
    capture.stop = True
    capture.join()
    row = {'tool': tool, 'family': family, 'wall': wall, 'usable': usable,
           'announce': None if capture.seen is None else capture.seen - t0,
           'reach': None if reach.reached is None else reach.reached - t0}
    for key in ('usable', 'first_announcement', 'total'):
        if key in internal:
            row[f'internal_{key}'] = internal[key]
    # release on the spare, untimed, so the next round starts from the holder again
    if tool == 'ipaddr2':
        ipaddr2(rig.SPARE, 'stop', address, prefix, rsc[rig.SPARE])
    else:
        direct(dict(params, namespace=rig.SPARE, state='absent'))
    return row


def median(rows: list[dict], tool: str, family: int, key: str) -> float | None:
    values = [r[key] for r in rows if r['tool'] == tool and r['family'] == family and r.get(key) is not None]
    return statistics.median(values) if values else None


def report(rows: list[dict], rounds: int, probe: bool) -> str:
    lines = [f'service_ip vs IPaddr2: {rounds} rounds per tool and family, medians in seconds from T0 '
             f'(conflict probe {"on" if probe else "off"}); ratio = tool / IPaddr2', '']
    header = f'{"family":6} {"metric":10} {"IPaddr2":>8} {"module":>8} {"ratio":>6} {"ansible":>8} {"ratio":>6}'
    lines += [header, '-' * len(header)]
    for family in (4, 6):
        for key in ('usable', 'announce', 'reach', 'wall'):
            base = median(rows, 'ipaddr2', family, key)
            cells = [f'IPv{family:<4} {key:10} {fmt(base):>8}']
            for tool in ('module', 'ansible'):
                value = median(rows, tool, family, key)
                cells.append(f'{fmt(value):>8} {ratio(value, base):>6}')
            lines.append(' '.join(cells))
    lines += ['', 'module internal timings (medians, seconds from the module start):']
    for family in (4, 6):
        for tool in ('module', 'ansible'):
            parts = [f'{key}={fmt(median(rows, tool, family, "internal_" + key))}'
                     for key in ('usable', 'first_announcement', 'total')]
            lines.append(f'  IPv{family} {tool:8} ' + ' '.join(parts))
    return '\n'.join(lines)


def fmt(value) -> str:
    return '-' if value is None else f'{value:.3f}'


def ratio(value, base) -> str:
    return '-' if value is None or not base else f'{value / base:.2f}'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=20)
    parser.add_argument('--families', default='4,6')
    parser.add_argument('--tools', default='ipaddr2,module,ansible')
    parser.add_argument('--no-probe', action='store_true', help='run the module with conflict_probe=false')
    parser.add_argument('--json', default=os.path.join(REPO, 'build', 'bench', 'service_ip_vs_ipaddr2.json'))
    opts = parser.parse_args()
    if os.geteuid() != 0:
        parser.error('run as root: the bench builds network namespaces')
    rows: list[dict] = []
    servers = []
    monitor = None
    with tempfile.TemporaryDirectory(prefix='cyha-ip-bench-') as tmp:
        rsc = {ns: os.path.join(tmp, ns) for ns in (rig.HOLDER, rig.SPARE)}
        for path in rsc.values():
            os.makedirs(path)
        try:
            rig.up()
            servers = [rig.Server(ns, fam) for ns in (rig.HOLDER, rig.SPARE)
                       for fam in (socket.AF_INET, socket.AF_INET6)]
            monitor = AddressMonitor(rig.SPARE)
            tools = opts.tools.split(',')
            for family in (int(f) for f in opts.families.split(',')):
                for n in range(opts.rounds):
                    order = tools[n % len(tools):] + tools[:n % len(tools)]
                    for tool in order:
                        row = one_move(tool, family, monitor, rsc, not opts.no_probe)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
        finally:
            if monitor:
                monitor.close()
            for server in servers:
                server.close()
            left = rig.down()
    text = report(rows, opts.rounds, not opts.no_probe)
    print(text)
    os.makedirs(os.path.dirname(opts.json), exist_ok=True)
    with open(opts.json, 'w', encoding='utf-8') as handle:
        json.dump({'rows': rows, 'report': text}, handle, indent=1)
    if left:
        print(f'rig namespaces left behind: {left}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
