# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrusconf (the formats): round trips of real files, syntax errors with file and line, listen=, edits,
renderers, the murder role. The checks are test_cyrusconf_lint.py, the CLI tests/unit/roles/test_cyrusconf_cli.py."""

from __future__ import annotations

import glob
import os

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils.cyrusconf import (
    ConfigError, murder_role, parse_cyrus, parse_imapd, parse_listen, render_cyrus, render_imapd)

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, 'fixtures', 'cyrus')


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
