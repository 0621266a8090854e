# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.ha_cluster_vars filter."""

from __future__ import annotations

DOCUMENTATION = r'''
name: ha_cluster_vars
author: cyrus.ha contributors
version_added: 0.1.0
short_description: The cluster_config result as linux-system-roles/ha_cluster variables
description:
  - For sites whose clusters are configured by C(linux-system-roles/ha_cluster), renders the output of
    the P(cyrus.ha.cluster_config#filter) filter as that role's variables (C(ha_cluster_resource_primitives),
    C(ha_cluster_resource_groups), C(ha_cluster_constraints_location), C(ha_cluster_stonith_levels),
    C(ha_cluster_cluster_properties), C(ha_cluster_resource_defaults), C(ha_cluster_totem), ...).
  - The corosync authkey and the hacluster password stay with that role's own secret variables.
positional: nodes, options
options:
  _input:
    description: A P(cyrus.ha.cluster_config#filter) result.
    type: dict
    required: true
  nodes:
    description: The cluster's nodes.
    type: list
    elements: str
    required: true
  options:
    description: C(name) (cluster name), C(token) (totem token, ms) and C(consensus) (totem consensus, ms; 0 or absent for Corosync's default).
    type: dict
    default: {}
'''

EXAMPLES = r'''
- name: Write the ha_cluster variables of the pairs
  ansible.builtin.copy:
    content: "{{ cib | cyrus.ha.ha_cluster_vars(['be1', 'spare'], {'name': 'cyrus-ha'}) | to_nice_yaml }}"
    dest: /var/tmp/ha_cluster_vars.yml
    mode: "0644"
'''

RETURN = r'''
_value:
  description: A mapping of ha_cluster variable names to values.
  type: dict
'''

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.plugin_utils.cluster import ha_cluster_vars


def to_ha_cluster_vars(config, nodes, options=None):
    """The cluster_config result as linux-system-roles/ha_cluster variables."""
    try:
        return ha_cluster_vars(dict(config), list(nodes or []), dict(options or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f'cyrus.ha.ha_cluster_vars: the input is not a cluster_config result ({exc})') from exc


class FilterModule:
    """cyrus.ha.ha_cluster_vars."""

    def filters(self):
        return {'ha_cluster_vars': to_ha_cluster_vars}
