# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Address announcement and conflict probing on raw AF_PACKET sockets, no helper binary.

IPv4: gratuitous ARP (request or reply form, RFC 5227 s. 3) and the ARP probe from 0.0.0.0.
IPv6: unsolicited neighbour advertisement with the Override flag (RFC 4861 s. 7.2.6) and the
duplicate address detection probe, a neighbour solicitation from :: (RFC 4862 s. 5.4).
Frame builders and parsers are pure functions over bytes; `Link` does the socket work.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import select
import socket
import struct
import time

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
BROADCAST = b'\xff' * 6
ZERO_MAC = b'\x00' * 6
ARP_REQUEST = 1
ARP_REPLY = 2
ICMP6_NS = 135
ICMP6_NA = 136
NA_FLAG_ROUTER = 0x80000000
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000
ALL_NODES = ipaddress.IPv6Address('ff02::1')


class AnnounceError(Exception):
    """A raw socket could not be opened or used; the message is for the user."""


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(':')
    if len(parts) != 6:
        raise ValueError(f'not a MAC address: {mac!r}')
    return bytes(int(p, 16) for p in parts)


def mac_str(raw: bytes) -> str:
    return ':'.join(f'{b:02x}' for b in raw)


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack('!H', ethertype) + payload


# --------------------------------------------------------------------------- IPv4 / ARP

def arp_frame(op: int, sha: bytes, spa: str, tha: bytes, tpa: str, eth_dst: bytes = BROADCAST) -> bytes:
    payload = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, op, sha, socket.inet_aton(spa), tha,
                          socket.inet_aton(tpa))
    return ethernet(eth_dst, sha, ETH_P_ARP, payload)


def garp(mac: str, ip: str, mode: str = 'request') -> bytes:
    """Gratuitous ARP. Linux treats a request with sender IP == target IP as gratuitous; a reply
    is gratuitous only when its target MAC is the sender's own (net/ipv4/arp.c arp_is_garp)."""
    sha = mac_bytes(mac)
    if mode == 'reply':
        return arp_frame(ARP_REPLY, sha, ip, sha, ip)
    return arp_frame(ARP_REQUEST, sha, ip, ZERO_MAC, ip)


def arp_probe(mac: str, ip: str) -> bytes:
    return arp_frame(ARP_REQUEST, mac_bytes(mac), '0.0.0.0', ZERO_MAC, ip)


def parse_arp(frame: bytes) -> dict | None:
    if len(frame) < 42 or struct.unpack('!H', frame[12:14])[0] != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack('!HHBBH6s4s6s4s', frame[14:42])
    if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
        return None
    return {'op': op, 'sha': mac_str(sha), 'spa': socket.inet_ntoa(spa), 'tha': mac_str(tha),
            'tpa': socket.inet_ntoa(tpa), 'eth_src': mac_str(frame[6:12])}


def arp_conflict(frame: bytes, ip: str, own_mac: str) -> str | None:
    """The MAC of another host claiming `ip` in this frame (its answer, its own use, or its own
    probe for the same address), else None."""
    arp = parse_arp(frame)
    if not arp or arp['sha'] == own_mac.lower():
        return None
    if arp['spa'] == ip:
        return arp['sha']
    if arp['spa'] == '0.0.0.0' and arp['tpa'] == ip and arp['op'] == ARP_REQUEST:
        return arp['sha']
    return None


# --------------------------------------------------------------------------- IPv6 / ND

def solicited_node(ip: str) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(b'\xff\x02' + b'\x00' * 9 + b'\x01\xff' + ipaddress.IPv6Address(ip).packed[13:])


def multicast_mac(group: ipaddress.IPv6Address) -> bytes:
    return b'\x33\x33' + group.packed[12:]


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b'\x00'
    total = sum(struct.unpack(f'!{len(data) // 2}H', data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv6_icmp(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, icmp: bytes) -> bytes:
    pseudo = src.packed + dst.packed + struct.pack('!I3xB', len(icmp), 58)
    csum = checksum(pseudo + icmp)
    icmp = icmp[:2] + struct.pack('!H', csum) + icmp[4:]
    header = struct.pack('!IHBB', 6 << 28, len(icmp), 58, 255) + src.packed + dst.packed
    return header + icmp


def unsolicited_na(mac: str, ip: str) -> bytes:
    """Unsolicited NA to all-nodes with Override set, Solicited clear, target link-layer option."""
    target = ipaddress.IPv6Address(ip)
    sha = mac_bytes(mac)
    icmp = struct.pack('!BBHI', ICMP6_NA, 0, 0, NA_FLAG_OVERRIDE) + target.packed + struct.pack('!BB', 2, 1) + sha
    return ethernet(multicast_mac(ALL_NODES), sha, ETH_P_IPV6, ipv6_icmp(target, ALL_NODES, icmp))


def dad_probe(mac: str, ip: str) -> bytes:
    """Neighbour solicitation from :: to the target's solicited-node group, no source option."""
    target = ipaddress.IPv6Address(ip)
    group = solicited_node(ip)
    icmp = struct.pack('!BBHI', ICMP6_NS, 0, 0, 0) + target.packed
    return ethernet(multicast_mac(group), mac_bytes(mac), ETH_P_IPV6,
                    ipv6_icmp(ipaddress.IPv6Address('::'), group, icmp))


def parse_nd(frame: bytes) -> dict | None:
    """A neighbour solicitation or advertisement: type, source, target, flags, link-layer option."""
    if len(frame) < 14 + 40 + 24 or struct.unpack('!H', frame[12:14])[0] != ETH_P_IPV6:
        return None
    ip6 = frame[14:54]
    if ip6[6] != 58:
        return None
    icmp = frame[54:]
    kind = icmp[0]
    if kind not in (ICMP6_NS, ICMP6_NA):
        return None
    flags = struct.unpack('!I', icmp[4:8])[0]
    result = {'type': kind, 'eth_src': mac_str(frame[6:12]), 'src': str(ipaddress.IPv6Address(ip6[8:24])),
              'dst': str(ipaddress.IPv6Address(ip6[24:40])), 'hop_limit': ip6[7],
              'target': str(ipaddress.IPv6Address(icmp[8:24])), 'flags': flags, 'lladdr': None}
    opts = icmp[24:]
    while len(opts) >= 8:
        otype, olen = opts[0], opts[1] * 8
        if olen == 0:
            break
        if otype in (1, 2) and olen >= 8:
            result['lladdr'] = mac_str(opts[2:8])
        opts = opts[olen:]
    return result


def nd_conflict(frame: bytes, ip: str, own_mac: str) -> str | None:
    """The MAC of another node defending `ip` (an NA for it) or probing it too (a DAD NS)."""
    nd = parse_nd(frame)
    if not nd or nd['eth_src'] == own_mac.lower():
        return None
    if ipaddress.IPv6Address(nd['target']) != ipaddress.IPv6Address(ip):
        return None
    if nd['type'] == ICMP6_NA:
        return nd['lladdr'] or nd['eth_src']
    if nd['src'] == '::':
        return nd['eth_src']
    return None


# --------------------------------------------------------------------------- sockets

class Link:
    """A raw AF_PACKET socket on one interface: send frames, watch for answers."""

    def __init__(self, interface: str, ethertype: int, sock_factory=socket.socket):
        self.interface = interface
        try:
            # Protocol 0 at creation, the ethertype at bind: a socket created with a protocol is hooked
            # on every interface at once and bind() must unhook it first, which waits for an RCU grace
            # period (8-20 ms measured here, paid by every probe and every announcement).
            self.sock = sock_factory(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self.sock.bind((interface, ethertype))
        except OSError as exc:
            raise AnnounceError(f'cannot open a raw socket on {interface}: {exc.strerror or exc}') from None

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def send(self, frame: bytes) -> float:
        try:
            self.sock.send(frame)
        except OSError as exc:
            raise AnnounceError(f'sending on {self.interface} failed: {exc.strerror or exc}') from None
        return time.monotonic()

    def watch(self, match, deadline: float):
        """Return the first non-None match(frame) of an incoming frame before `deadline`."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ready, dummy, dummy = select.select([self.sock], [], [], left)
                if not ready:
                    return None
                frame, addr = self.sock.recvfrom(65535)
            except (OSError, ValueError) as exc:
                raise AnnounceError(f'listening on {self.interface} failed: {getattr(exc, "strerror", None) or exc}') from None
            if len(addr) > 2 and addr[2] == PACKET_OUTGOING:
                continue
            found = match(frame)
            if found is not None:
                return found


def check_timing(what: str, value, low: float, high: float) -> None:
    """A count or a number of seconds must be a finite number within [low, high] before it reaches select() or
    sleep() (NaN compares false with everything, inf overflows time_t, a huge one hangs the run)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise AnnounceError(f'{what} must be a finite number from {low} to {high}, not {value!r}')


def ethertype_for(ip: str) -> int:
    """The ethertype of the probe and the announcements of `ip`: ARP, or IPv6 (neighbour discovery)."""
    return ETH_P_ARP if ipaddress.ip_address(ip).version == 4 else ETH_P_IPV6


class LinkKeeper:
    """One raw socket for a whole run, opened on first use: the probe and the announcements share
    it, and it is closed once at the end (closing a bound packet socket waits for an RCU grace
    period, some milliseconds that would otherwise fall between the probe and the address)."""

    def __init__(self, interface: str, ethertype: int, sock_factory=socket.socket):
        self.interface, self.ethertype, self.sock_factory = interface, ethertype, sock_factory
        self.link = None

    def get(self) -> Link:
        if self.link is None:
            self.link = Link(self.interface, self.ethertype, self.sock_factory)
        return self.link

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None


def _using(interface: str, ethertype: int, sock_factory, keeper: LinkKeeper | None):
    return contextlib.nullcontext(keeper.get()) if keeper is not None else Link(interface, ethertype, sock_factory)


def probe(interface: str, mac: str, ip: str, count: int = 2, timeout: float = 0.2, sock_factory=socket.socket,
          keeper: LinkKeeper | None = None) -> dict:
    """Ask the link whether anyone holds `ip`; `count` probes spread over `timeout` seconds.
    With `keeper`, its socket is used (and left open).

    Returns {'conflict': bool, 'mac': str|None, 'probes': n, 'seconds': float}."""
    check_timing('probe count', count, 1, 1000)
    check_timing('probe timeout', timeout, 0, 3600)
    version = ipaddress.ip_address(ip).version
    started = time.monotonic()
    if version == 4:
        ethertype, frame, conflict = ETH_P_ARP, arp_probe(mac, ip), arp_conflict
    else:
        ethertype, frame, conflict = ETH_P_IPV6, dad_probe(mac, ip), nd_conflict

    def match(received: bytes):
        return conflict(received, ip, mac)
    count = max(1, count)
    step = timeout / count
    found = None
    sent = 0
    with _using(interface, ethertype, sock_factory, keeper) as link:
        for n in range(count):
            link.send(frame)
            sent += 1
            found = link.watch(match, started + step * (n + 1))
            if found:
                break
    return {'conflict': found is not None, 'mac': found, 'probes': sent,
            'seconds': round(time.monotonic() - started, 6)}


def announce(interface: str, mac: str, ip: str, count: int = 3, interval: float = 0.2, mode: str = 'request',
             sock_factory=socket.socket, clock_zero: float | None = None, keeper: LinkKeeper | None = None,
             on_round=None) -> dict:
    """Send `count` announcements `interval` seconds apart (the interval is honoured).

    mode (IPv4): 'request', 'reply' or 'both' (a request then a reply each round). `on_round(n)` is called
    after round n (1-based) has been sent: the caller's step boundary."""
    check_timing('announcement count', count, 0, 1000)
    check_timing('announcement interval', interval, 0, 3600)
    version = ipaddress.ip_address(ip).version
    if version == 4:
        ethertype = ETH_P_ARP
        frames = [garp(mac, ip, 'request')] if mode == 'request' else [garp(mac, ip, 'reply')] \
            if mode == 'reply' else [garp(mac, ip, 'request'), garp(mac, ip, 'reply')]
    else:
        ethertype, frames = ETH_P_IPV6, [unsolicited_na(mac, ip)]
    zero = time.monotonic() if clock_zero is None else clock_zero
    sent = 0
    first = None
    with _using(interface, ethertype, sock_factory, keeper) as link:
        start = time.monotonic()
        for n in range(count):
            if n:
                wait = start + n * interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            for frame in frames:
                stamp = link.send(frame)
                if first is None:
                    first = stamp
                sent += 1
            if on_round is not None:
                on_round(n + 1)
    return {'sent': sent, 'first': None if first is None else round(first - zero, 6)}
