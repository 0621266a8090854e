# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab itself: every host reachable over SSH, private mounts, per-host syslog, idempotent up."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

import labutil

pytestmark = pytest.mark.lab

EXPECTED = {'mupdate': '198.51.100.10', 'fe1': '198.51.100.11', 'fe2': '198.51.100.12',
            'be1': '198.51.100.21', 'be2': '198.51.100.22', 'be3': '198.51.100.23', 'spare': '198.51.100.30',
            'client': '198.51.100.40', 'replica': '198.51.100.50'}


def snapshot() -> dict:
    """What the lab consists of right now, as the kernel reports it."""
    namespaces = sorted(n for n in os.listdir('/run/netns') if n.startswith('cyha-'))
    addresses = {}
    for netns in namespaces:
        out = subprocess.run(['ip', '-n', netns, '-j', 'addr', 'show', 'dev', 'eth0'], capture_output=True,
                             text=True, check=True).stdout
        addresses[netns] = sorted(a['local'] for link in json.loads(out) for a in link['addr_info'])
    links = sorted(link['ifname'] for link in json.loads(subprocess.run(
        ['ip', '-j', 'link', 'show'], capture_output=True, text=True, check=True).stdout)
        if link['ifname'].startswith('cyha-'))
    with open(os.path.join(labutil.LAB_DIR, 'lab.json'), encoding='utf-8') as handle:
        pids = json.load(handle)['pids']
    return {'namespaces': namespaces, 'addresses': addresses, 'links': links, 'pids': pids}


def test_every_host_answers_ping_and_gives_facts(lab, tmp_path):
    assert {h['name']: h['addr4'] for h in lab} == EXPECTED
    ping = labutil.ansible('cyha_lab', 'ansible.builtin.ping')
    assert ping.stdout.count('"ping": "pong"') == len(EXPECTED), ping.stdout
    labutil.ansible('cyha_lab', 'ansible.builtin.setup', 'gather_subset=min,network', '--tree', str(tmp_path))
    for name, addr in EXPECTED.items():
        with open(tmp_path / name, encoding='utf-8') as handle:
            facts = json.load(handle)['ansible_facts']
        assert facts['ansible_hostname'] == name
        assert facts['ansible_fqdn'] == f'{name}.cyha.test'
        assert facts['ansible_all_ipv4_addresses'] == [addr]
        assert f'2001:db8::{addr.rsplit(".", 1)[1]}' in facts['ansible_all_ipv6_addresses']


def test_a_mount_on_one_host_is_invisible_to_the_others(lab):
    point = '/mnt/cyha-private-mount-test'
    labutil.ansible('be1', 'ansible.builtin.command', f'mkdir -p {point}')
    labutil.ansible('be1', 'ansible.builtin.command', f'mount -t tmpfs -o size=1m cyha-be1-test {point}')
    try:
        seen_on_be1 = labutil.ansible('be1', 'ansible.builtin.command', f'findmnt -n -o SOURCE {point}')
        assert 'cyha-be1-test' in seen_on_be1.stdout
        on_spare = labutil.ansible('spare', 'ansible.builtin.command', f'findmnt -n -o SOURCE {point}', check=False)
        assert on_spare.returncode != 0 and 'cyha-be1-test' not in on_spare.stdout, on_spare.stdout
        with open('/proc/self/mountinfo', encoding='utf-8') as handle:
            assert point not in handle.read()
    finally:
        labutil.ansible('be1', 'ansible.builtin.command', f'umount {point}', check=False)
        os.rmdir(point)


def test_each_host_has_its_own_run_and_syslog(lab):
    labutil.ansible('be1', 'ansible.builtin.command', 'touch /run/cyha-marker')
    assert labutil.ansible('spare', 'ansible.builtin.stat', 'path=/run/cyha-marker').stdout.count('"exists": false') == 1
    assert not os.path.exists('/run/cyha-marker')
    labutil.ansible('be1', 'ansible.builtin.command', 'logger -t cyhatest marker-from-be1')
    be1_log = os.path.join(labutil.LAB_DIR, 'log', 'be1.log')

    def logged() -> bool:
        with open(be1_log, encoding='utf-8') as handle:
            return 'be1 cyhatest: marker-from-be1' in handle.read()
    assert labutil.poll(logged, 10)
    with open(os.path.join(labutil.LAB_DIR, 'log', 'spare.log'), encoding='utf-8') as handle:
        assert 'marker-from-be1' not in handle.read()


def test_lab_up_twice_leaves_the_same_state(lab):
    before = snapshot()
    proc = labutil.lab_up()
    assert proc.returncode == 0, proc.stderr
    assert 'nothing to do' in proc.stderr
    assert snapshot() == before


def test_hosts_report_playbook_prints_every_host(lab, tmp_path):
    report = tmp_path / 'hosts.txt'
    proc = labutil.playbook('playbooks/hosts_report.yml', '-e', f'hosts_report_file={report}',
                            '-e', 'hosts_report_hosts=cyha_lab')
    counts = labutil.recap(proc.stdout)
    assert all(c['failed'] == 0 and c['unreachable'] == 0 for c in counts.values()), proc.stdout
    lines = report.read_text(encoding='utf-8').splitlines()
    assert lines[0].split()[:4] == ['host', 'hostname', 'address', 'kernel']
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == set(EXPECTED)
    for name, addr in EXPECTED.items():
        assert rows[name][1] == name and rows[name][2] == addr
        assert rows[name][3] == os.uname().release
        assert float(rows[name][5]) > 0


def test_each_backend_has_a_san_disk_reached_by_two_devices(lab):
    with open(labutil.inventory(), encoding='utf-8') as handle:
        text = handle.read()
    inventory = json.loads(text[text.index('{'):])
    san = inventory['all']['vars']['cyha_lab_san']
    groups = inventory['all']['children']['cyha_lab']['children']
    assert sorted(san) == ['be1', 'be2']
    for volume, ident in san.items():
        home = groups['backends']['hosts'][volume]['cyha_lab_san_devices'][volume]
        spare = groups['spares']['hosts']['spare']['cyha_lab_san_devices'][volume]
        assert home != spare, 'two block devices for one disk'
        for device in (home, spare):
            probe = subprocess.run(['blkid', '-p', '-o', 'export', device], capture_output=True, text=True, check=True)
            assert f"UUID={ident['uuid']}" in probe.stdout and f"LABEL={ident['label']}" in probe.stdout
            assert 'TYPE=ext4' in probe.stdout
        mmp = subprocess.run(['dumpe2fs', '-h', home], capture_output=True, text=True, check=True).stdout
        assert 'mmp' in mmp.split('Filesystem features:')[1].split('\n')[0]
    assert 'be1' not in groups['backends']['hosts']['be2']['cyha_lab_san_devices']


def test_generated_topology_feeds_the_murder_inventory_plugin(lab):
    topology = os.path.join(labutil.LAB_DIR, 'topology.yml')
    proc = labutil.run([os.path.join(labutil.BIN, 'ansible-inventory'), '-i', labutil.inventory(), '-i', topology,
                        '--list'], check=True)
    # Values from the plugin come back tagged as unsafe ({"__ansible_unsafe": value}).
    listing = json.loads(proc.stdout, object_hook=lambda d: d.get('__ansible_unsafe', d) if len(d) == 1 else d)
    assert sorted(listing['backends']['hosts']) == ['be1', 'be2', 'be3']
    assert listing['replicas']['hosts'] == ['replica']
    assert listing['mupdate_master']['hosts'] == ['mupdate']
    hostvars = listing['_meta']['hostvars']
    assert hostvars['be1']['murder_role'] == 'backend' and hostvars['be1']['murder_address'] == '198.51.100.121'
    assert hostvars['fe2']['murder_servername'] == 'fe2-svc.cyha.test'
    assert [s['name'] for s in hostvars['spare']['murder_standby_instances']] == ['be1', 'be2']
    # the replica pair as the lab declares it: its own port, the same as lab/vars/murder_hosts.yml says
    assert (hostvars['be3']['murder_replication_peer'], hostvars['be3']['murder_replication_port']) == (
        '198.51.100.50', 2015)
    assert [(p['instance'], p['home'], p['replica'], p['port']) for p in hostvars['be3']['replication_pairs']] == [
        ('be3', 'be3', 'replica', 2015)]
    assert hostvars['spare']['cyha_lab_san_devices']['be1'] != hostvars['be1']['cyha_lab_san_devices']['be1']
