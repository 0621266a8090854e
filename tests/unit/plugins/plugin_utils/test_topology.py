# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import copy

import pytest

from ansible_collections.cyrus.ha.plugins.plugin_utils import topology
from ansible_collections.cyrus.ha.plugins.plugin_utils.topology import TopologyError, build

BASE = {
    'plugin': 'cyrus.ha.murder',
    'subnets': ['198.51.100.0/24', '2001:db8::/64'],
    'hosts': {'mupdate': {'address': '198.51.100.10'}, 'fe1': {'address': '198.51.100.11'},
              'be1': {'address': '198.51.100.21', 'address6': '2001:db8::21'}, 'be2': {'address': '198.51.100.22'},
              'spare': {'address': '198.51.100.30'}},
    'instances': {
        'mupdate': {'role': 'mupdate', 'host': 'mupdate', 'address': '198.51.100.110',
                    'servername': 'mupdate-svc.cyha.test'},
        'fe1': {'role': 'frontend', 'host': 'fe1', 'address': '198.51.100.111', 'servername': 'fe1-svc.cyha.test'},
        'be1': {'role': 'backend', 'host': 'be1', 'address': '198.51.100.121', 'address6': '2001:db8::121',
                'servername': 'be1-svc.cyha.test', 'vars': {'murder_pop3': True}},
        'be2': {'role': 'backend', 'host': 'be2', 'address': '198.51.100.122', 'servername': 'be2-svc.cyha.test'},
    },
    'warm_spares': [{'instance': 'be1', 'home': 'be1', 'spare': 'spare',
                     'volume': {'label': 'cyha-be1', 'mount': '/srv/cyrus-ha/be1'}},
                    {'instance': 'be2', 'spare': 'spare',
                     'volume': {'uuid': '2f6d7c1e-8a3b-4c55-9e0f-1a2b3c4d5e6f', 'mount': '/srv/cyrus-ha/be2',
                                'fstype': 'xfs'}}],
}


def with_change(path: str, value):
    """BASE with one value replaced (or deleted when value is ...); path is dotted, [n] for lists."""
    data = copy.deepcopy(BASE)
    keys = path.split('.')
    node = data
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = int(keys[-1]) if keys[-1].isdigit() else keys[-1]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def test_groups_and_host_variables():
    built = build(copy.deepcopy(BASE))
    assert built['groups'] == {'murder': ['mupdate', 'fe1', 'be1', 'be2', 'spare'], 'mupdate_master': ['mupdate'],
                               'backends': ['be1', 'be2'], 'frontends': ['fe1'], 'spares': ['spare']}
    be1 = built['hostvars']['be1']
    assert be1['ansible_host'] == '198.51.100.21'
    assert be1['murder_host_address6'] == '2001:db8::21'
    assert (be1['murder_role'], be1['murder_instance'], be1['murder_address'], be1['murder_address_prefix'],
            be1['murder_servername']) == ('backend', 'be1', '198.51.100.121', 24, 'be1-svc.cyha.test')
    assert be1['murder_pop3'] is True
    assert be1['murder_instances'] == [{
        'name': 'be1', 'role': 'backend', 'host': 'be1', 'address': '198.51.100.121', 'address_prefix': 24,
        'address6': '2001:db8::121', 'address6_prefix': 64, 'servername': 'be1-svc.cyha.test', 'spare': 'spare',
        'volume': {'uuid': None, 'label': 'cyha-be1', 'device': None, 'mount': '/srv/cyrus-ha/be1', 'fstype': 'ext4',
                   'options': 'defaults'}}]
    spare = built['hostvars']['spare']
    assert 'murder_role' not in spare and spare['murder_instances'] == []
    assert [i['name'] for i in spare['murder_standby_instances']] == ['be1', 'be2']
    assert spare['murder_standby_instances'][1]['volume']['fstype'] == 'xfs'
    assert built['vars'] == {'murder_mupdate_servername': 'mupdate-svc.cyha.test'}


@pytest.mark.parametrize('path, value, message', [
    ('subnets', [], 'subnets: expected a non-empty list of networks such as 198.51.100.0/24'),
    ('subnets.0', '198.51.100.1/24', 'subnets[0]: 198.51.100.1/24 has host bits set: write 198.51.100.0/24'),
    ('subnets.0', '198.51.100.0', "subnets[0]: '198.51.100.0' is not a network in CIDR form such as 198.51.100.0/24"),
    ('subnets.1', '2001:DB8::/64', 'subnets[1]: write 2001:DB8::/64 as 2001:db8::/64'),
    ('subnets.1', '198.51.100.128/25', 'subnets[1]: 198.51.100.128/25 overlaps subnets[0] 198.51.100.0/24'),
    ('hosts.be1.address', '203.0.113.21', "hosts.be1.address: 203.0.113.21 is outside the declared IPv4 subnets "
                                          "(198.51.100.0/24)"),
    ('hosts.be1.address', '198.51.100.021', "hosts.be1.address: '198.51.100.021' is not a valid IPv4 address"),
    ('hosts.be1.address', '198.51.100.21/24', 'hosts.be1.address: 198.51.100.21/24 has a prefix length: write the '
                                              'address alone (the prefix comes from subnets)'),
    ('hosts.be1.address', ..., "hosts.be1: address (the host's own boot address) is required"),
    ('hosts.be1.address6', '2001:0db8:0000::21', 'hosts.be1.address6: write 2001:0db8:0000::21 as 2001:db8::21'),
    ('hosts.be1.address6', 'fe80::21', 'hosts.be1.address6: fe80::21 cannot be a host or service address'),
    ('hosts.be2.address', '198.51.100.21', 'hosts.be2.address: 198.51.100.21 is already used by hosts.be1.address'),
    ('hosts.be2.mac', 'x', 'hosts.be2: unknown key mac (known: address, address6, vars)'),
    ('hosts.b@d', {'address': '198.51.100.40'}, "hosts.b@d: 'b@d' is not a valid inventory host name"),
    ('instances.be1.address', '198.51.100.21', 'instances.be1.address: 198.51.100.21 is the boot address of be1: a '
                                               'service address must be its own'),
    ('instances.be2.address', '198.51.100.121', 'instances.be2.address: 198.51.100.121 is already used by '
                                                'instances.be1.address'),
    ('instances.be1.address', '198.51.100.255', 'instances.be1.address: 198.51.100.255 is the network or broadcast '
                                                'address of 198.51.100.0/24'),
    ('instances.be1.address', '2001:db8::121', 'instances.be1.address: 2001:db8::121 is IPv6: put it in address6 '
                                               '(address is the IPv4 service address)'),
    ('instances.be1.address6', '2001:db8:1::121', 'instances.be1.address6: 2001:db8:1::121 is outside the declared '
                                                  'IPv6 subnets (2001:db8::/64)'),
    ('instances.be1.role', 'replica', "instances.be1.role: 'replica' is not one of mupdate, backend, frontend"),
    ('instances.be1.host', 'be9', "instances.be1.host: 'be9' is not declared under hosts"),
    ('instances.be1.servername', ..., 'instances.be1: servername is required'),
    ('instances.be2.servername', 'be1-svc.other.test', "instances.be2.servername: be1-svc.other.test has the same "
                                                       "first label 'be1-svc' as instances.be1: servernames must "
                                                       "differ before the first dot"),
    ('instances.be2.servername', '198.51.100.122', "instances.be2.servername: '198.51.100.122' must be a fully "
                                                   "qualified host name (Cyrus derives <short>_password keys from "
                                                   "the label before the first dot)"),
    ('instances.Be3', {}, 'instances.Be3: instance names are a lower-case letter then up to 30 of a-z 0-9 _ -'),
    ('instances.mupdate.role', 'frontend', 'instances: a Murder has exactly one mupdate master instance, found 0'),
    ('instances.fe1.role', 'mupdate', 'instances: a Murder has exactly one mupdate master instance, found 2 '
                                      '(mupdate, fe1)'),
    ('warm_spares.0.instance', 'fe1', 'warm_spares[0] (fe1): only backends have warm spares, and fe1 is a frontend'),
    ('warm_spares.0.instance', 'be9', "warm_spares[0].instance: 'be9' is not declared under instances"),
    ('warm_spares.1.instance', 'be1', 'warm_spares[1] (be1): be1 already has the warm spare spare'),
    ('warm_spares.0.home', 'be2', "warm_spares[0] (be1).home: 'be2' is not the host of instance be1 (be1)"),
    ('warm_spares.0.spare', 'be1', 'warm_spares[0] (be1).spare: the spare must be another host than the home host '
                                   'be1'),
    ('warm_spares.0.spare', 'spare9', "warm_spares[0] (be1).spare: 'spare9' is not declared under hosts"),
    ('warm_spares.0.volume', {'mount': '/srv/x'}, 'warm_spares[0] (be1).volume: name the shared volume by uuid, '
                                                  'label or device'),
    ('warm_spares.0.volume', {'label': 'x', 'mount': 'srv'}, 'warm_spares[0] (be1).volume.mount: an absolute path '
                                                             'is required'),
    ('warm_spares.1.volume', {'label': 'cyha-be1', 'mount': '/srv/b'}, 'warm_spares[1] (be2).volume.label: cyha-be1 '
                                                                       'is already the volume of be1'),
    ('warm_spares.1.volume', {'label': 'l2', 'mount': '/srv/cyrus-ha/be1'}, 'warm_spares[1] (be2).volume.mount: '
                                                                            '/srv/cyrus-ha/be1 is already the mount '
                                                                            'point of be1'),
    ('warm_spares', {'be1': 'spare'}, 'warm_spares: expected a list of {instance, home, spare, volume}'),
    ('extra', 1, 'topology: unknown key extra (known: cache, cache_connection, cache_plugin, cache_prefix, '
                 'cache_timeout, compose, groups, hosts, instances, keyed_groups, leading_separator, plugin, '
                 'strict, subnets, use_extra_vars, vars, warm_spares)'),
])
def test_bad_topology_names_the_entry_and_cause(path, value, message):
    with pytest.raises(TopologyError) as info:
        build(with_change(path, value))
    assert str(info.value) == message


# -- the steps of build(), one job each ---------------------------------------------------------

SUBNETS = ['198.51.100.0/24', '2001:db8:100::/64']


def subnets():
    return topology.parse_subnets(list(SUBNETS))


def test_parse_subnets_keeps_order_and_family():
    got = topology.parse_subnets(['198.51.100.0/24', '2001:db8:100::/64', '203.0.113.0/25'])
    assert [(str(n), n.version, n.prefixlen) for n in got] == [('198.51.100.0/24', 4, 24), ('2001:db8:100::/64', 6, 64),
                                                               ('203.0.113.0/25', 4, 25)]


@pytest.mark.parametrize('raw, message', [
    (None, 'subnets: expected a non-empty list of networks such as 198.51.100.0/24'),
    ('198.51.100.0/24', 'subnets: expected a non-empty list of networks such as 198.51.100.0/24'),
    (['2001:db8:100::/64', '2001:db8::/32'], 'subnets[1]: 2001:db8::/32 overlaps subnets[0] 2001:db8:100::/64'),
])
def test_parse_subnets_refuses(raw, message):
    with pytest.raises(TopologyError) as info:
        topology.parse_subnets(raw)
    assert str(info.value) == message


def test_address_claims_name_the_first_owner():
    claims = topology.AddressClaims()
    claims.claim('198.51.100.21', 'hosts.imap-be1.address', 'hosts.imap-be1.address')
    claims.claim('198.51.100.121', 'instances.be1.address', 'instances.be1.address')
    with pytest.raises(TopologyError) as boot:
        claims.claim('198.51.100.21', 'instances.be2.address', 'instances.be2.address')
    with pytest.raises(TopologyError) as service:
        claims.claim('198.51.100.121', 'instances.be2.address', 'instances.be2.address')
    with pytest.raises(TopologyError) as host:
        claims.claim('198.51.100.121', 'hosts.imap-be2.address', 'hosts.imap-be2.address')
    assert str(boot.value) == ('instances.be2.address: 198.51.100.21 is the boot address of imap-be1: a service '
                               'address must be its own')
    assert str(service.value) == 'instances.be2.address: 198.51.100.121 is already used by instances.be1.address'
    assert str(host.value) == 'hosts.imap-be2.address: 198.51.100.121 is already used by instances.be1.address'
    assert claims.owners == {'198.51.100.21': 'hosts.imap-be1.address', '198.51.100.121': 'instances.be1.address'}


@pytest.mark.parametrize('spec, expected', [
    ({'address': '198.51.100.21'},
     {'ansible_host': '198.51.100.21', 'murder_instances': [], 'murder_standby_instances': []}),
    ({'address': '2001:db8:100::21'},
     {'ansible_host': '2001:db8:100::21', 'murder_instances': [], 'murder_standby_instances': []}),
    ({'address': '198.51.100.21', 'address6': '2001:db8:100::21', 'vars': {'ansible_user': 'admin'}},
     {'ansible_host': '198.51.100.21', 'murder_instances': [], 'murder_standby_instances': [],
      'murder_host_address6': '2001:db8:100::21', 'ansible_user': 'admin'}),
])
def test_build_host(spec, expected):
    claims = topology.AddressClaims()
    assert topology.build_host('imap-be1', spec, subnets(), claims) == expected
    assert set(claims.owners.values()) <= {'hosts.imap-be1.address', 'hosts.imap-be1.address6'}
    assert len(claims.owners) == 1 + ('address6' in spec)


def test_build_hosts_keeps_the_file_order():
    hosts = {'imap-spare': {'address': '198.51.100.30'}, 'imap-be1': {'address': '198.51.100.21'}}
    assert list(topology.build_hosts(hosts, subnets(), topology.AddressClaims())) == ['imap-spare', 'imap-be1']
    with pytest.raises(TopologyError) as info:
        topology.build_hosts({}, subnets(), topology.AddressClaims())
    assert str(info.value) == 'hosts: declare at least one host'


@pytest.mark.parametrize('servername, short', [
    ('be1.imap.example.org', 'be1'), ('BE1.imap.example.org', 'be1'), ('mupdate.example.org', 'mupdate')])
def test_check_servername_returns_the_short_name(servername, short):
    assert topology.check_servername('instances.be1', servername) == short


@pytest.mark.parametrize('servername', ['be1', '198.51.100.121', 'be_1.example.org', 12, '-be1.example.org'])
def test_check_servername_refuses(servername):
    with pytest.raises(TopologyError) as info:
        topology.check_servername('instances.be1', servername)
    assert str(info.value) == ('instances.be1.servername: %r must be a fully qualified host name (Cyrus derives '
                               '<short>_password keys from the label before the first dot)' % (servername,))


def example_hosts():
    return topology.build_hosts({'imap-mupdate': {'address': '198.51.100.10'}, 'imap-fe1': {'address': '198.51.100.11'},
                                 'imap-be1': {'address': '198.51.100.21'}, 'imap-spare': {'address': '198.51.100.30'}},
                                subnets(), topology.AddressClaims())


def test_build_instance():
    short_names = {}
    item = topology.build_instance('be1', {'role': 'backend', 'host': 'imap-be1', 'address': '198.51.100.121',
                                           'address6': '2001:db8:100::121', 'servername': 'be1.imap.example.org',
                                           'vars': {'murder_pop3': True}},
                                   example_hosts(), subnets(), topology.AddressClaims(), short_names)
    assert item == {'name': 'be1', 'role': 'backend', 'host': 'imap-be1', 'address': '198.51.100.121',
                    'address_prefix': 24, 'address6': '2001:db8:100::121', 'address6_prefix': 64,
                    'servername': 'be1.imap.example.org', 'spare': None, 'volume': None, 'vars': {'murder_pop3': True}}
    assert short_names == {'be1': 'be1'}


@pytest.mark.parametrize('host', [['imap-be1'], {'name': 'imap-be1'}, 'imap-be9'])
def test_build_instance_refuses_a_host_that_is_not_declared(host):
    with pytest.raises(TopologyError) as info:
        topology.build_instance('be1', {'role': 'backend', 'host': host, 'address': '198.51.100.121',
                                        'servername': 'be1.imap.example.org'},
                                example_hosts(), subnets(), topology.AddressClaims(), {})
    assert str(info.value) == 'instances.be1.host: %r is not declared under hosts' % (host,)


def example_instances():
    return topology.build_instances({
        'mupdate': {'role': 'mupdate', 'host': 'imap-mupdate', 'address': '198.51.100.110',
                    'servername': 'mupdate.imap.example.org'},
        'fe1': {'role': 'frontend', 'host': 'imap-fe1', 'address': '198.51.100.111',
                'servername': 'fe1.imap.example.org', 'vars': {'murder_pop3': True}},
        'be1': {'role': 'backend', 'host': 'imap-be1', 'address': '198.51.100.121',
                'servername': 'be1.imap.example.org'},
    }, example_hosts(), subnets(), topology.AddressClaims())


def test_build_instances_and_check_master():
    described = example_instances()
    assert list(described) == ['mupdate', 'fe1', 'be1']
    assert topology.check_master(described) == 'mupdate'
    described['fe1']['role'] = 'mupdate'
    with pytest.raises(TopologyError) as info:
        topology.check_master(described)
    assert str(info.value) == 'instances: a Murder has exactly one mupdate master instance, found 2 (mupdate, fe1)'


def test_parse_volume_fills_the_defaults_and_records_the_owner():
    seen = {}
    volume = topology.parse_volume('warm_spares[0] (be1)', {'label': 'cyrus-be1', 'mount': '/srv/cyrus/be1'}, 'be1', seen)
    assert volume == {'uuid': None, 'label': 'cyrus-be1', 'device': None, 'mount': '/srv/cyrus/be1', 'fstype': 'ext4',
                      'options': 'defaults'}
    assert seen == {('label', 'cyrus-be1'): 'be1', ('mount', '/srv/cyrus/be1'): 'be1'}
    raw = {'uuid': 'u2', 'device': '/dev/mapper/be2', 'mount': '/srv/b2', 'fstype': 'xfs', 'options': 'noatime'}
    volume = topology.parse_volume('warm_spares[1] (be2)', raw, 'be2', seen)
    assert volume == {'uuid': 'u2', 'label': None, 'device': '/dev/mapper/be2', 'mount': '/srv/b2', 'fstype': 'xfs',
                      'options': 'noatime'}
    assert seen[('uuid', 'u2')] == seen[('device', '/dev/mapper/be2')] == 'be2'


@pytest.mark.parametrize('raw, message', [
    ({'label': 'cyrus-be1', 'mount': '/srv/other'}, 'w.volume.label: cyrus-be1 is already the volume of be1'),
    ({'label': 'l2', 'mount': '/srv/cyrus/be1'}, 'w.volume.mount: /srv/cyrus/be1 is already the mount point of be1'),
    ({'device': 'sdc', 'mount': '/srv/b2'}, 'w.volume.device: an absolute path is required'),
    ({'label': ['l2'], 'mount': '/srv/b2'}, 'w.volume.label: expected a string, got list'),
    ({'uuid': {'u': 1}, 'mount': '/srv/b2'}, 'w.volume.uuid: expected a string, got dict'),
    ({'label': 'l2', 'mount': '/srv/b2', 'size': 1}, 'w.volume: unknown key size (known: device, fstype, label, mount, '
                                                     'options, uuid)'),
    ('cyrus-be2', 'w.volume: expected a mapping, got str'),
])
def test_parse_volume_refuses(raw, message):
    seen = {('label', 'cyrus-be1'): 'be1', ('mount', '/srv/cyrus/be1'): 'be1'}
    with pytest.raises(TopologyError) as info:
        topology.parse_volume('w', raw, 'be2', seen)
    assert str(info.value) == message


def test_attach_warm_spares_sets_spare_and_volume():
    hostvars, described = example_hosts(), example_instances()
    topology.attach_warm_spares([{'instance': 'be1', 'spare': 'imap-spare',
                                  'volume': {'label': 'cyrus-be1', 'mount': '/srv/cyrus/be1'}}], described, hostvars)
    assert described['be1']['spare'] == 'imap-spare'
    assert described['be1']['volume']['label'] == 'cyrus-be1'
    assert described['fe1']['spare'] is None and described['fe1']['volume'] is None
    topology.attach_warm_spares(None, described, hostvars)   # no pairs: nothing changes
    assert described['be1']['spare'] == 'imap-spare'


@pytest.mark.parametrize('change, message', [
    ({'instance': ['be1']}, "warm_spares[0].instance: ['be1'] is not declared under instances"),
    ({'spare': {'host': 'imap-spare'}}, "warm_spares[0] (be1).spare: {'host': 'imap-spare'} is not declared under hosts"),
    ({'home': 'imap-fe1'}, "warm_spares[0] (be1).home: 'imap-fe1' is not the host of instance be1 (imap-be1)"),
])
def test_attach_warm_spare_refuses(change, message):
    spec = dict({'instance': 'be1', 'spare': 'imap-spare', 'volume': {'label': 'cyrus-be1', 'mount': '/srv/cyrus/be1'}},
                **change)
    described = example_instances()
    with pytest.raises(TopologyError) as info:
        topology.attach_warm_spare(0, spec, described, example_hosts(), {})
    assert str(info.value) == message
    assert described['be1']['spare'] is None and described['be1']['volume'] is None


def test_place_groups_and_first_instance_vars():
    hostvars, described = example_hosts(), example_instances()
    topology.attach_warm_spares([{'instance': 'be1', 'spare': 'imap-spare',
                                  'volume': {'label': 'cyrus-be1', 'mount': '/srv/cyrus/be1'}}], described, hostvars)
    topology.place_instances(described, hostvars)
    assert [i['name'] for i in hostvars['imap-be1']['murder_instances']] == ['be1']
    assert hostvars['imap-spare']['murder_instances'] == []
    assert hostvars['imap-spare']['murder_standby_instances'] == hostvars['imap-be1']['murder_instances']
    assert 'vars' not in hostvars['imap-fe1']['murder_instances'][0]
    assert topology.build_groups(described, hostvars) == {
        'murder': ['imap-mupdate', 'imap-fe1', 'imap-be1', 'imap-spare'], 'mupdate_master': ['imap-mupdate'],
        'backends': ['imap-be1'], 'frontends': ['imap-fe1'], 'spares': ['imap-spare']}
    hostvars['imap-fe1']['murder_pop3'] = False   # the host's own vars win over its instance's
    topology.first_instance_vars(described, hostvars)
    fe1 = hostvars['imap-fe1']
    assert (fe1['murder_role'], fe1['murder_instance'], fe1['murder_address'], fe1['murder_address_prefix'],
            fe1['murder_servername'], fe1['murder_pop3']) == ('frontend', 'fe1', '198.51.100.111', 24,
                                                              'fe1.imap.example.org', False)
    assert 'murder_role' not in hostvars['imap-spare']


def test_global_vars():
    master = {'servername': 'mupdate.imap.example.org'}
    assert topology.global_vars(None, master) == {'murder_mupdate_servername': 'mupdate.imap.example.org'}
    assert topology.global_vars({'murder_mupdate_servername': 'mupdate.example.org', 'x': 1}, master) == \
        {'murder_mupdate_servername': 'mupdate.example.org', 'x': 1}
    with pytest.raises(TopologyError) as info:
        topology.global_vars(['x'], master)
    assert str(info.value) == 'vars: expected a mapping, got list'
