# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab reached through its cyrus.ha.murder topology: groups map to the real hosts."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

import labutil

pytestmark = pytest.mark.lab
TOPOLOGY = os.path.join(labutil.REPO, 'lab', 'rigs', 'lab-topology.yml')


def test_each_murder_group_reaches_its_lab_hosts(lab):
    with tempfile.TemporaryDirectory(prefix='cyha-tree-') as tree:
        argv = [os.path.join(labutil.BIN, 'ansible'), '-i', TOPOLOGY, 'murder', '-m', 'ansible.builtin.setup',
                '-a', 'gather_subset=!all,network,!hardware', '--tree', tree]
        labutil.run(argv, check=True)
        seen = {}
        for host in sorted(os.listdir(tree)):
            with open(os.path.join(tree, host), encoding='utf-8') as handle:
                facts = json.load(handle)['ansible_facts']
            seen[host] = facts['ansible_hostname'], facts['ansible_all_ipv4_addresses']
    assert sorted(seen) == sorted(h['name'] for h in lab)
    for host in lab:
        assert seen[host['name']][0] == host['name']
        assert host['addr4'] in seen[host['name']][1]
    graph = labutil.run([os.path.join(labutil.BIN, 'ansible-inventory'), '-i', TOPOLOGY, '--graph', 'spares'],
                        check=True).stdout
    assert graph.split() == ['@spares:', '|--spare']
