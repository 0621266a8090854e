# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import copy
import datetime

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
                               'backends': ['be1', 'be2'], 'frontends': ['fe1'], 'spares': ['spare'], 'replicas': []}
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
                   'options': 'defaults'}, 'replica': None, 'replication_port': None}]
    assert 'murder_replication_peer' not in be1 and be1['murder_replica_instances'] == []
    spare = built['hostvars']['spare']
    assert 'murder_role' not in spare and spare['murder_instances'] == []
    assert [i['name'] for i in spare['murder_standby_instances']] == ['be1', 'be2']
    assert spare['murder_standby_instances'][1]['volume']['fstype'] == 'xfs'
    assert built['vars'] == {'murder_mupdate_servername': 'mupdate-svc.cyha.test', 'replication_pairs': [],
                             'warm_spare_pairs': [
                                 {'instance': 'be1', 'home': 'be1', 'spare': 'spare', 'address': '198.51.100.121',
                                  'servername': 'be1-svc.cyha.test',
                                  'volume': {'label': 'cyha-be1', 'mount': '/srv/cyrus-ha/be1'}},
                                 {'instance': 'be2', 'home': 'be2', 'spare': 'spare', 'address': '198.51.100.122',
                                  'servername': 'be2-svc.cyha.test',
                                  'volume': {'uuid': '2f6d7c1e-8a3b-4c55-9e0f-1a2b3c4d5e6f',
                                             'mount': '/srv/cyrus-ha/be2'}}]}


@pytest.mark.parametrize('path, value, message', [
    ('subnets', [], 'subnets: expected a non-empty list of networks such as 198.51.100.0/24'),
    ('subnets.0', '198.51.100.1/24', 'subnets[0]: 198.51.100.1/24 has host bits set: write 198.51.100.0/24'),
    ('subnets.0', '198.51.100.0', "subnets[0]: '198.51.100.0' is not a network in CIDR form such as 198.51.100.0/24"),
    ('subnets.1', '2001:DB8::/64', 'subnets[1]: write 2001:DB8::/64 as 2001:db8::/64'),
    ('subnets.1', '198.51.100.128/25', 'subnets[1]: 198.51.100.128/25 overlaps subnets[0] 198.51.100.0/24'),
    ('hosts.be1.address', '203.0.113.21', "hosts.be1.address: 203.0.113.21 is outside the declared IPv4 subnets "
                                          "(198.51.100.0/24)"),
    ('hosts.be1.address', '198.51.100.021', "hosts.be1.address: '198.51.100.021' is not a valid IPv4 address (four "
                                            "decimal numbers from 0 to 255 without leading zeros)"),
    ('hosts.be1.address', '198.51.100.21/24', 'hosts.be1.address: 198.51.100.21/24 has a prefix length: write the '
                                              'address alone (the prefix comes from subnets)'),
    ('hosts.be1.address', ..., "hosts.be1: address (the host's own boot address) is required"),
    ('hosts.be1.address6', '2001:0db8:0000::21', 'hosts.be1.address6: write 2001:0db8:0000::21 as 2001:db8::21'),
    ('hosts.be1.address6', 'fe80::21', 'hosts.be1.address6: fe80::21 is a link-local address (fe80::/10): it cannot '
                                       'be a host or service address'),
    ('hosts.be2.address', '198.51.100.21', 'hosts.be2.address: 198.51.100.21 is already used by hosts.be1.address'),
    ('hosts.be2.mac', 'x', 'hosts.be2: unknown key mac (known: address, address6, vars)'),
    ('hosts.b@d', {'address': '198.51.100.40'}, "hosts.b@d: 'b@d' is not a valid inventory host name (dot-separated "
                                                "labels of ASCII letters, digits, _ and -, each starting and ending "
                                                "with a letter or digit; at most 63 characters)"),
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
    ('warm_spares.0.volume', {'mount': '/srv/x'}, 'warm_spares[0] (be1).volume: name the shared volume by its uuid '
                                                  'or its label'),
    ('warm_spares.0.volume', {'label': 'x', 'mount': 'srv'}, 'warm_spares[0] (be1).volume.mount: an absolute path '
                                                             'is required'),
    ('warm_spares.1.volume', {'label': 'cyha-be1', 'mount': '/srv/b'}, 'warm_spares[1] (be2).volume.label: cyha-be1 '
                                                                       'is already the volume of be1'),
    ('warm_spares.1.volume', {'label': 'l2', 'mount': '/srv/cyrus-ha/be1'}, 'warm_spares[1] (be2).volume.mount: '
                                                                            '/srv/cyrus-ha/be1 is already the mount '
                                                                            'point of be1'),
    ('warm_spares', {'be1': 'spare'}, 'warm_spares: expected a list of {instance, home, spare, volume}, got mapping'),
    ('extra', 1, 'topology: unknown key extra (known: compose, groups, hosts, instances, keyed_groups, '
                 'leading_separator, plugin, replicas, strict, subnets, use_extra_vars, vars, warm_spares)'),
])
def test_bad_topology_names_the_entry_and_cause(path, value, message):
    with pytest.raises(TopologyError) as info:
        build(with_change(path, value))
    assert str(info.value) == message


# -- hostile and careless input: every bad value is refused, naming the entry and the cause -----------

V0 = ('warm_spares', 0, 'volume')
V1 = ('warm_spares', 1, 'volume')
NAN, INF = float('nan'), float('inf')
# a second instance on host be1
BE3 = {'role': 'backend', 'host': 'be1', 'address': '198.51.100.123', 'servername': 'be3-svc.cyha.test',
       'vars': {'murder_pop3': False}}
NAME_RULE = ('is not a valid inventory host name (dot-separated labels of ASCII letters, digits, _ and -, each '
             'starting and ending with a letter or digit; at most 63 characters)')
LONG_NAME = "'%s... (10000 characters)" % ('b' * 59)
MSG_LONG_HOST = 'hosts.%s: %s %s' % (LONG_NAME, LONG_NAME, NAME_RULE)
MSG_LONG_ADDRESS = ("hosts.be1.address: '%s... (100000 characters) is not a valid IPv4 address (four decimal numbers "
                    "from 0 to 255 without leading zeros)" % ('1' * 59))


def with_changes(changes):
    """BASE with values replaced (deleted when the value is ...); each path a tuple of keys and list indexes."""
    data = copy.deepcopy(BASE)
    for path, value in changes:
        if not path:
            return value
        node = data
        for key in path[:-1]:
            node = node[key]
        if value is ...:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return data


HOSTILE = [
    # -- numbers: not finite, negative, booleans, prefix lengths out of range, huge
    # N1 hosts.be1.address: .nan
    pytest.param([(('hosts', 'be1', 'address'), NAN)],
                 'hosts.be1.address: expected an IPv4 address, got number nan', id='N1'),
    # N2 hosts.be1.address: .inf
    pytest.param([(('hosts', 'be1', 'address'), INF)],
                 'hosts.be1.address: expected an IPv4 address, got number inf', id='N2'),
    # N3 hosts.be1.address: 3325256725 (an integer)
    pytest.param([(('hosts', 'be1', 'address'), 3325256725)],
                 'hosts.be1.address: expected an IPv4 address, got integer 3325256725', id='N3'),
    # N4 hosts.be1.address: true
    pytest.param([(('hosts', 'be1', 'address'), True)],
                 'hosts.be1.address: expected an IPv4 address, got boolean true', id='N4'),
    # N5 hosts.be1.address: 10**40
    pytest.param([(('hosts', 'be1', 'address'), 10000000000000000000000000000000000000000)],
                 'hosts.be1.address: expected an IPv4 address, got integer '
                 '10000000000000000000000000000000000000000', id='N5'),
    # N6 instances.be1.address: -1
    pytest.param([(('instances', 'be1', 'address'), -1)],
                 'instances.be1.address: expected an IPv4 address, got integer -1', id='N6'),
    # N7 subnets: [.inf]
    pytest.param([(('subnets',), [INF])],
                 'subnets[0]: expected a network in CIDR form such as 198.51.100.0/24, got number inf', id='N7'),
    # N8 subnets[0]: 198.51.100.0/33
    pytest.param([(('subnets', 0), '198.51.100.0/33')],
                 "subnets[0]: '198.51.100.0/33': the prefix length '33' is out of range (0 to 32 for "
                 'IPv4)', id='N8'),
    # N9 subnets[0]: 198.51.100.0/-8
    pytest.param([(('subnets', 0), '198.51.100.0/-8')],
                 "subnets[0]: '198.51.100.0/-8': the prefix length '-8' is not a number from 0 to 32", id='N9'),
    # N10 subnets[1]: 2001:db8::/129
    pytest.param([(('subnets', 1), '2001:db8::/129')],
                 "subnets[1]: '2001:db8::/129': the prefix length '129' is out of range (0 to 128 for "
                 'IPv6)', id='N10'),
    # N11 subnets[0]: 198.51.100.0/99999999999999999999
    pytest.param([(('subnets', 0), '198.51.100.0/99999999999999999999')],
                 "subnets[0]: '198.51.100.0/99999999999999999999': the prefix length "
                 "'99999999999999999999' is out of range (0 to 32 for IPv4)", id='N11'),
    # N12 subnets[0]: 0.0.0.0/0 (every address; service addresses get prefix 0)
    pytest.param([(('subnets', 0), '0.0.0.0/0')],
                 'subnets[0]: 0.0.0.0/0 overlaps 0.0.0.0/32 (the unspecified address), where no host '
                 'or service address can be: declare only the networks of the hosts and their service '
                 'addresses', id='N12'),
    # N13 subnets[1]: ::/0
    pytest.param([(('subnets', 1), '::/0')],
                 'subnets[1]: ::/0 overlaps ::/128 (the unspecified address), where no host or '
                 'service address can be: declare only the networks of the hosts and their service '
                 'addresses', id='N13'),
    # N14 warm_spares[0].volume.label: .nan
    pytest.param([(V0 + ('label',), NAN)],
                 'warm_spares[0] (be1).volume.label: expected a filesystem label (1 to 16 of A-Z a-z '
                 '0-9 _ . : + -), got number nan', id='N14'),
    # N15 warm_spares[0].volume.label: true
    pytest.param([(V0 + ('label',), True)],
                 'warm_spares[0] (be1).volume.label: expected a filesystem label (1 to 16 of A-Z a-z '
                 '0-9 _ . : + -), got boolean true', id='N15'),
    # N16 warm_spares[1].volume.uuid: 12345 (an integer)
    pytest.param([(V1 + ('uuid',), 12345)],
                 'warm_spares[1] (be2).volume.uuid: expected a filesystem UUID (hex digits and -), '
                 'got integer 12345', id='N16'),
    # N17 warm_spares[1].volume.fstype: 4
    pytest.param([(V1 + ('fstype',), 4)],
                 'warm_spares[1] (be2).volume.fstype: expected a filesystem type (1 to 32 of a-z 0-9 '
                 '_ .), got integer 4', id='N17'),
    # N18 warm_spares[0].volume.options: true
    pytest.param([(V0 + ('options',), True)],
                 'warm_spares[0] (be1).volume.options: expected a list of mount options (A-Z a-z 0-9 '
                 '_ = , . : + / @ -, no spaces), got boolean true', id='N18'),
    # N19 instances.be1.servername: 1.5
    pytest.param([(('instances', 'be1', 'servername'), 1.5)],
                 'instances.be1.servername: 1.5 must be a fully qualified host name (Cyrus derives '
                 '<short>_password keys from the label before the first dot)', id='N19'),
    # N20 strict: 2
    pytest.param([(('strict',), 2)],
                 'strict: expected true or false, got integer 2', id='N20'),
    # N21 subnets[1]: 2001:db8::/0064 (leading zeros in the prefix length)
    pytest.param([(('subnets', 1), '2001:db8::/0064')],
                 'subnets[1]: write 2001:db8::/0064 as 2001:db8::/64', id='N21'),
    # -- text that is not ASCII, digits that are not ASCII digits
    # A1 hosts: bé1 (a host name with an accent)
    pytest.param([(('hosts', 'bé1'), {'address': '198.51.100.41'})],
                 "hosts.'bé1': 'bé1' is not a valid inventory host name (dot-separated labels of "
                 'ASCII letters, digits, _ and -, each starting and ending with a letter or digit; at '
                 'most 63 characters)', id='A1'),
    # A2 hosts: ｂｅ3 (full-width letters)
    pytest.param([(('hosts', 'ｂｅ3'), {'address': '198.51.100.41'})],
                 "hosts.'ｂｅ3': 'ｂｅ3' is not a valid inventory host name (dot-separated labels of "
                 'ASCII letters, digits, _ and -, each starting and ending with a letter or digit; at '
                 'most 63 characters)', id='A2'),
    # A3 instances: bé3
    pytest.param([(('instances', 'bé3'), BE3)],
                 "instances.'bé3': instance names are a lower-case letter then up to 30 of a-z 0-9 _ "
                 '-', id='A3'),
    # A4 instances.be1.servername: bé1-svc.cyha.test
    pytest.param([(('instances', 'be1', 'servername'), 'bé1-svc.cyha.test')],
                 "instances.be1.servername: 'bé1-svc.cyha.test' must be a fully qualified host name "
                 '(Cyrus derives <short>_password keys from the label before the first dot); write an '
                 'internationalized name in its ASCII (xn--) form', id='A4'),
    # A5 hosts.be1.address: ١٩٨.٥١.١٠٠.٢١ (Arabic-Indic digits)
    pytest.param([(('hosts', 'be1', 'address'), '١٩٨.٥١.١٠٠.٢١')],
                 "hosts.be1.address: '١٩٨.٥١.١٠٠.٢١' has characters other than ASCII: write an IPv4 "
                 'address with the ASCII digits 0-9', id='A5'),
    # A6 subnets[0]: 198.51.100.0/٢٤ (Arabic-Indic prefix length)
    pytest.param([(('subnets', 0), '198.51.100.0/٢٤')],
                 "subnets[0]: '198.51.100.0/٢٤' has characters other than ASCII: write a network in "
                 'CIDR form such as 198.51.100.0/24 with the ASCII digits 0-9', id='A6'),
    # A7 hosts.be1.address6: 2001:db8::２１ (full-width digits)
    pytest.param([(('hosts', 'be1', 'address6'), '2001:db8::２１')],
                 "hosts.be1.address6: '2001:db8::２１' has characters other than ASCII: write an IPv6 "
                 'address with the ASCII digits 0-9', id='A7'),
    # A8 hosts.be1.vars: {vär: 1}
    pytest.param([(('hosts', 'be1', 'vars'), {'vär': 1})],
                 "hosts.be1.vars: 'vär' is not a valid variable name (ASCII letters, digits and _, "
                 'not starting with a digit)', id='A8'),
    # A9 warm_spares[0].volume.label: cyha-bé1
    pytest.param([(V0 + ('label',), 'cyha-bé1')],
                 "warm_spares[0] (be1).volume.label: 'cyha-bé1' is not a filesystem label (1 to 16 of "
                 'A-Z a-z 0-9 _ . : + -)', id='A9'),
    # A10 warm_spares[0].volume.mount: /srv/cyrus-ha/bé1
    pytest.param([(V0 + ('mount',), '/srv/cyrus-ha/bé1')],
                 "warm_spares[0] (be1).volume.mount: '/srv/cyrus-ha/bé1' is not an absolute path of "
                 'A-Z a-z 0-9 _ . : + @ , = - /', id='A10'),
    # A11 groups: {bäckends: ...} (a composed group name)
    pytest.param([(('groups',), {'bäckends': 'true'})],
                 "groups: 'bäckends' is not a valid group name (ASCII letters, digits and _, not "
                 'starting with a digit)', id='A11'),
    # -- empty, null, missing, and the wrong YAML type at every level
    # E1 hosts: {}
    pytest.param([(('hosts',), {})],
                 'hosts: declare at least one host', id='E1'),
    # E2 hosts: (null)
    pytest.param([(('hosts',), None)],
                 'hosts: expected a mapping, got null', id='E2'),
    # E3 hosts: [be1, be2] (a list)
    pytest.param([(('hosts',), ['be1', 'be2'])],
                 'hosts: expected a mapping, got list', id='E3'),
    # E4 hosts.be1: (null)
    pytest.param([(('hosts', 'be1'), None)],
                 'hosts.be1: expected a mapping, got null', id='E4'),
    # E5 hosts.be1: 198.51.100.21 (a string)
    pytest.param([(('hosts', 'be1'), '198.51.100.21')],
                 "hosts.be1: expected a mapping, got string '198.51.100.21'", id='E5'),
    # E6 hosts.be1.address: ""
    pytest.param([(('hosts', 'be1', 'address'), '')],
                 'hosts.be1.address: expected an IPv4 address, got an empty string', id='E6'),
    # E7 hosts.be1.address: (null)
    pytest.param([(('hosts', 'be1', 'address'), None)],
                 "hosts.be1: address (the host's own boot address) is required", id='E7'),
    # E8 hosts.be1.vars: "a=1" (a string)
    pytest.param([(('hosts', 'be1', 'vars'), 'a=1')],
                 "hosts.be1.vars: expected a mapping, got string 'a=1'", id='E8'),
    # E9 instances: (missing)
    pytest.param([(('instances',), ...)],
                 'instances: expected a mapping, got null', id='E9'),
    # E10 instances: {}
    pytest.param([(('instances',), {})],
                 'instances: declare at least the mupdate master instance', id='E10'),
    # E11 instances.be1: [] (a list)
    pytest.param([(('instances', 'be1'), [])],
                 'instances.be1: expected a mapping, got list', id='E11'),
    # E12 instances.be1.address6: ""
    pytest.param([(('instances', 'be1', 'address6'), '')],
                 'instances.be1.address6: expected an IPv6 address, got an empty string', id='E12'),
    # E13 instances.be1.role: [backend]
    pytest.param([(('instances', 'be1', 'role'), ['backend'])],
                 "instances.be1.role: ['backend'] is not one of mupdate, backend, frontend", id='E13'),
    # E14 instances.be1.vars: [x]
    pytest.param([(('instances', 'be1', 'vars'), ['x'])],
                 'instances.be1.vars: expected a mapping, got list', id='E14'),
    # E15 subnets: (missing)
    pytest.param([(('subnets',), ...)],
                 'subnets: expected a non-empty list of networks such as 198.51.100.0/24', id='E15'),
    # E16 subnets: {a: 198.51.100.0/24}
    pytest.param([(('subnets',), {'a': '198.51.100.0/24'})],
                 'subnets: expected a non-empty list of networks such as 198.51.100.0/24', id='E16'),
    # E17 subnets: [[198.51.100.0/24]]
    pytest.param([(('subnets',), [['198.51.100.0/24']])],
                 'subnets[0]: expected a network in CIDR form such as 198.51.100.0/24, got list', id='E17'),
    # E18 warm_spares: {}
    pytest.param([(('warm_spares',), {})],
                 'warm_spares: expected a list of {instance, home, spare, volume}, got mapping', id='E18'),
    # E19 warm_spares: ""
    pytest.param([(('warm_spares',), '')],
                 'warm_spares: expected a list of {instance, home, spare, volume}, got an empty '
                 'string', id='E19'),
    # E20 warm_spares: false
    pytest.param([(('warm_spares',), False)],
                 'warm_spares: expected a list of {instance, home, spare, volume}, got boolean false', id='E20'),
    # E21 warm_spares: [null]
    pytest.param([(('warm_spares',), [None])],
                 'warm_spares[0]: expected a mapping, got null', id='E21'),
    # E22 warm_spares[0].volume: (null)
    pytest.param([(V0, None)],
                 'warm_spares[0] (be1).volume: expected a mapping, got null', id='E22'),
    # E23 warm_spares[0].volume: [label, x]
    pytest.param([(V0, ['label', 'x'])],
                 'warm_spares[0] (be1).volume: expected a mapping, got list', id='E23'),
    # E24 warm_spares[1].volume.uuid: "" beside a label
    pytest.param([(V1, {'uuid': '', 'label': 'cyha-be2', 'mount': '/srv/cyrus-ha/be2'})],
                 'warm_spares[1] (be2).volume.uuid: expected a filesystem UUID (hex digits and -), '
                 'got an empty string', id='E24'),
    # E27 warm_spares[0].volume.label: a YAML set
    pytest.param([(V0 + ('label',), {'a', 'b'})],
                 'warm_spares[0] (be1).volume.label: expected a filesystem label (1 to 16 of A-Z a-z '
                 '0-9 _ . : + -), got set', id='E27'),
    # E28 vars: [x]
    pytest.param([(('vars',), ['x'])],
                 'vars: expected a mapping, got list', id='E28'),
    # E29 compose: murder_role (a string)
    pytest.param([(('compose',), 'murder_role')],
                 "compose: expected a mapping, got string 'murder_role'", id='E29'),
    # E30 keyed_groups: {key: murder_role} (a mapping)
    pytest.param([(('keyed_groups',), {'key': 'murder_role'})],
                 'keyed_groups: expected a list of {key, prefix, separator...}, got mapping', id='E30'),
    # E31 strict: maybe
    pytest.param([(('strict',), 'maybe')],
                 "strict: expected true or false, got string 'maybe'", id='E31'),
    # E32 cache: true (the plugin keeps no cache)
    pytest.param([(('cache',), True)],
                 'topology: unknown key cache (known: compose, groups, hosts, instances, '
                 'keyed_groups, leading_separator, plugin, replicas, strict, subnets, use_extra_vars, vars, '
                 'warm_spares)', id='E32'),
    # E33 the topology is a list
    pytest.param([((), ['plugin'])],
                 'topology: expected a mapping, got list', id='E33'),
    # E34 keyed_groups: [null]
    pytest.param([(('keyed_groups',), [None])],
                 'keyed_groups[0]: expected a mapping, got null', id='E34'),
    # E36 groups: [extra] (a list)
    pytest.param([(('groups',), ['extra'])],
                 'groups: expected a mapping, got list', id='E36'),
    # E35 warm_spares[0].volume.label: 2024-01-01 (YAML reads a date)
    pytest.param([(V0 + ('label',), datetime.date(2024, 1, 1))],
                 'warm_spares[0] (be1).volume.label: expected a filesystem label (1 to 16 of A-Z a-z '
                 '0-9 _ . : + -), got date 2024-01-01 (quote it to keep it text)', id='E35'),
    # -- addresses in another textual form, and addresses no host or service may have
    # D1 hosts.be1.address: ::ffff:198.51.100.21 (IPv4-mapped)
    pytest.param([(('hosts', 'be1', 'address'), '::ffff:198.51.100.21')],
                 'hosts.be1.address: ::ffff:198.51.100.21 is an IPv4-mapped address: write it as the '
                 'IPv4 address 198.51.100.21 (IPv4 addresses go in address)', id='D1'),
    # D2 subnets + ::ffff:198.51.100.0/120, instances.be1.address6: ::ffff:198.51.100.121
    pytest.param([(('subnets',), ['198.51.100.0/24', '2001:db8::/64', '::ffff:198.51.100.0/120']),
                  (('instances', 'be1', 'address6'), '::ffff:198.51.100.121')],
                 'subnets[2]: ::ffff:198.51.100.0/120 overlaps ::ffff:0.0.0.0/96 (IPv4-mapped '
                 'addresses), where no host or service address can be: declare only the networks of '
                 'the hosts and their service addresses', id='D2'),
    # D3 hosts.be1.address6: 2001:DB8::21 (upper case)
    pytest.param([(('hosts', 'be1', 'address6'), '2001:DB8::21')],
                 'hosts.be1.address6: write 2001:DB8::21 as 2001:db8::21', id='D3'),
    # D4 hosts.be1.address: 198.51.100.021 (leading zero)
    pytest.param([(('hosts', 'be1', 'address'), '198.51.100.021')],
                 "hosts.be1.address: '198.51.100.021' is not a valid IPv4 address (four decimal "
                 'numbers from 0 to 255 without leading zeros)', id='D4'),
    # D5 instances.be1.address: 198.51.100.121/24
    pytest.param([(('instances', 'be1', 'address'), '198.51.100.121/24')],
                 'instances.be1.address: 198.51.100.121/24 has a prefix length: write the address '
                 'alone (the prefix comes from subnets)', id='D5'),
    # D6 hosts.be1.address6: fe80::21%eth0 (zone id)
    pytest.param([(('hosts', 'be1', 'address6'), 'fe80::21%eth0')],
                 'hosts.be1.address6: fe80::21%eth0 has a zone index (%eth0): host and service '
                 'addresses are global, write one without it', id='D6'),
    # D7 instances.be1.address6: 2001:db8::121%eth0 (zone id)
    pytest.param([(('instances', 'be1', 'address6'), '2001:db8::121%eth0')],
                 'instances.be1.address6: 2001:db8::121%eth0 has a zone index (%eth0): host and '
                 'service addresses are global, write one without it', id='D7'),
    # D8 subnets + 169.254.0.0/16, instances.be1.address: 169.254.0.121 (link-local)
    pytest.param([(('subnets',), ['198.51.100.0/24', '2001:db8::/64', '169.254.0.0/16']),
                  (('instances', 'be1', 'address'), '169.254.0.121')],
                 'subnets[2]: 169.254.0.0/16 overlaps 169.254.0.0/16 (link-local addresses), where no '
                 'host or service address can be: declare only the networks of the hosts and their '
                 'service addresses', id='D8'),
    # D9 instances.be1.address: 127.0.0.1
    pytest.param([(('instances', 'be1', 'address'), '127.0.0.1')],
                 'instances.be1.address: 127.0.0.1 is a loopback address (127.0.0.0/8): it cannot be '
                 'a host or service address', id='D9'),
    # D10 instances.be1.address: 224.0.0.121 (multicast)
    pytest.param([(('instances', 'be1', 'address'), '224.0.0.121')],
                 'instances.be1.address: 224.0.0.121 is a multicast address (224.0.0.0/4): it cannot '
                 'be a host or service address', id='D10'),
    # D11 instances.be1.address: 0.0.0.0
    pytest.param([(('instances', 'be1', 'address'), '0.0.0.0')],
                 'instances.be1.address: 0.0.0.0 is the unspecified address (0.0.0.0/32): it cannot '
                 'be a host or service address', id='D11'),
    # D12 instances.be1.address6: "::"
    pytest.param([(('instances', 'be1', 'address6'), '::')],
                 'instances.be1.address6: :: is the unspecified address (::/128): it cannot be a host '
                 'or service address', id='D12'),
    # D13 hosts.be1.address6: ::1
    pytest.param([(('hosts', 'be1', 'address6'), '::1')],
                 'hosts.be1.address6: ::1 is the loopback address (::1/128): it cannot be a host or '
                 'service address', id='D13'),
    # D14 subnets + 224.0.0.0/4 (multicast, unused)
    pytest.param([(('subnets',), ['198.51.100.0/24', '2001:db8::/64', '224.0.0.0/4'])],
                 'subnets[2]: 224.0.0.0/4 overlaps 224.0.0.0/4 (multicast addresses), where no host '
                 'or service address can be: declare only the networks of the hosts and their service '
                 'addresses', id='D14'),
    # D15 subnets + fe80::/64 (link-local, unused)
    pytest.param([(('subnets',), ['198.51.100.0/24', '2001:db8::/64', 'fe80::/64'])],
                 'subnets[2]: fe80::/64 overlaps fe80::/10 (link-local addresses), where no host or '
                 'service address can be: declare only the networks of the hosts and their service '
                 'addresses', id='D15'),
    # D16 instances.be1.address6: "2001:db8::" (subnet-router anycast)
    pytest.param([(('instances', 'be1', 'address6'), '2001:db8::')],
                 'instances.be1.address6: 2001:db8:: is the subnet-router anycast address of '
                 '2001:db8::/64', id='D16'),
    # D17 hosts.be1.address: " 198.51.100.21" (leading space)
    pytest.param([(('hosts', 'be1', 'address'), ' 198.51.100.21')],
                 "hosts.be1.address: ' 198.51.100.21' has spaces or control characters: write an IPv4 "
                 'address alone', id='D17'),
    # D18 hosts.be1.address: "198.51.100.21\n" (block scalar)
    pytest.param([(('hosts', 'be1', 'address'), '198.51.100.21\n')],
                 "hosts.be1.address: '198.51.100.21\\n' has spaces or control characters: write an "
                 'IPv4 address alone', id='D18'),
    # D19 instances.be1.address: 255.255.255.255
    pytest.param([(('instances', 'be1', 'address'), '255.255.255.255')],
                 'instances.be1.address: 255.255.255.255 is the limited broadcast address '
                 '(255.255.255.255/32): it cannot be a host or service address', id='D19'),
    # D20 subnets[0]: 198.51.100.0/255.255.255.0 (netmask)
    pytest.param([(('subnets', 0), '198.51.100.0/255.255.255.0')],
                 'subnets[0]: write 198.51.100.0/255.255.255.0 as 198.51.100.0/24', id='D20'),
    # D21 hosts.be1.address: "3325256725" (one decimal number)
    pytest.param([(('hosts', 'be1', 'address'), '3325256725')],
                 "hosts.be1.address: '3325256725' is not a valid IPv4 address (four decimal numbers "
                 'from 0 to 255 without leading zeros)', id='D21'),
    # D22 hosts.be1.address: 198.51.100 (three parts)
    pytest.param([(('hosts', 'be1', 'address'), '198.51.100')],
                 "hosts.be1.address: '198.51.100' is not a valid IPv4 address (four decimal numbers "
                 'from 0 to 255 without leading zeros)', id='D22'),
    # D23 subnets + 127.0.0.0/8, hosts.be1.address: 127.0.0.21
    pytest.param([(('subnets',), ['198.51.100.0/24', '2001:db8::/64', '127.0.0.0/8']),
                  (('hosts', 'be1', 'address'), '127.0.0.21')],
                 'subnets[2]: 127.0.0.0/8 overlaps 127.0.0.0/8 (loopback addresses), where no host or '
                 'service address can be: declare only the networks of the hosts and their service '
                 'addresses', id='D23'),
    # D24 instances.be1.address: 198.51.100.0 (network address)
    pytest.param([(('instances', 'be1', 'address'), '198.51.100.0')],
                 'instances.be1.address: 198.51.100.0 is the network or broadcast address of '
                 '198.51.100.0/24', id='D24'),
    # D25 hosts.be1.address: 2001:db8::21 with address6 2001:db8::21 as well
    pytest.param([(('hosts', 'be1', 'address'), '2001:db8::21')],
                 'hosts.be1.address6: 2001:db8::21 is already used by hosts.be1.address', id='D25'),
    # D26 instances.be1.address6: ::198.51.100.121 (IPv4-compatible)
    pytest.param([(('instances', 'be1', 'address6'), '::198.51.100.121')],
                 'instances.be1.address6: ::198.51.100.121 is a deprecated IPv4-compatible address '
                 '(::/96): it cannot be a host or service address', id='D26'),
    # -- variables that would override what the plugin sets (or Ansible does)
    # V1 hosts.be1.vars: {ansible_host: 203.0.113.9}
    pytest.param([(('hosts', 'be1', 'vars'), {'ansible_host': '203.0.113.9'})],
                 "hosts.be1.vars.ansible_host: the plugin sets ansible_host itself, from the host's "
                 'address: it cannot be set here', id='V1'),
    # V2 hosts.be1.vars: {ansible_ssh_host: 203.0.113.9}
    pytest.param([(('hosts', 'be1', 'vars'), {'ansible_ssh_host': '203.0.113.9'})],
                 'hosts.be1.vars.ansible_ssh_host: the plugin sets ansible_ssh_host itself, from the '
                 "host's address (as ansible_host): it cannot be set here", id='V2'),
    # V3 hosts.spare.vars: {murder_instances: x}
    pytest.param([(('hosts', 'spare', 'vars'), {'murder_instances': 'x'})],
                 'hosts.spare.vars.murder_instances: the plugin sets murder_instances itself, from '
                 'instances: it cannot be set here', id='V3'),
    # V4 hosts.be1.vars: {murder_instances: [{name: ghost}]}
    pytest.param([(('hosts', 'be1', 'vars'), {'murder_instances': [{'name': 'ghost'}]})],
                 'hosts.be1.vars.murder_instances: the plugin sets murder_instances itself, from '
                 'instances: it cannot be set here', id='V4'),
    # V5 hosts.spare.vars: {murder_standby_instances: null}
    pytest.param([(('hosts', 'spare', 'vars'), {'murder_standby_instances': None})],
                 'hosts.spare.vars.murder_standby_instances: the plugin sets murder_standby_instances '
                 'itself, from warm_spares: it cannot be set here', id='V5'),
    # V6 hosts.be1.vars: {murder_address: 203.0.113.9}
    pytest.param([(('hosts', 'be1', 'vars'), {'murder_address': '203.0.113.9'})],
                 'hosts.be1.vars.murder_address: the plugin sets murder_address itself, from the '
                 "host's first instance: it cannot be set here", id='V6'),
    # V7 hosts.spare.vars: {murder_role: backend}
    pytest.param([(('hosts', 'spare', 'vars'), {'murder_role': 'backend'})],
                 "hosts.spare.vars.murder_role: the plugin sets murder_role itself, from the host's "
                 'first instance: it cannot be set here', id='V7'),
    # V8 hosts.be1.vars: {murder_mupdate_servername: other.example.org}
    pytest.param([(('hosts', 'be1', 'vars'), {'murder_mupdate_servername': 'other.example.org'})],
                 'hosts.be1.vars.murder_mupdate_servername: the plugin sets murder_mupdate_servername '
                 'itself, from the mupdate instance (or the top-level vars): it cannot be set here', id='V8'),
    # V9 instances.be1.vars: {ansible_host: 203.0.113.9}
    pytest.param([(('instances', 'be1', 'vars'), {'ansible_host': '203.0.113.9'})],
                 'instances.be1.vars.ansible_host: the plugin sets ansible_host itself, from the '
                 "host's address: it cannot be set here", id='V9'),
    # V10 instances.be1.vars: {murder_servername: x.example.org}
    pytest.param([(('instances', 'be1', 'vars'), {'murder_servername': 'x.example.org'})],
                 'instances.be1.vars.murder_servername: the plugin sets murder_servername itself, '
                 "from the host's first instance: it cannot be set here", id='V10'),
    # V11 vars: {murder_role: backend} (every host, the spare too)
    pytest.param([(('vars',), {'murder_role': 'backend'})],
                 "vars.murder_role: the plugin sets murder_role itself, from the host's first "
                 'instance: it cannot be set here', id='V11'),
    # V12 vars: {ansible_host: 203.0.113.9}
    pytest.param([(('vars',), {'ansible_host': '203.0.113.9'})],
                 "vars.ansible_host: the plugin sets ansible_host itself, from the host's address: it "
                 'cannot be set here', id='V12'),
    # V13 vars: {murder_mupdate_servername: 5}
    pytest.param([(('vars',), {'murder_mupdate_servername': 5})],
                 'vars.murder_mupdate_servername: 5 must be a fully qualified host name (the '
                 'servername of the mupdate master)', id='V13'),
    # V14 hosts.be1.vars: {inventory_hostname: x}
    pytest.param([(('hosts', 'be1', 'vars'), {'inventory_hostname': 'x'})],
                 'hosts.be1.vars.inventory_hostname: inventory_hostname is a variable Ansible sets '
                 'itself: it cannot be set here', id='V14'),
    # V15 hosts.be1.vars: {1: x} (a number as name)
    pytest.param([(('hosts', 'be1', 'vars'), {1: 'x'})],
                 'hosts.be1.vars: 1 is not a valid variable name (ASCII letters, digits and _, not '
                 'starting with a digit)', id='V15'),
    # V16 hosts.be1.vars: {"bad name": 1}
    pytest.param([(('hosts', 'be1', 'vars'), {'bad name': 1})],
                 "hosts.be1.vars: 'bad name' is not a valid variable name (ASCII letters, digits and "
                 '_, not starting with a digit)', id='V16'),
    # V17 instances.be3 (second instance of host be1) with vars: never reach the host
    pytest.param([(('instances', 'be3'), BE3)],
                 'instances.be3.vars: be3 is not the first instance of host be1 (be1 is) and only the '
                 "first instance's vars reach the host: put them in hosts.be1.vars", id='V17'),
    # V18 compose: {ansible_host: "'203.0.113.9'"}
    pytest.param([(('compose',), {'ansible_host': "'203.0.113.9'"})],
                 "compose.ansible_host: the plugin sets ansible_host itself, from the host's address: "
                 'it cannot be set here', id='V18'),
    # -- duplicates and clashes
    # U1 hosts.be2.address: 198.51.100.21 (be1's)
    pytest.param([(('hosts', 'be2', 'address'), '198.51.100.21')],
                 'hosts.be2.address: 198.51.100.21 is already used by hosts.be1.address', id='U1'),
    # U2 instances.be2.address: 198.51.100.21 (boot address of be1)
    pytest.param([(('instances', 'be2', 'address'), '198.51.100.21')],
                 'instances.be2.address: 198.51.100.21 is the boot address of be1: a service address '
                 'must be its own', id='U2'),
    # U3 instances.be2.address6: 2001:db8::21 (boot address6 of be1)
    pytest.param([(('instances', 'be2', 'address6'), '2001:db8::21')],
                 'instances.be2.address6: 2001:db8::21 is the boot address of be1: a service address '
                 'must be its own', id='U3'),
    # U4 warm_spares[1].volume.label: cyha-be1 (be1's)
    pytest.param([(V1, {'label': 'cyha-be1', 'mount': '/srv/b'})],
                 'warm_spares[1] (be2).volume.label: cyha-be1 is already the volume of be1', id='U4'),
    # U5 warm_spares[1].volume.uuid: be1's uuid in upper case
    pytest.param([(V0, {'uuid': '2f6d7c1e-8a3b-4c55-9e0f-1a2b3c4d5e6f', 'mount': '/srv/cyrus-ha/be1'}),
                  (V1 + ('uuid',), '2F6D7C1E-8A3B-4C55-9E0F-1A2B3C4D5E6F')],
                 'warm_spares[1] (be2).volume.uuid: 2F6D7C1E-8A3B-4C55-9E0F-1A2B3C4D5E6F is already '
                 'the volume of be1', id='U5'),
    # U6 warm_spares[1].volume.mount: /srv/cyrus-ha/be1/ (be1's, trailing slash)
    pytest.param([(V1 + ('mount',), '/srv/cyrus-ha/be1/')],
                 'warm_spares[1] (be2).volume.mount: write /srv/cyrus-ha/be1/ as /srv/cyrus-ha/be1', id='U6'),
    # U7 warm_spares[1].volume.mount: /srv/cyrus-ha/be1/be2 (inside be1's)
    pytest.param([(V1 + ('mount',), '/srv/cyrus-ha/be1/be2')],
                 'warm_spares[1] (be2).volume.mount: /srv/cyrus-ha/be1/be2 and /srv/cyrus-ha/be1, the '
                 'mount point of be1, are one inside the other: give each volume a mount point '
                 'outside the others', id='U7'),
    # U8 instances.be2.servername: be1-svc.cyha.test (be1's)
    pytest.param([(('instances', 'be2', 'servername'), 'be1-svc.cyha.test')],
                 "instances.be2.servername: be1-svc.cyha.test has the same first label 'be1-svc' as "
                 'instances.be1: servernames must differ before the first dot', id='U8'),
    # U9 hosts: BE1 beside be1
    pytest.param([(('hosts', 'BE1'), {'address': '198.51.100.41'})],
                 'hosts.BE1: BE1 differs from hosts.be1 only in case: name the host otherwise', id='U9'),
    # U10 hosts: backends (a group of the plugin)
    pytest.param([(('hosts', 'backends'), {'address': '198.51.100.41'})],
                 'hosts.backends: backends is the name of a group of this inventory (all, backends, '
                 'frontends, mupdate_master, murder, replicas, spares, ungrouped): name the host otherwise', id='U10'),
    # U11 hosts: all
    pytest.param([(('hosts', 'all'), {'address': '198.51.100.41'})],
                 'hosts.all: all is the name of a group of this inventory (all, backends, frontends, '
                 'mupdate_master, murder, replicas, spares, ungrouped): name the host otherwise', id='U11'),
    # U12 groups: {spares: ...} (a group the plugin fills)
    pytest.param([(('groups',), {'spares': 'true'})],
                 "groups.spares: spares is a group the plugin fills (or one of Ansible's): name the "
                 'composed group otherwise', id='U12'),
    # U13 groups: {be1: ...} (the name of a host)
    pytest.param([(('groups',), {'be1': 'true'})],
                 'groups.be1: be1 is the name of a host: name the group otherwise', id='U13'),
    # U14 warm_spares[0].volume: both uuid and label
    pytest.param(
        [(V0, {'uuid': '0b6e3c0e-8f0a-4e8e-9d4b-2f1d7f0c1a22', 'label': 'cyha-be1', 'mount': '/srv/cyrus-ha/be1'})],
        'warm_spares[0] (be1).volume: give uuid or label, not both (the volume is found by '
        'one of them)', id='U14'),
    # U15 warm_spares[0].volume: only a device
    pytest.param([(V0, {'device': '/dev/sdc', 'mount': '/srv/cyrus-ha/be1'})],
                 'warm_spares[0] (be1).volume: name the shared volume by its uuid or its label', id='U15'),
    # U16 hosts: imap.be9 (a dotted name), instances.be2.address: its boot address
    pytest.param([(('hosts', 'imap.be9'), {'address': '198.51.100.41'}),
                  (('instances', 'be2', 'address'), '198.51.100.41')],
                 'instances.be2.address: 198.51.100.41 is the boot address of imap.be9: a service '
                 'address must be its own', id='U16'),
    # -- names and paths with metacharacters, long values
    # M1 hosts: "a..b"
    pytest.param([(('hosts', 'a..b'), {'address': '198.51.100.41'})],
                 "hosts.a..b: 'a..b' is not a valid inventory host name (dot-separated labels of "
                 'ASCII letters, digits, _ and -, each starting and ending with a letter or digit; at '
                 'most 63 characters)', id='M1'),
    # M2 hosts: "be3-" (ends with a hyphen)
    pytest.param([(('hosts', 'be3-'), {'address': '198.51.100.41'})],
                 "hosts.be3-: 'be3-' is not a valid inventory host name (dot-separated labels of "
                 'ASCII letters, digits, _ and -, each starting and ending with a letter or digit; at '
                 'most 63 characters)', id='M2'),
    # M3 hosts: "be3\n"
    pytest.param([(('hosts', 'be3\n'), {'address': '198.51.100.41'})],
                 "hosts.'be3\\n': 'be3\\n' is not a valid inventory host name (dot-separated labels "
                 'of ASCII letters, digits, _ and -, each starting and ending with a letter or digit; '
                 'at most 63 characters)', id='M3'),
    # M4 hosts: "../etc"
    pytest.param([(('hosts', '../etc'), {'address': '198.51.100.41'})],
                 "hosts.'../etc': '../etc' is not a valid inventory host name (dot-separated labels "
                 'of ASCII letters, digits, _ and -, each starting and ending with a letter or digit; '
                 'at most 63 characters)', id='M4'),
    # M5 hosts: "be 3"
    pytest.param([(('hosts', 'be 3'), {'address': '198.51.100.41'})],
                 "hosts.'be 3': 'be 3' is not a valid inventory host name (dot-separated labels of "
                 'ASCII letters, digits, _ and -, each starting and ending with a letter or digit; at '
                 'most 63 characters)', id='M5'),
    # M6 instances: "be3\n"
    pytest.param([(('instances', 'be3\n'), BE3)],
                 "instances.'be3\\n': instance names are a lower-case letter then up to 30 of a-z 0-9 "
                 '_ -', id='M6'),
    # M7 instances: "be/3"
    pytest.param([(('instances', 'be/3'), BE3)],
                 "instances.'be/3': instance names are a lower-case letter then up to 30 of a-z 0-9 _ "
                 '-', id='M7'),
    # M8 hosts: a 10000-character name
    pytest.param([(('hosts', 'b' * 10000), {'address': '198.51.100.41'})],
                 MSG_LONG_HOST, id='M8'),
    # M9 warm_spares[0].volume.mount: /srv/../etc
    pytest.param([(V0 + ('mount',), '/srv/../etc')],
                 'warm_spares[0] (be1).volume.mount: /srv/../etc has . or .. in it: write the mount '
                 'point itself', id='M9'),
    # M10 warm_spares[0].volume.mount: /
    pytest.param([(V0 + ('mount',), '/')],
                 'warm_spares[0] (be1).volume.mount: / is (or is inside) a system directory: mounting '
                 'the volume there would hide it; give the volume a directory of its own such as '
                 '/srv/cyrus/<instance>', id='M10'),
    # M11 warm_spares[0].volume.mount: "/srv/cyrus ha/be1" (a space)
    pytest.param([(V0 + ('mount',), '/srv/cyrus ha/be1')],
                 "warm_spares[0] (be1).volume.mount: '/srv/cyrus ha/be1' is not an absolute path of "
                 'A-Z a-z 0-9 _ . : + @ , = - /', id='M11'),
    # M12 warm_spares[0].volume.mount: "/srv/be1\n"
    pytest.param([(V0 + ('mount',), '/srv/be1\n')],
                 "warm_spares[0] (be1).volume.mount: '/srv/be1\\n' is not an absolute path of A-Z a-z "
                 '0-9 _ . : + @ , = - /', id='M12'),
    # M13 warm_spares[0].volume.label: ../../sda
    pytest.param([(V0 + ('label',), '../../sda')],
                 "warm_spares[0] (be1).volume.label: '../../sda' is not a filesystem label (1 to 16 "
                 'of A-Z a-z 0-9 _ . : + -)', id='M13'),
    # M14 warm_spares[0].volume.device: /dev/../etc/passwd
    pytest.param([(V0 + ('device',), '/dev/../etc/passwd')],
                 "warm_spares[0] (be1).volume.device: '/dev/../etc/passwd' is not a device path under "
                 '/dev such as /dev/mapper/cyrus', id='M14'),
    # M15 warm_spares[1].volume.fstype: "xfs -o exec"
    pytest.param([(V1 + ('fstype',), 'xfs -o exec')],
                 "warm_spares[1] (be2).volume.fstype: 'xfs -o exec' is not a filesystem type (1 to 32 "
                 'of a-z 0-9 _ .)', id='M15'),
    # M16 warm_spares[0].volume.options: "defaults\nx"
    pytest.param([(V0 + ('options',), 'defaults\nx')],
                 "warm_spares[0] (be1).volume.options: 'defaults\\nx' is not a list of mount options "
                 '(A-Z a-z 0-9 _ = , . : + / @ -, no spaces)', id='M16'),
    # M17 instances.be1.servername: be1-svc.cyha.test. (trailing dot)
    pytest.param([(('instances', 'be1', 'servername'), 'be1-svc.cyha.test.')],
                 "instances.be1.servername: 'be1-svc.cyha.test.' must be a fully qualified host name "
                 '(Cyrus derives <short>_password keys from the label before the first dot)', id='M17'),
    # M18 hosts.be1.address: a 100000-character string
    pytest.param([(('hosts', 'be1', 'address'), '1' * 100000)],
                 MSG_LONG_ADDRESS, id='M18'),
    # M19 warm_spares[0].volume.mount: /etc
    pytest.param([(V0 + ('mount',), '/etc')],
                 'warm_spares[0] (be1).volume.mount: /etc is (or is inside) a system directory: '
                 'mounting the volume there would hide it; give the volume a directory of its own '
                 'such as /srv/cyrus/<instance>', id='M19'),
    # M20 warm_spares[0].volume.mount: //etc (POSIX keeps a leading //)
    pytest.param([(V0 + ('mount',), '//etc')],
                 'warm_spares[0] (be1).volume.mount: write //etc as /etc', id='M20'),
    # M21 warm_spares[0].volume.mount: /proc/cyrus
    pytest.param([(V0 + ('mount',), '/proc/cyrus')],
                 'warm_spares[0] (be1).volume.mount: /proc/cyrus is (or is inside) a system '
                 'directory: mounting the volume there would hide it; give the volume a directory of '
                 'its own such as /srv/cyrus/<instance>', id='M21'),
]


@pytest.mark.parametrize('changes, message', HOSTILE)
def test_hostile_topology_names_the_entry_and_cause(changes, message):
    with pytest.raises(TopologyError) as info:
        build(with_changes(changes))
    assert str(info.value) == message


def test_an_optional_key_set_to_null_is_a_key_left_out():
    built = build(with_changes([(V1 + ('fstype',), None), (('warm_spares', 0, 'home'), None), (('vars',), None),
                                (('instances', 'be1', 'vars'), None), (('hosts', 'be1', 'address6'), None),
                                (('instances', 'be1', 'address6'), None)]))
    spare = built['hostvars']['spare']['murder_standby_instances']
    assert [(i['name'], i['host'], i['volume']['fstype']) for i in spare] == [
        ('be1', 'be1', 'ext4'), ('be2', 'be2', 'ext4')]
    assert 'murder_host_address6' not in built['hostvars']['be1'] and 'murder_pop3' not in built['hostvars']['be1']
    assert built['vars']['murder_mupdate_servername'] == 'mupdate-svc.cyha.test'
    assert built['vars']['replication_pairs'] == [] and len(built['vars']['warm_spare_pairs']) == 2


def test_what_stays_allowed():
    data = with_changes([(('hosts', 'imap.be9'), {'address': '198.51.100.41', 'vars': {'ansible_user': 'admin'}}),
                         (('instances', 'be9'), {'role': 'frontend', 'host': 'imap.be9', 'address': '198.51.100.141',
                                                 'servername': 'xn--b9-svc.cyha.test'}),
                         (('vars',), {'murder_mupdate_servername': 'mupdate.example.org', 'ansible_user': 'root'}),
                         (('compose',), {'service_ip': 'murder_address'}), (('groups',), {'imap_hosts': True}),
                         (('keyed_groups',), [{'key': 'murder_role', 'prefix': 'role'}]), (('strict',), False),
                         (V0 + ('device',), '/dev/mapper/cyha-be1'),
                         (('subnets',), ['198.51.100.0/24', '2001:db8::/64', '203.0.113.0/31'])])
    built = build(data)
    assert built['hostvars']['imap.be9']['ansible_user'] == 'admin'
    assert built['hostvars']['imap.be9']['murder_servername'] == 'xn--b9-svc.cyha.test'
    assert built['vars']['murder_mupdate_servername'] == 'mupdate.example.org'
    assert built['hostvars']['be1']['murder_instances'][0]['volume']['device'] == '/dev/mapper/cyha-be1'


@pytest.mark.parametrize('text, message', [
    ('hosts:\n  be1: {address: 198.51.100.21}\n  be1: {address: 198.51.100.22}\n',
     'hosts.be1: written twice (lines 2 and 3): YAML would keep only the last'),
    ('plugin: cyrus.ha.murder\nplugin: cyrus.ha.murder\n',
     'plugin: written twice (lines 1 and 2): YAML would keep only the last'),
    ('warm_spares:\n  - instance: be1\n    volume: {label: a, label: b}\n',
     'warm_spares[0].volume.label: written twice (lines 3 and 3): YAML would keep only the last'),
    ('hosts:\n  "be1\\n": {}\n  "be1\\n": {}\n',
     "hosts.'be1\\n': written twice (lines 2 and 3): YAML would keep only the last"),
])
def test_check_duplicate_keys_names_both_lines(text, message):
    with pytest.raises(TopologyError) as info:
        topology.check_duplicate_keys(text)
    assert str(info.value) == message


@pytest.mark.parametrize('text', [
    'hosts: {be1: {address: 198.51.100.21}, be2: {address: 198.51.100.22}}\n',
    'base: &b {x: 1}\nhosts: {<<: *b, <<: *b, y: 2}\n',          # merge keys may repeat
    'a: &a [*a]\n',                                              # a recursive alias ends
    'a: 1\nb: [\n',                                             # what PyYAML refuses is the loader's to report
    'secret: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n',
    '{"plugin": "cyrus.ha.murder", "hosts": {"be1": {}}, "x": 1}\n',   # the lab writes JSON
])
def test_check_duplicate_keys_passes(text):
    topology.check_duplicate_keys(text)


def test_check_keyed_groups_refuses_a_host_name():
    topology.check_keyed_groups({'role_backend', 'backend'}, {'be1': {}, 'spare': {}})
    with pytest.raises(TopologyError) as info:
        topology.check_keyed_groups({'role_backend', 'spare', 'be1'}, {'be1': {}, 'spare': {}})
    assert str(info.value) == ('keyed_groups: the groups be1, spare would have the name of a host: give the keyed '
                               'groups a prefix')


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
     {'ansible_host': '198.51.100.21', 'murder_instances': [], 'murder_standby_instances': [],
      'murder_replica_instances': []}),
    ({'address': '2001:db8:100::21'},
     {'ansible_host': '2001:db8:100::21', 'murder_instances': [], 'murder_standby_instances': [],
      'murder_replica_instances': []}),
    ({'address': '198.51.100.21', 'address6': '2001:db8:100::21', 'vars': {'ansible_user': 'admin'}},
     {'ansible_host': '198.51.100.21', 'murder_instances': [], 'murder_standby_instances': [],
      'murder_replica_instances': [], 'murder_host_address6': '2001:db8:100::21', 'ansible_user': 'admin'}),
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
                    'servername': 'be1.imap.example.org', 'spare': None, 'volume': None, 'replica': None,
                    'replication_port': None, 'vars': {'murder_pop3': True}}
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
    raw = {'uuid': '0B6E3C0E-8F0A-4E8E-9D4B-2F1D7F0C1A22', 'device': '/dev/mapper/be2', 'mount': '/srv/b2',
           'fstype': 'xfs', 'options': 'noatime'}
    volume = topology.parse_volume('warm_spares[1] (be2)', raw, 'be2', seen)
    assert volume == {'uuid': '0B6E3C0E-8F0A-4E8E-9D4B-2F1D7F0C1A22', 'label': None, 'device': '/dev/mapper/be2',
                      'mount': '/srv/b2', 'fstype': 'xfs', 'options': 'noatime'}
    # a UUID is one whatever its case
    assert seen[('uuid', '0b6e3c0e-8f0a-4e8e-9d4b-2f1d7f0c1a22')] == seen[('device', '/dev/mapper/be2')] == 'be2'


@pytest.mark.parametrize('raw, message', [
    ({'label': 'cyrus-be1', 'mount': '/srv/other'}, 'w.volume.label: cyrus-be1 is already the volume of be1'),
    ({'label': 'l2', 'mount': '/srv/cyrus/be1'}, 'w.volume.mount: /srv/cyrus/be1 is already the mount point of be1'),
    ({'device': 'sdc', 'mount': '/srv/b2'}, "w.volume.device: 'sdc' is not a device path under /dev such as "
                                            "/dev/mapper/cyrus"),
    ({'label': ['l2'], 'mount': '/srv/b2'}, 'w.volume.label: expected a filesystem label (1 to 16 of A-Z a-z 0-9 _ . '
                                            ': + -), got list'),
    ({'uuid': {'u': 1}, 'mount': '/srv/b2'}, 'w.volume.uuid: expected a filesystem UUID (hex digits and -), got '
                                             'mapping'),
    ({'label': 'l2', 'mount': '/srv/b2', 'size': 1}, 'w.volume: unknown key size (known: device, fstype, label, mount, '
                                                     'options, uuid)'),
    ('cyrus-be2', "w.volume: expected a mapping, got string 'cyrus-be2'"),
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
        'backends': ['imap-be1'], 'frontends': ['imap-fe1'], 'spares': ['imap-spare'], 'replicas': []}
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


# -- replica pairs (Cyrus rolling replication to the same instance on another host's own disk) -------------------
def replicated():
    """BASE with a third backend, be3, replicating to the host replica."""
    return with_changes([(('hosts', 'be3'), {'address': '198.51.100.23'}),
                         (('hosts', 'replica'), {'address': '198.51.100.50'}),
                         (('instances', 'be3'), {'role': 'backend', 'host': 'be3', 'address': '198.51.100.123',
                                                 'servername': 'be3-svc.cyha.test'}),
                         (('replicas',), [{'instance': 'be3', 'home': 'be3', 'replica': 'replica'}])])


def test_a_replica_pair_gives_the_group_the_peer_and_the_pairs():
    built = build(replicated())
    assert built['groups']['replicas'] == ['replica'] and built['groups']['backends'] == ['be1', 'be2', 'be3']
    assert 'replica' not in built['groups']['spares']
    be3, replica = built['hostvars']['be3'], built['hostvars']['replica']
    assert be3['murder_instances'][0]['replica'] == 'replica'
    assert (be3['murder_replication_peer'], be3['murder_replication_port']) == ('198.51.100.50', 2005)
    assert replica['murder_replica_instances'] == be3['murder_instances'] and replica['murder_instances'] == []
    assert 'murder_role' not in replica and 'murder_replication_peer' not in replica
    assert 'murder_replication_peer' not in built['hostvars']['be1']
    assert built['vars']['replication_pairs'] == [{
        'instance': 'be3', 'home': 'be3', 'replica': 'replica', 'servername': 'be3-svc.cyha.test',
        'address': '198.51.100.123', 'home_address': '198.51.100.23', 'replica_address': '198.51.100.50',
        'port': 2005}]


def test_a_replica_host_may_hold_the_replicas_of_several_backends():
    data = replicated()
    data['hosts']['be4'] = {'address': '198.51.100.24'}
    data['instances']['be4'] = {'role': 'backend', 'host': 'be4', 'address': '198.51.100.124',
                                'servername': 'be4-svc.cyha.test'}
    data['replicas'].append({'instance': 'be4', 'replica': 'replica'})   # home: the instance's host
    with pytest.raises(TopologyError) as info:     # both would listen on the replica host's port 2005
        build(copy.deepcopy(data))
    assert str(info.value) == ('replicas[1] (be4).port: replica is a node of the replica pair of be3 too, which '
                               'listens on port 2005 there (sync_server, while that node holds the replica): give '
                               'one of the pairs another port')
    data['replicas'][1]['port'] = 2006
    built = build(data)
    assert [i['name'] for i in built['hostvars']['replica']['murder_replica_instances']] == ['be3', 'be4']
    assert [(p['home'], p['port']) for p in built['vars']['replication_pairs']] == [('be3', 2005), ('be4', 2006)]
    assert built['hostvars']['be4']['murder_replication_port'] == 2006
    assert built['groups']['replicas'] == ['replica']


@pytest.mark.parametrize('change, message', [
    ({'instance': 'fe1'}, 'replicas[0] (fe1): only backends are replicated, and fe1 is a frontend'),
    ({'instance': 'be9'}, "replicas[0].instance: 'be9' is not declared under instances"),
    ({'instance': None}, 'replicas[0].instance: None is not declared under instances'),
    ({'instance': 'be1'}, 'replicas[0] (be1): be1 already has the warm spare spare on a shared volume: a backend is '
                          'kept either by a warm spare or by a replica, not both'),
    ({'home': 'be2'}, "replicas[0] (be3).home: 'be2' is not the host of instance be3 (be3)"),
    ({'replica': 'be3'}, 'replicas[0] (be3).replica: the replica must be another host than the home host be3'),
    ({'replica': 'replica9'}, "replicas[0] (be3).replica: 'replica9' is not declared under hosts"),
    ({'replica': ['replica']}, "replicas[0] (be3).replica: ['replica'] is not declared under hosts"),
    ({'spare': 'replica'}, 'replicas[0]: unknown key spare (known: home, instance, port, replica)'),
    ({'port': '2005'}, "replicas[0] (be3).port: expected a TCP port from 1 to 65535, got string '2005'"),
    ({'port': 0}, 'replicas[0] (be3).port: expected a TCP port from 1 to 65535, got integer 0'),
    ({'port': True}, 'replicas[0] (be3).port: expected a TCP port from 1 to 65535, got boolean true'),
])
def test_a_bad_replica_pair_names_the_entry_and_cause(change, message):
    data = replicated()
    data['replicas'][0].update(change)
    with pytest.raises(TopologyError) as info:
        build(data)
    assert str(info.value) == message


@pytest.mark.parametrize('replicas, message', [
    ({'be3': 'replica'}, 'replicas: expected a list of {instance, home, replica, port}, got mapping'),
    ([None], 'replicas[0]: expected a mapping, got null'),
    ([{'instance': 'be3', 'replica': 'replica'}, {'instance': 'be3', 'replica': 'be1'}],
     'replicas[1] (be3): be3 already replicates to replica (one replica per backend instance)'),
])
def test_a_bad_replicas_list_names_the_entry_and_cause(replicas, message):
    data = replicated()
    data['replicas'] = replicas
    with pytest.raises(TopologyError) as info:
        build(data)
    assert str(info.value) == message


def test_a_replica_pair_replicates_over_ipv4_boot_addresses():
    data = replicated()
    data['hosts']['replica'] = {'address': '2001:db8::50'}
    with pytest.raises(TopologyError) as info:
        build(data)
    assert str(info.value) == ('replicas[0] (be3): hosts.replica.address is IPv6 (2001:db8::50): the nodes of a '
                               'replica pair replicate over their IPv4 boot addresses (sync_host), give the host an '
                               'IPv4 address')


@pytest.mark.parametrize('where', ['vars', 'hosts.be3.vars', 'instances.be3.vars'])
@pytest.mark.parametrize('name', ['replication_pairs', 'warm_spare_pairs', 'murder_replication_peer',
                                  'murder_replication_port', 'murder_replica_instances'])
def test_the_replication_variables_are_the_plugins_own(where, name):
    data = replicated()
    node = data
    for key in where.split('.'):
        node = node.setdefault(key, {})
    node[name] = 'x'
    with pytest.raises(TopologyError) as info:
        build(data)
    assert str(info.value).startswith('%s.%s: the plugin sets %s itself, from ' % (where, name, name))


def test_two_pairs_crossing_over_two_hosts_need_ports_of_their_own():
    """be3 on be3 replicates to replica, and be4 on replica to be3: after a promotion either host holds both."""
    data = replicated()
    data['instances']['be4'] = {'role': 'backend', 'host': 'replica', 'address': '198.51.100.124',
                                'servername': 'be4-svc.cyha.test'}
    data['replicas'].append({'instance': 'be4', 'replica': 'be3'})
    with pytest.raises(TopologyError) as info:
        build(copy.deepcopy(data))
    assert str(info.value).startswith('replicas[1] (be4).port: replica is a node of the replica pair of be3 too')
    data['replicas'][1]['port'] = 2105
    built = build(data)
    assert built['hostvars']['replica']['murder_replication_peer'] == '198.51.100.23'
    assert [i['name'] for i in built['hostvars']['be3']['murder_replica_instances']] == ['be4']
