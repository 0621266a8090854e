# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.cyrus_config and the lint CLI on a lab host, against a real instance that master
really starts from the validated pair."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import shutil
import stat
import tempfile

import pytest
import yaml

import cyha_cyrustest as ct
import labutil

pytestmark = pytest.mark.lab
ROLE = os.path.join(labutil.REPO, 'roles', 'cyrus_instance')


def install_support(directory: str) -> str:
    """The support directory as the cyrus_instance role installs it (its list: the role's vars/main.yml);
    the path of the config CLI in it."""
    with open(os.path.join(ROLE, 'vars', 'main.yml'), encoding='utf-8') as handle:
        data = yaml.safe_load(handle)
    module_utils = data['__cyrus_instance_module_utils'].replace('{{ role_path }}', ROLE)
    os.makedirs(directory)
    for item in data['__cyrus_instance_support_files']:
        path = item.replace('{{ role_path }}', ROLE).replace('{{ __cyrus_instance_module_utils }}', module_utils)
        shutil.copyfile(path, os.path.join(directory, os.path.basename(path)))
    return os.path.join(directory, 'cyrusconf_cli.py')


@pytest.fixture(scope='module')
def cyhatest(lab):
    scratch = tempfile.mkdtemp(prefix='cyha-cyrusconfig-', dir='/var/tmp')
    state = {'pid': None, 'scratch': scratch, 'cli': install_support(os.path.join(scratch, 'cyrus-ha'))}
    try:
        ct.address('add')
        ct.make_instance()
        yield state
    finally:
        ct.stop(state['pid'] or ct.master_pid())
        ct.remove_instance()
        ct.address('del')
        shutil.rmtree(scratch, ignore_errors=True)


def module(name: str, args: dict, *extra: str, check: bool = True) -> tuple[int, dict]:
    """Run a module on be2; its result as the tree callback saves it (with the diff at -vvv)."""
    with tempfile.TemporaryDirectory(prefix='cyha-tree-') as tree:
        out = labutil.ansible(ct.HOST, name, json.dumps(args), '--tree', tree, *extra, check=check)
        with open(os.path.join(tree, ct.HOST), encoding='utf-8') as handle:
            return out.returncode, json.load(handle)


def config(args: dict, *extra: str, check: bool = True) -> tuple[int, dict]:
    return module('cyrus.ha.cyrus_config', args, *extra, check=check)


def digest(path: str) -> str:
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_the_instance_pair_is_valid_and_master_starts_from_it(cyhatest):
    rc, imapd = config({'path': ct.IMAPD, 'check_host': True})
    assert (rc, imapd['changed'], imapd['kind'], imapd['problems'], imapd['conflicts']) == (0, False, 'imapd', [], [])
    rc, cyrus = config({'path': ct.CYRUS, 'check_host': True})
    assert (rc, cyrus['changed'], cyrus['kind'], cyrus['imapd_conf']) == (0, False, 'cyrus', ct.IMAPD)
    assert cyrus['murder_role'] == 'standalone'
    cyhatest['pid'] = ct.start()
    assert ct.imap_banner().startswith('* OK')


def test_settings_change_then_do_not_then_check_mode_predicts(cyhatest):
    before_mode = stat.S_IMODE(os.stat(ct.IMAPD).st_mode)
    rc, first = config({'path': ct.IMAPD, 'settings': {'allowusermoves': True, 'popminpoll': 2}})
    assert (rc, first['changed']) == (0, True)
    with open(ct.IMAPD, encoding='utf-8') as handle:
        text = handle.read()
    assert text == ct.IMAPD_TEXT + 'allowusermoves: yes\npopminpoll: 2\n'
    assert stat.S_IMODE(os.stat(ct.IMAPD).st_mode) == before_mode == 0o640
    rc, again = config({'path': ct.IMAPD, 'settings': {'allowusermoves': True, 'popminpoll': 2}})
    assert (rc, again['changed']) == (0, False)
    sha = digest(ct.IMAPD)
    rc, checked = config({'path': ct.IMAPD, 'settings': {'popminpoll': None, 'servername': 'other.cyha.test'},
                          'secret_settings': {'mupdate_password': 'sekrit-pw'}}, '--check', '--diff', '-vvv')
    assert (rc, checked['changed']) == (0, True)
    assert digest(ct.IMAPD) == sha
    assert checked['diff']['after'] == ct.IMAPD_TEXT.replace('cyhatest.cyha.test', 'other.cyha.test') + \
        'allowusermoves: yes\nmupdate_password: ********\n'
    assert 'sekrit-pw' not in json.dumps(checked)
    # the edited file is still one master accepts: a real restart works
    ct.stop(cyhatest['pid'])
    cyhatest['pid'] = ct.start()


def test_the_validate_cli_on_the_node_accepts_and_refuses(cyhatest):
    dest = os.path.join(cyhatest['scratch'], 'cyrus.conf')
    validate = f'/usr/bin/python3 {cyhatest["cli"]} lint --kind cyrus --imapd-conf {ct.IMAPD} %s'
    rc, good = module('ansible.builtin.copy', {'content': ct.CYRUS_TEXT, 'dest': dest, 'validate': validate})
    assert (rc, good['changed']) == (0, True)
    bad_text = ct.CYRUS_TEXT.replace(f'{ct.ADDRESS}:143', '143')
    bad_text = bad_text.replace(f'lmtpd -C {ct.IMAPD}"', 'lmtpd"')
    rc, bad = module('ansible.builtin.copy', {'content': bad_text, 'dest': dest, 'validate': validate}, check=False)
    assert rc != 0 and bad['msg'] == 'failed to validate'
    source = bad['stderr_lines'][0].split(':', 1)[0]
    assert bad['stderr_lines'] == [
        f'{source}:7: SERVICES entry imap: listen=143 has no address: master would bind every address; '
        'write ADDRESS:143',
        f'{source}:8: SERVICES entry lmtpunix: cmd="lmtpd" lacks -C {ct.IMAPD} (master\'s -C is not inherited by '
        'its children)']
    with open(dest, encoding='utf-8') as handle:
        assert handle.read() == ct.CYRUS_TEXT


@pytest.mark.parametrize('name, text, args, message', [
    ('cyrus.conf', ct.CYRUS_TEXT.replace(f'{ct.ADDRESS}:143', '0.0.0.0:143'), {'imapd_conf': ct.IMAPD},
     "{path} is not a valid cyrus.conf: {path}:7: SERVICES entry imap: listen=0.0.0.0:143 binds the wildcard "
     "address: bind the instance's own address"),
    ('cyrus.conf', ct.CYRUS_TEXT, {'imapd_conf': '/etc/imapd.conf'},
     "{path} is not a valid cyrus.conf: {path}:3: START entry recover passes -C " + ct.IMAPD +
     ", not this instance's -C /etc/imapd.conf; {path}:7: SERVICES entry imap passes -C " + ct.IMAPD +
     ", not this instance's -C /etc/imapd.conf; {path}:8: SERVICES entry lmtpunix passes -C " + ct.IMAPD +
     ", not this instance's -C /etc/imapd.conf; {path}:12: EVENTS entry checkpoint passes -C " + ct.IMAPD +
     ", not this instance's -C /etc/imapd.conf"),
    ('cyrus.conf', ct.CYRUS_TEXT.replace('cmd="imapd', 'cmd="proxyd'), {'imapd_conf': ct.IMAPD},
     '{path} is not a valid cyrus.conf: {path}:7: SERVICES entry imap: program proxyd is not in /usr/lib/cyrus/bin '
     '(Debian ships no proxyd binaries: use imapd, pop3d, lmtpd -a)'),
    ('imapd.conf', 'configdirectory /x\n', {},
     '{path} is not a valid imapd.conf: {path}:1: invalid option name: expected "key: value"; '
     '{path}:0: configdirectory is not set: every instance needs its own'),
    ('imapd.conf', ct.IMAPD_TEXT, {'settings': {'bad key': 1}},
     "{path}: invalid imapd.conf option name 'bad key': use letters, digits, \"-\" and \"_\""),
    ('cyrus.conf', ct.CYRUS_TEXT, {'settings': {'popminpoll': 1}, 'imapd_conf': ct.IMAPD},
     'settings apply to an imapd.conf only, and {path} is a cyrus.conf'),
    ('other.txt', 'x', {}, 'cannot tell whether {path} is an imapd.conf or a cyrus.conf: set kind'),
    ('missing.conf', None, {'kind': 'imapd'}, '{path} does not exist or cannot be read'),
], ids=['wildcard', 'other-C', 'proxyd', 'imapd-syntax', 'bad-key', 'settings-on-cyrus', 'unknown-kind', 'missing'])
def test_bad_input_fails_naming_the_file_line_and_cause(cyhatest, name, text, args, message):
    directory = tempfile.mkdtemp(dir=cyhatest['scratch'])
    path = os.path.join(directory, name)
    if text is not None:
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(text)
        sha = digest(path)
    rc, result = config(dict({'path': path}, **args), check=False)
    assert rc != 0
    assert result['msg'] == message.format(path=path)
    if text is not None:
        assert digest(path) == sha


def test_check_host_refuses_a_second_instance_on_the_same_address_and_socket(cyhatest):
    # a second instance whose cyrus.conf kept cyhatest's listen= lines: same address:port, same unix socket
    directory = os.path.join(cyhatest['scratch'], 'etc', 'cyhatwo')
    os.makedirs(directory)
    imapd = os.path.join(directory, 'imapd.conf')
    path = os.path.join(directory, 'cyrus.conf')
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(ct.CYRUS_TEXT.replace(ct.IMAPD, imapd))
    with open(imapd, 'w', encoding='utf-8') as handle:
        handle.write(ct.IMAPD_TEXT.replace('/cyrus-ha/cyhatest', '/cyrus-ha/cyhatwo'))
    rc, result = config({'path': path, 'check_host': True}, check=False)
    assert rc != 0
    assert result['msg'] == (
        f'{path} conflicts with another instance of this host: '
        f'cyhatest: imap listen={ct.ADDRESS}:143 and cyhatwo: imap listen={ct.ADDRESS}:143 claim the same '
        f'tcp {ct.ADDRESS}:143; cyhatest: lmtpunix listen={ct.RUN}/lmtp and cyhatwo: lmtpunix '
        f'listen={ct.RUN}/lmtp claim the same unix socket {ct.RUN}/lmtp')
    rc, alone = config({'path': path, 'check_host': True, 'config_root': os.path.join(cyhatest['scratch'], 'etc')})
    assert (rc, alone['changed'], alone['conflicts']) == (0, False, [])


def test_check_host_can_include_the_distribution_default_instance(cyhatest):
    rc, result = config({'path': ct.CYRUS, 'check_host': True, 'include_default': True}, check=False)
    assert rc != 0
    assert result['msg'] == (
        f'{ct.CYRUS} conflicts with another instance of this host: '
        f'cyhatest: imap listen={ct.ADDRESS}:143 and default: imap listen=imap claim the same tcp *:143')


# ---------------------------------------------------------------------------------------------
# hostile pass on a lab host: symlinks, special files, secrets
# ---------------------------------------------------------------------------------------------

def test_a_symlinked_config_is_written_through_and_the_link_stays(cyhatest):
    real_dir = tempfile.mkdtemp(dir=cyhatest['scratch'])
    link_dir = tempfile.mkdtemp(dir=cyhatest['scratch'])
    target = os.path.join(real_dir, 'imapd.conf')
    link = os.path.join(link_dir, 'imapd.conf')
    with open(target, 'w', encoding='utf-8') as handle:
        handle.write(ct.IMAPD_TEXT)
    os.chmod(target, 0o640)
    mail = grp.getgrnam('mail').gr_gid
    os.chown(target, 0, mail)   # root:mail, as the role writes it
    os.symlink(target, link)
    rc, first = config({'path': link, 'settings': {'popminpoll': 3}}, '--diff', '-vvv')
    assert (rc, first['changed'], first['target']) == (0, True, target)
    assert first['diff']['after'] == ct.IMAPD_TEXT + 'popminpoll: 3\n'   # the config itself, as asked
    assert os.path.islink(link) and os.readlink(link) == target
    with open(target, encoding='utf-8') as handle:
        assert handle.read() == ct.IMAPD_TEXT + 'popminpoll: 3\n'
    st = os.stat(target)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, mail)
    assert sorted(os.listdir(real_dir)) == ['imapd.conf'] and sorted(os.listdir(link_dir)) == ['imapd.conf']
    rc, again = config({'path': link, 'settings': {'popminpoll': 3}})
    assert (rc, again['changed']) == (0, False)


@pytest.mark.parametrize('check_mode', [True, False])
def test_a_symlink_to_a_system_file_is_refused_and_its_content_never_printed(cyhatest, check_mode):
    directory = tempfile.mkdtemp(dir=cyhatest['scratch'])
    link = os.path.join(directory, 'imapd.conf')
    victim = '/etc/shadow'
    if not check_mode:   # a real write is tried on a copy only
        victim = os.path.join(directory, 'shadow')
        shutil.copyfile('/etc/shadow', victim)
        os.chmod(victim, 0o600)
    os.symlink(victim, link)
    sha = digest(victim)
    extra = ('--check', '--diff', '-vvv') if check_mode else ('--diff', '-vvv')
    out = labutil.ansible(ct.HOST, 'cyrus.ha.cyrus_config',
                          json.dumps({'path': link, 'settings': {'configdirectory': '/var/lib/x'}}), *extra, check=False)
    assert out.returncode != 0 and 'is not an imapd.conf on its own, so it is neither edited nor shown' in out.stdout
    printed = out.stdout + out.stderr
    with open(victim, encoding='utf-8') as handle:
        for line in handle:
            fields = line.strip().split(':')
            assert line.strip() not in printed and not (fields[1].startswith('$') and fields[1] in printed)
    assert digest(victim) == sha and os.path.islink(link)


@pytest.mark.parametrize('make, cause', [
    (os.mkfifo, 'is a FIFO, not a regular file: refused'),
    (lambda p: os.symlink('/dev/zero', p), 'is a character device, not a regular file: refused'),
], ids=['fifo', 'device'])   # directories, huge files, NUL bytes, non-UTF-8: tests/unit (test_cyrus_config_hostile)
def test_special_files_are_refused_without_blocking(cyhatest, make, cause):
    directory = tempfile.mkdtemp(dir=cyhatest['scratch'])
    path = os.path.join(directory, 'imapd.conf')
    make(path)
    rc, result = config({'path': path, 'settings': {'servername': 'x'}}, check=False)
    assert rc != 0 and result['msg'].startswith(f'{path} ') and cause in result['msg'], result['msg']


def test_a_secret_with_spaces_is_never_printed(cyhatest):
    directory = tempfile.mkdtemp(dir=cyhatest['scratch'])
    path = os.path.join(directory, 'imapd.conf')
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(ct.IMAPD_TEXT)
    out = labutil.ansible(ct.HOST, 'cyrus.ha.cyrus_config', json.dumps({
        'path': path, 'secret_settings': {'mupdate_server': '  hidden-mupdate-host  ', 'proxy_password': ' pw-sp4ce '}}),
        '--check', '--diff', '-vvv', check=False)
    assert out.returncode == 0, out.stdout
    assert 'hidden-mupdate-host' not in out.stdout + out.stderr and 'pw-sp4ce' not in out.stdout + out.stderr
    assert 'has no port' in out.stdout   # the warning is there, its value masked
