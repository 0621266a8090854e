# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.cyrus_facts against a real Cyrus instance on a lab host, stopped and running."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

import cyha_cyrustest as ct
import labutil

pytestmark = pytest.mark.lab


@pytest.fixture(scope='module')
def cyhatest(lab):
    state = {'pid': None}
    try:
        ct.address('add')
        ct.make_instance()
        yield state
    finally:
        ct.stop(state['pid'] or ct.master_pid())
        ct.remove_instance()
        ct.address('del')


def facts(host: str = ct.HOST, args: str = '', *extra: str) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory(prefix='cyha-tree-') as tree:
        labutil.ansible(host, 'cyrus.ha.cyrus_facts', args, '--tree', tree, *extra)
        with open(os.path.join(tree, host), encoding='utf-8') as handle:
            payload = json.load(handle)
    return payload, payload['ansible_facts']['cyrus']


def test_facts_of_a_stopped_instance(cyhatest):
    result, cyrus = facts()
    assert result['changed'] is False
    assert cyrus['version'] == '3.6.1'
    assert cyrus['version_full'].startswith('cyrus-imapd 3.6.1-Debian')
    assert cyrus['paths']['bindir'] == '/usr/lib/cyrus/bin'
    assert cyrus['paths']['master'] == '/usr/lib/cyrus/bin/master'
    assert cyrus['paths']['default_imapd_conf'] == '/etc/imapd.conf'
    mine = cyrus['instances'][ct.NAME]
    assert mine['imapd_conf'] == ct.IMAPD and mine['cyrus_conf'] == ct.CYRUS
    assert mine['servername'] == 'cyhatest.cyha.test'
    assert mine['configdirectory'] == ct.CONFIGDIR
    assert mine['syslog_prefix'] == 'cyrus-cyhatest'
    assert mine['murder_role'] == 'standalone'
    assert mine['mupdate_server'] is None
    assert mine['listen'] == [
        {'service': 'imap', 'listen': '198.51.100.245:143', 'proto': 'tcp', 'kind': 'inet',
         'host': '198.51.100.245', 'port': '143'},
        {'service': 'lmtpunix', 'listen': f'{ct.RUN}/lmtp', 'proto': 'tcp', 'kind': 'unix', 'path': f'{ct.RUN}/lmtp'}]
    part = mine['partitions']['default']
    assert part['path'] == ct.SPOOL and part['exists'] is True
    assert (part['files'], part['used_bytes']) == (2, 150)
    assert part['filesystem']['mount'] == '/' and part['filesystem']['fstype']
    assert part['filesystem']['size_bytes'] > part['filesystem']['free_bytes'] > 0
    assert mine['pidfile'] == ct.PIDFILE
    assert (mine['running'], mine['master_pid']) == (False, None)
    assert mine['problems'] == []
    assert cyrus['instances']['default']['murder_role'] == 'standalone'
    assert not [c for c in cyrus['conflicts'] if ct.NAME + ':' in c and 'default:' not in c]


def test_facts_see_the_running_master_on_its_own_host_only(cyhatest):
    cyhatest['pid'] = pid = ct.start()
    dummy, cyrus = facts()
    mine = cyrus['instances'][ct.NAME]
    assert (mine['running'], mine['master_pid']) == (True, pid)
    with open(f'/proc/{pid}/cmdline', 'rb') as handle:
        assert handle.read().split(b'\0')[:3] == [ct.MASTER.encode(), b'-C', ct.IMAPD.encode()]
    # /run is per host: be1 shares /etc (so it sees the pair) but not this master's pidfile
    dummy, on_be1 = facts('be1', 'mailbox_lists=true')
    assert (on_be1['instances'][ct.NAME]['running'], on_be1['instances'][ct.NAME]['master_pid']) == (False, None)
    assert 'mailboxes' not in on_be1['instances'][ct.NAME]        # a stopped instance's list is not read
    # the running instance's mailbox list, read with its own ctl_mboxlist: a new instance has no mailbox yet
    result, listed = facts(ct.HOST, 'mailbox_lists=true partition_usage=false', '--check')
    assert result['changed'] is False
    assert listed['instances'][ct.NAME]['mailboxes'] == {} and 'mailboxes_error' not in listed['instances'][ct.NAME]
    assert 'mailboxes' not in cyrus['instances'][ct.NAME]          # only when asked


def test_facts_change_nothing_in_check_mode_and_can_skip_the_partition_walk(cyhatest):
    before = facts()[1]['instances'][ct.NAME]
    result, cyrus = facts(ct.HOST, 'partition_usage=false', '--check')
    assert result['changed'] is False
    mine = cyrus['instances'][ct.NAME]
    assert 'files' not in mine['partitions']['default'] and 'used_bytes' not in mine['partitions']['default']
    assert mine['running'] == before['running'] and mine['master_pid'] == before['master_pid']


def test_facts_report_a_broken_config_as_problems_not_a_failure(cyhatest, tmp_path):
    root = tmp_path / 'etc'
    (root / 'broken').mkdir(parents=True)
    (root / 'broken' / 'imapd.conf').write_text('configdirectory /x\n')
    (root / 'broken' / 'cyrus.conf').write_text('SERVICES {\n  imap cmd="imapd\n}\n')
    (root / 'Not-An-Instance').mkdir()
    (root / 'Not-An-Instance' / 'imapd.conf').write_text('configdirectory: /x\n')
    result, cyrus = facts('localhost', f'config_root={root} include_default=false', '-c', 'local')
    assert sorted(cyrus['instances']) == ['broken']
    assert cyrus['instances']['broken']['problems'] == [
        f'{root}/broken/imapd.conf:1: invalid option name: expected "key: value"',
        f'{root}/broken/cyrus.conf:2: missing closing " in argument cmd']


def test_bad_arguments_fail_with_a_message(cyhatest):
    out = labutil.ansible(ct.HOST, 'cyrus.ha.cyrus_facts', 'partition_usage=maybe', check=False)
    assert out.returncode != 0
    assert ("argument 'partition_usage' is of type str and we were unable to convert to bool: "
            "The value 'maybe' is not a valid boolean.") in out.stdout, out.stdout
    out = labutil.ansible(ct.HOST, 'cyrus.ha.cyrus_facts', 'mailbox_lists=some', check=False)
    assert out.returncode != 0
    assert ("argument 'mailbox_lists' is of type str and we were unable to convert to bool: "
            "The value 'some' is not a valid boolean.") in out.stdout, out.stdout
    out = labutil.ansible(ct.HOST, 'cyrus.ha.cyrus_facts', 'instances=be1', check=False)
    assert 'Unsupported parameters for (cyrus.ha.cyrus_facts) module: instances.' in out.stdout, out.stdout
