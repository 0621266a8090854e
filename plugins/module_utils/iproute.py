# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""iproute2 through `ip -j` (JSON) and argv lists: addresses, links, routes, network namespaces.

Plain functions and one small class, usable by any module (service_ip, the warm-spare role's
modules) and by test and bench code. Parsing is kept apart from running so unit tests feed it
recorded `ip -j` output.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import json
import math
import os
import re
import time

from ansible_collections.cyrus.ha.plugins.module_utils.runner import ProcessRunner

CLONE_NEWNET = 0x40000000
NETNS_DIR = '/run/netns'
# Kernel interface names: at most 15 bytes. We also refuse anything a shell or a path would read
# specially, so a name can never smuggle an option, a glob or a directory.
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$')
LABEL_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}$')
NETNS_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')
FOREVER = 4294967295
SKIP_ROUTE_TYPES = ('unreachable', 'blackhole', 'prohibit', 'throw')


class IpError(Exception):
    """An `ip` command failed or a name/address is not acceptable. The message is for the user."""


def check_name(kind: str, name: str, pattern=NAME_RE) -> str:
    # fullmatch, not match: `$` would accept a trailing newline ('eth0\n')
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise IpError(f'{kind} {name!r} is not a valid name: use letters, digits, ".", "_", "-" '
                      f'(no spaces, slashes or shell metacharacters), at most 15 characters'
                      if pattern is NAME_RE else
                      f'{kind} {name!r} is not a valid name: use letters, digits, ".", "_", "-" '
                      f'(no spaces, slashes or shell metacharacters)')
    return name


def check_label(label: str, interface: str) -> str:
    if len(label) > 15:
        raise IpError(f'label {label!r} is {len(label)} characters long: the kernel allows at most 15')
    if not LABEL_RE.fullmatch(label):
        raise IpError(f'label {label!r} is not a valid label: use letters, digits, ".", "_", "-", ":" '
                      '(no spaces, slashes or shell metacharacters)')
    if not label.startswith(interface):
        raise IpError(f'label {label!r} must start with the interface name {interface!r} (e.g. {interface}:svc)')
    return label


# --------------------------------------------------------------------------- namespaces

def netns_path(name: str) -> str:
    check_name('network namespace', name, NETNS_RE)
    path = os.path.join(NETNS_DIR, name)
    if not os.path.exists(path):
        raise IpError(f'network namespace {name!r} does not exist (no {path}): create it with `ip netns add {name}`')
    return path


def _libc():
    return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)


def setns_fd(fd: int, libc=None) -> None:
    libc = libc or _libc()
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise IpError(f'setns() into the network namespace failed: {os.strerror(err)}')


def enter_netns(name: str, libc=None) -> None:
    """Move the calling thread (the whole process when single-threaded) into namespace `name`.

    Every later `ip` command and raw socket then works inside it, exactly as on a host."""
    path = netns_path(name)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns_fd(fd, libc)
    finally:
        os.close(fd)


class InNetns:
    """Context manager: run a block (e.g. open a socket) inside a namespace, then come back.

    Sockets keep the namespace they were created in, so a caller can hold sockets of several
    namespaces at once (test and bench code)."""

    def __init__(self, name: str | None):
        self.name = name
        self.home = -1

    def __enter__(self):
        if self.name:
            self.home = os.open('/proc/thread-self/ns/net', os.O_RDONLY | os.O_CLOEXEC)
            enter_netns(self.name)
        return self

    def __exit__(self, *exc):
        if self.home >= 0:
            try:
                setns_fd(self.home)
            finally:
                os.close(self.home)
                self.home = -1
        return False


# --------------------------------------------------------------------------- parsing

def parse_json(text: str, what: str):
    try:
        return json.loads(text or '[]')
    except ValueError:
        raise IpError(f'`ip -j {what}` did not print JSON: {text[:200]!r}') from None


def canonical(text):
    """One textual form per address (Python's ipaddress form), whoever wrote it: `ip` prints an IPv4-mapped
    IPv6 address as ::ffff:192.0.2.1, Python as ::ffff:c000:201; both become the latter. Text that is not an
    address is returned unchanged."""
    if not isinstance(text, str):
        return text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def flatten_addresses(links: list) -> list[dict]:
    """`ip -j addr show` -> one dict per address, in the kernel's order, with its interface; every address
    in canonical() form, so that it compares equal to the same address parsed by ipaddress."""
    out = []
    for link in links:
        index_in_family: dict = {}
        for info in link.get('addr_info', []):
            family = info.get('family')
            if family not in ('inet', 'inet6'):
                continue
            pos = index_in_family.get(family, 0)
            index_in_family[family] = pos + 1
            flags = set()
            for key in ('secondary', 'tentative', 'dadfailed', 'deprecated', 'noprefixroute', 'nodad',
                        'permanent', 'dynamic', 'optimistic', 'home', 'mngtmpaddr'):
                if info.get(key):
                    flags.add(key)
            out.append({
                'interface': link.get('ifname'),
                'ifindex': link.get('ifindex'),
                'mac': link.get('address'),
                'family': 4 if family == 'inet' else 6,
                'local': canonical(info.get('local')),
                'prefix': info.get('prefixlen'),
                'scope': info.get('scope'),
                'label': info.get('label'),
                'broadcast': info.get('broadcast'),
                'flags': flags,
                'preferred_life_time': info.get('preferred_life_time', FOREVER),
                'valid_life_time': info.get('valid_life_time', FOREVER),
                'position': pos,
            })
    return out


def boot_addresses(addresses: list[dict]) -> set:
    """The node's own (boot) addresses: per interface and family, the oldest global address.

    The kernel lists IPv4 addresses oldest primary first and IPv6 addresses newest first."""
    boot = set()
    groups: dict = {}
    for addr in addresses:
        if addr['scope'] == 'global' and 'dadfailed' not in addr['flags']:
            groups.setdefault((addr['interface'], addr['family']), []).append(addr)
    for (dummy, family), items in groups.items():
        if family == 4:
            primaries = [a for a in items if 'secondary' not in a['flags']] or items
            boot.add((primaries[0]['interface'], primaries[0]['local']))
        else:
            boot.add((items[-1]['interface'], items[-1]['local']))
    return boot


def pick_route(routes: list, family: int = 4) -> dict | None:
    """IPaddr2's findif: of the routes matching an address, only directly connected unicast ones count
    (never default, unreachable, blackhole, prohibit, throw or a route via a gateway; for IPv4 only
    scope link, as findif asks `ip route` for); the longest prefix wins, then the lowest metric (the
    first one wins a tie, in `ip route` order)."""
    best, best_key = None, None
    for route in routes:
        if route.get('dst') == 'default' or route.get('type', 'unicast') in SKIP_ROUTE_TYPES:
            continue
        if not route.get('dev') or route.get('gateway') or route.get('via'):
            continue
        if family == 4 and route.get('scope') != 'link':
            continue
        dst = route.get('dst', '')
        prefix = int(dst.split('/', 1)[1]) if '/' in dst else (32 if family == 4 else 128)
        key = (-prefix, route.get('metric', 0))
        if best is None or key < best_key:
            best, best_key = route, key
    return best


def link_state(link: dict) -> tuple[bool, str]:
    """(usable, reason) of one `ip -j link show` entry."""
    flags = link.get('flags', [])
    oper = link.get('operstate', 'UNKNOWN')
    if 'UP' not in flags:
        return False, 'is administratively DOWN'
    if oper == 'LOWERLAYERDOWN':
        return False, 'is LOWERLAYERDOWN (its lower device is down)'
    if 'LOWER_UP' not in flags or oper == 'DOWN' or 'NO-CARRIER' in flags:
        return False, 'has no carrier (DOWN)'
    return True, 'is up'


# --------------------------------------------------------------------------- running

class IpRoute:
    """Runs `ip` with argv lists. `runner(argv) -> (rc, stdout, stderr)`: a runner.ModuleRunner in a
    module, a runner.ProcessRunner (the default) elsewhere. `netns` adds `-n NAME` (for callers that stay
    outside)."""

    def __init__(self, ip_bin: str = 'ip', runner=None, netns: str | None = None):
        self.ip_bin = ip_bin
        self.runner = runner or ProcessRunner()
        self.netns = netns
        if netns:
            netns_path(netns)

    def run(self, args: list[str], what: str | None = None) -> str:
        argv = [self.ip_bin] + (['-n', self.netns] if self.netns else []) + args
        rc, out, err = self.runner(argv)
        if rc != 0:
            raise IpError(f'`{" ".join(argv)}` failed ({rc}): {(err or out).strip()}')
        return out

    def json(self, args: list[str]):
        return parse_json(self.run(['-j'] + args), ' '.join(args))

    def links(self) -> list:
        return self.json(['link', 'show'])

    def link(self, dev: str) -> dict | None:
        for link in self.links():
            if link.get('ifname') == dev:
                return link
        return None

    def addresses(self, dev: str | None = None) -> list[dict]:
        return flatten_addresses(self.json(['addr', 'show'] + (['dev', dev] if dev else [])))

    def find_interface(self, address: str) -> dict | None:
        """The interface for `address` (ADDRESS or ADDRESS/PREFIX: with a prefix, only routes covering
        that whole subnet match), chosen by pick_route."""
        version = ipaddress.ip_interface(address).version
        return pick_route(self.json([f'-{version}', 'route', 'list', 'match', address]), version)

    def neighbours(self, address: str, dev: str | None = None) -> list:
        return self.json(['neigh', 'show', 'to', address] + (['dev', dev] if dev else []))

    def add_address(self, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface, dev: str, label: str | None = None,
                    broadcast: str | None = None, preferred_lft: str | None = None, noprefixroute: bool = False,
                    nodad: bool = False) -> None:
        args = ['addr', 'add', str(iface), 'dev', dev]
        if label:
            args += ['label', label]
        if broadcast:
            args += ['broadcast', broadcast]
        if preferred_lft is not None:
            args += ['preferred_lft', str(preferred_lft)]
        if noprefixroute:
            args.append('noprefixroute')
        if nodad and iface.version == 6:
            args.append('nodad')
        self.run(args)

    def del_address(self, local: str, prefix: int, dev: str) -> None:
        self.run(['addr', 'del', f'{local}/{prefix}', 'dev', dev])

    def wait_dad(self, local: str, dev: str, timeout: float, interval: float = 0.01) -> str:
        """Wait until an IPv6 address leaves `tentative`. Returns 'done', 'dadfailed' or 'timeout'."""
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in (timeout, interval)):
            raise IpError(f'wait_dad needs finite, non-negative seconds, not timeout={timeout!r} interval={interval!r}')
        deadline = time.monotonic() + timeout
        while True:
            state = 'gone'
            for addr in self.addresses(dev):
                if addr['local'] == local:
                    if 'dadfailed' in addr['flags']:
                        return 'dadfailed'
                    state = 'tentative' if 'tentative' in addr['flags'] else 'done'
            if state in ('done', 'gone'):
                return 'done' if state == 'done' else 'gone'
            if time.monotonic() >= deadline:
                return 'timeout'
            time.sleep(interval)
