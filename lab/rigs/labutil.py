# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for integration tests on the built-in lab: run the lab script and Ansible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_SCRIPT = os.path.join(REPO, 'lab', 'lab.py')
BIN = os.path.dirname(sys.executable)
LAB_DIR = os.environ.get('CYHA_LAB_DIR', '/var/lib/cyha-lab')


def env(**extra) -> dict:
    base = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_FORCE_COLOR='0',
                ANSIBLE_NOCOLOR='1', CYHA_LAB_DIR=LAB_DIR, LC_ALL='C.UTF-8')
    base.update({k: str(v) for k, v in extra.items()})
    return base


def run(argv: list[str], timeout: float = 600, check: bool = False, **extra_env) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env(**extra_env), cwd=REPO,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f'{argv} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}')
    return proc


def lab(*args: str, **extra_env) -> subprocess.CompletedProcess:
    return run([sys.executable, LAB_SCRIPT, '--dir', LAB_DIR, *args], timeout=120, **extra_env)


# The lab every integration test shares (tests/integration/conftest.py).
LAB_SHAPE = ('--frontends', '2', '--backends', '2', '--spares', '1', '--replica-pairs', '1')


def lab_up() -> subprocess.CompletedProcess:
    """Bring the shared lab up, or repair it: links back up, boot addresses back, killed hosts booted."""
    return lab('up', *LAB_SHAPE)


def inside(host: str, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    """A command in a lab host's mount namespace from the lab machine (no SSH: works on a fenced host; sees a
    host's own /run and, on a replica host, its own /etc/cyrus-ha)."""
    with open(os.path.join(LAB_DIR, 'lab.json'), encoding='utf-8') as handle:
        sshd = json.load(handle)['pids'][host]
    return subprocess.run(['nsenter', f'--mount=/proc/{sshd}/ns/mnt', *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def inventory() -> str:
    return os.path.join(LAB_DIR, 'inventory.yml')


def lab_hosts() -> list[dict]:
    with open(os.path.join(LAB_DIR, 'lab.json'), encoding='utf-8') as handle:
        return json.load(handle)['hosts']


def ansible(pattern: str, module: str, args: str = '', *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    argv = [os.path.join(BIN, 'ansible'), '-i', inventory(), pattern, '-m', module]
    if args:
        argv += ['-a', args]
    return run(argv + list(extra), check=check)


# Module options that hold secrets: module_result passes them as a user would, in a variables file
# the task's arguments refer to, so that the command line (which Ansible shows when an ad hoc task
# fails) never holds them.
SECRET_OPTIONS = ('password', 'private_key', 'channel_key')


def module_result(host: str, module: str, args: dict, tree_dir, check_mode: bool = False,
                  diff: bool = False) -> dict:
    """Run one module on one lab host over SSH (ad hoc); its result as the module returned it, plus
    failed (from the exit code) and _output (what Ansible printed)."""
    tree = os.path.join(str(tree_dir), f'tree-{len(os.listdir(tree_dir))}')
    args = dict(args)
    secrets = {f'cyha_secret_{key}': args[key] for key in SECRET_OPTIONS if isinstance(args.get(key), str)}
    extra = []
    if secrets:
        secrets_file = os.path.join(str(tree_dir), f'secrets-{len(os.listdir(tree_dir))}.json')
        fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            json.dump(secrets, handle)
        extra = ['-e', '@' + secrets_file]
        for name in secrets:
            args[name[len('cyha_secret_'):]] = '{{ %s }}' % name
    argv = [os.path.join(BIN, 'ansible'), '-i', inventory(), host, '-m', module, '-a', json.dumps(args),
            '--tree', tree] + extra + (['--check'] if check_mode else []) + (['--diff'] if diff else [])
    proc = run(argv)
    with open(os.path.join(tree, host), encoding='utf-8') as handle:
        result = json.load(handle)
    result['failed'] = proc.returncode != 0
    result['_output'] = proc.stdout + proc.stderr
    return result


def playbook(path: str, *extra: str, check: bool = True, **extra_env) -> subprocess.CompletedProcess:
    argv = [os.path.join(BIN, 'ansible-playbook'), '-i', inventory(), path, *extra]
    return run(argv, check=check, **extra_env)


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """Parse PLAY RECAP lines into {host: {ok, changed, failed, ...}}."""
    result: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in stdout.splitlines():
        if line.startswith('PLAY RECAP'):
            in_recap = True
            continue
        if in_recap and ':' in line:
            host, dummy, counts = line.partition(':')
            result[host.strip()] = {k: int(v) for k, v in (item.split('=') for item in counts.split())}
    return result


def poll(predicate, timeout: float, interval: float = 0.1):
    """Return the first truthy predicate() within timeout, else the last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


FUSE_CONNECTIONS = '/sys/fs/fuse/connections'


def abort_fuse_connection(minor: str) -> bool:
    """Abort FUSE connection `minor` (the device minor of its mount): every request stuck in it ends with
    ENOTCONN, so processes the daemon will never answer leave D state and the mount can go. The abort file is
    in fusectl, which a machine without systemd may not mount: it is mounted for this call and unmounted after.
    Returns whether the connection existed and was aborted."""
    mounted_here = False
    if not os.path.ismount(FUSE_CONNECTIONS):
        mounted_here = subprocess.run(['mount', '-t', 'fusectl', 'none', FUSE_CONNECTIONS], capture_output=True,
                                      check=False).returncode == 0
        if not mounted_here:
            return False
    try:
        abort = os.path.join(FUSE_CONNECTIONS, str(minor), 'abort')
        if not os.path.exists(abort):
            return False
        with open(abort, 'w', encoding='ascii') as handle:
            handle.write('1')
        return True
    finally:
        if mounted_here:
            subprocess.run(['umount', FUSE_CONNECTIONS], capture_output=True, check=False)
