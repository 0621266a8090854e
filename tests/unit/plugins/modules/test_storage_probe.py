# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""storage_probe main() through AnsibleModule on a temporary directory; the real filesystems are in
tests/integration/test_storage_probe_local.py."""

from __future__ import annotations

import json
import os

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.cyrus.ha.plugins.modules import storage_probe


def run_main(args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            storage_probe.main()
    return json.loads(capsys.readouterr().out)


def test_probe_reports_facts_and_leaves_nothing(tmp_path, capsys):
    out = run_main({'path': str(tmp_path), 'checks': ['identity', 'fcntl_locks', 'fsx'], 'fsx_ops': 100,
                    'fsx_seed': 11, '_ansible_check_mode': True}, capsys)
    assert out['changed'] is False
    report = out['ansible_facts']['storage_probe'][str(tmp_path)]
    assert report['checks']['fcntl_locks']['status'] == 'pass' and report['checks']['fsx']['status'] == 'pass'
    assert report['checks']['excl_race'] == {'name': 'excl_race', 'status': 'skip', 'reason': 'not selected',
                                             'evidence': {}, 'duration': 0.0}
    assert report['fsx_seed'] == 11 and report['verdict'] == 'safe'
    assert out['ansible_facts']['storage_probe_single_verdict'] == 'safe'
    assert os.listdir(tmp_path) == []


def test_missing_path_fails_without_traceback(tmp_path, capsys):
    out = run_main({'path': str(tmp_path / 'nope')}, capsys)
    assert out['failed'] is True and out['msg'] == '%s does not exist' % (tmp_path / 'nope')
    assert 'exception' not in out
