# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrustls: every check a client makes, on real certificates (made with `cryptography`), and the files
it writes: one key+chain file swapped atomically, nothing written on bad input."""

from __future__ import annotations

import grp
import os
import pwd
import ssl
import stat
import sys

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import cyrustls

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', 'lab', 'rigs'))
import cyha_tls  # noqa: E402  pylint: disable=wrong-import-position

NAMES = ['be1-svc.example.org', '198.51.100.121']
ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


@pytest.fixture(scope='module')
def ca():
    return cyha_tls.Authority('unit CA')


@pytest.fixture(scope='module')
def good(ca):
    return ca.issue(NAMES)


def params(tmp_path, cert, key, ca_pem, **extra):
    out = dict(path=str(tmp_path / 'tls.pem'), ca_path=str(tmp_path / 'ca.pem'), certificate=cert, private_key=key,
               ca_certificate=ca_pem, names=NAMES, owner=ME, group=MY_GROUP, mode='0640')
    out.update(extra)
    return out


def test_install_writes_key_then_chain_and_the_ca_then_nothing_then_check_mode_predicts(tmp_path, ca, good):
    cert, key = good
    first = cyrustls.install(params(tmp_path, cert, key, ca.pem), check_mode=False)
    assert first['changed']
    assert first['updated'] == {str(tmp_path / 'tls.pem'): ['created'], str(tmp_path / 'ca.pem'): ['created']}
    text = (tmp_path / 'tls.pem').read_text()
    assert text.index('PRIVATE KEY') < text.index('BEGIN CERTIFICATE')
    assert stat.S_IMODE(os.stat(tmp_path / 'tls.pem').st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / 'ca.pem').st_mode) == 0o644
    # the file is what a TLS server loads as both certificate and key
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(tmp_path / 'tls.pem'), str(tmp_path / 'tls.pem'))
    assert first['certificate']['names'] == ['DNS:be1-svc.example.org', 'IP:198.51.100.121']
    assert 'PRIVATE' not in repr(first)
    again = cyrustls.install(params(tmp_path, cert, key, ca.pem), check_mode=False)
    assert not again['changed'] and again['updated'] == {}
    new_cert, new_key = ca.issue(NAMES)
    before = (tmp_path / 'tls.pem').read_text()
    predicted = cyrustls.install(params(tmp_path, new_cert, new_key, ca.pem), check_mode=True)
    assert predicted['changed'] and predicted['updated'] == {str(tmp_path / 'tls.pem'): ['content']}
    assert (tmp_path / 'tls.pem').read_text() == before
    os.chmod(tmp_path / 'tls.pem', 0o600)
    assert cyrustls.install(params(tmp_path, cert, key, ca.pem), check_mode=True)['updated'] == {
        str(tmp_path / 'tls.pem'): ['mode']}


def expired(ca):
    return ca.issue(NAMES, not_before=cyha_tls.days(-30), not_after=cyha_tls.days(-1))


@pytest.mark.parametrize('case, message', [
    ('mismatch', 'private_key does not belong to the certificate (its public key differs)'),
    ('expired', 'expired on'),
    ('future', 'is not valid before'),
    ('names', 'does not cover 198.51.100.121 (its subjectAltNames: DNS:be1-svc.example.org)'),
    ('other_ca', 'a client expecting be1-svc.example.org would refuse it: unable to get local issuer certificate '
                 '(the certificate is not signed by the CA given in ca_certificate'),
    ('wildcard_too_deep', 'does not cover be1-svc.example.org'),
    ('key_in_cert', 'certificate holds a private key'),
    ('path_not_pem', 'certificate holds no PEM block'),
    ('empty_key', 'private_key is empty'),
    ('two_keys', 'private_key must hold exactly one PEM private key'),
    ('encrypted', 'private_key is encrypted'),
    ('bad_base64', 'a certificate block is not valid base64 PEM'),
    ('ca_path_without_ca', 'ca_path is set but ca_certificate is not'),
    ('world_mode', 'would let every user read the private key'),
    ('relative', 'must be an absolute path in an existing directory'),
    ('no_group', 'group cyrus-ha-no-such-group is not a group on this host'),
])
def test_bad_input_names_the_cause_and_leaves_the_old_files(tmp_path, ca, good, case, message):
    cert, key = good
    cyrustls.install(params(tmp_path, cert, key, ca.pem), check_mode=False)
    before = {p: (tmp_path / p).read_bytes() for p in ('tls.pem', 'ca.pem')}
    extra = {}
    if case == 'mismatch':
        extra = dict(private_key=cyha_tls.new_key())
    elif case == 'expired':
        extra = dict(zip(('certificate', 'private_key'), expired(ca)))
    elif case == 'future':
        extra = dict(zip(('certificate', 'private_key'), ca.issue(NAMES, not_before=cyha_tls.days(2))))
    elif case == 'names':
        extra = dict(zip(('certificate', 'private_key'), ca.issue(NAMES[:1])))
    elif case == 'other_ca':
        extra = dict(zip(('certificate', 'private_key'), cyha_tls.Authority('another CA').issue(NAMES)))
    elif case == 'wildcard_too_deep':
        extra = dict(zip(('certificate', 'private_key'), ca.issue(['*.org', '198.51.100.121'])))
    elif case == 'key_in_cert':
        extra = dict(certificate=cert + key)
    elif case == 'path_not_pem':
        extra = dict(certificate='/etc/ssl/certs/be1.pem')
    elif case == 'empty_key':
        extra = dict(private_key='  ')
    elif case == 'two_keys':
        extra = dict(private_key=key + cyha_tls.new_key())
    elif case == 'encrypted':
        extra = dict(private_key=key.replace('PRIVATE KEY', 'ENCRYPTED PRIVATE KEY'))
    elif case == 'bad_base64':
        lines = cert.splitlines()
        lines[2] = '!!!!' + lines[2][4:]
        extra = dict(certificate='\n'.join(lines) + '\n')
    elif case == 'ca_path_without_ca':
        extra = dict(ca_certificate=None)
    elif case == 'world_mode':
        extra = dict(mode='0644')
    elif case == 'relative':
        extra = dict(path='tls.pem')
    elif case == 'no_group':
        extra = dict(group='cyrus-ha-no-such-group')
    with pytest.raises(cyrustls.TlsError) as info:
        cyrustls.install(params(tmp_path, cert, key, ca.pem, **extra), check_mode=False)
    assert message in str(info.value)
    assert {p: (tmp_path / p).read_bytes() for p in ('tls.pem', 'ca.pem')} == before
    assert sorted(os.listdir(tmp_path)) == ['ca.pem', 'tls.pem']   # no temp file or directory left


def test_an_intermediate_chain_is_accepted_only_with_the_intermediate(tmp_path, ca):
    middle = cyha_tls.Authority('unit intermediate', parent=ca)
    cert, key = middle.issue(NAMES)
    with pytest.raises(cyrustls.TlsError, match='an intermediate certificate is missing'):
        cyrustls.install(params(tmp_path, cert, key, ca.pem), check_mode=False)
    result = cyrustls.install(params(tmp_path, cert + middle.pem, key, ca.pem), check_mode=False)
    assert result['changed'] and result['certificate']['issuer'] == 'commonName=unit intermediate'


def test_a_wildcard_covers_one_label_only():
    assert cyrustls.covers('*.example.org', 'be1.example.org')
    assert not cyrustls.covers('*.example.org', 'a.be1.example.org')
    assert not cyrustls.covers('*.example.org', 'example.org')
    assert not cyrustls.covers('*.org', 'example.org')
    assert cyrustls.covers('BE1.Example.org.', 'be1.example.ORG')


def test_a_symlink_or_directory_in_place_of_the_file_is_refused(tmp_path, ca, good):
    cert, key = good
    os.symlink('/etc/passwd', tmp_path / 'tls.pem')
    with pytest.raises(cyrustls.TlsError, match='is not a regular file'):
        cyrustls.install(params(tmp_path, cert, key, ca.pem), check_mode=False)
    assert os.path.islink(tmp_path / 'tls.pem')


def test_without_a_ca_the_system_trust_store_decides(tmp_path, ca, good):
    cert, key = good
    with pytest.raises(cyrustls.TlsError, match='no ca_certificate was given and the system trust store does not know'):
        cyrustls.install(params(tmp_path, cert, key, None, ca_path=None), check_mode=False)


def test_check_mode_on_a_first_deployment_predicts_the_files_in_a_directory_not_made_yet(tmp_path, ca, good):
    cert, key = good
    missing = tmp_path / 'be3'      # the role makes the instance's directory first in a real run
    wanted = params(tmp_path, cert, key, ca.pem, path=str(missing / 'tls.pem'), ca_path=str(missing / 'ca.pem'))
    result = cyrustls.install(wanted, check_mode=True)
    assert result['changed'] is True and result['updated'] == {str(missing / 'tls.pem'): ['created'],
                                                               str(missing / 'ca.pem'): ['created']}
    assert not missing.exists() and sorted(os.listdir(tmp_path)) == []
    with pytest.raises(cyrustls.TlsError) as caught:
        cyrustls.install(wanted, check_mode=False)
    assert str(caught.value) == f'path {missing}/tls.pem must be an absolute path in an existing directory'
