# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The storage_probe role's per-host facts are cacheable: with a fact cache, a `constructed` inventory
groups hosts by their storage verdict (here one host, the machine itself, on a local directory)."""

from __future__ import annotations

import os
import sys

import labutil

HOSTS = '''all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: {python}
'''
CONSTRUCTED = '''plugin: ansible.builtin.constructed
strict: true
keyed_groups:
  - key: storage_probe_verdict
    prefix: storage
  - key: storage_probe_path_verdicts.values() | list
    prefix: path
'''


def test_a_constructed_inventory_groups_hosts_by_verdict(tmp_path):
    hosts, constructed = tmp_path / 'hosts.yml', tmp_path / 'verdicts.constructed.yml'
    hosts.write_text(HOSTS.format(python=sys.executable))
    constructed.write_text(CONSTRUCTED)
    probed = tmp_path / 'store'
    probed.mkdir()
    cache = dict(ANSIBLE_CACHE_PLUGIN='jsonfile', ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / 'cache'),
                 ANSIBLE_INVENTORY_ENABLED='ansible.builtin.yaml,ansible.builtin.constructed')
    before = labutil.run([os.path.join(labutil.BIN, 'ansible-inventory'), '-i', str(hosts), '-i', str(constructed),
                          '--graph'], **cache)
    assert 'storage_' not in before.stdout     # nothing cached yet: no verdict, no group
    labutil.run([os.path.join(labutil.BIN, 'ansible-playbook'), '-i', str(hosts), 'playbooks/storage_probe.yml',
                 '-e', 'storage_probe_hosts=localhost', '-e', '{"storage_probe_paths": ["%s"], '
                 '"storage_probe_checks": ["identity", "fcntl_locks"]}' % probed,
                 '-e', f'storage_probe_report_file={tmp_path}/report.json', '-e', f'storage_probe_report_dir={tmp_path}'],
                check=True, **cache)
    after = labutil.run([os.path.join(labutil.BIN, 'ansible-inventory'), '-i', str(hosts), '-i', str(constructed),
                         '--graph'], check=True, **cache)
    assert '@storage_safe:\n  |  |--localhost' in after.stdout and '@path_safe:' in after.stdout, after.stdout
    assert os.listdir(probed) == []
