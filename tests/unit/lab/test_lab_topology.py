# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's address plan and naming rules, without building anything."""

from __future__ import annotations

import importlib.util
import ipaddress
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = importlib.util.spec_from_file_location('cyha_lab', os.path.join(HERE, '..', '..', '..', 'lab', 'lab.py'))
lab = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(lab)


def test_default_topology_has_the_nine_named_hosts():
    hosts = lab.topology(2, 2, 1, 1)
    assert [h['name'] for h in hosts] == ['mupdate', 'fe1', 'fe2', 'be1', 'be2', 'be3', 'spare', 'replica', 'client']
    assert [h['group'] for h in hosts] == ['mupdate_master', 'frontends', 'frontends', 'backends', 'backends', 'backends',
                                           'spares', 'replicas', 'clients']
    # be3 is the replica pair's home: it names its replica host, and no SAN backend does
    assert [(h['name'], h.get('replica'), h.get('replica_of')) for h in hosts if 'replica' in h or 'replica_of' in h] == [
        ('be3', 'replica', None), ('replica', None, 'be3')]


def test_replica_pairs_count_with_the_backends():
    hosts = lab.topology(1, 1, 1, 2)
    assert [h['name'] for h in hosts if h['kind'] in ('backend', 'replica')] == ['be1', 'be2', 'be3', 'replica1',
                                                                                 'replica2']
    assert [h.get('replica') for h in hosts if h['kind'] == 'backend'] == [None, 'replica1', 'replica2']
    with pytest.raises(lab.LabError) as caught:
        lab.topology(1, 8, 1, 2)
    assert str(caught.value) == 'backends and replica pairs together must be at most 9, not 10'


@pytest.mark.parametrize('frontends, backends, spares, replicas', [(0, 0, 0, 0), (1, 3, 2, 1), (9, 9, 9, 0), (9, 5, 9, 4)])
def test_addresses_are_unique_and_only_in_documentation_ranges(frontends, backends, spares, replicas):
    hosts = lab.topology(frontends, backends, spares, replicas)
    v4 = [ipaddress.ip_address(h['addr4']) for h in hosts]
    v6 = [ipaddress.ip_address(h['addr6']) for h in hosts]
    assert len(set(v4)) == len(v4) and len(set(v6)) == len(v6)
    assert all(a in ipaddress.ip_network('198.51.100.0/24') for a in v4)
    assert all(a in ipaddress.ip_network('2001:db8::/64') for a in v6)
    assert ipaddress.ip_address(lab.CONTROLLER4) not in v4
    services = [ipaddress.ip_address(h['service_addr4']) for h in hosts]
    assert len(set(services)) == len(services) and not set(services) & set(v4)
    assert all(ipaddress.ip_address('198.51.100.100') <= a <= ipaddress.ip_address('198.51.100.199') for a in services)
    assert all(len(h['link']) <= 15 and h['link'].startswith('cyha-') for h in hosts)
    assert len(hosts) == 1 + frontends + backends + spares + 2 * replicas + 1   # and the client


@pytest.mark.parametrize('args, message', [((10, 1, 1), 'frontends must be between 0 and 9, not 10'),
                                           ((1, -1, 1), 'backends must be between 0 and 9, not -1')])
def test_bad_counts_are_refused(args, message):
    with pytest.raises(lab.LabError) as caught:
        lab.topology(*args)
    assert str(caught.value) == message


def test_write_atomic_leaves_no_temp_file_and_sets_mode(tmp_path):
    target = tmp_path / 'f'
    lab.write_atomic(str(target), 'x\n', 0o600)
    assert target.read_text() == 'x\n' and (target.stat().st_mode & 0o777) == 0o600
    assert os.listdir(tmp_path) == ['f']
