# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A passthrough FUSE filesystem (mfusepy) with one fault switched on, for the storage_probe tests.

    python cyha_faultfs.py BACKING MOUNTPOINT [--fault none|locks|direct_io|nolink|fsync_eio|hang]

Faults: `locks` grants every fcntl and flock lock to everyone; `direct_io` mounts with direct_io
(page cache bypassed: shared mmap fails with ENODEV); `nolink` refuses link() with EPERM;
`fsync_eio` fails fsync with EIO; `hang` makes getattr/statfs block forever once the file
BACKING/cyha-hang exists. Runs in the foreground until unmounted or killed.

The kernel caches no attribute or entry (attr_timeout=0, entry_timeout=0): a high-level FUSE filesystem
gives each path its own kernel inode, so with the default one-second cache a hard link's nlink could be
seen stale after the other link's unlink, depending on timing. The rig is coherent except for its fault.
"""

from __future__ import annotations

import argparse
import errno
import os
import threading

import mfusepy

FAULTS = ('none', 'locks', 'direct_io', 'nolink', 'fsync_eio', 'hang')
STAT_KEYS = ('st_atime', 'st_ctime', 'st_gid', 'st_mode', 'st_mtime', 'st_nlink', 'st_size', 'st_uid', 'st_ino')


class FaultFS(mfusepy.Operations):
    def __init__(self, root: str, fault: str):
        self.root = os.path.realpath(root)
        self.fault = fault
        self.forever = threading.Event()

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip('/'))

    def _maybe_hang(self):
        if self.fault == 'hang' and os.path.exists(os.path.join(self.root, 'cyha-hang')):
            self.forever.wait()

    def getattr(self, path, fh=None):
        self._maybe_hang()
        try:
            st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
        except OSError as exc:
            raise mfusepy.FuseOSError(exc.errno)
        return {key: getattr(st, key) for key in STAT_KEYS}

    def statfs(self, path):
        self._maybe_hang()
        vfs = os.statvfs(self._full(path))
        return {key: getattr(vfs, key) for key in ('f_bavail', 'f_bfree', 'f_blocks', 'f_bsize', 'f_favail',
                                                   'f_ffree', 'f_files', 'f_flag', 'f_frsize', 'f_namemax')}

    def access(self, path, amode):
        if not os.access(self._full(path), amode):
            raise mfusepy.FuseOSError(errno.EACCES)
        return 0

    def readdir(self, path, fh):
        # with use_ino, entries need their inode: readdir(3) skips d_ino 0
        full = self._full(path)
        entries = []
        for name in ['.', '..'] + os.listdir(full):
            st = os.lstat(os.path.join(full, name))
            entries.append((name, {'st_ino': st.st_ino, 'st_mode': st.st_mode}, 0))
        return entries

    def mkdir(self, path, mode):
        return os.mkdir(self._full(path), mode)

    def rmdir(self, path):
        return os.rmdir(self._full(path))

    def unlink(self, path):
        return os.unlink(self._full(path))

    def rename(self, old, new):
        return os.rename(self._full(old), self._full(new))

    def link(self, target, source):
        if self.fault == 'nolink':
            raise mfusepy.FuseOSError(errno.EPERM)
        return os.link(self._full(source), self._full(target))

    def chmod(self, path, mode):
        return os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        return os.chown(self._full(path), uid, gid)

    def utimens(self, path, times=None):
        return os.utime(self._full(path), times)

    def create(self, path, mode, fi=None):
        return os.open(self._full(path), os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)

    def open(self, path, flags):
        return os.open(self._full(path), flags & ~(os.O_CREAT | os.O_EXCL))

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        if fh is not None:
            return os.ftruncate(fh, length)
        return os.truncate(self._full(path), length)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0

    def fsync(self, path, datasync, fh):
        if self.fault == 'fsync_eio':
            raise mfusepy.FuseOSError(errno.EIO)
        os.fsync(fh)
        return 0


class GrantAll(FaultFS):
    """Every lock request succeeds and F_GETLK never sees a holder: locks exclude nobody."""

    def lock(self, path, fh, cmd, lock):
        return 0

    def flock(self, path, fh, op):
        return 0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('backing')
    parser.add_argument('mountpoint')
    parser.add_argument('--fault', choices=FAULTS, default='none')
    args = parser.parse_args(argv)
    ops = (GrantAll if args.fault == 'locks' else FaultFS)(args.backing, args.fault)
    options = {'foreground': True, 'use_ino': True, 'fsname': 'cyha-faultfs-' + args.fault,
               'subtype': 'cyhafault', 'attr_timeout': 0, 'entry_timeout': 0}
    if args.fault == 'direct_io':
        options['direct_io'] = True
    mfusepy.FUSE(ops, args.mountpoint, **options)


if __name__ == '__main__':
    main()
