# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.service_ip on a rig of its own (holder, spare, client on a bridge), run through Ansible
with `namespace:` set: add/remove/announce, moves seen by a client, the conflict probe, DAD,
check and diff mode, and every bad input by its message."""

from __future__ import annotations

import os
import socket
import threading

import pytest

import cyha_iprig as rig
import labutil

pytestmark = pytest.mark.lab

FAMILIES = {4: (rig.VIP4, 24), 6: (rig.VIP6, 64)}


@pytest.fixture(scope='module')
def iprig():
    if os.geteuid() != 0:
        pytest.fail('the service_ip tests need root: they build network namespaces')
    servers = []
    try:
        rig.up()
        servers = [rig.Server(ns, fam) for ns in (rig.HOLDER, rig.SPARE) for fam in (socket.AF_INET, socket.AF_INET6)]
        yield rig
    finally:
        for server in servers:
            server.close()
        left = rig.down()
    assert left == [], f'rig namespaces left behind: {left}'


@pytest.fixture()
def clean(iprig):
    """Each test starts and ends with the service addresses on nobody."""
    def release():
        for ns in (rig.HOLDER, rig.SPARE):
            for vip in (rig.VIP4, rig.VIP6):
                for a in rig.IpRoute(netns=ns).addresses():
                    if a['local'] == vip:
                        rig.sh('ip', '-n', ns, 'addr', 'del', f'{vip}/{a["prefix"]}', 'dev', a['interface'])
    release()
    yield iprig
    release()


def args(ns: str, family: int, **extra) -> dict:
    vip, prefix = FAMILIES[family]
    return dict({'address': f'{vip}/{prefix}', 'namespace': ns}, **extra)


def ok(result: dict) -> dict:
    assert result['cyha_status'] == 'ok', result.get('msg', result)
    return result


def failed(result: dict) -> str:
    assert result['cyha_status'] == 'failed', result
    return result['msg']


@pytest.mark.parametrize('family', [4, 6])
def test_present_absent_idempotent_check_and_diff(clean, family):
    vip, prefix = FAMILIES[family]
    untouched = {ns: rig.addresses(ns) for ns in rig.HOSTS}

    predicted = ok(rig.module(args(rig.HOLDER, family), check=True, diff=True))
    assert predicted['changed'] is True
    assert predicted['conflict_probe'] == {'skipped': 'check mode sends nothing'}
    assert predicted['announcements'] == {'sent': 0}
    assert {ns: rig.addresses(ns) for ns in rig.HOSTS} == untouched

    first = ok(rig.module(args(rig.HOLDER, family), diff=True))
    assert first['changed'] is True and first['present_before'] is False
    assert (first['interface'], first['prefix'], first['family']) == ('eth0', prefix, f'ipv{family}')
    assert first['conflict_probe']['conflict'] is False and first['conflict_probe']['probes'] == 2
    assert first['announcements']['sent'] == 3
    assert {'probe', 'address_add', 'usable', 'first_announcement', 'total'} <= set(first['timings'])
    assert ('dad_wait' in first['timings']) is (family == 6)
    assert rig.has_address(rig.HOLDER, vip)
    assert first['diff'] == {'before': {}, 'after': predicted['diff']['after']}
    # diff mode's prediction matches what the kernel now reports
    again = ok(rig.module(args(rig.HOLDER, family), diff=True))
    assert again['changed'] is False and again['present_before'] is True
    assert again['announcements'] == {'sent': 0}
    assert again['diff']['before'] == predicted['diff']['after']
    held = {ns: rig.addresses(ns) for ns in rig.HOSTS}
    assert ok(rig.module(args(rig.HOLDER, family), check=True))['changed'] is False
    assert {ns: rig.addresses(ns) for ns in rig.HOSTS} == held

    predicted = ok(rig.module(args(rig.HOLDER, family, state='absent'), check=True, diff=True))
    assert predicted['changed'] is True and predicted['diff']['after'] == {}
    assert rig.has_address(rig.HOLDER, vip)
    gone = ok(rig.module(args(rig.HOLDER, family, state='absent')))
    assert gone['changed'] is True and gone['announcements'] == {'sent': 0}
    assert not rig.has_address(rig.HOLDER, vip)
    assert ok(rig.module(args(rig.HOLDER, family, state='absent')))['changed'] is False
    assert ok(rig.module(args(rig.HOLDER, family, state='absent'), check=True))['changed'] is False
    assert {ns: rig.addresses(ns) for ns in rig.HOSTS} == untouched


@pytest.mark.parametrize('family', [4, 6])
def test_move_updates_client_neighbour_entry_and_client_reaches_new_owner(clean, family):
    vip, dummy = FAMILIES[family]
    ok(rig.module(args(rig.HOLDER, family)))
    assert labutil.poll(lambda: rig.connect(rig.CLIENT, vip) == rig.HOLDER, 10)
    holder_mac, spare_mac = rig.mac(rig.HOLDER), rig.mac(rig.SPARE)
    assert rig.neigh_mac(rig.CLIENT, vip) == holder_mac

    ok(rig.module(args(rig.HOLDER, family, state='absent')))
    moved = ok(rig.module(args(rig.SPARE, family)))
    assert moved['changed'] is True and moved['announcements']['sent'] == 3
    # the client has sent nothing since: only the announcement can have changed its entry
    assert rig.wait_neigh(rig.CLIENT, vip, spare_mac), rig.neigh_mac(rig.CLIENT, vip)
    assert labutil.poll(lambda: rig.connect(rig.CLIENT, vip) == rig.SPARE, 5)

    announced = ok(rig.module(args(rig.SPARE, family, state='announced', announce_count=2, announce_interval=0.05)))
    assert announced['changed'] is True and announced['announcements']['sent'] == 2
    assert ok(rig.module(args(rig.SPARE, family, state='announced'), check=True))['announcements'] == {'sent': 0}
    msg = failed(rig.module(args(rig.HOLDER, family, state='announced')))
    assert msg == f'{vip} is not on eth0 in network namespace {rig.HOLDER}: nothing to announce; use state=present'


@pytest.mark.parametrize('family', [4, 6])
def test_conflict_probe_refuses_while_holder_answers(clean, family):
    vip, prefix = FAMILIES[family]
    ok(rig.module(args(rig.HOLDER, family)))
    before = rig.addresses(rig.SPARE)
    result = rig.module(args(rig.SPARE, family))
    msg = failed(result)
    holder_mac = rig.mac(rig.HOLDER)
    assert msg == (f'{vip} is already in use on the link of eth0 in network namespace {rig.SPARE}: {holder_mac} '
                   'answered the conflict probe. Nothing was changed. Release the address on that host first, or, '
                   'only if that host is fenced or down, set force=true with peer_state')
    assert result['changed'] is False and result['conflict_probe']['mac'] == holder_mac
    assert rig.addresses(rig.SPARE) == before
    msg = failed(rig.module(args(rig.SPARE, family, force=True)))
    assert msg == 'force is True but all of the following are missing: peer_state'
    if family == 4:
        forced = ok(rig.module(args(rig.SPARE, family, force=True, peer_state='fenced')))
        assert forced['changed'] is True
        assert forced['forced'] == {'peer_state': 'fenced', 'answered_by': holder_mac}
        assert rig.has_address(rig.SPARE, vip)
    else:
        # Forced past the probe, the kernel's own DAD still sees the holder: the address is removed again.
        msg = failed(rig.module(args(rig.SPARE, family, force=True, peer_state='down')))
        assert msg == (f'{vip} on eth0 in network namespace {rig.SPARE}: duplicate address detection failed: '
                       'another node on the link answered for it; the address was removed again')
        assert not rig.has_address(rig.SPARE, vip)


def test_corrects_a_different_prefix_and_reports_it(clean):
    ok(rig.module(args(rig.HOLDER, 4, address=f'{rig.VIP4}/25')))
    fixed = ok(rig.module(args(rig.HOLDER, 4, label='eth0:imap'), diff=True))
    assert fixed['changed'] is True
    assert fixed['corrected'] == [f'{rig.VIP4}/25 on eth0: prefix /25 (wanted /24); label eth0 (wanted eth0:imap)']
    assert fixed['diff']['before']['address'] == f'{rig.VIP4}/25'
    assert [(a[1], a[2], a[3]) for a in rig.addresses(rig.HOLDER) if a[1] == rig.VIP4] == [(rig.VIP4, 24, 'eth0:imap')]
    assert ok(rig.module(args(rig.HOLDER, 4, label='eth0:imap')))['changed'] is False


def test_noprefixroute_preferred_lft_and_broadcast_are_applied_and_compared(clean):
    v6 = ok(rig.module(args(rig.HOLDER, 6, noprefixroute=True, preferred_lft='0', ipv6_dad=False)))
    assert v6['changed'] is True
    flags = [a[4] for a in rig.addresses(rig.HOLDER) if a[1] == rig.VIP6]
    assert flags == [('deprecated', 'noprefixroute', 'nodad')] or flags == [('deprecated', 'nodad', 'noprefixroute')]
    assert ok(rig.module(args(rig.HOLDER, 6, noprefixroute=True, preferred_lft='0')))['changed'] is False
    back = ok(rig.module(args(rig.HOLDER, 6, ipv6_dad=False)))
    assert back['corrected'] == [f'{rig.VIP6}/64 on eth0: noprefixroute True (wanted False)']
    v4 = ok(rig.module(args(rig.HOLDER, 4, broadcast='203.0.113.127')))
    assert v4['changed'] is True
    assert ok(rig.module(args(rig.HOLDER, 4, broadcast='203.0.113.127')))['changed'] is False
    fixed = ok(rig.module(args(rig.HOLDER, 4, broadcast='203.0.113.255')))
    assert fixed['corrected'] == [f'{rig.VIP4}/24 on eth0: broadcast 203.0.113.127 (wanted 203.0.113.255)']


def test_facts_list_the_service_addresses_held(clean):
    ok(rig.module(args(rig.SPARE, 4)))
    ok(rig.module(args(rig.SPARE, 6, ipv6_dad=False)))
    facts = ok(rig.module({'namespace': rig.SPARE}, name='cyrus.ha.service_ip_facts'))['ansible_facts']
    assert [(f['address'], f['prefix']) for f in facts['cyrus_ha_service_ips']] == [(rig.VIP4, 24), (rig.VIP6, 64)]
    assert sorted(f['address'] for f in facts['cyrus_ha_boot_ips']) == [rig.addr6(rig.SPARE), rig.addr4(rig.SPARE)]
    only6 = ok(rig.module({'namespace': rig.SPARE, 'within': ['2001:db8::/64']},
                          name='cyrus.ha.service_ip_facts'))['ansible_facts']
    assert [f['address'] for f in only6['cyrus_ha_service_ips']] == [rig.VIP6]
    none = ok(rig.module({'namespace': rig.HOLDER}, name='cyrus.ha.service_ip_facts'))['ansible_facts']
    assert none['cyrus_ha_service_ips'] == []


def test_down_link_is_an_error_not_a_silent_success(clean):
    rig.sh('ip', '-n', rig.SW, 'link', 'set', 'p-spare', 'down')
    try:
        msg = failed(rig.module(args(rig.SPARE, 4)))
        assert msg == (f'interface eth0 in network namespace {rig.SPARE} has no carrier (DOWN): bring it up first '
                       '(or set require_link_up=false to add the address anyway)')
        assert not rig.has_address(rig.SPARE, rig.VIP4)
    finally:
        rig.sh('ip', '-n', rig.SW, 'link', 'set', 'p-spare', 'up')


BAD = [
    ({'address': '203.0.113.300/24'}, "address '203.0.113.300/24' is not a valid IPv4 or IPv6 address"),
    ({'address': '203.0.113.50'}, "address '203.0.113.50' has no prefix length: write it as ADDRESS/PREFIX, "
     "e.g. 203.0.113.50/24 or 2001:db8::50/64"),
    ({'address': '203.0.113.50/33'}, "address '203.0.113.50/33' has an invalid prefix length '33': use 1 to 32 "
     "for IPv4"),
    ({'address': '203.0.113.0/24'}, "address '203.0.113.0/24' is the network address of 203.0.113.0/24: its host "
     "bits are all zero; pick a host address inside the prefix"),
    ({'address': '203.0.113.255/24'}, "address '203.0.113.255/24' is the broadcast address of 203.0.113.0/24: its "
     "host bits are all one; pick a host address inside the prefix"),
    ({'address': '2001:db8::/64'}, "address '2001:db8::/64' is the subnet-router anycast address of 2001:db8::/64: "
     "its host bits are all zero; pick a host address inside the prefix"),
    ({'address': 'fe80::50/64'}, "address 'fe80::50/64' is an IPv6 link-local address: it is ambiguous without an "
     "interface; set interface"),
    ({'address': '203.0.113.50/24', 'interface': 'eth9'}, f'interface eth9 does not exist in network namespace '
     f'{rig.SPARE}'),
    ({'address': '203.0.113.50/24', 'namespace': 'cyha-ip-nosuch'}, "network namespace 'cyha-ip-nosuch' does not "
     "exist (no /run/netns/cyha-ip-nosuch): create it with `ip netns add cyha-ip-nosuch`"),
    ({'address': '203.0.113.50/24', 'label': 'eth0:sixteen-chr'}, "label 'eth0:sixteen-chr' is 16 characters long: "
     "the kernel allows at most 15"),
    ({'address': '203.0.113.50/24', 'label': 'eth1:imap'}, "label 'eth1:imap' must start with the interface name "
     "'eth0' (e.g. eth0:svc)"),
    ({'address': '203.0.113.50/24', 'interface': 'eth0;reboot'}, "interface 'eth0;reboot' is not a valid name: use "
     "letters, digits, \".\", \"_\", \"-\" (no spaces, slashes or shell metacharacters), at most 15 characters"),
    ({'address': '203.0.113.50/24', 'namespace': '../cyha-ip-spare'}, "namespace '../cyha-ip-spare' is not a valid "
     "name: use letters, digits, \".\", \"_\", \"-\" (no spaces, slashes or shell metacharacters)"),
    ({'address': '203.0.113.50/24', 'namespace': 'a$(id)'}, "namespace 'a$(id)' is not a valid name: use letters, "
     "digits, \".\", \"_\", \"-\" (no spaces, slashes or shell metacharacters)"),
    ({'address': '203.0.113.2/24'}, f'203.0.113.2 is the own (boot) address of eth0 in network namespace '
     f'{rig.SPARE}: service_ip manages only service addresses added beside it, never the address the node itself '
     'is reached at'),
    ({'address': '203.0.113.2/24', 'state': 'absent'}, f'203.0.113.2 is the own (boot) address of eth0 in network '
     f'namespace {rig.SPARE}: service_ip manages only service addresses added beside it, never the address the '
     'node itself is reached at'),
    ({'address': '2001:db8::cafe:2/64', 'state': 'absent'}, f'2001:db8::cafe:2 is the own (boot) address of eth0 in '
     f'network namespace {rig.SPARE}: service_ip manages only service addresses added beside it, never the address '
     'the node itself is reached at'),
    ({'address': '198.51.100.240/24'}, f'no directly connected route in network namespace {rig.SPARE} covers '
     '198.51.100.0/24 (default, unreachable, blackhole routes and routes via a gateway do not count): set interface'),
    ({'address': '203.0.113.50/23'}, f'no directly connected route in network namespace {rig.SPARE} covers '
     '203.0.112.0/23 (default, unreachable, blackhole routes and routes via a gateway do not count): set interface'),
    ({'address': '203.0.113.50/24', 'broadcast': '198.51.100.255'}, 'broadcast 198.51.100.255 is outside '
     '203.0.113.0/24: the broadcast address of 203.0.113.50/24 must lie in its subnet (normally 203.0.113.255)'),
    ({'address': '2001:db8::cafe:50/64', 'label': 'eth0:v6'}, 'label applies to IPv4 addresses only, not to '
     '2001:db8::cafe:50/64'),
    ({'address': '203.0.113.50/24', 'announce_count': -1}, 'announce_count must be at least 0, not -1'),
]


@pytest.mark.parametrize('bad, message', BAD, ids=[m[:40] for dummy, m in BAD])
def test_bad_input_fails_with_its_message_and_changes_nothing(clean, bad, message):
    before = {ns: rig.addresses(ns) for ns in rig.HOSTS}
    result = rig.module(dict({'namespace': rig.SPARE}, **bad))
    assert failed(result) == message
    assert result['changed'] is False
    assert {ns: rig.addresses(ns) for ns in rig.HOSTS} == before


# --------------------------------------------------------------------------- issue 19: markers and interrupted runs

KILL_AT = 'CYRUS_HA_TEST_KILL_AT'   # the collection's test hook: SIGKILL itself at this step (testhook.py)


def interrupted_msg(ns: str, vip: str) -> str:
    return (f'a previous run added {vip} on eth0 in network namespace {ns} but stopped before announcing it (its '
            'marker says `adding`): this run announces it')


def test_a_marker_from_a_deleted_namespace_is_not_trusted_by_the_one_made_again(clean):
    """The marker outlives the namespace; the namespace made again under the same name holds the address as
    its own (its only global IPv6 address): facts call it a boot address and state=absent refuses it."""
    ns, vip = rig.PREFIX + 'reborn', '2001:db8::cafe:60'

    def facts_of():
        return ok(rig.module({'namespace': ns}, name='cyrus.ha.service_ip_facts'))['ansible_facts']
    rig.host_down(ns)
    try:
        rig.host_up(ns, 4)
        ok(rig.module({'address': f'{vip}/64', 'namespace': ns, 'interface': 'eth0', 'ipv6_dad': False}))
        assert rig.read_mark(vip, ns)['state'] == 'announced'
        assert [f['address'] for f in facts_of()['cyrus_ha_service_ips']] == [vip]
        rig.host_down(ns)
        rig.host_up(ns, 4, v6=vip)
        assert rig.read_mark(vip, ns) is not None, 'the old marker is still there: the test would prove nothing'
        facts = facts_of()
        assert vip not in [f['address'] for f in facts['cyrus_ha_service_ips']]
        assert vip in [f['address'] for f in facts['cyrus_ha_boot_ips']]
        result = rig.module({'address': f'{vip}/64', 'namespace': ns, 'state': 'absent'})
        assert failed(result) == (f'{vip} is the own (boot) address of eth0 in network namespace {ns}: service_ip '
                                  'manages only service addresses added beside it, never the address the node itself '
                                  'is reached at')
        assert result['changed'] is False and rig.has_address(ns, vip)
    finally:
        rig.host_down(ns)
        rig.drop_marks(ns)


def test_a_run_killed_right_after_adding_is_announced_by_the_next(clean, monkeypatch):
    """Killed between the add and the first announcement: the client still has the old owner's MAC; the next
    run announces (changed, and says why), the client follows, the run after that changes nothing."""
    holder_mac, spare_mac = rig.mac(rig.HOLDER), rig.mac(rig.SPARE)
    # the client last saw the address at the holder (set directly: a real connection to the holder could
    # retransmit later, re-probe the old MAC and empty the entry, which would prove nothing either way)
    rig.sh('ip', '-n', rig.CLIENT, 'neigh', 'replace', rig.VIP4, 'lladdr', holder_mac, 'dev', 'eth0', 'nud', 'stale')
    try:
        monkeypatch.setenv(KILL_AT, 'added')
        died = rig.module(args(rig.SPARE, 4))
        monkeypatch.delenv(KILL_AT)
        assert died['cyha_status'] == 'failed', died
        assert rig.has_address(rig.SPARE, rig.VIP4) and rig.read_mark(rig.VIP4, rig.SPARE)['state'] == 'adding'
        assert rig.neigh_mac(rig.CLIENT, rig.VIP4) == holder_mac, 'nothing was announced'
        facts = ok(rig.module({'namespace': rig.SPARE}, name='cyrus.ha.service_ip_facts'))['ansible_facts']
        assert [(f['address'], f['interrupted']) for f in facts['cyrus_ha_service_ips']] == [(rig.VIP4, True)]

        predicted = ok(rig.module(args(rig.SPARE, 4), check=True))
        assert predicted['changed'] is True and predicted['interrupted'] == interrupted_msg(rig.SPARE, rig.VIP4)
        assert rig.neigh_mac(rig.CLIENT, rig.VIP4) == holder_mac, 'check mode sends nothing'
        done = ok(rig.module(args(rig.SPARE, 4)))
        assert done['changed'] is True and done['announcements']['sent'] == 3
        assert done['interrupted'] == interrupted_msg(rig.SPARE, rig.VIP4)
        assert rig.wait_neigh(rig.CLIENT, rig.VIP4, spare_mac), rig.neigh_mac(rig.CLIENT, rig.VIP4)
        assert labutil.poll(lambda: rig.connect(rig.CLIENT, rig.VIP4) == rig.SPARE, 5)
        assert rig.read_mark(rig.VIP4, rig.SPARE)['state'] == 'announced'
        assert ok(rig.module(args(rig.SPARE, 4)))['changed'] is False
    finally:
        monkeypatch.delenv(KILL_AT, raising=False)
        ok(rig.module(args(rig.SPARE, 4, state='absent')))
    assert rig.read_mark(rig.VIP4, rig.SPARE) is None


@pytest.mark.parametrize('step', ['marked', 'announced-1'])
def test_a_run_killed_at_a_step_is_finished_or_undone(clean, monkeypatch, step):
    """Killed before the add (marker written): the next run takes the address as if new. Killed after the first
    announcement: the next run announces again. state=absent after a kill removes address and marker."""
    vip = rig.VIP6
    monkeypatch.setenv(KILL_AT, step)
    assert failed(rig.module(args(rig.SPARE, 6, ipv6_dad=False))) is not None
    monkeypatch.delenv(KILL_AT)
    assert rig.has_address(rig.SPARE, vip) is (step != 'marked')
    done = ok(rig.module(args(rig.SPARE, 6, ipv6_dad=False)))
    assert done['changed'] is True and done['announcements']['sent'] == 3
    assert done.get('interrupted') == (None if step == 'marked' else interrupted_msg(rig.SPARE, vip))
    assert rig.has_address(rig.SPARE, vip)
    monkeypatch.setenv(KILL_AT, 'announced-2')
    failed(rig.module(args(rig.SPARE, 6, ipv6_dad=False, state='announced')))
    monkeypatch.delenv(KILL_AT)
    gone = ok(rig.module(args(rig.SPARE, 6, state='absent')))
    assert gone['changed'] is True and not rig.has_address(rig.SPARE, vip) and rig.read_mark(vip, rig.SPARE) is None


def test_a_run_sigkilled_from_outside_while_announcing_is_finished_by_the_next(clean):
    """No hook: the module is SIGKILLed by PID (found by its network namespace) while it announces (for 20 s: the
    kill lands inside the announcements however slow the machine)."""
    result = {}
    run = threading.Thread(target=lambda: result.update(
        rig.module(args(rig.SPARE, 4, announce_count=100, announce_interval=0.2))))
    run.start()
    try:
        assert labutil.poll(lambda: rig.has_address(rig.SPARE, rig.VIP4), 30)
        assert rig.kill_module_in(rig.SPARE), 'no module process found in the namespace'
    finally:
        run.join(60)
    assert result['cyha_status'] == 'failed', result
    assert rig.has_address(rig.SPARE, rig.VIP4) and rig.read_mark(rig.VIP4, rig.SPARE)['state'] == 'adding'
    done = ok(rig.module(args(rig.SPARE, 4)))
    assert done['changed'] is True and done['interrupted'] == interrupted_msg(rig.SPARE, rig.VIP4)
    assert done['announcements']['sent'] == 3
    assert ok(rig.module(args(rig.SPARE, 4)))['changed'] is False
    assert ok(rig.module(args(rig.SPARE, 4, state='absent')))['changed'] is True


HOSTILE = [
    ({'address': '203.0.113.50/24', 'announce_interval': 'nan'}, 'announce_interval must be a finite number, not nan'),
    ({'address': '203.0.113.50/24', 'announce_interval': 'inf'}, 'announce_interval must be a finite number, not inf'),
    ({'address': '203.0.113.50/24', 'probe_timeout': '1e300'}, 'probe_timeout must be at most 10, not 1e+300'),
    ({'address': '203.0.113.50/24', 'dad_timeout': 'nan'}, 'dad_timeout must be a finite number, not nan'),
    ({'address': '203.0.113.50/\u0662\u0664'}, "address '203.0.113.50/\u0662\u0664' contains characters that are not "
     'printable ASCII: write it with ASCII digits, e.g. 203.0.113.50/24'),
    ({'address': '169.254.10.10/16'}, "address '169.254.10.10/16' is a link-local address (169.254.0.0/16): it is "
     'never routed beyond its link, and the kernel makes its own there; a service address must be a global or '
     'unique-local one'),
    ({'address': 'fe80::50/64', 'interface': 'eth0'}, "address 'fe80::50/64' is a link-local address (fe80::/10): it "
     'is never routed beyond its link, and the kernel makes its own there; a service address must be a global or '
     'unique-local one'),
    ({'address': '::ffff:203.0.113.50/120'}, "address '::ffff:203.0.113.50/120' is an IPv4-mapped IPv6 address "
     '(::ffff:203.0.113.50): nobody reaches a service there; write the IPv4 address, 203.0.113.50/PREFIX'),
    ({'address': '203.0.113.50/24', 'conflict_probe': False}, f'conflict_probe=false on eth0 in network namespace '
     f'{rig.SPARE} needs peer_state (fenced or down): without the probe nothing stops the address from being added '
     'while the peer still holds it (two nodes answering for it); state why the peer cannot, or keep the probe'),
    ({'address': '203.0.113.50/24', 'namespace': ''}, "namespace is empty (''): omit it to act in the network "
     'namespace the module runs in'),
]


@pytest.mark.parametrize('bad, message', HOSTILE, ids=[m[:40] for dummy, m in HOSTILE])
def test_hostile_input_fails_before_anything_changes(clean, bad, message):
    before = {ns: rig.addresses(ns) for ns in rig.HOSTS}
    result = rig.module(dict({'namespace': rig.SPARE}, **bad))
    assert failed(result) == message
    assert result['changed'] is False
    assert {ns: rig.addresses(ns) for ns in rig.HOSTS} == before
