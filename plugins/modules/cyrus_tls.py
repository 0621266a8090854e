#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cyrus_tls
short_description: Install a Cyrus instance's server certificate and key, checked as a client checks them
version_added: 0.2.0
description:
  - Checks a server certificate, its private key and the CA that signed it the way an IMAP client
    will, before anything is written, and fails naming the certificate and the cause when the key
    does not belong to the certificate, the certificate has expired or is not valid yet, its
    subjectAltNames do not cover one of O(names), or it does not chain to O(ca_certificate).
  - Then writes the key and the certificate chain into ONE file, O(path) (key first), through a
    temporary file in the same directory and a rename, so a replacement swaps key and certificate
    at once. Point Cyrus's C(tls_server_cert) and C(tls_server_key) at it.
  - Writes the CA to O(ca_path) the same way (C(tls_client_ca_file) of the instance, and the
    C(ca_path) of the collection's IMAP clients).
  - On bad input nothing is written, so a running instance keeps its old certificate.
  - The P(cyrus.ha.cyrus_instance#role) role installs every instance's TLS files with this module.
author:
  - cyrus.ha contributors (@cyrus-ha)
options:
  path:
    description: The file to write the private key and the certificate chain to (absolute, in an existing directory).
    type: path
    required: true
  certificate:
    description:
      - The server certificate in PEM, followed by any intermediate certificates.
    type: str
    required: true
  private_key:
    description: The certificate's private key in PEM, unencrypted (Cyrus cannot ask for a passphrase).
    type: str
    required: true
  ca_certificate:
    description:
      - The CA certificate(s) in PEM that the certificate must chain to.
      - Without it the certificate must chain to the host's system trust store.
    type: str
  ca_path:
    description: Where to write O(ca_certificate) (mode 0644). Requires O(ca_certificate).
    type: path
  names:
    description:
      - The host names and IP addresses clients reach the instance by (its servername and service
        address). Each must be covered by a subjectAltName and pass a real TLS handshake with host
        name checking.
      - Empty, the handshake is made for the first subjectAltName only.
    type: list
    elements: str
    default: []
  owner:
    description: Owner of O(path) and O(ca_path).
    type: str
    default: root
  group:
    description: Group of O(path) and O(ca_path), the group the Cyrus processes run as.
    type: str
    default: root
  mode:
    description: Mode of O(path) as an octal string. No bit for others is accepted.
    type: str
    default: '0640'
extends_documentation_fragment:
  - cyrus.ha.attributes
  - cyrus.ha.attributes.PLATFORM
attributes:
  check_mode:
    support: full
    details: Every check runs; nothing is written, and C(changed) says whether a file would be.
  diff_mode:
    support: none
notes:
  - The checks use Python's C(ssl) module (OpenSSL) on the managed node; nothing else is needed.
  - The key file holds a secret; keep the mode 0640 with the Cyrus group (or 0600 with the Cyrus user as owner).
seealso:
  - module: cyrus.ha.imap_check
    description: Logs in over TLS and checks the certificate this module installed (O(cyrus.ha.imap_check#module:ca_path)).
'''

EXAMPLES = r'''
- name: Install be1's certificate, checked for its service name and address
  cyrus.ha.cyrus_tls:
    path: /etc/cyrus-ha/be1/tls.pem
    ca_path: /etc/cyrus-ha/be1/ca.pem
    certificate: "{{ lookup('ansible.builtin.file', 'tls/be1-svc.example.org.crt') }}"
    private_key: "{{ vault_be1_tls_key }}"
    ca_certificate: "{{ lookup('ansible.builtin.file', 'tls/example-ca.crt') }}"
    names: [be1-svc.example.org, 198.51.100.121]
    group: mail
'''

RETURN = r'''
path:
  description: The key and certificate file.
  returned: always
  type: str
  sample: /etc/cyrus-ha/be1/tls.pem
ca_path:
  description: The CA file, when O(ca_path) was given.
  returned: always
  type: str
  sample: /etc/cyrus-ha/be1/ca.pem
certificate:
  description: The certificate that was checked (no secret).
  returned: success
  type: dict
  contains:
    subject:
      description: Its subject.
      type: str
      sample: commonName=be1-svc.example.org
    issuer:
      description: Its issuer.
      type: str
      sample: commonName=Example CA
    not_before:
      description: Start of validity.
      type: str
      sample: Dec  2 20:55:32 2026 GMT
    not_after:
      description: End of validity.
      type: str
      sample: Mar  6 20:55:32 2029 GMT
    names:
      description: Its DNS and IP subjectAltNames.
      type: list
      elements: str
      sample: [DNS:be1-svc.example.org, IP:198.51.100.121]
    serial:
      description: Serial number in hex.
      type: str
      sample: 2B1B96812C544345
    sha256:
      description: SHA-256 fingerprint of the certificate (DER).
      type: str
      sample: 4f1c0e...
updated:
  description: Each file written (or that would be, in check mode) with what differed (created, content, owner, mode).
  returned: always
  type: dict
  sample: {"/etc/cyrus-ha/be1/tls.pem": ["content"]}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cyrus.ha.plugins.module_utils.cyrustls import TlsError, install


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            certificate=dict(type='str', required=True),
            private_key=dict(type='str', required=True, no_log=True),
            ca_certificate=dict(type='str'),
            ca_path=dict(type='path'),
            names=dict(type='list', elements='str', default=[]),
            owner=dict(type='str', default='root'),
            group=dict(type='str', default='root'),
            mode=dict(type='str', default='0640'),
        ),
        supports_check_mode=True,
    )
    try:
        result = install(module.params, module.check_mode)
    except TlsError as exc:
        module.fail_json(msg=f'{module.params["path"]}: {exc}; nothing was changed', path=module.params['path'])
    except OSError as exc:
        module.fail_json(msg=f'{module.params["path"]}: {exc.strerror or exc} ({getattr(exc, "filename", None) or ""})',
                         path=module.params['path'])
    module.exit_json(**result)


if __name__ == '__main__':
    main()
