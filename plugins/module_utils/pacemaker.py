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
import os
import re
import tempfile
import time
import xml.etree.ElementTree as ET

ID_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_.-]*$')
AGENT_RE = re.compile(r'^(?:(ocf):([A-Za-z0-9_.-]+)|(stonith|systemd|lsb|service)):([A-Za-z0-9_.@-]+)$')
# Where each kind of object lives in <configuration>.
SECTIONS = ('crm_config', 'nodes', 'resources', 'constraints', 'fencing-topology', 'rsc_defaults', 'op_defaults')
PROPERTY_SET = 'cib-bootstrap-options'
RSC_DEFAULTS_SET = 'rsc-options'
# The Pacemaker tools run here (cibadmin, crm_verify and crm_resource come in one package): a module
# looks each up before it starts, so a node without them fails before anything changes.
TOOLS = ('cibadmin', 'crm_verify', 'crm_resource')


class CibError(Exception):
    """The desired configuration is invalid or the cluster refused it; the message says which and why."""


def value_text(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def check_id(value, what: str) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise CibError(f'{what}: {value!r} is not a valid XML id (a letter or _, then letters, digits, _ . -)')
    return value


def nvset(tag: str, set_id: str, pairs: dict) -> ET.Element:
    elem = ET.Element(tag, {'id': set_id})
    for name in sorted(pairs):
        ET.SubElement(elem, 'nvpair', {'id': f'{set_id}-{name}', 'name': name, 'value': value_text(pairs[name])})
    return elem


def primitive(spec: dict) -> ET.Element:
    rid = check_id(spec.get('id'), 'resource id')
    match = AGENT_RE.match(spec.get('agent') or '')
    if not match:
        raise CibError(f'resource {rid}: agent {spec.get("agent")!r} is not CLASS:[PROVIDER:]TYPE, '
                       'for example ocf:heartbeat:IPaddr2 or stonith:fence_ipmilan')
    ocf, provider, other, rtype = match.groups()
    attrs = {'id': rid, 'class': ocf or other, 'type': rtype}
    if provider:
        attrs['provider'] = provider
    elem = ET.Element('primitive', attrs)
    if spec.get('params'):
        elem.append(nvset('instance_attributes', f'{rid}-instance_attributes', spec['params']))
    if spec.get('meta'):
        elem.append(nvset('meta_attributes', f'{rid}-meta_attributes', spec['meta']))
    if spec.get('operations'):
        ops = ET.SubElement(elem, 'operations')
        for op in spec['operations']:
            if not op.get('name'):
                raise CibError(f'resource {rid}: an operation has no name')
            interval = value_text(op.get('interval', '0s'))
            attrs = {'id': f'{rid}-{op["name"]}-interval-{interval}', 'name': op['name'], 'interval': interval}
            attrs.update({k: value_text(v) for k, v in op.items() if k not in ('name', 'interval')})
            ET.SubElement(ops, 'op', attrs)
    return elem


def resource(spec: dict) -> ET.Element:
    """A primitive, or a group when the spec has `resources` (its members, started in order)."""
    if 'resources' not in spec:
        return primitive(spec)
    gid = check_id(spec.get('id'), 'group id')
    if not spec['resources']:
        raise CibError(f'group {gid}: it has no resources')
    elem = ET.Element('group', {'id': gid})
    if spec.get('meta'):
        elem.append(nvset('meta_attributes', f'{gid}-meta_attributes', spec['meta']))
    for member in spec['resources']:
        if 'resources' in member:
            raise CibError(f'group {gid}: a group cannot hold the group {member.get("id")}')
        elem.append(primitive(member))
    return elem


def constraint(spec: dict) -> ET.Element:
    cid = check_id(spec.get('id'), 'constraint id')
    kind = spec.get('type', 'location')
    if kind == 'location':
        for key in ('resource', 'node'):
            if not spec.get(key):
                raise CibError(f'location {cid}: {key} is missing')
        return ET.Element('rsc_location', {'id': cid, 'rsc': spec['resource'], 'node': spec['node'],
                                           'score': value_text(spec.get('score', 'INFINITY'))})
    if kind in ('order', 'colocation'):
        first, then = spec.get('first'), spec.get('then')
        if not first or not then:
            raise CibError(f'{kind} {cid}: first and then are required')
        if kind == 'order':
            attrs = {'id': cid, 'first': first, 'then': then, 'kind': spec.get('kind', 'Mandatory')}
            return ET.Element('rsc_order', attrs)
        return ET.Element('rsc_colocation', {'id': cid, 'rsc': then, 'with-rsc': first,
                                             'score': value_text(spec.get('score', 'INFINITY'))})
    raise CibError(f'constraint {cid}: type {kind!r} is not location, order or colocation')


def fencing_level(spec: dict) -> ET.Element:
    target, index, devices = spec.get('target'), spec.get('index'), spec.get('devices') or []
    if isinstance(devices, str) or not all(isinstance(d, str) and d for d in devices):
        raise CibError(f'fencing level {spec!r}: devices must be a list of fence device ids')
    if not target or isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= 9 or not devices:
        raise CibError(f'fencing level {spec!r}: target, index (1-9) and devices are required')
    lid = spec.get('id') or f'fl-{target}-{index}'
    return ET.Element('fencing-level', {'id': check_id(lid, 'fencing level id'), 'target': target,
                                        'index': str(index), 'devices': ','.join(devices)})


def canon(elem: ET.Element):
    """A comparable form: tag, attributes, children in order; whitespace and comments ignored."""
    return (elem.tag, tuple(sorted(elem.attrib.items())),
            tuple(canon(child) for child in elem if isinstance(child.tag, str)))


# Meta attributes an operator toggles at run time (crm_resource --meta, pcs resource disable/unmanage):
# a resource's desired configuration that does not set them leaves them as the cluster has them, so
# that a routine run never restarts what an operator stopped for maintenance.
OPERATOR_META = ('target-role', 'is-managed', 'maintenance')
OWNERS = ('primitive', 'group', 'clone', 'master', 'bundle')


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
                if pair.get('name') in OPERATOR_META and pair.get('name') not in keep.get(node.get('id'), set()):
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
                if pair.get('name') in OPERATOR_META and pair.get('name') not in keep.get(node.get('id'), set()):
                    holder = target.find('meta_attributes')
                    if holder is None:
                        holder = ET.Element('meta_attributes', {'id': metas.get('id')})
                        first_child = next((i for i, c in enumerate(target) if c.tag in OWNERS), len(target))
                        target.insert(first_child, holder)
                    holder.append(copy.deepcopy(pair))
    return wanted


def pretty(elem: ET.Element) -> str:
    elem = copy.deepcopy(elem)
    ET.indent(elem)
    return ET.tostring(elem, encoding='unicode')


class Desired:
    """Everything one run manages, built and checked before the cluster is touched."""

    def __init__(self, params: dict):
        self.properties = {k: value_text(v) for k, v in (params.get('properties') or {}).items()}
        self.rsc_defaults = {k: value_text(v) for k, v in (params.get('resource_defaults') or {}).items()}
        self.objects = []        # (section, element)
        for spec in params.get('resources') or []:
            self.objects.append(('resources', resource(spec)))
        for spec in params.get('constraints') or []:
            self.objects.append(('constraints', constraint(spec)))
        for spec in params.get('fencing_levels') or []:
            self.objects.append(('fencing-topology', fencing_level(spec)))
        self.absent = list(params.get('absent') or [])
        seen = {}
        for section, elem in self.objects:
            for node in elem.iter():
                if 'id' in node.attrib and node.tag in ('primitive', 'group', 'rsc_location', 'rsc_order',
                                                        'rsc_colocation', 'fencing-level'):
                    if node.attrib['id'] in seen:
                        raise CibError(f'id {node.attrib["id"]} is used twice in the desired configuration')
                    seen[node.attrib['id']] = section
        both = sorted(set(seen) & set(self.absent))
        if both:
            raise CibError(f'{", ".join(both)}: both desired and absent')


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


def plan(config: ET.Element, desired: Desired) -> tuple[ET.Element, list[dict]]:
    """The new <configuration> and the list of changes (object, action, section) that lead there."""
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
        parent, current = find_by_id(new, check_id(oid, 'absent id'))
        if current is not None:
            parent.remove(current)
            changes.append({'object': oid, 'action': 'remove', 'kind': current.tag})
    return new, changes


def stopped(config: ET.Element, ids: list[str]) -> ET.Element:
    """A copy of the configuration where these resources have target-role=Stopped."""
    new = copy.deepcopy(config)
    for oid in ids:
        dummy, elem = find_by_id(new, oid)
        metas = elem.find('meta_attributes')
        if metas is None:
            metas = ET.Element('meta_attributes', {'id': f'{oid}-meta_attributes'})
            elem.insert(1 if elem.find('instance_attributes') is not None else 0, metas)
        pair = metas.find("nvpair[@name='target-role']")
        if pair is None:
            pair = ET.SubElement(metas, 'nvpair', {'id': f'{metas.get("id")}-target-role', 'name': 'target-role'})
        pair.set('value', 'Stopped')
    return new


class Cib:
    """The running cluster's CIB through cibadmin and crm_verify (run: a list-argv runner returning
    (rc, stdout, stderr), such as runner.ModuleRunner)."""

    def __init__(self, run, sleep=time.sleep, clock=time.monotonic):
        self.run, self.sleep, self.clock = run, sleep, clock
        self.warnings: list[str] = []

    def query(self, timeout: float = 0, need_dc: bool = False) -> ET.Element:
        """The CIB. With need_dc, only once the cluster has elected its DC: before that each node's CIB is
        its own, and a change written there is lost when the DC's CIB is synced to every node."""
        deadline = self.clock() + timeout
        while True:
            rc, out, err = self.run(['cibadmin', '--query'])
            if rc == 0:
                try:
                    cib = ET.fromstring(out)
                except ET.ParseError as exc:
                    raise CibError(f'cibadmin --query returned XML that does not parse: {exc}') from exc
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
        """Validate the whole CIB with the new configuration, then replace the configuration section."""
        full = copy.deepcopy(cib)
        old = full.find('configuration')
        full.insert(list(full).index(old), copy.deepcopy(config))
        full.remove(old)
        # the configuration is checked, not the nodes' current state (an unclean node only warns)
        for status in full.findall('status'):
            full.remove(status)
        workdir = tempfile.mkdtemp(prefix='cyrus-ha-cib-', dir=tmpdir)
        try:
            full_path = os.path.join(workdir, 'cib.xml')
            config_path = os.path.join(workdir, 'configuration.xml')
            for path, elem in ((full_path, full), (config_path, config)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, 'w', encoding='utf-8') as handle:
                    handle.write(ET.tostring(elem, encoding='unicode'))
            rc, out, err = self.run(['crm_verify', '--verbose', '--xml-file', full_path])
            text = '\n'.join(part for part in (out, err) if part)
            # crm_verify exits non-zero for warnings as for errors: only errors stop the change
            if rc != 0 and 'Warnings found' not in text:
                raise CibError('the new configuration does not verify, nothing was changed: '
                               + ' '.join(text.split())[:2000])
            self.warnings = [line.strip() for line in text.splitlines() if 'warning:' in line.lower()]
            rc, out, err = self.run(['cibadmin', '--replace', '--scope', 'configuration', '--xml-file', config_path])
            if rc != 0:
                raise CibError(f'cibadmin --replace failed (exit status {rc}), nothing was changed: '
                               + ' '.join((err or out).split())[:2000])
        finally:
            for name in os.listdir(workdir):
                os.unlink(os.path.join(workdir, name))
            os.rmdir(workdir)


def epoch_of(cib: ET.Element) -> tuple:
    return tuple(int(cib.get(k, '0')) for k in ('admin_epoch', 'epoch', 'num_updates'))


def converge(params: dict, run, check_mode: bool = False, wait: float = 0, sleep=time.sleep,
             clock=time.monotonic) -> dict:
    """Make the running cluster's configuration hold the desired objects; the result for exit_json."""
    desired = Desired(params)
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
        doomed = [c['object'] for c in changes if c['action'] == 'remove' and c.get('kind') in ('primitive', 'group')]
        if doomed:
            # A resource deleted while it runs is stopped as an orphan, without its parameters (a Filesystem
            # without its directory cannot stop, and its node gets fenced): stop it first, then delete it.
            cib_api.apply(cib, stopped(config, doomed))
            rc, out, err = run(['crm_resource', '--wait', '--timeout', f'{max(int(wait), 30)}s'])
            if rc != 0:
                raise CibError(f'{", ".join(doomed)}: stopped in the configuration, but the cluster did not settle '
                               f'(crm_resource --wait, exit status {rc}: {(err or out).strip()}); not deleted yet')
            cib = cib_api.query()
            new, dummy = plan(cib.find('configuration'), desired)
        cib_api.apply(cib, new)
        result['warnings'] = cib_api.warnings
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
    dummy, changes = plan(ET.Element('configuration'), Desired(params))
    return changes
