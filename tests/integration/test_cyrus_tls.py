# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.cyrus_tls run by Ansible on a lab host: written, then unchanged, then check mode predicts
and writes nothing, then each bad input fails with its message and the files stay as they were.
Cyrus serving what it writes is test_murder's part."""

from __future__ import annotations

import grp
import os
import shutil
import ssl
import stat
import tempfile

import pytest

import cyha_tls
import labutil

pytestmark = pytest.mark.lab

HOST = 'fe1'
NAMES = ['tls-test.cyha.test', '198.51.100.247']


@pytest.fixture(scope='module')
def site_ca(lab):
    return cyha_tls.lab_authority()


@pytest.fixture
def target(lab):
    """A directory the lab host writes to (/var/tmp is shared by the lab's hosts)."""
    directory = tempfile.mkdtemp(prefix='cyha-tls-', dir='/var/tmp')
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def tls(tmp_path, directory, *, check_mode=False, **args):
    base = dict(path=os.path.join(directory, 'tls.pem'), ca_path=os.path.join(directory, 'ca.pem'),
                ca_certificate=cyha_tls.lab_ca(), names=NAMES, group='mail')
    return labutil.module_result(HOST, 'cyrus.ha.cyrus_tls', dict(base, **args), tmp_path, check_mode=check_mode)


def files(directory):
    out = {}
    for name in sorted(os.listdir(directory)):
        st = os.stat(os.path.join(directory, name))
        with open(os.path.join(directory, name), 'rb') as handle:
            out[name] = (handle.read(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


def test_written_then_unchanged_then_check_mode_predicts_a_renewal(site_ca, target, tmp_path):
    cert, key = site_ca.issue(NAMES)
    first = tls(tmp_path, target, certificate=cert, private_key=key)
    assert not first['failed'] and first['changed'], first['_output']
    assert first['updated'] == {os.path.join(target, 'tls.pem'): ['created'], os.path.join(target, 'ca.pem'): ['created']}
    assert first['certificate']['names'] == ['DNS:tls-test.cyha.test', 'IP:198.51.100.247']
    assert key.split('\n')[1] not in first['_output']          # the key never appears in what Ansible prints
    written = files(target)
    mail = grp.getgrnam('mail').gr_gid
    assert written['tls.pem'][1:] == (0o640, 0, mail) and written['ca.pem'][1:] == (0o644, 0, mail)
    assert written['tls.pem'][0].decode() == key.strip() + '\n' + cert.strip() + '\n'
    # what the module wrote is what a TLS server loads as both tls_server_cert and tls_server_key
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(os.path.join(target, 'tls.pem'))

    again = tls(tmp_path, target, certificate=cert, private_key=key)
    assert not again['failed'] and not again['changed'] and again['updated'] == {}

    renewed_cert, renewed_key = site_ca.issue(NAMES)
    predicted = tls(tmp_path, target, check_mode=True, certificate=renewed_cert, private_key=renewed_key)
    assert not predicted['failed'] and predicted['changed']
    assert predicted['updated'] == {os.path.join(target, 'tls.pem'): ['content']}
    assert files(target) == written
    renewed = tls(tmp_path, target, certificate=renewed_cert, private_key=renewed_key)
    assert renewed['changed'] and renewed['updated'] == predicted['updated']
    assert renewed['certificate']['sha256'] != first['certificate']['sha256']


def bad_inputs(site_ca):
    cert, key = site_ca.issue(NAMES)
    expired_cert, expired_key = site_ca.issue(NAMES, not_before=cyha_tls.days(-60), not_after=cyha_tls.days(-2))
    other_cert, other_key = cyha_tls.Authority('another CA').issue(NAMES)
    short_cert, short_key = site_ca.issue(NAMES[:1])
    return [
        ('key of another certificate', dict(certificate=cert, private_key=cyha_tls.new_key()),
         'private_key does not belong to the certificate (its public key differs); nothing was changed'),
        ('expired', dict(certificate=expired_cert, private_key=expired_key),
         'certificate commonName=tls-test.cyha.test expired on'),
        ('names not covered', dict(certificate=short_cert, private_key=short_key),
         'certificate commonName=tls-test.cyha.test does not cover 198.51.100.247 '
         '(its subjectAltNames: DNS:tls-test.cyha.test)'),
        ('another CA', dict(certificate=other_cert, private_key=other_key),
         'a client expecting tls-test.cyha.test would refuse it: unable to get local issuer certificate'),
        ('a path instead of PEM', dict(certificate='/etc/ssl/certs/tls-test.pem', private_key=key),
         'certificate holds no PEM block'),
        ('key in the certificate', dict(certificate=cert + key, private_key=key),
         'certificate holds a private key: give the key in private_key only'),
        ('world-readable mode', dict(certificate=cert, private_key=key, mode='0644'),
         'mode 0644 would let every user read the private key'),
        ('no such group', dict(certificate=cert, private_key=key, group='cyha-nogroup'),
         'group cyha-nogroup is not a group on this host'),
    ]


def test_each_bad_input_fails_with_its_cause_and_changes_nothing(site_ca, target, tmp_path):
    cert, key = site_ca.issue(NAMES)
    assert tls(tmp_path, target, certificate=cert, private_key=key)['changed']
    before = files(target)
    for label, args, message in bad_inputs(site_ca):
        result = tls(tmp_path, target, **args)
        assert result['failed'], label
        assert result['msg'].startswith(os.path.join(target, 'tls.pem') + ': ') and message in result['msg'], \
            (label, result['msg'])
        assert 'Traceback' not in result['_output'], label
        assert args['private_key'].split('\n')[1] not in result['_output'], label
        assert files(target) == before, label      # nothing written, no temp file left
