# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CIB desired-state engine: XML built from plain data, plans against a configuration, and the
cibadmin / crm_verify conversation (with a fake runner; the real tools run on the lab)."""

from __future__ import annotations

import copy
import os
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils.pacemaker import (
    Cib, CibError, Desired, canon, constraint, converge, epoch_of, fencing_level, find_by_id, plan, predict_fresh,
    primitive, resource)

ID_HINT = 'is not a valid XML id (a letter or _, then letters, digits, _ . -)'
AGENT_HINT = 'is not CLASS:[PROVIDER:]TYPE, for example ocf:heartbeat:IPaddr2 or stonith:fence_ipmilan'
NOT_CONNECTED = 'Could not connect to the CIB: Transport endpoint is not connected'

# A running two-node cluster as `cibadmin --query` shows it (Pacemaker 2.1), before any resource.
RUNNING_CIB = '''<cib crm_feature_set="3.16.2" validate-with="pacemaker-3.9" epoch="7" num_updates="3" admin_epoch="0"
     cib-last-written="Mon Jan  8 10:00:00 2024" update-origin="be1" have-quorum="1" dc-uuid="1">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="cib-bootstrap-options-have-watchdog" name="have-watchdog" value="false"/>
        <nvpair id="cib-bootstrap-options-dc-version" name="dc-version" value="2.1.5-a3f44794f94"/>
        <nvpair id="cib-bootstrap-options-cluster-infrastructure" name="cluster-infrastructure" value="corosync"/>
        <nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="false"/>
      </cluster_property_set>
    </crm_config>
    <nodes>
      <node id="1" uname="be1"/>
      <node id="2" uname="spare"/>
    </nodes>
    <resources/>
    <constraints/>
  </configuration>
  <status>
    <node_state id="1" uname="be1" in_ccm="true" crmd="online" join="member" expected="member"/>
  </status>
</cib>'''

VOLUME = {'id': 'be1-volume', 'agent': 'ocf:heartbeat:Filesystem',
          'params': {'device': '-L cyha-be1', 'directory': '/srv/cyrus-ha/be1', 'fstype': 'ext4'},
          'operations': [{'name': 'start', 'interval': '0s', 'timeout': '60s'},
                         {'name': 'monitor', 'interval': '20s', 'timeout': '40s'}]}
ADDRESS = {'id': 'be1-address', 'agent': 'ocf:heartbeat:IPaddr2',
           'params': {'ip': '198.51.100.121', 'cidr_netmask': 24},
           'operations': [{'name': 'monitor', 'interval': '10s', 'timeout': '20s'}]}
CYRUS = {'id': 'be1-cyrus', 'agent': 'ocf:cyrus:instance', 'params': {'instance': 'be1', 'address': '198.51.100.121'}}
FENCE = {'id': 'fence-be1', 'agent': 'stonith:fence_ipmilan',
         'params': {'ip': '203.0.113.11', 'username': 'admin', 'password': 'secret', 'lanplus': True,
                    'pcmk_host_list': 'be1'}}

PARAMS = {
    'properties': {'stonith-enabled': True, 'cluster-name': 'cyrus-ha'},
    'resource_defaults': {'resource-stickiness': 200, 'migration-threshold': 1},
    'resources': [FENCE, {'id': 'cyrus-be1', 'resources': [VOLUME, ADDRESS, CYRUS]}],
    'constraints': [{'id': 'fence-be1-avoids-be1', 'type': 'location', 'resource': 'fence-be1', 'node': 'be1',
                     'score': '-INFINITY'},
                    {'id': 'cyrus-be1-prefers-home', 'resource': 'cyrus-be1', 'node': 'be1', 'score': 100}],
    'fencing_levels': [{'target': 'be1', 'index': 1, 'devices': ['fence-be1']}],
}

PARAMS_CHANGES = [
    {'object': 'properties.cluster-name', 'action': 'create', 'value': 'cyrus-ha'},
    {'object': 'properties.stonith-enabled', 'action': 'create', 'value': 'true'},
    {'object': 'resource_defaults.migration-threshold', 'action': 'create', 'value': '1'},
    {'object': 'resource_defaults.resource-stickiness', 'action': 'create', 'value': '200'},
    {'object': 'fence-be1', 'action': 'create', 'section': 'resources'},
    {'object': 'cyrus-be1', 'action': 'create', 'section': 'resources'},
    {'object': 'fence-be1-avoids-be1', 'action': 'create', 'section': 'constraints'},
    {'object': 'cyrus-be1-prefers-home', 'action': 'create', 'section': 'constraints'},
    {'object': 'fl-be1-1', 'action': 'create', 'section': 'fencing-topology'},
]


def xml(text: str) -> ET.Element:
    return ET.fromstring(text)


def child_attrs(elem: ET.Element) -> list:
    return [(child.tag, child.attrib) for child in elem]


def nvpairs(elem: ET.Element) -> list:
    return [(p.get('id'), p.get('name'), p.get('value')) for p in elem.iter('nvpair')]


# ---------------------------------------------------------------------------------------------- builders

def test_primitive_derives_every_id_and_renders_booleans():
    elem = primitive({'id': 'be1-address', 'agent': 'ocf:heartbeat:IPaddr2',
                      'params': {'ip': '2001:db8::121', 'cidr_netmask': 64, 'nodad': True},
                      'meta': {'is-managed': False, 'target-role': 'Started'},
                      'operations': [{'name': 'monitor', 'interval': '10s', 'timeout': '20s'},
                                     {'name': 'start', 'timeout': '60s'},
                                     {'name': 'monitor', 'interval': 0, 'enabled': False}]})
    assert elem.tag == 'primitive'
    assert elem.attrib == {'id': 'be1-address', 'class': 'ocf', 'provider': 'heartbeat', 'type': 'IPaddr2'}
    assert [c.tag for c in elem] == ['instance_attributes', 'meta_attributes', 'operations']
    params, meta, ops = list(elem)
    assert params.attrib == {'id': 'be1-address-instance_attributes'}
    # nvpairs sorted by name, whatever the order of the data
    assert nvpairs(params) == [
        ('be1-address-instance_attributes-cidr_netmask', 'cidr_netmask', '64'),
        ('be1-address-instance_attributes-ip', 'ip', '2001:db8::121'),
        ('be1-address-instance_attributes-nodad', 'nodad', 'true')]
    assert meta.attrib == {'id': 'be1-address-meta_attributes'}
    assert nvpairs(meta) == [('be1-address-meta_attributes-is-managed', 'is-managed', 'false'),
                             ('be1-address-meta_attributes-target-role', 'target-role', 'Started')]
    # operations keep the data's order; interval defaults to 0s
    assert child_attrs(ops) == [
        ('op', {'id': 'be1-address-monitor-interval-10s', 'name': 'monitor', 'interval': '10s', 'timeout': '20s'}),
        ('op', {'id': 'be1-address-start-interval-0s', 'name': 'start', 'interval': '0s', 'timeout': '60s'}),
        ('op', {'id': 'be1-address-monitor-interval-0', 'name': 'monitor', 'interval': '0', 'enabled': 'false'})]


def test_primitive_without_params_meta_or_operations_is_bare():
    elem = primitive({'id': 'dummy', 'agent': 'ocf:pacemaker:Dummy', 'params': {}, 'operations': []})
    assert elem.attrib == {'id': 'dummy', 'class': 'ocf', 'provider': 'pacemaker', 'type': 'Dummy'}
    assert list(elem) == []


def test_same_data_gives_the_same_xml():
    shuffled = dict(VOLUME, params=dict(reversed(list(VOLUME['params'].items()))))
    assert ET.tostring(primitive(VOLUME)) == ET.tostring(primitive(shuffled))


@pytest.mark.parametrize('agent, attrs', [
    ('ocf:heartbeat:Filesystem', {'class': 'ocf', 'provider': 'heartbeat', 'type': 'Filesystem'}),
    ('ocf:cyrus:instance', {'class': 'ocf', 'provider': 'cyrus', 'type': 'instance'}),
    ('stonith:fence_ipmilan', {'class': 'stonith', 'type': 'fence_ipmilan'}),
    ('systemd:cyrus-imapd@be1', {'class': 'systemd', 'type': 'cyrus-imapd@be1'}),
    ('lsb:cyrus-imapd', {'class': 'lsb', 'type': 'cyrus-imapd'}),
    ('service:cyrus-imapd', {'class': 'service', 'type': 'cyrus-imapd'}),
])
def test_agent_classes_and_provider_only_for_ocf(agent, attrs):
    assert primitive({'id': 'r', 'agent': agent}).attrib == dict(attrs, id='r')


@pytest.mark.parametrize('agent', [None, '', 'IPaddr2', 'heartbeat:IPaddr2', 'ocf:IPaddr2', 'OCF:heartbeat:IPaddr2',
                                   'ocf:heartbeat:', 'stonith:redhat:fence_ipmilan', 'upstart:cyrus',
                                   'ocf:heart beat:IPaddr2'])
def test_bad_agent_is_refused(agent):
    with pytest.raises(CibError) as caught:
        primitive({'id': 'be1-address', 'agent': agent})
    assert str(caught.value) == f'resource be1-address: agent {agent!r} {AGENT_HINT}'


@pytest.mark.parametrize('value', [None, '', '1be', '-be1', '.be1', 'be 1', 'be1/volume', 'be1:volume', 'b\xe91', 5])
def test_bad_resource_id_is_refused(value):
    with pytest.raises(CibError) as caught:
        primitive({'id': value, 'agent': 'ocf:heartbeat:IPaddr2'})
    assert str(caught.value) == f'resource id: {value!r} {ID_HINT}'


@pytest.mark.parametrize('value', ['_be1', 'be1', 'Be1.volume-2', 'a'])
def test_good_ids(value):
    assert primitive({'id': value, 'agent': 'ocf:heartbeat:IPaddr2'}).get('id') == value


def test_operation_without_name_is_refused():
    with pytest.raises(CibError) as caught:
        primitive({'id': 'be1-cyrus', 'agent': 'ocf:cyrus:instance', 'operations': [{'interval': '10s'}]})
    assert str(caught.value) == 'resource be1-cyrus: an operation has no name'


def test_group_holds_its_members_in_order_after_its_meta():
    elem = resource({'id': 'cyrus-be1', 'meta': {'target-role': 'Stopped'}, 'resources': [VOLUME, ADDRESS, CYRUS]})
    assert elem.tag == 'group' and elem.attrib == {'id': 'cyrus-be1'}
    assert [(c.tag, c.get('id')) for c in elem] == [('meta_attributes', 'cyrus-be1-meta_attributes'),
                                                    ('primitive', 'be1-volume'), ('primitive', 'be1-address'),
                                                    ('primitive', 'be1-cyrus')]
    assert nvpairs(elem[0]) == [('cyrus-be1-meta_attributes-target-role', 'target-role', 'Stopped')]
    assert canon(elem[1]) == canon(primitive(VOLUME))


def test_resource_without_members_is_a_primitive():
    assert resource(ADDRESS).tag == 'primitive'


@pytest.mark.parametrize('spec, message', [
    ({'id': 'cyrus-be1', 'resources': []}, 'group cyrus-be1: it has no resources'),
    ({'id': 'cyrus-be1', 'resources': None}, 'group cyrus-be1: it has no resources'),
    ({'id': 'cyrus-be1', 'resources': [VOLUME, {'id': 'inner', 'resources': [ADDRESS]}]},
     'group cyrus-be1: a group cannot hold the group inner'),
    ({'id': 'cyrus be1', 'resources': [VOLUME]}, f"group id: 'cyrus be1' {ID_HINT}"),
    ({'id': 'cyrus-be1', 'resources': [dict(VOLUME, agent='Filesystem')]},
     f"resource be1-volume: agent 'Filesystem' {AGENT_HINT}"),
])
def test_bad_group_is_refused(spec, message):
    with pytest.raises(CibError) as caught:
        resource(spec)
    assert str(caught.value) == message


@pytest.mark.parametrize('spec, tag, attrs', [
    ({'id': 'c1', 'resource': 'cyrus-be1', 'node': 'be1'},
     'rsc_location', {'id': 'c1', 'rsc': 'cyrus-be1', 'node': 'be1', 'score': 'INFINITY'}),
    ({'id': 'c1', 'type': 'location', 'resource': 'cyrus-be1', 'node': 'be1', 'score': 100},
     'rsc_location', {'id': 'c1', 'rsc': 'cyrus-be1', 'node': 'be1', 'score': '100'}),
    ({'id': 'c1', 'type': 'location', 'resource': 'fence-be1', 'node': 'be1', 'score': '-INFINITY'},
     'rsc_location', {'id': 'c1', 'rsc': 'fence-be1', 'node': 'be1', 'score': '-INFINITY'}),
    ({'id': 'c1', 'type': 'order', 'first': 'be1-volume', 'then': 'be1-cyrus'},
     'rsc_order', {'id': 'c1', 'first': 'be1-volume', 'then': 'be1-cyrus', 'kind': 'Mandatory'}),
    ({'id': 'c1', 'type': 'order', 'first': 'be1-volume', 'then': 'be1-cyrus', 'kind': 'Optional'},
     'rsc_order', {'id': 'c1', 'first': 'be1-volume', 'then': 'be1-cyrus', 'kind': 'Optional'}),
    ({'id': 'c1', 'type': 'colocation', 'first': 'be1-volume', 'then': 'be1-cyrus'},
     'rsc_colocation', {'id': 'c1', 'rsc': 'be1-cyrus', 'with-rsc': 'be1-volume', 'score': 'INFINITY'}),
    ({'id': 'c1', 'type': 'colocation', 'first': 'cyrus-be1', 'then': 'cyrus-be2', 'score': '-INFINITY'},
     'rsc_colocation', {'id': 'c1', 'rsc': 'cyrus-be2', 'with-rsc': 'cyrus-be1', 'score': '-INFINITY'}),
])
def test_constraints(spec, tag, attrs):
    elem = constraint(spec)
    assert (elem.tag, elem.attrib, list(elem)) == (tag, attrs, [])


@pytest.mark.parametrize('spec, message', [
    ({'id': 'c1', 'node': 'be1'}, 'location c1: resource is missing'),
    ({'id': 'c1', 'type': 'location', 'resource': 'cyrus-be1'}, 'location c1: node is missing'),
    ({'id': 'c1', 'type': 'location', 'resource': 'cyrus-be1', 'node': ''}, 'location c1: node is missing'),
    ({'id': 'c1', 'type': 'order', 'first': 'a'}, 'order c1: first and then are required'),
    ({'id': 'c1', 'type': 'colocation', 'then': 'b'}, 'colocation c1: first and then are required'),
    ({'id': 'c1', 'type': 'ticket', 'resource': 'a'},
     "constraint c1: type 'ticket' is not location, order or colocation"),
    ({'id': '1c', 'resource': 'a', 'node': 'be1'}, f"constraint id: '1c' {ID_HINT}"),
    ({'resource': 'a', 'node': 'be1'}, f'constraint id: None {ID_HINT}'),
])
def test_bad_constraint_is_refused(spec, message):
    with pytest.raises(CibError) as caught:
        constraint(spec)
    assert str(caught.value) == message


@pytest.mark.parametrize('spec, attrs', [
    ({'target': 'be1', 'index': 1, 'devices': ['fence-heuristics-ping', 'fence-be1']},
     {'id': 'fl-be1-1', 'target': 'be1', 'index': '1', 'devices': 'fence-heuristics-ping,fence-be1'}),
    ({'target': 'spare', 'index': 9, 'devices': ['fence-spare']},
     {'id': 'fl-spare-9', 'target': 'spare', 'index': '9', 'devices': 'fence-spare'}),
    ({'id': 'spare-by-pdu', 'target': 'spare', 'index': 2, 'devices': ['pdu']},
     {'id': 'spare-by-pdu', 'target': 'spare', 'index': '2', 'devices': 'pdu'}),
])
def test_fencing_level(spec, attrs):
    elem = fencing_level(spec)
    assert (elem.tag, elem.attrib) == ('fencing-level', attrs)


@pytest.mark.parametrize('spec', [
    {'target': 'be1', 'index': 0, 'devices': ['fence-be1']},
    {'target': 'be1', 'index': 10, 'devices': ['fence-be1']},
    {'target': 'be1', 'index': '1', 'devices': ['fence-be1']},
    {'target': 'be1', 'devices': ['fence-be1']},
    {'target': 'be1', 'index': 1, 'devices': []},
    {'target': 'be1', 'index': 1},
    {'target': '', 'index': 1, 'devices': ['fence-be1']},
    {'index': 1, 'devices': ['fence-be1']},
])
def test_bad_fencing_level_is_refused(spec):
    with pytest.raises(CibError) as caught:
        fencing_level(spec)
    assert str(caught.value) == f'fencing level {spec!r}: target, index (1-9) and devices are required'


def test_fencing_level_id_from_a_target_that_makes_no_id_is_refused():
    with pytest.raises(CibError) as caught:
        fencing_level({'target': 'be 1', 'index': 1, 'devices': ['fence-be1']})
    assert str(caught.value) == f"fencing level id: 'fl-be 1-1' {ID_HINT}"


def test_fencing_level_devices_given_as_a_string():
    try:
        elem = fencing_level({'target': 'be1', 'index': 1, 'devices': 'fence-be1'})
    except CibError:
        return
    assert elem.get('devices') == 'fence-be1'


def test_fencing_level_index_true_is_refused():
    with pytest.raises(CibError):
        fencing_level({'target': 'be1', 'index': True, 'devices': ['fence-be1']})


# ---------------------------------------------------------------------------------------------- Desired

def test_desired_renders_values_and_keeps_object_order():
    desired = Desired(PARAMS)
    assert desired.properties == {'stonith-enabled': 'true', 'cluster-name': 'cyrus-ha'}
    assert desired.rsc_defaults == {'resource-stickiness': '200', 'migration-threshold': '1'}
    assert [(sec, elem.tag, elem.get('id')) for sec, elem in desired.objects] == [
        ('resources', 'primitive', 'fence-be1'), ('resources', 'group', 'cyrus-be1'),
        ('constraints', 'rsc_location', 'fence-be1-avoids-be1'),
        ('constraints', 'rsc_location', 'cyrus-be1-prefers-home'),
        ('fencing-topology', 'fencing-level', 'fl-be1-1')]
    assert desired.absent == []


def test_desired_accepts_empty_and_none_parameters():
    desired = Desired({'properties': None, 'resources': None, 'constraints': [], 'absent': None})
    assert (desired.properties, desired.rsc_defaults, desired.objects, desired.absent) == ({}, {}, [], [])


@pytest.mark.parametrize('params, message', [
    ({'resources': [ADDRESS, ADDRESS]}, 'id be1-address is used twice in the desired configuration'),
    ({'resources': [ADDRESS, {'id': 'cyrus-be1', 'resources': [VOLUME, ADDRESS]}]},
     'id be1-address is used twice in the desired configuration'),
    ({'resources': [{'id': 'cyrus-be1', 'resources': [VOLUME]}, {'id': 'cyrus-be2', 'resources': [VOLUME]}]},
     'id be1-volume is used twice in the desired configuration'),
    ({'resources': [ADDRESS], 'constraints': [{'id': 'be1-address', 'resource': 'be1-address', 'node': 'be1'}]},
     'id be1-address is used twice in the desired configuration'),
    ({'fencing_levels': [{'target': 'be1', 'index': 1, 'devices': ['a']},
                         {'target': 'be1', 'index': 1, 'devices': ['b']}]},
     'id fl-be1-1 is used twice in the desired configuration'),
    ({'resources': [ADDRESS, {'id': 'cyrus-be1', 'resources': [VOLUME]}],
      'absent': ['old', 'be1-volume', 'be1-address']},
     'be1-address, be1-volume: both desired and absent'),
    ({'resources': [ADDRESS], 'constraints': [{'id': 'c1', 'type': 'backwards'}]},
     "constraint c1: type 'backwards' is not location, order or colocation"),
])
def test_bad_desired_configuration_is_refused(params, message):
    with pytest.raises(CibError) as caught:
        Desired(params)
    assert str(caught.value) == message


# ---------------------------------------------------------------------------------------------- plan

def test_plan_on_an_empty_configuration_creates_everything_in_schema_order():
    config = xml('<configuration/>')
    new, changes = plan(config, Desired(PARAMS))
    assert changes == PARAMS_CHANGES
    assert [c.tag for c in new] == ['crm_config', 'resources', 'constraints', 'fencing-topology', 'rsc_defaults']
    assert list(config) == []  # the input is left as it was
    crm_config, resources, constraints, topology, rsc_defaults = list(new)
    assert child_attrs(crm_config) == [('cluster_property_set', {'id': 'cib-bootstrap-options'})]
    assert nvpairs(crm_config) == [('cib-bootstrap-options-cluster-name', 'cluster-name', 'cyrus-ha'),
                                   ('cib-bootstrap-options-stonith-enabled', 'stonith-enabled', 'true')]
    assert child_attrs(rsc_defaults) == [('meta_attributes', {'id': 'rsc-options'})]
    assert nvpairs(rsc_defaults) == [('rsc-options-migration-threshold', 'migration-threshold', '1'),
                                     ('rsc-options-resource-stickiness', 'resource-stickiness', '200')]
    assert [(c.tag, c.get('id')) for c in resources] == [('primitive', 'fence-be1'), ('group', 'cyrus-be1')]
    assert [c.get('id') for c in constraints] == ['fence-be1-avoids-be1', 'cyrus-be1-prefers-home']
    assert child_attrs(topology) == [('fencing-level', {'id': 'fl-be1-1', 'target': 'be1', 'index': '1',
                                                        'devices': 'fence-be1'})]
    assert nvpairs(resources.find("primitive[@id='fence-be1']")) == [
        ('fence-be1-instance_attributes-ip', 'ip', '203.0.113.11'),
        ('fence-be1-instance_attributes-lanplus', 'lanplus', 'true'),
        ('fence-be1-instance_attributes-password', 'password', 'secret'),
        ('fence-be1-instance_attributes-pcmk_host_list', 'pcmk_host_list', 'be1'),
        ('fence-be1-instance_attributes-username', 'username', 'admin')]


def test_plan_inserts_missing_sections_between_the_existing_ones():
    config = xml('<configuration><crm_config/><nodes/><constraints/><rsc_defaults/><op_defaults/></configuration>')
    new, dummy = plan(config, Desired({'resources': [FENCE, ADDRESS], 'fencing_levels': PARAMS['fencing_levels']}))
    assert [c.tag for c in new] == ['crm_config', 'nodes', 'resources', 'constraints', 'fencing-topology',
                                    'rsc_defaults', 'op_defaults']


def test_plan_is_idempotent_on_its_own_result():
    desired = Desired(PARAMS)
    first, changes = plan(xml(RUNNING_CIB).find('configuration'), desired)
    assert [c['action'] for c in changes] == ['create', 'update'] + ['create'] * 7  # stonith-enabled exists
    second, again = plan(first, desired)
    assert again == []
    assert canon(second) == canon(first)


def test_plan_is_idempotent_on_the_cib_as_read_back():
    # what cibadmin --query returns: serialized, indented, comments
    desired = Desired(PARAMS)
    new, dummy = plan(xml('<configuration/>'), desired)
    ET.indent(new)
    text = ET.tostring(new, encoding='unicode').replace('<resources>', '<resources><!-- by hand -->')
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    read_back = ET.fromstring(text, parser=parser)
    assert any(not isinstance(e.tag, str) for e in read_back.iter())
    assert plan(read_back, desired)[1] == []


def test_plan_leaves_objects_it_does_not_name_alone():
    config, dummy = plan(xml('<configuration/>'), Desired(PARAMS))
    before = canon(config)
    new, changes = plan(config, Desired({'resources': [dict(ADDRESS, id='other')]}))
    assert changes == [{'object': 'other', 'action': 'create', 'section': 'resources'}]
    new.find('resources').remove(new.find("resources/primitive[@id='other']"))
    assert canon(new) == before


def three_primitives() -> ET.Element:
    config, dummy = plan(xml('<configuration/>'), Desired({'resources': [
        dict(ADDRESS, id='a'), dict(ADDRESS, id='b'), dict(ADDRESS, id='c')]}))
    return config


def test_a_changed_param_updates_the_object_in_place():
    config = three_primitives()
    changed = dict(ADDRESS, id='b', params={'ip': '198.51.100.122', 'cidr_netmask': 24})
    new, changes = plan(config, Desired({'resources': [changed]}))
    assert changes == [{'object': 'b', 'action': 'update', 'section': 'resources'}]
    assert [c.get('id') for c in new.find('resources')] == ['a', 'b', 'c']
    assert new.find("resources/primitive[@id='b']/instance_attributes/nvpair[@name='ip']").get('value') == \
        '198.51.100.122'
    assert canon(new.find('resources')[1]) == canon(primitive(changed))
    for oid in ('a', 'c'):
        assert new.find(f"resources/primitive[@id='{oid}']/instance_attributes/nvpair[@name='ip']").get('value') == \
            '198.51.100.121'


@pytest.mark.parametrize('change', [
    lambda g: g['resources'][1]['params'].update(cidr_netmask=25),       # a member's param
    lambda g: g['resources'][2].update(operations=[{'name': 'monitor', 'interval': '30s'}]),
    lambda g: g['resources'].reverse(),                                  # member order
    lambda g: g.update(meta={'target-role': 'Stopped'}),
])
def test_a_changed_group_is_one_update(change):
    group = {'id': 'cyrus-be1', 'resources': copy.deepcopy([VOLUME, ADDRESS, CYRUS])}
    config, dummy = plan(xml('<configuration/>'), Desired({'resources': [FENCE, group, dict(ADDRESS, id='z')]}))
    change(group)
    new, changes = plan(config, Desired({'resources': [group]}))
    assert changes == [{'object': 'cyrus-be1', 'action': 'update', 'section': 'resources'}]
    assert [c.get('id') for c in new.find('resources')] == ['fence-be1', 'cyrus-be1', 'z']
    assert canon(new.find('resources')[1]) == canon(resource(group))


def operator_stops(config: ET.Element, oid: str, name: str = 'target-role', value: str = 'Stopped') -> None:
    """What `crm_resource --resource OID --meta --set-parameter NAME --parameter-value VALUE` writes:
    a meta_attributes block appended after the resource's members or operations."""
    dummy, elem = find_by_id(config, oid)
    metas = elem.find('meta_attributes')
    if metas is None:
        metas = ET.SubElement(elem, 'meta_attributes', {'id': f'{oid}-meta_attributes'})
    ET.SubElement(metas, 'nvpair', {'id': f'{oid}-meta_attributes-{name}', 'name': name, 'value': value})


def test_an_operator_stop_survives_a_run_that_does_not_mention_it():
    group = {'id': 'cyrus-be1', 'resources': copy.deepcopy([VOLUME, ADDRESS, CYRUS])}
    config, dummy = plan(xml('<configuration/>'), Desired({'resources': [group]}))
    operator_stops(config, 'cyrus-be1')
    operator_stops(config, 'be1-cyrus', 'is-managed', 'false')
    new, changes = plan(config, Desired({'resources': [group]}))
    assert changes == [], 'a routine run must not start what an operator stopped'
    assert canon(new) == canon(config)
    # a real change to the group keeps the operator's toggles
    group['resources'][1]['params']['cidr_netmask'] = 25
    new, changes = plan(config, Desired({'resources': [group]}))
    assert changes == [{'object': 'cyrus-be1', 'action': 'update', 'section': 'resources'}]
    assert new.find("resources/group[@id='cyrus-be1']/meta_attributes/nvpair[@name='target-role']").get('value') == \
        'Stopped'
    assert new.find("resources/group/primitive[@id='be1-cyrus']/meta_attributes/nvpair[@name='is-managed']"
                    ).get('value') == 'false'
    assert new.find("resources/group/primitive[@id='be1-address']/instance_attributes/"
                    "nvpair[@name='cidr_netmask']").get('value') == '25'
    # a toggle the desired configuration sets is the desired configuration's
    group['meta'] = {'target-role': 'Started'}
    new, changes = plan(new, Desired({'resources': [group]}))
    assert changes == [{'object': 'cyrus-be1', 'action': 'update', 'section': 'resources'}]
    assert [(n, v) for dummy, n, v in nvpairs(new.find("resources/group[@id='cyrus-be1']/meta_attributes"))] == \
        [('target-role', 'Started')]
    # and any other meta attribute left behind by hand is corrected, as before
    operator_stops(new, 'be1-volume', 'resource-stickiness', '0')
    dummy, changes = plan(new, Desired({'resources': [group]}))
    assert changes == [{'object': 'cyrus-be1', 'action': 'update', 'section': 'resources'}]


def test_a_changed_constraint_score_and_fencing_level_are_updates():
    base = copy.deepcopy(PARAMS)
    base['resources'].append({'id': 'fence-heuristics-ping', 'agent': 'stonith:fence_heuristics_ping'})
    config, dummy = plan(xml('<configuration/>'), Desired(base))
    params = copy.deepcopy(base)
    params['constraints'][1]['score'] = 50
    params['fencing_levels'][0]['devices'] = ['fence-heuristics-ping', 'fence-be1']
    new, changes = plan(config, Desired(params))
    assert changes == [{'object': 'cyrus-be1-prefers-home', 'action': 'update', 'section': 'constraints'},
                       {'object': 'fl-be1-1', 'action': 'update', 'section': 'fencing-topology'}]
    assert new.find("constraints/rsc_location[@id='cyrus-be1-prefers-home']").get('score') == '50'
    assert new.find('fencing-topology/fencing-level').get('devices') == 'fence-heuristics-ping,fence-be1'


def test_properties_compare_only_the_listed_names():
    config = xml(RUNNING_CIB).find('configuration')
    new, changes = plan(config, Desired({'properties': {'stonith-enabled': True, 'cluster-name': 'cyrus-ha',
                                                        'have-watchdog': False}}))
    assert changes == [
        {'object': 'properties.cluster-name', 'action': 'create', 'value': 'cyrus-ha'},
        {'object': 'properties.stonith-enabled', 'action': 'update', 'from': 'false', 'value': 'true'}]
    # Pacemaker's own nvpairs keep their place, ids and values; new ones come last
    assert nvpairs(new.find('crm_config')) == [
        ('cib-bootstrap-options-have-watchdog', 'have-watchdog', 'false'),
        ('cib-bootstrap-options-dc-version', 'dc-version', '2.1.5-a3f44794f94'),
        ('cib-bootstrap-options-cluster-infrastructure', 'cluster-infrastructure', 'corosync'),
        ('cib-bootstrap-options-stonith-enabled', 'stonith-enabled', 'true'),
        ('cib-bootstrap-options-cluster-name', 'cluster-name', 'cyrus-ha')]
    assert canon(new.find('nodes')) == canon(config.find('nodes'))


def test_properties_of_another_set_are_not_ours():
    config = xml('<configuration><crm_config><cluster_property_set id="site">'
                 '<nvpair id="site-stonith-enabled" name="stonith-enabled" value="false"/>'
                 '</cluster_property_set></crm_config></configuration>')
    new, changes = plan(config, Desired({'properties': {'stonith-enabled': True}}))
    assert changes == [{'object': 'properties.stonith-enabled', 'action': 'create', 'value': 'true'}]
    assert child_attrs(new.find('crm_config')) == [('cluster_property_set', {'id': 'site'}),
                                                   ('cluster_property_set', {'id': 'cib-bootstrap-options'})]
    assert nvpairs(new.find("crm_config/cluster_property_set[@id='site']")) == [
        ('site-stonith-enabled', 'stonith-enabled', 'false')]


def test_resource_defaults_update():
    config, dummy = plan(xml('<configuration/>'), Desired(PARAMS))
    new, changes = plan(config, Desired({'resource_defaults': {'resource-stickiness': 50,
                                                               'failure-timeout': '10min'}}))
    assert changes == [
        {'object': 'resource_defaults.failure-timeout', 'action': 'create', 'value': '10min'},
        {'object': 'resource_defaults.resource-stickiness', 'action': 'update', 'from': '200', 'value': '50'}]
    assert nvpairs(new.find('rsc_defaults')) == [
        ('rsc-options-migration-threshold', 'migration-threshold', '1'),
        ('rsc-options-resource-stickiness', 'resource-stickiness', '50'),
        ('rsc-options-failure-timeout', 'failure-timeout', '10min')]


@pytest.mark.parametrize('cib_object, desired, message', [
    ('<group id="x"><primitive id="x-a" class="ocf" provider="pacemaker" type="Dummy"/></group>',
     {'resources': [{'id': 'x', 'agent': 'ocf:pacemaker:Dummy'}]},
     'x is a group in the cluster, not a primitive: remove it first (absent) or choose another id'),
    ('<primitive id="x" class="ocf" provider="pacemaker" type="Dummy"/>',
     {'resources': [{'id': 'x', 'resources': [{'id': 'x-a', 'agent': 'ocf:pacemaker:Dummy'}]}]},
     'x is a primitive in the cluster, not a group: remove it first (absent) or choose another id'),
])
def test_an_object_of_another_kind_is_refused(cib_object, desired, message):
    config = xml(f'<configuration><resources>{cib_object}</resources></configuration>')
    with pytest.raises(CibError) as caught:
        plan(config, Desired(desired))
    assert str(caught.value) == message


def test_absent_removes_what_exists_and_ignores_the_rest():
    config, dummy = plan(xml('<configuration/>'), Desired(PARAMS))
    new, changes = plan(config, Desired({'absent': ['fl-be1-1', 'cyrus-be1-prefers-home', 'be1-cyrus', 'never-was']}))
    assert changes == [{'object': 'fl-be1-1', 'action': 'remove', 'kind': 'fencing-level'},
                       {'object': 'cyrus-be1-prefers-home', 'action': 'remove', 'kind': 'rsc_location'},
                       {'object': 'be1-cyrus', 'action': 'remove', 'kind': 'primitive'}]
    assert list(new.find('fencing-topology')) == []
    assert [c.get('id') for c in new.find('constraints')] == ['fence-be1-avoids-be1']
    assert [c.get('id') for c in new.find("resources/group[@id='cyrus-be1']")] == ['be1-volume', 'be1-address']
    assert plan(new, Desired({'absent': ['fl-be1-1']}))[1] == []


def test_absent_id_must_be_an_id():
    with pytest.raises(CibError) as caught:
        plan(xml('<configuration/>'), Desired({'absent': ['not an id']}))
    assert str(caught.value) == f"absent id: 'not an id' {ID_HINT}"


def test_epoch_of():
    assert epoch_of(xml(RUNNING_CIB)) == (0, 7, 3)
    assert epoch_of(xml('<cib epoch="2"/>')) == (0, 2, 0)


# ---------------------------------------------------------------------------------------------- Cib.query

class Clock:
    """A fake monotonic clock that only sleeping moves."""

    def __init__(self):
        self.now = 100.0
        self.slept = []

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self):
        return self.now


def scripted(*answers):
    """A run() that gives these answers in turn (the last one again when they run out) and records argv."""
    calls = []

    def run(argv):
        calls.append(list(argv))
        return answers[min(len(calls), len(answers)) - 1]
    run.calls = calls
    return run


def test_query_answers_the_cib():
    run = scripted((0, RUNNING_CIB, ''))
    cib = Cib(run, sleep=pytest.fail, clock=Clock()).query()
    assert cib.tag == 'cib' and cib.get('epoch') == '7'
    assert run.calls == [['cibadmin', '--query']]


def test_query_retries_until_the_cluster_answers():
    clock = Clock()
    run = scripted(*[(102, '', NOT_CONNECTED + '\n')] * 3, (0, RUNNING_CIB, ''))
    assert Cib(run, sleep=clock.sleep, clock=clock).query(timeout=10).tag == 'cib'
    assert len(run.calls) == 4 and clock.slept == [1, 1, 1]


@pytest.mark.parametrize('timeout, calls', [(0, 1), (3, 4), (2.5, 4)])
def test_query_gives_up_at_the_deadline(timeout, calls):
    clock = Clock()
    run = scripted((102, '', NOT_CONNECTED + '\n'))
    with pytest.raises(CibError) as caught:
        Cib(run, sleep=clock.sleep, clock=clock).query(timeout=timeout)
    assert str(caught.value) == ("the cluster's CIB is not reachable on this node (cibadmin --query, exit status 102: "
                                 f'{NOT_CONNECTED}): is the cluster running here?')
    assert len(run.calls) == calls and clock.slept == [1] * (calls - 1)


def test_query_waits_for_the_dc_when_asked():
    """Before the DC is elected each node's CIB is its own: a change written there would be lost."""
    clock = Clock()
    no_dc = RUNNING_CIB.replace(' dc-uuid="1"', '')
    run = scripted((0, no_dc, ''), (0, no_dc, ''), (0, RUNNING_CIB, ''))
    assert Cib(run, sleep=clock.sleep, clock=clock).query(timeout=10, need_dc=True).get('dc-uuid') == '1'
    assert len(run.calls) == 3 and clock.slept == [1, 1]


def test_query_without_a_dc_gives_up_at_the_deadline():
    clock = Clock()
    run = scripted((0, RUNNING_CIB.replace(' dc-uuid="1"', ''), ''))
    with pytest.raises(CibError) as caught:
        Cib(run, sleep=clock.sleep, clock=clock).query(timeout=2, need_dc=True)
    assert str(caught.value) == ('the cluster has not elected its DC (no dc-uuid in the CIB) within 2 s: a change '
                                 'made now would be lost; are the nodes joined?')
    # without need_dc (check mode only reads) the same CIB is answered at once
    assert Cib(scripted((0, RUNNING_CIB.replace(' dc-uuid="1"', ''), '')), sleep=pytest.fail,
               clock=Clock()).query().tag == 'cib'


def test_query_error_falls_back_to_stdout():
    clock = Clock()
    with pytest.raises(CibError) as caught:
        Cib(scripted((1, '  Signon to CIB failed  \n', '')), sleep=clock.sleep, clock=clock).query()
    assert 'exit status 1: Signon to CIB failed)' in str(caught.value)


@pytest.mark.parametrize('out', ['<cib><configuration>', '', 'Signon to CIB failed'])
def test_query_with_unparsable_xml(out):
    run = scripted((0, out, ''))
    with pytest.raises(CibError) as caught:
        Cib(run, sleep=pytest.fail, clock=Clock()).query(timeout=30)
    assert str(caught.value).startswith('cibadmin --query returned XML that does not parse: ')
    assert len(run.calls) == 1


# ---------------------------------------------------------------------------------------------- Cib.apply

class Tools:
    """A fake run() for crm_verify and cibadmin that records each argv and the content of the files
    named after --xml-file while they exist (apply deletes them afterwards). cibadmin --query (after a
    failed replace) answers `query`, by default the CIB as it was."""

    def __init__(self, verify=(0, '', ''), replace=(0, '', ''), query=(0, RUNNING_CIB, '')):
        self.answers = {'crm_verify': verify, 'cibadmin --replace': replace, 'cibadmin --query': query}
        self.calls = []

    def __call__(self, argv):
        files = {}
        if '--xml-file' in argv:
            path = argv[argv.index('--xml-file') + 1]
            with open(path, encoding='utf-8') as handle:
                files[path] = handle.read()
            files['mode'] = os.stat(path).st_mode & 0o777
        self.calls.append((list(argv), files))
        answer = self.answers[argv[0] if argv[0] == 'crm_verify' else ' '.join(argv[:2])]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def argv(self):
        return [argv for argv, dummy in self.calls]


def new_configuration(cib: ET.Element) -> ET.Element:
    return plan(cib.find('configuration'), Desired(PARAMS))[0]


def test_apply_verifies_the_whole_cib_then_replaces_the_configuration(tmp_path):
    cib = xml(RUNNING_CIB)
    original = canon(cib)
    config = new_configuration(cib)
    tools = Tools()
    api = Cib(tools)
    api.apply(cib, config, tmpdir=str(tmp_path))
    (verify, verify_files), (replace, replace_files) = tools.calls
    verify_path, replace_path = verify[-1], replace[-1]
    assert verify == ['crm_verify', '--verbose', '--xml-file', verify_path]
    assert replace == ['cibadmin', '--replace', '--scope', 'configuration', '--xml-file', replace_path]
    workdir = os.path.dirname(verify_path)
    assert os.path.dirname(workdir) == str(tmp_path) and os.path.basename(workdir).startswith('cyrus-ha-cib-')
    assert (os.path.basename(verify_path), os.path.dirname(replace_path), os.path.basename(replace_path)) == \
        ('cib.xml', workdir, 'configuration.xml')
    assert verify_files['mode'] == replace_files['mode'] == 0o600
    checked = xml(verify_files[verify_path])
    assert checked.tag == 'cib' and checked.attrib == cib.attrib
    assert [c.tag for c in checked] == ['configuration']        # no <status>
    assert canon(checked.find('configuration')) == canon(config)
    replaced = xml(replace_files[replace_path])
    assert canon(replaced) == canon(config)
    assert list(tmp_path.iterdir()) == []
    assert api.warnings == []
    assert canon(cib) == original  # the queried CIB is not modified


VERIFY_WARNINGS = ('warning: Support for stonith-action of \'poweroff\' is deprecated and will be removed in a future '
                   'release (use \'off\' instead)\n'
                   '  warning: Blind faith: not fencing unseen nodes\n'
                   'Warnings found during check: config may not be valid\n')
VERIFY_ERRORS = ('error: Resource start-up disabled since no STONITH resources have been defined\n'
                 'error: Either configure some or disable STONITH with the stonith-enabled option\n'
                 'error: NOTE: Clusters with shared data need STONITH to ensure data integrity\n'
                 'Errors found during check: config not valid\n')


@pytest.mark.parametrize('out, err', [('', VERIFY_WARNINGS), (VERIFY_WARNINGS, '')])
def test_apply_goes_on_after_warnings_and_collects_them(tmp_path, out, err):
    tools = Tools(verify=(78, out, err))
    api = Cib(tools)
    cib = xml(RUNNING_CIB)
    api.apply(cib, new_configuration(cib), tmpdir=str(tmp_path))
    assert [argv[:2] for argv in tools.argv()] == [['crm_verify', '--verbose'], ['cibadmin', '--replace']]
    assert api.warnings == [
        "warning: Support for stonith-action of 'poweroff' is deprecated and will be removed in a future release "
        "(use 'off' instead)",
        'warning: Blind faith: not fencing unseen nodes']
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('verify, message', [
    ((78, '', VERIFY_ERRORS),
     'error: Resource start-up disabled since no STONITH resources have been defined error: Either configure some '
     'or disable STONITH with the stonith-enabled option error: NOTE: Clusters with shared data need STONITH to '
     'ensure data integrity Errors found during check: config not valid'),
    ((78, 'error: Resource fence-be1: agent stonith:fence_nothere is not installed',
      'Errors found during check: config not valid\n'),
     'error: Resource fence-be1: agent stonith:fence_nothere is not installed Errors found during check: '
     'config not valid'),
    ((64, '', "crm_verify: unrecognized option '--frobnicate'\n"), "crm_verify: unrecognized option '--frobnicate'"),
    ((1, '', ''), 'crm_verify exit status 1 without a message'),
])
def test_apply_stops_when_the_configuration_does_not_verify(tmp_path, verify, message):
    tools = Tools(verify=verify)
    cib = xml(RUNNING_CIB)
    with pytest.raises(CibError) as caught:
        Cib(tools).apply(cib, new_configuration(cib), tmpdir=str(tmp_path))
    assert str(caught.value) == 'the new configuration does not verify, nothing was changed: ' + message
    assert tools.argv() == [['crm_verify', '--verbose', '--xml-file', tools.calls[0][0][-1]]]  # no cibadmin at all
    assert list(tmp_path.iterdir()) == []


def test_apply_cuts_a_long_verify_output():
    tools = Tools(verify=(78, '', 'error: ' + 'x' * 5000 + '\nErrors found during check: config not valid\n'))
    cib = xml(RUNNING_CIB)
    with pytest.raises(CibError) as caught:
        Cib(tools).apply(cib, new_configuration(cib))
    assert str(caught.value) == 'the new configuration does not verify, nothing was changed: error: ' + 'x' * 1993


@pytest.mark.parametrize('replace, message', [
    ((103, '', 'Call cib_replace failed (-205): Update was older than existing configuration\n'),
     'cibadmin --replace failed (exit status 103), nothing was changed: Call cib_replace failed (-205): '
     'Update was older than existing configuration'),
    ((1, 'Call cib_replace failed (-107): Transport endpoint is not connected', ''),
     'cibadmin --replace failed (exit status 1), nothing was changed: Call cib_replace failed (-107): '
     'Transport endpoint is not connected'),
])
def test_apply_reports_a_failed_replace(tmp_path, replace, message):
    tools = Tools(replace=replace)
    cib = xml(RUNNING_CIB)
    with pytest.raises(CibError) as caught:
        Cib(tools).apply(cib, new_configuration(cib), tmpdir=str(tmp_path))
    assert str(caught.value) == message
    # the CIB is read back: unchanged, so nothing was changed
    assert [argv[:2] for argv in tools.argv()] == [['crm_verify', '--verbose'], ['cibadmin', '--replace'],
                                                   ['cibadmin', '--query']]
    assert list(tmp_path.iterdir()) == []


def test_apply_removes_its_files_when_the_runner_fails(tmp_path):
    tools = Tools(verify=OSError(2, 'No such file or directory'))
    cib = xml(RUNNING_CIB)
    with pytest.raises(OSError):
        Cib(tools).apply(cib, new_configuration(cib), tmpdir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- converge

class Cluster:
    """A fake node: cibadmin --query answers the current CIB, cibadmin --replace installs the given
    configuration (epoch + 1, num_updates 0), crm_verify answers `verify`. Before answering query number
    n (1-based), on_query[n] may change the CIB as another writer would."""

    def __init__(self, text=RUNNING_CIB, verify=(0, '', ''), on_query=None):
        self.cib = xml(text)
        self.verify = verify
        self.on_query = on_query or {}
        self.calls = []
        self.queries = 0

    def __call__(self, argv):
        self.calls.append(list(argv))
        if argv == ['cibadmin', '--query']:
            self.queries += 1
            hook = self.on_query.get(self.queries)
            if hook:
                hook(self.cib)
            return 0, ET.tostring(self.cib, encoding='unicode'), ''
        if argv[0] == 'crm_verify':
            return self.verify
        if argv[:4] == ['cibadmin', '--replace', '--scope', 'configuration']:
            with open(argv[-1], encoding='utf-8') as handle:
                config = xml(handle.read())
            old = self.cib.find('configuration')
            self.cib.insert(list(self.cib).index(old), config)
            self.cib.remove(old)
            bump(self.cib, 'epoch')
            self.cib.set('num_updates', '0')
            return 0, '', ''
        raise AssertionError(f'unexpected command {argv}')

    def commands(self):
        return [' '.join(argv[:2]) for argv in self.calls]


def bump(cib: ET.Element, key: str) -> None:
    cib.set(key, str(int(cib.get(key, '0')) + 1))


def test_converge_creates_then_finds_nothing_to_change():
    cluster = Cluster()
    result = converge(PARAMS, cluster, sleep=pytest.fail, clock=Clock())
    assert result['changed'] is True
    assert result['changes'] == [c if c['object'] != 'properties.stonith-enabled'
                                 else {'object': 'properties.stonith-enabled', 'action': 'update', 'from': 'false',
                                       'value': 'true'} for c in PARAMS_CHANGES]
    assert cluster.commands() == ['cibadmin --query', 'cibadmin --query', 'crm_verify --verbose',
                                  'cibadmin --replace', 'cibadmin --query']
    assert result['epoch'] == '0.8.0' and result['warnings'] == []
    assert result['diff']['before'] == ('<cluster_property_set id="cib-bootstrap-options">\n'
                                        '  <nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" '
                                        'value="false" />\n</cluster_property_set>')
    assert 'id="cyrus-be1"' in result['diff']['after'] and 'dc-version' not in result['diff']['after']
    # Pacemaker's own properties are still there
    assert cluster.cib.find(".//nvpair[@name='dc-version']").get('value') == '2.1.5-a3f44794f94'
    assert cluster.cib.find('status') is not None

    cluster.calls.clear()
    again = converge(PARAMS, cluster, sleep=pytest.fail, clock=Clock())
    assert again['changed'] is False and again['changes'] == []
    assert again['diff']['before'] == again['diff']['after'] != ''
    assert cluster.commands() == ['cibadmin --query']       # no replace, not even a verify


def test_converge_in_check_mode_only_reads():
    cluster = Cluster()
    before = ET.tostring(cluster.cib)
    result = converge(PARAMS, cluster, check_mode=True, sleep=pytest.fail, clock=Clock())
    assert result['changed'] is True and len(result['changes']) == len(PARAMS_CHANGES)
    assert 'epoch' not in result and 'warnings' not in result
    assert cluster.commands() == ['cibadmin --query']
    assert ET.tostring(cluster.cib) == before


def test_converge_waits_for_the_cluster_on_the_first_query_only():
    clock = Clock()
    answers = iter([(102, '', NOT_CONNECTED)] * 2)
    cluster = Cluster()

    def run(argv):
        if argv == ['cibadmin', '--query'] and cluster.queries == 0:
            answer = next(answers, None)
            if answer:
                return answer
        return cluster(argv)
    result = converge(PARAMS, run, wait=60, sleep=clock.sleep, clock=clock)
    assert result['changed'] is True and clock.slept == [1, 1]


def other_writer_adds(spec):
    def hook(cib):
        cib.find('configuration/resources').append(resource(spec))
        bump(cib, 'epoch')
    return hook


def test_converge_plans_again_when_another_writer_changed_the_configuration():
    # between our query and our replace, someone else creates fence-be1 (as we would) and another resource
    def hook(cib):
        other_writer_adds(FENCE)(cib)
        cib.find('configuration/resources').append(primitive(dict(ADDRESS, id='theirs')))
    cluster = Cluster(on_query={2: hook})
    result = converge(PARAMS, cluster, sleep=pytest.fail, clock=Clock())
    assert cluster.commands() == ['cibadmin --query', 'cibadmin --query', 'cibadmin --query', 'cibadmin --query',
                                  'crm_verify --verbose', 'cibadmin --replace', 'cibadmin --query']
    assert {'object': 'fence-be1', 'action': 'create', 'section': 'resources'} not in result['changes']
    assert [c.get('id') for c in cluster.cib.find('configuration/resources')] == ['fence-be1', 'theirs', 'cyrus-be1']
    assert result['epoch'] == '0.9.0'


@pytest.mark.parametrize('key', ['admin_epoch', 'epoch'])
def test_converge_plans_again_on_either_epoch(key):
    cluster = Cluster(on_query={2: lambda cib: bump(cib, key)})
    converge(PARAMS, cluster, sleep=pytest.fail, clock=Clock())
    assert cluster.commands().count('cibadmin --query') == 5
    assert cluster.commands().count('cibadmin --replace') == 1


def test_converge_ignores_status_updates():
    cluster = Cluster(on_query={2: lambda cib: bump(cib, 'num_updates')})
    result = converge(PARAMS, cluster, sleep=pytest.fail, clock=Clock())
    assert cluster.commands() == ['cibadmin --query', 'cibadmin --query', 'crm_verify --verbose',
                                  'cibadmin --replace', 'cibadmin --query']
    assert result['changed'] is True and result['epoch'] == '0.8.0'


def test_converge_gives_up_when_the_configuration_keeps_changing():
    cluster = Cluster(on_query={n: (lambda cib: bump(cib, 'epoch')) for n in range(1, 20)})
    with pytest.raises(CibError) as caught:
        converge(PARAMS, cluster, sleep=pytest.fail, clock=Clock())
    assert str(caught.value) == 'the CIB kept changing under this run (another tool is writing it): try again'
    assert cluster.commands() == ['cibadmin --query'] * 6


def test_converge_succeeds_when_the_writer_stops_in_time():
    # two interrupted attempts, the third goes through
    cluster = Cluster(on_query={2: lambda cib: bump(cib, 'epoch'), 4: lambda cib: bump(cib, 'epoch')})
    result = converge(PARAMS, cluster, sleep=pytest.fail, clock=Clock())
    assert result['changed'] is True and cluster.commands().count('cibadmin --replace') == 1
    assert cluster.commands().count('cibadmin --query') == 7


def test_converge_passes_on_verify_warnings_and_errors():
    cluster = Cluster(verify=(78, '', VERIFY_WARNINGS))
    assert converge(PARAMS, cluster, sleep=pytest.fail, clock=Clock())['warnings'] == [
        "warning: Support for stonith-action of 'poweroff' is deprecated and will be removed in a future release "
        "(use 'off' instead)",
        'warning: Blind faith: not fencing unseen nodes']
    cluster = Cluster(verify=(78, '', VERIFY_ERRORS))
    with pytest.raises(CibError, match='^the new configuration does not verify, nothing was changed: '):
        converge(PARAMS, cluster, sleep=pytest.fail, clock=Clock())
    assert 'cibadmin --replace' not in cluster.commands()


def test_converge_checks_the_data_before_touching_the_cluster():
    cluster = Cluster()
    with pytest.raises(CibError, match='^id be1-address is used twice'):
        converge({'resources': [ADDRESS, ADDRESS]}, cluster)
    assert cluster.calls == []


# ---------------------------------------------------------------------------------------------- predict_fresh

def test_predict_fresh_is_everything_created():
    assert predict_fresh(PARAMS) == PARAMS_CHANGES
    assert predict_fresh({}) == []


def test_predict_fresh_refuses_bad_data():
    with pytest.raises(CibError) as caught:
        predict_fresh({'resources': [{'id': 'cyrus-be1', 'resources': []}]})
    assert str(caught.value) == 'group cyrus-be1: it has no resources'


def test_a_resource_is_stopped_before_it_is_deleted():
    """Deleted while running, a resource is stopped as an orphan without its parameters: converge first
    sets target-role=Stopped, waits for the cluster to settle, then deletes it."""
    config, dummy = plan(xml('<configuration/>'), Desired(PARAMS))
    cib = ET.fromstring(RUNNING_CIB)
    cib.remove(cib.find('configuration'))
    cib.insert(0, config)
    text = ET.tostring(cib, encoding='unicode')
    replaced = []

    def run(argv):
        if argv[:2] == ['cibadmin', '--query']:
            return 0, text, ''
        if argv[:2] == ['cibadmin', '--replace']:
            with open(argv[-1], encoding='utf-8') as handle:
                replaced.append(ET.fromstring(handle.read()))
            return 0, '', ''
        return 0, '', ''
    calls = []

    def recording(argv):
        calls.append(argv[0] + ' ' + argv[1])
        return run(argv)
    result = converge({'absent': ['be1-cyrus']}, recording, sleep=pytest.fail, clock=Clock())
    assert result['changed'] and result['changes'] == [{'object': 'be1-cyrus', 'action': 'remove', 'kind': 'primitive'}]
    assert 'crm_resource --wait' in calls
    assert calls.index('crm_resource --wait') > calls.index('cibadmin --replace')
    first, second = replaced
    role = first.find(".//primitive[@id='be1-cyrus']/meta_attributes/nvpair[@name='target-role']")
    assert role is not None and role.get('value') == 'Stopped'
    # the CIB answered here still holds it (a fake): the second replace is planned from that query again
    assert second.find(".//primitive[@id='be1-cyrus']") is None
