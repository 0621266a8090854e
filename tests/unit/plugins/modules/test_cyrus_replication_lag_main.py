# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus_replication_lag main() through AnsibleModule: its bounds, its refusals as fail_json, and changed
only when the marker mailbox is created (the measurement itself is replaced)."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.cyrus.ha.plugins.module_utils.replicationlag import LagError
from ansible_collections.cyrus.ha.plugins.modules import cyrus_replication_lag


def run_main(args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            cyrus_replication_lag.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize('timeout', [0, -1, 3601])
def test_the_timeout_is_bounded(capsys, timeout):
    result = run_main({'instance': 'be3', 'timeout': timeout}, capsys)
    assert result['failed'] and result['msg'] == (
        f'timeout must be more than 0 and at most 3600 seconds, not {float(timeout)}')


def test_a_refusal_is_a_clear_failure(capsys, tmp_path):
    result = run_main({'instance': 'be3', 'config_root': str(tmp_path)}, capsys)
    assert result['failed'] and result['msg'] == (
        f"instance be3: {tmp_path}/be3/imapd.conf does not exist: is be3 the instance's name, and {tmp_path} its "
        'config root?')


CONF = {'password': 'pw-Secret-42', 'mailbox': 'cyrus-ha-lag-be3'}


@pytest.mark.parametrize('created', [True, False])
def test_changed_only_when_the_marker_mailbox_is_created(capsys, monkeypatch, created):
    seen = {}

    def fake(instance, timeout, config_root, check_mode, conf):
        seen.update(instance=instance, timeout=timeout, check_mode=check_mode, conf=conf)
        return {'created': created, 'measured': True, 'seconds': 0.3, 'caught_up': True}

    monkeypatch.setattr(cyrus_replication_lag, 'settings', lambda instance, root: CONF)
    monkeypatch.setattr(cyrus_replication_lag, 'measure', fake)
    result = run_main({'instance': 'be3', 'timeout': 5}, capsys)
    assert result['changed'] is created and result['lag']['seconds'] == 0.3
    assert seen == {'instance': 'be3', 'timeout': 5.0, 'check_mode': False, 'conf': CONF}


def test_the_error_of_the_measurement_is_the_message_and_never_shows_the_password(capsys, monkeypatch):
    def fake(*args, **kwargs):
        raise LagError('the replica 192.0.2.50:2005 (sync_server) refused the login of replication: NO pw-Secret-42')

    monkeypatch.setattr(cyrus_replication_lag, 'settings', lambda instance, root: CONF)
    monkeypatch.setattr(cyrus_replication_lag, 'measure', fake)
    result = run_main({'instance': 'be3'}, capsys)
    assert result['failed'] and result['msg'] == (
        'the replica 192.0.2.50:2005 (sync_server) refused the login of replication: NO ********')
