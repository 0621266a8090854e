# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.imap_check against a real Cyrus instance (`cyhaimap` on lab host be2, bound to
198.51.100.246), run by Ansible on another lab host (fe1) over the lab's bridge."""

from __future__ import annotations

import imaplib
import subprocess
import threading

import pytest

import cyha_imapserver
import cyha_tls
import labutil

pytestmark = pytest.mark.lab

HOST, NETNS, ADDRESS = cyha_imapserver.HOST, cyha_imapserver.NETNS, cyha_imapserver.ADDRESS
PASSWORDS = cyha_imapserver.PASSWORDS


def check(tmp_path, *, check_mode: bool = False, **args) -> dict:
    """Run cyrus.ha.imap_check on fe1 over SSH; return its result (failed from the exit code)."""
    return labutil.module_result('fe1', 'cyrus.ha.imap_check', args, tmp_path, check_mode=check_mode)


ALICE = {'host': ADDRESS, 'user': 'alice', 'password': PASSWORDS['alice']}


def count_in(mailbox: str) -> int:
    conn = imaplib.IMAP4(ADDRESS, 143, timeout=10)
    conn.login('alice', PASSWORDS['alice'])
    status, data = conn.select(mailbox, readonly=True)
    conn.logout()
    assert status == 'OK'
    return int(data[0])


def test_login_reports_the_greeting_and_hides_the_password(imap_server, tmp_path):
    result = check(tmp_path, **ALICE)
    assert not result['failed'] and not result['changed']
    assert result['greeting'].startswith('* OK') and result['attempts'] == 1 and result['messages'] == 0
    assert PASSWORDS['alice'] not in result['_output']
    refused = check(tmp_path, host=ADDRESS, user='alice', password='wrong')
    assert refused['failed'] and 'IMAP login as alice@198.51.100.246:143 failed after 1 attempt(s)' in refused['msg']


def test_append_then_verify_byte_for_byte(imap_server, tmp_path):
    predicted = check(tmp_path, check_mode=True, action='append', count=2, mailbox='user.alice.Drill', **ALICE)
    assert predicted['changed'] and predicted['canaries'] == [] and count_in('user.alice.Drill') == 0
    stored = check(tmp_path, action='append', count=3, tag='t1', mailbox='user.alice.Drill', **ALICE)
    assert stored['changed'] and len(stored['canaries']) == 3 and count_in('user.alice.Drill') == 3
    verified = check(tmp_path, action='verify', canaries=stored['canaries'], mailbox='user.alice.Drill', **ALICE)
    assert not verified['failed'] and not verified['changed']
    assert verified['found'] == 3 and verified['missing'] == [] and verified['mismatched'] == []
    again = check(tmp_path, check_mode=True, action='verify', canaries=stored['canaries'],
                  mailbox='user.alice.Drill', **ALICE)
    assert again['found'] == 3


def test_verify_fails_on_a_lost_or_changed_canary(imap_server, tmp_path):
    stored = check(tmp_path, action='append', count=2, tag='t2', **ALICE)['canaries']
    lost = dict(stored[0], message_id='<cyrus-ha-never-stored@canary.invalid>')
    changed = dict(stored[1], sha256='0' * 64)
    result = check(tmp_path, action='verify', canaries=[lost, changed], **ALICE)
    assert result['failed'] and result['msg'] == '1 of 2 canaries missing and 1 changed in INBOX of alice@198.51.100.246:143'
    assert result['missing'] == ['<cyrus-ha-never-stored@canary.invalid>']
    assert result['mismatched'][0]['message_id'] == stored[1]['message_id']
    report = check(tmp_path, action='verify', canaries=[lost], fail_on_loss=False, **ALICE)
    assert not report['failed'] and report['found'] == 0


def test_lmtp_delivery_lands_and_verifies(imap_server, tmp_path):
    before = count_in('INBOX')
    predicted = check(tmp_path, check_mode=True, action='deliver', host=ADDRESS, recipients=['alice'])
    assert predicted['changed'] and count_in('INBOX') == before
    delivered = check(tmp_path, action='deliver', host=ADDRESS, recipients=['alice'], count=2, tag='lmtp')
    assert delivered['changed'] and len(delivered['canaries']) == 2
    assert labutil.poll(lambda: count_in('INBOX') == before + 2, 10)
    verified = check(tmp_path, action='verify', canaries=delivered['canaries'], **ALICE)
    assert verified['found'] == 2 and not verified['failed']
    refused = check(tmp_path, action='deliver', host=ADDRESS, recipients=['nobody-here'])
    assert refused['failed'] and "refused every recipient" in refused['msg']


def test_login_waits_for_a_server_that_comes_back(imap_server, tmp_path):
    address = ['ip', '-n', NETNS, 'addr']
    subprocess.run(address + ['del', f'{ADDRESS}/24', 'dev', 'eth0'], check=True)
    # back after 8 s: the module's first attempts (SSH to fe1 and the module's start included) find it gone
    timer = threading.Timer(8.0, subprocess.run, [address + ['add', f'{ADDRESS}/24', 'dev', 'eth0']],
                            {'check': True})
    try:
        gone = check(tmp_path, wait=1.5, timeout=0.5, **ALICE)
        assert gone['failed'] and 'failed after' in gone['msg'] and gone['attempts'] >= 2
        timer.start()
        back = check(tmp_path, wait=30, timeout=1, **ALICE)
        assert not back['failed'] and back['attempts'] >= 2 and back['greeting'].startswith('* OK')
    finally:
        timer.join()
        subprocess.run(address + ['replace', f'{ADDRESS}/24', 'dev', 'eth0'], check=True)


def test_bad_input_is_refused_with_a_clear_message(imap_server, tmp_path):
    cases = [
        ({'host': ADDRESS, 'user': 'alice'}, 'action is login but all of the following are missing: password'),
        ({'host': ADDRESS, 'action': 'deliver'}, 'action is deliver but all of the following are missing: recipients'),
        (dict(ALICE, count=0, action='append'), 'count must be between 1 and 1000, not 0'),
        (dict(ALICE, tag='a b;c', action='append'), "tag 'a b;c' may hold only letters, digits, - and _"),
        (dict(ALICE, action='verify', canaries=[{'message_id': 'x'}]), 'canaries[0] needs message_id and sha256'),
        (dict(ALICE, action='verify', canaries=[]), 'canaries must not be empty'),
        (dict(ALICE, action='verify'), 'action is verify but all of the following are missing: canaries'),
        (dict(ALICE, host='no-such-host.cyha.invalid'), 'host no-such-host.cyha.invalid does not resolve'),
        (dict(ALICE, ssl=True, starttls=True), 'parameters are mutually exclusive: ssl|starttls'),
    ]
    for args, message in cases:
        result = check(tmp_path, **args)
        assert result['failed'] and message in result['msg'], (args, result.get('msg'))
        assert 'Traceback' not in result['_output'] and PASSWORDS['alice'] not in result['_output']


# ---------------------------------------------------------------------------------------------
# hostile pass on the real server: text beyond ASCII, numbers that are not finite, injected lines
# ---------------------------------------------------------------------------------------------

def test_a_non_ascii_password_logs_in_with_sasl_plain_and_a_non_ascii_mailbox_is_found(imap_server, tmp_path):
    cyha_imapserver.add_user('zoe', 'pässwört-ü')
    try:
        conn = imaplib.IMAP4(ADDRESS, 143, timeout=10)
        conn.login('cyrus', PASSWORDS['cyrus'])
        assert conn.create('user.zoe')[0] == 'OK' and conn.create('user.zoe.Entw&APw-rfe')[0] == 'OK'
        conn.logout()
        result = check(tmp_path, host=ADDRESS, user='zoe', password='pässwört-ü', mailbox='INBOX.Entwürfe')
        assert not result['failed'] and result['messages'] == 0, result['_output']
        assert 'pässwört-ü' not in result['_output']
        appended = check(tmp_path, host=ADDRESS, user='zoe', password='pässwört-ü', mailbox='INBOX.Entwürfe',
                         action='append', count=1)
        assert not appended['failed'], appended['_output']
        conn = imaplib.IMAP4(ADDRESS, 143, timeout=10)
        conn.login('cyrus', PASSWORDS['cyrus'])
        assert conn.setacl('user.zoe.Entw&APw-rfe', 'cyrus', 'lr')[0] == 'OK'
        assert conn.select('user.zoe.Entw&APw-rfe', readonly=True)[1] == [b'1']
        conn.logout()
        wrong = check(tmp_path, host=ADDRESS, user='zoe', password='pässwört-x')
        assert wrong['failed'] and 'failed after 1 attempt(s)' in wrong['msg'] and 'Traceback' not in wrong['_output']
    finally:
        conn = imaplib.IMAP4(ADDRESS, 143, timeout=10)
        conn.login('cyrus', PASSWORDS['cyrus'])
        conn.setacl('user.zoe', 'cyrus', 'lrswipkxtecda')
        conn.delete('user.zoe')
        conn.logout()
        cyha_imapserver.remove_user('zoe')


def test_hostile_numbers_and_lines_are_refused_before_the_first_packet(imap_server, tmp_path):
    cases = [
        (dict(ALICE, wait='inf'), 'wait must be a finite number from 0 to 86400, not inf'),
        (dict(ALICE, timeout='nan'), 'timeout must be a finite number above 0 up to 3600, not nan'),
        (dict(ALICE, mailbox='INBOX\r\nA9 DELETE INBOX.x'), 'mailbox must be non-empty text without control characters'),
        (dict(ALICE, action='append', tag='drillé'), "tag 'drillé' may hold only ASCII letters, digits, - and _"),
    ]   # ports, canaries, mail addresses: tests/unit/plugins/modules/test_imap_modules_hostile.py
    before = count_in('INBOX')
    for args, message in cases:
        result = check(tmp_path, **args)
        assert result['failed'] and message in result['msg'], (args, result.get('msg'))
        assert 'Traceback' not in result['_output'] and PASSWORDS['alice'] not in result['_output']
    assert count_in('INBOX') == before


# ---------------------------------------------------------------------------------------------
# TLS: the server's certificate checked against the site CA (validate_certs, ca_path)
# ---------------------------------------------------------------------------------------------

def test_imaps_and_starttls_log_in_with_the_certificate_checked_against_the_site_ca(imap_server, tmp_path):
    ca = cyha_tls.lab_ca_path()   # /var/lib is shared by the lab's hosts: fe1 reads the same file
    over_imaps = check(tmp_path, port=993, ssl=True, ca_path=ca, **ALICE)
    assert not over_imaps['failed'], over_imaps['msg'] if 'msg' in over_imaps else over_imaps
    assert over_imaps['greeting'].startswith('* OK') and over_imaps['attempts'] == 1
    over_starttls = check(tmp_path, starttls=True, ca_path=ca, **ALICE)
    assert not over_starttls['failed'] and over_starttls['attempts'] == 1
    assert PASSWORDS['alice'] not in over_imaps['_output'] + over_starttls['_output']


def test_a_certificate_from_another_ca_is_refused_at_once_naming_the_host_and_the_cause(imap_server, tmp_path):
    other = tmp_path / 'other-ca.pem'
    other.write_text(cyha_tls.Authority('not the site CA').pem)
    for extra in (dict(port=993, ssl=True), dict(starttls=True)):
        refused = check(tmp_path, ca_path=str(other), wait=30, **extra, **ALICE)
        assert refused['failed'], refused
        assert (f'the server certificate of {ADDRESS} was refused: unable to get local issuer certificate '
                f'(trusting the CA in {other})') in refused['msg']
        assert refused['attempts'] == 1    # not retried for `wait` seconds: it would be refused again
        assert PASSWORDS['alice'] not in refused['_output']
    # the system trust store does not know the lab CA either
    untrusted = check(tmp_path, port=993, ssl=True, **ALICE)
    assert untrusted['failed'] and "(trusting the system's trust store)" in untrusted['msg']
    # the site CA's certificate, for another name
    wrong_name = check(tmp_path, port=cyha_imapserver.WRONG_NAME_PORT, ssl=True, ca_path=cyha_tls.lab_ca_path(),
                       **ALICE)
    assert wrong_name['failed'] and (f"the server certificate of {ADDRESS} was refused: IP address mismatch, "
                                     f"certificate is not valid for '{ADDRESS}'") in wrong_name['msg'], wrong_name['msg']
    unchecked = check(tmp_path, port=993, ssl=True, validate_certs=False, ca_path=str(other), **ALICE)
    assert not unchecked['failed'] and unchecked['greeting'].startswith('* OK')


@pytest.mark.parametrize('ca_path, message', [
    ('/nonexistent/ca.pem', 'ca_path /nonexistent/ca.pem cannot be used as a CA file: No such file or directory'),
    ('/etc/hostname', 'ca_path /etc/hostname cannot be used as a CA file'),
])
def test_a_ca_path_that_is_no_ca_file_fails_before_the_first_packet(imap_server, tmp_path, ca_path, message):
    result = check(tmp_path, port=993, ssl=True, ca_path=ca_path, **ALICE)
    assert result['failed'] and message in result['msg'], result.get('msg')
    assert 'Traceback' not in result['_output']
