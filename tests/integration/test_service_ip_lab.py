# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.service_ip as Ansible runs it on real remote hosts: over SSH on the shared lab, a test
address (198.51.100.240-250 only: .100-.199 belong to Cyrus instances) moves from be1 to the spare
and the frontend fe1 follows it, then everything added is removed."""

from __future__ import annotations

import json
import subprocess

import pytest

import cyha_iprig as rig
import labutil

pytestmark = pytest.mark.lab

VIP = '198.51.100.245'


def adhoc(host: str, args: dict, check: bool = False) -> dict:
    """Run the module over SSH on one lab host; its result as the default callback prints it."""
    proc = labutil.ansible(host, 'cyrus.ha.service_ip', json.dumps(args), *(['--check'] if check else []),
                           check=False)
    head, sep, body = proc.stdout.partition(' => ')
    assert sep, proc.stdout + proc.stderr
    result = json.loads(body)
    result['cyha_status'] = 'failed' if 'FAILED' in head else 'ok'
    return result


def netns(lab, name: str) -> str:
    return next(h for h in lab if h['name'] == name).get('netns', f'cyha-{name}')


def ping(ns: str, address: str) -> bool:
    return subprocess.run(['ip', 'netns', 'exec', ns, 'ping', '-c', '1', '-W', '1', address],
                          capture_output=True, check=False).returncode == 0


def cleanup(lab):
    for name in ('be1', 'spare'):
        ns = netns(lab, name)
        for a in rig.IpRoute(netns=ns).addresses():
            if a['local'] == VIP:
                rig.sh('ip', '-n', ns, 'addr', 'del', f'{VIP}/{a["prefix"]}', 'dev', a['interface'])


def test_move_over_ssh_between_lab_hosts(lab):
    be1, spare, fe1 = netns(lab, 'be1'), netns(lab, 'spare'), netns(lab, 'fe1')
    cleanup(lab)
    try:
        predicted = adhoc('be1', {'address': f'{VIP}/24'}, check=True)
        assert predicted['cyha_status'] == 'ok' and predicted['changed'] is True
        assert not rig.has_address(be1, VIP)

        taken = adhoc('be1', {'address': f'{VIP}/24'})
        assert taken['cyha_status'] == 'ok' and taken['changed'] is True and taken['interface'] == 'eth0'
        assert taken['conflict_probe']['conflict'] is False
        assert adhoc('be1', {'address': f'{VIP}/24'})['changed'] is False
        assert labutil.poll(lambda: ping(fe1, VIP), 10)
        assert rig.neigh_mac(fe1, VIP) == rig.IpRoute(netns=be1).link('eth0')['address']

        refused = adhoc('spare', {'address': f'{VIP}/24'})
        assert refused['cyha_status'] == 'failed' and refused['changed'] is False
        be1_mac = rig.IpRoute(netns=be1).link('eth0')['address']
        assert f'{be1_mac} answered the conflict probe. Nothing was changed.' in refused['msg']
        assert not rig.has_address(spare, VIP)

        assert adhoc('be1', {'address': f'{VIP}/24', 'state': 'absent'})['changed'] is True
        moved = adhoc('spare', {'address': f'{VIP}/24'})
        assert moved['changed'] is True and moved['announcements']['sent'] == 3
        spare_mac = rig.IpRoute(netns=spare).link('eth0')['address']
        assert rig.wait_neigh(fe1, VIP, spare_mac), rig.neigh_mac(fe1, VIP)
        assert labutil.poll(lambda: ping(fe1, VIP), 5)

        assert adhoc('spare', {'address': f'{VIP}/24', 'state': 'absent'})['changed'] is True
        assert adhoc('spare', {'address': f'{VIP}/24', 'state': 'absent'})['changed'] is False
        own = adhoc('spare', {'address': '198.51.100.30/24', 'state': 'absent'})
        assert own['msg'] == ('198.51.100.30 is the own (boot) address of eth0: service_ip manages only service '
                              'addresses added beside it, never the address the node itself is reached at')
    finally:
        cleanup(lab)
    assert not rig.has_address(be1, VIP) and not rig.has_address(spare, VIP)
