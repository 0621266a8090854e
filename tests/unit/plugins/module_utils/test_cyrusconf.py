# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrusconf: round trips of real files, syntax errors with file and line, the checks, the CLI."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import cyrusconf
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusconf import (
    ConfigError, check_listen, cross_check, lint_cyrus, lint_imapd, murder_role, parse_cyrus, parse_imapd,
    parse_listen, render_cyrus, render_imapd)

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, 'fixtures', 'cyrus')
CLI = cyrusconf.__file__
CONF = '/etc/cyrus-ha/be1/imapd.conf'


def read(path: str) -> str:
    with open(path, encoding='utf-8', newline='') as handle:
        return handle.read()


def fixtures(kind: str) -> list[str]:
    pattern = 'imapd*.conf' if kind == 'imapd' else 'cyrus*.conf'
    found = sorted(glob.glob(os.path.join(FIXTURES, '*', pattern)))
    assert found, f'no {kind} fixtures'
    return found


@pytest.mark.parametrize('path', fixtures('imapd'), ids=os.path.basename)
def test_real_imapd_conf_round_trips_byte_for_byte(path):
    text = read(path)
    conf = parse_imapd(text, path)
    assert conf.render() == text
    assert conf.options, 'a real imapd.conf sets options'


@pytest.mark.parametrize('path', fixtures('cyrus'), ids=os.path.basename)
def test_real_cyrus_conf_round_trips_byte_for_byte(path):
    text = read(path)
    conf = parse_cyrus(text, path)
    assert conf.render() == text
    assert {e.section for e in conf.entries} >= {'START', 'SERVICES'}
    assert all(e.get('cmd') for e in conf.entries)


def test_debian_files_parse_to_the_values_cyrus_reads():
    imapd = parse_imapd(read(os.path.join(FIXTURES, 'debian12', 'imapd.conf')))
    assert imapd.get('configdirectory') == '/var/lib/cyrus'
    assert imapd.partitions() == {'default': '/var/spool/cyrus/mail', 'news': '/var/spool/cyrus/news'}
    assert murder_role(imapd) == 'standalone'
    cyrus = parse_cyrus(read(os.path.join(FIXTURES, 'debian12', 'cyrus.conf')))
    imap = cyrus.find('SERVICES', 'imap')
    assert imap.args == [('cmd', 'imapd -U 30', True), ('listen', 'imap', True), ('prefork', '0', False),
                         ('maxchild', '100', False)]
    assert cyrus.find('SERVICES', 'lmtpunix').get('listen') == '/run/cyrus/socket/lmtp'
    assert [e.name for e in cyrus.section('EVENTS')] == ['checkpoint', 'delprune', 'tlsprune', 'deleteprune',
                                                         'expungeprune']


@pytest.mark.parametrize('text, line, message', [
    ('configdirectory /var/lib/x\n', 1, 'invalid option name: expected "key: value"'),
    ('# c\nconfigdirectory:   \n', 2, 'empty value for option configdirectory'),
    ('a: 1\nb: 2\nA: 3\n', 3, 'option a set twice (first on line 1)'),
    ('bad.key: 1\n', 1, 'invalid option name: expected "key: value"'),
])
def test_imapd_syntax_errors_name_file_and_line(text, line, message):
    with pytest.raises(ConfigError) as info:
        parse_imapd(text, '/x/imapd.conf')
    assert [str(p) for p in info.value.problems] == [f'/x/imapd.conf:{line}: {message}']


@pytest.mark.parametrize('text, line, message', [
    ('SERVICES {\n  imap cmd="imapd listen=1:143\n}\n', 2, 'missing closing " in argument cmd'),
    ('SERVICES {\n  im-ap cmd="imapd"\n}\n', 2, "bad character '-' in name"),
    ('SERVICES {\n  imap cmd="imapd" listen\n}\n', 2, "bad character 'end of line' in argument"),
    ('SERVICES {\n  imap cmd="imapd" li-sten=1\n}\n', 2, "bad character '-' in argument"),
    ('SERVICES {\n  imap cmd="imapd -C /a/#b" listen=1:143\n}\n', 2, 'missing closing " in argument cmd'),
    ('SERVICES\n{\n}\n', 1, 'text outside a section: expected START, SERVICES, EVENTS or DAEMON followed by "{"'),
    ('\n\nSTART {\n  recover cmd="ctl_cyrusdb -r"\n', 3, 'section START is not closed with "}"'),
    ('START {\n} x\n', 2, 'text after the "}" closing section START'),
])
def test_cyrus_syntax_errors_name_file_and_line(text, line, message):
    with pytest.raises(ConfigError) as info:
        parse_cyrus(text, '/x/cyrus.conf')
    assert str(info.value.problems[0]) == f'/x/cyrus.conf:{line}: {message}'


@pytest.mark.parametrize('listen, parsed', [
    ('143', {'kind': 'inet', 'host': None, 'port': '143'}),
    ('imap', {'kind': 'inet', 'host': None, 'port': 'imap'}),
    ('198.51.100.121:143', {'kind': 'inet', 'host': '198.51.100.121', 'port': '143'}),
    ('[198.51.100.121]:imap', {'kind': 'inet', 'host': '198.51.100.121', 'port': 'imap'}),
    ('[2001:db8::121]:143', {'kind': 'inet', 'host': '2001:db8::121', 'port': '143'}),
    ('[2001:db8::121]', {'kind': 'inet', 'host': '2001:db8::121', 'port': None}),
    ('be1-svc.cyha.test:lmtp', {'kind': 'inet', 'host': 'be1-svc.cyha.test', 'port': 'lmtp'}),
    ('2001:db8::121', {'kind': 'inet', 'host': '2001:db8:', 'port': '121'}),
    ('/run/cyrus-ha/be1/lmtp', {'kind': 'unix', 'path': '/run/cyrus-ha/be1/lmtp'}),
])
def test_listen_is_split_like_master(listen, parsed):
    assert parse_listen(listen) == parsed


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


def test_murder_role_follows_from_the_keys():
    backend = parse_imapd('configdirectory: /c\nmupdate_server: m:3905\nproxyservers: proxy\n')
    frontend = parse_imapd('configdirectory: /c\nmupdate_server: m:3905\n')
    master = parse_cyrus('SERVICES {\n  mupdate cmd="/usr/lib/cyrus/bin/mupdate -m -C /c" listen=1.2.3.4:3905\n}\n')
    assert murder_role(backend) == 'backend'
    assert murder_role(frontend) == 'frontend'
    assert murder_role(parse_imapd('configdirectory: /c\n'), master) == 'mupdate'


def test_set_edits_in_place_and_keeps_everything_else():
    text = '# head\nconfigdirectory: /a  \n\nservername: x\n'
    conf = parse_imapd(text)
    assert conf.set('servername', 'x') is False
    assert conf.render() == text
    assert conf.set('configdirectory', '/b') is True
    assert conf.set('allowusermoves', True) is True
    assert conf.set('servername', None) is True
    assert conf.render() == '# head\nconfigdirectory: /b\n\nallowusermoves: yes\n'
    with pytest.raises(ValueError, match="invalid value for imapd.conf option 'x'"):
        conf.set('x', 'a\nb')


def test_renderers_produce_what_the_parsers_read_back():
    text = render_imapd({'configdirectory': '/c', 'admins': ['mupdate', 'proxy'], 'allowusermoves': True},
                        'Ansible managed')
    assert text == '# Ansible managed\nconfigdirectory: /c\nadmins: mupdate proxy\nallowusermoves: yes\n'
    conf = render_cyrus({'SERVICES': {'imap': {'cmd': 'imapd -C /c', 'listen': '[2001:db8::1]:143', 'prefork': 0}}})
    assert conf == 'SERVICES {\n  imap\tcmd="imapd -C /c" listen=[2001:db8::1]:143 prefork=0\n}\n'
    assert parse_cyrus(conf).find('SERVICES', 'imap').get('prefork') == '0'
    with pytest.raises(ValueError, match='cannot hold'):
        render_cyrus({'START': {'x': {'cmd': 'a # b'}}})


def _instance(name: str, addr: str, lock: str = None, sock: str = None):
    imapd = parse_imapd(f'configdirectory: /var/lib/cyrus-ha/{name}\npartition-default: /var/spool/cyrus-ha/{name}\n'
                        f'mboxname_lockpath: {lock or "/run/cyrus-ha/" + name + "/lock"}\n'
                        f'lmtpsocket: {sock or "/run/cyrus-ha/" + name + "/lmtp"}\n')
    cyrus = parse_cyrus(f'SERVICES {{\n  imap cmd="imapd" listen="{addr}:143"\n'
                        f'  lmtpunix cmd="lmtpd" listen="{sock or "/run/cyrus-ha/" + name + "/lmtp"}"\n}}\n')
    return imapd, cyrus


def test_cross_check_finds_shared_addresses_sockets_and_lock_directories():
    resolve = cyrusconf._resolve
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


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, CLI, *args], capture_output=True, text=True, check=False)


def test_cli_exit_codes_and_messages(tmp_path):
    good = tmp_path / 'cyrus.conf'
    good.write_text(GOOD_CYRUS)
    ok = run_cli('lint', '--kind', 'cyrus', '--bindir', 'none', '--imapd-conf', CONF, str(good))
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, '', '')
    bad = tmp_path / 'bad.conf'
    bad.write_text(GOOD_CYRUS.replace('198.51.100.121:imap', 'imap'))
    failed = run_cli('lint', '--kind', 'cyrus', '--bindir', 'none', '--imapd-conf', CONF, str(bad))
    assert failed.returncode == 1
    assert failed.stderr == (f'{bad}:5: SERVICES entry imap: listen=imap has no address: master would bind every '
                             'address; write ADDRESS:imap\n')
    wrong_c = run_cli('lint', '--kind', 'cyrus', '--bindir', 'none', '--imapd-conf', '/etc/imapd.conf', str(good))
    assert wrong_c.returncode == 1 and wrong_c.stderr.count('not this instance') == 4, wrong_c.stderr
    imapd = tmp_path / 'imapd.conf'
    imapd.write_text('configdirectory: /var/lib/cyrus-ha/be1\nmupdate_server: m\n')
    warned = run_cli('lint', '--kind', 'imapd', str(imapd))
    assert (warned.returncode, warned.stderr) == (0, f'{imapd}:2: warning: mupdate_server m has no port: '
                                                     'mupdate_port is read by nothing, write m:3905\n')
    imapd.write_text('configdirectory /x\n')
    broken = run_cli('lint', '--kind', 'imapd', str(imapd))
    assert (broken.returncode, broken.stderr) == (1, f'{imapd}:1: invalid option name: expected "key: value"\n'
                                                     f'{imapd}:0: configdirectory is not set: every instance needs '
                                                     'its own\n')
    missing = run_cli('lint', '--kind', 'imapd', str(tmp_path / 'nope'))
    assert missing.returncode == 1 and missing.stderr.startswith(f'{tmp_path / "nope"}:0: cannot read:')
    no_conf = run_cli('lint', '--kind', 'cyrus', str(good))
    assert (no_conf.returncode, no_conf.stderr) == (1, f'{good}:0: --imapd-conf is required with --kind cyrus\n')


def test_service_names_compare_as_ports_even_without_etc_services_entries():
    assert cyrusconf._resolve('198.51.100.121', 'lmtp') == [('198.51.100.121', 24)]
    assert cyrusconf._resolve('198.51.100.121', 'mupdate') == [('198.51.100.121', 3905)]
    assert cyrusconf._resolve(None, '143') == [('*', 143)]
    a = (parse_imapd('configdirectory: /a\n'), parse_cyrus('SERVICES {\n  lmtp cmd="lmtpd" listen="1.2.3.4:lmtp"\n}\n'))
    b = (parse_imapd('configdirectory: /b\n'), parse_cyrus('SERVICES {\n  lmtp cmd="lmtpd" listen="[1.2.3.4]:24"\n}\n'))
    assert cross_check({'a': a, 'b': b}) == [
        'a: lmtp listen=1.2.3.4:lmtp and b: lmtp listen=[1.2.3.4]:24 claim the same tcp 1.2.3.4:24']
