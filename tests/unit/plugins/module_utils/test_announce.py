# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import announce as ann

MAC = '02:00:5e:00:00:07'
OTHER = '02:00:5e:00:00:09'


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(''.join(text.split()))


# Gratuitous ARP request for 203.0.113.50 from 02:00:5e:00:00:07, byte by byte (RFC 826 / RFC 5227):
GARP_REQUEST = hexbytes('''
ff ff ff ff ff ff  02 00 5e 00 00 07  08 06
00 01  08 00  06  04  00 01
02 00 5e 00 00 07  cb 00 71 32
00 00 00 00 00 00  cb 00 71 32''')
GARP_REPLY = hexbytes('''
ff ff ff ff ff ff  02 00 5e 00 00 07  08 06
00 01  08 00  06  04  00 02
02 00 5e 00 00 07  cb 00 71 32
02 00 5e 00 00 07  cb 00 71 32''')
ARP_PROBE = hexbytes('''
ff ff ff ff ff ff  02 00 5e 00 00 07  08 06
00 01  08 00  06  04  00 01
02 00 5e 00 00 07  00 00 00 00
00 00 00 00 00 00  cb 00 71 32''')


def test_arp_frames_are_the_known_bytes():
    assert ann.garp(MAC, '203.0.113.50') == GARP_REQUEST
    assert ann.garp(MAC, '203.0.113.50', 'reply') == GARP_REPLY
    assert ann.arp_probe(MAC, '203.0.113.50') == ARP_PROBE


def test_parse_arp_round_trip_and_rejects_other_frames():
    assert ann.parse_arp(GARP_REPLY) == {'op': 2, 'sha': MAC, 'spa': '203.0.113.50', 'tha': MAC,
                                         'tpa': '203.0.113.50', 'eth_src': MAC}
    assert ann.parse_arp(GARP_REQUEST[:30]) is None
    assert ann.parse_arp(ann.unsolicited_na(MAC, '2001:db8::50')) is None


def reply_from(mac: str, ip: str) -> bytes:
    """A Linux host's answer to an ARP probe: a reply from ip to 0.0.0.0."""
    return ann.arp_frame(ann.ARP_REPLY, ann.mac_bytes(mac), ip, ann.mac_bytes(MAC), '0.0.0.0', ann.mac_bytes(MAC))


@pytest.mark.parametrize('frame, conflict', [
    (reply_from(OTHER, '203.0.113.50'), OTHER),
    (reply_from(OTHER, '203.0.113.51'), None),
    (ann.garp(OTHER, '203.0.113.50'), OTHER),                       # the holder announcing it
    (ann.arp_probe(OTHER, '203.0.113.50'), OTHER),                  # someone probing it at the same time
    (ann.arp_probe(MAC, '203.0.113.50'), None),                     # our own probe looped back
    (ann.arp_frame(ann.ARP_REQUEST, ann.mac_bytes(OTHER), '203.0.113.9', ann.ZERO_MAC, '203.0.113.50'), None),
])
def test_arp_conflict(frame, conflict):
    assert ann.arp_conflict(frame, '203.0.113.50', MAC) == conflict


def test_solicited_node_group_and_multicast_mac_rfc4291():
    assert ann.solicited_node('2001:db8::1') == ipaddress.IPv6Address('ff02::1:ff00:1')
    assert ann.solicited_node('2001:db8::cafe:50') == ipaddress.IPv6Address('ff02::1:fffe:50')
    assert ann.multicast_mac(ann.solicited_node('2001:db8::1')) == hexbytes('33 33 ff 00 00 01')


def test_checksum_known_vector():
    # RFC 1071 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2, checksum 220d
    assert ann.checksum(hexbytes('00 01 f2 03 f4 f5 f6 f7')) == 0x220D


def valid_icmp6_checksum(frame: bytes) -> bool:
    ip6, icmp = frame[14:54], frame[54:]
    pseudo = ip6[8:40] + struct.pack('!I3xB', len(icmp), 58)
    return ann.checksum(pseudo + icmp) == 0


def test_unsolicited_na_known_layout():
    frame = ann.unsolicited_na(MAC, '2001:db8::cafe:50')
    assert frame[:14] == hexbytes('33 33 00 00 00 01  02 00 5e 00 00 07  86 dd')
    assert frame[14:22] == hexbytes('60 00 00 00  00 20  3a  ff')        # v6, 32 bytes ICMPv6, hop limit 255
    assert frame[22:38] == ipaddress.IPv6Address('2001:db8::cafe:50').packed
    assert frame[38:54] == ipaddress.IPv6Address('ff02::1').packed
    assert frame[54:56] == hexbytes('88 00')                              # type 136, code 0
    assert frame[58:62] == hexbytes('20 00 00 00')                        # Override only
    assert frame[62:78] == ipaddress.IPv6Address('2001:db8::cafe:50').packed
    assert frame[78:] == hexbytes('02 01 02 00 5e 00 00 07')              # target link-layer address option
    assert valid_icmp6_checksum(frame)
    nd = ann.parse_nd(frame)
    assert (nd['type'], nd['flags'], nd['lladdr'], nd['hop_limit']) == (136, ann.NA_FLAG_OVERRIDE, MAC, 255)


def test_dad_probe_known_layout():
    frame = ann.dad_probe(MAC, '2001:db8::cafe:50')
    assert frame[:14] == hexbytes('33 33 ff fe 00 50  02 00 5e 00 00 07  86 dd')
    assert frame[22:38] == bytes(16)                                      # from ::
    assert frame[38:54] == ipaddress.IPv6Address('ff02::1:fffe:50').packed
    assert frame[54] == 135 and len(frame) == 14 + 40 + 24               # no source link-layer option
    assert valid_icmp6_checksum(frame)


def na_from(mac: str, target: str) -> bytes:
    return ann.unsolicited_na(mac, target)


@pytest.mark.parametrize('frame, conflict', [
    (na_from(OTHER, '2001:db8::cafe:50'), OTHER),
    (na_from(OTHER, '2001:db8::cafe:51'), None),
    (na_from(MAC, '2001:db8::cafe:50'), None),
    (ann.dad_probe(OTHER, '2001:db8::cafe:50'), OTHER),
    (ann.garp(OTHER, '203.0.113.50'), None),
])
def test_nd_conflict(frame, conflict):
    assert ann.nd_conflict(frame, '2001:db8::cafe:50', MAC) == conflict


class FakeSocket:
    """Stands in for the AF_PACKET socket: records what is sent, hands back canned frames."""
    instances: list = []

    def __init__(self, family, kind, proto, incoming=None, fail_bind=None):
        self.sent, self.incoming, self.fail_bind = [], list(incoming or []), fail_bind
        self.proto, self.closed = proto, False
        FakeSocket.instances.append(self)

    def bind(self, addr):
        if self.fail_bind:
            raise OSError(1, 'Operation not permitted')
        self.bound = addr

    def send(self, frame):
        self.sent.append(frame)

    def recvfrom(self, size):
        return self.incoming.pop(0), ('eth0', 0x0806, 0, 1, b'')

    def fileno(self):
        return -1

    def close(self):
        self.closed = True


def test_probe_reports_the_mac_that_answered(monkeypatch):
    answer = reply_from(OTHER, '203.0.113.50')
    monkeypatch.setattr(ann.select, 'select', lambda r, w, x, t: (r, [], []))
    found = ann.probe('eth0', MAC, '203.0.113.50', 2, 0.2,
                      sock_factory=lambda *a: FakeSocket(*a, incoming=[ann.garp(MAC, '203.0.113.50'), answer]))
    assert found['conflict'] is True and found['mac'] == OTHER and found['probes'] == 1
    assert FakeSocket.instances[-1].sent == [ARP_PROBE]
    assert FakeSocket.instances[-1].bound == ('eth0', ann.ETH_P_ARP)


def test_probe_without_answer_sends_count_probes(monkeypatch):
    monkeypatch.setattr(ann.select, 'select', lambda r, w, x, t: ([], [], []))
    monkeypatch.setattr(ann.time, 'monotonic', iter(range(100)).__next__)
    found = ann.probe('eth0', MAC, '2001:db8::cafe:50', 3, 0.3, sock_factory=FakeSocket)
    assert found['conflict'] is False and found['mac'] is None and found['probes'] == 3
    assert FakeSocket.instances[-1].sent == [ann.dad_probe(MAC, '2001:db8::cafe:50')] * 3


@pytest.mark.parametrize('mode, frames', [
    ('request', [GARP_REQUEST]), ('reply', [GARP_REPLY]), ('both', [GARP_REQUEST, GARP_REPLY])])
def test_announce_count_interval_and_mode(monkeypatch, mode, frames):
    sleeps = []
    monkeypatch.setattr(ann.time, 'sleep', sleeps.append)
    monkeypatch.setattr(ann.time, 'monotonic', lambda: 10.0)
    sent = ann.announce('eth0', MAC, '203.0.113.50', 3, 0.25, mode, sock_factory=FakeSocket, clock_zero=9.5)
    assert sent == {'sent': 3 * len(frames), 'first': 0.5}
    assert FakeSocket.instances[-1].sent == frames * 3
    assert sleeps == [0.25, 0.5]          # absolute schedule: round n at start + n * interval


def test_raw_socket_failure_is_a_clear_error():
    with pytest.raises(ann.AnnounceError) as caught:
        ann.announce('eth0', MAC, '203.0.113.50', sock_factory=lambda *a: FakeSocket(*a, fail_bind=True))
    assert str(caught.value) == 'cannot open a raw socket on eth0: Operation not permitted'
    assert socket.AF_PACKET  # Linux only, like the module


def test_the_socket_is_made_without_a_protocol_and_bound_to_the_ethertype():
    """Protocol 0 at creation: a socket created with its ethertype would be hooked on every interface
    and bind() would wait for an RCU grace period to unhook it."""
    ann.announce('eth0', MAC, '2001:db8::50', 1, 0.0, sock_factory=FakeSocket)
    made = FakeSocket.instances[-1]
    assert made.proto == 0 and made.bound == ('eth0', ann.ETH_P_IPV6) and made.closed


def test_a_keeper_gives_the_probe_and_the_announcements_one_socket(monkeypatch):
    monkeypatch.setattr(ann.select, 'select', lambda r, w, x, t: ([], [], []))
    made = []

    def factory(*args):
        made.append(FakeSocket(*args))
        return made[-1]
    keeper = ann.LinkKeeper('eth0', ann.ethertype_for('203.0.113.50'), factory)
    assert ann.probe('eth0', MAC, '203.0.113.50', 2, 0.01, keeper=keeper)['conflict'] is False
    assert ann.announce('eth0', MAC, '203.0.113.50', 2, 0.0, keeper=keeper)['sent'] == 2
    assert len(made) == 1 and made[0].sent == [ARP_PROBE, ARP_PROBE] + [ann.garp(MAC, '203.0.113.50', 'request')] * 2
    assert made[0].closed is False, 'the keeper closes it, once, at the end'
    keeper.close()
    assert made[0].closed is True


@pytest.mark.parametrize('call, message', [
    (lambda: ann.announce('eth0', MAC, '203.0.113.50', 3, float('nan'), sock_factory=FakeSocket),
     'announcement interval must be a finite number from 0 to 3600, not nan'),
    (lambda: ann.announce('eth0', MAC, '203.0.113.50', 3, float('inf'), sock_factory=FakeSocket),
     'announcement interval must be a finite number from 0 to 3600, not inf'),
    (lambda: ann.announce('eth0', MAC, '203.0.113.50', -1, 0.1, sock_factory=FakeSocket),
     'announcement count must be a finite number from 0 to 1000, not -1'),
    (lambda: ann.probe('eth0', MAC, '203.0.113.50', 2, float('nan'), sock_factory=FakeSocket),
     'probe timeout must be a finite number from 0 to 3600, not nan'),
    (lambda: ann.probe('eth0', MAC, '203.0.113.50', 10 ** 9, 0.1, sock_factory=FakeSocket),
     'probe count must be a finite number from 1 to 1000, not 1000000000'),
])
def test_numbers_that_would_reach_select_or_sleep_are_refused_before_anything_is_sent(call, message):
    FakeSocket.instances.clear()
    with pytest.raises(ann.AnnounceError) as caught:
        call()
    assert str(caught.value) == message and FakeSocket.instances == []


def test_a_failing_select_or_recv_is_a_clear_error_not_a_traceback(monkeypatch):
    def broken(*args):
        raise OSError(100, 'Network is down')
    monkeypatch.setattr(ann.select, 'select', broken)
    with pytest.raises(ann.AnnounceError) as caught:
        ann.probe('eth0', MAC, '203.0.113.50', 2, 0.1, sock_factory=FakeSocket)
    assert str(caught.value) == 'listening on eth0 failed: Network is down'


def test_each_round_is_a_step_boundary(monkeypatch):
    monkeypatch.setattr(ann.time, 'sleep', lambda s: None)
    rounds = []
    sent = ann.announce('eth0', MAC, '203.0.113.50', 3, 0.1, 'both', sock_factory=FakeSocket,
                        on_round=lambda n: rounds.append((n, len(FakeSocket.instances[-1].sent))))
    assert sent['sent'] == 6 and rounds == [(1, 2), (2, 4), (3, 6)]
