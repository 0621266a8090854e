# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's two-node Pacemaker cluster (be1 and spare running be1's instance, playbooks/cluster.yml):
commands on its nodes, its log, the failures a test or a bench injects, and bringing a node back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET

import cyha_imap
import labutil

VARS = ('-e', '@lab/vars/murder.yml', '-e', '@lab/vars/murder_hosts.yml',
        '-e', '@lab/vars/warm_spare.yml', '-e', '@lab/vars/replication.yml')
FE1_ADDR = '198.51.100.111'
ALICE = ('alice', 'cyha-lab-alice')
MOUNT = '/srv/cyrus-ha/be1'
FAILURES = ('node-crash', 'node-hang', 'link-down', 'instance-killed')


def login_works() -> bool:
    try:
        with cyha_imap.imap(FE1_ADDR, *ALICE) as conn:
            return conn.select('INBOX', readonly=True)[0] == 'OK'
    except Exception:   # noqa: BLE001 - any failure means "not yet"
        return False


def inside(host: str, argv: list[str]) -> subprocess.CompletedProcess:
    """A command in a lab node's mount namespace from the lab machine (no SSH: works on a fenced node)."""
    return subprocess.run(['nsenter', f'--mount=/proc/{node_pid(host)}/ns/mnt', *argv], capture_output=True,
                          text=True, timeout=30, check=False)


def mounted(host: str, mountpoint: str = MOUNT) -> bool:
    return inside(host, ['findmnt', '-n', mountpoint]).returncode == 0


CLUSTER_VARS = VARS + ('-e', '@lab/vars/cluster.yml')
NODES = ('be1', 'spare')
BE1_ADDR = '198.51.100.121'
FAILOVER_TIMEOUT = 90
JOIN_TIMEOUT = 90


def play(*extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return labutil.playbook('playbooks/cluster.yml', *CLUSTER_VARS, *extra, check=check)


def node_pid(host: str) -> int:
    with open(os.path.join(labutil.LAB_DIR, 'lab.json'), encoding='utf-8') as handle:
        return json.load(handle)['pids'][host]


def crm(host: str, *argv: str) -> subprocess.CompletedProcess:
    """A Pacemaker command on a lab node, from the lab machine (its network, mount and UTS namespaces)."""
    return subprocess.run(['nsenter', '-t', str(node_pid(host)), '-n', '-m', '-u', *argv], capture_output=True,
                          text=True, timeout=60, check=False)


def pacemaker_log(host: str) -> str:
    return os.path.join(labutil.LAB_DIR, 'hosts', host, 'private', 'var_log_pacemaker', 'pacemaker.log')


def log_since(host: str, offset: int) -> list[str]:
    with open(pacemaker_log(host), encoding='utf-8', errors='replace') as handle:
        handle.seek(offset)
        return handle.read().splitlines()


def log_size(host: str) -> int:
    return os.path.getsize(pacemaker_log(host))


def netns_pids(host: str) -> list[int]:
    out = subprocess.run(['ip', 'netns', 'pids', f'cyha-{host}'], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def has_address(host: str, address: str = BE1_ADDR) -> bool:
    out = subprocess.run(['ip', '-n', f'cyha-{host}', '-j', 'addr', 'show'], capture_output=True, text=True,
                         check=True).stdout
    return address in {a['local'] for link in json.loads(out) for a in link.get('addr_info', [])}


def active() -> str | None:
    """The node whose master runs be1's instance (None when none or both)."""
    found = [node for node in NODES if cyha_imap.master_pid('be1', f'cyha-{node}')]
    return found[0] if len(found) == 1 else None


def both_online(host: str) -> bool:
    out = crm(host, 'crm_mon', '-1').stdout
    return 'Online: [ be1 spare ]' in out


def group_started_on(host: str, node: str) -> bool:
    out = crm(host, 'crm_mon', '-1').stdout
    return all(f'{name}\t(ocf:' in out and any(line.strip().startswith(f'* {name}') and line.rstrip().endswith(
        f'Started {node}') for line in out.splitlines()) for name in ('be1-volume', 'be1-address', 'be1-cyrus'))


def cib_version(host: str) -> tuple[str, str]:
    """The configuration's version (admin_epoch, epoch): it changes with every configuration change."""
    proc = crm(host, 'cibadmin', '--query')
    assert proc.returncode == 0, proc.stderr
    root = ET.fromstring(proc.stdout)
    return root.get('admin_epoch'), root.get('epoch')


def pacemakerd_pid(node: str) -> int | None:
    for pid in netns_pids(node):
        try:
            with open(f'/proc/{pid}/comm', encoding='utf-8') as handle:
                if handle.read().strip() == 'pacemakerd':
                    return pid
        except OSError:
            continue
    return None


def canary() -> str:
    with cyha_imap.imap(FE1_ADDR, *ALICE) as conn:
        return cyha_imap.append_and_fetch(conn)


def canary_count(subject: str, timeout: float = 30) -> int:
    """How many messages with this subject alice's INBOX holds, read through fe1 (retried while the
    frontend still refuses the SELECT right after a takeover)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with cyha_imap.imap(FE1_ADDR, *ALICE) as conn:
                status, detail = conn.select('INBOX', readonly=True)
                if status == 'OK':
                    return len(conn.search(None, 'SUBJECT', subject)[1][0].split())
        except Exception as exc:   # noqa: BLE001 - retried until the deadline
            detail = exc
        if time.monotonic() > deadline:
            raise AssertionError(f'INBOX of alice cannot be read through fe1: {detail}')
        time.sleep(0.5)


def rejoin(node: str) -> None:
    """Boot a fenced node again (the lab's "power on") and start its cluster stack: it rejoins."""
    proc = labutil.lab_up()
    assert proc.returncode == 0, proc.stderr
    play('-l', node)
    other = NODES[1 - NODES.index(node)]
    assert labutil.poll(lambda: both_online(other), JOIN_TIMEOUT, interval=0.5), crm(other, 'crm_mon', '-1').stdout
    crm(other, 'crm_resource', '--cleanup')
    crm(other, 'stonith_admin', '--cleanup', '--history', '*')


def inject(failure: str, node: str) -> None:
    if failure == 'node-crash':
        # the lab's power switch: the link goes dark and every process of the node is killed
        subprocess.run(['/usr/sbin/fence_cyhalab', '-o', 'off', '-n', node], check=True, stdin=subprocess.DEVNULL)
    elif failure == 'node-hang':
        for pid in netns_pids(node):
            os.kill(pid, signal.SIGSTOP)
    elif failure == 'link-down':
        subprocess.run(['ip', '-n', f'cyha-{node}', 'link', 'set', 'eth0', 'down'], check=True)
    else:
        for pid in cyha_imap.instance_pids('be1', f'cyha-{node}'):
            os.kill(pid, signal.SIGKILL)


def wipe() -> None:
    """No cluster on the lab: every node up, its stack stopped, no CIB, key or corosync.conf left."""
    labutil.lab_up()
    play('-e', 'cluster_action=stop', check=False)
    for node in NODES:
        inside(node, ['sh', '-c', 'rm -f /var/lib/pacemaker/cib/* /var/lib/pacemaker/pengine/* '
                                  '/etc/corosync/authkey /etc/corosync/corosync.conf'])
