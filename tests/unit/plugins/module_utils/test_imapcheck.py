# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import email

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import imapcheck


def test_canary_is_a_crlf_message_with_a_unique_message_id():
    first_id, first = imapcheck.make_canary('drill-1', 0, 256)
    second_id, second = imapcheck.make_canary('drill-1', 0, 256)
    assert first_id != second_id and first != second
    assert b'\n' not in first.replace(b'\r\n', b'')
    parsed = email.message_from_bytes(first)
    assert parsed['Message-ID'] == first_id and parsed['X-Cyha-Canary'] == 'drill-1 0'
    assert first_id.startswith('<cyha-drill-1-0-') and first_id.endswith('@canary.invalid>')
    assert all(len(line) <= 78 for line in first.split(b'\r\n'))


@pytest.mark.parametrize('canaries, problem', [
    ([], ''),
    ([{'message_id': '<a>', 'sha256': 'x'}], ''),
    ([{'message_id': '<a>'}], 'canaries[0] needs message_id and sha256'),
    ([{'message_id': '<a>', 'sha256': 'x'}, 'junk'], 'canaries[1] needs message_id and sha256'),
])
def test_canaries_valid(canaries, problem):
    assert imapcheck.canaries_valid(canaries).startswith(problem) and bool(problem) == bool(imapcheck.canaries_valid(canaries))


def test_quote_escapes_backslash_and_quote():
    assert imapcheck._quote('a"b\\c') == '"a\\"b\\\\c"'


class FakeImap:
    """Stands in for the server's copies of messages to reach verify's matching rules."""

    copies: dict = {}

    def __init__(self, *args):
        self.greeting, self.login_seconds, self.attempts = '* OK fake', 0.0, 1

    def connect(self, wait=0.0):
        return None

    def select(self, mailbox, readonly=True):
        return 0

    def find(self, message_id):
        return self.copies.get(message_id, [])

    def close(self):
        return None

    def where(self):
        return 'alice@fake:143'


def test_verify_accepts_a_delivered_copy_that_ends_with_the_canary(monkeypatch):
    message_id, message = imapcheck.make_canary('t', 0, 64)
    other_id, other = imapcheck.make_canary('t', 1, 64)
    FakeImap.copies = {message_id: [b'Return-Path: <x>\r\nReceived: by lmtp\r\n' + message],
                       other_id: [other, other]}
    monkeypatch.setattr(imapcheck, 'Imap', FakeImap)
    canaries = [{'message_id': message_id, 'sha256': imapcheck.sha256(message), 'size': len(message)},
                {'message_id': other_id, 'sha256': imapcheck.sha256(other), 'size': len(other)}]
    params = {'action': 'verify', 'host': 'fake', 'port': 143, 'user': 'alice', 'password': 'p', 'ssl': False,
              'starttls': False, 'timeout': 1, 'wait': 0, 'mailbox': 'INBOX', 'canaries': canaries,
              'fail_on_loss': True}
    result = imapcheck.run_check(params)
    assert result['found'] == 2 and result['duplicated'] == [other_id] and result['missing'] == []
