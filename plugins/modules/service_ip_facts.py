#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: service_ip_facts
short_description: Which service IP addresses this node holds now
version_added: 0.1.0
description:
  - Lists the global IPv4 and IPv6 addresses of the node (or of a network namespace) that are not
    its own boot addresses, that is the service addresses it serves now, so that a fact-gathering
    play knows which node serves which instance.
  - A boot address is the oldest global address of its family on an interface that
    M(cyrus.ha.service_ip) did not add, the same rule M(cyrus.ha.service_ip) uses to refuse managing it.
    What M(cyrus.ha.service_ip) added is known from its records, trusted only while they name this boot,
    this network namespace and the interface holding the address (a record from a namespace deleted and
    created again under the same name is ignored).
author:
  - cyrus.ha contributors (@cyrus-ha)
options:
  namespace:
    description:
      - Look inside this named network namespace (C(/run/netns/NAME)).
    type: str
  within:
    description:
      - Only report service addresses inside these networks (for example the instances' range).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - cyrus.ha.attributes
  - cyrus.ha.attributes.facts
  - cyrus.ha.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Reads only.
  diff_mode:
    support: none
  platform:
    details: Linux with iproute2 C(ip) supporting C(-j).
seealso:
  - module: cyrus.ha.service_ip
'''

EXAMPLES = r'''
- name: Which service addresses does each backend hold?
  cyrus.ha.service_ip_facts:
    within:
      - 198.51.100.0/24
      - 2001:db8::/64

- name: Show them
  ansible.builtin.debug:
    msg: "{{ cyrus_ha_service_ips | map(attribute='address') | list }}"
'''

RETURN = r'''
ansible_facts:
  description: Facts about the node's addresses.
  returned: always
  type: dict
  contains:
    cyrus_ha_service_ips:
      description:
        - The service addresses held now, each with C(address), C(prefix), C(family) (V(ipv4) or
          V(ipv6)), C(interface), C(label) (IPv4), C(tentative), C(dadfailed) and C(interrupted) (added by a
          M(cyrus.ha.service_ip) run that stopped before announcing it; the next V(present) run announces it).
      returned: always
      type: list
      elements: dict
      sample: [{"address": "198.51.100.121", "prefix": 24, "family": "ipv4", "interface": "eth0",
                "label": "eth0:imap1", "tentative": false, "dadfailed": false, "interrupted": false}]
    cyrus_ha_boot_ips:
      description: The node's own boot addresses, in the same form.
      returned: always
      type: list
      elements: dict
      sample: [{"address": "198.51.100.30", "prefix": 24, "family": "ipv4", "interface": "eth0",
                "label": "eth0", "tentative": false, "dadfailed": false, "interrupted": false}]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cyrus.ha.plugins.module_utils.runner import ModuleRunner
from ansible_collections.cyrus.ha.plugins.module_utils.service_ip import ServiceIpError, held_addresses


def main():
    module = AnsibleModule(
        argument_spec=dict(
            namespace=dict(type='str'),
            within=dict(type='list', elements='str', default=[]),
        ),
        supports_check_mode=True,
    )
    runner = ModuleRunner(module)
    try:
        found = held_addresses(module.params['namespace'], module.params['within'], runner, runner.binary('ip'))
    except ServiceIpError as exc:
        module.fail_json(msg=exc.msg)
    module.exit_json(changed=False, ansible_facts={'cyrus_ha_service_ips': found['service_ips'],
                                                   'cyrus_ha_boot_ips': found['boot_ips']})


if __name__ == '__main__':
    main()
