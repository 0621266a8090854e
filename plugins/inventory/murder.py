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
    a Cyrus Murder, the Cyrus instances they run (role, service address, servername) and the
    warm-spare pairs of backend instances (home host, spare host, shared volume), and builds the
    inventory from it.
  - "Groups: C(murder) (every host), C(mupdate_master) (the host of the mupdate master instance; not
    C(mupdate), so that a host called C(mupdate) does not clash with it), C(backends), C(frontends),
    and C(spares) (hosts that are the warm spare of a backend instance)."
  - "Host variables: C(ansible_host) (the host's boot address), C(murder_instances) (the instances
    homed on the host: C(name), C(role), C(host), C(address), C(address_prefix), C(address6),
    C(address6_prefix), C(servername), C(spare), C(volume)), C(murder_standby_instances) (the
    instances this host is the warm spare of), and for the host's first instance C(murder_role),
    C(murder_instance), C(murder_address), C(murder_address_prefix) and C(murder_servername);
    every host gets C(murder_mupdate_servername)."
  - "Validated with netaddr before any host is added: subnets in CIDR form without host bits;
    every address written canonically (IPv6 compressed and lower case), without prefix length,
    inside a declared subnet, never a network, broadcast, loopback or link-local address; service
    addresses unique and never a host's own boot address; servernames fully qualified and
    different before the first dot; exactly one mupdate master; warm spares only for backends,
    on another host, each with its own volume and mount point. Errors name the offending entry, such as
    C(instances.be1.address)."
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
        and optional C(vars) (extra host variables).
    required: true
    type: dict
  instances:
    description:
      - The Cyrus instances, instance name to C(role) (C(mupdate), C(backend) or C(frontend)),
        C(host) (where it normally runs), C(address) (IPv4 service address, no prefix length),
        optional C(address6), C(servername) (fully qualified), and optional C(vars) (extra variables
        of its host).
    required: true
    type: dict
  warm_spares:
    description:
      - Warm-spare pairs, each C(instance) (a backend), C(home) (defaults to the instance's host),
        C(spare) (another host) and C(volume) (the shared volume, with C(mount), its mount point, and at
        least one of C(uuid), C(label) or C(device) to find it by; optional C(fstype) default C(ext4),
        C(options) default C(defaults)).
    type: list
    elements: dict
    default: []
  vars:
    description: Variables for every host (C(murder_mupdate_servername) is added unless set).
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
  spare: {address: 198.51.100.30}
instances:
  mupdate: {role: mupdate, host: mupdate, address: 198.51.100.110, servername: mupdate-svc.example.org}
  fe1: {role: frontend, host: fe1, address: 198.51.100.111, servername: fe1-svc.example.org}
  be1: {role: backend, host: be1, address: 198.51.100.121, address6: "2001:db8::121",
        servername: be1-svc.example.org}
warm_spares:
  - instance: be1
    spare: spare
    volume: {uuid: 2f6d7c1e-8a3b-4c55-9e0f-1a2b3c4d5e6f, mount: /srv/cyrus-ha/be1}
'''

import os

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

from ansible_collections.cyrus.ha.plugins.plugin_utils.topology import TopologyError, build


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
        for host, variables in built['hostvars'].items():
            for key, value in variables.items():
                self.inventory.set_variable(host, key, value)
            hostvars = dict(built['vars'], **variables)
            self._set_composite_vars(self.get_option('compose'), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option('groups'), hostvars, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option('keyed_groups'), hostvars, host, strict=strict)
