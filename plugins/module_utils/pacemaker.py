# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pacemaker's CIB as desired state: build configuration objects from plain data, compare them
with the running cluster's, and replace the configuration section once, validated first.

Python 3.9+, standard library only (it runs on a cluster node). The object ids and the ids of
their nvpairs and operations are derived from the data, so the same data always gives the same
XML and a second run finds nothing to change.
"""

from __future__ import annotations

import copy
import math
import os
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from xml.parsers import expat

from ansible_collections.cyrus.ha.plugins.module_utils import testhook

# Patterns are matched whole (fullmatch: "$" would let a trailing newline through) and ASCII only.
ID_RE = re.compile(r'[A-Za-z_][A-Za-z0-9_.-]*')
ID_HINT = 'is not a valid XML id (a letter or _, then letters, digits, _ . -)'
# The names of nvpairs and of operation attributes: they become part of ids and XML attribute names.
NAME_RE = re.compile(r'[A-Za-z_][A-Za-z0-9_.-]*')
NAME_HINT = 'is not a valid name (a letter or _, then letters, digits, _ . -)'
NODE_RE = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}')
AGENT_RE = re.compile(r'(?:(ocf):([A-Za-z0-9_.-]+)|(stonith|systemd|lsb|service)):([A-Za-z0-9_.@-]+)')
# What XML 1.0 cannot carry (C0 controls, surrogates, U+FFFE/U+FFFF), and tab and newlines, which an
# attribute value does not keep as they are.
BAD_CHAR_RE = re.compile('[\x00-\x1f\ud800-\udfff\ufffe\uffff]')
# Pacemaker's numbers: a score is clipped at +-1000000 (INFINITY); an operation's interval is an unsigned
# 32-bit number of ms, its timeout a signed one; a duration is digits and a unit (crm_get_msec), an
# interval may also be ISO 8601 (P1DT2H, PT20S).
SCORE_MAX = 1000000
SCORE_RE = re.compile(r'[+-]?(?:INFINITY|[0-9]{1,7})')
TIMEOUT_MAX_MS = 2 ** 31 - 1
INTERVAL_MAX_MS = 2 ** 32 - 1
TIME_RE = re.compile(r'([0-9]{1,15})(ms|msec|us|usec|s|sec|m|min|h|hr)?', re.ASCII | re.IGNORECASE)
UNIT_MS = {'': 1000, 'ms': 1, 'msec': 1, 'us': 0.001, 'usec': 0.001, 's': 1000, 'sec': 1000, 'm': 60000,
           'min': 60000, 'h': 3600000, 'hr': 3600000}
ISO_RE = re.compile(r'P(?=[0-9T])(?:([0-9]{1,9})Y)?(?:([0-9]{1,9})M)?(?:([0-9]{1,9})W)?(?:([0-9]{1,9})D)?'
                    r'(?:T(?=[0-9])(?:([0-9]{1,9})H)?(?:([0-9]{1,9})M)?(?:([0-9]{1,9})S)?)?', re.ASCII)
ISO_MS = (365 * 86400000, 30 * 86400000, 7 * 86400000, 86400000, 3600000, 60000, 1000)
BOOLEAN_WORDS = ('true', 'false', 'yes', 'no', 'on', 'off', 'y', 'n', '1', '0')
# How Pacemaker reads some well-known nvpairs (properties, resource defaults, meta attributes) and
# operation attributes; other names are the agent's and only need to be XML text.
NVPAIR_KINDS = {
    'resource-stickiness': 'score', 'priority': 'score', 'migration-threshold': 'count',
    'failure-timeout': 'interval', 'cluster-recheck-interval': 'interval',
    'stonith-timeout': 'timeout', 'dc-deadtime': 'timeout', 'shutdown-escalation': 'timeout',
    'priority-fencing-delay': 'timeout',
    **{name: 'boolean' for name in (
        'stonith-enabled', 'symmetric-cluster', 'maintenance-mode', 'stop-all-resources', 'start-failure-is-fatal',
        'enable-startup-probes', 'concurrent-fencing', 'startup-fencing', 'is-managed', 'maintenance',
        'allow-migrate', 'globally-unique', 'notify', 'interleave', 'ordered', 'critical')},
    'target-role': ('Stopped', 'Started', 'Promoted', 'Unpromoted', 'Slave', 'Master'),
    'no-quorum-policy': ('stop', 'freeze', 'ignore', 'demote', 'suicide'),
}
OP_KINDS = {
    'interval': 'interval', 'timeout': 'timeout', 'start-delay': 'timeout', 'enabled': 'boolean',
    'record-pending': 'boolean',
    'on-fail': ('ignore', 'block', 'demote', 'stop', 'restart', 'standby', 'fence', 'restart-container'),
    'role': ('Stopped', 'Started', 'Promoted', 'Unpromoted', 'Slave', 'Master'),
}
ORDER_KINDS = ('Mandatory', 'Optional', 'Serialize')
PRIMITIVE_KEYS = ('id', 'agent', 'params', 'meta', 'operations')
GROUP_KEYS = ('id', 'meta', 'resources')
CONSTRAINT_KEYS = {'location': ('id', 'type', 'resource', 'node', 'score'),
                   'order': ('id', 'type', 'first', 'then', 'kind'),
                   'colocation': ('id', 'type', 'first', 'then', 'score')}
FENCING_LEVEL_KEYS = ('id', 'target', 'index', 'devices')
# Seconds the module may wait for the cluster (wait), and what it reads from cibadmin.
WAIT_MAX = 3600
MAX_CIB_CHARS = 64 * 1024 * 1024
MAX_CIB_DEPTH = 128
# Where each kind of object lives in <configuration>.
SECTIONS = ('crm_config', 'nodes', 'resources', 'constraints', 'fencing-topology', 'rsc_defaults', 'op_defaults')
PROPERTY_SET = 'cib-bootstrap-options'
RSC_DEFAULTS_SET = 'rsc-options'
# The Pacemaker tools run here (cibadmin, crm_verify and crm_resource come in one package): a module
# looks each up before it starts, so a node without them fails before anything changes.
TOOLS = ('cibadmin', 'crm_verify', 'crm_resource')


class CibError(Exception):
    """The desired configuration is invalid or the cluster refused it; the message says which and why.
    `changed` is true when the cluster's configuration was changed before the failure."""

    def __init__(self, msg: str, changed: bool = False):
        super().__init__(msg)
        self.changed = changed


def check_id(value, what: str) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise CibError(f'{what}: {value!r} {ID_HINT}')
    return value


def check_name(name, what: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise CibError(f'{what}: {name!r} {NAME_HINT}')
    return name


def _only(spec: dict, allowed: tuple, what: str) -> None:
    unknown = sorted(str(key) for key in spec if key not in allowed)
    if unknown:
        raise CibError(f'{what}: unknown {"key" if len(unknown) == 1 else "keys"} {", ".join(unknown)} '
                       f'(it takes {", ".join(allowed)})')


def _mapping(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CibError(f'{what} must be a mapping, not a {type(value).__name__}')
    return value


def duration_ms(text: str, iso: bool = False) -> float | None:
    """Milliseconds of a Pacemaker duration (digits and an optional unit; ISO 8601 too when iso), or None."""
    match = TIME_RE.fullmatch(text)
    if match:
        return int(match.group(1)) * UNIT_MS[(match.group(2) or '').lower()]
    match = ISO_RE.fullmatch(text) if iso else None
    if match:
        return sum(int(part or 0) * unit for part, unit in zip(match.groups(), ISO_MS))
    return None


def text_value(label: str, value) -> str:
    """Any nvpair or attribute value as XML text; the message never repeats the value (it may be a secret)."""
    if value is None:
        raise CibError(f'{label} has no value (null): give one, or leave the name out')
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        if abs(value) >= 2 ** 63:
            raise CibError(f'{label} is beyond a 64-bit integer')
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CibError(f'{label} is not a finite number')
        return str(value)
    if not isinstance(value, str):
        raise CibError(f'{label} is a {type(value).__name__}, not text, a number or a boolean')
    if value == '':
        raise CibError(f'{label} is empty: give a value, or leave the name out for the default')
    bad = BAD_CHAR_RE.search(value)
    if bad:
        raise CibError(f'{label} holds the character U+{ord(bad.group()):04X} at position {bad.start()}, '
                       'which an XML attribute cannot carry')
    return value


def typed_value(label: str, value, kind) -> str:
    """A value as Pacemaker reads a score, count, boolean, duration or choice; anything else as text_value."""
    if kind is None:
        return text_value(label, value)
    number = isinstance(value, int) and not isinstance(value, bool)
    if kind == 'score':
        if number or (isinstance(value, str) and SCORE_RE.fullmatch(value)):
            if 'INFINITY' in str(value) or abs(int(value)) <= SCORE_MAX:
                return str(value)
            raise CibError(f'{label} {value!r} is beyond the scores Pacemaker knows (-1000000 to 1000000): '
                           'write INFINITY or -INFINITY')
        raise CibError(f'{label} {value!r} is not a score (an integer from -1000000 to 1000000, INFINITY or -INFINITY)')
    if kind == 'count':
        if (number and 0 <= value <= SCORE_MAX) or value in ('INFINITY', '+INFINITY') or (
                isinstance(value, str) and re.fullmatch('[0-9]{1,7}', value) and int(value) <= SCORE_MAX):
            return str(value)
        raise CibError(f'{label} {value!r} is not a count (an integer from 0 to 1000000, or INFINITY)')
    if kind == 'boolean':
        if isinstance(value, bool):
            return 'true' if value else 'false'
        if (number and value in (0, 1)) or (isinstance(value, str) and value.lower() in BOOLEAN_WORDS):
            return str(value)
        raise CibError(f'{label} {value!r} is not a boolean (true or false)')
    if kind in ('interval', 'timeout'):
        iso, limit = kind == 'interval', INTERVAL_MAX_MS if kind == 'interval' else TIMEOUT_MAX_MS
        if number:
            millis = value * 1000 if value >= 0 else None
        else:
            millis = duration_ms(value, iso) if isinstance(value, str) else None
        if millis is None:
            raise CibError(f'{label} {value!r} is not a duration (a whole number and a unit ms, s, min or h, such as '
                           f'20s{", or ISO 8601 such as PT20S" if iso else ""})')
        if millis > limit:
            raise CibError(f'{label} {value!r} is beyond the {limit} ms (about {limit // 86400000} days) '
                           'Pacemaker can take')
        return str(value)
    if isinstance(value, str) and value.lower() in (choice.lower() for choice in kind):
        return value
    raise CibError(f'{label} {value!r} is not one of {", ".join(kind)}')


def nvpairs(what: str, pairs, kinds: dict | None = None) -> dict:
    """{name: text} of a mapping of nvpairs, each name and value checked; `what` names it in messages."""
    out = {}
    for name, value in _mapping(pairs, what).items():
        check_name(name, what)
        out[name] = typed_value(f'{what}.{name}', value, (kinds or {}).get(name))
    return out


def nvset(tag: str, set_id: str, pairs: dict) -> ET.Element:
    """An nvpair set of already checked {name: text}."""
    elem = ET.Element(tag, {'id': set_id})
    for name in sorted(pairs):
        ET.SubElement(elem, 'nvpair', {'id': f'{set_id}-{name}', 'name': name, 'value': pairs[name]})
    return elem


def operation(rid: str, op, seen: dict) -> ET.Element:
    """One <op> of resource rid; seen maps (name, interval in ms) to the interval as given, for duplicates."""
    if not isinstance(op, dict):
        raise CibError(f'resource {rid}: an operation is a {type(op).__name__}, not a mapping with name and interval')
    if not op.get('name'):
        raise CibError(f'resource {rid}: an operation has no name')
    name = check_name(op['name'], f'resource {rid}: operation name')
    where = f'resource {rid}: operation {name}'
    interval = typed_value(f'{where}: interval', op.get('interval', '0s'), 'interval')
    millis = duration_ms(interval, iso=True)
    if (name, millis) in seen:
        raise CibError(f'resource {rid}: two {name} operations with the same interval '
                       f'({seen[(name, millis)]} and {interval})')
    seen[(name, millis)] = interval
    oid = f'{rid}-{name}-interval-{interval}'
    attrs = {'id': oid, 'name': name, 'interval': interval}
    for key, value in op.items():
        if key in ('name', 'interval'):
            continue
        check_name(key, f'{where}: attribute')
        if key == 'id':
            raise CibError(f'{where}: id is derived ({oid}), not given')
        attrs[key] = typed_value(f'{where}: {key}', value, OP_KINDS.get(key))
    return ET.Element('op', attrs)


def primitive(spec: dict) -> ET.Element:
    if not isinstance(spec, dict):
        raise CibError(f'a resource is a {type(spec).__name__}, not a mapping with id and agent')
    rid = check_id(spec.get('id'), 'resource id')
    _only(spec, PRIMITIVE_KEYS, f'resource {rid}')
    agent = spec.get('agent')
    match = AGENT_RE.fullmatch(agent) if isinstance(agent, str) else None
    if not match:
        raise CibError(f'resource {rid}: agent {agent!r} is not CLASS:[PROVIDER:]TYPE, '
                       'for example ocf:heartbeat:IPaddr2 or stonith:fence_ipmilan')
    ocf, provider, other, rtype = match.groups()
    attrs = {'id': rid, 'class': ocf or other, 'type': rtype}
    if provider:
        attrs['provider'] = provider
    elem = ET.Element('primitive', attrs)
    params = nvpairs(f'resource {rid}: params', spec.get('params'))
    meta = nvpairs(f'resource {rid}: meta', spec.get('meta'), NVPAIR_KINDS)
    operations = spec.get('operations') or []
    if not isinstance(operations, list):
        raise CibError(f'resource {rid}: operations must be a list of mappings, not a {type(operations).__name__}')
    if params:
        elem.append(nvset('instance_attributes', f'{rid}-instance_attributes', params))
    if meta:
        elem.append(nvset('meta_attributes', f'{rid}-meta_attributes', meta))
    if operations:
        ops = ET.SubElement(elem, 'operations')
        seen: dict = {}
        for op in operations:
            ops.append(operation(rid, op, seen))
    return elem


def resource(spec: dict) -> ET.Element:
    """A primitive, or a group when the spec has `resources` (its members, started in order)."""
    if not isinstance(spec, dict) or 'resources' not in spec:
        return primitive(spec)
    gid = check_id(spec.get('id'), 'group id')
    _only(spec, GROUP_KEYS, f'group {gid}')
    members = spec['resources']
    if not members:
        raise CibError(f'group {gid}: it has no resources')
    if not isinstance(members, list):
        raise CibError(f'group {gid}: resources must be a list of primitives, not a {type(members).__name__}')
    elem = ET.Element('group', {'id': gid})
    meta = nvpairs(f'group {gid}: meta', spec.get('meta'), NVPAIR_KINDS)
    if meta:
        elem.append(nvset('meta_attributes', f'{gid}-meta_attributes', meta))
    for member in members:
        if not isinstance(member, dict):
            raise CibError(f'group {gid}: a member is a {type(member).__name__}, not a mapping with id and agent')
        if 'resources' in member:
            raise CibError(f'group {gid}: a group cannot hold the group {member.get("id")}')
        elem.append(primitive(member))
    return elem


def _node(value, what: str) -> str:
    if not isinstance(value, str) or not NODE_RE.fullmatch(value):
        raise CibError(f'{what} {value!r} is not a node name (letters, digits, _ . -)')
    return value


def constraint(spec: dict) -> ET.Element:
    if not isinstance(spec, dict):
        raise CibError(f'a constraint is a {type(spec).__name__}, not a mapping with id and type')
    cid = check_id(spec.get('id'), 'constraint id')
    kind = spec.get('type', 'location')
    if kind not in CONSTRAINT_KEYS:
        raise CibError(f'constraint {cid}: type {kind!r} is not location, order or colocation')
    _only(spec, CONSTRAINT_KEYS[kind], f'{kind} {cid}')
    if kind == 'location':
        for key in ('resource', 'node'):
            if not spec.get(key):
                raise CibError(f'location {cid}: {key} is missing')
        return ET.Element('rsc_location', {
            'id': cid, 'rsc': check_id(spec['resource'], f'location {cid}: resource'),
            'node': _node(spec['node'], f'location {cid}: node'),
            'score': typed_value(f'location {cid}: score', spec.get('score', 'INFINITY'), 'score')})
    first, then = spec.get('first'), spec.get('then')
    if not first or not then:
        raise CibError(f'{kind} {cid}: first and then are required')
    check_id(first, f'{kind} {cid}: first')
    check_id(then, f'{kind} {cid}: then')
    if first == then:
        raise CibError(f'{kind} {cid}: first and then are the same resource ({first})')
    if kind == 'order':
        order_kind = spec.get('kind', 'Mandatory')
        if order_kind not in ORDER_KINDS:
            raise CibError(f'order {cid}: kind {order_kind!r} is not Mandatory, Optional or Serialize')
        return ET.Element('rsc_order', {'id': cid, 'first': first, 'then': then, 'kind': order_kind})
    return ET.Element('rsc_colocation', {'id': cid, 'rsc': then, 'with-rsc': first,
                                         'score': typed_value(f'colocation {cid}: score',
                                                              spec.get('score', 'INFINITY'), 'score')})


def fencing_level(spec: dict) -> ET.Element:
    if not isinstance(spec, dict):
        raise CibError(f'a fencing level is a {type(spec).__name__}, not a mapping with target, index and devices')
    target, index, devices = spec.get('target'), spec.get('index'), spec.get('devices') or []
    if not isinstance(devices, (list, tuple)) or not all(isinstance(d, str) and d for d in devices):
        raise CibError(f'fencing level {spec!r}: devices must be a list of fence device ids')
    if not target or isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= 9 or not devices:
        raise CibError(f'fencing level {spec!r}: target, index (1-9) and devices are required')
    lid = check_id(spec.get('id') or f'fl-{target}-{index}', 'fencing level id')
    _only(spec, FENCING_LEVEL_KEYS, f'fencing level {lid}')
    _node(target, f'fencing level {lid}: target')
    for device in devices:
        check_id(device, f'fencing level {lid}: device')
    if len(set(devices)) != len(devices):
        raise CibError(f'fencing level {lid}: a device is listed twice ({",".join(devices)})')
    return ET.Element('fencing-level', {'id': lid, 'target': target, 'index': str(index), 'devices': ','.join(devices)})


def check_wait(value) -> float:
    """The seconds to wait for the cluster: a number from 0 to WAIT_MAX (not a boolean, not NaN)."""
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(r'[0-9]{1,9}(?:\.[0-9]{0,9})?', value):
        seconds = float(value)
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds <= WAIT_MAX:
        raise CibError(f'wait {value!r} is not a number of seconds from 0 to {WAIT_MAX}')
    return seconds


def canon(elem: ET.Element):
    """A comparable form: tag, attributes, children in order; whitespace and comments ignored."""
    return (elem.tag, tuple(sorted(elem.attrib.items())),
            tuple(canon(child) for child in elem if isinstance(child.tag, str)))


# Meta attributes an operator toggles at run time (crm_resource --meta, pcs resource disable/unmanage):
# a resource's desired configuration that does not set them leaves them as the cluster has them, so
# that a routine run never restarts what an operator stopped for maintenance.
OPERATOR_META = ('target-role', 'is-managed', 'maintenance')
OWNERS = ('primitive', 'group', 'clone', 'master', 'bundle')
# What `absent` may name: resources, constraints and fencing levels, never a part of one (an nvpair, an
# operation, a property set) nor a node.
REMOVABLE = OWNERS + ('rsc_location', 'rsc_order', 'rsc_colocation', 'rsc_ticket', 'fencing-level')
# The resources a desired constraint or fencing level names: (key in the data, XML attribute).
REFERENCES = {'rsc_location': (('resource', 'rsc'),), 'rsc_order': (('first', 'first'), ('then', 'then')),
              'rsc_colocation': (('first', 'with-rsc'), ('then', 'rsc'))}
KIND_NAMES = {'rsc_location': 'location', 'rsc_order': 'order', 'rsc_colocation': 'colocation',
              'fencing-level': 'fencing level'}


def removal_stop_id(oid: str) -> str:
    """The id of the target-role=Stopped nvpair this module writes before it deletes resource oid. Found on
    a resource the data still wants (the run that was deleting it was killed, the data changed since), it
    is this module's and not an operator's: the next run removes it and the resource starts again."""
    return f'{oid}-target-role-removing'


def _is_operator_toggle(node: ET.Element, pair: ET.Element, keep: dict) -> bool:
    return (pair.get('name') in OPERATOR_META and pair.get('name') not in keep.get(node.get('id'), set())
            and pair.get('id') != removal_stop_id(node.get('id')))


def _meta_names(elem: ET.Element) -> dict:
    """{resource id: names of the meta attributes it sets} for elem and the resources inside it."""
    return {node.get('id'): {p.get('name') for metas in node.findall('meta_attributes') for p in metas}
            for node in elem.iter() if node.tag in OWNERS}


def without_toggles(elem: ET.Element, keep: dict) -> ET.Element:
    """A copy of elem without the operator toggles that `keep` (from _meta_names of the desired
    resource) does not set; meta_attributes left empty go too."""
    elem = copy.deepcopy(elem)
    for node in elem.iter():
        if node.tag not in OWNERS:
            continue
        for metas in node.findall('meta_attributes'):
            for pair in list(metas):
                if _is_operator_toggle(node, pair, keep):
                    metas.remove(pair)
            if not len(metas):
                node.remove(metas)
    return elem


def with_toggles(wanted: ET.Element, current: ET.Element, keep: dict) -> ET.Element:
    """A copy of the desired resource carrying the current one's operator toggles it does not set."""
    wanted = copy.deepcopy(wanted)
    nodes = {node.get('id'): node for node in wanted.iter() if node.tag in OWNERS}
    for node in current.iter():
        target = nodes.get(node.get('id')) if node.tag in OWNERS else None
        if target is None:
            continue
        for metas in node.findall('meta_attributes'):
            for pair in metas:
                if _is_operator_toggle(node, pair, keep):
                    holder = target.find('meta_attributes')
                    if holder is None:
                        holder = ET.Element('meta_attributes', {'id': metas.get('id')})
                        first_child = next((i for i, c in enumerate(target) if c.tag in OWNERS), len(target))
                        target.insert(first_child, holder)
                    holder.append(copy.deepcopy(pair))
    return wanted


# The step boundaries of testhook.kill_point (CYRUS_HA_TEST_KILL_AT) in a removal: the stop written, the
# cluster settled. The next run with the same data deletes; one that wants the resource again starts it.
KILL_POINTS = ('stopped', 'settled')

# nvpairs whose value is a secret (fence agents' password and passwd, SNMP community, tokens): masked in
# the diff, which Ansible prints with --diff.
SECRET_NAME = re.compile(r'(pass(wd|word)?|secret|token|community)', re.IGNORECASE)
MASK = '********'


def pretty(elem: ET.Element) -> str:
    """The element as indented XML for the diff, with secret nvpair values masked."""
    elem = copy.deepcopy(elem)
    for pair in elem.iter('nvpair'):
        if SECRET_NAME.search(pair.get('name', '')) and pair.get('value') is not None:
            pair.set('value', MASK)
    ET.indent(elem)
    return ET.tostring(elem, encoding='unicode')


class Desired:
    """Everything one run manages, built and checked before the cluster is touched."""

    def __init__(self, params: dict):
        self.wait = check_wait(params.get('wait', 0))
        self.properties = nvpairs('properties', params.get('properties'), NVPAIR_KINDS)
        self.rsc_defaults = nvpairs('resource_defaults', params.get('resource_defaults'), NVPAIR_KINDS)
        self.objects = []        # (section, element)
        for key, build, sec in (('resources', resource, 'resources'), ('constraints', constraint, 'constraints'),
                                ('fencing_levels', fencing_level, 'fencing-topology')):
            specs = params.get(key) or []
            if not isinstance(specs, list):
                raise CibError(f'{key} must be a list, not a {type(specs).__name__}')
            self.objects.extend((sec, build(spec)) for spec in specs)
        absent = params.get('absent') or []
        if not isinstance(absent, list):
            raise CibError(f'absent must be a list of ids, not a {type(absent).__name__}')
        self.absent = [check_id(oid, 'absent id') for oid in absent]
        # every id, the derived ones (nvpair sets, nvpairs, operations) too, is unique in a CIB
        ids = set()
        for dummy, elem in self.objects:
            for node in elem.iter():
                if 'id' in node.attrib:
                    if node.attrib['id'] in ids:
                        raise CibError(f'id {node.attrib["id"]} is used twice in the desired configuration')
                    ids.add(node.attrib['id'])
        both = sorted(ids & set(self.absent))
        if both:
            raise CibError(f'{", ".join(both)}: both desired and absent')

    @property
    def empty(self) -> bool:
        return not (self.properties or self.rsc_defaults or self.objects or self.absent)


def section(config: ET.Element, name: str) -> ET.Element:
    found = config.find(name)
    if found is None:
        found = ET.Element(name)
        # keep the schema's order of sections
        position = len([c for c in config if c.tag in SECTIONS[:SECTIONS.index(name)]])
        config.insert(position, found)
    return found


def find_by_id(root: ET.Element, oid: str):
    """The element with this id and its parent, anywhere below root."""
    for parent in root.iter():
        for child in parent:
            if child.get('id') == oid:
                return parent, child
    return None, None


def plan(config: ET.Element, desired: Desired, check_references: bool = True) -> tuple[ET.Element, list[dict]]:
    """The new <configuration> and the list of changes (object, action, section) that lead there. With
    check_references, the resources and fence devices that desired constraints and levels name must exist."""
    new = copy.deepcopy(config)
    changes = []
    for name, wanted, set_tag, set_id in (('properties', desired.properties, 'cluster_property_set', PROPERTY_SET),
                                          ('resource_defaults', desired.rsc_defaults, 'meta_attributes',
                                           RSC_DEFAULTS_SET)):
        if not wanted:
            continue
        holder = section(new, 'crm_config' if name == 'properties' else 'rsc_defaults')
        nvs = holder.find(f"{set_tag}[@id='{set_id}']")
        if nvs is None:
            nvs = ET.SubElement(holder, set_tag, {'id': set_id})
        for key in sorted(wanted):
            pair = nvs.find(f"nvpair[@name='{key}']")
            if pair is None:
                ET.SubElement(nvs, 'nvpair', {'id': f'{set_id}-{key}', 'name': key, 'value': wanted[key]})
                changes.append({'object': f'{name}.{key}', 'action': 'create', 'value': wanted[key]})
            elif pair.get('value') != wanted[key]:
                changes.append({'object': f'{name}.{key}', 'action': 'update', 'from': pair.get('value'),
                                'value': wanted[key]})
                pair.set('value', wanted[key])
    for sec, elem in desired.objects:
        holder = section(new, sec)
        parent, current = find_by_id(new, elem.get('id'))
        if current is None:
            holder.append(copy.deepcopy(elem))
            changes.append({'object': elem.get('id'), 'action': 'create', 'section': sec})
        else:
            keep = _meta_names(elem)
            if canon(without_toggles(current, keep)) == canon(without_toggles(elem, keep)):
                continue
            if current.tag != elem.tag:
                raise CibError(f'{elem.get("id")} is a {current.tag} in the cluster, not a {elem.tag}: '
                               'remove it first (absent) or choose another id')
            index = list(parent).index(current)
            parent.remove(current)
            parent.insert(index, with_toggles(elem, current, keep))
            changes.append({'object': elem.get('id'), 'action': 'update', 'section': sec})
    for oid in desired.absent:
        parent, current = find_by_id(new, oid)
        if current is None:
            continue
        if current.tag not in REMOVABLE:
            raise CibError(f'absent: {oid} is a {current.tag} in the cluster, not a resource, constraint or '
                           'fencing level: it is left alone')
        parent.remove(current)
        changes.append({'object': oid, 'action': 'remove', 'kind': current.tag})
    # a member dropped from a desired group leaves the configuration too: it is stopped first, like absent
    named = {c['object'] for c in changes}
    removed = removed_resources(config, new)
    for oid, tag in removed:
        if oid not in named:
            changes.append({'object': oid, 'action': 'remove', 'kind': tag})
    # a desired resource that the cluster has inside a group this run replaces or removes would go with it
    kept = {node.get('id') for node in new.iter() if node.tag in OWNERS}
    for dummy, elem in desired.objects:
        if elem.tag in OWNERS and elem.get('id') not in kept:
            parent = find_by_id(config, elem.get('id'))[0]
            raise CibError(f'{elem.get("id")}: the data wants it as a resource of its own, but in the cluster it is '
                           f'in the {parent.tag} {parent.get("id")}, which this run replaces or removes: take it out '
                           f'of {parent.get("id")} first, or choose another id')
    if check_references:
        _check_references(new, desired)
    return new, changes


def _check_references(new: ET.Element, desired: Desired) -> None:
    """Every resource a desired constraint names, every device a desired fencing level names, is in the
    new configuration (a fencing level naming a missing device fails only when a node must be fenced)."""
    resources = {node.get('id'): node for node in new.iter() if node.tag in OWNERS}
    for dummy, elem in desired.objects:
        kind = KIND_NAMES.get(elem.tag)
        for key, attr in REFERENCES.get(elem.tag, ()):
            if elem.get(attr) not in resources:
                raise CibError(f'{kind} {elem.get("id")}: {key} {elem.get(attr)} is neither in the cluster nor in '
                               'resources')
        if elem.tag == 'fencing-level':
            for device in elem.get('devices').split(','):
                found = resources.get(device)
                if found is None:
                    raise CibError(f'fencing level {elem.get("id")}: device {device} is neither in the cluster nor '
                                   'in resources')
                if found.tag != 'primitive' or found.get('class') != 'stonith':
                    raise CibError(f'fencing level {elem.get("id")}: device {device} is a {found.tag} of class '
                                   f'{found.get("class")}, not a fence device (a stonith primitive)')


def removed_resources(config: ET.Element, new: ET.Element) -> list[tuple[str, str]]:
    """(id, tag) of the resources in config that new no longer has, outermost only (a group's members go
    with it), in document order."""
    kept = {node.get('id') for node in new.iter() if node.tag in OWNERS}
    out: list = []

    def walk(node):
        for child in node:
            if child.tag in OWNERS and child.get('id') not in kept:
                out.append((child.get('id'), child.tag))
            elif child.tag in OWNERS:
                walk(child)
    holder = config.find('resources')
    if holder is not None:
        walk(holder)
    return out


def stopped(config: ET.Element, ids: list[str]) -> ET.Element:
    """A copy of the configuration where these resources have target-role=Stopped. One already stopped (by
    an operator, or by a run that was killed before it deleted it) is left as it is; otherwise the nvpair
    gets the id removal_stop_id(), so that a later run that wants the resource after all can tell it."""
    new = copy.deepcopy(config)
    for oid in ids:
        dummy, elem = find_by_id(new, oid)
        metas = elem.find('meta_attributes')
        if metas is None:
            metas = ET.Element('meta_attributes', {'id': f'{oid}-meta_attributes'})
            elem.insert(1 if elem.find('instance_attributes') is not None else 0, metas)
        pair = metas.find("nvpair[@name='target-role']")
        if pair is not None and pair.get('value', '').lower() == 'stopped':
            continue
        if pair is None:
            pair = ET.SubElement(metas, 'nvpair', {'id': removal_stop_id(oid), 'name': 'target-role'})
        pair.set('id', removal_stop_id(oid))
        pair.set('value', 'Stopped')
    return new


class _Refused(Exception):
    """Raised by parse_cib's expat handlers: a construct a CIB never has, refused before it is expanded."""


def parse_cib(text: str) -> ET.Element:
    """The CIB that cibadmin --query printed, parsed without ever expanding an entity: a document type
    declaration (and so any entity, internal or external) is refused, as are elements nested deeper than
    any CIB is, and more text than a CIB has. The root must be a <cib> with a <configuration> and numeric
    versions."""
    if len(text) > MAX_CIB_CHARS:
        raise CibError(f'cibadmin --query returned {len(text)} characters, more than the {MAX_CIB_CHARS} '
                       'a CIB may have here')
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    depth = [0]

    def start(tag, attrs):
        depth[0] += 1
        if depth[0] > MAX_CIB_DEPTH:
            raise _Refused(f'elements nested more than {MAX_CIB_DEPTH} deep')
        builder.start(tag, attrs)

    def end(tag):
        depth[0] -= 1
        builder.end(tag)

    def doctype(*dummy):
        raise _Refused('a document type declaration (entities are never expanded)')
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(text, True)
    except _Refused as exc:
        raise CibError(f'cibadmin --query returned XML with {exc}, which a CIB never has: refused') from None
    except expat.ExpatError as exc:
        raise CibError(f'cibadmin --query returned XML that does not parse: {exc}') from None
    except UnicodeError:
        raise CibError('cibadmin --query returned output that is not UTF-8') from None
    cib = builder.close()
    if cib.tag != 'cib':
        raise CibError(f'cibadmin --query returned a <{cib.tag[:40]}> document, not a <cib>')
    if cib.find('configuration') is None:
        raise CibError('cibadmin --query returned a CIB without a configuration section')
    for key in ('admin_epoch', 'epoch', 'num_updates'):
        value = cib.get(key, '0')
        if not re.fullmatch('[0-9]{1,18}', value):
            raise CibError(f'cibadmin --query returned a CIB whose {key} is {value[:40]!r}, not a number')
    return cib


class Cib:
    """The running cluster's CIB through cibadmin and crm_verify (run: a list-argv runner returning
    (rc, stdout, stderr), such as runner.ModuleRunner)."""

    def __init__(self, run, sleep=time.sleep, clock=time.monotonic):
        self.run, self.sleep, self.clock = run, sleep, clock
        self.warnings: list[str] = []    # crm_verify's
        self.notices: list[str] = []     # this module's own

    def query(self, timeout: float = 0, need_dc: bool = False) -> ET.Element:
        """The CIB. With need_dc, only once the cluster has elected its DC: before that each node's CIB is
        its own, and a change written there is lost when the DC's CIB is synced to every node."""
        deadline = self.clock() + timeout
        while True:
            rc, out, err = self.run(['cibadmin', '--query'])
            if rc == 0:
                cib = parse_cib(out)
                if not need_dc or cib.get('dc-uuid'):
                    return cib
                if self.clock() >= deadline:
                    raise CibError('the cluster has not elected its DC (no dc-uuid in the CIB) within '
                                   f'{timeout:g} s: a change made now would be lost; are the nodes joined?')
                self.sleep(1)
                continue
            if self.clock() >= deadline:
                raise CibError(f'the cluster\'s CIB is not reachable on this node (cibadmin --query, exit status '
                               f'{rc}: {(err or out).strip()}): is the cluster running here?')
            self.sleep(1)

    def apply(self, cib: ET.Element, config: ET.Element, tmpdir: str | None = None) -> None:
        """Validate the whole CIB with the new configuration, then replace the configuration section: one
        cibadmin --replace, which the cluster applies whole or not at all."""
        full = copy.deepcopy(cib)
        old = full.find('configuration')
        full.insert(list(full).index(old), copy.deepcopy(config))
        full.remove(old)
        # the configuration is checked, not the nodes' current state (an unclean node only warns)
        for status in full.findall('status'):
            full.remove(status)
        try:
            workdir = tempfile.mkdtemp(prefix='cyrus-ha-cib-', dir=tmpdir)
        except OSError as exc:
            raise CibError(f'the new configuration cannot be written to a temporary file ({exc.strerror or exc}: '
                           f'{exc.filename or tmpdir}), nothing was changed') from None
        try:
            full_path = os.path.join(workdir, 'cib.xml')
            config_path = os.path.join(workdir, 'configuration.xml')
            try:
                for path, elem in ((full_path, full), (config_path, config)):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, 'w', encoding='utf-8') as handle:
                        handle.write(ET.tostring(elem, encoding='unicode'))
            except OSError as exc:
                raise CibError(f'the new configuration cannot be written to a temporary file '
                               f'({exc.strerror or exc}: {exc.filename or workdir}), nothing was changed') from None
            rc, out, err = self.run(['crm_verify', '--verbose', '--xml-file', full_path])
            text = '\n'.join(part for part in (out, err) if part)
            # crm_verify exits non-zero for warnings as for errors: only errors stop the change
            if rc != 0 and 'Warnings found' not in text:
                raise CibError('the new configuration does not verify, nothing was changed: '
                               + (' '.join(text.split())[:2000] or f'crm_verify exit status {rc} without a message'))
            self.warnings = [line.strip() for line in text.splitlines() if 'warning:' in line.lower()]
            rc, out, err = self.run(['cibadmin', '--replace', '--scope', 'configuration', '--xml-file', config_path])
            if rc != 0:
                self._failed_replace(cib, config, rc, ' '.join((err or out).split())[:2000])
        finally:
            for name in os.listdir(workdir):
                os.unlink(os.path.join(workdir, name))
            os.rmdir(workdir)

    def _failed_replace(self, cib: ET.Element, config: ET.Element, rc: int, detail: str) -> None:
        """cibadmin --replace failed; a timeout (exit status 124) may still have gone through. Read the CIB
        back to say which: unchanged, changed to exactly ours (then it did go through), or changed otherwise."""
        failed = f'cibadmin --replace failed (exit status {rc})'
        try:
            now = self.query()
        except CibError as exc:
            raise CibError(f'{failed}: {detail}; whether the change was made is unknown, the CIB cannot be read back '
                           f'({exc}): run again') from None
        before, after = epoch_of(cib)[:2], epoch_of(now)[:2]
        if after == before:
            raise CibError(f'{failed}, nothing was changed: {detail}')
        if canon(now.find('configuration')) == canon(config):
            self.notices.append(f'{failed} ({detail}), but the CIB holds the new configuration')
            return
        raise CibError(f'{failed}: {detail}; the CIB changed meanwhile (epoch {".".join(map(str, before))} to '
                       f'{".".join(map(str, after))}), by this run or another writer: run again to see what is left',
                       changed=True)


def epoch_of(cib: ET.Element) -> tuple:
    return tuple(int(cib.get(k, '0')) for k in ('admin_epoch', 'epoch', 'num_updates'))


def converge(params: dict, run, check_mode: bool = False, wait: float | None = None, sleep=time.sleep,
             clock=time.monotonic, tmpdir: str | None = None) -> dict:
    """Make the running cluster's configuration hold the desired objects; the result for exit_json.

    Every input is checked before the first command. The change is one cibadmin --replace, except when
    resources leave the configuration: they are first stopped (one replace), the cluster settles, and
    only then deleted (a second replace). Killed between the two, a run leaves them stopped: the next
    run with the same data deletes them, one that wants them again starts them again (removal_stop_id).
    `wait` defaults to the data's (0 in check mode)."""
    desired = Desired(params)
    if desired.empty:
        raise CibError('nothing to manage: give properties, resource_defaults, resources, constraints, '
                       'fencing_levels or absent')
    if wait is None:
        wait = 0 if check_mode else desired.wait
    cib_api = Cib(run, sleep, clock)
    for attempt in range(3):
        cib = cib_api.query(wait if attempt == 0 else 0, need_dc=not check_mode)
        config = cib.find('configuration')
        new, changes = plan(config, desired)
        result = {'changed': bool(changes), 'changes': changes,
                  'diff': {'before': '\n'.join(pretty(e) for e in _managed(config, desired)),
                           'after': '\n'.join(pretty(e) for e in _managed(new, desired))}}
        if not changes or check_mode:
            return result
        # another writer changed the configuration since our query (num_updates counts status
        # updates only): plan again on its result rather than overwrite it
        if epoch_of(cib_api.query())[:2] != epoch_of(cib)[:2]:
            continue
        doomed = [oid for oid, dummy in removed_resources(config, new)]
        halted = False
        if doomed:
            # A resource deleted while it runs is stopped as an orphan, without its parameters (a Filesystem
            # without its directory cannot stop, and its node gets fenced): stop it first, then delete it.
            halt = stopped(config, doomed)
            if canon(halt) != canon(config):
                cib_api.apply(cib, halt, tmpdir)
                halted = True
            testhook.kill_point('stopped')
            rc, out, err = run(['crm_resource', '--wait', '--timeout', f'{max(int(wait), 30)}s'])
            if rc != 0:
                raise CibError(f'{", ".join(doomed)}: stopped in the configuration, but the cluster did not settle '
                               f'(crm_resource --wait, exit status {rc}: {(err or out).strip()}); not deleted yet: '
                               'run again to finish', changed=halted)
            testhook.kill_point('settled')
            cib = cib_api.query()
            new, dummy = plan(cib.find('configuration'), desired)
        try:
            cib_api.apply(cib, new, tmpdir)
        except CibError as exc:
            if halted:
                raise CibError(f'{", ".join(doomed)}: stopped, but not deleted yet: {exc}; run again to finish',
                               changed=True) from None
            raise
        result['warnings'] = cib_api.warnings
        result['notices'] = cib_api.notices
        result['epoch'] = '.'.join(str(n) for n in epoch_of(cib_api.query()))
        return result
    raise CibError('the CIB kept changing under this run (another tool is writing it): try again')


def _managed(config: ET.Element, desired: Desired) -> list[ET.Element]:
    out = []
    for set_tag, set_id, keys in (('cluster_property_set', PROPERTY_SET, desired.properties),
                                  ('meta_attributes', RSC_DEFAULTS_SET, desired.rsc_defaults)):
        if keys:
            dummy, nvs = find_by_id(config, set_id)
            if nvs is not None:
                out.append(ET.Element(set_tag, {'id': set_id}))
                out[-1].extend(copy.deepcopy(p) for p in nvs if p.get('name') in keys)
    for dummy, elem in desired.objects:
        dummy, current = find_by_id(config, elem.get('id'))
        if current is not None:
            out.append(current)
    return out


def predict_fresh(params: dict) -> list[dict]:
    """The changes against an empty configuration (check mode on a node whose cluster is not up yet)."""
    dummy, changes = plan(ET.Element('configuration'), Desired(params), check_references=False)
    return changes
