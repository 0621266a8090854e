# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus_replication_facts main() through AnsibleModule, on a config pair in a temporary directory and a
recorded mbexamine (run_command replaced)."""

from __future__ import annotations

import json
import pathlib

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.cyrus.ha.plugins.module_utils import cyrusreplication
from ansible_collections.cyrus.ha.plugins.modules import cyrus_replication_facts

IMAPD = ('configdirectory: {lib}\npartition-default: /srv/spool/be1\nsync_log: 1\nsync_host: be1-replica.example.org\n'
         'sync_authname: repl\nsync_password: pw-Secret-42\n')
CYRUS = 'DAEMON {\n  syncclient cmd="/usr/lib/cyrus/bin/sync_client -C /etc/cyrus-ha/be1/imapd.conf -r"\n}\n'
# mbexamine of user.alice (the module_utils test's verbatim sample), then a mailbox it could not open
MBEXAMINE = (pathlib.Path(__file__).parents[1] / 'module_utils' / 'fixtures' / 'cyrus' / 'debian12' / 'mbexamine-alice.txt').read_text(
    encoding='utf-8') + 'Examining user.bob...'


def run_main(args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            cyrus_replication_facts.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture(name='root')
def fixture_root(tmp_path):
    (tmp_path / 'etc' / 'be1').mkdir(parents=True)
    (tmp_path / 'etc' / 'be1' / 'imapd.conf').write_text(IMAPD.format(lib=tmp_path / 'lib'))
    (tmp_path / 'etc' / 'be1' / 'cyrus.conf').write_text(CYRUS)
    (tmp_path / 'lib' / 'sync').mkdir(parents=True)
    (tmp_path / 'lib' / 'sync' / 'log').write_text('APPEND user.alice\nUSER bob\n')
    return tmp_path


@pytest.fixture(name='mbexamine')
def fixture_mbexamine(tmp_path, monkeypatch):
    """A Cyrus bin directory in tmp_path and run_command answering as mbexamine; returns what ran and the answer."""
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    (bindir / 'mbexamine').write_text('')
    monkeypatch.setattr(cyrusreplication, 'find_bindir', lambda candidates: str(bindir))
    ran = []
    answer = {'rc': 0, 'out': MBEXAMINE, 'err': ''}

    def run_command(self, argv, **kwargs):
        ran.append((argv, kwargs.get('environ_update')))
        return answer['rc'], answer['out'], answer['err']
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', run_command)
    return ran, answer, str(bindir)


def test_reports_a_master_and_its_backlog_without_the_secret(root, capsys):
    result = run_main({'instance': 'be1', 'config_root': str(root / 'etc')}, capsys)
    assert result['changed'] is False
    repl = result['replication']
    assert (repl['role'], repl['peer'], repl['authname']) == ('master', 'be1-replica.example.org', 'repl')
    assert repl['sync_client']['configured'] is True and repl['sync_client']['entries'] == ['syncclient']
    assert (repl['backlog']['bytes'], repl['backlog']['entries']) == (27, 2)
    assert repl['backlog']['files'][0]['file'] == str(root / 'lib' / 'sync' / 'log')
    assert 'mailboxes' not in repl
    assert 'pw-Secret-42' not in json.dumps(result)
    assert repl['last_sync']['source'] is None and repl['last_sync']['at'] is None   # a backlog, no record


def test_the_last_sync_is_read_from_the_lag_record_in_state_dir(root, capsys):
    (root / 'lib' / 'sync' / 'log').write_text('')
    (root / 'state').mkdir()
    record = {'instance': 'be1', 'measured_at': 1_800_000_000.25, 'seen_at': 1_800_000_000.75, 'caught_up': True}
    (root / 'state' / 'replication-lag-be1.json').write_text(json.dumps(record))
    args = {'instance': 'be1', 'config_root': str(root / 'etc'), 'state_dir': str(root / 'state')}
    last = run_main(args, capsys)['replication']['last_sync']
    assert last['source'] is None and last['record'] is None    # a master with nothing pending but no client running
    (root / 'etc' / 'be1' / 'imapd.conf').write_text('configdirectory: %s\n' % (root / 'lib'))
    (root / 'etc' / 'be1' / 'cyrus.conf').write_text('SERVICES {\n  syncserver cmd="sync_server" listen="2005"\n}\n')
    last = run_main(args, capsys)['replication']['last_sync']
    assert (last['at'], last['through'], last['source'], last['record']) == (
        '2027-01-15T08:00:00.750Z', '2027-01-15T08:00:00.250Z', 'marker', str(root / 'state' / 'replication-lag-be1.json'))


def test_mailboxes_are_read_with_mbexamine_even_in_check_mode(root, mbexamine, capsys):
    ran, dummy, bindir = mbexamine
    result = run_main({'instance': 'be1', 'config_root': str(root / 'etc'), 'mailboxes': True,
                       '_ansible_check_mode': True}, capsys)
    conf = str(root / 'etc' / 'be1' / 'imapd.conf')
    assert ran == [([f'{bindir}/mbexamine', '-C', conf, '-u', '4294967295', '*'], {'LC_ALL': 'C'})]
    repl = result['replication']
    assert result['changed'] is False
    assert repl['mailboxes'] == {
        'user.alice': {'uniqueid': 'tqbkjob05xvk3u2rj297w2n0', 'uidvalidity': 1796290794, 'uidnext': 3,
                       'highestmodseq': 3, 'messages': 2},
        'user.bob': {'uniqueid': None, 'uidvalidity': None, 'uidnext': None, 'highestmodseq': None,
                     'messages': None, 'problem': 'mbexamine could not open it (see the syslog of mbexamine)'}}
    assert repl['mailbox_problems'] == [
        'mailbox user.bob: mbexamine could not open it (see the syslog of mbexamine)',
        'mbexamine stopped at mailbox user.bob: the mailboxes after it in its listing were not examined']
    assert repl['mailboxes_complete'] is False


def test_a_failing_mbexamine_fails_with_its_stderr(root, mbexamine, capsys):
    dummy, answer, bindir = mbexamine
    answer.update(rc=75, out='', err='fatal error: must run as the Cyrus user')
    result = run_main({'instance': 'be1', 'config_root': str(root / 'etc'), 'mailboxes': True}, capsys)
    conf = str(root / 'etc' / 'be1' / 'imapd.conf')
    assert result['failed'] is True
    assert result['msg'] == f'{bindir}/mbexamine -C {conf} failed (exit status 75): fatal error: must run as the Cyrus user'


def test_a_missing_instance_fails_naming_it_and_its_path(root, capsys):
    result = run_main({'instance': 'be2', 'config_root': str(root / 'etc')}, capsys)
    assert result['failed'] is True
    assert result['msg'] == (f"instance be2: {root}/etc/be2/imapd.conf does not exist: is be2 the instance's name, "
                             f"and {root}/etc its config root?")


@pytest.mark.parametrize('name', ['../be1', 'BE1', 'be1 '])
def test_a_bad_instance_name_fails_without_a_traceback(root, capsys, name):
    result = run_main({'instance': name, 'config_root': str(root / 'etc')}, capsys)
    assert result['failed'] is True
    assert result['msg'] == f"instance {name!r}: not a valid instance name (a lower-case letter, then up to 30 of " \
                            "a-z 0-9 _ -)"
    assert 'Traceback' not in json.dumps(result)


def test_the_instance_is_required(capsys):
    result = run_main({}, capsys)
    assert result['failed'] is True and result['msg'] == 'missing required arguments: instance'


def test_wait_for_a_snapshot_the_instance_already_holds(root, mbexamine, capsys):
    alice = {'uniqueid': 'tqbkjob05xvk3u2rj297w2n0', 'uidvalidity': 1796290794, 'uidnext': 3, 'highestmodseq': 3,
             'messages': 2}
    dummy, answer, dummy_bindir = mbexamine
    answer['out'] = MBEXAMINE.rsplit('Examining user.bob...', 1)[0]
    result = run_main({'instance': 'be1', 'config_root': str(root / 'etc'), 'wait_for': {'user.alice': alice},
                       'wait_timeout': 0}, capsys)
    repl = result['replication']
    assert result['changed'] is False
    assert (repl['caught_up'], repl['lacking'], repl['mailboxes']) == (True, [], {'user.alice': alice})


@pytest.mark.parametrize('args, message', [
    ({'wait_timeout': -1}, 'wait_timeout must be from 0 to 3600 seconds, not -1.0'),
    ({'wait_timeout': 3601}, 'wait_timeout must be from 0 to 3600 seconds, not 3601.0'),
    ({'wait_for': {'user.alice': 'x'}}, 'wait_for: master mailbox user.alice: its state must be a mapping with '
                                        'uniqueid, uidvalidity, uidnext, highestmodseq, messages, not str'),
])
def test_bad_wait_arguments_fail_naming_the_cause(root, mbexamine, capsys, args, message):
    ran = mbexamine[0]
    result = run_main({'instance': 'be1', 'config_root': str(root / 'etc'), **args}, capsys)
    assert result['failed'] is True and result['msg'] == message
    assert ran == []
