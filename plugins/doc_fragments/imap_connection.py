# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """The IMAP connection options of the modules that talk to a Cyrus server."""

    DOCUMENTATION = r'''
options:
  port:
    description: The IMAP port.
    type: int
    default: 143
  ssl:
    description: Use IMAP over TLS (IMAPS, port 993 usually).
    type: bool
    default: false
  starttls:
    description:
      - Issue STARTTLS before LOGIN (port 143).
      - A Cyrus instance deployed by the collection accepts a password only inside TLS, so set this or O(ssl).
    type: bool
    default: false
  validate_certs:
    description:
      - With O(ssl) or O(starttls), check that the server's certificate chains to O(ca_path) (or to the
        managed node's system trust store) and names O(host); the connection fails otherwise, naming
        the host and the cause, without being retried.
      - Set to V(false) only for a server whose certificate cannot be checked; the password then goes to
        whoever answers.
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file of CA certificates on the managed node to check the server's certificate against,
        instead of the system trust store (the site CA; the P(cyrus.ha.cyrus_instance#role) role installs it
        as C(<config dir>/ca.pem)).
    type: path
  timeout:
    description: Socket timeout in seconds for each connection.
    type: float
    default: 10
'''
