# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus_config's hostile pass through main(): symlinks written through and never replaced, special
files refused without blocking, nothing printed that was not asked for, secrets masked by key.

The real thing on a lab host (Ansible over SSH) is in tests/integration/test_cyrus_config.py."""

from __future__ import annotations

import json
import os

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.cyrus.ha.plugins.module_utils import cyrusconf, cyrusconf_lint
from ansible_collections.cyrus.ha.plugins.modules import cyrus_config
from hostile import deadline  # the shared deadline of the hostile tests

IMAPD = 'configdirectory: /var/lib/cyrus-ha/t\npartition-default: /var/spool/cyrus-ha/t\n'
SHADOW = 'root:$y$j9T$shadowhashXYZ:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n'


def run_main(args, capsys, check=False, diff=False):
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    with deadline(), patch_module_args(args):
        with pytest.raises(SystemExit):
            cyrus_config.main()
    out = capsys.readouterr().out
    return json.loads(out), out


@pytest.mark.parametrize('check', [True, False])
def test_settings_through_a_symlink_to_a_foreign_file_are_refused_unshown_and_unwritten(tmp_path, capsys, check):
    secret = tmp_path / 'shadow'
    secret.write_text(SHADOW)
    os.chmod(secret, 0o600)
    link = tmp_path / 'imapd.conf'
    link.symlink_to(secret)
    result, out = run_main({'path': str(link), 'settings': {'configdirectory': '/var/lib/x'}}, capsys,
                           check=check, diff=True)
    assert result['failed'] and result['msg'] == (
        f'{link} is not an imapd.conf on its own, so it is neither edited nor shown: '
        f'{link}:0: configdirectory is not set: every instance needs its own')
    assert 'shadowhash' not in out and 'daemon' not in out and 'diff' not in result
    assert secret.read_text() == SHADOW and os.path.islink(link) and sorted(os.listdir(tmp_path)) == ['imapd.conf', 'shadow']


def test_an_empty_file_may_be_filled(tmp_path, capsys):
    path = tmp_path / 'imapd.conf'
    path.write_text('# new\n')
    result, dummy = run_main({'path': str(path), 'settings': {'configdirectory': '/var/lib/x'}}, capsys, diff=True)
    assert result['changed'] and path.read_text() == '# new\nconfigdirectory: /var/lib/x\n'
    assert result['diff']['after'] == '# new\nconfigdirectory: /var/lib/x\n'


def test_a_foreign_file_that_fails_the_checks_is_refused_without_its_content(tmp_path, capsys):
    secret = tmp_path / 'shadow'
    secret.write_text(SHADOW)
    link = tmp_path / 'imapd.conf'
    link.symlink_to(secret)
    result, out = run_main({'path': str(link), 'settings': {'servername': 'x'}}, capsys, check=True, diff=True)
    assert result['failed'] and 'configdirectory is not set' in result['msg']
    assert 'shadowhash' not in out and 'daemon' not in out
    as_cyrus, out = run_main({'path': str(link), 'kind': 'cyrus', 'bindir': ''}, capsys, diff=True)
    assert as_cyrus['failed'] and 'text outside a section' in as_cyrus['msg'] and 'shadowhash' not in out


def test_a_write_goes_through_the_symlink_and_keeps_link_mode_and_directory(tmp_path, capsys):
    real_dir = tmp_path / 'real'
    real_dir.mkdir()
    target = real_dir / 'imapd.conf'
    target.write_text(IMAPD)
    os.chmod(target, 0o640)
    link = tmp_path / 'imapd.conf'
    link.symlink_to(os.path.join('real', 'imapd.conf'))
    result, dummy = run_main({'path': str(link), 'settings': {'servername': 's.cyha.test'}, 'backup': True}, capsys)
    assert result['changed'] is True and result['target'] == str(target)
    assert os.path.islink(link) and os.readlink(link) == os.path.join('real', 'imapd.conf')
    assert target.read_text() == IMAPD + 'servername: s.cyha.test\n' and os.stat(target).st_mode & 0o777 == 0o640
    assert sorted(os.listdir(real_dir)) == sorted(['imapd.conf', os.path.basename(result['backup_file'])])
    assert os.path.dirname(result['backup_file']) == str(real_dir)
    again, dummy = run_main({'path': str(link), 'settings': {'servername': 's.cyha.test'}}, capsys)
    assert again['changed'] is False and 'target' not in again


@pytest.mark.parametrize('make, cause', [
    (os.mkfifo, 'is a FIFO, not a regular file'),
    (os.mkdir, 'is a directory, not a regular file'),
    (lambda p: os.symlink('/dev/null', p), 'is a character device, not a regular file'),
    (lambda p: os.symlink(os.path.dirname(p), p), 'is a directory, not a regular file'),
    (lambda p: os.symlink(p + '.missing', p), 'does not exist or cannot be read'),
    (lambda p: os.symlink(p, p), 'Too many levels of symbolic links'),
    (lambda p: open(p, 'wb').truncate(cyrusconf.MAX_CONFIG_BYTES + 1), 'more than the 4194304 a Cyrus config may have'),
    (lambda p: open(p, 'wb').write(b'configdirectory: /x\n\0\n'), 'holds NUL bytes'),
    (lambda p: open(p, 'wb').write(b'servername: caf\xe9-geheim\n'), 'is not UTF-8 text (byte 15)'),
    (lambda p: None, 'does not exist or cannot be read'),
])
def test_special_and_bad_files_are_refused_without_blocking_or_printing(tmp_path, capsys, make, cause):
    path = str(tmp_path / 'imapd.conf')
    make(path)
    for check in (True, False):
        result, out = run_main({'path': path, 'settings': {'servername': 'x'}}, capsys, check=check, diff=True)
        assert result['failed'] and result['msg'].startswith(f'{path} ') and cause in result['msg']
        assert 'geheim' not in out and 'Traceback' not in out


def test_a_fifo_beside_the_file_or_in_another_instance_does_not_block(tmp_path, capsys):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    (tmp_path / 'a' / 'imapd.conf').write_text(IMAPD)
    os.mkfifo(tmp_path / 'a' / 'cyrus.conf')
    os.mkfifo(tmp_path / 'b' / 'imapd.conf')
    os.mkfifo(tmp_path / 'b' / 'cyrus.conf')
    result, dummy = run_main({'path': str(tmp_path / 'a' / 'imapd.conf'), 'check_host': True,
                              'config_root': str(tmp_path)}, capsys)
    assert not result.get('failed') and result['changed'] is False and result['conflicts'] == []


@pytest.mark.parametrize('secrets, settings', [
    ({'proxy_password': '  s3cr3t-value  '}, {}),
    ({'configdirectory': '  s3cr3t-value  '}, {}),            # the lint names the (relative) value
    ({'mupdate_server': ' s3cr3t-value '}, {}),                # the lint warns with the value
    ({'mupdate_password': 's3cr3t-value\n'}, {}),              # refused (two lines), never echoed
    ({'ldap_password': ['s3cr3t-value', 'x']}, {}),
])
def test_secret_values_never_appear_whatever_their_spacing(tmp_path, capsys, secrets, settings):
    path = tmp_path / 'imapd.conf'
    path.write_text(IMAPD)
    for check in (True, False):
        dummy, out = run_main({'path': str(path), 'secret_settings': secrets, 'settings': settings}, capsys,
                              check=check, diff=True)
        assert 's3cr3t-value' not in out


def test_secrets_already_in_the_file_are_masked_by_key_and_value(tmp_path, capsys):
    path = tmp_path / 'imapd.conf'
    path.write_text(IMAPD + '# was: old-geheim\nproxy_password:   old-geheim  \nsasl_ldap_password: ldap-geheim\n'
                    'fe1_password: fe-geheim\n')
    result, out = run_main({'path': str(path), 'settings': {'servername': 'x'}}, capsys, check=True, diff=True)
    assert result['diff']['after'] == IMAPD + '# was: ********\nproxy_password: ********\nsasl_ldap_password: ********\n' \
        'fe1_password: ********\nservername: x\n'
    assert 'geheim' not in out


@pytest.mark.parametrize('settings, cause', [
    ({'servername': 'a\nconfigdirectory: /evil'}, "invalid value for imapd.conf option 'servername'"),
    ({'a b': 'x'}, "invalid imapd.conf option name 'a b'"),
    ({'partition-\u0663': '/x'}, 'invalid imapd.conf option name'),
    ({'servername': ''}, "invalid value for imapd.conf option 'servername'"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, capsys, settings, cause):
    path = tmp_path / 'imapd.conf'
    path.write_text(IMAPD)
    result, dummy = run_main({'path': str(path), 'settings': settings}, capsys)
    assert result['failed'] and cause in result['msg'] and path.read_text() == IMAPD
    assert os.listdir(tmp_path) == ['imapd.conf']


def test_settings_on_a_cyrus_conf_and_an_unknown_kind_are_refused(tmp_path, capsys):
    conf = tmp_path / 'cyrus.conf'
    conf.write_text('SERVICES {\n}\n')
    result, dummy = run_main({'path': str(conf), 'settings': {'x': 'y'}}, capsys)
    assert result['failed'] and 'settings apply to an imapd.conf only' in result['msg']
    other = tmp_path / 'other.txt'
    other.write_text(IMAPD)
    result, dummy = run_main({'path': str(other)}, capsys)
    assert result['failed'] and 'cannot tell whether' in result['msg']


def test_non_ascii_values_are_written_as_utf8(tmp_path, capsys):
    path = tmp_path / 'imapd.conf'
    path.write_text(IMAPD)
    result, dummy = run_main({'path': str(path), 'settings': {'servername': 'mäil.example.org'}}, capsys)
    assert result['changed'] and path.read_bytes().endswith('servername: mäil.example.org\n'.encode('utf-8'))


class CountingList(list):
    """A list that counts how often it is walked from start to end."""

    walks = 0

    def __iter__(self):
        CountingList.walks += 1
        return super().__iter__()


def test_the_linter_walks_the_lines_a_constant_number_of_times(monkeypatch):
    lines = 200_000
    text = ''.join('opt%d: /v%d\n' % (i, i) for i in range(lines)) + 'configdirectory: rel\n'
    real = cyrusconf_lint.parse_imapd_lines

    def counted(text, path='imapd.conf'):
        conf, problems = real(text, path)
        conf.lines = CountingList(conf.lines)
        return conf, problems
    monkeypatch.setattr(cyrusconf_lint, 'parse_imapd_lines', counted)
    CountingList.walks = 0
    problems = cyrusconf_lint.lint_imapd(text)
    assert [p.line for p in problems] == [lines + 1]
    assert CountingList.walks <= 2


def test_cyr_info_lint_walks_the_lines_a_constant_number_of_times(monkeypatch):
    text = ''.join('opt%d: v\n' % i for i in range(50_000))
    real = cyrusconf_lint.parse_imapd_lines

    def counted(text, path='imapd.conf'):
        conf, problems = real(text, path)
        conf.lines = CountingList(conf.lines)
        return conf, problems
    monkeypatch.setattr(cyrusconf_lint, 'parse_imapd_lines', counted)
    CountingList.walks = 0
    out = ''.join('opt%d: v\n' % i for i in range(50_000))
    problems = cyrusconf_lint.cyr_info_lint('cyr_info', 'imapd.conf', text, run=lambda argv: (0, out, ''))
    assert len(problems) == 50_000 and problems[-1].line == 50_000 and CountingList.walks <= 2


class Port(int):
    """A port number that counts how often it is compared."""

    compared = 0

    def __eq__(self, other):
        Port.compared += 1
        return int(self) == other

    __hash__ = int.__hash__


def test_cross_check_compares_each_claim_with_its_port_only():
    names = {}
    for i in range(2000):
        imapd = cyrusconf.parse_imapd('configdirectory: /var/lib/i%d\n' % i)
        cyrus = cyrusconf.parse_cyrus('SERVICES {\n  imap cmd="imapd" listen="198.51.100.%d:%d"\n}\n'
                                      % (i % 250 + 1, 10000 + i))
        names['i%d' % i] = (imapd, cyrus)
    names['dup'] = (cyrusconf.parse_imapd('configdirectory: /var/lib/dup\n'),
                    cyrusconf.parse_cyrus('SERVICES {\n  imap cmd="imapd" listen="198.51.100.1:10000"\n}\n'))
    Port.compared = 0
    conflicts = cyrusconf_lint.cross_check(names, lambda host, port: [(host, Port(port))])
    assert conflicts == ['dup: imap listen=198.51.100.1:10000 and i0: imap listen=198.51.100.1:10000 claim the '
                         'same tcp 198.51.100.1:10000']
    assert Port.compared <= 10 * len(names)
