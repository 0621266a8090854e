# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the path is: statfs f_type, FUSE subtype, mount source and options, free space; risky options."""

from __future__ import annotations

import os
import re

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import result
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi

MAGIC = {
    0xEF53: 'ext4', 0x58465342: 'xfs', 0x9123683E: 'btrfs', 0x01021994: 'tmpfs', 0x6969: 'nfs',
    0x65735546: 'fuse', 0x47504653: 'gpfs', 0x00C36400: 'cephfs', 0x7461636F: 'ocfs2', 0x01161970: 'gfs2',
    0x0BD00BD0: 'lustre', 0x2FC12FC1: 'zfs', 0x794C7630: 'overlayfs', 0xFF534D42: 'cifs', 0xFE534D42: 'smb2',
    0x01021997: '9p', 0x19830326: 'beegfs', 0x6165676C: 'pstorefs', 0x5346544E: 'ntfs', 0x4D44: 'vfat',
    0xF15F: 'ecryptfs', 0x73717368: 'squashfs', 0x858458F6: 'ramfs', 0x2011BAB0: 'exfat', 0xF2F52010: 'f2fs',
}
# File systems shared between hosts: single-host checks cannot qualify them alone.
SHARED = {'nfs', 'nfs4', 'cephfs', 'ceph', 'gpfs', 'ocfs2', 'gfs2', 'lustre', 'cifs', 'smb2', 'smb3', '9p',
          'beegfs', 'fuse.sshfs', 'fuse.glusterfs', 'fuse.ceph-fuse', 'fuse.s3fs', 'virtiofs'}
# option (or option prefix ending in '=') -> why it is risky for Cyrus
RISKY = {
    'nolock': 'locks are local to this client (NFS nolock)',
    'local_lock=': 'locks are local to this client (NFS local_lock)',
    'localflocks': 'locks are local to this node (localflocks)',
    'actimeo=': 'attribute cache hides other hosts\' changes (actimeo)',
    'acregmin=': 'attribute cache hides other hosts\' changes (acregmin)',
    'acregmax=': 'attribute cache hides other hosts\' changes (acregmax)',
    'acdirmin=': 'attribute cache hides other hosts\' changes (acdirmin)',
    'acdirmax=': 'attribute cache hides other hosts\' changes (acdirmax)',
    'nocto': 'no close-to-open consistency (nocto)',
    'lookupcache=positive': 'lookup cache hides other hosts\' renames (lookupcache)',
    'nobrl': 'byte-range locks are not sent to the server (nobrl)',
    'cache=loose': 'loose caching hides other clients\' writes (cache=loose)',
    'forcemand': 'locks are mandatory (forcemand)',
    'mand': 'mandatory locking enabled (mand)',
    'nosharecache': 'separate caches per mount (nosharecache)',
}
SAFE_VALUES = {'local_lock=none'}


def unescape(field: str) -> str:
    return re.sub(r'\\([0-7]{3})', lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo(text: str) -> list:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(' - ')
        if not sep:
            continue
        fields = left.split()
        rest = right.split()
        if len(fields) < 6 or len(rest) < 2:
            continue
        mounts.append({'mount_id': int(fields[0]), 'root': unescape(fields[3]), 'mount_point': unescape(fields[4]),
                       'mount_options': fields[5].split(','), 'fstype': rest[0], 'source': unescape(rest[1]),
                       'super_options': rest[2].split(',') if len(rest) > 2 else []})
    return mounts


def find_mount(mounts: list, path: str):
    """The mount holding path: the longest mount point that contains it, the last such mount if stacked."""
    best = None
    for mount in mounts:
        point = mount['mount_point']
        if path == point or path.startswith(point.rstrip('/') + '/') or point == '/':
            if best is None or len(point) >= len(best['mount_point']):
                best = mount
    return best


def risky_options(options: list) -> list:
    found = []
    for option in options:
        if option in SAFE_VALUES:
            continue
        for key, why in RISKY.items():
            if option == key or (key.endswith('=') and option.startswith(key)):
                found.append({'option': option, 'why': why})
    return found


def identify(path: str, fstype_magic: int, statvfs: dict, mountinfo_text: str) -> dict:
    """The identity result from facts gathered elsewhere (statfs/statvfs in a child, mountinfo here)."""
    steps = result.Steps('identity')
    name = MAGIC.get(fstype_magic, 'unknown')
    mount = find_mount(parse_mountinfo(mountinfo_text), path) or {}
    fstype = mount.get('fstype', '')
    subtype = fstype.split('.', 1)[1] if fstype.startswith('fuse.') else None
    options = list(mount.get('mount_options', [])) + [o for o in mount.get('super_options', [])
                                                      if o not in mount.get('mount_options', [])]
    risky = risky_options(options)
    steps.evidence.update({
        'fs_type': name, 'magic': '0x%08X' % fstype_magic, 'mount_fstype': fstype or None, 'fuse_subtype': subtype,
        'source': mount.get('source'), 'mount_point': mount.get('mount_point'), 'options': options,
        'risky_options': risky, 'shared': fstype in SHARED or name in SHARED or (subtype is not None and
                                                                                 'fuse.' + subtype in SHARED),
    })
    steps.evidence.update(statvfs)
    for item in risky:
        steps.warn('mount option %s: %s' % (item['option'], item['why']))
    label = name + ('.' + subtype if subtype else '')
    return steps.finish('%s (%s) from %s on %s; %s MiB and %s inodes free' % (
        label, '0x%08X' % fstype_magic, mount.get('source'), mount.get('mount_point'),
        statvfs.get('free_bytes', 0) // (1024 * 1024), statvfs.get('free_inodes')))


def read_mountinfo() -> str:
    with open('/proc/self/mountinfo', encoding='utf-8', errors='replace') as handle:
        return handle.read()


def path_facts(path: str) -> dict:
    """stat, statfs and statvfs of path, and the path with its symlinks resolved (real_path): run in a
    child with a timeout (a hung fs must not hang us). {'dangling': target} for a symlink to nothing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return {'dangling': os.readlink(path)}
        raise
    vfs = os.statvfs(path)
    return {
        'real_path': os.path.realpath(path),
        'is_dir': os.path.isdir(path), 'writable': os.access(path, os.W_OK | os.X_OK),
        'dev': st.st_dev, 'magic': sysapi.statfs_type(path),
        'statvfs': {'free_bytes': vfs.f_bavail * vfs.f_frsize, 'total_bytes': vfs.f_blocks * vfs.f_frsize,
                    'free_inodes': vfs.f_favail, 'total_inodes': vfs.f_files,
                    'read_only': bool(vfs.f_flag & os.ST_RDONLY)},
    }
