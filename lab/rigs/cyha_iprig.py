# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A rig of its own for IP takeover tests and the bench, apart from the shared lab.

Namespaces cyha-ip-holder, cyha-ip-spare and cyha-ip-client, each with eth0 on the bridge br0
that lives in its own namespace cyha-ip-sw (the root namespace's links and routes are untouched).
IPv4 203.0.113.1-3/24, IPv6 2001:db8::cafe:1-3/64; the service address is .50 / ::cafe:50.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, 'build', 'collections')
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

from ansible_collections.cyrus.ha.plugins.module_utils.iproute import InNetns, IpRoute  # noqa: E402

PREFIX = 'cyha-ip-'
SW, HOLDER, SPARE, CLIENT = 'cyha-ip-sw', 'cyha-ip-holder', 'cyha-ip-spare', 'cyha-ip-client'
HOSTS = {HOLDER: 1, SPARE: 2, CLIENT: 3}
VIP4, VIP6 = '203.0.113.50', '2001:db8::cafe:50'
PORT = 8143
BIN = os.path.dirname(sys.executable)
# The managed node's Python: the system one, as on a real host (not the controller's venv).
PYTHON = os.environ.get('CYHA_NODE_PYTHON', '/usr/bin/python3')


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, env=dict(os.environ, LC_ALL='C'))
    if check and proc.returncode != 0:
        raise AssertionError(f'{argv} exited {proc.returncode}: {proc.stderr.strip()}')
    return proc


def addr4(host: str) -> str:
    return f'203.0.113.{HOSTS[host]}'


def addr6(host: str) -> str:
    return f'2001:db8::cafe:{HOSTS[host]}'


def rig_namespaces() -> list[str]:
    try:
        return sorted(n for n in os.listdir('/run/netns') if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


def pids_in(netns: str) -> list[int]:
    """Every process whose network namespace is `netns` (found by inode, never by name)."""
    try:
        target = os.stat(f'/run/netns/{netns}').st_ino
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if os.stat(f'/proc/{entry}/ns/net').st_ino == target:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def down() -> list[str]:
    """Remove the rig: kill its processes by PID, delete its namespaces. Returns what is left."""
    for netns in rig_namespaces():
        for pid in pids_in(netns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sh('ip', 'netns', 'del', netns, check=False)
    return rig_namespaces()


def up() -> None:
    down()
    for netns in (SW, *HOSTS):
        sh('ip', 'netns', 'add', netns)
        sh('ip', '-n', netns, 'link', 'set', 'lo', 'up')
    sh('ip', '-n', SW, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0', 'forward_delay', '0')
    sh('ip', '-n', SW, 'link', 'set', 'br0', 'up')
    for host in HOSTS:
        port = 'p-' + host[len(PREFIX):]
        sh('ip', '-n', SW, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host)
        sh('ip', '-n', SW, 'link', 'set', port, 'master', 'br0', 'up')
        sh('ip', 'netns', 'exec', host, 'sysctl', '-q', '-w', 'net.ipv6.conf.eth0.accept_ra=0')
        sh('ip', '-n', host, 'addr', 'add', f'{addr4(host)}/24', 'dev', 'eth0')
        sh('ip', '-n', host, 'addr', 'add', f'{addr6(host)}/64', 'dev', 'eth0', 'nodad')
        sh('ip', '-n', host, 'link', 'set', 'eth0', 'up')
    for host in HOSTS:
        deadline = time.monotonic() + 10
        while any('tentative' in a['flags'] for a in IpRoute(netns=host).addresses('eth0')):
            assert time.monotonic() < deadline, f'{host}: link-local DAD did not finish'
            time.sleep(0.05)


def mac(host: str) -> str:
    return IpRoute(netns=host).link('eth0')['address']


def has_address(host: str, address: str) -> bool:
    return any(a['local'] == address for a in IpRoute(netns=host).addresses())


def addresses(host: str) -> list[tuple]:
    return sorted((a['interface'], a['local'], a['prefix'], a['label'] or '', tuple(sorted(a['flags'])))
                  for a in IpRoute(netns=host).addresses())


def neigh_mac(host: str, address: str) -> str | None:
    entries = IpRoute(netns=host).neighbours(address, 'eth0')
    return entries[0].get('lladdr') if entries else None


def flush_neigh(host: str) -> None:
    sh('ip', '-n', host, 'neigh', 'flush', 'dev', 'eth0')


# --------------------------------------------------------------------------- sockets in namespaces

def socket_in(netns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    with InNetns(netns):
        return socket.socket(family, kind, proto)


class Server:
    """A TCP server in one namespace answering each connection with its host name."""

    def __init__(self, netns: str, family: int):
        self.sock = socket_in(netns, family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.sock.bind(('::' if family == socket.AF_INET6 else '0.0.0.0', PORT))
        self.sock.listen(64)
        self.name = netns.encode()
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop:
            ready, dummy, dummy = select.select([self.sock], [], [], 0.2)
            if ready:
                try:
                    conn, dummy = self.sock.accept()
                    conn.sendall(self.name)
                    conn.close()
                except OSError:
                    pass

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def connect(netns: str, address: str, timeout: float = 0.1) -> str | None:
    """One TCP connection from `netns` to address:PORT; the name of the host that answered."""
    family = socket.AF_INET6 if ':' in address else socket.AF_INET
    sock = socket_in(netns, family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((address, PORT))
        return sock.recv(64).decode() or None
    except OSError:
        return None
    finally:
        sock.close()


def wait_neigh(host: str, address: str, lladdr: str, timeout: float = 10) -> bool:
    """Wait on `ip monitor neigh` until host's entry for address shows lladdr (no fixed sleep)."""
    if neigh_mac(host, address) == lladdr:
        return True
    mon = subprocess.Popen(['ip', '-n', host, '-j', 'monitor', 'neigh'], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if neigh_mac(host, address) == lladdr:
                return True
            ready, dummy, dummy = select.select([mon.stdout], [], [], deadline - time.monotonic())
            if ready:
                mon.stdout.readline()
        return neigh_mac(host, address) == lladdr
    finally:
        mon.kill()
        mon.wait()


# --------------------------------------------------------------------------- Ansible

CALLBACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cyha_ipcallback')


def module(args: dict, check: bool = False, diff: bool = False, name: str = 'cyrus.ha.service_ip') -> dict:
    """Run a module ad hoc through Ansible on localhost (connection local); return its full result."""
    with tempfile.TemporaryDirectory(prefix='cyha-ip-') as tmp:
        out = os.path.join(tmp, 'result.json')
        argv = [os.path.join(BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local', '-m', name,
                '-a', json.dumps(args)]
        argv += ['--check'] if check else []
        argv += ['--diff'] if diff else []
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO,
                              env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'),
                                       ANSIBLE_NOCOLOR='1', ANSIBLE_PYTHON_INTERPRETER=PYTHON,
                                       ANSIBLE_CALLBACK_PLUGINS=CALLBACKS, ANSIBLE_STDOUT_CALLBACK='cyha_ipresult',
                                       ANSIBLE_LOAD_CALLBACK_PLUGINS='1', CYHA_IP_RESULT=out))
        if not os.path.exists(out):
            raise AssertionError(f'ansible gave no result ({proc.returncode}):\n{proc.stdout[-3000:]}'
                                 f'\n{proc.stderr[-3000:]}')
        with open(out, encoding='utf-8') as handle:
            return json.load(handle)


# --------------------------------------------------------------------------- extra hosts and markers

MARK_DIR = '/run/cyrus-ha/service_ip'     # service_ip's markers (module_utils/service_ip.py MARK_DIR)


def host_up(netns: str, index: int, v4: bool = True, v6: str | None = None) -> None:
    """One more host on the rig's bridge (`netns` must start with PREFIX, so down() removes it too): eth0 with
    203.0.113.INDEX/24 when v4, and the IPv6 address `v6`/64 (no DAD) as its own address when given."""
    assert netns.startswith(PREFIX) and netns not in (SW, *HOSTS), netns
    port = 'p-' + netns[len(PREFIX):]
    sh('ip', 'netns', 'add', netns)
    sh('ip', '-n', netns, 'link', 'set', 'lo', 'up')
    sh('ip', '-n', SW, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns)
    sh('ip', '-n', SW, 'link', 'set', port, 'master', 'br0', 'up')
    sh('ip', 'netns', 'exec', netns, 'sysctl', '-q', '-w', 'net.ipv6.conf.eth0.accept_ra=0')
    if v4:
        sh('ip', '-n', netns, 'addr', 'add', f'203.0.113.{index}/24', 'dev', 'eth0')
    if v6:
        sh('ip', '-n', netns, 'addr', 'add', f'{v6}/64', 'dev', 'eth0', 'nodad')
    sh('ip', '-n', netns, 'link', 'set', 'eth0', 'up')


def host_down(netns: str) -> None:
    """Remove one extra host: its processes by PID, its namespace, its bridge port (deleted explicitly:
    namespace teardown is asynchronous)."""
    for pid in pids_in(netns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sh('ip', 'netns', 'del', netns, check=False)
    sh('ip', '-n', SW, 'link', 'del', 'p-' + netns[len(PREFIX):], check=False)


def mark_file(address: str, netns: str | None) -> str:
    return os.path.join(MARK_DIR, f'{address}@{netns or "-"}')


def read_mark(address: str, netns: str | None) -> dict | None:
    try:
        with open(mark_file(address, netns), encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def drop_marks(netns: str) -> None:
    """Remove the markers service_ip left for `netns` (tests that kill it leave some on purpose)."""
    try:
        names = os.listdir(MARK_DIR)
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(f'@{netns}'):
            try:
                os.unlink(os.path.join(MARK_DIR, name))
            except FileNotFoundError:
                pass


def kill_module_in(netns: str) -> list[int]:
    """SIGKILL every process inside `netns` (a module that entered it with setns()); the PIDs killed."""
    pids = pids_in(netns)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids
