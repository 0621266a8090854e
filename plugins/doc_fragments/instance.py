# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """The options of a module that reads one Cyrus instance's configuration pair under the config root."""

    DOCUMENTATION = r'''
options:
  instance:
    description: The instance's name (its directory under O(config_root)).
    type: str
    required: true
  config_root:
    description: The directory holding one directory of configuration per instance.
    type: path
    default: /etc/cyrus-ha
'''
