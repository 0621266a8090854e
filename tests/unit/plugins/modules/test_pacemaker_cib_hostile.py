# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pacemaker_cib's hostile pass through main(): every bad input refused before the first command with a
message that names the object and the cause (never a traceback, never a hang), a hostile CIB from
cibadmin parsed without expanding anything, failures after a change reported as changed, and a run
SIGKILLed between the stop and the delete of a resource finished or undone by the next one.

The node is a fake: cibadmin, crm_verify and crm_resource answer from a CIB kept in a file, so that what
a killed child did is what the next run sees. The real cluster is in tests/integration."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import xml.etree.ElementTree as ET

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.cyrus.ha.plugins.module_utils import pacemaker
from ansible_collections.cyrus.ha.plugins.modules import pacemaker_cib
from hostile import deadline  # the shared deadline of the hostile tests

ID_HINT = 'is not a valid XML id (a letter or _, then letters, digits, _ . -)'
NAME_HINT = 'is not a valid name (a letter or _, then letters, digits, _ . -)'
SCORE_HINT = 'is not a score (an integer from -1000000 to 1000000, INFINITY or -INFINITY)'
DURATION_HINT = 'is not a duration (a whole number and a unit ms, s, min or h, such as 20s)'
INTERVAL_HINT = ('is not a duration (a whole number and a unit ms, s, min or h, such as 20s, or ISO 8601 such '
                 'as PT20S)')
COUNT_HINT = 'is not a count (an integer from 0 to 1000000, or INFINITY)'
XML_CHAR = 'which an XML attribute cannot carry'
DOCTYPE = ('cibadmin --query returned XML with a document type declaration (entities are never expanded), '
           'which a CIB never has: refused')

CIB = '''<cib crm_feature_set="3.16.2" validate-with="pacemaker-3.9" epoch="7" num_updates="3" admin_epoch="0"
     dc-uuid="1">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="false"/>
      </cluster_property_set>
    </crm_config>
    <nodes><node id="1" uname="be1"/><node id="2" uname="spare"/></nodes>
    <resources>
      <primitive id="fence-be1" class="stonith" type="fence_ipmilan"/>
      <primitive id="old-ip" class="ocf" provider="heartbeat" type="IPaddr2">
        <instance_attributes id="old-ip-instance_attributes">
          <nvpair id="old-ip-instance_attributes-ip" name="ip" value="198.51.100.99"/>
        </instance_attributes>
      </primitive>
      <group id="grp">
        <primitive id="grp-a" class="ocf" provider="pacemaker" type="Dummy"/>
        <primitive id="grp-b" class="ocf" provider="pacemaker" type="Dummy"/>
      </group>
      <clone id="cl"><primitive id="cl-p" class="ocf" provider="pacemaker" type="Dummy"/></clone>
    </resources>
    <constraints/>
  </configuration>
  <status/>
</cib>'''

IP = {'id': 'be1-ip', 'agent': 'ocf:heartbeat:IPaddr2', 'params': {'ip': '198.51.100.121', 'cidr_netmask': 24}}
OLD_IP = {'id': 'old-ip', 'agent': 'ocf:heartbeat:IPaddr2', 'params': {'ip': '198.51.100.99'}}
NOTHING = 'nothing to manage: give properties, resource_defaults, resources, constraints, fencing_levels or absent'


class Killed(BaseException):
    """What a fake tool raises to stop a run dead where SIGKILL would."""


class Node:
    """A fake cluster node. cibadmin --query answers the CIB in a file (or `query`; after a replace,
    `query_after_replace` when set), cibadmin --replace installs the configuration it is given there (epoch
    + 1; unless not replace_applies) and answers `replace`, crm_verify answers `verify`, crm_resource --wait
    answers `settle`. `kill_at` names a command before which the process is SIGKILLed (in a forked child),
    `on_replace` one more writer's change after a replace; `commands` lists what ran, as
    'tool --first-option', and `replaced` the configurations given."""

    def __init__(self, path, text=CIB):
        self.path = str(path)
        self.query = self.query_after_replace = self.kill_at = self.on_replace = None
        self.verify = self.replace = self.settle = (0, '', '')
        self.replace_applies = True
        self.commands, self.replaced = [], []
        if text is not None:
            self.write(ET.fromstring(text))

    def read(self) -> ET.Element:
        return ET.parse(self.path).getroot()

    def write(self, cib: ET.Element) -> None:
        ET.ElementTree(cib).write(self.path, encoding='unicode')

    def __call__(self, argv):
        argv = [os.path.basename(argv[0])] + list(argv[1:])
        command = ' '.join(argv[:2])
        if command == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.commands.append(command)
        if command == 'cibadmin --query':
            if self.query_after_replace is not None and self.writes():
                return self.query_after_replace
            if self.query is not None:
                return self.query
            with open(self.path, encoding='utf-8') as handle:
                return 0, handle.read(), ''
        if command == 'cibadmin --replace':
            self.replaced.append(ET.parse(argv[-1]).getroot())
            if self.replace_applies:
                self.install(self.replaced[-1])
            if self.on_replace:
                self.on_replace(self)
            return self.replace
        if argv[0] == 'crm_verify':
            return self.verify
        if command == 'crm_resource --wait':
            return self.settle
        raise AssertionError(f'unexpected command {argv}')

    def install(self, config: ET.Element) -> None:
        cib = self.read()
        old = cib.find('configuration')
        cib.insert(list(cib).index(old), config)
        cib.remove(old)
        cib.set('epoch', str(int(cib.get('epoch')) + 1))
        self.write(cib)

    def writes(self) -> int:
        return self.commands.count('cibadmin --replace')

    def target_role(self, oid: str):
        pair = self.read().find(f".//*[@id='{oid}']/meta_attributes/nvpair[@name='target-role']")
        return None if pair is None else (pair.get('id'), pair.get('value'))


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A Node on the module's run_command, every Pacemaker tool found; change its attributes per test."""
    fake = Node(tmp_path / 'cib.xml')
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path',
                        lambda self, name, required=False, opt_dirs=None: f'/usr/sbin/{name}')
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', lambda self, argv, **kw: fake(argv))
    return fake


def run_main(args, capsys, tmp_path, check=False, diff=False):
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff, _ansible_tmpdir=str(tmp_path))
    with deadline(), patch_module_args(args):
        with pytest.raises(SystemExit):
            pacemaker_cib.main()
    out = capsys.readouterr().out
    assert 'Traceback' not in out
    return json.loads(out)


def location(**changes) -> dict:
    return {'constraints': [dict({'id': 'c1', 'type': 'location', 'resource': 'old-ip', 'node': 'be1'}, **changes)]}


def monitor(**changes) -> dict:
    return {'resources': [dict(IP, operations=[dict({'name': 'monitor', 'interval': '10s'}, **changes)])]}


def member(**spec) -> dict:
    return {'resources': [{'id': 'g', 'resources': [spec]}]}


NAN, INF = float('nan'), float('inf')
# (module arguments, the exact message): each refused before the first command, in check mode too
REFUSED = [
    # numbers: not finite, negative, beyond what Pacemaker takes, booleans for numbers, non-ASCII digits
    ({'wait': NAN, 'resources': [IP]}, 'wait nan is not a number of seconds from 0 to 3600'),
    ({'wait': INF, 'resources': [IP]}, 'wait inf is not a number of seconds from 0 to 3600'),
    ({'wait': -5, 'resources': [IP]}, 'wait -5 is not a number of seconds from 0 to 3600'),
    ({'wait': 1e12, 'absent': ['old-ip']}, 'wait 1000000000000.0 is not a number of seconds from 0 to 3600'),
    ({'wait': True, 'resources': [IP]}, 'wait True is not a number of seconds from 0 to 3600'),
    ({'wait': '\u0666\u0660', 'resources': [IP]}, "wait '\u0666\u0660' is not a number of seconds from 0 to 3600"),
    (location(score=NAN), f'location c1: score nan {SCORE_HINT}'),
    (location(score=True), f'location c1: score True {SCORE_HINT}'),
    (location(score=1.5), f'location c1: score 1.5 {SCORE_HINT}'),
    (location(score=''), f"location c1: score '' {SCORE_HINT}"),
    (location(score='\u0661\u0660\u0660'), f"location c1: score '\u0661\u0660\u0660' {SCORE_HINT}"),
    (location(score=5000000), 'location c1: score 5000000 is beyond the scores Pacemaker knows (-1000000 to 1000000): '
                              'write INFINITY or -INFINITY'),
    ({'constraints': [{'id': 'c1', 'type': 'colocation', 'first': 'old-ip', 'then': 'grp', 'score': '-inf'}]},
     f"colocation c1: score '-inf' {SCORE_HINT}"),
    (monitor(interval=-10), f'resource be1-ip: operation monitor: interval -10 {INTERVAL_HINT}'),
    (monitor(interval='10 s'), f"resource be1-ip: operation monitor: interval '10 s' {INTERVAL_HINT}"),
    (monitor(interval='1.5s'), f"resource be1-ip: operation monitor: interval '1.5s' {INTERVAL_HINT}"),
    (monitor(interval='\u0661\u0660s'),
     f"resource be1-ip: operation monitor: interval '\u0661\u0660s' {INTERVAL_HINT}"),
    (monitor(interval='P50D'), "resource be1-ip: operation monitor: interval 'P50D' is beyond the 4294967295 ms "
                               '(about 49 days) Pacemaker can take'),
    (monitor(timeout=NAN), f'resource be1-ip: operation monitor: timeout nan {DURATION_HINT}'),
    (monitor(timeout=True), f'resource be1-ip: operation monitor: timeout True {DURATION_HINT}'),
    (monitor(timeout='PT20S'), f"resource be1-ip: operation monitor: timeout 'PT20S' {DURATION_HINT}"),
    (monitor(timeout='99999999999s'), "resource be1-ip: operation monitor: timeout '99999999999s' is beyond the "
                                      '2147483647 ms (about 24 days) Pacemaker can take'),
    (monitor(enabled='maybe'), "resource be1-ip: operation monitor: enabled 'maybe' is not a boolean (true or false)"),
    (monitor(**{'on-fail': 'panic'}), "resource be1-ip: operation monitor: on-fail 'panic' is not one of ignore, "
                                      'block, demote, stop, restart, standby, fence, restart-container'),
    ({'resources': [dict(IP, operations=[{'name': 'monitor', 'interval': '10s'},
                                         {'name': 'monitor', 'interval': 10}])]},
     'resource be1-ip: two monitor operations with the same interval (10s and 10)'),
    ({'resource_defaults': {'migration-threshold': True}}, f'resource_defaults.migration-threshold True {COUNT_HINT}'),
    ({'resource_defaults': {'migration-threshold': -1}}, f'resource_defaults.migration-threshold -1 {COUNT_HINT}'),
    ({'resource_defaults': {'resource-stickiness': NAN}}, f'resource_defaults.resource-stickiness nan {SCORE_HINT}'),
    ({'resource_defaults': {'failure-timeout': -1}},
     f'resource_defaults.failure-timeout -1 {INTERVAL_HINT}'),
    ({'resources': [dict(IP, meta={'resource-stickiness': 10 ** 30})]},
     'resource be1-ip: meta.resource-stickiness 1000000000000000000000000000000 is beyond the scores Pacemaker '
     'knows (-1000000 to 1000000): write INFINITY or -INFINITY'),
    ({'resources': [dict(IP, meta={'target-role': 'Running'})]},
     "resource be1-ip: meta.target-role 'Running' is not one of Stopped, Started, Promoted, Unpromoted, Slave, Master"),
    ({'properties': {'stonith-enabled': 'maybe'}},
     "properties.stonith-enabled 'maybe' is not a boolean (true or false)"),
    ({'properties': {'stonith-timeout': INF}}, f'properties.stonith-timeout inf {DURATION_HINT}'),
    ({'properties': {'cluster-name': NAN}}, 'properties.cluster-name is not a finite number'),
    ({'resources': [dict(IP, params={'port': 2 ** 64})]}, 'resource be1-ip: params.port is beyond a 64-bit integer'),
    ({'fencing_levels': [{'target': 'be1', 'index': True, 'devices': ['fence-be1']}]},
     "fencing level {'target': 'be1', 'index': True, 'devices': ['fence-be1']}: target, index (1-9) and devices "
     'are required'),
    ({'fencing_levels': [{'target': 'be1', 'index': 1.0, 'devices': ['fence-be1']}]},
     "fencing level {'target': 'be1', 'index': 1.0, 'devices': ['fence-be1']}: target, index (1-9) and devices "
     'are required'),
    ({'fencing_levels': [{'target': 'be1', 'index': 1, 'devices': 5}]},
     "fencing level {'target': 'be1', 'index': 1, 'devices': 5}: devices must be a list of fence device ids"),
    # text: trailing newlines, not ASCII, empty, NUL and control characters, XML metacharacters in ids and names
    ({'resources': [dict(IP, id='be1\n')]}, f"resource id: 'be1\\n' {ID_HINT}"),
    ({'resources': [dict(IP, id='b\u00e91')]}, f"resource id: 'b\u00e91' {ID_HINT}"),
    ({'resources': [dict(IP, id='a<b')]}, f"resource id: 'a<b' {ID_HINT}"),
    ({'resources': [dict(IP, id='')]}, f"resource id: '' {ID_HINT}"),
    ({'resources': [dict(IP, agent='ocf:heartbeat:IPaddr2\n')]},
     "resource be1-ip: agent 'ocf:heartbeat:IPaddr2\\n' is not CLASS:[PROVIDER:]TYPE, for example "
     'ocf:heartbeat:IPaddr2 or stonith:fence_ipmilan'),
    ({'properties': {"x'y": 1}}, f'properties: "x\'y" {NAME_HINT}'),
    ({'properties': {'': 'x'}}, f"properties: '' {NAME_HINT}"),
    ({'resources': [dict(IP, params={'a b': 1})]}, f"resource be1-ip: params: 'a b' {NAME_HINT}"),
    ({'resources': [dict(IP, params={'ip': '198.51.100.1\x00; reboot'})]},
     f'resource be1-ip: params.ip holds the character U+0000 at position 12, {XML_CHAR}'),
    ({'resources': [dict(IP, params={'ip': '\x1b[31m198.51.100.1'})]},
     f'resource be1-ip: params.ip holds the character U+001B at position 0, {XML_CHAR}'),
    ({'resources': [dict(IP, params={'ip': '198.51.100.1\n'})]},
     f'resource be1-ip: params.ip holds the character U+000A at position 12, {XML_CHAR}'),
    ({'resources': [dict(IP, params={'ip': None})]},
     'resource be1-ip: params.ip has no value (null): give one, or leave the name out'),
    ({'resources': [dict(IP, params={'ip': {'a': 1}})]},
     'resource be1-ip: params.ip is a dict, not text, a number or a boolean'),
    ({'resources': [dict(IP, params={'ip': ''})]},
     'resource be1-ip: params.ip is empty: give a value, or leave the name out for the default'),
    (monitor(**{'x="1" y': 'z'}), f'resource be1-ip: operation monitor: attribute: \'x="1" y\' {NAME_HINT}'),
    (monitor(id='fence-be1'), 'resource be1-ip: operation monitor: id is derived (be1-ip-monitor-interval-10s), '
                              'not given'),
    ({'resources': [dict(IP, operations=[{'name': 'mon itor', 'interval': '10s'}])]},
     f"resource be1-ip: operation name: 'mon itor' {NAME_HINT}"),
    (location(resource=5), f'location c1: resource: 5 {ID_HINT}'),
    (location(node='be1"'), 'location c1: node \'be1"\' is not a node name (letters, digits, _ . -)'),
    (location(scroe=100), 'location c1: unknown key scroe (it takes id, type, resource, node, score)'),
    ({'constraints': [{'id': 'c1', 'type': 'order', 'first': 'old-ip', 'then': 'grp', 'kind': 'Sometimes'}]},
     "order c1: kind 'Sometimes' is not Mandatory, Optional or Serialize"),
    ({'constraints': [{'id': 'c1', 'type': 'order', 'first': 'old-ip', 'then': 'old-ip'}]},
     'order c1: first and then are the same resource (old-ip)'),
    ({'constraints': [{'id': 'c1', 'type': 'order', 'first': 'old-ip', 'then': 'grp', 'score': 5}]},
     'order c1: unknown key score (it takes id, type, first, then, kind)'),
    ({'fencing_levels': [{'target': 5, 'index': 1, 'devices': ['fence-be1']}]},
     'fencing level fl-5-1: target 5 is not a node name (letters, digits, _ . -)'),
    ({'fencing_levels': [{'target': 'be1', 'index': 1, 'devices': ['a,b']}]},
     f"fencing level fl-be1-1: device: 'a,b' {ID_HINT}"),
    ({'fencing_levels': [{'target': 'be1', 'index': 1, 'devices': ['fence-be1', 'fence-be1']}]},
     'fencing level fl-be1-1: a device is listed twice (fence-be1,fence-be1)'),
    ({'fencing_levels': [{'target': 'be1', 'index': 1, 'devices': ['fence-be1'], 'level': 2}]},
     'fencing level fl-be1-1: unknown key level (it takes id, target, index, devices)'),
    # shapes a group member may have that the argument spec does not check
    (member(id='m', agent='ocf:pacemaker:Dummy', params='ip=1'), 'resource m: params must be a mapping, not a str'),
    (member(id='m', agent='ocf:pacemaker:Dummy', operations='monitor'),
     'resource m: operations must be a list of mappings, not a str'),
    (member(id='m', agent='ocf:pacemaker:Dummy', operations=['monitor']),
     'resource m: an operation is a str, not a mapping with name and interval'),
    (member(id='m', agent='ocf:pacemaker:Dummy', param={'x': 1}),
     'resource m: unknown key param (it takes id, agent, params, meta, operations)'),
    ({'resources': [{'id': 'g', 'agent': 'ocf:pacemaker:Dummy', 'resources': [IP]}]},
     'group g: unknown key agent (it takes id, meta, resources)'),
    ({'resources': [IP, {'id': 'be1-ip-instance_attributes', 'agent': 'ocf:pacemaker:Dummy'}]},
     'id be1-ip-instance_attributes is used twice in the desired configuration'),
    # empty
    ({}, NOTHING),
    ({'absent': [], 'properties': {}}, NOTHING),
]


@pytest.mark.parametrize('args, message', REFUSED)
@pytest.mark.parametrize('check', [False, True])
def test_bad_input_is_refused_before_the_first_command(node, capsys, tmp_path, args, message, check):
    result = run_main(args, capsys, tmp_path, check=check)
    assert result['failed'] is True and result['msg'] == message
    assert result.get('changed') is False
    assert node.commands == []


@pytest.mark.parametrize('args, message', [
    (location(resource='nope'), 'location c1: resource nope is neither in the cluster nor in resources'),
    ({'constraints': [{'id': 'c1', 'type': 'colocation', 'first': 'old-ip', 'then': 'grp'}], 'absent': ['old-ip']},
     'colocation c1: first old-ip is neither in the cluster nor in resources'),
    ({'fencing_levels': [{'target': 'be1', 'index': 1, 'devices': ['fence-be2']}]},
     'fencing level fl-be1-1: device fence-be2 is neither in the cluster nor in resources'),
    ({'fencing_levels': [{'target': 'be1', 'index': 1, 'devices': ['old-ip']}]},
     'fencing level fl-be1-1: device old-ip is a primitive of class ocf, not a fence device (a stonith primitive)'),
    ({'absent': ['cib-bootstrap-options']},
     'absent: cib-bootstrap-options is a cluster_property_set in the cluster, not a resource, constraint or fencing '
     'level: it is left alone'),
    ({'absent': ['old-ip-instance_attributes-ip']},
     'absent: old-ip-instance_attributes-ip is a nvpair in the cluster, not a resource, constraint or fencing '
     'level: it is left alone'),
])
@pytest.mark.parametrize('check', [False, True])
def test_what_the_cib_must_hold_is_checked_against_it_before_any_change(
        node, capsys, tmp_path, args, message, check):
    result = run_main(args, capsys, tmp_path, check=check)
    assert result['failed'] is True and result['msg'] == message
    assert node.commands == ['cibadmin --query']


def test_metacharacters_and_non_ascii_in_values_are_written_escaped_and_read_back_unchanged(node, capsys, tmp_path):
    hostile = dict(IP, params={'ip': '<x>&"\'', 'description': 'Z\u00fcrich \u2013 \U0001f600'},
                   operations=[{'name': 'monitor', 'interval': 'PT10S', 'timeout': '20S', 'on-fail': 'Restart'}])
    result = run_main({'resources': [hostile]}, capsys, tmp_path)
    assert result['changed'] is True and node.writes() == 1
    written = node.read().find(".//primitive[@id='be1-ip']")
    assert {p.get('name'): p.get('value') for p in written.iter('nvpair')} == {
        'description': 'Z\u00fcrich \u2013 \U0001f600', 'ip': '<x>&"\''}
    assert written.find('operations/op').attrib == {'id': 'be1-ip-monitor-interval-PT10S', 'name': 'monitor',
                                                    'interval': 'PT10S', 'timeout': '20S', 'on-fail': 'Restart'}
    node.commands.clear()
    again = run_main({'resources': [hostile]}, capsys, tmp_path)
    assert again['changed'] is False and node.commands == ['cibadmin --query']


LAUGHS = ('<?xml version="1.0"?><!DOCTYPE cib [<!ENTITY a "aaaaaaaaaa">'
          + ''.join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
          + ']><cib epoch="1" admin_epoch="0" num_updates="0" dc-uuid="1"><configuration/><x v="&j;"/></cib>')


@pytest.mark.parametrize('answer, message', [
    ('Signon to CIB failed', 'cibadmin --query returned XML that does not parse: syntax error: line 1, column 0'),
    ('', 'cibadmin --query returned XML that does not parse: no element found: line 1, column 0'),
    (LAUGHS, DOCTYPE),
    ('<!DOCTYPE cib [<!ENTITY big "' + 'x' * 100000 + '">]><cib epoch="1"><configuration/>'
     + '<y v="' + '&big;' * 2000 + '"/></cib>', DOCTYPE),
    ('<!DOCTYPE cib [<!ENTITY who "evil">]><cib epoch="7" dc-uuid="1"><configuration><resources>'
     '<primitive id="&who;" class="ocf" provider="x" type="y"/></resources></configuration></cib>', DOCTYPE),
    ('<!DOCTYPE cib [<!ENTITY pw SYSTEM "file:///etc/passwd">]><cib epoch="7"><configuration/><x v="&pw;"/></cib>',
     DOCTYPE),
    ('<!DOCTYPE cib SYSTEM "http://example.org/cib.dtd"><cib epoch="7"><configuration/></cib>', DOCTYPE),
    ('<cib epoch="7" dc-uuid="1"><configuration><resources>' + '<a>' * 100000 + '</a>' * 100000
     + '</resources></configuration></cib>',
     'cibadmin --query returned XML with elements nested more than 128 deep, which a CIB never has: refused'),
    ('<html/>', 'cibadmin --query returned a <html> document, not a <cib>'),
    ('<cib epoch="1" dc-uuid="1"/>', 'cibadmin --query returned a CIB without a configuration section'),
    (CIB.replace('epoch="7"', 'epoch="abc"'), "cibadmin --query returned a CIB whose epoch is 'abc', not a number"),
    (CIB.replace('epoch="7"', 'epoch="\u0667"'),
     "cibadmin --query returned a CIB whose epoch is '\u0667', not a number"),
    (CIB.replace('admin_epoch="0"', 'admin_epoch="-1"'),
     "cibadmin --query returned a CIB whose admin_epoch is '-1', not a number"),
    (CIB.replace('be1', 'be\udcff1'), 'cibadmin --query returned output that is not UTF-8'),
    (CIB + '\0', 'cibadmin --query returned XML that does not parse: not well-formed (invalid token): line 26, '
                 'column 6'),
])
@pytest.mark.parametrize('check', [False, True])
def test_a_hostile_cib_is_refused_unexpanded(node, capsys, tmp_path, answer, message, check):
    node.query = (0, answer, '')
    result = run_main({'resources': [IP]}, capsys, tmp_path, check=check)
    assert result['failed'] is True and result['msg'] == message
    assert node.commands == ['cibadmin --query']


def test_a_cib_larger_than_any_is_refused_before_parsing(node, capsys, tmp_path, monkeypatch):
    node.query = (0, CIB + ' ' * 100, '')
    monkeypatch.setattr(pacemaker, 'MAX_CIB_CHARS', len(CIB) + 99)
    result = run_main({'resources': [IP]}, capsys, tmp_path)
    assert result['msg'] == (f'cibadmin --query returned {len(CIB) + 100} characters, more than the {len(CIB) + 99} '
                             'a CIB may have here')
    assert node.writes() == 0


def test_a_cluster_that_never_answers_with_a_nan_wait_does_not_hang(node, capsys, tmp_path):
    node.query = (102, '', 'Transport endpoint is not connected')
    result = run_main({'wait': NAN, 'resources': [IP]}, capsys, tmp_path)
    assert result['msg'] == 'wait nan is not a number of seconds from 0 to 3600' and node.commands == []
    # a finite wait (text is a number too) gives up at its deadline
    result = run_main({'wait': '1', 'resources': [IP]}, capsys, tmp_path)
    assert result['msg'] == ("the cluster's CIB is not reachable on this node (cibadmin --query, exit status 102: "
                             'Transport endpoint is not connected): is the cluster running here?')
    assert node.commands == ['cibadmin --query', 'cibadmin --query']


def test_a_lone_surrogate_is_refused_without_repeating_the_value():
    # through Ansible, module arguments that are not UTF-8 may be refused before the module runs
    with pytest.raises(pacemaker.CibError) as caught:
        pacemaker.Desired({'resources': [dict(IP, params={'password': 's3cr3t\ud800'})]})
    assert str(caught.value) == f'resource be1-ip: params.password holds the character U+D800 at position 6, {XML_CHAR}'


def test_a_replace_that_timed_out_but_went_through_is_a_success_with_a_warning(node, capsys, tmp_path, monkeypatch):
    warned = []
    monkeypatch.setattr(basic.AnsibleModule, 'warn', lambda self, warning: warned.append(warning))
    node.replace = (124, '', 'Call cib_replace failed (-62): Timer expired\n')
    result = run_main({'resources': [IP]}, capsys, tmp_path)
    assert not result.get('failed') and result['changed'] is True and result['epoch'] == '0.8.3'
    assert warned == [
        'cibadmin --replace failed (exit status 124) (Call cib_replace failed (-62): Timer expired), but the CIB '
        'holds the new configuration']
    assert node.commands == ['cibadmin --query', 'cibadmin --query', 'crm_verify --verbose', 'cibadmin --replace',
                             'cibadmin --query', 'cibadmin --query']


def test_a_replace_that_failed_says_whether_anything_changed(node, capsys, tmp_path):
    node.replace, node.replace_applies = (124, '', 'Call cib_replace failed (-62): Timer expired'), False
    result = run_main({'resources': [IP]}, capsys, tmp_path)
    assert result['failed'] and result['changed'] is False and result['msg'] == (
        'cibadmin --replace failed (exit status 124), nothing was changed: Call cib_replace failed (-62): '
        'Timer expired')


def test_a_replace_that_failed_while_the_cib_changed_otherwise_reports_changed(node, capsys, tmp_path):
    node.replace, node.replace_applies = (124, '', 'Timer expired'), False
    theirs = ET.fromstring(CIB).find('configuration')
    theirs.find('resources').append(ET.Element('primitive', {'id': 'theirs', 'class': 'ocf', 'type': 'Dummy',
                                                             'provider': 'pacemaker'}))
    node.on_replace = lambda fake: fake.install(copy.deepcopy(theirs))     # another writer got there
    result = run_main({'resources': [IP]}, capsys, tmp_path)
    assert result['failed'] and result['changed'] is True and result['msg'] == (
        'cibadmin --replace failed (exit status 124): Timer expired; the CIB changed meanwhile (epoch 0.7 to 0.8), '
        'by this run or another writer: run again to see what is left')


def test_a_replace_whose_outcome_cannot_be_read_back_says_so(node, capsys, tmp_path):
    node.replace, node.replace_applies = (124, '', 'Timer expired'), False
    node.query_after_replace = (107, '', 'Transport endpoint is not connected')
    result = run_main({'resources': [IP]}, capsys, tmp_path)
    assert result['failed'] and result['changed'] is False and result['msg'] == (
        "cibadmin --replace failed (exit status 124): Timer expired; whether the change was made is unknown, the "
        "CIB cannot be read back (the cluster's CIB is not reachable on this node (cibadmin --query, exit status "
        '107: Transport endpoint is not connected): is the cluster running here?): run again')


@pytest.mark.parametrize('make', [
    lambda p: str(p / 'missing'),
    lambda p: (p / 'file').write_text('x') and str(p / 'file'),
])
def test_a_temporary_directory_that_cannot_be_used_fails_before_any_change(node, capsys, tmp_path, make):
    args = {'resources': [IP], '_ansible_tmpdir': make(tmp_path)}
    with deadline(), patch_module_args(dict(args, _ansible_check_mode=False, _ansible_diff=False)):
        with pytest.raises(SystemExit):
            pacemaker_cib.main()
    result = json.loads(capsys.readouterr().out)
    assert result['failed'] and result['changed'] is False
    assert result['msg'].startswith('the new configuration cannot be written to a temporary file (')
    assert result['msg'].endswith('), nothing was changed')
    assert node.writes() == 0 and 'crm_verify --verbose' not in node.commands


def test_verify_without_a_message_still_says_why(node, capsys, tmp_path):
    node.verify = (1, '', '')
    result = run_main({'resources': [IP]}, capsys, tmp_path)
    assert result['msg'] == ('the new configuration does not verify, nothing was changed: crm_verify exit status 1 '
                             'without a message')
    assert node.writes() == 0


def test_a_cluster_that_does_not_settle_after_the_stop_reports_changed(node, capsys, tmp_path):
    node.settle = (124, '', 'Timed out waiting for the cluster')
    result = run_main({'absent': ['old-ip']}, capsys, tmp_path)
    assert result['failed'] is True and result['changed'] is True and result['msg'] == (
        'old-ip: stopped in the configuration, but the cluster did not settle (crm_resource --wait, exit status 124: '
        'Timed out waiting for the cluster); not deleted yet: run again to finish')
    assert node.target_role('old-ip') == ('old-ip-target-role-removing', 'Stopped')
    # the next run finishes: no second stop, the wait, the delete
    node.settle, node.commands = (0, '', ''), []
    again = run_main({'absent': ['old-ip']}, capsys, tmp_path)
    assert again['changed'] is True and again['changes'] == [{'object': 'old-ip', 'action': 'remove',
                                                              'kind': 'primitive'}]
    assert node.commands == ['cibadmin --query', 'cibadmin --query', 'crm_resource --wait', 'cibadmin --query',
                             'crm_verify --verbose', 'cibadmin --replace', 'cibadmin --query']
    assert node.read().find(".//*[@id='old-ip']") is None


@pytest.mark.parametrize('args, stopped, gone', [
    ({'absent': ['old-ip']}, 'old-ip', 'old-ip'),
    ({'absent': ['cl']}, 'cl', 'cl-p'),
    ({'resources': [{'id': 'grp', 'resources': [{'id': 'grp-a', 'agent': 'ocf:pacemaker:Dummy'}]}]}, 'grp-b', 'grp-b'),
])
def test_a_resource_that_leaves_is_stopped_first_whatever_the_way(node, capsys, tmp_path, args, stopped, gone):
    check = run_main(args, capsys, tmp_path, check=True)
    assert check['changes'][-1]['object'] == stopped and check['changes'][-1]['action'] == 'remove'
    assert node.commands == ['cibadmin --query']
    result = run_main(args, capsys, tmp_path)
    assert result['changed'] is True and result['changes'] == check['changes']
    assert node.commands.index('crm_resource --wait') > node.commands.index('cibadmin --replace')
    first, second = node.replaced
    role = first.find(f".//*[@id='{stopped}']/meta_attributes/nvpair[@name='target-role']")
    assert (role.get('id'), role.get('value')) == (f'{stopped}-target-role-removing', 'Stopped')
    assert second.find(f".//*[@id='{gone}']") is None and node.read().find(f".//*[@id='{gone}']") is None


def run_killed(node, args, tmp_path, at):
    """main() in a forked child that the fake node SIGKILLs just before command `at`."""
    node.kill_at = at
    pid = os.fork()
    if pid == 0:    # pragma: no cover - the child
        try:
            with open(os.devnull, 'w', encoding='utf-8') as sink, contextlib.redirect_stdout(sink):
                with patch_module_args(dict(args, _ansible_check_mode=False, _ansible_diff=False,
                                            _ansible_tmpdir=str(tmp_path))):
                    pacemaker_cib.main()
        finally:
            os._exit(3)
    dummy, status = os.waitpid(pid, 0)
    node.kill_at = None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize('at, stopped', [('cibadmin --replace', None), ('crm_resource --wait', 'Stopped')])
def test_a_run_killed_between_stop_and_delete_is_finished_by_the_next(node, capsys, tmp_path, at, stopped):
    run_killed(node, {'absent': ['old-ip']}, tmp_path, at)
    assert node.read().find(".//primitive[@id='old-ip']") is not None
    assert (node.target_role('old-ip') or (None, None))[1] == stopped
    node.commands.clear()
    result = run_main({'absent': ['old-ip']}, capsys, tmp_path)
    assert result['changed'] is True and node.read().find(".//*[@id='old-ip']") is None
    assert node.writes() == (1 if stopped else 2)
    # what SIGKILL left is in the module's own temporary directory (Ansible removes it), and in the way of nothing
    assert {name for name in os.listdir(tmp_path) if name != 'cib.xml'} <= {
        name for name in os.listdir(tmp_path) if name.startswith('cyrus-ha-cib-')}


def test_a_run_killed_between_stop_and_delete_is_undone_by_one_that_wants_the_resource(node, capsys, tmp_path):
    run_killed(node, {'absent': ['old-ip']}, tmp_path, 'crm_resource --wait')
    assert node.target_role('old-ip') == ('old-ip-target-role-removing', 'Stopped')
    result = run_main({'resources': [OLD_IP]}, capsys, tmp_path)
    assert result['changed'] is True and result['changes'] == [{'object': 'old-ip', 'action': 'update',
                                                                'section': 'resources'}]
    assert node.target_role('old-ip') is None
    assert run_main({'resources': [OLD_IP]}, capsys, tmp_path)['changed'] is False


def test_an_operator_stop_is_not_mistaken_for_an_interrupted_removal(node, capsys, tmp_path):
    cib = node.read()
    prim = cib.find(".//primitive[@id='old-ip']")
    metas = ET.SubElement(prim, 'meta_attributes', {'id': 'old-ip-meta_attributes'})
    ET.SubElement(metas, 'nvpair', {'id': 'old-ip-meta_attributes-target-role', 'name': 'target-role',
                                    'value': 'Stopped'})
    node.write(cib)
    result = run_main({'resources': [OLD_IP]}, capsys, tmp_path)
    assert result['changed'] is False
    assert node.target_role('old-ip') == ('old-ip-meta_attributes-target-role', 'Stopped')


def test_check_mode_predicts_and_changes_nothing(node, capsys, tmp_path):
    before = node.read()
    result = run_main({'resources': [IP], 'absent': ['old-ip']}, capsys, tmp_path, check=True, diff=True)
    assert result['changed'] is True and result['changes'] == [
        {'object': 'be1-ip', 'action': 'create', 'section': 'resources'},
        {'object': 'old-ip', 'action': 'remove', 'kind': 'primitive'}]
    assert node.commands == ['cibadmin --query']
    assert ET.tostring(node.read()) == ET.tostring(before) and sorted(os.listdir(tmp_path)) == ['cib.xml']


@pytest.mark.parametrize('kind, value', [
    ('score', 'INFINITY'), ('score', '+INFINITY'), ('score', '-INFINITY'), ('score', 0), ('score', -1000000),
    ('score', '1000000'), ('score', '+100'), ('count', 0), ('count', 'INFINITY'), ('count', '3'),
    ('boolean', True), ('boolean', 'yes'), ('boolean', 'True'), ('boolean', 'off'), ('boolean', 0),
    ('timeout', '20s'), ('timeout', '500ms'), ('timeout', '1min'), ('timeout', '2H'), ('timeout', 60), ('timeout', '0'),
    ('timeout', '2147483647ms'), ('interval', 'PT20S'), ('interval', 'P1DT2H'), ('interval', 'P49D'),
    ('interval', '4294967295ms'), ('interval', '10'), (('Stopped', 'Started'), 'started'),
])
def test_values_pacemaker_takes_are_accepted(kind, value):
    assert pacemaker.typed_value('x', value, kind) == ('true' if value is True else str(value))


@pytest.mark.parametrize('kind, value', [
    ('score', '1000001'), ('count', '-1'), ('count', True), ('boolean', 2), ('timeout', '2147483648ms'),
    ('interval', '4294967296ms'), ('interval', 'P'), ('interval', 'PT'), ('interval', 'PT1H2'), ('timeout', '10 s'),
    ('timeout', '10\u017f'), ('timeout', '10S\n'), ('score', '100\n'),
])
def test_values_beyond_or_beside_what_pacemaker_takes_are_refused(kind, value):
    with pytest.raises(pacemaker.CibError) as caught:
        pacemaker.typed_value('x', value, kind)
    assert str(caught.value).startswith(f'x {value!r} is ')


@pytest.mark.parametrize('args', [
    {'resources': [{'id': 'grp-b', 'agent': 'ocf:pacemaker:Dummy'},
                   {'id': 'grp', 'resources': [{'id': 'grp-a', 'agent': 'ocf:pacemaker:Dummy'}]}]},
    {'resources': [{'id': 'grp-b', 'agent': 'ocf:pacemaker:Dummy'}], 'absent': ['grp']},
])
def test_a_resource_wanted_on_its_own_is_not_lost_with_its_group(node, capsys, tmp_path, args):
    result = run_main(args, capsys, tmp_path)
    assert result['failed'] and result['msg'] == (
        'grp-b: the data wants it as a resource of its own, but in the cluster it is in the group grp, which this '
        'run replaces or removes: take it out of grp first, or choose another id')
    assert node.commands == ['cibadmin --query']


def test_the_diff_masks_secret_parameters_of_fence_devices():
    """--diff prints the managed objects: a fence device's password or SNMP community never shows."""
    elem = ET.fromstring('<primitive id="fence-be1" class="stonith" type="fence_ipmilan">'
                         '<instance_attributes id="fence-be1-ia">'
                         '<nvpair id="a" name="password" value="s3cr&quot;et"/><nvpair id="b" name="passwd" value="x"/>'
                         '<nvpair id="c" name="community" value="public2"/><nvpair id="d" name="ip" value="198.51.100.9"/>'
                         '</instance_attributes></primitive>')
    text = pacemaker.pretty(elem)
    assert 's3cr' not in text and 'public2' not in text and 'value="x"' not in text
    assert text.count('value="********"') == 3 and 'value="198.51.100.9"' in text
    assert elem.find('.//nvpair[@name="password"]').get('value') == 's3cr"et'   # the CIB itself is untouched
