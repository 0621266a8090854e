# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.cluster_config and cyrus.ha.ha_cluster_vars filters (documentation in the YAML sidecars)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.plugin_utils.cluster import ClusterModelError, ha_cluster_vars, model


def cluster_config(pairs, nodes, fence_devices=None, options=None):
    """The pacemaker_cib arguments for warm-spare pairs on a cluster."""
    try:
        return model(list(pairs or []), list(nodes or []), list(fence_devices or []), dict(options or {}))
    except (ClusterModelError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f'cyrus.ha.cluster_config: {exc}') from exc


def to_ha_cluster_vars(config, nodes, options=None):
    """The cluster_config result as linux-system-roles/ha_cluster variables."""
    try:
        return ha_cluster_vars(dict(config), list(nodes or []), dict(options or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f'cyrus.ha.ha_cluster_vars: the input is not a cluster_config result ({exc})') from exc


class FilterModule:
    """cyrus.ha cluster filters."""

    def filters(self):
        return {'cluster_config': cluster_config, 'ha_cluster_vars': to_ha_cluster_vars}
