# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One service address on this node: validate, compare, probe, add/remove, wait for DAD, announce.

`manage(params, runner, check_mode)` is what the `cyrus.ha.service_ip` module calls;
`held_addresses(...)` is what `cyrus.ha.service_ip_facts` calls. Both raise ServiceIpError with a
message for the user and the partial result (nothing has been changed unless it says so).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from ansible_collections.cyrus.ha.plugins.module_utils import announce as ann
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusinstance import RUN_ROOT
from ansible_collections.cyrus.ha.plugins.module_utils.iproute import (
    FOREVER, NETNS_RE, IpError, IpRoute, boot_addresses, check_label, check_name, enter_netns, flatten_addresses,
    link_state)


# What this module added, one empty file per address and network namespace. It lives in /run, like the
# runtime addresses themselves, so both are gone after a reboot. An address marked here is a service
# address even when it is the only global address of its family on its interface (an IPv6 service
# address beside an IPv4-only boot configuration), which the boot-address rule alone would take for
# the node's own address.
MARK_DIR = os.path.join(RUN_ROOT, 'service_ip')

# The conflict probe's defaults (the module's probe_count and probe_timeout).
PROBE_COUNT = 2
PROBE_TIMEOUT = 0.02


def _mark_file(mark_dir: str, namespace: str | None, address: str) -> str:
    return os.path.join(mark_dir, '%s@%s' % (address, namespace or '-'))


def marked(namespace: str | None, mark_dir: str | None = None) -> set:
    """The addresses this module added in `namespace` (None: the node's own network namespace)."""
    mark_dir = mark_dir or MARK_DIR
    suffix = '@%s' % (namespace or '-')
    try:
        names = os.listdir(mark_dir)
    except OSError:
        return set()
    return {name[:-len(suffix)] for name in names if name.endswith(suffix)}


def set_mark(namespace: str | None, address: str, on: bool, mark_dir: str | None = None) -> None:
    """Best effort: a mark that cannot be written only leaves the boot-address rule unrefined."""
    path = _mark_file(mark_dir or MARK_DIR, namespace, address)
    try:
        if on:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))
        elif os.path.lexists(path):
            os.unlink(path)
    except OSError:
        pass


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
    text, dummy, prefix = address.partition('/')
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ServiceIpError(f'address {address!r} is not a valid IPv4 or IPv6 address') from None
    limit = 32 if ip.version == 4 else 128
    if not prefix.isdigit() or not 0 < int(prefix) <= limit:
        raise ServiceIpError(f'address {address!r} has an invalid prefix length {prefix!r}: '
                             f'use 1 to {limit} for IPv{ip.version}')
    iface = ipaddress.ip_interface(f'{ip}/{int(prefix)}')
    net = iface.network
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        raise ServiceIpError(f'address {address!r} is a multicast, unspecified or loopback address, '
                             'not one a service can be reached at')
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
    return iface


def validate(params: dict):
    """Check every option that can be checked without looking at the node."""
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
        try:
            broadcast = ipaddress.IPv4Address(params['broadcast'])
        except ValueError:
            raise ServiceIpError(f'broadcast {params["broadcast"]!r} is not an IPv4 address') from None
        if broadcast == iface.ip:
            raise ServiceIpError(f'broadcast {broadcast} is the address itself: the broadcast address of '
                                 f'{iface.with_prefixlen} is normally {iface.network.broadcast_address}')
        if broadcast not in iface.network:
            raise ServiceIpError(f'broadcast {broadcast} is outside {iface.network}: the broadcast address of '
                                 f'{iface.with_prefixlen} must lie in its subnet (normally '
                                 f'{iface.network.broadcast_address})')
    for key, low in (('announce_count', 0), ('announce_interval', 0), ('probe_count', 1), ('probe_timeout', 0),
                     ('dad_timeout', 0)):
        if params.get(key) is not None and params[key] < low:
            raise ServiceIpError(f'{key} must be at least {low}, not {params[key]}')
    lft = params.get('preferred_lft')
    if lft is not None and lft != 'forever' and not str(lft).isdigit():
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
        local = str(ipaddress.ip_address(parts[2].split('%')[0]))
    except ValueError:
        return []
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
           promote=read_promote_secondaries, setns=enter_netns, mark_dir: str | None = None) -> dict:
    started = time.monotonic()
    req = Request(params, validate(params), check_mode, sock_factory, promote, mark_dir, started)
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
    ours = marked(req.namespace, req.mark_dir)
    boot = boot_addresses([a for a in addresses if a['local'] not in ours]) | set(reached_at(addresses))
    for dev, local in sorted(boot):
        if local == address:
            raise ServiceIpError(f'{address} is the own (boot) address of {dev}{where}: service_ip manages only '
                                 'service addresses added beside it, never the address the node itself is reached at')
    return Target(interface, link or {}, addresses, existing)


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
    if keep and not stale:
        result['diff'] = {'before': describe(target.current), 'after': describe(target.current)}
        req.timings['total'] = req.elapsed()
        return result
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
    result['diff'] = {'before': describe(target.current), 'after': after}
    if req.check_mode:
        result['conflict_probe'] = {'skipped': 'check mode sends nothing'}
        req.timings['total'] = req.elapsed()
        return result

    result['changed'] = False       # from here on: what was actually done
    keeper = None if target.loopback else ann.LinkKeeper(interface, ann.ethertype_for(address), req.sock_factory)
    try:
        return _take(Takeover(req, ip, target, want, result, keeper), stale, keep)
    finally:
        if keeper is not None:
            keeper.close()


def _take(t: Takeover, stale: list, keep: list) -> dict:
    """Probe, add, wait for DAD, announce (state=present, not check mode). `stale`: the differing copies
    (address, differences) to remove first; `keep`: the copies that are already right."""
    req, result, interface = t.req, t.result, t.target.interface
    if not t.target.existing:
        probe_link(t)
    mark = time.monotonic()
    remove_stale(t, stale)
    # a right copy on the target stays (only the wrong copies went): nothing to add, no DAD to wait for
    in_place = any(a['interface'] == interface for a in keep)
    skip_dad = in_place or (req.family == 6 and not req.params.get('ipv6_dad', True))
    added = False
    try:
        if not in_place:
            t.ip.add_address(req.iface, interface, t.want['label'], t.want['broadcast'], t.want['preferred_lft'],
                             t.want['noprefixroute'], nodad=skip_dad)
            added = result['changed'] = True
        set_mark(req.namespace, req.address, True, req.mark_dir)
        req.timings['address_add'] = round(time.monotonic() - mark, 6)
        if req.family == 6 and not skip_dad:
            wait_dad(t)
        req.timings['usable'] = req.elapsed()
        if not t.target.loopback and req.params.get('announce_count', 3) > 0:
            result['announcements'] = _announce(req, t.target, t.keeper)
    except (_Undo, IpError, ann.AnnounceError) as exc:
        # Nothing half-done: an address added but never announced (or failing DAD) goes again, so that
        # a second run does the whole takeover instead of finding the address "present" and stopping.
        raise undo(t, exc, added, bool(stale)) from None
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
    return ServiceIpError(f'{req.address} on {interface}{req.where}: {exc}{undone}', **t.result)


def _announce(req: Request, target: Target, keeper=None) -> dict:
    params = req.params
    sent = ann.announce(target.interface, target.mac, req.address, params.get('announce_count', 3),
                        params.get('announce_interval', 0.2), params.get('announce_mode', 'request'), req.sock_factory,
                        clock_zero=req.started, keeper=keeper)
    req.timings['first_announcement'] = sent['first']
    return {'sent': sent['sent'], 'count': params.get('announce_count', 3),
            'interval': params.get('announce_interval', 0.2), 'mode': params.get('announce_mode', 'request')
            if req.family == 4 else 'unsolicited-na'}


def held_addresses(namespace: str | None = None, within: list | None = None, runner=None, ip_bin: str = 'ip',
                   setns=enter_netns, mark_dir: str | None = None) -> dict:
    """Which service addresses this node holds now, and its boot addresses, for facts."""
    nets = []
    for net in within or []:
        try:
            nets.append(ipaddress.ip_network(net, strict=False))
        except ValueError:
            raise ServiceIpError(f'within: {net!r} is not an IPv4 or IPv6 network') from None
    try:
        if namespace:
            check_name('namespace', namespace, NETNS_RE)
            setns(namespace)
        addresses = IpRoute(ip_bin, runner).addresses()
    except IpError as exc:
        raise ServiceIpError(str(exc)) from None
    ours = marked(namespace, mark_dir)
    boot = boot_addresses([a for a in addresses if a['local'] not in ours])
    held, own = [], []
    for addr in addresses:
        if addr['scope'] != 'global':
            continue
        ip = ipaddress.ip_address(addr['local'])
        entry = {'address': addr['local'], 'prefix': addr['prefix'], 'family': f'ipv{addr["family"]}',
                 'interface': addr['interface'], 'label': addr['label'] if addr['family'] == 4 else None,
                 'tentative': 'tentative' in addr['flags'], 'dadfailed': 'dadfailed' in addr['flags']}
        if (addr['interface'], addr['local']) in boot:
            own.append(entry)
        elif not nets or any(ip in net for net in nets if net.version == ip.version):
            held.append(entry)
    return {'service_ips': held, 'boot_ips': own}
