# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus_instance role's systemd template unit (real hosts; the lab has no systemd as PID 1):
rendered by Ansible with the role's Debian and RHEL-family variables, then checked by systemd's own
`systemd-analyze verify` (unknown keys, bad ExecStart paths, syntax) for an instance."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

import labutil

ROLE = os.path.join(labutil.REPO, 'roles', 'cyrus_instance')
PLAY = '''- hosts: localhost
  gather_facts: false
  vars_files: ["{role}/vars/main.yml", "{role}/vars/{family}.yml"]
  vars:
    role_path: "{role}"
  tasks:
    - ansible.builtin.template:
        src: "{role}/templates/cyrus-imapd@.service.j2"
        dest: "{dest}/cyrus-imapd@.service"
        mode: "0644"
'''


@pytest.mark.skipif(not shutil.which('systemd-analyze'), reason='systemd-analyze is not installed')
@pytest.mark.parametrize('family', ['Debian', 'RedHat'])
def test_the_template_unit_verifies_for_an_instance(tmp_path, family):
    playbook = tmp_path / 'render.yml'
    playbook.write_text(PLAY.format(role=ROLE, family=family, dest=tmp_path))
    labutil.run([os.path.join(labutil.BIN, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local', '-e',
                 f'ansible_python_interpreter={sys.executable}', str(playbook)],
                check=True)
    unit = (tmp_path / 'cyrus-imapd@.service').read_text()
    assert unit.startswith('#') and 'Ansible managed' in unit.splitlines()[0] + unit.splitlines()[1]
    master = '/usr/lib/cyrus/bin/master' if family == 'Debian' else '/usr/libexec/cyrus-imapd/cyrus-master'
    assert f'ExecStart={master} -C /etc/cyrus-ha/%i/imapd.conf -M /etc/cyrus-ha/%i/cyrus.conf ' \
           '-p /run/cyrus-ha/%i/master.pid -D' in unit
    # the stop goes through the control script (which kills a master hung in its shutdown), with the same files
    assert f' /usr/local/lib/cyrus-ha/cyrus_instance_ctl.py stop --imapd-conf /etc/cyrus-ha/%i/imapd.conf ' \
           f'--cyrus-conf /etc/cyrus-ha/%i/cyrus.conf --pidfile /run/cyrus-ha/%i/master.pid --master {master} ' \
           '--timeout 30\n' in unit
    if family == 'RedHat':
        return   # its binaries are not on this Debian machine, and verify checks that ExecStart exists
    instance = tmp_path / 'cyrus-imapd@be1.service'
    instance.symlink_to('cyrus-imapd@.service')
    proc = labutil.run(['systemd-analyze', 'verify', '--man=no', str(instance)])
    assert proc.returncode == 0 and proc.stderr.strip() == '', proc.stderr
    # and the check is real: a broken unit is reported
    (tmp_path / 'cyrus-imapd@.service').write_text(unit.replace('KillMode=mixed', 'KillMode=mixed\nBogus=1'))
    assert 'Unknown key' in labutil.run(['systemd-analyze', 'verify', '--man=no', str(instance)]).stderr
