# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property tests of cyrusconf (and cyrusconf_lint.check_listen): any text round-trips, rendered data parses back to itself."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.cyrus.ha.plugins.module_utils.cyrusconf import (
    parse_cyrus, parse_cyrus_lines, parse_imapd, parse_imapd_lines, parse_listen, render_cyrus, render_imapd)
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusconf_lint import check_listen

# Lines made of the characters that matter to both grammars, plus anything else.
SPECIAL = st.sampled_from(list(' \t\r\f\v#:="{}[]/-_@\\')
                          + ['START {', 'SERVICES {', '}', 'key: ', 'cmd="x" ', 'listen=1:2', '\u2028', '\x0b'])
LINE = st.lists(st.one_of(SPECIAL, st.text(max_size=6)), max_size=8).map(''.join)
TEXT = st.builds(lambda lines, end: '\n'.join(lines) + end, st.lists(LINE, max_size=15), st.sampled_from(['', '\n']))

KEY = st.from_regex(r'[a-z][a-z0-9_-]{0,20}', fullmatch=True)
VALUE = st.text(st.characters(blacklist_categories=('Cs', 'Cc'), blacklist_characters='\x85\u2028\u2029'),
                min_size=1, max_size=30).filter(lambda v: v.strip(' \t\n\r\f\v') == v and v)
NAME = st.from_regex(r'[A-Za-z0-9]{1,12}', fullmatch=True)
ARG_VALUE = st.text(st.characters(blacklist_categories=('Cs', 'Cc'), blacklist_characters='"#\x85\u2028\u2029'),
                    max_size=20)
ARGS = st.dictionaries(NAME, ARG_VALUE, min_size=1, max_size=4)
SECTIONS = st.dictionaries(st.sampled_from(['START', 'SERVICES', 'EVENTS', 'DAEMON']),
                           st.dictionaries(NAME, ARGS, max_size=4), max_size=4)


@settings(max_examples=400)
@given(TEXT)
def test_any_text_renders_back_byte_for_byte(text):
    assert parse_imapd_lines(text)[0].render() == text
    assert parse_cyrus_lines(text)[0].render() == text


@given(st.dictionaries(KEY, VALUE, max_size=12), st.text(max_size=40))
def test_rendered_imapd_parses_back_to_the_same_options(options, header):
    text = render_imapd(options, header.replace('\r', ''))
    conf = parse_imapd(text)
    assert conf.options == options
    assert conf.render() == text


@given(st.dictionaries(KEY, VALUE, max_size=8), KEY, st.one_of(st.none(), VALUE))
def test_set_changes_only_its_key(options, key, value):
    text = render_imapd(options, 'head')
    conf = parse_imapd(text)
    conf.set(key, value)
    again = parse_imapd(conf.render())
    expected = dict(options)
    if value is None:
        expected.pop(key, None)
    else:
        expected[key] = value
    assert again.options == expected
    assert [line.raw for line in again.lines if line.kind == 'comment'] == ['# head\n']


@given(SECTIONS)
def test_rendered_cyrus_conf_parses_back_to_the_same_entries(sections):
    text = render_cyrus(sections)
    conf = parse_cyrus(text)
    got = {}
    for entry in conf.entries:
        got.setdefault(entry.section, {})[entry.name] = {k: v for k, v, dummy in entry.args}
    assert got == {s: e for s, e in sections.items() if e}
    assert conf.render() == text


PORT = st.integers(1, 65535)
V4 = st.ip_addresses(v=4).filter(lambda a: str(a) != '0.0.0.0')
V6 = st.ip_addresses(v=6).filter(lambda a: a != ipaddress.IPv6Address('::'))


@given(V4, PORT)
def test_ipv4_listen_with_port_is_accepted_and_split(address, port):
    listen = f'{address}:{port}'
    assert parse_listen(listen) == {'kind': 'inet', 'host': str(address), 'port': str(port)}
    assert check_listen(listen) == []
    assert check_listen(str(address)) == [f'listen={address} is read as a port with no address: '
                                          f'write {address}:PORT']


@given(V6, PORT)
def test_ipv6_listen_needs_brackets_and_a_port(address, port):
    assert check_listen(f'[{address}]:{port}') == []
    assert parse_listen(f'[{address}]:{port}')['host'] == str(address)
    assert check_listen(f'{address}:{port}') == [f'listen={address}:{port}: write an IPv6 address in brackets, '
                                                 f'[{address}]:PORT']
    assert check_listen(f'[{address}]') == [f'listen=[{address}] has no port: write [{address}]:PORT']
