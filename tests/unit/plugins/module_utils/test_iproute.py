# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import iproute
from ansible_collections.cyrus.ha.plugins.module_utils.iproute import (
    IpError, IpRoute, boot_addresses, check_label, check_name, flatten_addresses, link_state, pick_route)

# Recorded from `ip -j addr show` (iproute2 6.1) in a namespace holding 203.0.113.50 and 2001:db8::cafe:50
ADDR_SHOW = json.loads('''[
 {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"operstate":"UNKNOWN","address":"00:00:00:00:00:00",
  "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo",
                "valid_life_time":4294967295,"preferred_life_time":4294967295},
               {"family":"inet6","local":"::1","prefixlen":128,"scope":"host",
                "valid_life_time":4294967295,"preferred_life_time":4294967295}]},
 {"ifindex":2,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"operstate":"UP",
  "address":"ae:30:c4:22:18:36",
  "addr_info":[{"family":"inet","local":"203.0.113.2","prefixlen":24,"scope":"global","label":"eth0",
                "valid_life_time":4294967295,"preferred_life_time":4294967295},
               {"family":"inet","local":"203.0.113.50","prefixlen":24,"scope":"global","secondary":true,
                "label":"eth0:imap","valid_life_time":4294967295,"preferred_life_time":4294967295},
               {"family":"inet6","local":"2001:db8::cafe:50","prefixlen":64,"scope":"global","tentative":true,
                "valid_life_time":4294967295,"preferred_life_time":4294967295},
               {"family":"inet6","local":"2001:db8::cafe:2","prefixlen":64,"scope":"global","nodad":true,
                "valid_life_time":4294967295,"preferred_life_time":4294967295},
               {"family":"inet6","local":"fe80::ac30:c4ff:fe22:1836","prefixlen":64,"scope":"link",
                "valid_life_time":4294967295,"preferred_life_time":4294967295}]}]''')


def test_flatten_keeps_kernel_order_flags_and_interface():
    flat = flatten_addresses(ADDR_SHOW)
    assert [(a['interface'], a['local'], a['prefix']) for a in flat] == [
        ('lo', '127.0.0.1', 8), ('lo', '::1', 128), ('eth0', '203.0.113.2', 24), ('eth0', '203.0.113.50', 24),
        ('eth0', '2001:db8::cafe:50', 64), ('eth0', '2001:db8::cafe:2', 64), ('eth0', 'fe80::ac30:c4ff:fe22:1836', 64)]
    vip = flat[3]
    assert vip['flags'] == {'secondary'} and vip['label'] == 'eth0:imap' and vip['mac'] == 'ae:30:c4:22:18:36'
    assert flat[4]['flags'] == {'tentative'} and flat[4]['family'] == 6


def test_boot_addresses_are_the_oldest_global_per_family():
    # IPv4: the first primary; IPv6: the kernel lists the newest first, so the last global one
    assert boot_addresses(flatten_addresses(ADDR_SHOW)) == {('eth0', '203.0.113.2'), ('eth0', '2001:db8::cafe:2')}


@pytest.mark.parametrize('routes, family, dev', [
    ([], 4, None),
    ([{'dst': 'default', 'gateway': '203.0.113.254', 'dev': 'eth0'}], 4, None),
    ([{'type': 'unreachable', 'dst': '203.0.113.0/24'}, {'type': 'blackhole', 'dst': '203.0.113.0/25'}], 4, None),
    ([{'dst': '203.0.113.0/24', 'dev': 'eth0', 'scope': 'link', 'metric': 100},
      {'dst': '203.0.113.0/24', 'dev': 'eth1', 'scope': 'link', 'metric': 10}], 4, 'eth1'),
    ([{'dst': '203.0.113.0/24', 'dev': 'eth0', 'scope': 'link'},
      {'dst': '203.0.113.0/24', 'dev': 'eth1', 'scope': 'link', 'metric': 10}], 4, 'eth0'),
    ([{'type': 'prohibit', 'dst': '203.0.113.0/24'}, {'dst': '203.0.113.0/16', 'dev': 'br0', 'scope': 'link',
                                                      'metric': 5}], 4, 'br0'),
    # findif asks for scope link: a subnet reached through a gateway is not on that link
    ([{'dst': '203.0.113.0/24', 'gateway': '198.51.100.1', 'dev': 'eth1'},
      {'dst': '203.0.113.0/16', 'dev': 'eth0', 'scope': 'link', 'metric': 500}], 4, 'eth0'),
    ([{'dst': '203.0.113.0/24', 'dev': 'eth1', 'protocol': 'static'}], 4, None),
    # the longest prefix wins over a lower metric, as findif's best mask does
    ([{'dst': '203.0.113.0/16', 'dev': 'eth0', 'scope': 'link', 'metric': 0},
      {'dst': '203.0.113.0/24', 'dev': 'eth1', 'scope': 'link', 'metric': 100}], 4, 'eth1'),
    # IPv6 routes carry no scope; a route via a gateway still does not count
    ([{'dst': '2001:db8::/64', 'dev': 'eth0', 'metric': 256}], 6, 'eth0'),
    ([{'dst': '2001:db8::/64', 'gateway': 'fe80::1', 'dev': 'eth1', 'metric': 1}], 6, None),
])
def test_pick_route_like_ipaddr2_findif(routes, family, dev):
    picked = pick_route(routes, family)
    assert (picked['dev'] if picked else None) == dev


@pytest.mark.parametrize('link, usable, reason', [
    ({'flags': ['BROADCAST', 'UP', 'LOWER_UP'], 'operstate': 'UP'}, True, 'is up'),
    ({'flags': ['LOOPBACK', 'UP', 'LOWER_UP'], 'operstate': 'UNKNOWN'}, True, 'is up'),
    ({'flags': ['BROADCAST'], 'operstate': 'DOWN'}, False, 'is administratively DOWN'),
    ({'flags': ['BROADCAST', 'UP', 'NO-CARRIER'], 'operstate': 'DOWN'}, False, 'has no carrier (DOWN)'),
    ({'flags': ['BROADCAST', 'UP'], 'operstate': 'LOWERLAYERDOWN'}, False,
     'is LOWERLAYERDOWN (its lower device is down)'),
])
def test_link_state(link, usable, reason):
    assert link_state(link) == (usable, reason)


@pytest.mark.parametrize('name', ['eth0;reboot', 'a b', '../x', 'eth0/1', '$(id)', '', 'sixteen-chars-xx', '-x'])
def test_check_name_refuses_metacharacters_and_long_names(name):
    with pytest.raises(IpError) as caught:
        check_name('interface', name)
    assert str(caught.value).startswith(f'interface {name!r} is not a valid name')


@pytest.mark.parametrize('label, message', [
    ('eth0:0123456789a', "label 'eth0:0123456789a' is 16 characters long: the kernel allows at most 15"),
    ('eth0:a b', "label 'eth0:a b' is not a valid label"),
    ('eth1:imap', "label 'eth1:imap' must start with the interface name 'eth0' (e.g. eth0:svc)"),
])
def test_check_label(label, message):
    with pytest.raises(IpError) as caught:
        check_label(label, 'eth0')
    assert str(caught.value).startswith(message)
    assert check_label('eth0:imap', 'eth0') == 'eth0:imap'


def test_runner_argv_and_errors():
    calls = []

    def runner(argv):
        calls.append(argv)
        if 'add' in argv:
            return 2, '', 'RTNETLINK answers: File exists\n'
        return 0, json.dumps(ADDR_SHOW), ''
    ip = IpRoute('/sbin/ip', runner)
    assert len(ip.addresses('eth0')) == 7
    assert calls[-1] == ['/sbin/ip', '-j', 'addr', 'show', 'dev', 'eth0']
    with pytest.raises(IpError) as caught:
        ip.add_address(__import__('ipaddress').ip_interface('2001:db8::5/64'), 'eth0', preferred_lft='0',
                       noprefixroute=True, nodad=True)
    assert calls[-1] == ['/sbin/ip', 'addr', 'add', '2001:db8::5/64', 'dev', 'eth0', 'preferred_lft', '0',
                         'noprefixroute', 'nodad']
    assert str(caught.value) == ('`/sbin/ip addr add 2001:db8::5/64 dev eth0 preferred_lft 0 noprefixroute nodad` '
                                 'failed (2): RTNETLINK answers: File exists')


def test_not_json_is_a_clear_error():
    ip = IpRoute('ip', lambda argv: (0, 'Object "addr" is unknown', ''))
    with pytest.raises(IpError) as caught:
        ip.addresses()
    assert str(caught.value) == "`ip -j addr show` did not print JSON: 'Object \"addr\" is unknown'"


def test_wait_dad_outcomes():
    states = iter([{'tentative': True}, {'tentative': True}, {}])

    def runner(argv):
        flags = next(states)
        return 0, json.dumps([{'ifname': 'eth0', 'addr_info': [dict(
            {'family': 'inet6', 'local': '2001:db8::5', 'prefixlen': 64, 'scope': 'global'}, **flags)]}]), ''
    assert IpRoute('ip', runner).wait_dad('2001:db8::5', 'eth0', 5, interval=0) == 'done'
    failed = [{'ifname': 'eth0', 'addr_info': [{'family': 'inet6', 'local': '2001:db8::5', 'prefixlen': 64,
                                                'scope': 'global', 'tentative': True, 'dadfailed': True}]}]
    assert IpRoute('ip', lambda argv: (0, json.dumps(failed), '')).wait_dad('2001:db8::5', 'eth0', 5) == 'dadfailed'
    stuck = [{'ifname': 'eth0', 'addr_info': [{'family': 'inet6', 'local': '2001:db8::5', 'prefixlen': 64,
                                               'scope': 'global', 'tentative': True}]}]
    assert IpRoute('ip', lambda argv: (0, json.dumps(stuck), '')).wait_dad('2001:db8::5', 'eth0', 0) == 'timeout'


def test_missing_namespace_and_failed_setns(tmp_path, monkeypatch):
    monkeypatch.setattr(iproute, 'NETNS_DIR', str(tmp_path))
    with pytest.raises(IpError) as caught:
        iproute.enter_netns('netns-none')
    assert str(caught.value) == (f"network namespace 'netns-none' does not exist (no {tmp_path}/netns-none): "
                                 'create it with `ip netns add netns-none`')
    (tmp_path / 'netns-file').write_text('')

    class Libc:
        @staticmethod
        def setns(fd, kind):
            assert kind == iproute.CLONE_NEWNET
            return -1
    monkeypatch.setattr(iproute.ctypes, 'get_errno', lambda: 22)
    with pytest.raises(IpError) as caught:
        iproute.enter_netns('netns-file', libc=Libc())
    assert str(caught.value) == 'setns() into the network namespace failed: Invalid argument'


@pytest.mark.parametrize('name', ['eth0\n', 'eth0 ', 'eth\u0660', ''])
def test_a_name_with_a_trailing_newline_or_non_ascii_is_refused(name):
    with pytest.raises(IpError):
        check_name('interface', name)
    with pytest.raises(IpError):
        check_label(name or ':', 'eth0')


def test_addresses_are_compared_in_one_canonical_form():
    assert iproute.canonical('2001:DB8:0::50') == '2001:db8::50'
    assert iproute.canonical('::ffff:203.0.113.5') == '::ffff:cb00:7105'
    assert iproute.canonical('not an address') == 'not an address' and iproute.canonical(None) is None


@pytest.mark.parametrize('timeout', [float('nan'), float('inf'), -1])
def test_wait_dad_refuses_a_timeout_that_would_never_end(timeout):
    ip = IpRoute('ip', runner=lambda argv: pytest.fail('nothing may run'))
    with pytest.raises(IpError) as caught:
        ip.wait_dad('2001:db8::50', 'eth0', timeout)
    assert str(caught.value).startswith('wait_dad needs finite, non-negative seconds')
