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

from ansible_collections.cyrus.ha.plugins.module_utils import announce as ann
from ansible_collections.cyrus.ha.plugins.module_utils.iproute import (
    FOREVER, NETNS_RE, IpError, IpRoute, boot_addresses, check_label, check_name, enter_netns, flatten_addresses,
    link_state)


# What this module added, one empty file per address and network namespace. It lives in /run, like the
# runtime addresses themselves, so both are gone after a reboot. An address marked here is a service
# address even when it is the only global address of its family on its interface (an IPv6 service
# address beside an IPv4-only boot configuration), which the boot-address rule alone would take for
# the node's own address.
MARK_DIR = '/run/cyrus-ha/service_ip'

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


def manage(params: dict, runner=None, check_mode: bool = False, ip_bin: str = 'ip', sock_factory=socket.socket,
           promote=read_promote_secondaries, setns=enter_netns, mark_dir: str | None = None) -> dict:
    started = time.monotonic()
    timings = {}
    iface = validate(params)
    state = params['state']
    address = str(iface.ip)
    family = iface.version
    if params.get('namespace'):
        try:
            setns(params['namespace'])
        except IpError as exc:
            raise ServiceIpError(str(exc)) from None
    ip = IpRoute(ip_bin, runner)
    try:
        return _manage(params, ip, iface, state, address, family, check_mode, sock_factory, promote, started, timings,
                       mark_dir)
    except (IpError, ann.AnnounceError) as exc:
        raise ServiceIpError(str(exc)) from None


def _is_ethernet(mac) -> bool:
    parts = mac.split(':') if isinstance(mac, str) else []
    return len(parts) == 6 and all(len(p) == 2 and all(c in '0123456789abcdefABCDEF' for c in p) for p in parts)


def _manage(params, ip, iface, state, address, family, check_mode, sock_factory, promote, started, timings,
            mark_dir):
    where = f' in network namespace {params["namespace"]}' if params.get('namespace') else ''
    # one `ip -j addr show` gives both the addresses and each link's flags, state and MAC
    links = ip.json(['addr', 'show'])
    addresses = flatten_addresses(links)
    by_name = {entry.get('ifname'): entry for entry in links}
    existing = [a for a in addresses if a['local'] == address and a['family'] == family]
    interface = params.get('interface')
    if interface:
        link = by_name.get(interface)
        if link is None:
            raise ServiceIpError(f'interface {interface} does not exist{where}')
    else:
        route = ip.find_interface(str(iface.with_prefixlen))
        if route is None:
            raise ServiceIpError(f'no directly connected route{where} covers {iface.network} (default, unreachable, '
                                 'blackhole routes and routes via a gateway do not count): set interface')
        interface = route['dev']
        link = by_name.get(interface)
    if params.get('label'):
        try:
            check_label(params['label'], interface)
        except IpError as exc:
            raise ServiceIpError(str(exc)) from None
    ours = marked(params.get('namespace'), mark_dir)
    boot = boot_addresses([a for a in addresses if a['local'] not in ours]) | set(reached_at(addresses))
    for dev, local in sorted(boot):
        if local == address:
            raise ServiceIpError(f'{address} is the own (boot) address of {dev}{where}: service_ip manages only '
                                 'service addresses added beside it, never the address the node itself is reached at')
    want = {'interface': interface, 'prefix': iface.network.prefixlen, 'label': params.get('label'),
            'broadcast': params.get('broadcast'), 'noprefixroute': bool(params.get('noprefixroute')),
            'preferred_lft': params.get('preferred_lft')}
    on_target = [a for a in existing if a['interface'] == interface]
    current = on_target[0] if on_target else (existing[0] if existing else None)
    result = {'address': str(iface.with_prefixlen), 'interface': interface, 'prefix': iface.network.prefixlen,
              'family': f'ipv{family}', 'state': state, 'present_before': bool(existing),
              'before': describe(current), 'corrected': [], 'conflict_probe': {'skipped': 'not needed'},
              'announcements': {'sent': 0}, 'timings': timings, 'changed': False}
    loopback = 'LOOPBACK' in (link or {}).get('flags', [])
    mac = (link or {}).get('address')

    if state in ('present', 'announced') and not loopback and not _is_ethernet(mac) and (
            params.get('announce_count', 3) > 0 or (state == 'present' and params.get('conflict_probe', True))):
        raise ServiceIpError(f'interface {interface}{where} has no Ethernet address ({mac or "none"}): gratuitous '
                             'ARP, neighbour advertisements and the conflict probe need one; set announce_count=0 '
                             'and conflict_probe=false to manage the address there without them', **result)

    if state in ('present', 'announced') and params.get('require_link_up', True):
        usable, why = link_state(link or {})
        if not usable:
            raise ServiceIpError(f'interface {interface}{where} {why}: bring it up first (or set '
                                 'require_link_up=false to add the address anyway)', **result)

    if state == 'absent':
        for addr in existing:
            dropped = dropped_with(addr, addresses, promote)
            if dropped:
                raise ServiceIpError(f'removing {address}/{addr["prefix"]} from {addr["interface"]} would also delete '
                                     f'{", ".join(dropped)} (it is their primary and promote_secondaries is off); '
                                     'nothing was changed', **result)
        result['changed'] = bool(existing)
        result['diff'] = {'before': describe(current), 'after': {}}
        if existing and not check_mode:
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
            timings['address_del'] = round(time.monotonic() - mark, 6)
        if not check_mode:
            set_mark(params.get('namespace'), address, False, mark_dir)
        timings['total'] = round(time.monotonic() - started, 6)
        return result

    if state == 'announced':
        if not on_target:
            raise ServiceIpError(f'{address} is not on {interface}{where}: nothing to announce; use state=present',
                                 **result)
        if 'dadfailed' in on_target[0]['flags']:
            raise ServiceIpError(f'{address} on {interface}{where} failed duplicate address detection: another node '
                                 'answers for it; announcing it would steal its traffic. Nothing was sent', **result)
        result['changed'] = not loopback and params['announce_count'] > 0
        result['diff'] = {'before': describe(current), 'after': describe(current)}
        if result['changed'] and not check_mode:
            result['announcements'] = _announce(params, interface, mac, address, sock_factory, started, timings)
        timings['total'] = round(time.monotonic() - started, 6)
        return result

    # state == present
    stale = []
    for addr in existing:
        diff = differences(addr, want)
        if diff:
            stale.append((addr, diff))
    keep = [a for a in existing if a not in [s[0] for s in stale]]
    if keep and not stale:
        result['diff'] = {'before': describe(current), 'after': describe(current)}
        timings['total'] = round(time.monotonic() - started, 6)
        return result
    for addr, diff in stale:
        dropped = dropped_with(addr, addresses, promote)
        if dropped:
            raise ServiceIpError(f'{address}/{addr["prefix"]} on {addr["interface"]} differs ({"; ".join(diff)}) but '
                                 f'correcting it would delete {", ".join(dropped)} too (it is their primary and '
                                 'promote_secondaries is off): refused, nothing was changed', **result)
        result['corrected'].append(f'{addr["local"]}/{addr["prefix"]} on {addr["interface"]}: {"; ".join(diff)}')
    result['changed'] = True
    after = {'address': str(iface.with_prefixlen), 'interface': interface,
             'label': want['label'] if family == 4 else None,
             'broadcast': want['broadcast'] if family == 4 else None,
             'noprefixroute': want['noprefixroute'], 'preferred_lft': want['preferred_lft'] or 'forever'}
    if family == 4 and not want['label']:
        after['label'] = interface
    result['diff'] = {'before': describe(current), 'after': after}
    if check_mode:
        result['conflict_probe'] = {'skipped': 'check mode sends nothing'}
        timings['total'] = round(time.monotonic() - started, 6)
        return result

    result['changed'] = False       # from here on: what was actually done
    keeper = None if loopback else ann.LinkKeeper(interface, ann.ethertype_for(address), sock_factory)
    try:
        return _take(params, ip, iface, address, family, interface, where, want, mac, loopback, existing, stale, keep,
                     result, sock_factory, keeper, started, timings, mark_dir)
    finally:
        if keeper is not None:
            keeper.close()


def _take(params, ip, iface, address, family, interface, where, want, mac, loopback, existing, stale, keep, result,
          sock_factory, keeper, started, timings, mark_dir) -> dict:
    """Probe, add, wait for DAD, announce (state=present, not check mode)."""
    if not existing:
        if loopback:
            result['conflict_probe'] = {'skipped': f'{interface} is a loopback interface'}
        elif not params.get('conflict_probe', True):
            result['conflict_probe'] = {'skipped': 'conflict_probe=false'}
        else:
            try:
                found = ann.probe(interface, mac, address, params.get('probe_count', PROBE_COUNT),
                                  params.get('probe_timeout', PROBE_TIMEOUT), sock_factory, keeper)
            except ann.AnnounceError as exc:
                raise ServiceIpError(f'{address}: the conflict probe on {interface}{where} failed: {exc}. Nothing was '
                                     'changed', **result) from None
            result['conflict_probe'] = found
            timings['probe'] = found['seconds']
            if found['conflict']:
                if not params.get('force'):
                    raise ServiceIpError(f'{address} is already in use on the link of {interface}{where}: '
                                         f'{found["mac"]} answered the conflict probe. Nothing was changed. Release '
                                         'the address on that host first, or, only if that host is fenced or down, '
                                         'set force=true with peer_state', **result)
                result['forced'] = {'peer_state': params['peer_state'], 'answered_by': found['mac']}

    mark = time.monotonic()
    for addr, dummy in stale:
        try:
            ip.del_address(addr['local'], addr['prefix'], addr['interface'])
        except IpError as exc:
            raise ServiceIpError(f'{address}: cannot remove the differing copy on {addr["interface"]}{where}: {exc}'
                                 f'{"" if result["changed"] else ". Nothing was changed"}', **result) from None
        result['changed'] = True
    # a right copy on the target stays (only the wrong copies went): nothing to add, no DAD to wait for
    in_place = any(a['interface'] == interface for a in keep)
    skip_dad = in_place or (family == 6 and not params.get('ipv6_dad', True))
    added = False
    try:
        if not in_place:
            ip.add_address(iface, interface, want['label'], want['broadcast'], want['preferred_lft'],
                           want['noprefixroute'], nodad=skip_dad)
            added = result['changed'] = True
        set_mark(params.get('namespace'), address, True, mark_dir)
        timings['address_add'] = round(time.monotonic() - mark, 6)
        if family == 6 and not skip_dad:
            mark = time.monotonic()
            outcome = ip.wait_dad(address, interface, params.get('dad_timeout', 10))
            timings['dad_wait'] = round(time.monotonic() - mark, 6)
            if outcome != 'done':
                raise _Undo('duplicate address detection failed: another node on the link answered for it'
                            if outcome == 'dadfailed' else
                            f'duplicate address detection did not finish within {params.get("dad_timeout", 10)} s'
                            if outcome == 'timeout' else 'the address vanished while waiting for DAD')
        timings['usable'] = round(time.monotonic() - started, 6)
        if not loopback and params.get('announce_count', 3) > 0:
            result['announcements'] = _announce(params, interface, mac, address, sock_factory, started, timings,
                                                keeper)
    except (_Undo, IpError, ann.AnnounceError) as exc:
        # Nothing half-done: an address added but never announced (or failing DAD) goes again, so that
        # a second run does the whole takeover instead of finding the address "present" and stopping.
        undone = ''
        if added:
            try:
                ip.del_address(address, iface.network.prefixlen, interface)
                set_mark(params.get('namespace'), address, False, mark_dir)
                result['changed'] = bool(stale)
                undone = '; the address was removed again'
            except IpError as again:
                undone = f'; removing the address again failed too ({again}): it is still on {interface}'
        raise ServiceIpError(f'{address} on {interface}{where}: {exc}{undone}', **result) from None
    result['changed'] = True
    timings['total'] = round(time.monotonic() - started, 6)
    return result


def _announce(params, interface, mac, address, sock_factory, started, timings, keeper=None) -> dict:
    sent = ann.announce(interface, mac, address, params.get('announce_count', 3), params.get('announce_interval', 0.2),
                        params.get('announce_mode', 'request'), sock_factory, clock_zero=started, keeper=keeper)
    timings['first_announcement'] = sent['first']
    return {'sent': sent['sent'], 'count': params.get('announce_count', 3),
            'interval': params.get('announce_interval', 0.2), 'mode': params.get('announce_mode', 'request')
            if ipaddress.ip_address(address).version == 4 else 'unsolicited-na'}


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
