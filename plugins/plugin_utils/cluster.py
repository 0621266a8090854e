# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Pacemaker configuration of Cyrus warm-spare pairs, built on the controller from the pairs,
the fence devices and the policy variables of the cyrus.ha.cluster role.

One model, two renderings: the arguments of the cyrus.ha.pacemaker_cib module (the role configures
the cluster itself) and the variables of linux-system-roles/ha_cluster (for sites that run it).
"""

from __future__ import annotations

import ipaddress
import re

NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]*$')


class ClusterModelError(Exception):
    """The pairs or the fencing variables are inconsistent; the message names the entry and the cause."""


def _volume_device(volume: dict, name: str) -> str:
    # the Filesystem agent's spelling for "find it by UUID / label" (it passes it on to mount)
    if volume.get('uuid'):
        return f'-U {volume["uuid"]}'
    if volume.get('label'):
        return f'-L {volume["label"]}'
    raise ClusterModelError(f'pair {name}: its volume has neither uuid nor label')


def instance_group(pair: dict, opts: dict) -> dict:
    """The group of one backend instance: its volume, then its address, then the instance."""
    name = pair.get('instance')
    if not name or not NAME_RE.match(str(name)):
        raise ClusterModelError(f'pair {pair!r}: instance is missing or not a plain name')
    for key in ('home', 'spare', 'address', 'volume'):
        if not pair.get(key):
            raise ClusterModelError(f'pair {name}: {key} is missing')
    if not isinstance(pair['volume'], dict):
        raise ClusterModelError(f'pair {name}: volume must be a mapping with mount and uuid or label, '
                                f'not {pair["volume"]!r}')
    if not pair['volume'].get('mount', '').startswith('/'):
        raise ClusterModelError(f'pair {name}: volume.mount must be an absolute path')
    try:
        address = ipaddress.ip_address(str(pair['address']))
    except ValueError as exc:
        raise ClusterModelError(f'pair {name}: address {pair["address"]!r} is not an IP address') from exc
    prefix = int(pair.get('prefix') or opts.get('address_prefix') or (64 if address.version == 6 else 24))
    fs_params = {'device': _volume_device(pair['volume'], name), 'directory': pair['volume']['mount'],
                 'fstype': pair.get('fstype', opts.get('fstype', 'ext4'))}
    if pair.get('mount_opts', opts.get('mount_opts', 'defaults')) != 'defaults':
        fs_params['options'] = pair.get('mount_opts', opts.get('mount_opts'))
    ip_params = {'ip': str(address), 'cidr_netmask': prefix}
    if pair.get('interface', opts.get('interface')):
        ip_params['nic'] = pair.get('interface', opts.get('interface'))
    if address.version == 6:
        ip_params['nodad'] = True
    cyrus_params = {'instance': name, 'address': str(address)}
    cyrus_params.update(opts.get('instance_params') or {})
    mon = opts.get('monitor_interval', '10s')
    return {
        'id': f'cyrus-{name}',
        'resources': [
            {'id': f'{name}-volume', 'agent': 'ocf:heartbeat:Filesystem', 'params': fs_params,
             'operations': [{'name': 'start', 'interval': '0s', 'timeout': '60s'},
                            {'name': 'stop', 'interval': '0s', 'timeout': '60s'},
                            {'name': 'monitor', 'interval': '20s', 'timeout': '40s'}]},
            {'id': f'{name}-address', 'agent': opts.get('address_agent', 'ocf:heartbeat:IPaddr2'), 'params': ip_params,
             'operations': [{'name': 'monitor', 'interval': mon, 'timeout': '20s'}]},
            {'id': f'{name}-cyrus', 'agent': 'ocf:cyrus:instance', 'params': cyrus_params,
             'operations': [{'name': 'start', 'interval': '0s', 'timeout': '60s'},
                            {'name': 'stop', 'interval': '0s', 'timeout': '60s'},
                            {'name': 'monitor', 'interval': mon, 'timeout': '20s'}]},
        ],
    }


def fencing(nodes: list, devices: list, ping_targets: list, ping_count: int = 2) -> tuple[list, list, list]:
    """Fence devices (stonith primitives), the constraints that keep a device off the node it fences,
    and the fencing levels: per node, the ping heuristics (when targets are given) in front of its devices."""
    resources, constraints, levels = [], [], []
    per_target: dict = {node: [] for node in nodes}
    for dev in devices:
        did = dev.get('id')
        if not did or not NAME_RE.match(str(did)):
            raise ClusterModelError(f'fence device {dev!r}: id is missing or not a plain name')
        agent = dev.get('agent', '')
        if not agent.startswith('fence_'):
            raise ClusterModelError(f'fence device {did}: agent {agent!r} is not a fence agent (fence_*)')
        targets = dev.get('targets') or []
        unknown = [t for t in targets if t not in per_target]
        if not targets or unknown:
            raise ClusterModelError(f'fence device {did}: targets {unknown or targets} are not cluster nodes')
        params = dict(dev.get('params') or {})
        params.setdefault('pcmk_host_list', ' '.join(targets))
        device = {'id': did, 'agent': f'stonith:{agent}', 'params': params,
                  'operations': [{'name': 'monitor', 'interval': '60s', 'timeout': '20s'}]}
        if dev.get('meta'):
            # for example provides=unfencing for fence_scsi / fence_mpath
            device['meta'] = dict(dev['meta'])
        resources.append(device)
        for target in targets:
            per_target[target].append(did)
            # a device runs on a node it does not fence; one that fences every node must run somewhere
            if set(targets) != set(nodes):
                constraints.append({'id': f'{did}-avoids-{target}', 'type': 'location', 'resource': did,
                                    'node': target, 'score': '-INFINITY'})
    missing = [node for node, devs in per_target.items() if not devs]
    if devices and missing:
        raise ClusterModelError(f'node {", ".join(missing)} has no fence device: every node must be fenceable')
    if ping_targets:
        resources.append({'id': 'fence-heuristics-ping', 'agent': 'stonith:fence_heuristics_ping',
                          'params': {'ping_targets': ','.join(ping_targets), 'ping_count': ping_count,
                                     # every probe must come back (the agent's default asks 8 of 10)
                                     'ping_good_count': ping_count, 'pcmk_host_list': ' '.join(nodes)},
                          'operations': [{'name': 'monitor', 'interval': '60s', 'timeout': '20s'}]})
    for node, devs in per_target.items():
        if devs:
            levels.append({'target': node, 'index': 1,
                           'devices': (['fence-heuristics-ping'] if ping_targets else []) + devs})
    return resources, constraints, levels


def model(pairs: list, nodes: list, devices: list, opts: dict) -> dict:
    """Arguments for cyrus.ha.pacemaker_cib: properties, resource defaults, resources, constraints, levels."""
    if len(nodes) < 2:
        raise ClusterModelError(f'a cluster needs at least two nodes, not {nodes}')
    groups, constraints = [], []
    for pair in pairs:
        group = instance_group(pair, opts)
        for key in ('home', 'spare'):
            if pair[key] not in nodes:
                raise ClusterModelError(f'pair {pair["instance"]}: {key} {pair[key]} is not a cluster node {nodes}')
        groups.append(group)
        constraints.append({'id': f'{group["id"]}-prefers-home', 'type': 'location', 'resource': group['id'],
                            'node': pair['home'], 'score': opts.get('home_score', 100)})
        for node in nodes:
            if node not in (pair['home'], pair['spare']):
                constraints.append({'id': f'{group["id"]}-avoids-{node}', 'type': 'location', 'resource': group['id'],
                                    'node': node, 'score': '-INFINITY'})
    fence_rsc, fence_cons, levels = fencing(nodes, devices, opts.get('ping_targets') or [],
                                            opts.get('ping_count', 2))
    stonith = bool(devices)
    if not stonith and not opts.get('allow_no_fencing'):
        raise ClusterModelError('no fence devices: without fencing Pacemaker cannot move a volume safely '
                                '(set cluster_fence_devices)')
    properties = {'stonith-enabled': stonith, 'cluster-name': opts.get('name', 'cyrus-ha')}
    properties.update(opts.get('properties') or {})
    # one failure of a member moves the group to the other node (HACMP's behaviour); a failed node is
    # eligible again after failure-timeout
    defaults = {'resource-stickiness': opts.get('stickiness', 200),
                'migration-threshold': opts.get('migration_threshold', 1),
                'failure-timeout': opts.get('failure_timeout', '10min')}
    defaults.update(opts.get('resource_defaults') or {})
    return {'properties': properties, 'resource_defaults': defaults, 'resources': fence_rsc + groups,
            'constraints': fence_cons + constraints, 'fencing_levels': levels}


def _attrs(pairs: dict) -> list:
    return [{'attrs': [{'name': k, 'value': _text(v)} for k, v in sorted(pairs.items())]}] if pairs else []


def _text(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def ha_cluster_vars(cib: dict, nodes: list, opts: dict) -> dict:
    """The same configuration as variables of linux-system-roles/ha_cluster."""
    primitives, groups = [], []
    for res in cib['resources']:
        members = res.get('resources', [res])
        for prim in members:
            entry = {'id': prim['id'], 'agent': prim['agent']}
            if prim.get('params'):
                entry['instance_attrs'] = _attrs(prim['params'])
            if prim.get('meta'):
                entry['meta_attrs'] = _attrs(prim['meta'])
            if prim.get('operations'):
                entry['operations'] = [
                    {'action': op['name'], 'attrs': [{'name': k, 'value': _text(v)} for k, v in op.items() if k != 'name']}
                    for op in prim['operations']]
            primitives.append(entry)
        if 'resources' in res:
            groups.append({'id': res['id'], 'resource_ids': [m['id'] for m in members]})
    location = [{'resource': {'id': c['resource']}, 'node': c['node'],
                 'options': [{'name': 'score', 'value': _text(c['score'])}]}
                for c in cib['constraints'] if c['type'] == 'location']
    return {
        'ha_cluster_cluster_name': opts.get('name', 'cyrus-ha'),
        'ha_cluster_transport': {'type': 'knet'},
        'ha_cluster_totem': {'options': [{'name': 'token', 'value': _text(opts.get('token', 3000))}]
                             + ([{'name': 'consensus', 'value': _text(opts['consensus'])}]
                                if int(opts.get('consensus') or 0) > 0 else [])},
        'ha_cluster_cluster_properties': _attrs(cib['properties']),
        'ha_cluster_resource_defaults': {'meta_attrs': _attrs(cib['resource_defaults'])},
        'ha_cluster_resource_primitives': primitives,
        'ha_cluster_resource_groups': groups,
        'ha_cluster_constraints_location': location,
        'ha_cluster_stonith_levels': [{'level': lvl['index'], 'target': lvl['target'], 'resource_ids': lvl['devices']}
                                      for lvl in cib['fencing_levels']],
        'ha_cluster_node_options': [{'node_name': n} for n in nodes],
    }
