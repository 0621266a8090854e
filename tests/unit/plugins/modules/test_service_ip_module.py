# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The module's main() through AnsibleModule, and its logic against a fake `ip` that keeps state.

The real thing (namespaces, raw sockets, a client) is tested in tests/integration/test_service_ip.py;
here the fake reaches the paths a rig cannot easily produce (secondaries, a second interface)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.cyrus.ha.plugins.module_utils import service_ip as sip
from ansible_collections.cyrus.ha.plugins.modules import service_ip as module

FOREVER = 4294967295


class FakeIp:
    """Just enough of `ip` (addr show/add/del, link show, route list match) over an in-memory node."""

    def __init__(self):
        self.links = [
            {'ifindex': 1, 'ifname': 'lo', 'flags': ['LOOPBACK', 'UP', 'LOWER_UP'], 'operstate': 'UNKNOWN',
             'address': '00:00:00:00:00:00', 'addr_info': []},
            {'ifindex': 2, 'ifname': 'eth0', 'flags': ['BROADCAST', 'UP', 'LOWER_UP'], 'operstate': 'UP',
             'address': '02:00:00:00:00:02', 'addr_info': []},
            {'ifindex': 3, 'ifname': 'eth1', 'flags': ['BROADCAST', 'UP', 'LOWER_UP'], 'operstate': 'UP',
             'address': '02:00:00:00:00:03', 'addr_info': []}]
        self.calls = []
        self.add('203.0.113.2/24', 'eth0')
        self.add('2001:db8::2/64', 'eth0')
        self.add('198.51.100.2/24', 'eth1')

    def link(self, name):
        return next(link for link in self.links if link['ifname'] == name)

    def add(self, cidr, dev, label=None, extra=()):
        iface = ipaddress.ip_interface(cidr)
        info = {'family': 'inet' if iface.version == 4 else 'inet6', 'local': str(iface.ip),
                'prefixlen': iface.network.prefixlen, 'scope': 'global', 'valid_life_time': FOREVER,
                'preferred_life_time': FOREVER}
        addrs = self.link(dev)['addr_info']
        if iface.version == 4:
            info['label'] = label or dev
            if any(a['family'] == 'inet' and ipaddress.ip_address(a['local']) in iface.network for a in addrs):
                info['secondary'] = True
            addrs.append(info)
        else:
            addrs.insert(0, info)
        for flag in extra:
            info[flag] = True

    def routes(self, match):
        wanted = ipaddress.ip_network(match, strict=False)
        found = []
        for link in self.links:
            for a in link['addr_info']:
                net = ipaddress.ip_interface(f'{a["local"]}/{a["prefixlen"]}').network
                if net.version == wanted.version and wanted.subnet_of(net) and not a.get('secondary') and link['ifname'] != 'lo':
                    route = {'dst': str(net), 'dev': link['ifname'], 'metric': 0 if net.version == 4 else 256}
                    found.append(dict(route, scope='link') if net.version == 4 else route)
        return found

    def __call__(self, argv):
        self.calls.append(argv[1:])
        args = argv[1:]
        if args[0] == '-j':
            args = args[1:]
            if args[:2] == ['addr', 'show']:
                links = [l for l in self.links if len(args) < 4 or l['ifname'] == args[3]]
                return 0, json.dumps(links), ''
            if args[:2] == ['link', 'show']:
                return 0, json.dumps([{k: v for k, v in l.items() if k != 'addr_info'} for l in self.links]), ''
            if args[1:4] == ['route', 'list', 'match']:
                return 0, json.dumps(self.routes(args[4])), ''
        if args[:2] == ['addr', 'add']:
            label = args[args.index('label') + 1] if 'label' in args else None
            self.add(args[2], args[4], label, [f for f in ('noprefixroute',) if f in args])
            return 0, '', ''
        if args[:2] == ['addr', 'del']:
            iface = ipaddress.ip_interface(args[2])
            addrs = self.link(args[4])['addr_info']
            keep = [a for a in addrs if not (a['local'] == str(iface.ip) and a['prefixlen'] == iface.network.prefixlen)]
            if len(keep) == len(addrs):
                return 2, '', 'RTNETLINK answers: Cannot assign requested address'
            self.link(args[4])['addr_info'] = keep
            return 0, '', ''
        raise AssertionError(f'unexpected ip call {argv}')

    def held(self, dev):
        return [(a['local'], a['prefixlen'], a.get('label')) for a in self.link(dev)['addr_info']]


PARAMS = {'interface': None, 'label': None, 'broadcast': None, 'preferred_lft': None, 'noprefixroute': False,
          'namespace': None, 'state': 'present', 'announce_count': 0, 'announce_interval': 0.2,
          'announce_mode': 'request', 'conflict_probe': False, 'probe_count': 2, 'probe_timeout': 0.2,
          'ipv6_dad': False, 'dad_timeout': 10, 'require_link_up': True, 'force': False, 'peer_state': 'down'}
# conflict_probe=false needs peer_state (the statement that the peer cannot answer): the fake link has no peer


@pytest.fixture(autouse=True)
def marks(tmp_path, monkeypatch):
    """The module's marks of the addresses it added go to a directory of the test's own."""
    monkeypatch.setattr(sip, 'MARK_DIR', str(tmp_path / 'marks'))
    return tmp_path / 'marks'


def run(fake, check=False, **params):
    return sip.manage(dict(PARAMS, **params), fake, check, promote=lambda dev: False, setns=None)


def test_add_then_unchanged_then_check_mode_absent():
    fake = FakeIp()
    first = run(fake, address='203.0.113.50/24')
    assert first['changed'] is True and first['interface'] == 'eth0' and first['present_before'] is False
    assert ('203.0.113.50', 24, 'eth0') in fake.held('eth0')
    assert run(fake, address='203.0.113.50/24')['changed'] is False
    before = fake.held('eth0')
    predicted = run(fake, check=True, address='203.0.113.50/24', state='absent')
    assert predicted['changed'] is True and predicted['diff']['after'] == {}
    assert fake.held('eth0') == before


def test_interface_found_from_routes_and_moved_from_another_interface():
    fake = FakeIp()
    assert run(fake, check=True, address='198.51.100.50/24')['interface'] == 'eth1'
    fake.add('198.51.100.50/24', 'eth0')
    moved = run(fake, address='198.51.100.50/24', interface='eth1')
    assert moved['interface'] == 'eth1'
    assert moved['corrected'] == ['198.51.100.50/24 on eth0: interface eth0 (wanted eth1)']
    assert ('198.51.100.50', 24, 'eth1') in fake.held('eth1')
    assert all(a[0] != '198.51.100.50' for a in fake.held('eth0'))


def test_correcting_a_primary_with_secondaries_is_refused():
    fake = FakeIp()
    fake.add('203.0.113.130/25', 'eth1')      # a primary on eth1 (after its boot address)...
    fake.add('203.0.113.131/25', 'eth1')      # ...with a secondary that would go with it
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='203.0.113.130/26', interface='eth1')
    assert caught.value.msg == ('203.0.113.130/25 on eth1 differs (prefix /25 (wanted /26)) but correcting it would '
                                'delete 203.0.113.131/25 too (it is their primary and promote_secondaries is off): '
                                'refused, nothing was changed')
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='203.0.113.130/25', interface='eth1', state='absent')
    assert caught.value.msg.startswith('removing 203.0.113.130/25 from eth1 would also delete 203.0.113.131/25')
    assert ('203.0.113.130', 25, 'eth1') in fake.held('eth1')
    assert [c for c in fake.calls if c[0] == 'addr' and c[1] != 'show'] == []


def test_boot_address_and_ssh_connection_address_are_never_managed(monkeypatch):
    fake = FakeIp()
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='2001:db8::2/64', state='absent')
    assert caught.value.msg.startswith('2001:db8::2 is the own (boot) address of eth0')
    fake.add('203.0.113.60/24', 'eth0')
    monkeypatch.setenv('SSH_CONNECTION', '203.0.113.1 40000 203.0.113.60 22')
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='203.0.113.60/24', state='absent')
    assert caught.value.msg.startswith('203.0.113.60 is the own (boot) address of eth0')


def test_an_ipv6_service_address_alone_in_its_family_is_not_taken_for_the_boot_address(marks):
    fake = FakeIp()
    fake.link('eth1')['addr_info'] = [a for a in fake.link('eth1')['addr_info'] if a['family'] == 'inet']
    first = run(fake, address='2001:db8:1::50/64', interface='eth1')
    assert first['changed'] is True and sorted(p.name for p in marks.iterdir()) == ['2001:db8:1::50@-']
    assert run(fake, address='2001:db8:1::50/64', interface='eth1')['changed'] is False
    facts = sip.held_addresses(runner=fake, setns=None)
    assert [a['address'] for a in facts['service_ips']] == ['2001:db8:1::50']
    assert run(fake, address='2001:db8:1::50/64', interface='eth1', state='absent')['changed'] is True
    assert list(marks.iterdir()) == []
    # added by someone else (no mark) and alone in its family: taken for the node's own address, refused
    fake.add('2001:db8:1::51/64', 'eth1')
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='2001:db8:1::51/64', interface='eth1', state='absent')
    assert caught.value.msg.startswith('2001:db8:1::51 is the own (boot) address of eth1')


def test_a_right_copy_stays_and_only_the_wrong_copy_goes():
    fake = FakeIp()
    fake.add('198.51.100.50/24', 'eth1')
    fake.add('198.51.100.50/24', 'eth0')
    fixed = run(fake, address='198.51.100.50/24', interface='eth1')
    assert fixed['changed'] is True and fixed['corrected'] == ['198.51.100.50/24 on eth0: interface eth0 (wanted eth1)']
    assert [a for a in fake.held('eth1') if a[0] == '198.51.100.50'] == [('198.51.100.50', 24, 'eth1')]
    assert all(a[0] != '198.51.100.50' for a in fake.held('eth0'))
    assert run(fake, address='198.51.100.50/24', interface='eth1')['changed'] is False


def test_an_interface_without_an_ethernet_address_is_a_clear_error():
    fake = FakeIp()
    fake.links.append({'ifindex': 4, 'ifname': 'tun0', 'flags': ['POINTOPOINT', 'UP', 'LOWER_UP'],
                       'operstate': 'UNKNOWN', 'addr_info': []})
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='203.0.113.70/32', interface='tun0', announce_count=3)
    assert caught.value.msg == ('interface tun0 has no Ethernet address (none): gratuitous ARP, neighbour '
                                'advertisements and the conflict probe need one; set announce_count=0 and '
                                'conflict_probe=false to manage the address there without them')
    assert fake.held('tun0') == []
    added = run(fake, address='203.0.113.70/32', interface='tun0', announce_count=0, conflict_probe=False)
    assert added['changed'] is True and fake.held('tun0') == [('203.0.113.70', 32, 'tun0')]


def test_announced_needs_the_address_and_loopback_sends_nothing():
    fake = FakeIp()
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='203.0.113.50/24', state='announced')
    assert caught.value.msg == '203.0.113.50 is not on eth0: nothing to announce; use state=present'
    fake.add('2001:db8::66/64', 'eth0', extra=('dadfailed', 'tentative'))
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='2001:db8::66/64', state='announced', announce_count=3)
    assert caught.value.msg == ('2001:db8::66 on eth0 failed duplicate address detection: another node answers for '
                                'it; announcing it would steal its traffic. Nothing was sent')
    fake.add('127.0.0.1/8', 'lo')
    added = run(fake, address='203.0.113.77/32', interface='lo', announce_count=5, conflict_probe=True)
    assert added['announcements'] == {'sent': 0}
    assert added['conflict_probe'] == {'skipped': 'lo is a loopback interface'}


def test_dadfailed_removes_the_address_again(monkeypatch):
    fake = FakeIp()
    real_add = fake.add
    monkeypatch.setattr(fake, 'add', lambda cidr, dev, label=None, extra=(): real_add(
        cidr, dev, label, ['tentative', 'dadfailed'] if cidr.startswith('2001:db8::50') else extra))
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='2001:db8::50/64', ipv6_dad=True)
    assert caught.value.msg == ('2001:db8::50 on eth0: duplicate address detection failed: another node on the link '
                                'answered for it; the address was removed again')
    assert caught.value.result['changed'] is False
    assert all(a[0] != '2001:db8::50' for a in fake.held('eth0'))


class Sender:
    """ann.announce, failing while `broken` says so (a link gone away between the add and the send)."""

    def __init__(self):
        self.broken = True
        self.calls = 0

    def __call__(self, interface, mac, address, count, *rest, **kwargs):
        self.calls += 1
        if self.broken:
            raise sip.ann.AnnounceError(f'sending on {interface} failed: Network is down')
        return {'sent': count, 'first': 0.001}


def test_an_address_that_cannot_be_announced_is_taken_away_again(monkeypatch):
    sender = Sender()
    monkeypatch.setattr(sip.ann, 'announce', sender)
    fake = FakeIp()
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='203.0.113.50/24', announce_count=3)
    assert caught.value.msg == ('203.0.113.50 on eth0: sending on eth0 failed: Network is down; the address was '
                                'removed again')
    assert caught.value.result['changed'] is False
    assert all(a[0] != '203.0.113.50' for a in fake.held('eth0'))
    # so the next run does the whole takeover, announcement included, instead of finding it "present"
    sender.broken = False
    again = run(fake, address='203.0.113.50/24', announce_count=3)
    assert again['changed'] is True and again['announcements']['sent'] == 3 and sender.calls == 2


def test_a_failure_after_a_correction_still_reports_the_change(monkeypatch):
    monkeypatch.setattr(sip.ann, 'announce', Sender())
    fake = FakeIp()
    fake.add('203.0.113.50/25', 'eth0')        # the wrong prefix: corrected by deleting it, then adding /24
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='203.0.113.50/24', announce_count=3)
    assert caught.value.result['changed'] is True, 'the wrong copy is gone: that is a change'
    assert caught.value.result['corrected'] == ['203.0.113.50/25 on eth0: prefix /25 (wanted /24)']
    assert all(a[0] != '203.0.113.50' for a in fake.held('eth0'))


def test_a_probe_that_cannot_open_its_socket_changes_nothing(monkeypatch):
    def no_socket(*args, **kwargs):
        raise sip.ann.AnnounceError('cannot open a raw socket on eth0: Operation not permitted')
    monkeypatch.setattr(sip.ann, 'probe', no_socket)
    fake = FakeIp()
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='203.0.113.50/24', conflict_probe=True)
    assert caught.value.msg == ('203.0.113.50: the conflict probe on eth0 failed: cannot open a raw socket on eth0: '
                                'Operation not permitted. Nothing was changed')
    assert caught.value.result['changed'] is False
    assert all(a[0] != '203.0.113.50' for a in fake.held('eth0'))


def test_absent_reports_what_it_removed_when_a_later_removal_fails(monkeypatch):
    fake = FakeIp()
    fake.add('203.0.113.50/24', 'eth0')
    fake.add('203.0.113.50/24', 'eth1')
    real_call = fake.__class__.__call__

    def refuse_eth1(self, argv):
        if argv[1:3] == ['addr', 'del'] and argv[-1] == 'eth1':
            return 2, '', 'RTNETLINK answers: Operation not permitted'
        return real_call(self, argv)
    monkeypatch.setattr(FakeIp, '__call__', refuse_eth1)
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='203.0.113.50/24', state='absent')
    assert caught.value.msg.startswith('cannot remove 203.0.113.50/24 from eth1: ')
    assert 'Operation not permitted' in caught.value.msg and 'Nothing was changed' not in caught.value.msg
    assert caught.value.result['changed'] is True
    assert all(a[0] != '203.0.113.50' for a in fake.held('eth0'))
    assert any(a[0] == '203.0.113.50' for a in fake.held('eth1'))


def test_conflict_refuses_and_force_overrides(monkeypatch):
    answer = {'conflict': True, 'mac': '02:00:00:00:00:09', 'probes': 1, 'seconds': 0.001}
    monkeypatch.setattr(sip.ann, 'probe', lambda *a: dict(answer))
    fake = FakeIp()
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='203.0.113.50/24', conflict_probe=True)
    assert '02:00:00:00:00:09 answered the conflict probe. Nothing was changed.' in caught.value.msg
    assert caught.value.result['changed'] is False
    assert all(a[0] != '203.0.113.50' for a in fake.held('eth0'))
    forced = run(fake, address='203.0.113.50/24', conflict_probe=True, force=True, peer_state='fenced')
    assert forced['forced'] == {'peer_state': 'fenced', 'answered_by': '02:00:00:00:00:09'}


def test_link_down_is_an_error():
    fake = FakeIp()
    fake.link('eth0')['flags'] = ['BROADCAST', 'UP', 'NO-CARRIER']
    fake.link('eth0')['operstate'] = 'DOWN'
    with pytest.raises(sip.ServiceIpError) as caught:
        run(fake, address='203.0.113.50/24')
    assert caught.value.msg.startswith('interface eth0 has no carrier (DOWN): bring it up first')
    assert run(fake, address='203.0.113.50/24', require_link_up=False)['changed'] is True


@pytest.mark.parametrize('params, message', [
    ({'address': '203.0.113.50/24', 'broadcast': 'x'}, "broadcast 'x' is not an IPv4 address"),
    ({'address': '203.0.113.50/24', 'broadcast': '203.0.114.255'}, 'broadcast 203.0.114.255 is outside '
     '203.0.113.0/24: the broadcast address of 203.0.113.50/24 must lie in its subnet (normally 203.0.113.255)'),
    ({'address': '203.0.113.50/25', 'broadcast': '203.0.113.50'}, 'broadcast 203.0.113.50 is the address itself: '
     'the broadcast address of 203.0.113.50/25 is normally 203.0.113.127'),
    ({'address': '203.0.113.50/24', 'preferred_lft': 'soon'}, "preferred_lft 'soon' must be \"forever\" or a number "
     "of seconds"),
    ({'address': '2001:db8::50/64', 'broadcast': '203.0.113.255'}, 'broadcast applies to IPv4 addresses only, not '
     'to 2001:db8::50/64'),
    ({'address': '224.0.0.5/24'}, "address '224.0.0.5/24' is a multicast, unspecified or loopback address, not one a "
     "service can be reached at"),
    ({'address': '203.0.113.50/24', 'probe_count': 0}, 'probe_count must be at least 1, not 0'),
])
def test_validation(params, message):
    with pytest.raises(sip.ServiceIpError) as caught:
        sip.validate(dict(PARAMS, **params))
    assert caught.value.msg == message


def run_main(args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(capsys.readouterr().out)


def test_main_fails_cleanly_on_bad_input(capsys):
    result = run_main({'address': '203.0.113.50'}, capsys)
    assert result['failed'] is True
    assert result['msg'] == ("address '203.0.113.50' has no prefix length: write it as ADDRESS/PREFIX, "
                             'e.g. 203.0.113.50/24 or 2001:db8::50/64')


def test_main_passes_check_mode_and_returns_diff(capsys, monkeypatch):
    seen = {}

    def fake_manage(params, runner, check_mode, ip_bin):
        seen.update(check_mode=check_mode, state=params['state'], ip_bin=ip_bin)
        return {'changed': True, 'diff': {'before': {}, 'after': {}}}
    monkeypatch.setattr(module, 'manage', fake_manage)
    result = run_main({'address': '203.0.113.50/24', '_ansible_check_mode': True}, capsys)
    assert seen['check_mode'] is True and seen['state'] == 'present' and seen['ip_bin'].endswith('/ip')
    assert result['changed'] is True and result['diff'] == {'before': {}, 'after': {}}
    run_main({'address': '203.0.113.50/24'}, capsys)
    assert seen['check_mode'] is False
