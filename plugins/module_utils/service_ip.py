# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One service address on this node: validate, compare, probe, add/remove, wait for DAD, announce.

`manage(params, runner, check_mode)` is what the `cyrus.ha.service_ip` module calls;
`held_addresses(...)` is what `cyrus.ha.service_ip_facts` calls. Both raise ServiceIpError with a
message for the user and the partial result (nothing has been changed unless it says so).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import re
import socket
import stat
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from ansible_collections.cyrus.ha.plugins.module_utils import announce as ann, testhook
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusinstance import RUN_ROOT
from ansible_collections.cyrus.ha.plugins.module_utils.iproute import (
    FOREVER, NETNS_RE, IpError, IpRoute, boot_addresses, check_label, check_name, enter_netns, flatten_addresses,
    link_state)


# What this module added: one small JSON record per address and network namespace name. It lives in /run,
# like the runtime addresses themselves, so both are gone after a reboot. A record is trusted only while it
# names this boot (boot id), this network namespace (its nsfs device and inode: a namespace deleted and made
# again under the same name is another one) and the interface that holds the address (its ifindex); a record
# from a previous life is ignored, so the address it names counts as the node's own (never removed), and a
# state=present or state=absent run deletes it. An address marked here is a service address even when it is
# the only global address of its family on its interface (an IPv6 service address beside an IPv4-only boot
# configuration), which the boot-address rule alone would take for the node's own address.
# The record is written in state `adding` before the address is added and set to `announced` once the
# announcements went out: a run killed in between (SIGKILL, a crash) leaves `adding`, and the next
# state=present run announces the address again, reports a change and says so in `interrupted`.
MARK_DIR = os.path.join(RUN_ROOT, 'service_ip')
MARK_VERSION = 1
MARK_MAX_BYTES = 4096
BOOT_ID = '/proc/sys/kernel/random/boot_id'
SO_NETNS_COOKIE = 71

# The step boundaries of testhook.kill_point (CYRUS_HA_TEST_KILL_AT; `announced-N` after announcement round
# N): tests show the next run finishes the takeover or undoes it.
STEPS = ('probed', 'marked', 'stale-removed', 'added', 'dad', 'announced-N', 'recorded')

# The conflict probe's defaults (the module's probe_count and probe_timeout).
PROBE_COUNT = 2
PROBE_TIMEOUT = 0.02

# Every number option: (lowest, highest). Checked finite and in range before anything is read or changed.
LIMITS = {'announce_count': (0, 100), 'announce_interval': (0, 10), 'probe_count': (1, 100),
          'probe_timeout': (0.001, 10), 'dad_timeout': (0, 300)}
LFT_MAX = 4294967295


def node_identity() -> dict:
    """This boot and the network namespace the calling thread is in now: what a marker must name to be trusted."""
    try:
        with open(BOOT_ID, encoding='ascii') as handle:
            boot_id = handle.read(64).strip()
        try:
            st = os.stat('/proc/thread-self/ns/net')
        except FileNotFoundError:
            st = os.stat('/proc/self/ns/net')
    except (OSError, ValueError) as exc:
        raise ServiceIpError(f'cannot read this node\'s identity ({BOOT_ID}, /proc/thread-self/ns/net): {exc}; '
                             'nothing was changed') from None
    if not boot_id:
        raise ServiceIpError(f'{BOOT_ID} is empty: cannot tell this boot from another; nothing was changed')
    return {'boot_id': boot_id, 'netns': [st.st_dev, st.st_ino], 'netns_cookie': netns_cookie()}


def netns_cookie() -> int | None:
    """The network namespace's cookie (Linux 5.14+): unlike its inode number, never reused within a boot, so a
    namespace deleted and made again never shares it. None where the kernel has none."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            return struct.unpack('=Q', sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
    except (OSError, struct.error):
        return None


def _mark_file(mark_dir: str, namespace: str | None, address: str) -> str:
    return os.path.join(mark_dir, '%s@%s' % (address, namespace or '-'))


def marked(namespace: str | None, mark_dir: str | None = None) -> set:
    """The addresses with a marker file in `namespace` (None: the node's own network namespace), trusted or not."""
    mark_dir = mark_dir or MARK_DIR
    suffix = '@%s' % (namespace or '-')
    try:
        names = os.listdir(mark_dir)
    except OSError:
        return set()
    return {name[:-len(suffix)] for name in names if name.endswith(suffix) and not name.startswith('.')}


def read_mark(namespace: str | None, address: str, mark_dir: str | None = None) -> dict | None:
    """The record of `address`, or None when there is none or it is not a record this module wrote (a
    symlink, a FIFO, a directory, too large, not JSON, an empty marker of an older version)."""
    path = _mark_file(mark_dir or MARK_DIR, namespace, address)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MARK_MAX_BYTES:
            return None
        record = json.loads(os.read(fd, MARK_MAX_BYTES + 1).decode('utf-8'))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return record if isinstance(record, dict) else None


def trusted(record: dict | None, identity: dict, namespace: str | None, address: str, ifindex, mac=None) -> bool:
    """Whether `record` was written in this boot, in this network namespace, for `address` on the interface
    whose index is `ifindex` and whose MAC is `mac` (None: any interface)."""
    if not isinstance(record, dict) or record.get('version') != MARK_VERSION:
        return False
    if record.get('state') not in ('adding', 'announced') or record.get('address') != address:
        return False
    if record.get('namespace') != (namespace or None):
        return False
    if record.get('boot_id') != identity['boot_id'] or record.get('netns') != list(identity['netns']):
        return False
    if record.get('netns_cookie') != identity.get('netns_cookie'):
        return False
    return ifindex is None or (record.get('ifindex') == ifindex and record.get('mac') == mac)


def write_mark(namespace: str | None, address: str, state: str, identity: dict, interface: str, ifindex,
               mark_dir: str | None = None, mac: str | None = None) -> None:
    """Write the record atomically (a temporary file, then rename); OSError when it cannot be written."""
    mark_dir = mark_dir or MARK_DIR
    path = _mark_file(mark_dir, namespace, address)
    record = {'version': MARK_VERSION, 'address': address, 'namespace': namespace or None, 'state': state,
              'boot_id': identity['boot_id'], 'netns': list(identity['netns']),
              'netns_cookie': identity.get('netns_cookie'), 'interface': interface, 'ifindex': ifindex, 'mac': mac}
    os.makedirs(mark_dir, mode=0o755, exist_ok=True)
    if os.path.islink(mark_dir) or not os.path.isdir(mark_dir):
        raise OSError(f'{mark_dir} is not a directory')
    tmp = os.path.join(mark_dir, '.%s.%d.tmp' % (os.path.basename(path), os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(record, sort_keys=True).encode('ascii'))
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except OSError:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def drop_mark(namespace: str | None, address: str, mark_dir: str | None = None) -> None:
    """Best effort: remove the record (or whatever sits at its name; a symlink itself, never its target)."""
    path = _mark_file(mark_dir or MARK_DIR, namespace, address)
    with contextlib.suppress(OSError):
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
            os.unlink(path)


def set_mark(namespace: str | None, address: str, on: bool, mark_dir: str | None = None, state: str = 'announced',
             identity: dict | None = None, interface: str | None = None, ifindex=None) -> None:
    """Best effort: write (on) or remove the record of `address`."""
    if not on:
        drop_mark(namespace, address, mark_dir)
        return
    with contextlib.suppress(OSError, ServiceIpError):
        write_mark(namespace, address, state, identity or node_identity(), interface, ifindex, mark_dir)


class _Undo(Exception):
    """A step after the address was added failed: take it away again (the message says why)."""


class ServiceIpError(Exception):
    def __init__(self, msg: str, **result):
        super().__init__(msg)
        self.msg = msg
        self.result = result


def parse_address(address: str, interface: str | None):
    """The address option -> ip_interface, or ServiceIpError naming what is wrong."""
    if not isinstance(address, str) or '/' not in address:
        raise ServiceIpError(f'address {address!r} has no prefix length: write it as ADDRESS/PREFIX, '
                             f'e.g. 203.0.113.50/24 or 2001:db8::50/64')
    if not address.isascii() or not address.isprintable():
        raise ServiceIpError(f'address {address!r} contains characters that are not printable ASCII: write it with '
                             'ASCII digits, e.g. 203.0.113.50/24')
    text, dummy, prefix = address.partition('/')
    if '%' in text:
        raise ServiceIpError(f'address {address!r} has a zone index (%...): write the address without it and set '
                             'interface')
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ServiceIpError(f'address {address!r} is not a valid IPv4 or IPv6 address') from None
    limit = 32 if ip.version == 4 else 128
    if not re.fullmatch(r'[0-9]{1,3}', prefix) or not 0 < int(prefix) <= limit:
        raise ServiceIpError(f'address {address!r} has an invalid prefix length {prefix!r}: '
                             f'use 1 to {limit} for IPv{ip.version}')
    iface = ipaddress.ip_interface(f'{ip}/{int(prefix)}')
    net = iface.network
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        raise ServiceIpError(f'address {address!r} is a multicast, unspecified or loopback address, '
                             'not one a service can be reached at')
    if ip.version == 6 and ip.ipv4_mapped is not None:
        raise ServiceIpError(f'address {address!r} is an IPv4-mapped IPv6 address (::ffff:{ip.ipv4_mapped}): '
                             f'nobody reaches a service there; write the IPv4 address, {ip.ipv4_mapped}/PREFIX')
    if ip.version == 4 and net.prefixlen < 31:
        if ip == net.network_address:
            raise ServiceIpError(f'address {address!r} is the network address of {net}: its host bits are all '
                                 'zero; pick a host address inside the prefix')
        if ip == net.broadcast_address:
            raise ServiceIpError(f'address {address!r} is the broadcast address of {net}: its host bits are all '
                                 'one; pick a host address inside the prefix')
    if ip.version == 6 and net.prefixlen < 127 and ip == net.network_address:
        raise ServiceIpError(f'address {address!r} is the subnet-router anycast address of {net}: its host bits '
                             'are all zero; pick a host address inside the prefix')
    if ip.version == 6 and ip.is_link_local and not interface:
        raise ServiceIpError(f'address {address!r} is an IPv6 link-local address: it is ambiguous without an '
                             'interface; set interface')
    if ip.is_link_local:
        raise ServiceIpError(f'address {address!r} is a link-local address ({"169.254.0.0/16" if ip.version == 4 else "fe80::/10"}): '
                             'it is never routed beyond its link, and the kernel makes its own there; a service '
                             'address must be a global or unique-local one')
    return iface


def check_number(key: str, value) -> None:
    """One number option: a finite number within LIMITS[key]."""
    low, high = LIMITS[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ServiceIpError(f'{key} must be a number, not {value!r}')
    if not math.isfinite(value):
        raise ServiceIpError(f'{key} must be a finite number, not {value}')
    if value < low:
        raise ServiceIpError(f'{key} must be at least {low}, not {value}')
    if value > high:
        raise ServiceIpError(f'{key} must be at most {high}, not {value}')


def validate(params: dict):
    """Check every option that can be checked without looking at the node."""
    for key in ('namespace', 'interface', 'label', 'broadcast', 'preferred_lft', 'peer_state'):
        if params.get(key) is not None and not str(params[key]).strip():
            raise ServiceIpError(f'{key} is empty ({params[key]!r}): omit it '
                                 + ('to act in the network namespace the module runs in' if key == 'namespace' else
                                    'to use the default'))
    try:
        if params.get('namespace'):
            check_name('namespace', params['namespace'], NETNS_RE)
        if params.get('interface'):
            check_name('interface', params['interface'])
    except IpError as exc:
        raise ServiceIpError(str(exc)) from None
    iface = parse_address(params['address'], params.get('interface'))
    if iface.version == 6:
        for key in ('label', 'broadcast'):
            if params.get(key):
                raise ServiceIpError(f'{key} applies to IPv4 addresses only, not to {params["address"]}')
    if params.get('label') and len(params['label']) > 15:
        raise ServiceIpError(f'label {params["label"]!r} is {len(params["label"])} characters long: '
                             'the kernel allows at most 15')
    if params.get('broadcast'):
        text = params['broadcast']
        try:
            if not isinstance(text, str) or not text.isascii():
                raise ValueError(text)
            broadcast = ipaddress.IPv4Address(text)
        except ValueError:
            raise ServiceIpError(f'broadcast {params["broadcast"]!r} is not an IPv4 address') from None
        if broadcast == iface.ip:
            raise ServiceIpError(f'broadcast {broadcast} is the address itself: the broadcast address of '
                                 f'{iface.with_prefixlen} is normally {iface.network.broadcast_address}')
        if broadcast not in iface.network:
            raise ServiceIpError(f'broadcast {broadcast} is outside {iface.network}: the broadcast address of '
                                 f'{iface.with_prefixlen} must lie in its subnet (normally '
                                 f'{iface.network.broadcast_address})')
    for key in LIMITS:
        if params.get(key) is not None:
            check_number(key, params[key])
    lft = params.get('preferred_lft')
    if lft is not None and lft != 'forever' and not (re.fullmatch(r'[0-9]{1,10}', str(lft)) and int(lft) <= LFT_MAX):
        raise ServiceIpError(f'preferred_lft {lft!r} must be "forever" or a number of seconds')
    if params.get('force') and params.get('state') == 'present' and not params.get('peer_state'):
        raise ServiceIpError('force=true needs peer_state (fenced or down): state that the peer cannot answer')
    return iface


def describe(addr: dict | None) -> dict:
    if not addr:
        return {}
    return {'address': f'{addr["local"]}/{addr["prefix"]}', 'interface': addr['interface'],
            'label': addr['label'] if addr['family'] == 4 else None,
            'broadcast': addr['broadcast'] if addr['family'] == 4 else None,
            'noprefixroute': 'noprefixroute' in addr['flags'],
            'preferred_lft': 'forever' if addr['preferred_life_time'] == FOREVER else addr['preferred_life_time']}


def differences(addr: dict, want: dict) -> list[str]:
    """What makes an existing address not the wanted one (empty: same settings)."""
    diff = []
    if addr['interface'] != want['interface']:
        diff.append(f'interface {addr["interface"]} (wanted {want["interface"]})')
    if addr['prefix'] != want['prefix']:
        diff.append(f'prefix /{addr["prefix"]} (wanted /{want["prefix"]})')
    if want['label'] and addr['label'] != want['label']:
        diff.append(f'label {addr["label"]} (wanted {want["label"]})')
    if want['broadcast'] and addr['broadcast'] != want['broadcast']:
        diff.append(f'broadcast {addr["broadcast"]} (wanted {want["broadcast"]})')
    if ('noprefixroute' in addr['flags']) != want['noprefixroute']:
        diff.append(f'noprefixroute {"noprefixroute" in addr["flags"]} (wanted {want["noprefixroute"]})')
    lft = want['preferred_lft']
    if lft is not None:
        forever = addr['preferred_life_time'] == FOREVER
        if (lft == 'forever') != forever or (str(lft) == '0') != (addr['preferred_life_time'] == 0):
            diff.append(f'preferred_lft {"forever" if forever else addr["preferred_life_time"]} (wanted {lft})')
    if 'dadfailed' in addr['flags']:
        diff.append('dadfailed')
    return diff


def read_promote_secondaries(interface: str) -> bool:
    for path in (f'/proc/sys/net/ipv4/conf/{interface}/promote_secondaries',):
        try:
            with open(path, encoding='ascii') as handle:
                return handle.read().strip() == '1'
        except OSError:
            return False
    return False


def dropped_with(addr: dict, addresses: list[dict], promote) -> list[str]:
    """IPv4 secondaries the kernel deletes together with `addr` (a primary) unless it promotes them."""
    if addr['family'] != 4 or 'secondary' in addr['flags'] or promote(addr['interface']):
        return []
    net = ipaddress.ip_interface(f'{addr["local"]}/{addr["prefix"]}').network
    return [f'{a["local"]}/{a["prefix"]}' for a in addresses
            if a['interface'] == addr['interface'] and a['family'] == 4 and 'secondary' in a['flags']
            and a['local'] != addr['local'] and ipaddress.ip_address(a['local']) in net]


def reached_at(addresses: list[dict], environ=None) -> list[tuple]:
    """The address this run reached the node at (sshd's SSH_CONNECTION), as (interface, address)."""
    parts = (environ if environ is not None else os.environ).get('SSH_CONNECTION', '').split()
    if len(parts) != 4:
        return []
    try:
        ip = ipaddress.ip_address(parts[2].split('%')[0])
    except ValueError:
        return []
    # sshd on a dual-stack socket reports an IPv4 connection as ::ffff:a.b.c.d; the interface holds a.b.c.d
    local = str(ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped is not None else ip)
    return [(a['interface'], a['local']) for a in addresses if a['local'] == local]


def _is_ethernet(mac) -> bool:
    parts = mac.split(':') if isinstance(mac, str) else []
    return len(parts) == 6 and all(len(p) == 2 and all(c in '0123456789abcdefABCDEF' for c in p) for p in parts)


@dataclass(frozen=True)
class Request:
    """One run: the validated options (`params`, the address as `iface`), check mode, the node's hooks
    (tests replace them), and the clock and timings every step reports against."""
    params: dict
    iface: Any                          # ipaddress.IPv4Interface or IPv6Interface, from validate()
    check_mode: bool = False
    sock_factory: Callable = socket.socket
    promote: Callable = read_promote_secondaries
    mark_dir: str | None = None
    started: float = field(default_factory=time.monotonic)
    timings: dict = field(default_factory=dict)
    identity: Callable = node_identity  # () -> this boot and network namespace (markers name them)
    on_step: Callable | None = None     # step(name) at each step boundary of a takeover (the kill hook)

    def step(self, name: str) -> None:
        if self.on_step is not None:
            self.on_step(name)

    @property
    def address(self) -> str:
        return str(self.iface.ip)

    @property
    def family(self) -> int:
        return self.iface.version

    @property
    def namespace(self) -> str | None:
        return self.params.get('namespace') or None

    @property
    def where(self) -> str:
        """The namespace part of a message (empty in the node's own network namespace)."""
        return f' in network namespace {self.namespace}' if self.namespace else ''

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 6)


class Target(NamedTuple):
    """What the node has: the interface the address belongs on, its link and every address."""
    interface: str
    link: dict                          # the interface's `ip -j addr show` entry ({} when not listed)
    addresses: list                     # every address of the node, flatten_addresses()
    existing: list                      # the copies of the managed address, on any interface
    mark: dict | None = None            # the trusted marker of the address (None: none, or not trusted)
    identity: dict | None = None        # node_identity() when the node was read
    stale_mark: bool = False            # a marker file of the address that is not trusted (or names nothing)

    @property
    def mac(self) -> str | None:
        return self.link.get('address')

    @property
    def loopback(self) -> bool:
        return 'LOOPBACK' in self.link.get('flags', [])

    @property
    def on_target(self) -> list:
        return [a for a in self.existing if a['interface'] == self.interface]

    @property
    def current(self) -> dict | None:
        """The copy the diff shows: the one on the target interface, else the first elsewhere."""
        on_target = self.on_target
        return on_target[0] if on_target else (self.existing[0] if self.existing else None)


@dataclass
class Takeover:
    """A state=present run that adds the address (not in check mode): what the steps of _take share.
    `result` is reported on failure too; from the first step on its `changed` says what was done."""
    req: Request
    ip: IpRoute
    target: Target
    want: dict
    result: dict
    keeper: Any = None                  # announce.LinkKeeper: one raw socket for probe and announcements


def manage(params: dict, runner=None, check_mode: bool = False, ip_bin: str = 'ip', sock_factory=socket.socket,
           promote=read_promote_secondaries, setns=enter_netns, mark_dir: str | None = None, identity=node_identity,
           on_step=None) -> dict:
    started = time.monotonic()
    if on_step is None:
        on_step = testhook.kill_point
    req = Request(params, validate(params), check_mode, sock_factory, promote, mark_dir, started,
                  identity=identity, on_step=on_step)
    if req.namespace:
        try:
            setns(req.namespace)
        except IpError as exc:
            raise ServiceIpError(str(exc)) from None
    ip = IpRoute(ip_bin, runner)
    try:
        return _manage(req, ip)
    except (IpError, ann.AnnounceError) as exc:
        raise ServiceIpError(str(exc)) from None


def _manage(req: Request, ip: IpRoute) -> dict:
    target = find_target(req, ip)
    state, interface, where = req.params['state'], target.interface, req.where
    result = {'address': str(req.iface.with_prefixlen), 'interface': interface, 'prefix': req.iface.network.prefixlen,
              'family': f'ipv{req.family}', 'state': state, 'present_before': bool(target.existing),
              'before': describe(target.current), 'corrected': [], 'conflict_probe': {'skipped': 'not needed'},
              'announcements': {'sent': 0}, 'timings': req.timings, 'changed': False}
    mac = target.mac

    if state in ('present', 'announced') and not target.loopback and not _is_ethernet(mac) and (
            req.params.get('announce_count', 3) > 0 or (state == 'present' and req.params.get('conflict_probe', True))):
        raise ServiceIpError(f'interface {interface}{where} has no Ethernet address ({mac or "none"}): gratuitous '
                             'ARP, neighbour advertisements and the conflict probe need one; set announce_count=0 '
                             'and conflict_probe=false to manage the address there without them', **result)

    if state == 'present' and not req.params.get('conflict_probe', True) and not req.params.get('peer_state') \
            and not target.loopback and _is_ethernet(mac):
        raise ServiceIpError(f'conflict_probe=false on {interface}{where} needs peer_state (fenced or down): '
                             'without the probe nothing stops the address from being added while the peer still '
                             'holds it (two nodes answering for it); state why the peer cannot, or keep the probe',
                             **result)

    if state in ('present', 'announced') and req.params.get('require_link_up', True):
        usable, why = link_state(target.link)
        if not usable:
            raise ServiceIpError(f'interface {interface}{where} {why}: bring it up first (or set '
                                 'require_link_up=false to add the address anyway)', **result)

    if state == 'absent':
        return _release(req, ip, target, result)
    if state == 'announced':
        return _reannounce(req, target, result)
    return _present(req, ip, target, result)


def find_target(req: Request, ip: IpRoute) -> Target:
    """Read the node (one `ip -j addr show` gives both the addresses and each link's flags, state and MAC),
    pick the interface (given, or from the routes), and refuse a label or address that is not ours to manage."""
    address, where = req.address, req.where
    links = ip.json(['addr', 'show'])
    addresses = flatten_addresses(links)
    by_name = {entry.get('ifname'): entry for entry in links}
    existing = [a for a in addresses if a['local'] == address and a['family'] == req.family]
    interface = req.params.get('interface')
    if interface:
        link = by_name.get(interface)
        if link is None:
            raise ServiceIpError(f'interface {interface} does not exist{where}')
    else:
        route = ip.find_interface(str(req.iface.with_prefixlen))
        if route is None:
            raise ServiceIpError(f'no directly connected route{where} covers {req.iface.network} (default, unreachable, '
                                 'blackhole routes and routes via a gateway do not count): set interface')
        interface = route['dev']
        link = by_name.get(interface)
    if req.params.get('label'):
        try:
            check_label(req.params['label'], interface)
        except IpError as exc:
            raise ServiceIpError(str(exc)) from None
    identity = req.identity()
    ours = trusted_marks(req.namespace, addresses, identity, req.mark_dir)
    boot = boot_addresses([a for a in addresses if (a['ifindex'], a['local']) not in ours]) | set(reached_at(addresses))
    for dev, local in sorted(boot):
        if local == address:
            raise ServiceIpError(f'{address} is the own (boot) address of {dev}{where}: service_ip manages only '
                                 'service addresses added beside it, never the address the node itself is reached at')
    mark = next((ours[(a['ifindex'], a['local'])] for a in existing if (a['ifindex'], a['local']) in ours), None)
    # a marker file without a trusted address behind it: a previous life's, or ours for an address that is gone
    # (removed by hand, or the run died after writing it and before adding the address)
    stale_mark = mark is None and os.path.lexists(_mark_file(req.mark_dir or MARK_DIR, req.namespace, address))
    return Target(interface, link or {}, addresses, existing, mark, identity, stale_mark)


def trusted_marks(namespace: str | None, addresses: list, identity: dict, mark_dir: str | None) -> dict:
    """(ifindex, address) -> record, for each address of the node whose marker is trusted."""
    found = {}
    names = marked(namespace, mark_dir)
    for addr in addresses:
        if addr['local'] in names:
            record = read_mark(namespace, addr['local'], mark_dir)
            if trusted(record, identity, namespace, addr['local'], addr['ifindex'], addr.get('mac')):
                found[(addr['ifindex'], addr['local'])] = record
    return found


def cleanup_mark(req: Request, target: Target) -> None:
    """Not in check mode: delete the address's marker when it is not trusted (a previous life's) or names an
    address that is gone. Only the marker goes; an address is never removed on a marker's word."""
    if target.stale_mark and not req.check_mode:
        drop_mark(req.namespace, req.address, req.mark_dir)


def _release(req: Request, ip: IpRoute, target: Target, result: dict) -> dict:
    """state=absent: remove every copy of the address (refused when the kernel would delete secondaries with it)."""
    address, where, existing = req.address, req.where, target.existing
    for addr in existing:
        dropped = dropped_with(addr, target.addresses, req.promote)
        if dropped:
            raise ServiceIpError(f'removing {address}/{addr["prefix"]} from {addr["interface"]} would also delete '
                                 f'{", ".join(dropped)} (it is their primary and promote_secondaries is off); '
                                 'nothing was changed', **result)
    result['changed'] = bool(existing)
    result['diff'] = {'before': describe(target.current), 'after': {}}
    if existing and not req.check_mode:
        mark = time.monotonic()
        result['changed'] = False   # what was done, should a removal fail
        for addr in existing:
            try:
                ip.del_address(addr['local'], addr['prefix'], addr['interface'])
            except IpError as exc:
                raise ServiceIpError(f'cannot remove {address}/{addr["prefix"]} from {addr["interface"]}{where}: '
                                     f'{exc}{"" if result["changed"] else ". Nothing was changed"}',
                                     **result) from None
            result['changed'] = True
        req.timings['address_del'] = round(time.monotonic() - mark, 6)
    if not req.check_mode:
        set_mark(req.namespace, address, False, req.mark_dir)
    req.timings['total'] = req.elapsed()
    return result


def _reannounce(req: Request, target: Target, result: dict) -> dict:
    """state=announced: announce an address that is present on the target interface, change nothing else."""
    address, interface, where = req.address, target.interface, req.where
    on_target = target.on_target
    if not on_target:
        raise ServiceIpError(f'{address} is not on {interface}{where}: nothing to announce; use state=present',
                             **result)
    if 'dadfailed' in on_target[0]['flags']:
        raise ServiceIpError(f'{address} on {interface}{where} failed duplicate address detection: another node '
                             'answers for it; announcing it would steal its traffic. Nothing was sent', **result)
    result['changed'] = not target.loopback and req.params['announce_count'] > 0
    result['diff'] = {'before': describe(target.current), 'after': describe(target.current)}
    if result['changed'] and not req.check_mode:
        result['announcements'] = _announce(req, target)
        if target.mark and target.mark.get('state') == 'adding':
            with contextlib.suppress(OSError):
                write_mark(req.namespace, address, 'announced', target.identity, interface, target.link.get('ifindex'),
                           req.mark_dir, target.mac)
    cleanup_mark(req, target)
    req.timings['total'] = req.elapsed()
    return result


def _present(req: Request, ip: IpRoute, target: Target, result: dict) -> dict:
    """state=present: compare the copies with the wanted settings, predict (check mode) or take the address."""
    address, interface, family = req.address, target.interface, req.family
    want = {'interface': interface, 'prefix': req.iface.network.prefixlen, 'label': req.params.get('label'),
            'broadcast': req.params.get('broadcast'), 'noprefixroute': bool(req.params.get('noprefixroute')),
            'preferred_lft': req.params.get('preferred_lft')}
    stale = []
    for addr in target.existing:
        diff = differences(addr, want)
        if diff:
            stale.append((addr, diff))
    keep = [a for a in target.existing if a not in [s[0] for s in stale]]
    interrupted = bool(target.mark and target.mark.get('state') == 'adding' and target.on_target
                       and not stale and keep)
    if keep and not stale and not interrupted:
        cleanup_mark(req, target)
        result['diff'] = {'before': describe(target.current), 'after': describe(target.current)}
        req.timings['total'] = req.elapsed()
        return result
    if interrupted:
        # a run died between adding the address and announcing it (its marker still says `adding`): the
        # neighbours may still send to the old owner, so this run announces it and reports the change
        result['interrupted'] = (f'a previous run added {address} on {interface}{req.where} but stopped before '
                                 'announcing it (its marker says `adding`): this run announces it')
    for addr, diff in stale:
        dropped = dropped_with(addr, target.addresses, req.promote)
        if dropped:
            raise ServiceIpError(f'{address}/{addr["prefix"]} on {addr["interface"]} differs ({"; ".join(diff)}) but '
                                 f'correcting it would delete {", ".join(dropped)} too (it is their primary and '
                                 'promote_secondaries is off): refused, nothing was changed', **result)
        result['corrected'].append(f'{addr["local"]}/{addr["prefix"]} on {addr["interface"]}: {"; ".join(diff)}')
    result['changed'] = True
    after = {'address': str(req.iface.with_prefixlen), 'interface': interface,
             'label': want['label'] if family == 4 else None,
             'broadcast': want['broadcast'] if family == 4 else None,
             'noprefixroute': want['noprefixroute'], 'preferred_lft': want['preferred_lft'] or 'forever'}
    if family == 4 and not want['label']:
        after['label'] = interface
    result['diff'] = {'before': describe(target.current), 'after': describe(target.current) if interrupted else after}
    if req.check_mode:
        result['conflict_probe'] = {'skipped': 'check mode sends nothing'}
        req.timings['total'] = req.elapsed()
        return result

    result['changed'] = False       # from here on: what was actually done
    keeper = None if target.loopback else ann.LinkKeeper(interface, ann.ethertype_for(address), req.sock_factory)
    try:
        return _take(Takeover(req, ip, target, want, result, keeper), stale, keep, interrupted)
    finally:
        if keeper is not None:
            keeper.close()


def _take(t: Takeover, stale: list, keep: list, interrupted: bool = False) -> dict:
    """Probe, record, add, wait for DAD, announce, record (state=present, not check mode). `stale`: the
    differing copies (address, differences) to remove first; `keep`: the copies that are already right;
    `interrupted`: the address is in place with a trusted `adding` marker (a previous run died before it
    announced): only DAD (if still tentative) and the announcements are left to do.

    The marker is written in state `adding` before anything changes and set to `announced` at the end, so
    a run killed at any step boundary leaves either nothing to finish (no address) or a marker that makes
    the next run announce again."""
    req, result, interface = t.req, t.result, t.target.interface
    if not t.target.existing:
        probe_link(t)
    req.step('probed')
    ifindex = t.target.link.get('ifindex')
    try:
        write_mark(req.namespace, req.address, 'adding', t.target.identity or req.identity(), interface, ifindex,
                   req.mark_dir, t.target.mac)
    except OSError as exc:
        raise ServiceIpError(f'{req.address}: cannot record the takeover in {req.mark_dir or MARK_DIR}: '
                             f'{exc.strerror or exc}. Nothing was changed', **result) from None
    req.step('marked')
    mark = time.monotonic()
    try:
        remove_stale(t, stale)
    except ServiceIpError:
        if not t.target.existing:
            drop_mark(req.namespace, req.address, req.mark_dir)
        raise
    req.step('stale-removed')
    # a right copy on the target stays (only the wrong copies went): nothing to add
    in_place = any(a['interface'] == interface for a in keep)
    tentative = any('tentative' in a['flags'] for a in keep if a['interface'] == interface)
    no_dad = req.family == 6 and not req.params.get('ipv6_dad', True)
    skip_dad = no_dad or (in_place and not (interrupted and tentative))
    added = False
    try:
        if not in_place:
            t.ip.add_address(req.iface, interface, t.want['label'], t.want['broadcast'], t.want['preferred_lft'],
                             t.want['noprefixroute'], nodad=no_dad)
            added = result['changed'] = True
        req.step('added')
        req.timings['address_add'] = round(time.monotonic() - mark, 6)
        if req.family == 6 and not skip_dad:
            wait_dad(t)
        req.step('dad')
        req.timings['usable'] = req.elapsed()
        if not t.target.loopback and req.params.get('announce_count', 3) > 0:
            result['announcements'] = _announce(req, t.target, t.keeper)
    except Exception as exc:    # noqa: BLE001 -- whatever stops the takeover, nothing is left half done
        # Nothing half-done: an address added but never announced (or failing DAD) goes again, so that
        # a second run does the whole takeover instead of finding the address "present" and stopping.
        if not isinstance(exc, (_Undo, IpError, ann.AnnounceError, ServiceIpError)):
            exc = _Undo(f'unexpected {type(exc).__name__}: {exc}')
        raise undo(t, exc, added, bool(stale) or interrupted) from None
    with contextlib.suppress(OSError):
        # best effort: a marker left at `adding` only makes the next run announce once more
        write_mark(req.namespace, req.address, 'announced', t.target.identity or req.identity(), interface, ifindex,
                   req.mark_dir, t.target.mac)
    req.step('recorded')
    result['changed'] = True
    req.timings['total'] = req.elapsed()
    return result


def probe_link(t: Takeover) -> None:
    """Before a new address is added: the conflict probe (or why it is skipped) into the result; refused,
    with nothing changed, when a live host answers and force is not set."""
    req, result, interface, where = t.req, t.result, t.target.interface, t.req.where
    if t.target.loopback:
        result['conflict_probe'] = {'skipped': f'{interface} is a loopback interface'}
        return
    if not req.params.get('conflict_probe', True):
        result['conflict_probe'] = {'skipped': 'conflict_probe=false'}
        if req.params.get('peer_state'):
            result['conflict_probe']['peer_state'] = req.params['peer_state']   # the operator's statement, on record
        return
    try:
        found = ann.probe(interface, t.target.mac, req.address, req.params.get('probe_count', PROBE_COUNT),
                          req.params.get('probe_timeout', PROBE_TIMEOUT), req.sock_factory, t.keeper)
    except ann.AnnounceError as exc:
        raise ServiceIpError(f'{req.address}: the conflict probe on {interface}{where} failed: {exc}. Nothing was '
                             'changed', **result) from None
    result['conflict_probe'] = found
    req.timings['probe'] = found['seconds']
    if found['conflict']:
        if not req.params.get('force'):
            raise ServiceIpError(f'{req.address} is already in use on the link of {interface}{where}: '
                                 f'{found["mac"]} answered the conflict probe. Nothing was changed. Release '
                                 'the address on that host first, or, only if that host is fenced or down, '
                                 'set force=true with peer_state', **result)
        result['forced'] = {'peer_state': req.params['peer_state'], 'answered_by': found['mac']}


def remove_stale(t: Takeover, stale: list) -> None:
    """Delete the differing copies (address, differences); each one gone is a change."""
    result, where = t.result, t.req.where
    for addr, dummy in stale:
        try:
            t.ip.del_address(addr['local'], addr['prefix'], addr['interface'])
        except IpError as exc:
            raise ServiceIpError(f'{t.req.address}: cannot remove the differing copy on {addr["interface"]}{where}: '
                                 f'{exc}{"" if result["changed"] else ". Nothing was changed"}', **result) from None
        result['changed'] = True


def wait_dad(t: Takeover) -> None:
    """Wait for the kernel's duplicate address detection on the new IPv6 address; _Undo unless it passed."""
    timeout = t.req.params.get('dad_timeout', 10)
    mark = time.monotonic()
    outcome = t.ip.wait_dad(t.req.address, t.target.interface, timeout)
    t.req.timings['dad_wait'] = round(time.monotonic() - mark, 6)
    if outcome != 'done':
        raise _Undo('duplicate address detection failed: another node on the link answered for it'
                    if outcome == 'dadfailed' else
                    f'duplicate address detection did not finish within {timeout} s'
                    if outcome == 'timeout' else 'the address vanished while waiting for DAD')


def undo(t: Takeover, exc: Exception, added: bool, corrected: bool) -> ServiceIpError:
    """A step after the add failed with `exc`: remove the address again when this run added it, and the
    error to raise. `corrected`: differing copies were removed before (a change even when undone)."""
    req, interface = t.req, t.target.interface
    undone = ''
    if added:
        try:
            t.ip.del_address(req.address, req.iface.network.prefixlen, interface)
            set_mark(req.namespace, req.address, False, req.mark_dir)
            t.result['changed'] = corrected
            undone = '; the address was removed again'
        except IpError as again:
            undone = f'; removing the address again failed too ({again}): it is still on {interface}'
    elif not t.target.existing:
        drop_mark(req.namespace, req.address, req.mark_dir)     # nothing was added: the `adding` marker goes
    return ServiceIpError(f'{req.address} on {interface}{req.where}: {exc}{undone}', **t.result)


def _announce(req: Request, target: Target, keeper=None) -> dict:
    params = req.params
    sent = ann.announce(target.interface, target.mac, req.address, params.get('announce_count', 3),
                        params.get('announce_interval', 0.2), params.get('announce_mode', 'request'), req.sock_factory,
                        clock_zero=req.started, keeper=keeper, on_round=lambda n: req.step(f'announced-{n}'))
    req.timings['first_announcement'] = sent['first']
    return {'sent': sent['sent'], 'count': params.get('announce_count', 3),
            'interval': params.get('announce_interval', 0.2), 'mode': params.get('announce_mode', 'request')
            if req.family == 4 else 'unsolicited-na'}


def held_addresses(namespace: str | None = None, within: list | None = None, runner=None, ip_bin: str = 'ip',
                   setns=enter_netns, mark_dir: str | None = None, identity=node_identity) -> dict:
    """Which service addresses this node holds now, and its boot addresses, for facts."""
    nets = []
    for net in within or []:
        try:
            if not isinstance(net, str) or not net.isascii() or not net.strip():
                raise ValueError(net)
            nets.append(ipaddress.ip_network(net.strip(), strict=False))
        except ValueError:
            raise ServiceIpError(f'within: {net!r} is not an IPv4 or IPv6 network') from None
    if namespace is not None and not str(namespace).strip():
        raise ServiceIpError(f'namespace is empty ({namespace!r}): omit it to look in the network namespace the '
                             'module runs in')
    try:
        if namespace:
            check_name('namespace', namespace, NETNS_RE)
            if setns:
                setns(namespace)
        addresses = IpRoute(ip_bin, runner).addresses()
    except IpError as exc:
        raise ServiceIpError(str(exc)) from None
    ours = trusted_marks(namespace, addresses, identity(), mark_dir)
    boot = boot_addresses([a for a in addresses if (a['ifindex'], a['local']) not in ours])
    held, own = [], []
    for addr in addresses:
        if addr['scope'] != 'global':
            continue
        ip = ipaddress.ip_address(addr['local'])
        entry = {'address': addr['local'], 'prefix': addr['prefix'], 'family': f'ipv{addr["family"]}',
                 'interface': addr['interface'], 'label': addr['label'] if addr['family'] == 4 else None,
                 'tentative': 'tentative' in addr['flags'], 'dadfailed': 'dadfailed' in addr['flags'],
                 'interrupted': ours.get((addr['ifindex'], addr['local']), {}).get('state') == 'adding'}
        if (addr['interface'], addr['local']) in boot:
            own.append(entry)
        elif not nets or any(ip in net for net in nets if net.version == ip.version):
            held.append(entry)
    return {'service_ips': held, 'boot_ips': own}
