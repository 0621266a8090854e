# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The support directory (/usr/local/lib/cyrus-ha) as the cyrus_instance role installs it: every script
runs from it alone (its module_utils imported as plain modules beside it, not from the collection), so
the role's list of support files (vars/main.yml) is complete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    """A script with the system's view: no PYTHONPATH, no user site, so the collection is not importable."""
    return subprocess.run([sys.executable, '-E', '-s', *argv], capture_output=True, text=True, check=False, cwd='/',
                          **kwargs)


def test_the_support_files_are_the_scripts_and_what_they_import(support_dir):
    assert sorted(os.listdir(support_dir)) == ['announce.py', 'cyrus_instance_ctl.py', 'cyrusconf.py', 'cyrusconf_cli.py',
                                               'cyrusconf_lint.py', 'cyrusinstance.py', 'procfs.py', 'testhook.py']


def test_the_module_utils_import_each_other_as_plain_modules(support_dir):
    probe = ('import sys; sys.path.insert(0, sys.argv[1]); import cyrusconf_lint, cyrusinstance, procfs; '
             'print(cyrusconf_lint.cyrusinstance.__file__, cyrusinstance.procfs.__file__, '
             'cyrusconf_lint.Problem.__module__)')
    proc = run(['-c', probe, str(support_dir)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(support_dir / 'cyrusinstance.py'), str(support_dir / 'procfs.py'), 'cyrusconf']


def test_the_control_script_runs_from_the_support_directory(support_dir, tmp_path):
    imapd = tmp_path / 'imapd.conf'
    imapd.write_text('configdirectory: /var/lib/cyrus-ha/t\n')
    proc = run([str(support_dir / 'cyrus_instance_ctl.py'), 'status', '--imapd-conf', str(imapd), '--cyrus-conf',
                str(tmp_path / 'cyrus.conf'), '--pidfile', str(tmp_path / 'master.pid'), '--master', '/bin/false'])
    assert (proc.returncode, proc.stderr) == (0, '')
    assert json.loads(proc.stdout) == {'changed': False, 'state': 'stopped', 'pid': None,
                                       'msg': 'master is not running'}


def test_the_config_cli_runs_from_the_support_directory(support_dir, tmp_path):
    imapd = tmp_path / 'imapd.conf'
    imapd.write_text('configdirectory /x\n')
    proc = run([str(support_dir / 'cyrusconf_cli.py'), 'lint', '--kind', 'imapd', str(imapd)])
    assert (proc.returncode, proc.stdout) == (1, '')
    assert proc.stderr.splitlines()[0] == f'{imapd}:1: invalid option name: expected "key: value"'


def test_the_cluster_script_and_the_agent_run_beside_the_support_files(support_dir, proc):
    """The cluster role installs cluster_ctl.py into the same directory (it imports procfs.py); the agent,
    installed under /usr/lib/ocf, imports cyrusinstance.py from there (here: beside it)."""
    shutil.copyfile(os.path.join(REPO, 'roles', 'cluster', 'files', 'cluster_ctl.py'), support_dir / 'cluster_ctl.py')
    proc.add(100, ['corosync', '-f'])
    status = run([str(support_dir / 'cluster_ctl.py'), 'status', '--proc-root', proc.root])
    assert (status.returncode, json.loads(status.stdout)['state']) == (0, 'partial'), status.stderr
    agent = support_dir / 'instance'
    shutil.copyfile(os.path.join(REPO, 'roles', 'cluster', 'files', 'cyrus_instance_ocf.py'), agent)
    meta = run([str(agent), 'meta-data'])
    assert meta.returncode == 0, meta.stderr
    assert 'Default: /etc/cyrus-ha/INSTANCE/imapd.conf.' in meta.stdout


@pytest.mark.parametrize('name', ['cyrusinstance.py', 'procfs.py'])
def test_a_missing_support_file_is_an_import_error_not_a_silent_fallback(support_dir, tmp_path, name):
    os.unlink(support_dir / name)
    proc = run([str(support_dir / 'cyrus_instance_ctl.py'), 'status', '--imapd-conf', 'i', '--cyrus-conf', 'c',
                '--pidfile', str(tmp_path / 'p'), '--master', 'm'])
    assert proc.returncode == 1 and f"No module named '{name[:-3]}'" in proc.stderr
