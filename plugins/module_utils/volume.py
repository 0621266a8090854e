# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failover volumes: find a filesystem by UUID or label, mount and unmount it behind guards.

The guards are the ones a warm-spare takeover needs so that two nodes never mount one
non-cluster filesystem: ext4 multiple-mount protection (MMP) read straight from the disk
(`e2mmpstatus -i`, which reads with O_DIRECT), a refusal to mount a volume already mounted
elsewhere on this node, the filesystem check a takeover needs, and an unmount that stops only
the processes of the instance that owns the volume (by its pidfile).

Everything here is plain functions and one class driven by a `run(argv) -> (rc, out, err)`
callable, so that unit tests can feed recorded tool output and integration tests run the
real tools.
"""

from __future__ import annotations

import fnmatch
import json
import math
import mmap
import os
import re
import signal
import stat
import struct
import time

from ansible_collections.cyrus.ha.plugins.module_utils import cyrusinstance, procfs, testhook

# ext4 MMP sequence values with a meaning of their own (fs/ext4/mmp.c, lib/ext2fs/mmp.c).
MMP_SEQ_CLEAN = 0xFF4D4D50
MMP_SEQ_FSCK = 0xE24D4D50
MMP_SEQ_MAX = 0xE24D4D4F

# Match these with fullmatch(): `$` would accept a trailing newline.
UUID_RE = re.compile(r'[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|[0-9A-Fa-f-]{4,36}')
LABEL_RE = re.compile(r'[A-Za-z0-9_.:+-]{1,16}')
MOUNTPOINT_RE = re.compile(r'/[A-Za-z0-9_.:+@,=/-]{1,4000}')
FSTYPE_RE = re.compile(r'[a-z0-9_.]{1,32}')
OPTS_RE = re.compile(r'[A-Za-z0-9_=,.:+/@-]{1,1024}')
PEER_RE = re.compile(r'[A-Za-z0-9_.:+@-]{1,64}')
DEVICE_GLOB_RE = re.compile(r'/dev/[A-Za-z0-9_.:+@*?\[\]!/-]{1,250}')
PID_RE = re.compile(r'[0-9]{1,10}\n?')

# The kernel's own MMP wait (fs/ext4/mmp.c, ext4_multi_mount_protect): the check interval is the
# superblock's update interval, at least EXT4_MMP_MIN_CHECK_INTERVAL, raised to the interval the
# MMP block itself records; the mount waits min(2 * interval + 1, interval + 60) seconds before
# re-reading the block (and once more after writing its own sequence).
EXT4_MMP_MIN_CHECK_INTERVAL = 5
MMP_MAGIC = 0x004D4D50
PIDFILE_MAX_BYTES = 64
# Bounds of the numeric options (checked before anything is read or changed).
BOUNDS = {'mmp_update_interval': (1, 300), 'mmp_probe_timeout': (1, 3600), 'stop_timeout': (0.1, 3600)}
# The step boundaries of testhook.kill_point (CYRUS_HA_TEST_KILL_AT): an interrupted run, in tests.
KILL_POINTS = ('mmp_watched', 'mkdir', 'clear_mmp', 'fsck', 'mount', 'stop', 'umount')


class VolumeError(Exception):
    """A guard refused, or a step failed. `details` go into the module's result."""

    def __init__(self, msg: str, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details


# ---------------------------------------------------------------------------------------------
# Parsers for the tools' output
# ---------------------------------------------------------------------------------------------

def parse_blkid_export(text: str) -> list[dict]:
    """`blkid -c /dev/null -o export` -> [{'DEVNAME':..., 'UUID':..., 'LABEL':..., 'TYPE':...}]."""
    devices, current = [], {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            if current:
                devices.append(current)
            current = {}
            continue
        key, sep, value = line.partition('=')
        if sep:
            current[key] = value
    if current:
        devices.append(current)
    return [d for d in devices if d.get('DEVNAME')]


def parse_mmp(text: str) -> dict:
    """`e2mmpstatus -i DEV` -> sequence, state, node, device, update time, check interval."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(':')
        if sep:
            fields[key.strip()] = value.strip()
    if 'mmp_sequence' not in fields:
        raise VolumeError('cannot read the MMP block: e2mmpstatus printed no mmp_sequence', mmp_output=text)
    try:
        if not all(fields.get(k, '').isascii() for k in ('mmp_sequence', 'mmp_update_time', 'mmp_check_interval')):
            raise ValueError('not ASCII')
        seq = int(fields['mmp_sequence'], 16)
        update_time = int(fields.get('mmp_update_time', '0') or 0)
        check_interval = int(fields.get('mmp_check_interval', '0') or 0)
    except ValueError:
        raise VolumeError('cannot read the MMP block: e2mmpstatus printed a field that is not a number',
                          mmp_output=text) from None
    if seq == MMP_SEQ_CLEAN:
        state = 'clean'
    elif seq == MMP_SEQ_FSCK:
        state = 'fsck'
    elif seq <= MMP_SEQ_MAX:
        state = 'in_use'
    else:
        state = 'unknown'
    return {
        'sequence': seq,
        'state': state,
        'node_name': fields.get('mmp_node_name', ''),
        'device_name': fields.get('mmp_device_name', ''),
        'update_time': update_time,
        'check_interval': check_interval,
    }


def parse_dumpe2fs(text: str) -> dict:
    """`dumpe2fs -h DEV` -> features, state, MMP update interval."""
    info = {'features': [], 'state': '', 'mmp_update_interval': None, 'mmp_block': None, 'block_size': None}
    numbers = {'MMP update interval': 'mmp_update_interval', 'MMP block number': 'mmp_block', 'Block size': 'block_size'}
    for line in text.splitlines():
        key, sep, value = line.partition(':')
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == 'Filesystem features':
            info['features'] = value.split()
        elif key == 'Filesystem state':
            info['state'] = value
        elif key in numbers and value.isascii() and value.isdigit():
            info[numbers[key]] = int(value)
    return info


def mmp_wait_needed(update_interval, block_check_interval) -> int:
    """Seconds the kernel's own mount watches an in-use MMP block before calling it stale."""
    interval = max(int(update_interval or 0), EXT4_MMP_MIN_CHECK_INTERVAL, int(block_check_interval or 0))
    return min(2 * interval + 1, interval + 60)


def peek_mmp(devname: str, block: int, block_size: int):
    """Read the MMP block straight from the disk (O_DIRECT): {'sequence', 'update_time', 'check_interval'},
    None when it cannot be read or is not an MMP block. Only used between the authoritative
    e2mmpstatus reads, to see a live heartbeat early; a failure here never lets a mount through."""
    if not block or not block_size or block_size % 512 or block_size > 65536:
        return None
    buf = mmap.mmap(-1, block_size)
    try:
        fd = os.open(devname, os.O_RDONLY | getattr(os, 'O_DIRECT', 0) | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if os.preadv(fd, [buf], block * block_size) < 128:
            return None
    except OSError:
        return None
    finally:
        os.close(fd)
    magic, seq, when = struct.unpack_from('<IIQ', buf, 0)
    (check_interval,) = struct.unpack_from('<H', buf, 112)
    if magic != MMP_MAGIC:
        return None
    return {'sequence': seq, 'update_time': when, 'check_interval': check_interval}


def check_number(name: str, value, low, high):
    """A numeric option: a real number (not a bool), finite, within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VolumeError(f'{name} must be a number, not {value!r}')
    if not math.isfinite(value) or not low <= value <= high:
        raise VolumeError(f'{name} must be a finite number from {low} to {high}, not {value!r}')
    return value


def check_params(params: dict) -> None:
    """Every option checked before anything is read from the disk or changed; raises VolumeError."""
    def text(name, pattern, what):
        value = params.get(name)
        if value is None:
            return
        if not isinstance(value, str) or not value.isascii() or not pattern.fullmatch(value):
            raise VolumeError(f'{name} {value!r} is not {what}')
    text('uuid', UUID_RE, 'a filesystem UUID')
    text('label', LABEL_RE, 'a valid filesystem label (1-16 of A-Z a-z 0-9 _ . : + -)')
    text('fstype', FSTYPE_RE, 'a filesystem type (1-32 of a-z 0-9 _ .)')
    text('opts', OPTS_RE, 'a list of mount options (1-1024 of A-Z a-z 0-9 _ = , . : + / @ -, no spaces)')
    text('fenced_peer', PEER_RE, 'a node name (1-64 of A-Z a-z 0-9 _ . : + @ -)')
    mountpoint = params.get('mountpoint')
    if mountpoint is not None:
        if not isinstance(mountpoint, str) or not mountpoint.startswith('/') or os.path.normpath(mountpoint) == '/':
            raise VolumeError(f'mountpoint {mountpoint!r} must be an absolute path other than /')
        if not mountpoint.isascii() or not MOUNTPOINT_RE.fullmatch(mountpoint):
            raise VolumeError(f'mountpoint {mountpoint!r} must be an absolute path of A-Z a-z 0-9 _ . : + @ , = - /')
    devices = params.get('devices')
    if devices is not None:
        if not devices:
            raise VolumeError('devices is empty: name the block devices (patterns under /dev/) this node may use')
        for glob in devices:
            if not isinstance(glob, str) or not glob.isascii() or not DEVICE_GLOB_RE.fullmatch(glob) or '..' in glob:
                raise VolumeError(f'devices entry {glob!r} is not a pattern of block devices under /dev/')
    for name, (low, high) in BOUNDS.items():
        if params.get(name) is not None:
            check_number(name, params[name], low, high)
    if params.get('pidfile') is not None:
        pidfile = params['pidfile']
        if not isinstance(pidfile, str) or not pidfile.startswith('/') or not pidfile.isascii() or '\0' in pidfile:
            raise VolumeError(f'pidfile {pidfile!r} must be an absolute ASCII path')


def check_path(path: str, what: str, must_exist: bool = False) -> bool:
    """Walk an absolute path component by component: refuse a symlink or a non-directory anywhere in it.
    True when the path exists (a directory); False when it (or a tail of it) is missing and could be made."""
    current = '/'
    for part in [p for p in path.split('/') if p]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if must_exist:
                raise VolumeError(f'{what} {path} does not exist') from None
            parent = os.path.dirname(current)
            if not os.access(parent, os.W_OK | os.X_OK):
                raise VolumeError(f'{what} {path} is missing and cannot be created in {parent} (not writable)')
            return False
        if stat.S_ISLNK(st.st_mode):
            raise VolumeError(f'{what} {path}: {current} is a symlink (to {os.readlink(current)}): refusing, because '
                              'the mount would land on its target and never match again; give the real path')
        if not stat.S_ISDIR(st.st_mode):
            raise VolumeError(f'{what} {path}: {current} is not a directory')
    return True


def parse_findmnt(text: str) -> list[dict]:
    """`findmnt -J -l -o SOURCE,TARGET,FSTYPE,OPTIONS,MAJ:MIN` -> list of mounts."""
    if not text.strip():
        return []
    return json.loads(text).get('filesystems', [])


# ---------------------------------------------------------------------------------------------
# Processes that hold a mount
# ---------------------------------------------------------------------------------------------

def proc_state(pid: int) -> str:
    """One-letter state of a process, '' when it is gone (a zombie holds nothing)."""
    return procfs.state(pid)


def proc_alive(pid: int) -> bool:
    return procfs.alive(pid)


def proc_comm(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/comm', encoding='utf-8') as handle:
            return handle.read().strip()
    except OSError:
        return '?'


def holders_of(st_dev: int, proc_root: str = '/proc') -> list[dict]:
    """Processes with a file, directory, root or mapping on the filesystem with this st_dev.

    Compared by device number, not by path, so a process in another mount namespace that
    has a different filesystem at the same path is never counted.
    """
    found = []
    me = os.getpid()
    for entry in os.listdir(proc_root):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        base = os.path.join(proc_root, entry)
        reasons = set()
        for what in ('cwd', 'root', 'exe'):
            try:
                if os.stat(os.path.join(base, what)).st_dev == st_dev:
                    reasons.add(what)
            except OSError:
                pass
        try:
            for fd in os.listdir(os.path.join(base, 'fd')):
                try:
                    if os.stat(os.path.join(base, 'fd', fd)).st_dev == st_dev:
                        reasons.add('open file')
                        break
                except OSError:
                    continue
        except OSError:
            pass
        try:
            major, minor = os.major(st_dev), os.minor(st_dev)
            tag = f' {major:02x}:{minor:02x} '
            with open(os.path.join(base, 'maps'), encoding='utf-8', errors='replace') as handle:
                if any(tag in line for line in handle):
                    reasons.add('mapping')
        except OSError:
            pass
        if reasons and proc_alive(pid):
            found.append({'pid': pid, 'command': proc_comm(pid), 'uses': sorted(reasons)})
    return found


def pid_max() -> int:
    try:
        with open('/proc/sys/kernel/pid_max', encoding='ascii') as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return 4194304


def read_pidfile(path: str):
    """The PID a pidfile names, None when the file is missing; VolumeError for anything else than a small
    regular file holding ASCII digits (opened O_NONBLOCK|O_NOFOLLOW and checked by fstat: a FIFO never blocks)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VolumeError(f'pidfile {path}: cannot be read: {exc.strerror}') from None
    kinds = ((stat.S_ISLNK, 'a symlink'), (stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO'),
             (stat.S_ISSOCK, 'a socket'), (stat.S_ISCHR, 'a device'), (stat.S_ISBLK, 'a device'))
    for test, kind in kinds:
        if test(st.st_mode):
            raise VolumeError(f'pidfile {path} is {kind}, not a regular file: refusing to read it or to signal anything')
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise VolumeError(f'pidfile {path}: cannot be opened: {exc.strerror}') from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VolumeError(f'pidfile {path} is not a regular file: refusing to read it or to signal anything')
        if st.st_size > PIDFILE_MAX_BYTES:
            raise VolumeError(f'pidfile {path} holds {st.st_size} bytes, more than a PID ({PIDFILE_MAX_BYTES} at most)')
        data = os.read(fd, PIDFILE_MAX_BYTES + 1)
    finally:
        os.close(fd)
    if not data:
        raise VolumeError(f'pidfile {path} is empty: refusing to guess which process owns the volume')
    if not data.isascii() or not PID_RE.fullmatch(data.decode('ascii')):
        raise VolumeError(f'pidfile {path} does not hold one PID of ASCII digits (and a newline)')
    pid = int(data)
    if not 2 <= pid <= pid_max():
        raise VolumeError(f'pidfile {path} names PID {pid}, outside 2..{pid_max()}')
    return pid


def descendants(pid: int, proc_root: str = '/proc') -> set:
    """The PIDs of every process below pid (by parent PID)."""
    children: dict = {}
    for other in procfs.pids(proc_root):
        found = procfs.read_stat(other, proc_root)
        if found is not None:
            children.setdefault(found.ppid, []).append(other)
    seen, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def holds_mount(pid: int, st_dev: int, proc_root: str = '/proc') -> list:
    """Why pid counts as a holder of the filesystem st_dev: itself or one of its descendants has a cwd,
    root, open file or mapping on it ([] when neither does)."""
    family = {pid} | descendants(pid, proc_root)
    return [h for h in holders_of(st_dev, proc_root) if h['pid'] in family]


def _send(pid: int, pidfd, sig) -> None:
    if pidfd is not None:
        signal.pidfd_send_signal(pidfd, sig)
    else:
        os.kill(pid, sig)


def stop_by_pidfile(pidfile: str, timeout: float, sleep=time.sleep, clock=time.monotonic, st_dev=None) -> dict:
    """SIGTERM the process named in pidfile, SIGKILL it after timeout; report what happened.

    With st_dev, the process is signalled only when it (or a process below it) holds that filesystem;
    the process is pinned by a pidfd first (Linux 5.3+), so a PID reused after the check is never hit."""
    pid = read_pidfile(pidfile)
    report = {'pidfile': pidfile, 'pid': pid, 'was_running': False, 'signal': None}
    if not pid or not proc_alive(pid):
        return report
    pidfd = None
    if hasattr(os, 'pidfd_open') and hasattr(signal, 'pidfd_send_signal'):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return report
        except OSError:
            pidfd = None
    try:
        if st_dev is not None:
            held = holds_mount(pid, st_dev)
            report['holds'] = held
            if not held:
                argv = ' '.join(procfs.cmdline(pid))[:200]
                master = ' (a Cyrus master)' if cyrusinstance.is_master(procfs.cmdline(pid)) else ''
                raise VolumeError(f'pidfile {pidfile} names PID {pid}{master} ({argv or proc_comm(pid)}), which holds '
                                  'nothing on the volume (nor does any process below it): refusing to signal it '
                                  '(a stale pidfile, or a reused PID)', stopped=report)
        report['was_running'] = True
        _send(pid, pidfd, signal.SIGTERM)
        report['signal'] = 'TERM'
        deadline = clock() + timeout
        while clock() < deadline:
            if not proc_alive(pid):
                return report
            sleep(0.05)
        if proc_alive(pid):
            _send(pid, pidfd, signal.SIGKILL)
            report['signal'] = 'KILL'
        deadline = clock() + 10
        while proc_alive(pid) and clock() < deadline:
            sleep(0.05)
        if proc_alive(pid):
            raise VolumeError(f'process {pid} from {pidfile} survived SIGKILL for 10 s', stopped=report)
        return report
    except ProcessLookupError:
        return report
    finally:
        if pidfd is not None:
            os.close(pidfd)


# ---------------------------------------------------------------------------------------------
# The volume
# ---------------------------------------------------------------------------------------------

class Volume:
    """One failover volume as this node sees it.

    params: uuid | label, devices (globs this node may use), fstype, mountpoint, opts,
    fsck (auto|always|never), require_mmp, unclean_mmp (wait|refuse), fenced_peer,
    mmp_update_interval, pidfile, stop_timeout.
    """

    def __init__(self, run, params: dict, check_mode: bool = False, sleep=time.sleep, clock=time.monotonic,
                 peek=peek_mmp):
        self.run = run
        self.peek = peek
        self.p = params
        self.check_mode = check_mode
        self.sleep = sleep
        self.clock = clock
        self.actions: list[str] = []
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.mmp_seen = None

    # -- helpers -----------------------------------------------------------------------------
    def _cmd(self, argv: list[str], what: str, ok_codes=(0,)) -> str:
        rc, out, err = self.run(argv)
        if rc not in ok_codes:
            raise VolumeError(f'{what} failed: {" ".join(argv)} exited {rc}: {(err or out).strip()}',
                              rc=rc, stdout=out, stderr=err)
        return out

    def _timed(self, name: str, func, *args):
        start = self.clock()
        try:
            return func(*args)
        finally:
            self.timings[name] = round(self.clock() - start, 3)

    def identity(self) -> str:
        return f"UUID={self.p['uuid']}" if self.p.get('uuid') else f"LABEL={self.p['label']}"

    # -- discovery ---------------------------------------------------------------------------
    def find_device(self) -> dict:
        out = self._cmd(['blkid', '-c', '/dev/null', '-o', 'export'], 'listing block devices', ok_codes=(0, 2))
        devices = parse_blkid_export(out)
        globs = self.p.get('devices') or ['/dev/*']
        key, value = ('UUID', self.p['uuid']) if self.p.get('uuid') else ('LABEL', self.p['label'])
        matches = [d for d in devices if d.get(key, '').lower() == value.lower()
                   and any(fnmatch.fnmatch(d['DEVNAME'], g) for g in globs)]
        if not matches:
            raise VolumeError(f'no block device carries {self.identity()} (searched {", ".join(globs)}): '
                              'is the volume attached to this node?')
        if len(matches) > 1:
            names = ', '.join(sorted(d['DEVNAME'] for d in matches))
            raise VolumeError(f'{self.identity()} is on several devices ({names}): several paths to one disk; '
                              'set devices to the one path (or multipath device) this node must use')
        device = matches[0]
        fstype = self.p.get('fstype')
        if fstype and device.get('TYPE') != fstype:
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}) holds {device.get('TYPE') or 'no filesystem'}, "
                              f'not {fstype}')
        device['rdev'] = os.stat(device['DEVNAME']).st_rdev
        return device

    def mounts_of(self, device: dict) -> list[dict]:
        out = self._cmd(['findmnt', '-J', '-l', '-o', 'SOURCE,TARGET,FSTYPE,OPTIONS,MAJ:MIN'], 'listing mounts',
                        ok_codes=(0, 1))
        want = f'{os.major(device["rdev"])}:{os.minor(device["rdev"])}'
        return [m for m in parse_findmnt(out) if m.get('maj:min') == want or m.get('source') == device['DEVNAME']]

    def mount_at(self, target: str):
        out = self._cmd(['findmnt', '-J', '-l', '-o', 'SOURCE,TARGET,FSTYPE,OPTIONS,MAJ:MIN', '--mountpoint', target],
                        'looking at the mountpoint', ok_codes=(0, 1))
        mounts = parse_findmnt(out)
        return mounts[-1] if mounts else None

    def superblock(self, device: dict) -> dict:
        if device.get('TYPE') not in ('ext2', 'ext3', 'ext4'):
            return {'features': [], 'state': '', 'mmp_update_interval': None}
        return parse_dumpe2fs(self._cmd(['dumpe2fs', '-h', device['DEVNAME']], 'reading the superblock'))

    def read_mmp(self, device: dict) -> dict:
        return parse_mmp(self._cmd(['e2mmpstatus', '-i', device['DEVNAME']], 'reading the MMP block'))

    # -- guards --------------------------------------------------------------------------------
    def mmp_guard(self, device: dict, sb: dict) -> dict:
        """Decide whether this node may mount: returns the MMP report, raises on refusal. Reads only."""
        if 'mmp' not in sb['features']:
            report = {'enabled': False, 'state': 'disabled'}
            if device.get('TYPE') == 'ext4' and self.p.get('require_mmp', True):
                raise VolumeError(f"{device['DEVNAME']} ({self.identity()}) has no multiple-mount protection: "
                                  'nothing stops a second node mounting it; enable it with state=prepared '
                                  '(or set require_mmp=false)', mmp=report)
            self.warnings.append(f"{device['DEVNAME']} has no multiple-mount protection")
            return report
        first = self.read_mmp(device)
        report = dict(first, enabled=True, update_interval=sb['mmp_update_interval'], live=None)
        if first['state'] == 'clean':
            report['live'] = False
            return report
        # In use, left unclean by a node that died, or an e2fsck (running, or killed): watch the block for
        # at least as long as the kernel's own mount would before it calls the heartbeat stopped.
        needed = mmp_wait_needed(sb['mmp_update_interval'], first['check_interval'])
        budget = float(self.p.get('mmp_probe_timeout') or 130)
        report['wait_needed'] = needed
        if needed > budget:
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}): the MMP block is in use (node "
                              f"'{first['node_name'] or '?'}', device {first['device_name'] or '?'}) and telling a live "
                              f'heartbeat from a stopped one takes {needed} s of watching (update interval '
                              f"{sb['mmp_update_interval']} s, check interval {first['check_interval']} s, as the kernel "
                              f'waits); mmp_probe_timeout allows {budget:g} s: refusing to decide. Raise mmp_probe_timeout '
                              f'to at least {needed}', mmp=report)
        last = self._watch(device, sb, first, needed, report)
        report['state'] = 'stale' if first['state'] != 'fsck' else 'fsck'
        if first['state'] == 'fsck' and not self.p.get('fenced_peer'):
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}): e2fsck is running on node "
                              f"{first['node_name'] or '?'}, or was killed there (its MMP block did not change for "
                              f'{needed} s): refusing to mount; if that node is fenced, set fenced_peer', mmp=report)
        if self.p.get('fenced_peer'):
            # The operator states that the node which last wrote the block is fenced. The kernel
            # writes its initial UTS name there (one name for every namespace on a machine), so
            # the statement is recorded next to what the block says rather than matched to it.
            report['fenced_peer'] = self.p['fenced_peer']
            self.mmp_seen = last
        elif self.p.get('unclean_mmp', 'wait') == 'refuse':
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}): node '{first['node_name']}' did not unmount "
                              'cleanly and its heartbeat has stopped; fence that node and set fenced_peer to its '
                              'name, or set unclean_mmp=wait to let the kernel wait out the heartbeat', mmp=report)
        else:
            self.warnings.append(f"node '{first['node_name']}' (device {first['device_name']}) did not unmount "
                                 'cleanly: e2fsck and the kernel wait out its MMP heartbeat before touching the '
                                 'volume (about twice the check interval plus a second, each)')
        return report

    def _watch(self, device: dict, sb: dict, first: dict, needed: int, report: dict) -> dict:
        """Watch the MMP block for `needed` seconds; raise as soon as it moves. Between the first and the last
        authoritative e2mmpstatus read, cheap direct reads (peek_mmp) only ever shorten the watch of a live one."""
        start = self.clock()
        deadline = start + needed
        moved = None
        while moved is None:
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            self.sleep(min(1.0, remaining))
            if self.clock() >= deadline:
                break
            seen = self.peek(device['DEVNAME'], sb.get('mmp_block'), sb.get('block_size'))
            if seen and (seen['sequence'], seen['update_time']) != (first['sequence'], first['update_time']):
                moved = dict(first, **seen)
        if moved is None:
            last = self.read_mmp(device)
            if (last['sequence'], last['update_time']) != (first['sequence'], first['update_time']):
                moved = last
        report['watched_seconds'] = round(self.clock() - start, 3)
        report['live'] = moved is not None
        if moved is not None:
            age = int(time.time()) - int(moved['update_time'])
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}) is in use: node '{first['node_name']}' "
                              f"(device {first['device_name']}) updated its MMP heartbeat {age} s ago and is still "
                              'updating it; refusing to mount (split brain). Stop it there, or fence that node first',
                              mmp=dict(report, **{k: moved[k] for k in ('sequence', 'update_time')}))
        return last

    def clear_mmp(self, device: dict, report: dict) -> None:
        """Clear a stale MMP block, re-reading it first: a block that moved since the watch is live."""
        before = self.mmp_seen or {}
        now = self.read_mmp(device)
        if (now['sequence'], now['update_time']) != (before.get('sequence'), before.get('update_time')):
            report['live'] = True
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}): the MMP block changed after it was watched "
                              f"(node '{now['node_name']}', device {now['device_name']}): refusing to clear it; "
                              'someone is using the volume', mmp=report)
        self._timed('clear_mmp', self._cmd, ['tune2fs', '-f', '-E', 'clear_mmp', device['DEVNAME']], 'clearing MMP')

    def fsck(self, device: dict, sb: dict, mmp_cleared: bool) -> dict:
        policy = self.p.get('fsck', 'auto')
        if device.get('TYPE') not in ('ext2', 'ext3', 'ext4') or policy == 'never':
            return {'ran': False, 'reason': 'not ext2/3/4' if policy != 'never' else 'fsck=never'}
        needed = ('needs_recovery' in sb['features'] or sb['state'] not in ('clean', '') or mmp_cleared)
        if policy == 'auto' and not needed:
            return {'ran': False, 'reason': 'filesystem clean'}
        if 'fsck' not in self.actions:
            self.actions.insert(self.actions.index('mount') if 'mount' in self.actions else len(self.actions), 'fsck')
        if self.check_mode:
            return {'ran': False, 'reason': 'check mode'}
        argv = ['e2fsck', '-p', device['DEVNAME']] if policy == 'auto' else ['e2fsck', '-f', '-p', device['DEVNAME']]
        start = self.clock()
        rc, out, err = self.run(argv)
        self.timings['fsck'] = round(self.clock() - start, 3)
        result = {'ran': True, 'rc': rc, 'output': (out + err).strip()[-2000:]}
        if rc >= 4:
            raise VolumeError(f"e2fsck -p {device['DEVNAME']} ({self.identity()}) found errors it could not fix "
                              f'(exit {rc}): run e2fsck by hand before mounting', fsck=result)
        return result

    # -- states ------------------------------------------------------------------------------
    def mounted(self) -> dict:
        """Every check first (the request, the device, the mountpoint, the mount table, MMP), then the changes
        in order: mkdir, clear_mmp, fsck, mount. A run killed between two changes is finished by the next run."""
        start = self.clock()
        target = os.path.normpath(self.p['mountpoint'])
        exists = check_path(target, 'mountpoint')
        device = self.find_device()
        mounts = self.mounts_of(device)
        result = {'device': device['DEVNAME'], 'uuid': device.get('UUID'), 'label': device.get('LABEL'),
                  'fstype': device.get('TYPE'), 'mountpoint': target}
        here = [m for m in mounts if m['target'] == target]
        if here:
            result.update(changed=False, mounted_before=True, mmp=None)
            return self.finish(result, start)
        if mounts:
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}) is already mounted on this node at "
                              f"{mounts[0]['target']}: refusing to mount it a second time at {target}")
        other = self.mount_at(target)
        if other and other.get('target') == target:
            raise VolumeError(f"{target} already has {other['source']} ({other['fstype']}) mounted on it: refusing to "
                              f'mount {self.identity()} over it')
        if not device.get('TYPE'):
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}) shows no filesystem type: refusing to mount it")
        sb = self.superblock(device)
        result['mmp'] = self._timed('mmp_check', self.mmp_guard, device, sb)
        clear = bool(self.p.get('fenced_peer')) and result['mmp'].get('state') in ('stale', 'fsck')
        if clear:
            self.actions.append('clear_mmp')
        result['fsck'] = self.fsck_plan(device, sb, clear)
        if result['fsck'].get('planned'):
            self.actions.append('fsck')
        self.actions.append('mount')
        result.update(changed=True, mounted_before=False)
        if self.check_mode:
            return self.finish(result, start)
        testhook.kill_point('mmp_watched')
        made = False
        try:
            if not exists:
                os.makedirs(target, mode=0o755)
                made = True
                self.actions.insert(0, 'mkdir')
                testhook.kill_point('mkdir')
            if clear:
                self.clear_mmp(device, result['mmp'])
                testhook.kill_point('clear_mmp')
            result['fsck'] = self.fsck(device, sb, clear)
            testhook.kill_point('fsck')
            argv = ['mount', '-t', device['TYPE'], '-o', self.p.get('opts') or 'defaults', device['DEVNAME'], target]
            self._timed('mount', self._cmd, argv, f'mounting {self.identity()} at {target}')
            testhook.kill_point('mount')
        except BaseException:
            if made:
                self._undo_mkdir(target)
            raise
        if not [m for m in self.mounts_of(device) if m['target'] == target]:
            raise VolumeError(f'mount reported success but {target} does not show {device["DEVNAME"]}')
        return self.finish(result, start)

    def _undo_mkdir(self, target: str) -> None:
        """Remove the mountpoint this run made, when nothing is mounted on it (a failed run leaves nothing)."""
        try:
            if os.path.ismount(target) or self.mount_at(target):
                return
            os.rmdir(target)
            self.actions.remove('mkdir')
        except Exception:  # the original error is the one to report
            self.warnings.append(f'could not remove {target}, made by this run')

    def fsck_plan(self, device: dict, sb: dict, mmp_cleared: bool) -> dict:
        """Whether fsck will run (for check mode and the result before the run)."""
        policy = self.p.get('fsck', 'auto')
        if device.get('TYPE') not in ('ext2', 'ext3', 'ext4') or policy == 'never':
            return {'ran': False, 'reason': 'not ext2/3/4' if policy != 'never' else 'fsck=never'}
        needed = ('needs_recovery' in sb['features'] or sb['state'] not in ('clean', '') or mmp_cleared)
        if policy == 'auto' and not needed:
            return {'ran': False, 'reason': 'filesystem clean'}
        return {'ran': False, 'reason': 'check mode', 'planned': True}

    def unmounted(self) -> dict:
        start = self.clock()
        target = os.path.normpath(self.p['mountpoint']) if self.p.get('mountpoint') else None
        if target:
            check_path(target, 'mountpoint')
        if self.p.get('pidfile'):
            read_pidfile(self.p['pidfile'])
        device = self.find_device()
        mounts = self.mounts_of(device)
        result = {'device': device['DEVNAME'], 'uuid': device.get('UUID'), 'label': device.get('LABEL'),
                  'fstype': device.get('TYPE'), 'mountpoint': target or (mounts[0]['target'] if mounts else None),
                  'mounted_before': bool(mounts), 'holders': [], 'stopped': None}
        if not mounts:
            result['changed'] = False
            return self.finish(result, start)
        if target and not [m for m in mounts if m['target'] == target]:
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}) is mounted at {mounts[0]['target']}, "
                              f'not at {target}: refusing to guess which mount to remove')
        result['changed'] = True
        self.actions.append('umount')
        if self.check_mode:
            return self.finish(result, start)
        for mount in reversed(mounts):
            self._umount(mount['target'], device, result)
        return self.finish(result, start)

    def _umount(self, target: str, device: dict, result: dict) -> None:
        st_dev = os.stat(target).st_dev
        t0 = self.clock()
        rc, out, err = self.run(['umount', target])
        if rc != 0 and self.p.get('pidfile'):
            self.actions.append('stop_instance')
            result['stopped'] = stop_by_pidfile(self.p['pidfile'], float(self.p.get('stop_timeout') or 10),
                                                self.sleep, self.clock, st_dev=st_dev)
            testhook.kill_point('stop')
            rc, out, err = self.run(['umount', target])
        self.timings['umount'] = round(self.clock() - t0, 3)
        if rc != 0:
            holders = holders_of(st_dev)
            result['holders'] = holders
            named = ', '.join(f"PID {h['pid']} ({h['command']}: {', '.join(h['uses'])})" for h in holders[:10])
            raise VolumeError(f"cannot unmount {target} ({self.identity()}): {(err or out).strip()}; "
                              f"held by {named or 'no process found (a mount below it, or a loop device?)'}. "
                              'Only the instance in pidfile is stopped by this module; stop the others first',
                              holders=holders, stopped=result.get('stopped'))
        testhook.kill_point('umount')

    def prepared(self) -> dict:
        start = self.clock()
        device = self.find_device()
        if device.get('TYPE') != 'ext4':
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}) holds {device.get('TYPE')}: multiple-mount "
                              'protection exists only for ext4')
        result = {'device': device['DEVNAME'], 'uuid': device.get('UUID'), 'label': device.get('LABEL'),
                  'fstype': device.get('TYPE'), 'mountpoint': None}
        sb = self.superblock(device)
        interval = int(self.p.get('mmp_update_interval') or 5)
        have = 'mmp' in sb['features']
        if have and sb['mmp_update_interval'] == interval:
            result.update(changed=False, mmp={'enabled': True, 'update_interval': interval})
            return self.finish(result, start)
        if self.mounts_of(device):
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}) is mounted: MMP can only be set on an "
                              'unmounted filesystem')
        if have:
            mmp = self.read_mmp(device)
            if mmp['state'] != 'clean':
                raise VolumeError(f"{device['DEVNAME']} ({self.identity()}): MMP says node '{mmp['node_name']}' has it "
                                  'in use: refusing to change it', mmp=mmp)
        self.actions.append('enable_mmp' if not have else 'set_mmp_interval')
        result.update(changed=True, mmp={'enabled': True, 'update_interval': interval})
        if not self.check_mode:
            argv = ['tune2fs', '-E', f'mmp_update_interval={interval}', device['DEVNAME']]
            if not have:
                argv[1:1] = ['-O', 'mmp']
            self._timed('tune2fs', self._cmd, argv, 'enabling multiple-mount protection')
        return self.finish(result, start)

    def finish(self, result: dict, start: float) -> dict:
        self.timings['total'] = round(self.clock() - start, 3)
        result.update(actions=self.actions, timings=self.timings)
        return result
