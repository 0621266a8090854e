# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
name: murder
short_description: A Cyrus Murder inventory from a topology file
version_added: 0.1.0
description:
  - Reads a YAML topology file (whose C(plugin) key is C(cyrus.ha.murder)) describing the hosts of
    a Cyrus Murder, the Cyrus instances they run (role, service address, servername), the
    warm-spare pairs of backend instances (home host, spare host, shared volume) and the replica pairs
    (home host and replica host, each node on its own disk, kept by Cyrus rolling replication), and builds the
    inventory from it.
  - "Groups: C(murder) (every host), C(mupdate_master) (the host of the mupdate master instance; not
    C(mupdate), so that a host called C(mupdate) does not clash with it), C(backends), C(frontends),
    C(spares) (hosts that are the warm spare of a backend instance) and C(replicas) (hosts that hold the
    replica of a backend instance)."
  - "Host variables: C(ansible_host) (the host's boot address), C(murder_instances) (the instances
    homed on the host: C(name), C(role), C(host), C(address), C(address_prefix), C(address6),
    C(address6_prefix), C(servername), C(spare), C(volume), C(replica)), C(murder_standby_instances) (the
    instances this host is the warm spare of), C(murder_replica_instances) (the instances this host holds
    the replica of), and for the host's first instance C(murder_role), C(murder_instance), C(murder_address),
    C(murder_address_prefix), C(murder_servername) and, when it has a replica, C(murder_replication_peer)
    (the replica host's boot address, where its instance ships its changes) and C(murder_replication_port);
    every host gets
    C(murder_mupdate_servername) and the pairs as the runbooks take them, C(warm_spare_pairs) (for the
    C(cyrus.ha.warm_spare) role) and C(replication_pairs) (for the
    C(cyrus.ha.replication) role)."
  - "Validated with netaddr before any host is added: subnets in CIDR form without host bits,
    overlapping no loopback, link-local, multicast, unspecified, reserved or IPv4-mapped range
    (so never C(0.0.0.0/0)); every address an ASCII string written canonically (IPv6 compressed
    and lower case, IPv4 without leading zeros), without prefix length or zone index, inside a
    declared subnet, never a network, broadcast, subnet-router anycast, loopback, link-local,
    multicast, unspecified or IPv4-mapped address; service addresses unique and never a host's own
    boot address; servernames fully qualified ASCII names (internationalized ones in their
    C(xn--) form), different before the first dot; exactly one mupdate master; warm spares only
    for backends, on another host, each volume found by exactly one of C(uuid) or C(label) (with the
    values the M(cyrus.ha.shared_volume) module accepts), with its own mount point, neither a system
    directory nor inside another pair's; replicas only for backends without a warm spare, one per
    instance, on another host, both nodes with an IPv4 boot address (they replicate over it), and no two
    pairs sharing a node on one port."
  - "Names: host names are dot-separated labels of ASCII letters, digits, C(_) and C(-) (at most 63
    characters), never the name of a group of this inventory (C(all), C(ungrouped), C(murder),
    C(mupdate_master), C(backends), C(frontends), C(spares), C(replicas)) and never differing from another host
    only in case; variable names in C(vars), C(hosts.<host>.vars), C(instances.<name>.vars) and
    C(compose) are ASCII identifiers and never a variable this plugin sets (C(ansible_host),
    C(ansible_ssh_host), C(murder_instances), C(murder_standby_instances), C(murder_replica_instances),
    C(murder_host_address6), C(murder_role), C(murder_instance), C(murder_address), C(murder_address_prefix),
    C(murder_servername), C(murder_replication_peer), C(murder_replication_port), C(warm_spare_pairs),
    C(replication_pairs), and
    C(murder_mupdate_servername)
    except in the top-level C(vars)) or one
    Ansible sets (C(inventory_hostname), C(groups), C(hostvars)...); C(groups) names no group of
    this inventory and no host, nor does a group C(keyed_groups) makes; a key written twice in one
    mapping is refused."
  - "Every wrong type, empty value or unknown key is refused; an optional key set to null is the
    same as a key left out. Errors name the offending entry, such as C(instances.be1.address), and
    the cause."
notes:
  - Ansible only warns when an inventory source cannot be parsed and goes on with no hosts from it;
    set C(any_unparsed_is_failed = true) in the C([inventory]) section of C(ansible.cfg) (as this
    collection's own C(ansible.cfg) does) so a rejected topology stops the run with its error.
author:
  - cyrus.ha contributors (@cyrus-ha)
requirements:
  - netaddr (Python library, on the controller)
extends_documentation_fragment:
  - ansible.builtin.constructed
options:
  plugin:
    description: The name of this plugin; marks the file as a Murder topology.
    required: true
    type: str
    choices: [cyrus.ha.murder]
  subnets:
    description: The networks every boot and service address must lie in (CIDR), IPv4 and IPv6.
    required: true
    type: list
    elements: str
  hosts:
    description:
      - The machines, host name to C(address) (boot address, IPv4 or IPv6), optional C(address6)
        and optional C(vars) (extra host variables, none of those the plugin sets).
    required: true
    type: dict
  instances:
    description:
      - The Cyrus instances, instance name to C(role) (C(mupdate), C(backend) or C(frontend)),
        C(host) (where it normally runs), C(address) (IPv4 service address, no prefix length),
        optional C(address6), C(servername) (fully qualified), and optional C(vars) (extra variables
        of its host, for the first instance of a host only; the host's own C(vars) win).
    required: true
    type: dict
  warm_spares:
    description:
      - Warm-spare pairs, each C(instance) (a backend), C(home) (defaults to the instance's host),
        C(spare) (another host) and C(volume) (the shared volume, with C(mount), its mount point, and
        exactly one of C(uuid) or C(label) to find it by; optional C(device), the path it usually
        has under C(/dev), never used to find it; optional C(fstype) default C(ext4), C(options)
        default C(defaults)).
    type: list
    elements: dict
    default: []
  replicas:
    description:
      - Replica pairs, each C(instance) (a backend without a warm spare), C(home) (defaults to the
        instance's host), C(replica) (another host, which runs the same instance as a replica on its own
        disk and, once promoted, as the master) and optional C(port) (default 2005), where the node holding
        the replica runs C(sync_server).
      - The nodes replicate over their boot addresses (C(address), IPv4). A host may hold the replicas of
        several backends, and be the home of one and the replica of another, when each of those pairs has a
        port of its own.
    type: list
    elements: dict
    default: []
  vars:
    description:
      - Variables for every host (C(murder_mupdate_servername), a fully qualified name, is added
        unless set), none of the others the plugin sets.
    type: dict
    default: {}
'''

EXAMPLES = r'''
# murder.yml, used as: ansible-inventory -i murder.yml --graph
# (a whole site, with its vars for the runbooks: examples/ in the collection)
plugin: cyrus.ha.murder
subnets: [198.51.100.0/24, 2001:db8::/64]
hosts:
  mupdate: {address: 198.51.100.10}
  fe1: {address: 198.51.100.11}
  be1: {address: 198.51.100.21}
  be2: {address: 198.51.100.22}
  spare: {address: 198.51.100.30}
  replica: {address: 198.51.100.50}
instances:
  mupdate: {role: mupdate, host: mupdate, address: 198.51.100.110, servername: mupdate-svc.example.org}
  fe1: {role: frontend, host: fe1, address: 198.51.100.111, servername: fe1-svc.example.org}
  be1: {role: backend, host: be1, address: 198.51.100.121, address6: "2001:db8::121",
        servername: be1-svc.example.org}
  be2: {role: backend, host: be2, address: 198.51.100.122, servername: be2-svc.example.org}
warm_spares:
  - instance: be1
    spare: spare
    volume: {uuid: 2f6d7c1e-8a3b-4c55-9e0f-1a2b3c4d5e6f, mount: /srv/cyrus-ha/be1}
# be2 replicates to the host replica (playbooks/replication.yml sets the replica up)
replicas:
  - {instance: be2, replica: replica}
'''

import os

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

from ansible_collections.cyrus.ha.plugins.plugin_utils.topology import (
    TopologyError, build, check_duplicate_keys, check_keyed_groups)


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = 'cyrus.ha.murder'

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(('.yml', '.yaml'))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        data = self.loader.load_from_file(path, cache='none')
        if not isinstance(data, dict) or data.get('plugin') != self.NAME:
            raise AnsibleParserError('%s is not a cyrus.ha.murder topology (plugin: cyrus.ha.murder)' % path)
        try:
            # the text as written: YAML keeps only the last of two equal keys (an encrypted file is one scalar)
            with open(path, 'rb') as handle:
                check_duplicate_keys(handle.read().decode('utf-8', 'replace'))
            built = build(data)
        except TopologyError as exc:
            raise AnsibleParserError('%s: %s' % (os.path.basename(path), exc))
        self._read_config_data(path)
        for group in built['groups']:
            self.inventory.add_group(group)
        for group, hosts in built['groups'].items():
            for host in hosts:
                self.inventory.add_host(host, group=group)
        for key, value in built['vars'].items():
            self.inventory.set_variable('all', key, value)
        strict = self.get_option('strict')
        groups_before = set(self.inventory.groups)
        for host, variables in built['hostvars'].items():
            for key, value in variables.items():
                self.inventory.set_variable(host, key, value)
            hostvars = dict(built['vars'], **variables)
            self._set_composite_vars(self.get_option('compose'), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option('groups'), hostvars, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option('keyed_groups'), hostvars, host, strict=strict)
        try:
            check_keyed_groups(set(self.inventory.groups) - groups_before, built['hostvars'])
        except TopologyError as exc:
            raise AnsibleParserError('%s: %s' % (os.path.basename(path), exc))
