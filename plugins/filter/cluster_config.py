# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.cluster_config filter."""

from __future__ import annotations

DOCUMENTATION = r'''
name: cluster_config
author: cyrus.ha contributors
version_added: 0.1.0
short_description: Pacemaker configuration for Cyrus warm-spare pairs
description:
  - Turns warm-spare pairs, the cluster's nodes and its fence devices into the arguments of
    M(cyrus.ha.pacemaker_cib).
  - Per pair, a group C(cyrus-<instance>) of C(<instance>-volume) (V(ocf:heartbeat:Filesystem) by UUID or label),
    C(<instance>-address) (V(ocf:heartbeat:IPaddr2)) and C(<instance>-cyrus) (V(ocf:cyrus:instance)), a location
    preference for the home node, and a ban from every node that is neither home nor spare.
  - Per fence device a stonith resource kept off the nodes it fences, and per node one fencing level,
    with V(fence_heuristics_ping) in front when ping targets are given (the node that cannot reach them
    loses the fence race instead of shooting the healthy one).
  - Refuses a configuration without fence devices unless C(allow_no_fencing) is set.
positional: nodes, fence_devices, options
options:
  _input:
    description: The pairs, each with C(instance), C(home), C(spare), C(address), C(volume) (C(uuid) or C(label), and C(mount)).
    type: list
    elements: dict
    required: true
  nodes:
    description: The cluster's nodes (names as the cluster knows them).
    type: list
    elements: str
    required: true
  fence_devices:
    description: Fence devices, each with C(id), C(agent) (a C(fence_*) agent), C(targets) (nodes it fences) and C(params).
    type: list
    elements: dict
    default: []
  options:
    description:
      - Policy. C(name), C(home_score) (default 100), C(stickiness) (default 200; failback is automatic
        when it is below C(home_score)), C(ping_targets), C(ping_count), C(monitor_interval), C(address_prefix),
        C(interface), C(fstype), C(mount_opts), C(address_agent), C(instance_params), C(properties),
        C(resource_defaults), C(allow_no_fencing).
    type: dict
    default: {}
'''

EXAMPLES = r'''
- name: The pacemaker_cib arguments of the pair of backend be1 (home imap-be1, spare imap-spare)
  ansible.builtin.set_fact:
    cib: >-
      {{ [{'instance': 'be1', 'home': 'imap-be1', 'spare': 'imap-spare', 'address': '198.51.100.121',
           'volume': {'label': 'cyrus-be1', 'mount': '/srv/cyrus/be1'}}]
         | cyrus.ha.cluster_config(['imap-be1', 'imap-spare'],
                                   [{'id': 'fence-imap-be1', 'agent': 'fence_ipmilan', 'targets': ['imap-be1'],
                                     'params': {'ip': 'imap-be1-bmc.example.org', 'username': 'fence',
                                                'password': vault_ipmi_fence_password, 'lanplus': true}},
                                    {'id': 'fence-imap-spare', 'agent': 'fence_ipmilan', 'targets': ['imap-spare'],
                                     'params': {'ip': 'imap-spare-bmc.example.org', 'username': 'fence',
                                                'password': vault_ipmi_fence_password, 'lanplus': true}}],
                                   {'ping_targets': ['198.51.100.1']}) }}
'''

RETURN = r'''
_value:
  description: The arguments of M(cyrus.ha.pacemaker_cib) (properties, resource_defaults, resources, constraints, fencing_levels).
  type: dict
'''

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.plugin_utils.cluster import ClusterModelError, model


def cluster_config(pairs, nodes, fence_devices=None, options=None):
    """The pacemaker_cib arguments for warm-spare pairs on a cluster."""
    try:
        return model(list(pairs or []), list(nodes or []), list(fence_devices or []), dict(options or {}))
    except (ClusterModelError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f'cyrus.ha.cluster_config: {exc}') from exc


class FilterModule:
    """cyrus.ha.cluster_config."""

    def filters(self):
        return {'cluster_config': cluster_config}
