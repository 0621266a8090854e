#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: service_ip
short_description: Add, remove or re-announce a service IP address, refusing one a live peer still holds
version_added: 0.1.0
description:
  - Manages one runtime service address (IPv4 or IPv6) on the node it runs on, the way a warm
    spare takes over a failed backend's address, with C(ip -j) (iproute2) for the address and raw
    C(AF_PACKET) sockets for the link traffic, so no helper binary (C(arping), C(send_arp)) is needed.
  - Before adding, it probes the link (an ARP probe from 0.0.0.0 for IPv4, a duplicate address
    detection neighbour solicitation from the unspecified address C(::) for IPv6). If another host answers, the module fails
    naming the MAC address that answered and changes nothing, unless O(force=true) and
    O(peer_state) say that the peer is fenced or down.
  - After adding, IPv6 waits for the kernel's duplicate address detection (unless O(ipv6_dad=false))
    and removes the address again if it ends C(dadfailed). Then it announces the address, with
    gratuitous ARP (IPv4) or unsolicited neighbour advertisements with the Override flag (IPv6),
    O(announce_count) times O(announce_interval) seconds apart. Nothing is announced on removal or
    on a loopback interface.
  - Nothing is left half done. If DAD or the announcement fails after the address was added, the
    address is removed again, so that the next run does the whole takeover. A failed run reports
    in C(changed) what it did change (for example, a differing copy it deleted first).
  - An address already present with the same settings is left alone (C(changed=false)). One present
    with another prefix, label, broadcast, flags or on another interface is reported in
    RV(corrected) and replaced; the module refuses instead (and says which addresses) when
    deleting it would make the kernel delete secondary addresses with it.
  - The node's own (boot) address, the oldest global address of its family on an interface that
    this module did not add, and the address the Ansible connection came in on, are never managed.
    The module remembers what it added with one small record per address under C(/run/cyrus-ha/service_ip)
    (gone after a reboot, like the runtime address itself), so an IPv6 service address on a host
    without another global IPv6 address is still a service address. A record is trusted only while it
    names this boot (the boot id), this network namespace (its inode, so a namespace deleted and created
    again under the same name is another one) and the interface holding the address (its index); a
    record from a previous life is ignored (the address counts as the node's own and is never removed)
    and deleted by the next run.
  - A run killed half way (SIGKILL, a crash) is finished by the next one. The record says C(adding)
    from before the address is added until the announcements went out; a later V(present) run that
    finds the address with such a record announces it again, reports a change and says why in
    RV(interrupted).
  - An interface without an Ethernet address (tun, GRE, WireGuard) gets no ARP, neighbour
    advertisement or conflict probe; the module refuses it unless O(announce_count=0) and
    O(conflict_probe=false).
  - To list which service addresses a node holds, use M(cyrus.ha.service_ip_facts).
author:
  - cyrus.ha contributors (@cyrus-ha)
options:
  address:
    description:
      - The service address with its prefix length, C(203.0.113.50/24) or C(2001:db8::50/64).
      - Network and broadcast addresses (host bits all zero or all one) are refused, as are
        multicast, loopback, unspecified, link-local (C(169.254.0.0/16), C(fe80::/10)) and IPv4-mapped
        IPv6 addresses, addresses with a zone index (C(%eth0)) and anything but printable ASCII.
    type: str
    required: true
  interface:
    description:
      - The interface to hold the address.
      - When omitted it is found as Pacemaker's IPaddr2 finds it, from
        C(ip route list match ADDRESS/PREFIX), the routes covering the whole subnet. Only directly
        connected routes count (for IPv4 scope C(link)), never a default, unreachable, blackhole,
        prohibit or throw route or a route via a gateway; the longest prefix wins, then the lowest
        metric.
    type: str
  label:
    description:
      - IPv4 address label, at most 15 characters, starting with the interface name (C(eth0:imap)).
    type: str
  broadcast:
    description:
      - IPv4 broadcast address, inside the address's subnet and not the address itself. When
        omitted the kernel's default is used.
    type: str
  preferred_lft:
    description:
      - Preferred lifetime, C(forever) or seconds (ASCII digits, at most 4294967295). C(0) makes the address
        deprecated (it stays usable but is not chosen as a source address).
    type: str
  noprefixroute:
    description:
      - Do not create a prefix route for the address.
    type: bool
    default: false
  namespace:
    description:
      - Run inside this named network namespace (C(/run/netns/NAME)); the module enters it with
        C(setns()) before doing anything else.
    type: str
  state:
    description:
      - V(present) adds the address (probe, add, DAD, announce); V(absent) removes it and sends
        nothing; V(announced) only re-announces an address that is present, and always reports a
        change when it sends something.
    type: str
    choices: [present, absent, announced]
    default: present
  announce_count:
    description:
      - Number of gratuitous ARPs or unsolicited neighbour advertisements to send. V(0) sends none; at most 100.
    type: int
    default: 3
  announce_interval:
    description:
      - Seconds between two announcements (honoured exactly; the first is sent at once), a finite number
        from 0 to 10.
    type: float
    default: 0.2
  announce_mode:
    description:
      - IPv4 only. Gratuitous ARP as a V(request) (sender IP = target IP, the form Linux accepts with
        C(arp_accept=0)), a V(reply) (target MAC = sender MAC), or V(both) each round. Some devices
        only accept one of them.
    type: str
    choices: [request, reply, both]
    default: request
  conflict_probe:
    description:
      - Probe the link before adding the address and refuse it if another host answers.
      - V(false) needs O(peer_state), the statement that the peer cannot answer (without the probe nothing
        stops two nodes from holding the address), except on a loopback interface or one without an
        Ethernet address, where no probe can be sent.
    type: bool
    default: true
  probe_count:
    description:
      - Number of probes, spread evenly over O(probe_timeout), 1 to 100.
    type: int
    default: 2
  probe_timeout:
    description:
      - Seconds to listen for an answer to the conflict probe; the takeover waits this long before
        adding the address.
      - A live holder's kernel answers in well under a millisecond on a LAN (median 0.05 ms, at most
        4.3 ms in 1200 probes on a loaded 2-core test machine, C(bench/probe_latency.py)), so the
        default keeps IPv4 takeover as fast as Pacemaker's IPaddr2, which does not probe at all.
        Raise it where a holder may answer late (virtual machines with CPU steal, congested or
        long links); the probe then costs that much per takeover. A finite number from 0.001 to 10.
    type: float
    default: 0.02
  ipv6_dad:
    description:
      - Wait for the kernel's duplicate address detection on a new IPv6 address. V(false) adds it
        with C(nodad), and the conflict probe is then the only duplicate check.
    type: bool
    default: true
  dad_timeout:
    description:
      - Seconds to wait for duplicate address detection before giving up (and removing the address),
        a finite number from 0 to 300.
    type: float
    default: 10
  require_link_up:
    description:
      - Fail when the interface is administratively down, has no carrier or its lower layer is down,
        instead of adding an address nobody can reach.
    type: bool
    default: true
  force:
    description:
      - Add the address even though another host answered the conflict probe. Needs O(peer_state).
    type: bool
    default: false
  peer_state:
    description:
      - The operator's statement, required with O(force=true) and with O(conflict_probe=false), of why the
        peer does not count, V(fenced) (powered off or isolated by a fence device) or V(down) (known to be down).
      - Returned in RV(forced) so that the run records who overrode the probe and why.
    type: str
    choices: [fenced, down]
extends_documentation_fragment:
  - cyrus.ha.attributes
  - cyrus.ha.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Sends nothing (no probe, no announcement), changes nothing, and predicts C(changed) exactly.
      - Because the conflict probe is not sent, a conflict shows only in a real run.
  diff_mode:
    support: full
    details:
      - Before and after are the address's settings (empty when absent).
  platform:
    details: Linux with iproute2 C(ip) supporting C(-j) (iproute2 4.14 or later); runs as root.
notes:
  - If Ansible reaches the host through the service address, removing or moving that address cuts
    Ansible's own connection; inventories must use each node's boot address.
  - NetworkManager or systemd-networkd may drop runtime addresses when they reconfigure an interface.
  - In cloud networks an announcement does nothing; the provider's API has to move the address.
seealso:
  - module: cyrus.ha.service_ip_facts
'''

EXAMPLES = r'''
- name: Take over the backend's service address on the warm spare
  cyrus.ha.service_ip:
    address: 198.51.100.121/24
    interface: eth0
    label: eth0:imap1

- name: Release it on the old owner (nothing is announced on release)
  cyrus.ha.service_ip:
    address: 198.51.100.121/24
    state: absent

- name: The same for IPv6, waiting for DAD, inside a network namespace
  cyrus.ha.service_ip:
    address: 2001:db8::121/64
    namespace: spare

- name: The peer was fenced but its last ARP answer is still cached somewhere; take it anyway
  cyrus.ha.service_ip:
    address: 198.51.100.121/24
    force: true
    peer_state: fenced

- name: Re-announce after a switch or router restart
  cyrus.ha.service_ip:
    address: 198.51.100.121/24
    state: announced
    announce_count: 5
    announce_mode: both
'''

RETURN = r'''
address:
  description: The managed address with its prefix length.
  returned: always
  type: str
  sample: 198.51.100.121/24
interface:
  description: The interface that holds (or held) the address, given or found from the routes.
  returned: always
  type: str
  sample: eth0
prefix:
  description: The prefix length.
  returned: always
  type: int
  sample: 24
family:
  description: V(ipv4) or V(ipv6).
  returned: always
  type: str
  sample: ipv4
state:
  description: The requested state.
  returned: always
  type: str
  sample: present
present_before:
  description: Whether the address was on any interface of the node before the run.
  returned: always
  type: bool
  sample: false
before:
  description: The address's settings before the run (empty when it was absent).
  returned: always
  type: dict
  sample: {}
corrected:
  description: Existing instances of the address that differed from the wanted settings and were replaced.
  returned: always
  type: list
  elements: str
  sample: ["198.51.100.121/25 on eth0: prefix /25 (wanted /24)"]
conflict_probe:
  description:
    - The conflict probe's outcome, C(conflict), C(mac) (the MAC that answered), C(probes) (sent)
      and C(seconds); or C(skipped) with the reason (address already held, check mode, loopback, disabled).
  returned: always
  type: dict
  sample: {"conflict": false, "mac": null, "probes": 2, "seconds": 0.2002}
interrupted:
  description: Present when a previous run added the address and was stopped before announcing it; this run announced it.
  returned: when a previous run was interrupted
  type: str
  sample: "a previous run added 198.51.100.121 on eth0 but stopped before announcing it (its marker says `adding`): this run announces it"
forced:
  description: Present when O(force) overrode an answered probe, with O(peer_state) and the MAC that answered.
  returned: when forced
  type: dict
  sample: {"peer_state": "fenced", "answered_by": "02:00:00:00:00:01"}
announcements:
  description: Announcements sent (C(sent)) and how (C(count), C(interval), C(mode)).
  returned: always
  type: dict
  sample: {"sent": 3, "count": 3, "interval": 0.2, "mode": "request"}
timings:
  description:
    - Seconds spent, measured inside the module. C(probe) (conflict probe), C(address_add),
      C(address_del), C(dad_wait), C(usable) (from the start until the address was usable),
      C(first_announcement) (from the start until the first announcement left), C(total).
      Only the steps that ran appear.
  returned: always
  type: dict
  sample: {"probe": 0.2004, "address_add": 0.0021, "usable": 0.2051, "first_announcement": 0.2063, "total": 0.6071}
diff:
  description: Before and after settings of the address (shown in diff mode).
  returned: always
  type: dict
  sample: {"before": {}, "after": {"address": "198.51.100.121/24", "interface": "eth0"}}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cyrus.ha.plugins.module_utils.runner import ModuleRunner
from ansible_collections.cyrus.ha.plugins.module_utils.service_ip import PROBE_COUNT, PROBE_TIMEOUT, ServiceIpError, manage


def main():
    module = AnsibleModule(
        argument_spec=dict(
            address=dict(type='str', required=True),
            interface=dict(type='str'),
            label=dict(type='str'),
            broadcast=dict(type='str'),
            preferred_lft=dict(type='str'),
            noprefixroute=dict(type='bool', default=False),
            namespace=dict(type='str'),
            state=dict(type='str', default='present', choices=['present', 'absent', 'announced']),
            announce_count=dict(type='int', default=3),
            announce_interval=dict(type='float', default=0.2),
            announce_mode=dict(type='str', default='request', choices=['request', 'reply', 'both']),
            conflict_probe=dict(type='bool', default=True),
            probe_count=dict(type='int', default=PROBE_COUNT),
            probe_timeout=dict(type='float', default=PROBE_TIMEOUT),
            ipv6_dad=dict(type='bool', default=True),
            dad_timeout=dict(type='float', default=10),
            require_link_up=dict(type='bool', default=True),
            force=dict(type='bool', default=False),
            peer_state=dict(type='str', choices=['fenced', 'down']),
        ),
        required_if=[('force', True, ['peer_state'])],
        supports_check_mode=True,
    )
    runner = ModuleRunner(module)
    try:
        result = manage(module.params, runner, module.check_mode, runner.binary('ip'))
    except ServiceIpError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
