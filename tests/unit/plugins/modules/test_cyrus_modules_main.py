# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus_config and cyrus_facts main() through AnsibleModule on files in a temporary directory.

The real thing (a Cyrus master started from the checked pair on a lab host) is tested in
tests/integration/test_cyrus_config.py and test_cyrus_facts.py."""

from __future__ import annotations

import json
import os

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.cyrus.ha.plugins.modules import cyrus_config, cyrus_facts

IMAPD = 'configdirectory: /var/lib/cyrus-ha/t\npartition-default: /var/spool/cyrus-ha/t\n'


def run_main(module, args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(capsys.readouterr().out)


def test_settings_then_no_change_then_check_mode_with_masked_diff(tmp_path, capsys):
    path = tmp_path / 'imapd.conf'
    path.write_text(IMAPD)
    os.chmod(path, 0o640)
    first = run_main(cyrus_config, {'path': str(path), 'settings': {'servername': 't.cyha.test'}}, capsys)
    assert first['changed'] is True and first['kind'] == 'imapd' and first['murder_role'] == 'standalone'
    assert path.read_text() == IMAPD + 'servername: t.cyha.test\n'
    assert os.stat(path).st_mode & 0o777 == 0o640
    again = run_main(cyrus_config, {'path': str(path), 'settings': {'servername': 't.cyha.test'}}, capsys)
    assert again['changed'] is False
    checked = run_main(cyrus_config, {'path': str(path), 'secret_settings': {'mupdate_password': 'pw-123'},
                                      'settings': {'mupdate_server': 'm.cyha.test:3905'},
                                      '_ansible_check_mode': True, '_ansible_diff': True}, capsys)
    assert checked['changed'] is True
    assert checked['diff']['after'].endswith('mupdate_server: m.cyha.test:3905\nmupdate_password: ********\n')
    assert 'pw-123' not in json.dumps(checked)
    assert checked['murder_role'] == 'frontend'
    assert path.read_text() == IMAPD + 'servername: t.cyha.test\n'


def test_invalid_file_fails_with_problems(tmp_path, capsys):
    path = tmp_path / 'cyrus.conf'
    path.write_text('SERVICES {\n  imap cmd="imapd" listen="imap"\n}\n')
    result = run_main(cyrus_config, {'path': str(path), 'bindir': ''}, capsys)
    conf = tmp_path / 'imapd.conf'
    assert result['failed'] is True
    assert result['problems'] == [
        f'{path}:2: SERVICES entry imap: cmd="imapd" lacks -C {conf} (master\'s -C is not inherited by its children)',
        f'{path}:2: SERVICES entry imap: listen=imap has no address: master would bind every address; write '
        'ADDRESS:imap']
    assert result['msg'] == f'{path} is not a valid cyrus.conf: ' + '; '.join(result['problems'])


def test_facts_main_reports_instances_under_config_root(tmp_path, capsys):
    (tmp_path / 't').mkdir()
    (tmp_path / 't' / 'imapd.conf').write_text(IMAPD)
    (tmp_path / 't' / 'cyrus.conf').write_text('SERVICES {\n  imap cmd="imapd" listen="198.51.100.9:143"\n}\n')
    result = run_main(cyrus_facts, {'config_root': str(tmp_path), 'run_root': str(tmp_path / 'run'),
                                    'include_default': False}, capsys)
    assert result['changed'] is False
    instance = result['ansible_facts']['cyrus']['instances']['t']
    assert (instance['running'], instance['pidfile']) == (False, str(tmp_path / 'run' / 't' / 'master.pid'))
    assert instance['listen'][0]['host'] == '198.51.100.9'
    assert instance['partitions'] == {'default': {'path': '/var/spool/cyrus-ha/t', 'exists': False}}
