# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unattended failover on Pacemaker: be1 and spare as a two-node cluster running be1's instance
(cyrus.ha.cluster through playbooks/cluster.yml, with the lab's fence agent and fence_heuristics_ping).
Each failure is injected on the node that runs the instance and nothing else is done: the instance
must come back on the other node by itself, the mail intact, the failed node fenced before the volume
moved; a graceful stop moves it without fencing. Mail is proved through frontend fe1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

import cyha_imap
import labutil
from test_warm_spare import ALICE, FE1_ADDR, VARS, inside, login_works, master_netns, mounted, pair  # noqa: F401

pytestmark = pytest.mark.lab

CLUSTER_VARS = VARS + ('-e', '@playbooks/vars/cluster_lab.yml')
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
    found = master_netns('be1')
    return found[len('cyha-'):] if found in ('cyha-be1', 'cyha-spare') else None


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


def canary_count(subject: str) -> int:
    with cyha_imap.imap(FE1_ADDR, *ALICE) as conn:
        conn.select('INBOX', readonly=True)
        return len(conn.search(None, 'SUBJECT', subject)[1][0].split())


def rejoin(node: str) -> None:
    """Boot a fenced node again (the lab's "power on") and start its cluster stack: it rejoins."""
    proc = labutil.lab('up', '--frontends', '2', '--backends', '2', '--spares', '1')
    assert proc.returncode == 0, proc.stderr
    play('-l', node)
    other = NODES[1 - NODES.index(node)]
    assert labutil.poll(lambda: both_online(other), JOIN_TIMEOUT, interval=0.5), crm(other, 'crm_mon', '-1').stdout
    crm(other, 'crm_resource', '--cleanup')
    crm(other, 'stonith_admin', '--cleanup', '--history', '*')


@pytest.fixture(scope='module')
def cluster(pair):  # noqa: F811 - the warm-spare pair fixture, imported
    """be1 and spare as a cluster that runs be1's instance (deployed on be1 by the pair fixture)."""
    wipe()
    try:
        first = play()
        assert labutil.poll(lambda: group_started_on('be1', 'be1'), JOIN_TIMEOUT, interval=0.5), \
            crm('be1', 'crm_mon', '-1r').stdout
        assert labutil.poll(login_works, 60, interval=0.5)
        yield {'first': first}
    finally:
        wipe()


def wipe() -> None:
    """No cluster on the lab: every node up, its stack stopped, no CIB, key or corosync.conf left."""
    labutil.lab('up', '--frontends', '2', '--backends', '2', '--spares', '1')
    play('-e', 'cluster_action=stop', check=False)
    for node in NODES:
        inside(node, ['sh', '-c', 'rm -f /var/lib/pacemaker/cib/* /var/lib/pacemaker/pengine/* '
                                  '/etc/corosync/authkey /etc/corosync/corosync.conf'])


def test_first_run_changes_second_run_changes_nothing_check_mode_predicts(cluster):
    first = labutil.recap(cluster['first'].stdout)
    assert first['be1']['changed'] > 0 and first['spare']['changed'] > 0, first
    second = labutil.recap(play().stdout)
    assert second['be1']['changed'] == 0 and second['spare']['changed'] == 0, second
    before = cib_version('be1')
    checked = play('--check', '--diff', '-e', 'cluster_stickiness=300')
    recap = labutil.recap(checked.stdout)
    assert recap['be1']['changed'] == 1 and recap['spare']['changed'] == 0, checked.stdout[-3000:]
    assert 'name="resource-stickiness" value="300"' in checked.stdout
    assert cib_version('be1') == before
    out = crm('be1', 'crm_attribute', '--type', 'rsc_defaults', '--name', 'resource-stickiness', '--query').stdout
    assert 'value=200' in out


@pytest.mark.parametrize('extra, message', [
    ({'cluster_fence_devices': []},
     'cyrus.ha.cluster_config: no fence devices: without fencing Pacemaker cannot move a volume safely '
     '(set cluster_fence_devices)'),
    ({'cluster_pairs': [{'instance': 'be1', 'home': 'be9', 'spare': 'spare', 'address': BE1_ADDR,
                         'volume': {'label': 'cyha-be1', 'mount': '/srv/cyrus-ha/be1'}}]},
     "cyrus.ha.cluster_config: pair be1: home be9 is not a cluster node ['be1', 'spare']"),
    ({'cluster_pairs': [{'instance': 'be1', 'home': 'be1', 'spare': 'spare', 'address': '198.51.100.999',
                         'volume': {'label': 'cyha-be1', 'mount': '/srv/cyrus-ha/be1'}}]},
     "cyrus.ha.cluster_config: pair be1: address '198.51.100.999' is not an IP address"),
    ({'cluster_fence_devices': [{'id': 'fence-be1', 'agent': 'ipmi', 'targets': ['be1']}]},
     "cyrus.ha.cluster_config: fence device fence-be1: agent 'ipmi' is not a fence agent (fence_*)"),
    ({'cluster_service_manager': 'upstart'},
     'value of cluster_service_manager must be one of: systemd, foreground, got: upstart'),
])
def test_bad_input_fails_with_its_cause_and_changes_nothing(cluster, extra, message):
    before = cib_version('be1')
    proc = play('-e', json.dumps(extra), check=False)
    assert proc.returncode != 0
    assert message in ' '.join((proc.stdout + proc.stderr).split()), proc.stdout[-3000:]
    assert cib_version('be1') == before
    assert group_started_on('be1', active())


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


@pytest.mark.parametrize('failure', ['node-crash', 'node-hang', 'link-down', 'instance-killed'])
def test_the_instance_comes_back_on_the_other_node_by_itself(cluster, failure):
    victim = active()
    assert victim in NODES, 'be1 instance is not running on exactly one node'
    survivor = NODES[1 - NODES.index(victim)]
    subject = canary()
    offset = log_size(survivor)
    survivor_pacemakerd = pacemakerd_pid(survivor)
    assert survivor_pacemakerd
    started = time.monotonic()
    inject(failure, victim)
    try:
        assert labutil.poll(lambda: active() == survivor and login_works(), FAILOVER_TIMEOUT, interval=0.2), \
            crm(survivor, 'crm_mon', '-1r').stdout
        print(f'{failure}: IMAP through fe1 from {survivor} {time.monotonic() - started:.1f} s after the failure')
        assert canary_count(subject) == 1
        assert mounted(survivor) and has_address(survivor)
        lines = log_since(survivor, offset)
        fenced = [i for i, line in enumerate(lines) if f'Peer {victim} was terminated' in line and ': OK' in line]
        volume_started = [i for i, line in enumerate(lines)
                          if f'Result of start operation for be1-volume on {survivor}: ok' in line]
        assert volume_started, 'the survivor did not start the volume'
        if failure == 'instance-killed':
            assert not fenced, 'a failed instance whose stop succeeded needs no fencing'
            assert active() == survivor
        else:
            assert fenced and fenced[0] < volume_started[0], 'the volume moved before the failed node was fenced'
            # the isolated or failed node serves nothing: every process of it is gone, its link is down
            assert not netns_pids(victim)
            # the healthy node was not shot (the heuristics kept the isolated node from winning the race)
            assert pacemakerd_pid(survivor) == survivor_pacemakerd
    finally:
        if failure == 'node-hang':
            for pid in netns_pids(victim):
                os.kill(pid, signal.SIGCONT)
        if failure == 'link-down':
            subprocess.run(['ip', '-n', f'cyha-{victim}', 'link', 'set', 'eth0', 'up'], check=False)
    if failure == 'instance-killed':
        crm(survivor, 'crm_resource', '--cleanup')
        assert labutil.poll(lambda: both_online(survivor), JOIN_TIMEOUT, interval=0.5)
    else:
        rejoin(victim)


def test_a_graceful_stop_moves_the_instance_without_fencing(cluster):
    victim = active()
    survivor = NODES[1 - NODES.index(victim)]
    subject = canary()
    offset = log_size(survivor)
    stopped = play('-e', 'cluster_action=stop', '-l', victim)
    assert labutil.recap(stopped.stdout)[victim]['changed'] == 1
    assert labutil.poll(lambda: active() == survivor and login_works(), FAILOVER_TIMEOUT, interval=0.2)
    assert canary_count(subject) == 1
    assert not [line for line in log_since(survivor, offset) if 'was terminated' in line]
    # the stopped node's own processes are gone, but the node was not fenced: its sshd still runs
    assert node_pid(victim) in netns_pids(victim)
    again = play('-e', 'cluster_action=stop', '-l', victim)
    assert labutil.recap(again.stdout)[victim]['changed'] == 0
    play('-l', victim)
    assert labutil.poll(lambda: both_online(survivor), JOIN_TIMEOUT, interval=0.5)
