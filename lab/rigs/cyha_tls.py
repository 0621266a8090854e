# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Certificates for tests, made on the controller with the `cryptography` package (ansible-core's own
dependency): a CA, server certificates for any names and any validity (expired, not yet valid), keys
that do not match, chains with intermediates. The lab's own CA (lab/lab.py, openssl CLI) lives in
$CYHA_LAB_DIR/tls; `lab_ca()` and `lab_pair()` read it."""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LAB_DIR = os.environ.get('CYHA_LAB_DIR', '/var/lib/cyha-lab')
NOW = datetime.datetime.now(datetime.timezone.utc)


def lab_ca_path() -> str:
    return os.path.join(LAB_DIR, 'tls', 'ca.pem')


def lab_ca() -> str:
    with open(lab_ca_path(), encoding='ascii') as handle:
        return handle.read()


def lab_authority() -> Authority:
    """The lab's CA, to issue more certificates it signs."""
    return Authority.from_files(lab_ca_path(), os.path.join(LAB_DIR, 'tls', 'ca.key'))


def lab_pair(host: str) -> tuple[str, str]:
    """(certificate, key) PEM the lab made for host's instance."""
    out = []
    for suffix in ('pem', 'key'):
        with open(os.path.join(LAB_DIR, 'tls', f'{host}.{suffix}'), encoding='ascii') as handle:
            out.append(handle.read())
    return out[0], out[1]


class Authority:
    """A CA (self-signed, or an intermediate under a parent) that issues certificates as PEM text."""

    def __init__(self, name: str = 'cyrus.ha test CA', parent: 'Authority | None' = None):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_key = parent.key if parent else self.key
        builder = (x509.CertificateBuilder().subject_name(self.name)
                   .issuer_name(parent.name if parent else self.name)
                   .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False))
        if parent:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), critical=False)
        self.cert = builder.sign(issuer_key, hashes.SHA256())

    @classmethod
    def from_files(cls, cert_path: str, key_path: str) -> 'Authority':
        """An existing CA (the lab's: lab_authority())."""
        self = cls.__new__(cls)
        with open(cert_path, 'rb') as handle:
            self.cert = x509.load_pem_x509_certificate(handle.read())
        with open(key_path, 'rb') as handle:
            self.key = serialization.load_pem_private_key(handle.read(), password=None)
        self.name = self.cert.subject
        return self

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode('ascii')

    def issue(self, names: list[str], not_before: datetime.datetime | None = None,
              not_after: datetime.datetime | None = None, key=None) -> tuple[str, str]:
        """(certificate, key) PEM for names (host names or IP addresses), valid from not_before to
        not_after (default: yesterday to a year ahead)."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        sans = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else 'none')]))
                   .issuer_name(self.name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
                   .not_valid_after(not_after or NOW + datetime.timedelta(days=365))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return (cert.public_bytes(serialization.Encoding.PEM).decode('ascii'),
                key_pem(key))


def new_key() -> str:
    return key_pem(ec.generate_private_key(ec.SECP256R1()))


def key_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode('ascii')


def days(n: float) -> datetime.datetime:
    return NOW + datetime.timedelta(days=n)
