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
import os
import re
import signal
import time

from ansible_collections.cyrus.ha.plugins.module_utils import procfs

# ext4 MMP sequence values with a meaning of their own (fs/ext4/mmp.c, lib/ext2fs/mmp.c).
MMP_SEQ_CLEAN = 0xFF4D4D50
MMP_SEQ_FSCK = 0xE24D4D50
MMP_SEQ_MAX = 0xE24D4D4F

UUID_RE = re.compile(r'^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$|^[0-9A-Fa-f-]{4,36}$')
LABEL_RE = re.compile(r'^[A-Za-z0-9_.:+-]{1,16}$')


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
    seq = int(fields['mmp_sequence'], 16)
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
        'update_time': int(fields.get('mmp_update_time', '0') or 0),
        'check_interval': int(fields.get('mmp_check_interval', '0') or 0),
    }


def parse_dumpe2fs(text: str) -> dict:
    """`dumpe2fs -h DEV` -> features, state, MMP update interval."""
    info = {'features': [], 'state': '', 'mmp_update_interval': None}
    for line in text.splitlines():
        key, sep, value = line.partition(':')
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == 'Filesystem features':
            info['features'] = value.split()
        elif key == 'Filesystem state':
            info['state'] = value
        elif key == 'MMP update interval':
            info['mmp_update_interval'] = int(value)
    return info


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


def read_pidfile(path: str):
    try:
        with open(path, encoding='utf-8') as handle:
            text = handle.read().split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def stop_by_pidfile(pidfile: str, timeout: float, sleep=time.sleep, clock=time.monotonic) -> dict:
    """SIGTERM the process named in pidfile, SIGKILL it after timeout; report what happened."""
    pid = read_pidfile(pidfile)
    if not pid or not proc_alive(pid):
        return {'pidfile': pidfile, 'pid': pid, 'was_running': False, 'signal': None}
    os.kill(pid, signal.SIGTERM)
    deadline = clock() + timeout
    while clock() < deadline:
        if not proc_alive(pid):
            return {'pidfile': pidfile, 'pid': pid, 'was_running': True, 'signal': 'TERM'}
        sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    deadline = clock() + 10
    while proc_alive(pid) and clock() < deadline:
        sleep(0.05)
    if proc_alive(pid):
        raise VolumeError(f'process {pid} from {pidfile} survived SIGKILL for 10 s')
    return {'pidfile': pidfile, 'pid': pid, 'was_running': True, 'signal': 'KILL'}


# ---------------------------------------------------------------------------------------------
# The volume
# ---------------------------------------------------------------------------------------------

class Volume:
    """One failover volume as this node sees it.

    params: uuid | label, devices (globs this node may use), fstype, mountpoint, opts,
    fsck (auto|always|never), require_mmp, unclean_mmp (wait|refuse), fenced_peer,
    mmp_update_interval, pidfile, stop_timeout.
    """

    def __init__(self, run, params: dict, check_mode: bool = False, sleep=time.sleep, clock=time.monotonic):
        self.run = run
        self.p = params
        self.check_mode = check_mode
        self.sleep = sleep
        self.clock = clock
        self.actions: list[str] = []
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []

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
        """Decide whether this node may mount: returns the MMP report, raises on refusal."""
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
        if first['state'] == 'fsck':
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}): e2fsck is running on node "
                              f"{first['node_name'] or '?'}: refusing to mount", mmp=report)
        # In use, or left unclean by a node that died: watch the heartbeat for a while.
        interval = max(1, sb['mmp_update_interval'] or 5)
        window = min(2 * interval + 1, float(self.p.get('mmp_probe_timeout') or 11))
        self.sleep(window)
        second = self.read_mmp(device)
        report['live'] = second['sequence'] != first['sequence'] or second['update_time'] != first['update_time']
        report['watched_seconds'] = window
        if report['live']:
            age = int(time.time()) - second['update_time']
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}) is in use: node '{second['node_name']}' "
                              f"(device {second['device_name']}) updated its MMP heartbeat {age} s ago and is still "
                              'updating it; refusing to mount (split brain). Stop it there, or fence that node first',
                              mmp=dict(report, **{k: second[k] for k in ('sequence', 'update_time')}))
        report['state'] = 'stale'
        if self.p.get('fenced_peer'):
            # The operator states that the node which last wrote the block is fenced. The kernel
            # writes its initial UTS name there (one name for every namespace on a machine), so
            # the statement is recorded next to what the block says rather than matched to it.
            report['fenced_peer'] = self.p['fenced_peer']
            self.actions.append('clear_mmp')
            if not self.check_mode:
                self._timed('clear_mmp', self._cmd, ['tune2fs', '-f', '-E', 'clear_mmp', device['DEVNAME']],
                            'clearing MMP')
        elif self.p.get('unclean_mmp', 'wait') == 'refuse':
            raise VolumeError(f"{device['DEVNAME']} ({self.identity()}): node '{first['node_name']}' did not unmount "
                              'cleanly and its heartbeat has stopped; fence that node and set fenced_peer to its '
                              'name, or set unclean_mmp=wait to let the kernel wait out the heartbeat', mmp=report)
        else:
            self.warnings.append(f"node '{first['node_name']}' (device {first['device_name']}) did not unmount "
                                 'cleanly: e2fsck and the kernel wait out its MMP heartbeat before touching the '
                                 'volume (about twice the check interval plus a second, each)')
        return report

    def fsck(self, device: dict, sb: dict, mmp_cleared: bool) -> dict:
        policy = self.p.get('fsck', 'auto')
        if device.get('TYPE') not in ('ext2', 'ext3', 'ext4') or policy == 'never':
            return {'ran': False, 'reason': 'not ext2/3/4' if policy != 'never' else 'fsck=never'}
        needed = ('needs_recovery' in sb['features'] or sb['state'] not in ('clean', '') or mmp_cleared)
        if policy == 'auto' and not needed:
            return {'ran': False, 'reason': 'filesystem clean'}
        self.actions.append('fsck')
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
        start = self.clock()
        device = self.find_device()
        target = os.path.abspath(self.p['mountpoint'])
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
        sb = self.superblock(device)
        result['mmp'] = self._timed('mmp_check', self.mmp_guard, device, sb)
        result['fsck'] = self.fsck(device, sb, 'clear_mmp' in self.actions)
        self.actions.append('mount')
        result.update(changed=True, mounted_before=False)
        if not self.check_mode:
            if not os.path.isdir(target):
                os.makedirs(target, mode=0o755)
                self.actions.append('mkdir')
            argv = ['mount', '-t', device['TYPE'], '-o', self.p.get('opts') or 'defaults', device['DEVNAME'], target]
            self._timed('mount', self._cmd, argv, f'mounting {self.identity()} at {target}')
            if not [m for m in self.mounts_of(device) if m['target'] == target]:
                raise VolumeError(f'mount reported success but {target} does not show {device["DEVNAME"]}')
        return self.finish(result, start)

    def unmounted(self) -> dict:
        start = self.clock()
        device = self.find_device()
        mounts = self.mounts_of(device)
        target = os.path.abspath(self.p['mountpoint']) if self.p.get('mountpoint') else None
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
                                                self.sleep, self.clock)
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
