#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: shared_volume
short_description: Mount or unmount a failover volume behind multiple-mount and split-brain guards
version_added: 0.1.0
description:
  - Mounts, unmounts or prepares the volume of one backend instance on the node that should serve
    it, finding the filesystem by O(uuid) or O(label), never by a device name that can change.
  - Before mounting an ext4 volume it reads the multiple-mount protection (MMP) block from the disk.
    A clean block mounts at once. Any other block is watched for as long as the kernel's own mount
    would watch it (C(min(2*I+1, I+60)) seconds, I being the larger of the update interval, 5 and the
    check interval the block records; 11 s at interval 1, 21 s at 5, 120 s at 30, 360 s at 300), and
    refused as soon as it moves, naming the node, because mounting would corrupt the filesystem.
    When that watch is longer than O(mmp_probe_timeout), the module refuses to decide and says how long
    it needs. A block left by a node that died without unmounting (unchanged for the whole watch) is
    either waited out by the kernel (O(unclean_mmp=wait)), refused (O(unclean_mmp=refuse)), or cleared
    when the operator states that node is fenced (O(fenced_peer)); it is re-read just before clearing.
  - Every check comes before any change (mountpoint, device, mount table, MMP, pidfile); then, in
    order, the mountpoint is made, MMP cleared, the filesystem checked and mounted. A run interrupted
    between two of these steps is finished by the next run; a mountpoint made by a failed run is removed.
  - Refuses a volume already mounted elsewhere on this node, and a mount point that already has
    something else mounted on it, is not a directory, or has a symlink anywhere in its path (the
    mount would land on the link's target and never match the requested path again).
  - Runs the filesystem check a takeover needs (O(fsck=auto) checks when the journal needs recovery,
    the filesystem is not clean, or MMP was cleared).
  - On unmount, when the mount is busy, stops only the process named in O(pidfile) (the instance
    that owns the volume, with SIGTERM and then SIGKILL after O(stop_timeout)), and only when that
    process or one below it holds the mount (a working directory, open file or mapping on it), then
    tries again; if it is still busy it fails naming the processes that hold it, and kills nothing else.
author:
  - cyrus.ha contributors (@cyrus-ha)
options:
  uuid:
    description: Filesystem UUID of the volume.
    type: str
  label:
    description: Filesystem label of the volume.
    type: str
  state:
    description:
      - V(mounted) mounts the volume at O(mountpoint) after the guards pass.
      - V(unmounted) unmounts it wherever it is mounted on this node (at O(mountpoint) when given).
      - V(prepared) enables ext4 multiple-mount protection with O(mmp_update_interval) on an unmounted
        volume, refusing while another node has it in use.
    type: str
    choices: [mounted, unmounted, prepared]
    default: mounted
  mountpoint:
    description:
      - Where to mount the volume. Created (mode 0755) when missing, after every check has passed.
      - An absolute path of letters, digits and C(_.:+@,=-/) only, with no symlink in it (refused).
      - With O(state=unmounted), the path the volume is mounted at (give the real path, not a link).
    type: path
  fstype:
    description: The filesystem the volume must hold; the module refuses a device that holds another.
    type: str
    default: ext4
  opts:
    description: Mount options.
    type: str
    default: defaults
  devices:
    description:
      - Shell-style patterns of the block devices this node may use for the volume, for example
        V(/dev/mapper/mpath*) on a multipath SAN. When several devices carry the same UUID (several
        paths to one disk), narrow this list to the one the node must use; the module refuses to pick.
    type: list
    elements: str
    default: ['/dev/*']
  fsck:
    description:
      - V(auto) runs C(e2fsck -p) when the journal needs recovery, the filesystem is not clean, or MMP
        was cleared; V(always) forces a check; V(never) skips it.
    type: str
    choices: [auto, always, never]
    default: auto
  require_mmp:
    description: Refuse to mount an ext4 volume without multiple-mount protection.
    type: bool
    default: true
  unclean_mmp:
    description:
      - What to do when the MMP block shows a node that stopped updating it without unmounting (a crash).
      - V(wait) lets the kernel wait out that node's heartbeat (about twice the check interval plus a
        second) and mount if it stays silent; V(refuse) fails, asking for fencing.
    type: str
    choices: [wait, refuse]
    default: wait
  fenced_peer:
    description:
      - The operator's statement that the node which last held the volume is fenced (powered off or cut
        from the storage), naming it. With it, a stale MMP block is cleared and the volume mounted at
        once. A heartbeat that is still being updated is refused even then, since a fenced node writes
        nothing.
    type: str
  mmp_probe_timeout:
    description:
      - Longest time in seconds this module may watch an in-use MMP block (1 to 3600). When the kernel's
        own watch for the volume's intervals is longer, the module refuses to decide (and never clears
        MMP), naming the time needed; a live heartbeat usually ends the watch early.
    type: float
    default: 130
  mmp_update_interval:
    description: MMP update interval in seconds set by O(state=prepared) (1 to 300).
    type: int
    default: 5
  pidfile:
    description:
      - Pidfile of the instance that owns the volume (for Cyrus, its master's pidfile). Only this
        process is stopped when an unmount finds the mount busy, and only when it (or a process below
        it) holds the mount.
      - Must be a regular file (not a symlink, FIFO, directory or device) of at most 64 bytes holding one
        PID in ASCII digits; anything else is refused before the unmount. A missing pidfile means no
        instance runs.
    type: path
  stop_timeout:
    description: Seconds to wait after SIGTERM before SIGKILL of the O(pidfile) process (0.1 to 3600).
    type: float
    default: 10
extends_documentation_fragment:
  - cyrus.ha.attributes
  - cyrus.ha.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Reads the disk and the mount table, watches the MMP heartbeat, and predicts; changes nothing.
  diff_mode:
    support: full
notes:
  - Needs root, util-linux (C(blkid), C(findmnt), C(mount)) and, for ext4, e2fsprogs.
  - Tests interrupt runs at each step boundary with the environment variable C(CYRUS_HA_TEST_KILL_AT)
    (a test hook; the process kills itself after that step); never set it in production.
  - The kernel writes its own host name into the MMP block; in containers or namespaces every node
    of one machine shows the same name, so the result also reports the device that wrote it.
seealso:
  - name: ext4 multiple-mount protection
    description: The kernel documentation of the mmp feature.
    link: https://docs.kernel.org/filesystems/ext4/globals.html
requirements:
  - util-linux
  - e2fsprogs
'''

EXAMPLES = r'''
- name: Enable multiple-mount protection on be1's volume (once, unmounted everywhere)
  cyrus.ha.shared_volume:
    label: cyrus-be1
    state: prepared
    mmp_update_interval: 1

- name: Take over be1's volume on the spare after a planned stop on be1
  cyrus.ha.shared_volume:
    label: cyrus-be1
    mountpoint: /srv/cyrus/be1
    devices: ['/dev/mapper/mpath-be1']

- name: Unplanned takeover, be1 fenced by the operator's fencing step
  cyrus.ha.shared_volume:
    uuid: 0b6e3c0e-8f0a-4e8e-9d4b-2f1d7f0c1a22
    mountpoint: /srv/cyrus/be1
    fenced_peer: be1

- name: Release the volume, stopping be1's Cyrus master if it still runs
  cyrus.ha.shared_volume:
    label: cyrus-be1
    mountpoint: /srv/cyrus/be1
    state: unmounted
    pidfile: /run/cyrus-ha/be1/master.pid
'''

RETURN = r'''
device:
  description: The block device this node used for the volume.
  returned: always
  type: str
  sample: /dev/mapper/mpath-be1
uuid:
  description: The filesystem UUID.
  returned: always
  type: str
label:
  description: The filesystem label.
  returned: always
  type: str
fstype:
  description: The filesystem type found on the device.
  returned: always
  type: str
  sample: ext4
mountpoint:
  description: Where the volume is (or was, or would be) mounted.
  returned: always
  type: str
mounted_before:
  description: Whether the volume was mounted on this node before the task.
  returned: when state is mounted or unmounted
  type: bool
mmp:
  description:
    - The multiple-mount protection report. C(state) is V(clean), V(in_use), V(stale) (a node stopped
      updating without unmounting), V(fsck) or V(disabled); C(live) tells whether the heartbeat moved
      while the module watched it.
  returned: when state is mounted or prepared and the volume was not already mounted here
  type: dict
  sample: {enabled: true, state: stale, live: false, node_name: vm, device_name: loop3, sequence: 42,
           update_interval: 1, wait_needed: 11, watched_seconds: 11}
fsck:
  description: Whether a filesystem check ran, why or why not, and its exit code and output.
  returned: when state is mounted and the volume was not already mounted here
  type: dict
holders:
  description: Processes found holding the mount when an unmount failed (PID, command, what they use).
  returned: when state is unmounted
  type: list
  elements: dict
stopped:
  description: What was done to the O(pidfile) process (pid, whether it ran, the signal that stopped it).
  returned: when state is unmounted and the mount was busy
  type: dict
actions:
  description: The steps taken (or, in check mode, that would be taken), in order.
  returned: always
  type: list
  elements: str
  sample: [clear_mmp, fsck, mount]
timings:
  description: Seconds spent in each step (mmp_check, clear_mmp, fsck, mount, umount) and in total.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cyrus.ha.plugins.module_utils.runner import ModuleRunner
from ansible_collections.cyrus.ha.plugins.module_utils.volume import Volume, VolumeError, check_params


def main():
    module = AnsibleModule(
        argument_spec=dict(
            uuid=dict(type='str'),
            label=dict(type='str'),
            state=dict(type='str', default='mounted', choices=['mounted', 'unmounted', 'prepared']),
            mountpoint=dict(type='path'),
            fstype=dict(type='str', default='ext4'),
            opts=dict(type='str', default='defaults'),
            devices=dict(type='list', elements='str', default=['/dev/*']),
            fsck=dict(type='str', default='auto', choices=['auto', 'always', 'never']),
            require_mmp=dict(type='bool', default=True),
            unclean_mmp=dict(type='str', default='wait', choices=['wait', 'refuse']),
            fenced_peer=dict(type='str'),
            mmp_probe_timeout=dict(type='float', default=130),
            mmp_update_interval=dict(type='int', default=5),
            pidfile=dict(type='path'),
            stop_timeout=dict(type='float', default=10),
        ),
        required_one_of=[('uuid', 'label')],
        mutually_exclusive=[('uuid', 'label')],
        required_if=[('state', 'mounted', ('mountpoint',))],
        supports_check_mode=True,
    )
    params = module.params
    try:
        check_params(params)
    except VolumeError as exc:
        module.fail_json(msg=exc.msg)
    tools = ['blkid', 'findmnt', 'mount', 'umount']
    if params['fstype'] in ('ext4', 'ext3', 'ext2'):
        tools += ['dumpe2fs', 'e2mmpstatus', 'tune2fs', 'e2fsck']
    runner = ModuleRunner(module)
    for tool in tools:
        runner.binary(tool)
    volume = Volume(runner, params, check_mode=module.check_mode)
    try:
        result = getattr(volume, params['state'])()
    except VolumeError as exc:
        module.fail_json(msg=exc.msg, actions=volume.actions, timings=volume.timings, **exc.details)
    except OSError as exc:
        module.fail_json(msg=f'{volume.identity()}: {exc}', actions=volume.actions, timings=volume.timings)
    for warning in volume.warnings:
        module.warn(warning)
    if module._diff and params['state'] != 'prepared':
        after = params['state'] == 'mounted'
        result['diff'] = {'before': {'mounted': result['mounted_before'], 'mountpoint': result['mountpoint']},
                          'after': {'mounted': after, 'mountpoint': result['mountpoint'] if after else None}}
    module.exit_json(**result)


if __name__ == '__main__':
    main()
