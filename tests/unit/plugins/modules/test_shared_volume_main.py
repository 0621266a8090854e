# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.shared_volume's main(): hostile option values end in one fail_json naming the option, before
any command runs (issue 19). The decisions themselves: tests/unit/plugins/module_utils/test_volume*.py."""

from __future__ import annotations

import json
import os

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.cyrus.ha.plugins.modules import shared_volume

UUID = '0b6e3c0e-8f0a-4e8e-9d4b-2f1d7f0c1a22'


@pytest.fixture
def ran(monkeypatch):
    """Every tool 'found'; every command recorded (and failing, so nothing could pass by accident)."""
    calls = []
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda self, name, required=False, opt_dirs=None: f'/usr/sbin/{name}')
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', lambda self, argv, **kw: calls.append(argv) or (1, '', 'no'))
    return calls


def run_main(args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            shared_volume.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize('args, expected', [
    ({'mmp_probe_timeout': 'nan'}, 'mmp_probe_timeout must be a finite number from 1 to 3600, not nan'),
    ({'mmp_probe_timeout': 'inf'}, 'mmp_probe_timeout must be a finite number from 1 to 3600, not inf'),
    ({'mmp_probe_timeout': '-1'}, 'mmp_probe_timeout must be a finite number from 1 to 3600, not -1.0'),
    ({'stop_timeout': '1e999'}, 'stop_timeout must be a finite number from 0.1 to 3600, not inf'),
    ({'stop_timeout': '-0.5'}, 'stop_timeout must be a finite number'),
    ({'mmp_update_interval': 0}, 'mmp_update_interval must be a finite number from 1 to 300, not 0'),
    ({'mmp_update_interval': 65536}, 'mmp_update_interval must be a finite number from 1 to 300, not 65536'),
    ({'devices': []}, 'devices is empty'),
    ({'fenced_peer': ''}, "fenced_peer '' is not a node name"),
    ({'fstype': ''}, "fstype '' is not a filesystem type"),
    ({'opts': 'rw\nexec'}, "opts 'rw\\nexec' is not a list of mount options"),
    ({'uuid': UUID + '\n'}, 'is not a filesystem UUID'),
    ({'mountpoint': '/srv/\u00e9'}, "mountpoint '/srv/\u00e9' must be an absolute path of"),
])
def test_bad_options_fail_before_any_command(capsys, ran, args, expected):
    result = run_main(dict({'uuid': UUID, 'mountpoint': '/srv/cyha-unit-never'}, **args), capsys)
    assert result['failed'] is True and expected in result['msg'], result['msg']
    assert ran == [] and 'exception' not in result


def test_symlinked_mountpoint_fails_before_any_command(capsys, ran, tmp_path):
    (tmp_path / 'link').symlink_to(tmp_path)
    result = run_main({'uuid': UUID, 'mountpoint': str(tmp_path / 'link')}, capsys)
    assert result['failed'] is True and 'is a symlink' in result['msg'] and ran == []


def test_fifo_pidfile_fails_an_unmount_before_any_command(capsys, ran, tmp_path):
    os.mkfifo(tmp_path / 'master.pid')
    result = run_main({'uuid': UUID, 'state': 'unmounted', 'pidfile': str(tmp_path / 'master.pid')}, capsys)
    assert result['failed'] is True and 'is a FIFO, not a regular file' in result['msg'] and ran == []
