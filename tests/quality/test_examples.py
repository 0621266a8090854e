# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""examples/: a real site's inventory and vars for the seed's Murder (no lab needed). The inventory
builds the expected groups and murder_* variables, the vars render, every runbook passes
--syntax-check with them, and nothing in examples/ names the test lab or a non-documentation address."""

from __future__ import annotations

import glob
import ipaddress
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
EXAMPLES = os.path.join(REPO, 'examples')
INVENTORY = ['-i', os.path.join(EXAMPLES, 'inventory', 'hosts.yml'), '-i', os.path.join(EXAMPLES, 'inventory', 'murder.yml')]
VARS = [arg for name in ('murder', 'warm_spare', 'replication', 'cluster') for arg in ('-e', '@' + os.path.join(EXAMPLES, 'vars', name + '.yml'))]
PLAYBOOKS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, 'playbooks', '*.yml')))
DOCUMENTATION_NETS = [ipaddress.ip_network(n) for n in ('198.51.100.0/24', '203.0.113.0/24', '2001:db8::/32')]

FRONTENDS = ['imap-fe1', 'imap-fe2', 'imap-fe3', 'imap-fe4']
GRAPH = {
    'all': ['ungrouped', 'cluster', 'murder', 'mupdate_master', 'backends', 'frontends', 'spares', 'replicas'],
    'ungrouped': [],
    'cluster': ['imap-be1', 'imap-be2', 'imap-spare'],
    'murder': ['imap-mupdate', *FRONTENDS, 'imap-be1', 'imap-be2', 'imap-be3', 'imap-spare', 'imap-replica'],
    'mupdate_master': ['imap-mupdate'],
    'backends': ['imap-be1', 'imap-be2', 'imap-be3'],
    'frontends': FRONTENDS,
    'spares': ['imap-spare'],
    'replicas': ['imap-replica'],
}


def run(argv: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1')
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, env=env, check=False)


def plain(value):
    """ansible-inventory marks strings that are not templates as {'__ansible_unsafe': ...}."""
    if isinstance(value, dict):
        if set(value) == {'__ansible_unsafe'}:
            return value['__ansible_unsafe']
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def inventory_list(*sources: str) -> dict:
    argv = [os.path.join(BIN, 'ansible-inventory'), '--list']
    for source in sources:
        argv += ['-i', os.path.join(EXAMPLES, 'inventory', source)]
    out = run(argv)
    assert out.returncode == 0, out.stderr
    assert 'WARNING' not in out.stderr, out.stderr
    return plain(json.loads(out.stdout))


def rendered(expression: str, *extra: str):
    """The value of a template with the example inventory and vars, rendered on the controller only."""
    out = run([os.path.join(BIN, 'ansible'), 'localhost', *INVENTORY, *VARS, *extra, '-m', 'ansible.builtin.debug',
               '-a', 'msg={{ %s }}' % expression])
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.split(' => ', 1)[1])['msg']


def instance(name, role, host, address, servername, spare=None, label=None, replica=None):
    volume = None
    if label:
        volume = {'uuid': None, 'label': label, 'device': None, 'mount': '/srv/cyrus/' + name, 'fstype': 'ext4',
                  'options': 'defaults'}
    return {'name': name, 'role': role, 'host': host, 'address': address, 'address_prefix': 24,
            'servername': servername, 'spare': spare, 'volume': volume, 'replica': replica,
            'replication_port': 2005 if replica else None}


BE1 = instance('be1', 'backend', 'imap-be1', '198.51.100.121', 'be1.imap.example.org', 'imap-spare', 'cyrus-be1')
BE2 = instance('be2', 'backend', 'imap-be2', '198.51.100.122', 'be2.imap.example.org', 'imap-spare', 'cyrus-be2')
BE3 = instance('be3', 'backend', 'imap-be3', '198.51.100.123', 'be3.imap.example.org', replica='imap-replica')
FE1 = instance('fe1', 'frontend', 'imap-fe1', '198.51.100.111', 'fe1.imap.example.org')
WARM_SPARE_PAIRS = [
    {'instance': 'be1', 'home': 'imap-be1', 'spare': 'imap-spare', 'address': '198.51.100.121',
     'servername': 'be1.imap.example.org', 'volume': {'label': 'cyrus-be1', 'mount': '/srv/cyrus/be1'}},
    {'instance': 'be2', 'home': 'imap-be2', 'spare': 'imap-spare', 'address': '198.51.100.122',
     'servername': 'be2.imap.example.org', 'volume': {'label': 'cyrus-be2', 'mount': '/srv/cyrus/be2'}}]
REPLICATION_PAIRS = [
    {'instance': 'be3', 'home': 'imap-be3', 'replica': 'imap-replica', 'servername': 'be3.imap.example.org',
     'address': '198.51.100.123', 'home_address': '198.51.100.23', 'replica_address': '198.51.100.50',
     'port': 2005}]
CONNECTION = {'ansible_user': 'ansible', 'ansible_become': True, 'ansible_python_interpreter': '/usr/bin/python3',
              'murder_mupdate_servername': 'mupdate.imap.example.org', 'warm_spare_pairs': WARM_SPARE_PAIRS,
              'replication_pairs': REPLICATION_PAIRS}


def test_the_graph_shows_the_murder_groups_and_the_cluster():
    out = run([os.path.join(BIN, 'ansible-inventory'), *INVENTORY, '--graph'])
    assert out.returncode == 0, out.stderr
    assert 'WARNING' not in out.stderr, out.stderr
    graph, group = {}, None
    for line in out.stdout.splitlines():
        name = line.strip(' |-')
        if name.startswith('@'):
            group = name[1:-1]
            graph[group] = []
            if line.startswith('  '):
                graph['all'].append(group)
        else:
            graph[group].append(name)
    assert graph == GRAPH


@pytest.mark.parametrize('host, expected', [
    ('imap-be1', dict(CONNECTION, ansible_host='198.51.100.21', murder_host_address6='2001:db8:100::21',
                      murder_role='backend', murder_instance='be1', murder_address='198.51.100.121',
                      murder_address_prefix=24, murder_servername='be1.imap.example.org', murder_instances=[BE1],
                      murder_standby_instances=[], murder_replica_instances=[])),
    ('imap-be3', dict(CONNECTION, ansible_host='198.51.100.23', murder_host_address6='2001:db8:100::23',
                      murder_role='backend', murder_instance='be3', murder_address='198.51.100.123',
                      murder_address_prefix=24, murder_servername='be3.imap.example.org', murder_instances=[BE3],
                      murder_standby_instances=[], murder_replica_instances=[],
                      murder_replication_peer='198.51.100.50', murder_replication_port=2005)),
    ('imap-fe1', dict(CONNECTION, ansible_host='198.51.100.11', murder_host_address6='2001:db8:100::11',
                      murder_role='frontend', murder_instance='fe1', murder_address='198.51.100.111',
                      murder_address_prefix=24, murder_servername='fe1.imap.example.org', murder_instances=[FE1],
                      murder_standby_instances=[], murder_replica_instances=[])),
    ('imap-spare', dict(CONNECTION, ansible_host='198.51.100.30', murder_host_address6='2001:db8:100::30',
                        murder_instances=[], murder_standby_instances=[BE1, BE2], murder_replica_instances=[])),
    ('imap-replica', dict(CONNECTION, ansible_host='198.51.100.50', murder_host_address6='2001:db8:100::50',
                          murder_instances=[], murder_standby_instances=[], murder_replica_instances=[BE3])),
])
def test_the_murder_plugin_computes_the_host_variables(host, expected):
    assert inventory_list('hosts.yml', 'murder.yml')['_meta']['hostvars'][host] == expected


def test_hosts_yml_reaches_each_host_on_its_boot_address_in_the_topology():
    alone = inventory_list('hosts.yml')['_meta']['hostvars']
    topology = inventory_list('murder.yml')['_meta']['hostvars']
    assert sorted(alone) == sorted(topology) == sorted(GRAPH['murder'])
    assert {h: v['ansible_host'] for h, v in alone.items()} == {h: v['ansible_host'] for h, v in topology.items()}


def test_the_pairs_come_from_the_topology():
    assert rendered('warm_spare_pairs') == WARM_SPARE_PAIRS
    assert rendered('replication_pairs') == REPLICATION_PAIRS
    # the replica pair's secret comes from the vault
    assert rendered('murder_replication_password', '-e', 'vault_murder_replication_password=x') == 'x'


@pytest.mark.parametrize('name, configdirectory, spool', [
    ('be1', '/srv/cyrus/be1/lib', '/srv/cyrus/be1/spool'),
    ('be2', '/srv/cyrus/be2/lib', '/srv/cyrus/be2/spool'),
    ('fe1', '/var/lib/cyrus-ha/fe1', '/var/spool/cyrus-ha/fe1'),
])
def test_backends_keep_their_instance_on_their_volume(name, configdirectory, spool):
    got = rendered('[cyrus_instance_configdirectory, cyrus_instance_partitions]', '-e', 'cyrus_instance_name=' + name)
    assert got == [configdirectory, {'default': spool}]


def test_the_cluster_vars_make_a_fenced_cluster_of_the_pairs():
    cib = rendered("warm_spare_pairs | cyrus.ha.cluster_config(groups['cluster'], cluster_fence_devices, "
                   "{'ping_targets': cluster_fence_ping_targets})", '-e', 'vault_ipmi_fence_password=not-a-secret')
    assert [r['id'] for r in cib['resources']] == ['fence-imap-be1', 'fence-imap-be2', 'fence-imap-spare',
                                                   'fence-heuristics-ping', 'cyrus-be1', 'cyrus-be2']
    assert cib['resources'][0]['agent'] == 'stonith:fence_ipmilan'
    assert cib['resources'][0]['params']['ip'] == 'imap-be1-bmc.example.org'
    assert [(f['target'], f['devices']) for f in cib['fencing_levels']] == [
        (node, ['fence-heuristics-ping', 'fence-' + node]) for node in ('imap-be1', 'imap-be2', 'imap-spare')]
    bans = sorted((c['resource'], c['node']) for c in cib['constraints'] if c['id'].startswith('cyrus-')
                  and c['score'] == '-INFINITY')
    assert bans == [('cyrus-be1', 'imap-be2'), ('cyrus-be2', 'imap-be1')]


@pytest.mark.parametrize('playbook', PLAYBOOKS)
def test_every_runbook_passes_syntax_check_with_the_examples(playbook):
    out = run([os.path.join(BIN, 'ansible-playbook'), '--syntax-check', *INVENTORY, *VARS,
               os.path.join(REPO, 'playbooks', playbook)])
    assert out.returncode == 0, out.stdout + out.stderr


def example_files() -> list[str]:
    found = sorted(glob.glob(os.path.join(EXAMPLES, '**', '*'), recursive=True))
    return [p for p in found if os.path.isfile(p)]


def test_the_examples_are_there():
    names = sorted(os.path.relpath(p, EXAMPLES) for p in example_files())
    assert names == ['README.md', 'ansible.cfg', 'inventory/hosts.yml', 'inventory/murder.yml', 'vars/cluster.yml',
                     'vars/murder.yml', 'vars/replication.yml', 'vars/warm_spare.yml']
    assert PLAYBOOKS, 'no playbook found'


@pytest.mark.parametrize('path', [os.path.relpath(p, EXAMPLES) for p in example_files()])
def test_the_examples_use_documentation_names_and_addresses_only(path):
    with open(os.path.join(EXAMPLES, path), encoding='utf-8') as handle:
        text = handle.read()
    assert 'cyha' not in text.lower(), f'{path} names the built-in test lab'
    domains = set(re.findall(r'\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:org|com|net|test|lan|local)\b', text.lower()))
    assert {d for d in domains if d != 'example.org' and not d.endswith('.example.org')} == set(), path
    addresses = re.findall(r'(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){2,7})(?![\w.:])',
                           text.lower())
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:   # a time of day, a version: not an address
            continue
        assert any(ip in net for net in DOCUMENTATION_NETS), f'{path}: {address} is not a documentation address'


def secrets(node, key=''):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from secrets(v, str(k))
    elif isinstance(node, list):
        for v in node:
            yield from secrets(v, key)
    elif re.search(r'password|authkey|secret', key):
        yield key, node


@pytest.mark.parametrize('name', ['murder', 'warm_spare', 'replication', 'cluster'])
def test_every_secret_refers_to_the_vault(name):
    with open(os.path.join(EXAMPLES, 'vars', name + '.yml'), encoding='utf-8') as handle:
        found = list(secrets(yaml.safe_load(handle)))
    assert found or name == 'warm_spare'
    for key, value in found:
        assert re.fullmatch(r'\{\{ vault_[a-z_]+ \}\}', str(value)), f'{name}.yml: {key} is not a vault reference'


def test_the_example_ansible_cfg_tunes_the_connection_as_the_checkout_runs_it():
    """examples/ansible.cfg (a site's) and the checkout's ansible.cfg (the lab's and the tests') connect the same
    way: pipelining and SSH connections kept open, so a failover is one round trip per node."""
    import configparser
    site, checkout = configparser.ConfigParser(), configparser.ConfigParser()
    site.read(os.path.join(EXAMPLES, 'ansible.cfg'))
    checkout.read(os.path.join(REPO, 'ansible.cfg'))
    assert site.getboolean('ssh_connection', 'pipelining') is True
    assert 'ControlPersist=300s' in site.get('ssh_connection', 'ssh_args')
    assert dict(site['ssh_connection']) == dict(checkout['ssh_connection'])
