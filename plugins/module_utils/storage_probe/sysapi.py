# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The few libc calls Python lacks: statfs f_type, mmap past EOF, msync, F_GETLK, prctl."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import signal

PAGE = mmap.PAGESIZE
PROT_READ = mmap.PROT_READ
PROT_WRITE = mmap.PROT_WRITE
MAP_SHARED = mmap.MAP_SHARED
MS_SYNC = 4
PR_SET_PDEATHSIG = 1

_LIBC = None


def libc():
    global _LIBC
    if _LIBC is None:
        lib = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                             ctypes.c_int64]
        if hasattr(lib, 'mmap64'):
            lib.mmap64.restype = ctypes.c_void_p
            lib.mmap64.argtypes = lib.mmap.argtypes
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        lib.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        _LIBC = lib
    return _LIBC


def _oserror(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, '%s: %s' % (what, os.strerror(code)))


def statfs_type(path: str) -> int:
    """statfs(2) f_type (the first field of struct statfs, a C long on glibc)."""
    buf = ctypes.create_string_buffer(256)
    if libc().statfs(os.fsencode(path), buf) != 0:
        raise _oserror('statfs')
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Die with the parent: a helper never outlives the process that started it."""
    try:
        libc().prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (AttributeError, OSError):
        pass


class Mapping:
    """A MAP_SHARED mapping that, unlike mmap.mmap, may reach past end of file (Cyrus's slop)."""

    def __init__(self, fd: int, length: int, writable: bool = False):
        prot = PROT_READ | (PROT_WRITE if writable else 0)
        func = getattr(libc(), 'mmap64', None) or libc().mmap
        addr = func(None, length, prot, MAP_SHARED, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            raise _oserror('mmap')
        self.addr = addr
        self.length = length

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or offset + size > self.length:
            raise ValueError('read outside the mapping')
        return ctypes.string_at(self.addr + offset, size)

    def write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.length:
            raise ValueError('write outside the mapping')
        ctypes.memmove(self.addr + offset, data, len(data))

    def sync(self) -> None:
        if libc().msync(self.addr, self.length, MS_SYNC) != 0:
            raise _oserror('msync')

    def close(self) -> None:
        if self.addr is not None:
            libc().munmap(self.addr, self.length)
            self.addr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Flock(ctypes.Structure):
    _fields_ = [('l_type', ctypes.c_short), ('l_whence', ctypes.c_short), ('l_start', ctypes.c_int64),
                ('l_len', ctypes.c_int64), ('l_pid', ctypes.c_int)]


LOCK_TYPES = {'r': fcntl.F_RDLCK, 'w': fcntl.F_WRLCK, 'u': fcntl.F_UNLCK}
LOCK_NAMES = {fcntl.F_RDLCK: 'r', fcntl.F_WRLCK: 'w', fcntl.F_UNLCK: 'u'}
CONFLICT = (errno.EAGAIN, errno.EACCES)


def setlk(fd: int, kind: str, start: int = 0, length: int = 0, wait: bool = False) -> None:
    """fcntl F_SETLK/F_SETLKW; raises OSError (EAGAIN or EACCES on conflict)."""
    lock = Flock(LOCK_TYPES[kind], os.SEEK_SET, start, length, 0)
    fcntl.fcntl(fd, fcntl.F_SETLKW if wait else fcntl.F_SETLK, bytes(lock))


def getlk(fd: int, kind: str, start: int = 0, length: int = 0) -> dict:
    """fcntl F_GETLK: who would block this lock ({'type': 'u'} when nobody)."""
    lock = Flock(LOCK_TYPES[kind], os.SEEK_SET, start, length, 0)
    out = Flock.from_buffer_copy(fcntl.fcntl(fd, fcntl.F_GETLK, bytes(lock)))
    return {'type': LOCK_NAMES.get(out.l_type, str(out.l_type)), 'pid': out.l_pid, 'start': out.l_start,
            'len': out.l_len}


def errname(exc: BaseException) -> str:
    code = getattr(exc, 'errno', None)
    return errno.errorcode.get(code, str(code)) if code else type(exc).__name__
