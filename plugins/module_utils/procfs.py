# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Processes as /proc shows them: the one reader of ``/proc/<pid>/stat`` and ``cmdline``.

``/proc/<pid>/stat`` is ``pid (comm) state ppid ...``; comm is the executable's name as the process
set it (up to 15 bytes) and may itself hold spaces and parentheses, so the fields after it are
found after the LAST ``)``. A zombie (``Z``) or a dead task (``X``) holds nothing and runs nothing:
it counts as gone. Every function takes ``proc_root`` so that unit tests read a recorded tree.

Standard library only (managed node, Python 3.9+). Also imported by the collection's standalone
scripts from their support directory (``/usr/local/lib/cyrus-ha``), so it imports nothing of the
collection.
"""

from __future__ import annotations

import os

PROC = '/proc'
GONE_STATES = ('Z', 'X')


class ProcStat:
    """The fields of ``/proc/<pid>/stat`` this collection reads."""

    __slots__ = ('pid', 'comm', 'state', 'ppid', 'starttime')

    def __init__(self, pid: int, comm: str, state: str, ppid: int, starttime):
        self.pid = pid
        self.comm = comm
        self.state = state
        self.ppid = ppid
        self.starttime = starttime

    def __repr__(self) -> str:
        return 'ProcStat(pid=%d, comm=%r, state=%r, ppid=%d, starttime=%r)' % (
            self.pid, self.comm, self.state, self.ppid, self.starttime)


def parse_stat(text: str):
    """A ProcStat from the text of ``/proc/<pid>/stat``, or None when it is not one."""
    open_at = text.find('(')
    close_at = text.rfind(')')
    if open_at < 0 or close_at < open_at:
        return None
    rest = text[close_at + 1:].split()
    try:
        pid = int(text[:open_at].strip())
        ppid = int(rest[1])
    except (ValueError, IndexError):
        return None
    # field 22 (starttime) is the 20th after comm; absent from a truncated line
    starttime = int(rest[19]) if len(rest) > 19 and rest[19].isdigit() else None
    return ProcStat(pid, text[open_at + 1:close_at], rest[0], ppid, starttime)


def read_stat(pid, proc_root: str = PROC):
    """The ProcStat of a process, or None when it does not exist (or its stat is unreadable)."""
    try:
        with open(os.path.join(proc_root, str(pid), 'stat'), encoding='utf-8', errors='replace') as handle:
            return parse_stat(handle.read())
    except OSError:
        return None


def state(pid, proc_root: str = PROC) -> str:
    """The one-letter state of a process, '' when it does not exist."""
    found = read_stat(pid, proc_root)
    return found.state if found is not None else ''


def alive(pid, proc_root: str = PROC) -> bool:
    """Whether the process exists and is neither a zombie nor dead."""
    return state(pid, proc_root) not in ('',) + GONE_STATES


def start_time(pid, proc_root: str = PROC):
    """The start time of a process (clock ticks after boot), None when it does not exist."""
    found = read_stat(pid, proc_root)
    return found.starttime if found is not None else None


def cmdline(pid, proc_root: str = PROC) -> list:
    """The argument vector of a process ([] when it is gone, or a kernel thread)."""
    try:
        with open(os.path.join(proc_root, str(pid), 'cmdline'), 'rb') as handle:
            data = handle.read()
    except OSError:
        return []
    return [arg.decode('utf-8', 'replace') for arg in data.split(b'\0') if arg]


def pids(proc_root: str = PROC) -> list:
    """Every PID under proc_root, ascending."""
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return []
    return sorted(int(entry) for entry in entries if entry.isdigit())


def namespace(pid, kind: str, proc_root: str = PROC):
    """The identity of a process's namespace of ``kind`` (net, mnt, ...): the text of the
    ``/proc/<pid>/ns/<kind>`` link, None when it cannot be read. ``pid`` may be ``'self'``."""
    try:
        return os.readlink(os.path.join(proc_root, str(pid), 'ns', kind))
    except OSError:
        return None


def read_pidfile(path: str):
    """The PID a pidfile names (its first word), None when it is missing or holds no number."""
    try:
        with open(path, encoding='utf-8') as handle:
            words = handle.read().split()
    except (OSError, UnicodeDecodeError):
        return None
    if not words or not words[0].isdigit():
        return None
    return int(words[0])
