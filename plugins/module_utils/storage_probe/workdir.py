# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The probe's own work directory under the path: made safely, always removed, leftovers found."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import time

from ansible_collections.cyrus.ha.plugins.module_utils import procfs

PREFIX = '.cyrus-ha-probe-'
OWNER = 'owner.json'


def process_start(pid: int):
    """The start time of a process (clock ticks since boot), or None if it does not exist."""
    return procfs.start_time(pid)


def create(path: str) -> str:
    """mkdtemp (O_EXCL, mode 0700) under path, with a note of who made it for leftover detection."""
    workdir = tempfile.mkdtemp(prefix=PREFIX, dir=path)
    owner = {'host': socket.gethostname(), 'pid': os.getpid(), 'start': process_start(os.getpid())}
    fd = os.open(os.path.join(workdir, OWNER), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, json.dumps(owner).encode())
    finally:
        os.close(fd)
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


def find_leftovers(path: str, own: str | None = None) -> list:
    """Work directories of earlier runs under path, with whether their owner is gone (stale)."""
    found = []
    host = socket.gethostname()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not name.startswith(PREFIX) or full == own or not os.path.isdir(full):
            continue
        try:
            with open(os.path.join(full, OWNER), encoding='utf-8') as handle:
                owner = json.load(handle)
        except (OSError, ValueError):
            owner = {}
        same_host = owner.get('host') == host
        alive = same_host and owner.get('pid') is not None and process_start(owner['pid']) == owner.get('start')
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
