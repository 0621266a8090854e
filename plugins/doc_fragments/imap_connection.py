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
    description: Use IMAP over TLS (port 993 usually).
    type: bool
    default: false
  starttls:
    description: Issue STARTTLS before LOGIN.
    type: bool
    default: false
  timeout:
    description: Socket timeout in seconds for each connection.
    type: float
    default: 10
'''
