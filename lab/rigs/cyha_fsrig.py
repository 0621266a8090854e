# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real filesystems for the storage_probe tests: tmpfs, loop images, overlayfs, the FUSE fault fs, sshfs.

Everything lives under one `cyha-fsprobe-*` temporary directory; `Rig.close()` unmounts, detaches
loop devices and stops the FUSE processes it started (by PID), whatever state they are in.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import labutil

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.dirname(sys.executable)
FAULTFS = os.path.join(HERE, 'cyha_faultfs.py')


def sh(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError('%s exited %d: %s' % (argv, proc.returncode, proc.stderr.strip()))
    return proc


def mountinfo_line(point: str):
    with open('/proc/self/mountinfo', encoding='utf-8') as handle:
        for line in handle:
            if line.split()[4] == point:
                return line
    return None


def is_mounted(point: str) -> bool:
    return mountinfo_line(point) is not None


class Rig:
    def __init__(self):
        self.base = tempfile.mkdtemp(prefix='cyha-fsprobe-')
        self.mounts = []  # mount points, unmounted in reverse order
        self.loops = []
        self.fuse = {}  # mount point -> Popen

    def path(self, *parts: str) -> str:
        full = os.path.join(self.base, *parts)
        os.makedirs(full, exist_ok=True)
        return full

    def tmpfs(self, name: str, size: str = '256m', options: str = '') -> str:
        point = self.path(name)
        sh('mount', '-t', 'tmpfs', '-o', 'size=%s%s' % (size, ',' + options if options else ''), 'cyha-' + name,
           point)
        self.mounts.append(point)
        return point

    def loop_image(self, name: str, fstype: str, size_mb: int) -> str:
        image = os.path.join(self.base, name + '.img')
        with open(image, 'wb') as handle:
            handle.truncate(size_mb * 1024 * 1024)
        mkfs = {'ext4': ['mkfs.ext4', '-q', '-F'], 'xfs': ['mkfs.xfs', '-q', '-f'],
                'btrfs': ['mkfs.btrfs', '-q', '-f']}[fstype]
        sh(*mkfs, image)
        device = sh('losetup', '-f', '--show', image).stdout.strip()
        self.loops.append(device)
        point = self.path(name)
        sh('mount', '-t', fstype, device, point)
        self.mounts.append(point)
        return point

    def overlay(self, name: str) -> str:
        lower = self.tmpfs(name + '-lower', '64m')
        upper_base = self.tmpfs(name + '-upper', '256m')
        upper = os.path.join(upper_base, 'upper')
        work = os.path.join(upper_base, 'work')
        os.makedirs(upper)
        os.makedirs(work)
        point = self.path(name)
        sh('mount', '-t', 'overlay', 'cyha-' + name, '-o', 'lowerdir=%s,upperdir=%s,workdir=%s' % (lower, upper, work),
           point)
        self.mounts.append(point)
        return point

    def faultfs(self, fault: str) -> str:
        backing = self.path('fault-%s-backing' % fault)
        point = self.path('fault-' + fault)
        if os.path.exists(os.path.join(backing, 'cyha-hang')):  # a hang armed by an earlier test
            os.unlink(os.path.join(backing, 'cyha-hang'))
        proc = subprocess.Popen([sys.executable, FAULTFS, backing, point, '--fault', fault],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.fuse[point] = proc
        deadline = time.monotonic() + 15
        while not is_mounted(point):
            if proc.poll() is not None or time.monotonic() > deadline:
                why = proc.stderr.read() if proc.poll() is not None else 'timeout'
                raise AssertionError('fault fs %s did not mount: %s' % (fault, why))
            time.sleep(0.05)
        return point

    def sshfs(self, name: str, remote: str, identity: str, known_hosts: str) -> str:
        point = self.path(name)
        sh('sshfs', remote, point, '-o', 'IdentityFile=%s,UserKnownHostsFile=%s,StrictHostKeyChecking=yes,'
           'BatchMode=yes' % (identity, known_hosts))
        self.mounts.append(point)
        return point

    def stop_fuse(self, point: str) -> None:
        proc = self.fuse.pop(point, None)
        if proc is None:
            return
        line = mountinfo_line(point)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        if line:  # requests stuck in the dead daemon's connection end with ENOTCONN once it is aborted
            minor = re.split(r'[ :]', line)[3]
            labutil.abort_fuse_connection(minor)
            sh('umount', '-l', point, check=False)

    def close(self) -> None:
        for point in list(self.fuse):
            self.stop_fuse(point)
        for point in reversed(self.mounts):
            if is_mounted(point):
                if sh('umount', point, check=False).returncode != 0:
                    sh('umount', '-l', point, check=False)
        for device in self.loops:
            sh('losetup', '-d', device, check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def run_module(paths, *extra: str, check_mode: bool = False, host: str = 'localhost',
               inventory: str | None = None, **args) -> dict:
    """Run cyrus.ha.storage_probe through Ansible; return the module's JSON result (with 'rc' added)."""
    tree = tempfile.mkdtemp(prefix='cyha-fsprobe-tree-')
    module_args = dict(args, path=list(paths) if isinstance(paths, (list, tuple)) else [paths])
    argv = [os.path.join(BIN, 'ansible'), host, '-m', 'cyrus.ha.storage_probe', '-a', json.dumps(module_args),
            '--tree', tree]
    if inventory:
        argv[1:1] = ['-i', inventory]
    else:
        argv += ['-c', 'local']
    if check_mode:
        argv.append('--check')
    argv += list(extra)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_INVENTORY_UNPARSED_WARNING='0')
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO, env=env, check=False)
        try:
            with open(os.path.join(tree, host), encoding='utf-8') as handle:
                out = json.load(handle)
        except (OSError, ValueError):
            raise AssertionError('no result from ansible (rc %d):\n%s\n%s' % (
                proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    out['rc'] = proc.returncode
    return out


def ping_pong_locked(path: str) -> str:
    """ping_pong -l from a second process while a first one holds the lock: the second one's output."""
    holder = subprocess.Popen(['timeout', '20', 'stdbuf', '-oL', 'ping_pong', '-l', path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        seen = b''
        while b'Holding lock' not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([holder.stdout], [], [], left)[0]:
                raise AssertionError('ping_pong -l did not take its lock: %r' % seen)
            chunk = os.read(holder.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError('ping_pong -l exited: %r' % seen)
            seen += chunk
        second = subprocess.run(['timeout', '5', 'ping_pong', '-l', path], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, check=False)
    finally:
        try:
            holder.stdin.write(b'\n')
            holder.stdin.close()
        except OSError:
            pass
        try:
            holder.wait(5)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(5)
    return second.stdout


def ping_pong_steady(output: str):
    """The data increment ping_pong settled on, from its output (None if it printed none).

    ping_pong prints "data increment = N" only when the increment changes, and "N locks/sec" once a
    second: the increment in force at each tick after the first (the others joining), most common wins.
    Whatever comes after the last tick (the others being stopped) is not looked at."""
    current = None
    ticks = []
    for token in re.split(r'[\r\n]+', output):
        found = re.search(r'data increment = (-?\d+)', token)
        if found:
            current = int(found.group(1))
        elif 'locks/sec' in token:
            ticks.append(current)
    steady = [value for value in (ticks[1:] or ticks) if value is not None]
    return max(sorted(set(steady)), key=steady.count) if steady else None


def ping_pong_increment(path: str, flags: str, seconds: float = 2.5, procs: int = 2):
    """`procs` ping_pong processes with `flags` on one file for `seconds`, then stopped and killed: the
    increment each one settled on (ping_pong_steady) and their outputs."""
    runners = [subprocess.Popen(['stdbuf', '-oL', 'ping_pong', flags, path, str(procs + 1)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for dummy in range(procs)]
    try:
        time.sleep(seconds)
        for runner in runners:
            if runner.poll() is None:
                runner.send_signal(signal.SIGSTOP)
    finally:
        for runner in runners:
            if runner.poll() is None:
                runner.kill()
    outputs = [runner.communicate(timeout=30)[0] for runner in runners]
    return [ping_pong_steady(out) for out in outputs], outputs
