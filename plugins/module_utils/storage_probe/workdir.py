# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The probe's own work directory under the path: made safely, always removed, leftovers found.

The parent picks the name (new_name: unpredictable), a child makes it (create: mkdir, which never
follows a symlink planted under the name, then mode 0700 and the owner note through a descriptor of
that very directory), so the parent can remove it even when the child that made it hung. Leftovers are
read without trusting them: a symlink named like a work directory is not one, an owner note is a
small regular file, and only a note naming this host and a PID that is gone makes a leftover stale.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import time

from ansible_collections.cyrus.ha.plugins.module_utils import procfs

PREFIX = '.cyrus-ha-probe-'
OWNER = 'owner.json'
MAX_OWNER = 4096


def process_start(pid: int):
    """The start time of a process (clock ticks since boot), or None if it does not exist."""
    return procfs.start_time(pid)


def new_name() -> str:
    """An unpredictable work directory name."""
    return PREFIX + os.urandom(8).hex()


def claim(directory: str) -> None:
    """Make a directory just created ours: opened as a directory (a symlink swapped in is refused), mode
    0700 whatever the umask, with a note of its owner for leftover detection. Raises OSError. (Its owner
    is not compared with ours: root squashed by an NFS server makes directories owned by nobody.)"""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, 0o700)
        owner = {'host': socket.gethostname(), 'pid': os.getpid(), 'start': process_start(os.getpid())}
        note = os.open(OWNER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd)
        try:
            os.write(note, json.dumps(owner).encode())
        finally:
            os.close(note)
    finally:
        os.close(fd)


def create(path: str, name: str | None = None) -> str:
    """The work directory path/name (a new name by default; mode 0700, with the owner note); removed again
    if it cannot be completed. Raises OSError (EEXIST when anything has the name)."""
    name = new_name() if name is None else name
    if not name.startswith(PREFIX) or '/' in name:
        raise ValueError('%s is not a probe work directory name' % name)
    workdir = os.path.join(path, name)
    os.mkdir(workdir, 0o700)
    try:
        claim(workdir)
    except BaseException:
        try:
            remove(workdir, patience=1.0)
        except OSError:
            pass
        raise
    return workdir


def remove(workdir: str, patience: float = 5.0) -> None:
    """rmtree, retried while files of closed-but-busy names (.nfsXXXX, .fuse_hiddenXXXX) linger."""
    if not os.path.basename(workdir).startswith(PREFIX):
        raise ValueError('%s is not a probe work directory' % workdir)
    deadline = time.monotonic() + patience
    while True:
        try:
            shutil.rmtree(workdir)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EBUSY) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def read_owner(directory: str) -> dict:
    """The owner note of a work directory: {'host', 'pid', 'start'} as far as they are well-formed, {} when
    it is missing, not a small regular file (a FIFO is not waited on, a symlink not followed), or not JSON."""
    try:
        fd = os.open(os.path.join(directory, OWNER), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        data = os.read(fd, MAX_OWNER + 1)
    except OSError:
        return {}
    finally:
        os.close(fd)
    try:
        owner = json.loads(data.decode('utf-8')) if len(data) <= MAX_OWNER else None
    except ValueError:
        owner = None
    if not isinstance(owner, dict):
        return {}
    pid = owner.get('pid')
    start = owner.get('start')
    return {'host': owner.get('host') if isinstance(owner.get('host'), str) else None,
            'pid': pid if _integer(pid) and pid > 0 else None,
            'start': start if _integer(start) else None}


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def find_leftovers(path: str, own: str | None = None) -> list:
    """Work directories of earlier runs under path, with whether their owner is gone (stale): a note naming
    this host and a PID that is gone (or was reused). A symlink or a file with the name is not a work directory."""
    found = []
    host = socket.gethostname()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not name.startswith(PREFIX) or full == own:
            continue
        try:
            if not stat.S_ISDIR(os.lstat(full).st_mode):
                continue
        except OSError:
            continue
        owner = read_owner(full)
        same_host = owner.get('host') == host and owner.get('pid') is not None
        alive = same_host and process_start(owner['pid']) == owner.get('start')
        found.append({'path': full, 'host': owner.get('host'), 'pid': owner.get('pid'),
                      'stale': bool(same_host and not alive)})
    return found


def clean_leftovers(path: str, check_mode: bool) -> list:
    """Remove stale leftovers (owner on this host and gone); return the ones removed (or to remove)."""
    removed = []
    for item in find_leftovers(path):
        if item['stale']:
            if not check_mode:
                remove(item['path'])
            removed.append(item['path'])
    return removed
