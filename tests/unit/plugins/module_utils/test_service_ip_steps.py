# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The takeover's pieces one by one: the request, the target, and each step of a state=present run.

The whole run against a fake `ip` is tested in tests/unit/plugins/modules/test_service_ip_module.py."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import service_ip as sip
from ansible_collections.cyrus.ha.plugins.module_utils.iproute import IpError

ETH0 = {'ifname': 'eth0', 'flags': ['BROADCAST', 'UP', 'LOWER_UP'], 'address': '02:00:00:00:00:02'}
LO = {'ifname': 'lo', 'flags': ['LOOPBACK', 'UP', 'LOWER_UP'], 'address': '00:00:00:00:00:00'}


def copy_of(local, prefix, interface, flags=()):
    return {'local': local, 'prefix': prefix, 'interface': interface, 'family': 6 if ':' in local else 4,
            'flags': set(flags)}


class Ip:
    """The IpRoute calls the steps make: del_address (failing for the devices in `refuse`) and wait_dad."""

    def __init__(self, refuse=(), dad='done'):
        self.refuse, self.dad = refuse, dad
        self.deleted = []

    def del_address(self, local, prefix, dev):
        if dev in self.refuse:
            raise IpError(f'`ip addr del {local}/{prefix} dev {dev}` failed (2): RTNETLINK answers: Operation not '
                          'permitted')
        self.deleted.append((local, prefix, dev))

    def wait_dad(self, local, dev, timeout):
        return self.dad


@pytest.fixture(autouse=True)
def marks(tmp_path, monkeypatch):
    monkeypatch.setattr(sip, 'MARK_DIR', str(tmp_path / 'marks'))
    return tmp_path / 'marks'


def request(address='203.0.113.50/24', **params):
    return sip.Request(dict({'state': 'present', 'namespace': None}, **params), ipaddress.ip_interface(address))


def takeover(req, ip=None, link=None, existing=(), result=None):
    link = link or ETH0
    target = sip.Target(link['ifname'], link, list(existing), list(existing))
    return sip.Takeover(req, ip or Ip(), target, {}, dict({'changed': False}, **(result or {})))


def test_request_names_its_address_family_and_namespace():
    req = request('2001:db8::50/64', namespace='spare')
    assert (req.address, req.family, req.namespace, req.where) == (
        '2001:db8::50', 6, 'spare', ' in network namespace spare')
    plain = request(namespace='')
    assert (plain.address, plain.family, plain.namespace, plain.where) == ('203.0.113.50', 4, None, '')
    assert plain.timings == {} and plain.timings is not request().timings
    assert 0 <= plain.elapsed() < 5


def test_target_prefers_the_copy_on_its_interface():
    elsewhere, here = copy_of('203.0.113.50', 25, 'eth1'), copy_of('203.0.113.50', 24, 'eth0')
    target = sip.Target('eth0', ETH0, [], [elsewhere, here])
    assert (target.on_target, target.current, target.mac, target.loopback) == (
        [here], here, '02:00:00:00:00:02', False)
    assert sip.Target('eth0', ETH0, [], [elsewhere]).current == elsewhere
    assert sip.Target('eth0', {}, [], []).current is None
    assert sip.Target('lo', LO, [], []).loopback is True


@pytest.mark.parametrize('link, params, skipped', [
    (LO, {'conflict_probe': True}, 'lo is a loopback interface'),
    (ETH0, {'conflict_probe': False}, 'conflict_probe=false'),
])
def test_probe_link_says_why_it_sends_nothing(monkeypatch, link, params, skipped):
    monkeypatch.setattr(sip.ann, 'probe', lambda *a: pytest.fail('no probe may be sent'))
    t = takeover(request(**params), link=link)
    sip.probe_link(t)
    assert t.result['conflict_probe'] == {'skipped': skipped} and t.req.timings == {}


def test_probe_link_records_a_quiet_link_and_refuses_an_answered_one(monkeypatch):
    answers = iter([{'conflict': False, 'mac': None, 'probes': 2, 'seconds': 0.02},
                    {'conflict': True, 'mac': '02:00:00:00:00:09', 'probes': 1, 'seconds': 0.001}])
    seen = []

    def probe(*args):
        seen.append(args[:5])
        return next(answers)
    monkeypatch.setattr(sip.ann, 'probe', probe)
    quiet = takeover(request(probe_count=3, probe_timeout=0.5))
    sip.probe_link(quiet)
    assert quiet.result['conflict_probe']['conflict'] is False and quiet.req.timings == {'probe': 0.02}
    assert seen == [('eth0', '02:00:00:00:00:02', '203.0.113.50', 3, 0.5)]
    answered = takeover(request(namespace='spare'))
    with pytest.raises(sip.ServiceIpError) as caught:
        sip.probe_link(answered)
    assert caught.value.msg.startswith('203.0.113.50 is already in use on the link of eth0 in network namespace '
                                       'spare: 02:00:00:00:00:09 answered the conflict probe. Nothing was changed.')
    assert caught.value.result['changed'] is False and 'forced' not in answered.result


def test_remove_stale_counts_each_copy_it_removed():
    first, second = copy_of('203.0.113.50', 25, 'eth0'), copy_of('203.0.113.50', 24, 'eth1')
    ip = Ip()
    t = takeover(request(), ip)
    sip.remove_stale(t, [(first, ['prefix']), (second, ['interface'])])
    assert ip.deleted == [('203.0.113.50', 25, 'eth0'), ('203.0.113.50', 24, 'eth1')] and t.result['changed'] is True
    t = takeover(request(), Ip(refuse=('eth0',)))
    with pytest.raises(sip.ServiceIpError) as caught:
        sip.remove_stale(t, [(first, ['prefix'])])
    assert caught.value.msg == ('203.0.113.50: cannot remove the differing copy on eth0: `ip addr del 203.0.113.50/25 '
                                'dev eth0` failed (2): RTNETLINK answers: Operation not permitted. Nothing was changed')
    assert caught.value.result['changed'] is False


@pytest.mark.parametrize('outcome, message', [
    ('dadfailed', 'duplicate address detection failed: another node on the link answered for it'),
    ('timeout', 'duplicate address detection did not finish within 3 s'),
    ('gone', 'the address vanished while waiting for DAD'),
])
def test_wait_dad_turns_every_outcome_but_done_into_an_undo(outcome, message):
    t = takeover(request('2001:db8::50/64', dad_timeout=3), Ip(dad=outcome))
    with pytest.raises(sip._Undo) as caught:
        sip.wait_dad(t)
    assert str(caught.value) == message and 'dad_wait' in t.req.timings
    sip.wait_dad(takeover(request('2001:db8::50/64'), Ip(dad='done')))


def test_undo_removes_what_this_run_added(marks):
    sip.set_mark(None, '203.0.113.50', True)
    ip = Ip()
    t = takeover(request(), ip, result={'changed': True})
    error = sip.undo(t, sip._Undo('sending on eth0 failed'), added=True, corrected=False)
    assert error.msg == '203.0.113.50 on eth0: sending on eth0 failed; the address was removed again'
    assert ip.deleted == [('203.0.113.50', 24, 'eth0')] and error.result['changed'] is False
    assert list(marks.iterdir()) == []
    kept = sip.undo(takeover(request(), result={'changed': True}), sip._Undo('x'), added=True, corrected=True)
    assert kept.result['changed'] is True, 'a differing copy removed before stays a change'


def test_undo_says_when_the_address_could_not_be_removed_again(marks):
    sip.set_mark(None, '203.0.113.50', True)
    t = takeover(request(), Ip(refuse=('eth0',)), result={'changed': True})
    error = sip.undo(t, sip._Undo('sending on eth0 failed'), added=True, corrected=False)
    assert error.msg == ('203.0.113.50 on eth0: sending on eth0 failed; removing the address again failed too '
                         '(`ip addr del 203.0.113.50/24 dev eth0` failed (2): RTNETLINK answers: Operation not '
                         'permitted): it is still on eth0')
    assert error.result['changed'] is True and sip.marked(None) == {'203.0.113.50'}
    untouched = sip.undo(takeover(request()), IpError('add failed'), added=False, corrected=False)
    assert untouched.msg == '203.0.113.50 on eth0: add failed' and untouched.result['changed'] is False
