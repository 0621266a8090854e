# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster model: warm-spare pairs, nodes and fence devices as pacemaker_cib arguments and as
linux-system-roles/ha_cluster variables; and the filters that expose it."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.filter.cluster_config import FilterModule as ClusterConfigFilters
from ansible_collections.cyrus.ha.plugins.filter.ha_cluster_vars import FilterModule as HaClusterVarsFilters
from ansible_collections.cyrus.ha.plugins.module_utils.pacemaker import Desired, plan
from ansible_collections.cyrus.ha.plugins.plugin_utils.cluster import (ClusterModelError, fencing, ha_cluster_vars,
                                                                       instance_group, model)

UUID = '2f6d7c1e-8a3b-4c55-9e0f-1a2b3c4d5e6f'
PAIR = {'instance': 'be1', 'home': 'be1', 'spare': 'spare', 'address': '198.51.100.121',
        'servername': 'be1-svc.example.org', 'volume': {'label': 'cyha-be1', 'mount': '/srv/cyrus-ha/be1'}}
PAIR2 = {'instance': 'be2', 'home': 'be2', 'spare': 'spare', 'address': '2001:db8::122',
         'volume': {'uuid': UUID, 'mount': '/srv/cyrus-ha/be2'}}
NODES = ['be1', 'spare']
DEVICES = [{'id': 'fence-be1', 'agent': 'fence_ipmilan', 'targets': ['be1'],
            'params': {'ip': '203.0.113.11', 'username': 'admin', 'password': 'secret', 'lanplus': True}},
           {'id': 'fence-spare', 'agent': 'fence_ipmilan', 'targets': ['spare'],
            'params': {'ip': '203.0.113.12', 'username': 'admin', 'password': 'secret', 'lanplus': True,
                       'pcmk_delay_base': '5s'}}]
DEVICES3 = DEVICES + [{'id': 'fence-be2', 'agent': 'fence_redfish', 'targets': ['be2'],
                       'params': {'ip': '203.0.113.13', 'username': 'root', 'password': 'secret'}}]
NO_FENCING = 'no fence devices: without fencing Pacemaker cannot move a volume safely (set cluster_fence_devices)'

VOLUME_OPS = [{'name': 'start', 'interval': '0s', 'timeout': '60s'},
              {'name': 'stop', 'interval': '0s', 'timeout': '60s'},
              {'name': 'monitor', 'interval': '20s', 'timeout': '40s'}]
CYRUS_OPS = [{'name': 'start', 'interval': '0s', 'timeout': '60s'},
             {'name': 'stop', 'interval': '0s', 'timeout': '60s'},
             {'name': 'monitor', 'interval': '10s', 'timeout': '20s'}]
FENCE_OPS = [{'name': 'monitor', 'interval': '60s', 'timeout': '20s'}]


def pair(**changes):
    """PAIR with keys replaced (or deleted when the value is ...)."""
    out = copy.deepcopy(PAIR)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def members(group):
    return {m['id']: m for m in group['resources']}


# ---------------------------------------------------------------------------------------------- one pair

def test_group_of_a_pair_is_volume_address_instance():
    assert instance_group(PAIR, {}) == {
        'id': 'cyrus-be1',
        'resources': [
            {'id': 'be1-volume', 'agent': 'ocf:heartbeat:Filesystem',
             'params': {'device': '-L cyha-be1', 'directory': '/srv/cyrus-ha/be1', 'fstype': 'ext4'},
             'operations': VOLUME_OPS},
            {'id': 'be1-address', 'agent': 'ocf:heartbeat:IPaddr2',
             'params': {'ip': '198.51.100.121', 'cidr_netmask': 24},
             'operations': [{'name': 'monitor', 'interval': '10s', 'timeout': '20s'}]},
            {'id': 'be1-cyrus', 'agent': 'ocf:cyrus:instance',
             'params': {'instance': 'be1', 'address': '198.51.100.121'},
             'operations': CYRUS_OPS},
        ],
    }


@pytest.mark.parametrize('volume, device', [
    ({'uuid': UUID, 'mount': '/srv/a'}, f'-U {UUID}'),
    ({'label': 'cyha-be1', 'mount': '/srv/a'}, '-L cyha-be1'),
    ({'uuid': UUID, 'label': 'cyha-be1', 'mount': '/srv/a'}, f'-U {UUID}'),
    ({'uuid': '', 'label': 'cyha-be1', 'mount': '/srv/a'}, '-L cyha-be1'),
])
def test_filesystem_device_by_uuid_or_label(volume, device):
    assert members(instance_group(pair(volume=volume), {}))['be1-volume']['params']['device'] == device


def test_ipv6_address_gets_nodad_and_prefix_64():
    group = instance_group(pair(address='2001:DB8:0:0::121'), {})
    assert members(group)['be1-address']['params'] == {'ip': '2001:db8::121', 'cidr_netmask': 64, 'nodad': True}
    assert members(group)['be1-cyrus']['params'] == {'instance': 'be1', 'address': '2001:db8::121'}


@pytest.mark.parametrize('the_pair, opts, params', [
    (PAIR, {'interface': 'eth0'}, {'ip': '198.51.100.121', 'cidr_netmask': 24, 'nic': 'eth0'}),
    (pair(interface='bond0'), {'interface': 'eth0'}, {'ip': '198.51.100.121', 'cidr_netmask': 24, 'nic': 'bond0'}),
    (PAIR, {'interface': ''}, {'ip': '198.51.100.121', 'cidr_netmask': 24}),
    (PAIR, {'address_prefix': 26}, {'ip': '198.51.100.121', 'cidr_netmask': 26}),
    (pair(prefix='25'), {'address_prefix': 26}, {'ip': '198.51.100.121', 'cidr_netmask': 25}),
    (pair(address='2001:db8::121', prefix=112), {}, {'ip': '2001:db8::121', 'cidr_netmask': 112, 'nodad': True}),
    # the option applies to both families: an IPv6 pair under a site-wide IPv4 prefix needs its own
    (pair(address='2001:db8::121'), {'address_prefix': 24}, {'ip': '2001:db8::121', 'cidr_netmask': 24,
                                                             'nodad': True}),
])
def test_address_prefix_and_interface(the_pair, opts, params):
    assert members(instance_group(the_pair, opts))['be1-address']['params'] == params


def test_options_reach_every_member():
    opts = {'fstype': 'xfs', 'mount_opts': 'noatime', 'address_agent': 'ocf:cyrus:address', 'monitor_interval': '5s',
            'instance_params': {'port': 1143, 'greeting_timeout': 3}}
    group = members(instance_group(PAIR, opts))
    assert group['be1-volume']['params'] == {'device': '-L cyha-be1', 'directory': '/srv/cyrus-ha/be1',
                                             'fstype': 'xfs', 'options': 'noatime'}
    assert group['be1-address']['agent'] == 'ocf:cyrus:address'
    assert group['be1-address']['operations'] == [{'name': 'monitor', 'interval': '5s', 'timeout': '20s'}]
    assert group['be1-cyrus']['params'] == {'instance': 'be1', 'address': '198.51.100.121', 'port': 1143,
                                            'greeting_timeout': 3}
    assert group['be1-cyrus']['operations'][2] == {'name': 'monitor', 'interval': '5s', 'timeout': '20s'}
    # the volume's monitor keeps its own interval
    assert group['be1-volume']['operations'] == VOLUME_OPS


def test_pair_settings_win_over_options():
    opts = {'fstype': 'xfs', 'mount_opts': 'noatime'}
    group = members(instance_group(pair(fstype='ext3', mount_opts='defaults'), opts))
    assert group['be1-volume']['params'] == {'device': '-L cyha-be1', 'directory': '/srv/cyrus-ha/be1',
                                             'fstype': 'ext3'}


@pytest.mark.parametrize('bad, message', [
    (pair(instance=...), None),
    (pair(instance=''), None),
    (pair(instance='be 1'), None),
    (pair(instance='-be1'), None),
    (pair(home=...), 'pair be1: home is missing'),
    (pair(spare=''), 'pair be1: spare is missing'),
    (pair(address=...), 'pair be1: address is missing'),
    (pair(volume=...), 'pair be1: volume is missing'),
    (pair(volume={}), 'pair be1: volume is missing'),
    (pair(address='be1-svc.example.org'), "pair be1: address 'be1-svc.example.org' is not an IP address"),
    (pair(address='198.51.100.121/24'), "pair be1: address '198.51.100.121/24' is not an IP address"),
    (pair(address='198.51.100.300'), "pair be1: address '198.51.100.300' is not an IP address"),
    (pair(volume={'label': 'cyha-be1', 'mount': 'srv/cyrus-ha/be1'}),
     'pair be1: volume.mount must be an absolute path'),
    (pair(volume={'label': 'cyha-be1'}), 'pair be1: volume.mount must be an absolute path'),
    (pair(volume={'device': '/dev/sdb', 'mount': '/srv/cyrus-ha/be1'}),
     'pair be1: its volume has neither uuid nor label'),
])
def test_bad_pair_is_refused(bad, message):
    with pytest.raises(ClusterModelError) as caught:
        model([bad], NODES, DEVICES, {})
    assert str(caught.value) == (message or f'pair {bad!r}: instance is missing or not a plain name')


@pytest.mark.parametrize('key', ['home', 'spare'])
def test_home_and_spare_must_be_cluster_nodes(key):
    with pytest.raises(ClusterModelError) as caught:
        model([pair(**{key: 'be9'})], NODES, DEVICES, {})
    assert str(caught.value) == f"pair be1: {key} be9 is not a cluster node ['be1', 'spare']"


@pytest.mark.parametrize('nodes', [[], ['be1']])
def test_a_cluster_has_two_nodes_at_least(nodes):
    with pytest.raises(ClusterModelError) as caught:
        model([PAIR], nodes, DEVICES, {})
    assert str(caught.value) == f'a cluster needs at least two nodes, not {nodes}'


# ---------------------------------------------------------------------------------------------- placement

def test_home_preference_and_bans_on_other_nodes():
    nodes = ['be1', 'be2', 'spare']
    cib = model([PAIR, PAIR2], nodes, DEVICES3, {})
    placement = [c for c in cib['constraints'] if c['resource'].startswith('cyrus-')]
    assert placement == [
        {'id': 'cyrus-be1-prefers-home', 'type': 'location', 'resource': 'cyrus-be1', 'node': 'be1', 'score': 100},
        {'id': 'cyrus-be1-avoids-be2', 'type': 'location', 'resource': 'cyrus-be1', 'node': 'be2',
         'score': '-INFINITY'},
        {'id': 'cyrus-be2-prefers-home', 'type': 'location', 'resource': 'cyrus-be2', 'node': 'be2', 'score': 100},
        {'id': 'cyrus-be2-avoids-be1', 'type': 'location', 'resource': 'cyrus-be2', 'node': 'be1',
         'score': '-INFINITY'}]


def test_home_score_option_and_no_bans_on_two_nodes():
    cib = model([PAIR], NODES, DEVICES, {'home_score': 300})
    assert [c for c in cib['constraints'] if c['resource'] == 'cyrus-be1'] == [
        {'id': 'cyrus-be1-prefers-home', 'type': 'location', 'resource': 'cyrus-be1', 'node': 'be1', 'score': 300}]


def test_groups_follow_the_fence_devices_in_pair_order():
    cib = model([PAIR2, PAIR], ['be1', 'be2', 'spare'], DEVICES3, {})
    assert [r['id'] for r in cib['resources']] == ['fence-be1', 'fence-spare', 'fence-be2', 'cyrus-be2', 'cyrus-be1']


# ---------------------------------------------------------------------------------------------- fencing

def test_fence_devices_constraints_and_levels_without_heuristics():
    resources, constraints, levels = fencing(NODES, DEVICES, [])
    assert resources == [
        {'id': 'fence-be1', 'agent': 'stonith:fence_ipmilan',
         'params': {'ip': '203.0.113.11', 'username': 'admin', 'password': 'secret', 'lanplus': True,
                    'pcmk_host_list': 'be1'},
         'operations': FENCE_OPS},
        {'id': 'fence-spare', 'agent': 'stonith:fence_ipmilan',
         'params': {'ip': '203.0.113.12', 'username': 'admin', 'password': 'secret', 'lanplus': True,
                    'pcmk_delay_base': '5s', 'pcmk_host_list': 'spare'},
         'operations': FENCE_OPS}]
    assert constraints == [
        {'id': 'fence-be1-avoids-be1', 'type': 'location', 'resource': 'fence-be1', 'node': 'be1',
         'score': '-INFINITY'},
        {'id': 'fence-spare-avoids-spare', 'type': 'location', 'resource': 'fence-spare', 'node': 'spare',
         'score': '-INFINITY'}]
    assert levels == [{'target': 'be1', 'index': 1, 'devices': ['fence-be1']},
                      {'target': 'spare', 'index': 1, 'devices': ['fence-spare']}]
    # the caller's data is not changed
    assert 'pcmk_host_list' not in DEVICES[0]['params']


def test_ping_heuristics_come_first_in_every_level():
    resources, dummy, levels = fencing(NODES, DEVICES, ['198.51.100.1', '198.51.100.254'], ping_count=3)
    assert resources[-1] == {
        'id': 'fence-heuristics-ping', 'agent': 'stonith:fence_heuristics_ping',
        'params': {'ping_targets': '198.51.100.1,198.51.100.254', 'ping_count': 3, 'ping_good_count': 3,
                   'pcmk_host_list': 'be1 spare'},
        'operations': FENCE_OPS}
    assert levels == [{'target': 'be1', 'index': 1, 'devices': ['fence-heuristics-ping', 'fence-be1']},
                      {'target': 'spare', 'index': 1, 'devices': ['fence-heuristics-ping', 'fence-spare']}]


def test_ping_count_defaults_to_two_everywhere():
    cib = model([PAIR], NODES, DEVICES, {'ping_targets': ['198.51.100.1']})
    heuristics = [r for r in cib['resources'] if r['id'] == 'fence-heuristics-ping']
    assert heuristics[0]['params']['ping_count'] == heuristics[0]['params']['ping_good_count'] == 2
    assert not any(c['resource'] == 'fence-heuristics-ping' for c in cib['constraints'])


def test_no_heuristics_device_without_ping_targets():
    cib = model([PAIR], NODES, DEVICES, {'ping_targets': []})
    assert 'fence-heuristics-ping' not in [r['id'] for r in cib['resources']]
    assert all('fence-heuristics-ping' not in lvl['devices'] for lvl in cib['fencing_levels'])


def test_one_device_for_several_targets_and_an_explicit_host_list():
    devices = [{'id': 'pdu', 'agent': 'fence_apc_snmp', 'targets': ['be1', 'be2'],
                'params': {'ip': '203.0.113.20', 'pcmk_host_map': 'be1:1;be2:2'}},
               {'id': 'fence-spare', 'agent': 'fence_ipmilan', 'targets': ['spare'],
                'params': {'ip': '203.0.113.12', 'pcmk_host_list': 'spare.example.org'}}]
    resources, constraints, levels = fencing(['be1', 'be2', 'spare'], devices, [])
    assert [r['params']['pcmk_host_list'] for r in resources] == ['be1 be2', 'spare.example.org']
    assert [(c['resource'], c['node']) for c in constraints] == [('pdu', 'be1'), ('pdu', 'be2'),
                                                                 ('fence-spare', 'spare')]
    assert levels == [{'target': 'be1', 'index': 1, 'devices': ['pdu']},
                      {'target': 'be2', 'index': 1, 'devices': ['pdu']},
                      {'target': 'spare', 'index': 1, 'devices': ['fence-spare']}]


def test_two_devices_for_one_node_share_its_level():
    devices = DEVICES + [{'id': 'pdu-be1', 'agent': 'fence_apc_snmp', 'targets': ['be1'], 'params': {}}]
    dummy, dummy2, levels = fencing(NODES, devices, ['198.51.100.1'])
    assert levels[0] == {'target': 'be1', 'index': 1, 'devices': ['fence-heuristics-ping', 'fence-be1', 'pdu-be1']}


def test_a_device_for_every_node_stays_usable_somewhere():
    devices = [{'id': 'fence-vms', 'agent': 'fence_vmware_rest', 'targets': ['be1', 'spare'],
                'params': {'ip': 'vcenter.example.org', 'username': 'fence', 'password': 'secret'}}]
    dummy, constraints, dummy2 = fencing(NODES, devices, [])
    banned = {c['node'] for c in constraints if c['resource'] == 'fence-vms' and c['score'] == '-INFINITY'}
    assert set(NODES) - banned


@pytest.mark.parametrize('devices, message', [
    ([dict(DEVICES[0], agent='ipmilan'), DEVICES[1]],
     "fence device fence-be1: agent 'ipmilan' is not a fence agent (fence_*)"),
    ([dict(DEVICES[0], agent='stonith:fence_ipmilan'), DEVICES[1]],
     "fence device fence-be1: agent 'stonith:fence_ipmilan' is not a fence agent (fence_*)"),
    ([{'id': 'fence-be1', 'targets': ['be1']}, DEVICES[1]],
     "fence device fence-be1: agent '' is not a fence agent (fence_*)"),
    ([dict(DEVICES[0], targets=['be1', 'be9', 'be8']), DEVICES[1]],
     "fence device fence-be1: targets ['be9', 'be8'] are not cluster nodes"),
    ([dict(DEVICES[0], targets=[]), DEVICES[1]], 'fence device fence-be1: targets [] are not cluster nodes'),
    ([DEVICES[0]], 'node spare has no fence device: every node must be fenceable'),
    ([dict(DEVICES[0], targets=['spare']), DEVICES[1]], 'node be1 has no fence device: every node must be fenceable'),
])
def test_bad_fence_devices_are_refused(devices, message):
    with pytest.raises(ClusterModelError) as caught:
        model([PAIR], NODES, devices, {})
    assert str(caught.value) == message


@pytest.mark.parametrize('did', [None, '', 'fence be1', '-fence'])
def test_fence_device_id_must_be_a_plain_name(did):
    device = dict(DEVICES[0], id=did)
    with pytest.raises(ClusterModelError) as caught:
        model([PAIR], NODES, [device, DEVICES[1]], {})
    assert str(caught.value) == f'fence device {device!r}: id is missing or not a plain name'


def test_several_nodes_without_fence_device_are_named():
    with pytest.raises(ClusterModelError) as caught:
        model([PAIR], ['be1', 'be2', 'spare'], [DEVICES[0]], {})
    assert str(caught.value) == 'node be2, spare has no fence device: every node must be fenceable'


@pytest.mark.parametrize('opts', [{}, {'allow_no_fencing': False}])
def test_no_fence_devices_is_refused(opts):
    with pytest.raises(ClusterModelError) as caught:
        model([PAIR], NODES, [], opts)
    assert str(caught.value) == NO_FENCING


# ---------------------------------------------------------------------------------------------- properties, defaults

def test_properties_and_resource_defaults():
    cib = model([PAIR], NODES, DEVICES, {})
    assert cib['properties'] == {'stonith-enabled': True, 'cluster-name': 'cyrus-ha'}
    assert cib['resource_defaults'] == {'resource-stickiness': 200, 'migration-threshold': 1,
                                        'failure-timeout': '10min'}
    assert cib['fencing_levels'] == [{'target': 'be1', 'index': 1, 'devices': ['fence-be1']},
                                     {'target': 'spare', 'index': 1, 'devices': ['fence-spare']}]


def test_without_fencing_when_allowed():
    cib = model([PAIR], NODES, [], {'allow_no_fencing': True, 'name': 'lab'})
    assert cib['properties'] == {'stonith-enabled': False, 'cluster-name': 'lab'}
    assert [r['id'] for r in cib['resources']] == ['cyrus-be1']
    assert cib['fencing_levels'] == []
    assert [c['id'] for c in cib['constraints']] == ['cyrus-be1-prefers-home']


def test_policy_options_and_user_overrides():
    cib = model([PAIR], NODES, DEVICES, {
        'name': 'mail', 'stickiness': 50, 'migration_threshold': 3, 'failure_timeout': '2min',
        'properties': {'no-quorum-policy': 'stop', 'cluster-name': 'mail-2'},
        'resource_defaults': {'failure-timeout': '5min', 'priority': 1}})
    assert cib['properties'] == {'stonith-enabled': True, 'cluster-name': 'mail-2', 'no-quorum-policy': 'stop'}
    assert cib['resource_defaults'] == {'resource-stickiness': 50, 'migration-threshold': 3, 'failure-timeout': '5min',
                                        'priority': 1}


def test_model_with_no_pairs_is_only_fencing():
    cib = model([], NODES, DEVICES, {})
    assert [r['id'] for r in cib['resources']] == ['fence-be1', 'fence-spare']
    assert [c['id'] for c in cib['constraints']] == ['fence-be1-avoids-be1', 'fence-spare-avoids-spare']


# ---------------------------------------------------------------------------------------------- ha_cluster

def test_ha_cluster_vars_shape():
    cib = model([PAIR], NODES, DEVICES, {'ping_targets': ['198.51.100.1']})
    out = ha_cluster_vars(cib, NODES, {'name': 'cyrus-ha', 'token': 1000})
    assert sorted(out) == ['ha_cluster_cluster_name', 'ha_cluster_cluster_properties',
                           'ha_cluster_constraints_location', 'ha_cluster_node_options',
                           'ha_cluster_resource_defaults', 'ha_cluster_resource_groups',
                           'ha_cluster_resource_primitives', 'ha_cluster_stonith_levels', 'ha_cluster_totem',
                           'ha_cluster_transport']
    assert out['ha_cluster_cluster_name'] == 'cyrus-ha'
    assert out['ha_cluster_transport'] == {'type': 'knet'}
    assert out['ha_cluster_totem'] == {'options': [{'name': 'token', 'value': '1000'}]}
    assert out['ha_cluster_cluster_properties'] == [{'attrs': [{'name': 'cluster-name', 'value': 'cyrus-ha'},
                                                               {'name': 'stonith-enabled', 'value': 'true'}]}]
    assert out['ha_cluster_resource_defaults'] == {'meta_attrs': [{'attrs': [
        {'name': 'failure-timeout', 'value': '10min'}, {'name': 'migration-threshold', 'value': '1'},
        {'name': 'resource-stickiness', 'value': '200'}]}]}
    primitives = out['ha_cluster_resource_primitives']
    assert [p['id'] for p in primitives] == ['fence-be1', 'fence-spare', 'fence-heuristics-ping', 'be1-volume',
                                             'be1-address', 'be1-cyrus']
    assert primitives[4] == {
        'id': 'be1-address', 'agent': 'ocf:heartbeat:IPaddr2',
        'instance_attrs': [{'attrs': [{'name': 'cidr_netmask', 'value': '24'},
                                      {'name': 'ip', 'value': '198.51.100.121'}]}],
        'operations': [{'action': 'monitor', 'attrs': [{'name': 'interval', 'value': '10s'},
                                                       {'name': 'timeout', 'value': '20s'}]}]}
    assert primitives[0]['instance_attrs'] == [{'attrs': [
        {'name': 'ip', 'value': '203.0.113.11'}, {'name': 'lanplus', 'value': 'true'},
        {'name': 'password', 'value': 'secret'}, {'name': 'pcmk_host_list', 'value': 'be1'},
        {'name': 'username', 'value': 'admin'}]}]
    assert out['ha_cluster_resource_groups'] == [{'id': 'cyrus-be1',
                                                  'resource_ids': ['be1-volume', 'be1-address', 'be1-cyrus']}]
    assert out['ha_cluster_constraints_location'] == [
        {'resource': {'id': 'fence-be1'}, 'node': 'be1', 'options': [{'name': 'score', 'value': '-INFINITY'}]},
        {'resource': {'id': 'fence-spare'}, 'node': 'spare', 'options': [{'name': 'score', 'value': '-INFINITY'}]},
        {'resource': {'id': 'cyrus-be1'}, 'node': 'be1', 'options': [{'name': 'score', 'value': '100'}]}]
    assert out['ha_cluster_stonith_levels'] == [
        {'level': 1, 'target': 'be1', 'resource_ids': ['fence-heuristics-ping', 'fence-be1']},
        {'level': 1, 'target': 'spare', 'resource_ids': ['fence-heuristics-ping', 'fence-spare']}]
    assert out['ha_cluster_node_options'] == [{'node_name': 'be1'}, {'node_name': 'spare'}]


def test_ha_cluster_vars_defaults_meta_and_bare_primitives():
    cib = {'properties': {}, 'resource_defaults': {}, 'constraints': [{'id': 'o', 'type': 'order', 'first': 'a',
                                                                       'then': 'b'}],
           'fencing_levels': [],
           'resources': [{'id': 'a', 'agent': 'ocf:pacemaker:Dummy', 'meta': {'is-managed': False}},
                         {'id': 'b', 'agent': 'ocf:pacemaker:Dummy'}]}
    out = ha_cluster_vars(cib, NODES, {})
    assert out['ha_cluster_cluster_name'] == 'cyrus-ha'
    assert out['ha_cluster_totem'] == {'options': [{'name': 'token', 'value': '3000'}]}
    assert out['ha_cluster_cluster_properties'] == []
    timed = ha_cluster_vars(cib, NODES, {'token': 1000, 'consensus': 2000})
    assert timed['ha_cluster_totem'] == {'options': [{'name': 'token', 'value': '1000'},
                                                     {'name': 'consensus', 'value': '2000'}]}
    assert out['ha_cluster_resource_defaults'] == {'meta_attrs': []}
    assert out['ha_cluster_resource_primitives'] == [
        {'id': 'a', 'agent': 'ocf:pacemaker:Dummy', 'meta_attrs': [{'attrs': [{'name': 'is-managed',
                                                                               'value': 'false'}]}]},
        {'id': 'b', 'agent': 'ocf:pacemaker:Dummy'}]
    assert out['ha_cluster_resource_groups'] == []
    assert out['ha_cluster_constraints_location'] == []    # only location constraints are rendered


def test_ipv6_booleans_are_text_for_ha_cluster():
    cib = model([PAIR2], ['be2', 'spare'], [dict(DEVICES[0], targets=['be2']), DEVICES[1]], {})
    address = [p for p in ha_cluster_vars(cib, ['be2', 'spare'], {})['ha_cluster_resource_primitives']
               if p['id'] == 'be2-address'][0]
    assert address['instance_attrs'] == [{'attrs': [{'name': 'cidr_netmask', 'value': '64'},
                                                    {'name': 'ip', 'value': '2001:db8::122'},
                                                    {'name': 'nodad', 'value': 'true'}]}]


# ---------------------------------------------------------------------------------------------- with pacemaker_cib

@pytest.mark.parametrize('opts', [{}, {'ping_targets': ['198.51.100.1'], 'interface': 'eth0'}])
def test_the_model_is_a_valid_pacemaker_cib_configuration(opts):
    nodes = ['be1', 'be2', 'spare']
    cib = model([PAIR, PAIR2], nodes, DEVICES3, opts)
    desired = Desired(cib)
    config, changes = plan(ET.Element('configuration'), desired)
    assert {c['action'] for c in changes} == {'create'}
    objects = [c['object'] for c in changes if 'section' in c]
    assert objects == ([r['id'] for r in cib['resources']] + [c['id'] for c in cib['constraints']]
                       + ['fl-be1-1', 'fl-be2-1', 'fl-spare-1'])
    assert len(changes) == len(objects) + len(cib['properties']) + len(cib['resource_defaults'])
    assert config.find("resources/group[@id='cyrus-be2']/primitive[@id='be2-address']/instance_attributes/"
                       "nvpair[@name='nodad']").get('value') == 'true'
    assert config.find("crm_config/cluster_property_set/nvpair[@name='stonith-enabled']").get('value') == 'true'
    assert plan(config, desired)[1] == []


# ---------------------------------------------------------------------------------------------- filters

def filters():
    return {**ClusterConfigFilters().filters(), **HaClusterVarsFilters().filters()}


def test_filters_are_registered_and_chain():
    config = filters()['cluster_config']([PAIR], NODES, DEVICES, {'name': 'mail'})
    assert config == model([PAIR], NODES, DEVICES, {'name': 'mail'})
    rendered = filters()['ha_cluster_vars'](config, NODES, {'name': 'mail'})
    assert rendered == ha_cluster_vars(config, NODES, {'name': 'mail'})


def test_cluster_config_filter_accepts_none_for_the_optional_parts():
    config = filters()['cluster_config'](None, NODES, None, {'allow_no_fencing': True})
    assert config['resources'] == [] and config['properties']['stonith-enabled'] is False


@pytest.mark.parametrize('args, message', [
    (([PAIR], ['be1']), "a cluster needs at least two nodes, not ['be1']"),
    (([PAIR], NODES), NO_FENCING),
    (([PAIR], NODES, None, None), NO_FENCING),
    (([pair(home='be9')], NODES, DEVICES), "pair be1: home be9 is not a cluster node ['be1', 'spare']"),
    (([PAIR], NODES, [dict(DEVICES[0], agent='ipmilan'), DEVICES[1]]),
     "fence device fence-be1: agent 'ipmilan' is not a fence agent (fence_*)"),
])
def test_cluster_config_filter_errors(args, message):
    with pytest.raises(AnsibleFilterError) as caught:
        filters()['cluster_config'](*args)
    assert str(caught.value) == f'cyrus.ha.cluster_config: {message}'


@pytest.mark.parametrize('config, detail', [
    ({}, "'resources'"),
    ({'resources': [], 'constraints': [{'type': 'location'}]}, "'resource'"),
    (None, "'NoneType' object is not iterable"),
    ([1, 2], 'cannot convert dictionary update sequence element #0 to a sequence'),
])
def test_ha_cluster_vars_filter_errors(config, detail):
    with pytest.raises(AnsibleFilterError) as caught:
        filters()['ha_cluster_vars'](config, NODES)
    # ansible-core 2.19 appends the cause's message again after a colon; older versions do not
    prefix = 'cyrus.ha.ha_cluster_vars: the input is not a cluster_config result'
    assert str(caught.value).startswith(f'{prefix} ({detail})')


def test_ha_cluster_vars_filter_on_a_string():
    with pytest.raises(AnsibleFilterError):
        filters()['ha_cluster_vars']('cyrus-ha', NODES)


def test_cluster_config_filter_on_a_volume_given_as_a_path():
    with pytest.raises(AnsibleFilterError, match='^cyrus.ha.cluster_config: pair be1'):
        filters()['cluster_config']([pair(volume='/srv/cyrus-ha/be1')], NODES, DEVICES)


def test_a_fence_device_keeps_its_meta_attributes():
    """fence_scsi needs provides=unfencing as a meta attribute of its stonith resource."""
    devices = [dict(DEVICES[0], agent='fence_scsi', meta={'provides': 'unfencing'}), DEVICES[1]]
    resources, dummy, dummy2 = fencing(NODES, devices, [])
    assert resources[0]['meta'] == {'provides': 'unfencing'} and 'meta' not in resources[1]
