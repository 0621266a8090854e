# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules that run commands look their tools up first: a node without one fails before any step."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.cyrus.ha.plugins.modules import pacemaker_cib, shared_volume


def run_main(module, args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def missing(monkeypatch):
    """get_bin_path as on a node without the tools named in the returned set; the commands run are recorded."""
    absent, ran = set(), []
    real = basic.AnsibleModule.get_bin_path

    def get_bin_path(self, name, required=False, opt_dirs=None):
        if name in absent:
            if required:
                self.fail_json(msg=f'Failed to find required executable "{name}"')
            return None
        return real(self, name, required=False, opt_dirs=opt_dirs) or f'/usr/sbin/{name}'
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', get_bin_path)
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', lambda self, argv, **kw: ran.append(argv) or (1, '', 'no'))
    return absent, ran


@pytest.mark.parametrize('tool', ['cibadmin', 'crm_verify', 'crm_resource'])
def test_pacemaker_cib_without_pacemaker_says_what_to_install(capsys, missing, tool):
    absent, ran = missing
    absent.add(tool)
    result = run_main(pacemaker_cib, {}, capsys)
    assert result['failed'] is True and result['msg'] == f'{tool} is not installed on this node: install Pacemaker first'
    assert ran == []


def test_shared_volume_without_e2fsprogs_fails_before_any_command(capsys, missing):
    absent, ran = missing
    absent.add('e2mmpstatus')
    result = run_main(shared_volume, {'label': 'be1-spool', 'mountpoint': '/srv/be1'}, capsys)
    assert result['failed'] is True and result['msg'] == 'Failed to find required executable "e2mmpstatus"'
    assert ran == []
