# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An instance's TLS files: a server certificate and its key, checked the way a client will check
them before anything is written, then installed atomically.

The key and the certificate chain go into ONE file (key first, then the chain), so that a
replacement swaps both at once: Cyrus reads ``tls_server_cert`` and ``tls_server_key`` from the
same path, and no connection ever sees a new key beside an old certificate. The CA that signed it
(the site CA: frontends verify backends with it, clients of the collection with ``ca_path``) is
written beside it. Python stdlib only (the ``ssl`` module does every check through OpenSSL).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import grp
import hashlib
import ipaddress
import os
import pwd
import re
import ssl
import stat
import tempfile
import time

PEM_BLOCK = re.compile(r'-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----', re.S)
KEY_KINDS = ('PRIVATE KEY', 'EC PRIVATE KEY', 'RSA PRIVATE KEY')
MAX_PEM = 1024 * 1024
# Hand-shake rounds of the in-memory check (a TLS 1.3 handshake needs 2 or 3).
ROUNDS = 10


class TlsError(Exception):
    """A certificate, key or CA that would not work; the message names the object and the cause."""


def pem_blocks(text: str, what: str) -> list[tuple[str, str]]:
    """The PEM blocks of text as (label, whole block); TlsError when there are none or text is not PEM."""
    if not isinstance(text, str) or not text.strip():
        raise TlsError(f'{what} is empty')
    if len(text) > MAX_PEM:
        raise TlsError(f'{what} is larger than {MAX_PEM} bytes: not a PEM certificate or key')
    if '\0' in text:
        raise TlsError(f'{what} holds a NUL byte: not PEM text')
    blocks = [(m.group(1), m.group(0)) for m in PEM_BLOCK.finditer(text)]
    if not blocks:
        raise TlsError(f'{what} holds no PEM block (-----BEGIN ...-----): give the PEM text itself, not a path or DER')
    return blocks


def split_inputs(certificate: str, private_key: str, ca_certificate: str | None) -> tuple[str, str, str | None]:
    """Normalised PEM texts of the chain, the key and the CA; TlsError naming what is wrong with which."""
    certs = pem_blocks(certificate, 'certificate')
    if any(label in KEY_KINDS or label.endswith('PRIVATE KEY') for label, dummy in certs):
        raise TlsError('certificate holds a private key: give the key in private_key only')
    if any(label != 'CERTIFICATE' for label, dummy in certs):
        raise TlsError('certificate holds a PEM block that is not a CERTIFICATE: '
                       + ', '.join(sorted({label for label, dummy in certs if label != 'CERTIFICATE'})))
    keys = pem_blocks(private_key, 'private_key')
    if len(keys) != 1 or not keys[0][0].endswith('PRIVATE KEY'):
        raise TlsError('private_key must hold exactly one PEM private key (PRIVATE KEY, EC PRIVATE KEY or RSA '
                       f'PRIVATE KEY), got {", ".join(label for label, dummy in keys)}')
    if keys[0][0] == 'ENCRYPTED PRIVATE KEY':
        raise TlsError('private_key is encrypted: Cyrus cannot ask for its passphrase')
    ca = None
    if ca_certificate:
        blocks = pem_blocks(ca_certificate, 'ca_certificate')
        if any(label != 'CERTIFICATE' for label, dummy in blocks):
            raise TlsError('ca_certificate must hold only CERTIFICATE blocks')
        ca = '\n'.join(block for dummy, block in blocks) + '\n'
    for dummy, block in certs + ([] if not ca else [(None, b) for dummy, b in pem_blocks(ca, 'ca_certificate')]):
        body = ''.join(line.strip() for line in block.splitlines()[1:-1])
        try:
            base64.b64decode(body, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise TlsError(f'a certificate block is not valid base64 PEM: {exc}') from None
    return '\n'.join(block for dummy, block in certs) + '\n', keys[0][1] + '\n', ca


def describe(cert_path: str) -> dict:
    """Subject, issuer, validity, names and fingerprint of the first certificate of a PEM file."""
    try:
        decoded = ssl._ssl._test_decode_cert(cert_path)  # pylint: disable=protected-access
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsError(f'certificate cannot be read as X.509: {exc}') from None
    with open(cert_path, encoding='ascii') as handle:
        first = next(m.group(0) for m in PEM_BLOCK.finditer(handle.read()) if m.group(1) == 'CERTIFICATE')
    der = ssl.PEM_cert_to_DER_cert(first)

    def name(parts) -> str:
        return ', '.join(f'{k}={v}' for rdn in parts for k, v in rdn)

    return {
        'subject': name(decoded.get('subject', ())),
        'issuer': name(decoded.get('issuer', ())),
        'not_before': decoded.get('notBefore'),
        'not_after': decoded.get('notAfter'),
        'names': [f'{"IP" if kind == "IP Address" else kind}:{value.strip()}'
                  for kind, value in decoded.get('subjectAltName', ()) if kind in ('DNS', 'IP Address')],
        'serial': decoded.get('serialNumber'),
        'sha256': hashlib.sha256(der).hexdigest(),
    }


def _seconds(text: str) -> float:
    return float(ssl.cert_time_to_seconds(text))


def check_validity(info: dict, now: float | None = None) -> None:
    now = time.time() if now is None else now
    if info['not_after'] and _seconds(info['not_after']) <= now:
        raise TlsError(f'certificate {info["subject"]} expired on {info["not_after"]}')
    if info['not_before'] and _seconds(info['not_before']) > now:
        raise TlsError(f'certificate {info["subject"]} is not valid before {info["not_before"]}')


def covers(pattern: str, name: str) -> bool:
    """Whether a DNS subjectAltName covers a host name (RFC 6125: one wildcard, the whole left-most label)."""
    pattern, name = pattern.lower().rstrip('.'), name.lower().rstrip('.')
    if pattern.startswith('*.'):
        head, dummy, rest = name.partition('.')
        return bool(head) and rest == pattern[2:] and '.' in rest
    return pattern == name


def uncovered(info: dict, names: list[str]) -> list[str]:
    """The names (host names or IP addresses) the certificate's subjectAltNames do not cover."""
    dns = [n[4:] for n in info['names'] if n.startswith('DNS:')]
    ips = set()
    for entry in info['names']:
        if entry.startswith('IP:'):
            with contextlib.suppress(ValueError):
                ips.add(ipaddress.ip_address(entry[3:]))
    missing = []
    for wanted in names:
        try:
            address = ipaddress.ip_address(wanted)
        except ValueError:
            if not any(covers(pattern, wanted) for pattern in dns):
                missing.append(wanted)
        else:
            if address not in ips:
                missing.append(wanted)
    return missing


def handshake(pem_path: str, ca_path: str | None, name: str) -> None:
    """A TLS handshake in memory between a server holding the key and chain of pem_path and a client
    that trusts ca_path (the system's trust store without it) and expects name, as IMAP clients do:
    TlsError with OpenSSL's reason when the client would refuse the server."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        server.load_cert_chain(pem_path, pem_path)
    except ssl.SSLError as exc:
        if 'KEY_VALUES_MISMATCH' in str(exc) or 'key values mismatch' in str(exc):
            raise TlsError('private_key does not belong to the certificate (its public key differs)') from None
        raise TlsError(f'the certificate and key cannot be loaded together: {exc.reason or exc}') from None
    client = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(c_in, c_out, server_hostname=name)
    tls_server = server.wrap_bio(s_in, s_out, server_side=True)
    done = {'client': False, 'server': False}
    for dummy in range(ROUNDS):
        for side, obj in (('client', tls_client), ('server', tls_server)):
            if done[side]:
                continue
            try:
                obj.do_handshake()
                done[side] = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLCertVerificationError as exc:
                reason = exc.verify_message or str(exc)
                if exc.verify_code in (20, 21, 2):    # unable to get (local) issuer certificate
                    reason += (' (the certificate is not signed by the CA given in ca_certificate' if ca_path
                               else ' (no ca_certificate was given and the system trust store does not know its issuer')
                    reason += ', or an intermediate certificate is missing after it in certificate)'
                raise TlsError(f'a client expecting {name} would refuse it: {reason}') from None
            except ssl.SSLError as exc:
                raise TlsError(f'a TLS handshake for {name} fails: {exc.reason or exc}') from None
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise TlsError(f'a TLS handshake for {name} did not finish')


def check(certificate: str, private_key: str, ca_certificate: str | None, names: list[str],
          workdir: str | None = None, now: float | None = None) -> tuple[str, str | None, dict]:
    """Check the inputs as a client would; return (the file text: key then chain, the CA text, the
    certificate's description). TlsError names the first problem; nothing is written but a private
    temporary directory, removed before returning."""
    chain, key, ca = split_inputs(certificate, private_key, ca_certificate)
    tmp = tempfile.mkdtemp(prefix='.cyrus-ha-tls.', dir=workdir)
    try:
        pem_path = os.path.join(tmp, 'tls.pem')
        ca_path = os.path.join(tmp, 'ca.pem') if ca else None
        _write(pem_path, key + chain, 0o600)
        if ca:
            _write(ca_path, ca, 0o600)
        info = describe(pem_path)
        check_validity(info, now)
        missing = uncovered(info, names)
        if missing:
            raise TlsError(f'certificate {info["subject"]} does not cover {", ".join(missing)} '
                           f'(its subjectAltNames: {", ".join(info["names"]) or "none"})')
        for name in names or [None]:
            if name is None:
                handshake_name = (info['names'][0].split(':', 1)[1] if info['names'] else None)
                if handshake_name is None:
                    raise TlsError(f'certificate {info["subject"]} has no subjectAltName: clients match names there only')
                handshake(pem_path, ca_path, handshake_name)
            else:
                handshake(pem_path, ca_path, name)
        return key + chain, ca, info
    finally:
        for entry in os.listdir(tmp):
            os.unlink(os.path.join(tmp, entry))
        os.rmdir(tmp)


def _write(path: str, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, 'w', encoding='ascii') as handle:
        handle.write(text)


def _ids(owner: str, group: str) -> tuple[int, int]:
    try:
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise TlsError(f'owner {owner} is not a user on this host') from None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise TlsError(f'group {group} is not a group on this host (is Cyrus installed?)') from None
    return uid, gid


def _needs(path: str, text: str, uid: int, gid: int, mode: int) -> list[str]:
    """What differs between the file at path and the wanted one (empty: nothing)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ['created']
    if not stat.S_ISREG(st.st_mode):
        raise TlsError(f'{path} exists and is not a regular file: refusing to replace it')
    reasons = []
    with open(path, 'rb') as handle:
        if handle.read(MAX_PEM * 2 + 1) != text.encode('ascii'):
            reasons.append('content')
    if (st.st_uid, st.st_gid) != (uid, gid):
        reasons.append('owner')
    if stat.S_IMODE(st.st_mode) != mode:
        reasons.append('mode')
    return reasons


def _install(path: str, text: str, uid: int, gid: int, mode: int) -> None:
    """Temp file in the same directory (owner and mode set before any byte is written), then rename."""
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(prefix='.cyrus-ha-tls.', dir=directory)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        with os.fdopen(fd, 'w', encoding='ascii') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def install(params: dict, check_mode: bool) -> dict:
    """The module's work: check, then write what differs. Returns the result; TlsError on bad input."""
    path, ca_path = params['path'], params.get('ca_path')
    for what, value in (('path', path), ('ca_path', ca_path)):
        # in check mode the directory may be one the same run would create first (a host's first deployment)
        if value is not None and (not os.path.isabs(value)
                                  or not (os.path.isdir(os.path.dirname(value)) or check_mode)):
            raise TlsError(f'{what} {value} must be an absolute path in an existing directory')
    if ca_path and not params.get('ca_certificate'):
        raise TlsError('ca_path is set but ca_certificate is not: give the CA to write there')
    if path == ca_path:
        raise TlsError(f'path and ca_path are the same file {path}')
    try:
        mode = int(str(params.get('mode') or '0640'), 8)
    except ValueError:
        raise TlsError(f'mode {params.get("mode")} is not an octal mode such as 0640') from None
    if mode & 0o007:
        raise TlsError(f'mode {params.get("mode")} would let every user read the private key: use 0600 or 0640')
    uid, gid = _ids(params.get('owner') or 'root', params.get('group') or 'root')
    text, ca, info = check(params['certificate'], params['private_key'], params.get('ca_certificate'),
                           params.get('names') or [],
                           workdir=os.path.dirname(path) if os.path.isdir(os.path.dirname(path)) else None)
    plan = {path: (text, mode, _needs(path, text, uid, gid, mode))}
    if ca_path:
        plan[ca_path] = (ca, 0o644, _needs(ca_path, ca, uid, gid, 0o644))
    changed = {p: entry[2] for p, entry in plan.items() if entry[2]}
    if changed and not check_mode:
        # the CA first: a frontend that reads the new chain already trusts its issuer
        for target in sorted(changed, key=lambda p: p != ca_path):
            _install(target, plan[target][0], uid, gid, plan[target][1])
    return {'changed': bool(changed), 'path': path, 'ca_path': ca_path, 'certificate': info,
            'updated': dict(changed)}
