# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.murder inventory plugin, run by ansible-inventory on topology files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
LAB_TOPOLOGY = os.path.join(REPO, 'lab', 'rigs', 'lab-topology.yml')
BIN = os.path.dirname(sys.executable)


def inventory(path: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1')
    return subprocess.run([os.path.join(BIN, 'ansible-inventory'), '-i', path, *args], capture_output=True,
                          text=True, cwd=REPO, env=env, check=False)


def plain(value):
    """ansible-inventory marks strings that are not templates as {'__ansible_unsafe': ...}."""
    if isinstance(value, dict):
        if set(value) == {'__ansible_unsafe'}:
            return value['__ansible_unsafe']
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def test_the_lab_topology_builds_the_lab_groups_and_variables():
    out = inventory(LAB_TOPOLOGY, '--list')
    assert out.returncode == 0, out.stderr
    data = plain(json.loads(out.stdout))
    assert data['all']['children'] == ['ungrouped', 'murder', 'mupdate_master', 'backends', 'frontends', 'spares',
                                       'replicas']
    assert data['mupdate_master']['hosts'] == ['mupdate']
    assert data['backends']['hosts'] == ['be1', 'be2', 'be3']
    assert data['frontends']['hosts'] == ['fe1', 'fe2']
    assert data['spares']['hosts'] == ['spare']
    assert data['replicas']['hosts'] == ['replica']
    hostvars = data['_meta']['hostvars']
    expected = {'mupdate': ('mupdate', '198.51.100.110', 'mupdate-svc.cyha.test'),
                'fe1': ('frontend', '198.51.100.111', 'fe1-svc.cyha.test'),
                'fe2': ('frontend', '198.51.100.112', 'fe2-svc.cyha.test'),
                'be1': ('backend', '198.51.100.121', 'be1-svc.cyha.test'),
                'be2': ('backend', '198.51.100.122', 'be2-svc.cyha.test')}
    for host, (role, address, servername) in expected.items():
        got = hostvars[host]
        assert (got['murder_role'], got['murder_address'], got['murder_servername'], got['murder_instance']) == \
            (role, address, servername, host)
        assert got['murder_mupdate_servername'] == 'mupdate-svc.cyha.test'
    assert [i['name'] for i in hostvars['spare']['murder_standby_instances']] == ['be1', 'be2']
    assert 'murder_role' not in hostvars['spare']
    # the replica pair: be3 ships its changes to the host replica, which holds the same instance
    assert (hostvars['be3']['murder_replication_peer'], hostvars['be3']['murder_replication_port']) == (
        '198.51.100.50', 2015)
    assert [i['name'] for i in hostvars['replica']['murder_replica_instances']] == ['be3']
    assert hostvars['mupdate']['replication_pairs'] == [{
        'instance': 'be3', 'home': 'be3', 'replica': 'replica', 'servername': 'be3-svc.cyha.test',
        'address': '198.51.100.123', 'home_address': '198.51.100.23', 'replica_address': '198.51.100.50',
        'port': 2015}]
    assert 'WARNING' not in out.stderr, out.stderr


def test_compose_and_keyed_groups(tmp_path):
    path = tmp_path / 'murder.yml'
    with open(LAB_TOPOLOGY, encoding='utf-8') as handle:
        text = handle.read()
    path.write_text(text + 'compose:\n  service_ip_address: murder_address ~ "/" ~ murder_address_prefix\n'
                           'keyed_groups:\n  - key: murder_role\n    prefix: role\n')
    data = plain(json.loads(inventory(str(path), '--list').stdout))
    assert data['_meta']['hostvars']['be1']['service_ip_address'] == '198.51.100.121/24'
    assert data['role_backend']['hosts'] == ['be1', 'be2', 'be3']


def test_a_bad_topology_fails_naming_the_entry(tmp_path):
    # with the collection's ansible.cfg ([inventory] any_unparsed_is_failed): no warning-and-no-hosts
    path = tmp_path / 'murder.yml'
    with open(LAB_TOPOLOGY, encoding='utf-8') as handle:
        path.write_text(handle.read().replace('address: 198.51.100.122,', 'address: 198.51.100.21,'))
    out = inventory(str(path), '--list')
    assert out.returncode != 0
    assert ('murder.yml: instances.be2.address: 198.51.100.21 is the boot address of be1: a service address must '
            'be its own') in out.stderr, out.stderr


def lab_text_with(old: str, new: str) -> str:
    with open(LAB_TOPOLOGY, encoding='utf-8') as handle:
        text = handle.read()
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize('old, new, message', [
    # YAML keeps the last of two equal keys with only a warning: the plugin reads the text
    ('  spare: {address: 198.51.100.30', '  be2: {address: 198.51.100.40}\n  spare: {address: 198.51.100.30',
     'murder.yml: hosts.be2: written twice (lines 13 and 15): YAML would keep only the last'),
    # what Ansible's loader builds (tagged lists, sets, dates) is named in YAML's words
    ('  be1: {address: 198.51.100.21, address6: "2001:db8::21"}', '  be1: [198.51.100.21]',
     'murder.yml: hosts.be1: expected a mapping, got list'),
    ('volume: {label: cyha-be1,', 'volume: {label: !!set {a, b},',
     'murder.yml: warm_spares[0] (be1).volume.label: expected a filesystem label (1 to 16 of A-Z a-z 0-9 _ . : + -), '
     'got set'),
    ('volume: {label: cyha-be1,', 'volume: {label: 2024-01-01,',
     'murder.yml: warm_spares[0] (be1).volume.label: expected a filesystem label (1 to 16 of A-Z a-z 0-9 _ . : + -), '
     'got date 2024-01-01 (quote it to keep it text)'),
    ('  spare: {address: 198.51.100.30', '  "be3\\n": {address: 198.51.100.40}\n  spare: {address: 198.51.100.30',
     "murder.yml: hosts.'be3\\n': 'be3\\n' is not a valid inventory host name (dot-separated labels of ASCII letters, "
     "digits, _ and -, each starting and ending with a letter or digit; at most 63 characters)"),
    ('vars:\n', 'strict: maybe\nvars:\n', "murder.yml: strict: expected true or false, got string 'maybe'"),
    # group names keyed_groups makes are known only once Ansible has made them
    ('vars:\n', 'keyed_groups:\n  - {key: murder_role, prefix: "", separator: ""}\nvars:\n',
     'murder.yml: keyed_groups: the group mupdate would have the name of a host: give the keyed groups a prefix'),
    ('vars:\n', 'cache: true\nvars:\n', 'murder.yml: topology: unknown key cache (known: compose, groups, hosts, '
                                        'instances, keyed_groups, leading_separator, plugin, replicas, strict, subnets, '
                                        'use_extra_vars, vars, warm_spares)'),
])
def test_hostile_files_fail_naming_the_entry(tmp_path, old, new, message):
    path = tmp_path / 'murder.yml'
    path.write_text(lab_text_with(old, new), encoding='utf-8')
    out = inventory(str(path), '--list')
    assert out.returncode != 0
    assert message in out.stderr, out.stderr
