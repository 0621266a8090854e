# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""File operations a helper process performs on command: "another process" in the checks."""

from __future__ import annotations

import base64
import fcntl
import os
import time

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import procs
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi

FLOCK_OPS = {'ex': fcntl.LOCK_EX, 'sh': fcntl.LOCK_SH, 'un': fcntl.LOCK_UN}


def _open(state, chan, path, name='fd', flags='rw'):
    state[name] = os.open(path, os.O_RDWR if flags == 'rw' else os.O_RDONLY)
    return state[name]


def _close(state, chan, name='fd'):
    os.close(state.pop(name))


def _lock(state, chan, kind, start=0, length=0, name='fd', wait=False):
    if wait:
        chan.send({'waiting': True})
        started = time.monotonic()
        sysapi.setlk(state[name], kind, start, length, wait=True)
        return round(time.monotonic() - started, 6)
    sysapi.setlk(state[name], kind, start, length)
    return None


def _getlk(state, chan, kind, start=0, length=0, name='fd'):
    return sysapi.getlk(state[name], kind, start, length)


def _flock(state, chan, mode, name='fd', nonblock=True):
    fcntl.flock(state[name], FLOCK_OPS[mode] | (fcntl.LOCK_NB if nonblock else 0))


def _pwrite(state, chan, data, offset, name='fd'):
    return os.pwrite(state[name], base64.b64decode(data), offset)


def _pread(state, chan, size, offset, name='fd'):
    return base64.b64encode(os.pread(state[name], size, offset)).decode()


def _stat(state, chan, path):
    st = os.stat(path)
    return {'ino': st.st_ino, 'size': st.st_size, 'nlink': st.st_nlink}


def _read_path(state, chan, path):
    with open(path, 'rb') as handle:
        return base64.b64encode(handle.read()).decode()


HANDLERS = {'open': _open, 'close': _close, 'lock': _lock, 'getlk': _getlk, 'flock': _flock, 'pwrite': _pwrite,
            'pread': _pread, 'stat': _stat, 'read_path': _read_path}


def helper(deadline: float = 20.0) -> procs.Child:
    """A helper process serving HANDLERS; stop it with .kill()."""
    return procs.Child(procs.serve, HANDLERS, deadline=deadline)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def ok(answer: dict) -> bool:
    return bool(answer.get('ok'))


def value(answer: dict):
    """The answer's value; an OSError when the helper's call failed."""
    if not answer.get('ok'):
        raise OSError(answer.get('errno') or 0, 'helper: %s' % answer.get('error'))
    return answer.get('value')
