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
    assert parsed['Message-ID'] == first_id and parsed['X-Cyrus-HA-Canary'] == 'drill-1 0'
    assert first_id.startswith('<cyrus-ha-drill-1-0-') and first_id.endswith('@canary.invalid>')
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

    def connect(self, wait=0.0, select=None):
        return 0 if select is not None else None

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


DELIVER = {'host': 'fe1', 'lmtp_host': None, 'lmtp_port': 24, 'sender': 's@x', 'recipients': ['alice'],
           'timeout': 1, 'retry_interval': 1.0}


def _answers(monkeypatch, answers):
    """lmtp_deliver answering from a list: an exception is raised, anything else is an acceptance."""
    sent = []

    def fake(host, port, sender, recipients, message, timeout):
        sent.append(message)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return {'accepted': recipients}

    monkeypatch.setattr(imapcheck, 'lmtp_deliver', fake)
    return sent


def _refusal(code):
    return imapcheck.CheckError(f'LMTP delivery to fe1:24 failed: ({code}, x)', code=code,
                                temporary=imapcheck._temporary(code))


def test_a_queued_delivery_retries_the_same_message_until_accepted(monkeypatch):
    sent = _answers(monkeypatch, [_refusal(451), _refusal(None), 'ok'])
    naps = []
    out = imapcheck.deliver_queued(dict(DELIVER, retry_for=60), b'the message', sleep=naps.append)
    assert out['attempts'] == 3 and out['first_refusal'] == 'LMTP delivery to fe1:24 failed: (451, x)'
    assert sent == [b'the message'] * 3 and naps == [1.0, 1.0]


def test_a_permanent_refusal_is_not_retried(monkeypatch):
    _answers(monkeypatch, [_refusal(451), _refusal(550)])
    with pytest.raises(imapcheck.CheckError) as caught:
        imapcheck.deliver_queued(dict(DELIVER, retry_for=60), b'm', sleep=lambda s: None)
    assert caught.value.msg == 'LMTP delivery to fe1:24 failed: (550, x) (after 2 attempts in 0.0 s)'
    assert caught.value.details['attempts'] == 2 and caught.value.details['code'] == 550


def test_without_retry_one_temporary_refusal_fails(monkeypatch):
    _answers(monkeypatch, [_refusal(451)])
    with pytest.raises(imapcheck.CheckError) as caught:
        imapcheck.deliver_queued(dict(DELIVER, retry_for=0), b'm', sleep=lambda s: None)
    assert caught.value.msg == 'LMTP delivery to fe1:24 failed: (451, x)' and caught.value.details['temporary']


@pytest.mark.parametrize('code, temporary', [(None, True), (421, True), (451, True), (550, False), (554, False)])
def test_what_an_mta_keeps_queued(code, temporary):
    assert imapcheck._temporary(code) is temporary


def test_login_with_wait_retries_a_select_the_frontend_cannot_proxy_yet(monkeypatch):
    """Through a Murder frontend the login may succeed while the backend is still coming up: the SELECT
    answers NO "Server(s) unavailable", and the wait covers it."""
    answers = [('NO', [b'Server(s) unavailable to complete operation']), ('OK', [b'7'])]

    class Conn:
        def select(self, mailbox, readonly=True):
            return answers.pop(0)

        def logout(self):
            pass
    imap = imapcheck.Imap('198.51.100.111', 143, 'alice', 'secret', False, False, 5)

    def login_once():
        imap.conn = Conn()
    monkeypatch.setattr(imap, '_login_once', login_once)
    monkeypatch.setattr(imapcheck.time, 'sleep', lambda seconds: None)
    assert imap.connect(wait=10, select='INBOX') == 7
    assert imap.attempts == 2 and answers == []


def test_login_without_wait_reports_the_select_refusal(monkeypatch):
    class Conn:
        def select(self, mailbox, readonly=True):
            return 'NO', [b'Server(s) unavailable to complete operation']

        def logout(self):
            pass
    imap = imapcheck.Imap('198.51.100.111', 143, 'alice', 'secret', False, False, 5)
    monkeypatch.setattr(imap, '_login_once', lambda: setattr(imap, 'conn', Conn()))
    with pytest.raises(imapcheck.CheckError) as caught:
        imap.connect(wait=0, select='INBOX')
    assert 'failed after 1 attempt(s)' in caught.value.msg and 'Server(s) unavailable' in caught.value.msg


def test_the_tls_context_checks_chain_and_host_name_unless_told_not_to(tmp_path):
    import ssl
    checked = imapcheck.tls_context()
    assert checked.verify_mode == ssl.CERT_REQUIRED and checked.check_hostname
    unchecked = imapcheck.tls_context(validate_certs=False, ca_path='/nonexistent')
    assert unchecked.verify_mode == ssl.CERT_NONE and not unchecked.check_hostname
    with pytest.raises(imapcheck.CheckError, match='ca_path /nonexistent/ca.pem cannot be used as a CA file: No such file'):
        imapcheck.tls_context(ca_path='/nonexistent/ca.pem')
    (tmp_path / 'not-a-ca.pem').write_text('hello\n')
    with pytest.raises(imapcheck.CheckError, match='cannot be used as a CA file'):
        imapcheck.check_session({'host': 'h', 'ca_path': str(tmp_path / 'not-a-ca.pem')})
