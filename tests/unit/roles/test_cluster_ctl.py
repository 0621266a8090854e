# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster role's control script (cluster_ctl.py), imported by its path: which corosync and pacemakerd
are this node's (recorded /proc trees: comm with spaces, zombies, other nodes' namespaces), and the
decisions of status, start and stop (check mode, or with the commands faked)."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SPEC = importlib.util.spec_from_file_location('cluster_ctl', os.path.join(REPO, 'roles', 'cluster', 'files',
                                                                          'cluster_ctl.py'))
cluster_ctl = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(cluster_ctl)


def run(capsys, *argv: str) -> tuple:
    code = cluster_ctl.main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_daemons_of_this_node_only(proc):
    proc.add(10, ['corosync', '-f'], netns='net:[2]')              # another node's (lab: shared PID namespace)
    proc.add(11, ['corosync', '-f'], mntns='mnt:[2]')
    proc.add(12, ['pacemakerd'], state='Z')
    proc.add(13, ['x'], comm='corosync (x)')                       # a comm that only contains the name
    assert cluster_ctl.pids(proc.root) == {'corosync': None, 'pacemakerd': None}
    proc.add(20, ['corosync', '-f'])
    proc.add(21, ['/usr/sbin/pacemakerd'])
    assert cluster_ctl.pids(proc.root) == {'corosync': 20, 'pacemakerd': 21}
    assert cluster_ctl.same_node(20, proc.root) and not cluster_ctl.same_node(10, proc.root)
    assert not cluster_ctl.same_node(99, proc.root)


@pytest.mark.parametrize('running, state', [([], 'stopped'), (['corosync'], 'partial'),
                                            (['corosync', 'pacemakerd'], 'started')])
def test_status(proc, capsys, running, state):
    for pid, name in enumerate(running, 100):
        proc.add(pid, [name])
    code, answer = run(capsys, 'status', '--proc-root', proc.root)
    assert (code, answer['state'], answer['changed']) == (0, state, False)
    assert answer['pids'] == {name: (100 + running.index(name) if name in running else None)
                              for name in cluster_ctl.DAEMONS}


def test_start_and_stop_decisions_in_check_mode(proc, capsys):
    assert run(capsys, 'stop', '--check', '--proc-root', proc.root)[1] == {
        'changed': False, 'state': 'stopped', 'pids': {'corosync': None, 'pacemakerd': None},
        'msg': 'the cluster stack is not running'}
    assert run(capsys, 'start', '--check', '--proc-root', proc.root)[1]['msg'] == 'the cluster stack would be started'
    proc.add(100, ['corosync'])
    proc.add(101, ['pacemakerd'])
    assert run(capsys, 'start', '--proc-root', proc.root)[1] == {
        'changed': False, 'state': 'started', 'pids': {'corosync': 100, 'pacemakerd': 101},
        'msg': 'corosync and pacemakerd are running'}
    assert run(capsys, 'stop', '--check', '--proc-root', proc.root)[1]['msg'] == 'the cluster stack would be stopped'


def test_a_ring_that_never_forms_fails_naming_the_output_file(proc, capsys, monkeypatch):
    spawned = []
    monkeypatch.setattr(cluster_ctl, 'spawn', spawned.append)
    monkeypatch.setattr(cluster_ctl, 'ring_up', lambda: False)
    code, answer = run(capsys, 'start', '--timeout', '0.2', '--proc-root', proc.root)
    assert code == 1 and spawned == [['corosync', '-f']]
    assert answer['msg'] == ('corosync did not form its ring within 0.2 s: see /var/log/corosync/corosync.out and '
                             'the corosync log')


def test_a_pacemakerd_that_does_not_stop_leaves_corosync_running(proc, capsys, monkeypatch):
    proc.add(100, ['corosync'])
    proc.add(101, ['pacemakerd'])
    commands = []
    monkeypatch.setattr(cluster_ctl.subprocess, 'run', lambda argv, **kwargs: commands.append(argv))
    code, answer = run(capsys, 'stop', '--timeout', '0.2', '--proc-root', proc.root)
    assert code == 1 and commands == [['pacemakerd', '--shutdown']]
    assert answer['msg'] == ('pacemakerd (pid 101) did not stop within 0.2 s: its resources may still be stopping; '
                             'corosync left running so that the peer does not fence this node')
