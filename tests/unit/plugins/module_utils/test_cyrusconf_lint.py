# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrusconf_lint: the checks of one file, the cross-instance checker, and Cyrus's own cyr_info conf-lint
(a recorded answer, and the real binary when Cyrus is installed)."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import cyrusconf_lint
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusconf import parse_cyrus, parse_imapd
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusconf_lint import (
    check_listen, cross_check, cyr_info_lint, lint_cyrus, lint_imapd)

HERE = os.path.dirname(os.path.abspath(__file__))
CONF = '/etc/cyrus-ha/be1/imapd.conf'


@pytest.mark.parametrize('listen, messages', [
    ('198.51.100.121:143', []),
    ('[2001:db8::121]:imap', []),
    ('/run/cyrus-ha/be1/lmtp', []),
    ('be1-svc.cyha.test:lmtp', []),
    ('imap', ['listen=imap has no address: master would bind every address; write ADDRESS:imap']),
    ('198.51.100.121', ['listen=198.51.100.121 is read as a port with no address: write 198.51.100.121:PORT']),
    ('0.0.0.0:143', ["listen=0.0.0.0:143 binds the wildcard address: bind the instance's own address"]),
    ('*:143', ["listen=*:143 binds the wildcard address: bind the instance's own address"]),
    ('[::]:143', ["listen=[::]:143 binds the wildcard address: bind the instance's own address"]),
    ('[198.51.100.121]', ['listen=[198.51.100.121] has no port: write [198.51.100.121]:PORT']),
    ('2001:db8::121:143', ['listen=2001:db8::121:143: write an IPv6 address in brackets, [2001:db8::121]:PORT']),
    ('198.51.100.121:', ['listen=198.51.100.121: ends with ":" and no port']),
    ('[198.51.100.121:143', ['listen=[198.51.100.121:143 has "[" without "]"']),
    ('198.51.100.121:70000', ['listen=198.51.100.121:70000: port 70000 is out of range']),
])
def test_check_listen(listen, messages):
    assert check_listen(listen) == messages


GOOD_CYRUS = f'''START {{
  recover cmd="ctl_cyrusdb -C {CONF} -r"
}}
SERVICES {{
  imap cmd="imapd -C {CONF}" listen="198.51.100.121:imap" prefork=0
  lmtpunix cmd="lmtpd -C{CONF}" listen="/run/cyrus-ha/be1/lmtp"
}}
EVENTS {{
  checkpoint cmd="ctl_cyrusdb -C {CONF} -c" period=30
}}
'''


def test_a_good_instance_cyrus_conf_has_no_problem():
    assert lint_cyrus(GOOD_CYRUS, 'c', CONF) == []


def test_lint_cyrus_reports_each_problem_with_its_line():
    text = f'''SERVICES {{
  imap cmd="imapd" listen="imap"
  pop3 cmd="pop3d -C /etc/imapd.conf" listen="198.51.100.121:pop3"
  imap cmd="imapd -C {CONF}" listen="198.51.100.121:imap"
  mupdate cmd="mupdate -C {CONF}" listen="198.51.100.121:3905" prefork=0
  lmtp cmd="lmtpproxyd -C {CONF}" listen="198.51.100.121:lmtp"
  nolisten cmd="imapd -C {CONF}"
}}
EVENTS {{
  noperiod cmd="ctl_cyrusdb -C {CONF} -c"
}}
START {{
  nocmd x=1
}}
'''
    bindir = os.path.join(HERE, 'fixtures')   # holds no Cyrus program: every bare name is missing
    assert [str(p) for p in lint_cyrus(text, 'c', CONF)] == [
        f'c:2: SERVICES entry imap: cmd="imapd" lacks -C {CONF} (master\'s -C is not inherited by its children)',
        'c:2: SERVICES entry imap: listen=imap has no address: master would bind every address; write ADDRESS:imap',
        f"c:3: SERVICES entry pop3 passes -C /etc/imapd.conf, not this instance's -C {CONF}",
        'c:4: SERVICES entry imap defined twice (first on line 2)',
        'c:5: SERVICES entry mupdate: mupdate needs prefork=1 (a slave syncs only after its first client otherwise)',
        'c:7: SERVICES entry nolisten has no listen=',
        'c:10: EVENTS entry noperiod has none of period=, at= or cron=',
        'c:13: START entry nocmd has no cmd=',
    ]
    missing = [str(p) for p in lint_cyrus(text, 'c', CONF, bindir) if 'is not in' in p.message]
    assert missing[-3] == (f'c:6: SERVICES entry lmtp: program lmtpproxyd is not in {bindir} '
                           '(Debian ships no proxyd binaries: use imapd, pop3d, lmtpd -a)')


def test_lint_imapd():
    assert lint_imapd('configdirectory: /var/lib/cyrus-ha/be1\npartition-default: /srv/p\n', 'i') == []
    assert [str(p) for p in lint_imapd('partition-default: spool\nproxyservers: proxy\nmupdate_server: m.test\n',
                                       'i')] == [
        'i:0: configdirectory is not set: every instance needs its own',
        'i:1: partition-default must be an absolute path (master runs with -d from /), not spool',
        'i:3: warning: mupdate_server m.test has no port: mupdate_port is read by nothing, write m.test:3905',
    ]
    assert [str(p) for p in lint_imapd('configdirectory: /c\nproxyservers: proxy\n', 'i')] == [
        'i:2: warning: proxyservers is set but mupdate_server is not: a backend needs its mupdate master']


def _instance(name: str, addr: str, lock: str = None, sock: str = None):
    imapd = parse_imapd(f'configdirectory: /var/lib/cyrus-ha/{name}\npartition-default: /var/spool/cyrus-ha/{name}\n'
                        f'mboxname_lockpath: {lock or "/run/cyrus-ha/" + name + "/lock"}\n'
                        f'lmtpsocket: {sock or "/run/cyrus-ha/" + name + "/lmtp"}\n')
    cyrus = parse_cyrus(f'SERVICES {{\n  imap cmd="imapd" listen="{addr}:143"\n'
                        f'  lmtpunix cmd="lmtpd" listen="{sock or "/run/cyrus-ha/" + name + "/lmtp"}"\n}}\n')
    return imapd, cyrus


def test_cross_check_finds_shared_addresses_sockets_and_lock_directories():
    resolve = cyrusconf_lint._resolve
    assert cross_check({'be1': _instance('be1', '198.51.100.121'), 'be2': _instance('be2', '198.51.100.122')},
                       resolve) == []
    assert cross_check({'be1': _instance('be1', '198.51.100.121'), 'be2': _instance('be2', '198.51.100.121')}) == [
        'be1: imap listen=198.51.100.121:143 and be2: imap listen=198.51.100.121:143 claim the same '
        'tcp 198.51.100.121:143']
    assert cross_check({'a': _instance('a', '0.0.0.0'), 'b': _instance('b', '[2001:db8::1]')}) == [
        'a: imap listen=0.0.0.0:143 and b: imap listen=[2001:db8::1]:143 claim the same tcp [2001:db8::1]:143']
    assert cross_check({'a': _instance('a', '198.51.100.1', lock='/run/l', sock='/run/s'),
                        'b': _instance('b', '198.51.100.2', lock='/run/l', sock='/run/s')}) == [
        'a: lmtpunix listen=/run/s and b: lmtpunix listen=/run/s claim the same unix socket /run/s',
        'a: mboxname_lockpath and b: mboxname_lockpath claim the same directory /run/l']


def test_service_names_compare_as_ports_even_without_etc_services_entries():
    assert cyrusconf_lint._resolve('198.51.100.121', 'lmtp') == [('198.51.100.121', 24)]
    assert cyrusconf_lint._resolve('198.51.100.121', 'mupdate') == [('198.51.100.121', 3905)]
    assert cyrusconf_lint._resolve(None, '143') == [('*', 143)]
    a = (parse_imapd('configdirectory: /a\n'), parse_cyrus('SERVICES {\n  lmtp cmd="lmtpd" listen="1.2.3.4:lmtp"\n}\n'))
    b = (parse_imapd('configdirectory: /b\n'), parse_cyrus('SERVICES {\n  lmtp cmd="lmtpd" listen="[1.2.3.4]:24"\n}\n'))
    assert cross_check({'a': a, 'b': b}) == [
        'a: lmtp listen=1.2.3.4:lmtp and b: lmtp listen=[1.2.3.4]:24 claim the same tcp 1.2.3.4:24']


# cyr_info conf-lint ---------------------------------------------------------------------------------------

IMAPD_WITH_TYPO = ('configdirectory: /var/lib/cyrus-ha/be1\n'   # 1
                   'mupdate_sever: m:3905\n'                     # 2 a typo
                   'be1_password: sekrit-1\n'                    # 3 read by Cyrus, unknown to conf-lint
                   'lmtp_admins: bar\n'                          # 4 a service not in cyrus.conf
                   'mupdate-svc_mechs: SCRAM-SHA-256\n'          # 5 read by Cyrus (backend.c)
                   'mupdate_sasl_mech_list: SCRAM-SHA-256\n')    # 6 read by Cyrus (mysasl_config)


def test_cyr_info_unknown_options_are_errors_on_their_line_without_their_values():
    calls = []

    def run(argv):
        calls.append(argv)
        return 0, ('mupdate_sever: m:3905\nbe1_password: sekrit-1\nlmtp_admins: bar\nmupdate-svc_mechs: SCRAM-SHA-256\n'
                   'mupdate_sasl_mech_list: SCRAM-SHA-256\n'), ''
    problems = cyr_info_lint('/usr/lib/cyrus/bin/cyr_info', '/tmp/x.conf', IMAPD_WITH_TYPO, '/etc/cyrus-ha/be1/cyrus.conf',
                             'imapd.conf', run)
    assert calls == [['/usr/lib/cyrus/bin/cyr_info', '-C', '/tmp/x.conf', '-M', '/etc/cyrus-ha/be1/cyrus.conf',
                      'conf-lint']]
    assert [str(p) for p in problems] == [
        'imapd.conf:2: unknown option mupdate_sever: Cyrus does not read it (cyr_info conf-lint); check its spelling',
        'imapd.conf:4: unknown option lmtp_admins: Cyrus does not read it (cyr_info conf-lint); check its spelling']
    assert all(p.severity == 'error' for p in problems)
    assert 'sekrit' not in ' '.join(map(str, problems))
    cyr_info_lint('cyr_info', '/tmp/x.conf', IMAPD_WITH_TYPO, None, None, run)
    assert calls[-1] == ['cyr_info', '-C', '/tmp/x.conf', 'conf-lint']


@pytest.mark.parametrize('answer, message', [
    ((78, '', 'fatal error: invalid option name on line 1 of configuration file /tmp/x.conf\n'),
     'x:0: cyr_info conf-lint failed (/bin/cyr_info, exit status 78): fatal error: invalid option name on line 1 '
     'of configuration file /tmp/x.conf'),
    ((127, '', "[Errno 2] No such file or directory: '/bin/cyr_info'"),
     "x:0: cyr_info conf-lint failed (/bin/cyr_info, exit status 127): [Errno 2] No such file or directory: "
     "'/bin/cyr_info'"),
])
def test_cyr_info_that_cannot_check_fails_naming_the_cause(answer, message):
    assert [str(p) for p in cyr_info_lint('/bin/cyr_info', '/tmp/x.conf', '', None, 'x', lambda argv: answer)] == [message]


def test_cyr_info_missing_binary_is_an_error_not_a_traceback(tmp_path):
    problems = cyr_info_lint(str(tmp_path / 'no-cyr_info'), str(tmp_path / 'i.conf'), '', None, 'i')
    assert len(problems) == 1 and problems[0].severity == 'error'
    assert str(problems[0]).startswith(f'i:0: cyr_info conf-lint failed ({tmp_path / "no-cyr_info"}, exit status 127)')


CYR_INFO = shutil.which('cyr_info', path='/usr/lib/cyrus/bin:/usr/libexec/cyrus-imapd')


@pytest.fixture(name='readable_dir')
def fixture_readable_dir():
    """cyr_info reads cyrus.conf as the cyrus user: a directory it can read (pytest's tmp_path is 0700)."""
    directory = tempfile.mkdtemp(prefix='cyha-cyrinfo-')
    os.chmod(directory, 0o755)
    yield pathlib.Path(directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(CYR_INFO is None, reason='Cyrus (cyr_info) is not installed')
def test_the_real_cyr_info_finds_the_typo_and_knows_the_services_of_cyrus_conf(readable_dir):
    tmp_path = readable_dir
    imapd = tmp_path / 'imapd.conf'
    imapd.write_text(IMAPD_WITH_TYPO)
    cyrus = tmp_path / 'cyrus.conf'
    cyrus.write_text('SERVICES {\n  imap cmd="imapd" listen="192.0.2.1:143"\n}\n')
    found = [p.message.split(':')[0] for p in cyr_info_lint(CYR_INFO, str(imapd), IMAPD_WITH_TYPO, str(cyrus))]
    assert found == ['unknown option mupdate_sever', 'unknown option lmtp_admins']
    cyrus.write_text('SERVICES {\n  lmtp cmd="lmtpd" listen="192.0.2.1:24"\n}\n')
    found = [p.message.split(':')[0] for p in cyr_info_lint(CYR_INFO, str(imapd), IMAPD_WITH_TYPO, str(cyrus))]
    assert found == ['unknown option mupdate_sever']
    imapd.write_text('configdirectory /x\n')
    [broken] = cyr_info_lint(CYR_INFO, str(imapd), 'configdirectory /x\n', str(cyrus))
    assert 'exit status 78' in broken.message and 'invalid option name on line 1' in broken.message
