#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: warm_spare_takeover
short_description: Give up or take over a warm-spare pair's Cyrus instance on this node in one call
version_added: 0.3.0
description:
  - Moves one backend instance of a warm-spare pair off or onto the node it runs on, as one call, so that
    a planned failover is two calls (V(released) on the node giving the instance up, V(acquired) on the
    node taking it over) instead of one round trip from the controller per step.
  - V(released) stops the instance, releases its service address and unmounts its volume (the stop order).
    V(acquired) mounts the volume, takes the address and starts the instance (the start order), then writes
    the record of the active node on the volume.
  - Each step is the code of its own module, with the same guards and refusals; M(cyrus.ha.shared_volume)
    for the volume (multiple-mount protection, a volume mounted elsewhere, O(fenced_peer)),
    M(cyrus.ha.service_ip) for the address (the conflict probe refuses an address another node still
    answers, unless the peer is fenced), and the instance through its systemd unit
    C(cyrus-imapd@NAME.service) or, without systemd, the control script of the C(cyrus.ha.cyrus_instance)
    role.
  - Refuses to move an instance that a Pacemaker cluster running on this node manages (an
    C(ocf:cyrus:instance) primitive for it in the live CIB), before changing anything.
  - Each phase is stamped on this node (seconds since the epoch, this node's clock) in RV(phases), for
    drill reports and benches.
  - The first address announcement goes out with the address and the others once the instance has
    started, so the start does not wait for them.
  - An V(acquired) run that fails after it changed something undoes it in reverse (instance stopped,
    address released, volume unmounted) and says so in the message and in RV(undone); the node is never
    left holding the volume or the address without the instance. A V(released) run that fails stops where
    it failed (every step it did goes the right way) and the next run finishes it. A run killed in the
    middle is finished by the next run.
author:
  - cyrus.ha contributors (@cyrus-ha)
options:
  instance:
    description: The instance's name (its directory under C(/etc/cyrus-ha)).
    type: str
    required: true
  state:
    description:
      - V(acquired) mounts the volume, takes the address, starts the instance and writes the record.
      - V(released) stops the instance, releases the address and unmounts the volume.
    type: str
    required: true
    choices: [acquired, released]
  address:
    description: The instance's service address with its prefix length, C(198.51.100.121/24); see M(cyrus.ha.service_ip).
    type: str
    required: true
  interface:
    description: The interface to hold the address; found from the routes when omitted, as M(cyrus.ha.service_ip) finds it.
    type: str
  announce_count:
    description: Gratuitous ARPs or unsolicited neighbour advertisements sent for the address (0 to 100).
    type: int
    default: 3
  announce_interval:
    description: Seconds between two announcements, 0 to 10.
    type: float
    default: 0.2
  force:
    description: Take the address even though another host answered the conflict probe. Needs O(peer_state).
    type: bool
    default: false
  peer_state:
    description: Why the peer does not count, V(fenced) or V(down); needed with O(force).
    type: str
    choices: [fenced, down]
  fenced_peer:
    description:
      - The peer node, stated fenced by the operator (or the fence hook that just powered it off).
      - Lets the volume's stale multiple-mount protection block be cleared, as in M(cyrus.ha.shared_volume), and
        takes the address even when something still answers for it (as O(force) with O(peer_state=fenced)).
    type: str
  uuid:
    description: Filesystem UUID of the volume.
    type: str
  label:
    description: Filesystem label of the volume.
    type: str
  mountpoint:
    description: Where the volume is mounted; needed with V(acquired). See M(cyrus.ha.shared_volume).
    type: path
  devices:
    description: Shell globs of the block devices this node may use for the volume.
    type: list
    elements: str
    default: ["/dev/*"]
  fstype:
    description: The volume's filesystem type.
    type: str
    default: ext4
  opts:
    description: Mount options.
    type: str
    default: defaults
  unclean_mmp:
    description: What to do with a multiple-mount protection block left by a node that died, see M(cyrus.ha.shared_volume).
    type: str
    choices: [wait, refuse]
    default: wait
  mmp_probe_timeout:
    description: Seconds the multiple-mount protection watch may take before the module refuses to decide.
    type: float
    default: 130
  pidfile:
    description: The instance master's pidfile (default C(/run/cyrus-ha/NAME/master.pid)).
    type: path
  service_manager:
    description:
      - How the instance is started and stopped. V(systemd), its unit C(cyrus-imapd@NAME.service); V(direct), the
        control script O(control_script); V(auto), V(systemd) when systemd runs this host (C(/run/systemd/system)
        exists), else V(direct).
    type: str
    choices: [auto, systemd, direct]
    default: auto
  control_script:
    description: The instance control script the C(cyrus.ha.cyrus_instance) role installs (with V(direct)).
    type: path
    default: /usr/local/lib/cyrus-ha/cyrus_instance_ctl.py
  master:
    description: Cyrus's master binary (with V(direct)); the platform's own when omitted.
    type: path
  user:
    description: The user Cyrus runs as (with V(direct)).
    type: str
    default: cyrus
  group:
    description: The group Cyrus runs as (with V(direct)).
    type: str
    default: mail
  ignore_cluster:
    description: Do not ask a running Pacemaker cluster whether it manages the instance; only when it no longer does.
    type: bool
    default: false
  record_file:
    description:
      - With V(acquired), the record of the active node on the volume (JSON), written atomically once the
        instance is up. Kept as it is when it already names this node (C(active) in O(record)). Nothing is written
        when omitted.
    type: path
  record:
    description:
      - What the record says besides the instance and the time, for example C(active) (this node's name),
        C(home), C(spare), C(address), C(servername), C(fenced_peer).
    type: dict
    default: {}
  timeout:
    description: Seconds the instance may take to start or stop (master is killed after it on a stop), 1 to 3600.
    type: float
    default: 30
extends_documentation_fragment:
  - cyrus.ha.attributes
  - cyrus.ha.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Reads the volume, the address and the instance, changes nothing, sends nothing, and predicts C(changed).
      - The address conflict probe and the multiple-mount protection watch are not run, so a conflict shows only
        in a real run.
  diff_mode:
    support: none
  platform:
    details: Linux, as root, with iproute2 C(ip -j), util-linux and e2fsprogs.
notes:
  - The instance must be configured on this node beforehand (the Murder deployment on the home node, the
    C(warm_spare) role's V(setup) and V(ready) on the spare).
seealso:
  - module: cyrus.ha.shared_volume
  - module: cyrus.ha.service_ip
'''

EXAMPLES = r'''
- name: The home node gives be1 up
  cyrus.ha.warm_spare_takeover:
    instance: be1
    state: released
    address: 198.51.100.121/24
    label: cyrus-be1
  delegate_to: be1

- name: The spare takes it over and records itself as active on the volume
  cyrus.ha.warm_spare_takeover:
    instance: be1
    state: acquired
    address: 198.51.100.121/24
    label: cyrus-be1
    mountpoint: /srv/cyrus-ha/be1
    record_file: /srv/cyrus-ha/be1/cyrus-ha-warm-spare.json
    record: {active: spare1, home: be1, spare: spare1}
  delegate_to: spare1

- name: Unplanned, the home node fenced first; its stale MMP block is cleared, its address taken regardless
  cyrus.ha.warm_spare_takeover:
    instance: be1
    state: acquired
    address: 198.51.100.121/24
    label: cyrus-be1
    mountpoint: /srv/cyrus-ha/be1
    fenced_peer: be1
'''

RETURN = r'''
changed:
  description: Whether anything changed (an V(acquired) run that undid what it did still says what it changed).
  returned: always
  type: bool
phases:
  description:
    - The phases in order, each with C(phase), C(at) (seconds since the epoch on this node when it ended),
      C(seconds) (how long it took) and C(changed).
    - Release, C(instance stopped), C(address released), C(volume unmounted). Acquire, C(volume mounted),
      C(address taken), C(instance up), and C(record written) when the record changed.
  returned: always
  type: list
  elements: dict
  sample: [{"phase": "volume mounted", "at": 1764849012.331, "seconds": 0.183, "changed": true}]
service_manager:
  description: How the instance was started or stopped, V(systemd) or V(direct).
  returned: always
  type: str
  sample: direct
volume_result:
  description: What the volume step returned (as M(cyrus.ha.shared_volume) returns it).
  returned: when the step ran
  type: dict
address_result:
  description: What the address step returned (as M(cyrus.ha.service_ip) returns it).
  returned: when the step ran
  type: dict
instance_result:
  description: What the instance step returned, C(changed) and C(msg).
  returned: when the step ran
  type: dict
undone:
  description: What a failed V(acquired) run undid, in order (an entry ends with FAILED when that undo failed).
  returned: always
  type: list
  elements: str
  sample: ["address released", "volume unmounted"]
record_changed:
  description: Whether the record of the active node was written (V(acquired)).
  returned: with V(acquired)
  type: bool
seconds:
  description: Seconds the whole call took on the node.
  returned: always
  type: float
'''

import sys

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cyrus.ha.plugins.module_utils.runner import ModuleRunner
from ansible_collections.cyrus.ha.plugins.module_utils.takeover import Takeover, TakeoverError, check


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instance=dict(type='str', required=True),
            state=dict(type='str', required=True, choices=['acquired', 'released']),
            address=dict(type='str', required=True),
            interface=dict(type='str'),
            announce_count=dict(type='int', default=3),
            announce_interval=dict(type='float', default=0.2),
            force=dict(type='bool', default=False),
            peer_state=dict(type='str', choices=['fenced', 'down']),
            fenced_peer=dict(type='str'),
            uuid=dict(type='str'),
            label=dict(type='str'),
            mountpoint=dict(type='path'),
            devices=dict(type='list', elements='str', default=['/dev/*']),
            fstype=dict(type='str', default='ext4'),
            opts=dict(type='str', default='defaults'),
            unclean_mmp=dict(type='str', default='wait', choices=['wait', 'refuse']),
            mmp_probe_timeout=dict(type='float', default=130),
            pidfile=dict(type='path'),
            service_manager=dict(type='str', default='auto', choices=['auto', 'systemd', 'direct']),
            control_script=dict(type='path', default='/usr/local/lib/cyrus-ha/cyrus_instance_ctl.py'),
            master=dict(type='path'),
            user=dict(type='str', default='cyrus'),
            group=dict(type='str', default='mail'),
            ignore_cluster=dict(type='bool', default=False),
            record_file=dict(type='path'),
            record=dict(type='dict', default={}),
            timeout=dict(type='float', default=30),
        ),
        required_one_of=[('uuid', 'label')],
        mutually_exclusive=[('uuid', 'label')],
        required_if=[('state', 'acquired', ('mountpoint',)), ('force', True, ('peer_state',))],
        supports_check_mode=True,
    )
    try:
        check(module.params)
    except TakeoverError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    runner = ModuleRunner(module)
    tools = ['ip', 'blkid', 'findmnt', 'mount', 'umount']
    if module.params['fstype'] in ('ext4', 'ext3', 'ext2'):
        tools += ['dumpe2fs', 'e2mmpstatus', 'tune2fs', 'e2fsck']
    for tool in tools:
        runner.binary(tool)
    takeover = Takeover(runner, module.params, module.check_mode, ip_bin=runner.binary('ip'),
                        python=sys.executable or '/usr/bin/python3')
    if takeover.manager == 'systemd':
        runner.binary('systemctl')
    try:
        result = takeover.execute()
    except TakeoverError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    for warning in result.pop('warnings', []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
