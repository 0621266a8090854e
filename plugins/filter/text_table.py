# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.text_table filter."""

from __future__ import annotations

DOCUMENTATION = r'''
name: text_table
author: cyrus.ha contributors
version_added: 0.1.0
short_description: Render a list of mappings as a fixed-width text or Markdown table
description:
  - Turns rows (a list of mappings) into a table for reports and for the output of playbooks
    such as the lab's host table or a storage qualification report.
  - A key missing from a row shows as C(-); booleans show as C(yes)/C(no).
positional: columns, style
options:
  _input:
    description: The rows, a list of mappings.
    type: list
    elements: dict
    required: true
  columns:
    description:
      - The columns, in order. Each is a key of the rows, or a mapping with C(key) and C(title).
    type: list
    elements: raw
    required: true
  style:
    description: V(text) for fixed-width columns, V(markdown) for a Markdown table.
    type: str
    default: text
    choices: [text, markdown]
'''

EXAMPLES = r'''
- name: Print a table of hosts
  ansible.builtin.debug:
    msg: "{{ rows | cyrus.ha.text_table(['name', {'key': 'addr', 'title': 'address'}]) }}"
  vars:
    rows:
      - {name: be1, addr: 198.51.100.21}
      - {name: be2, addr: 198.51.100.22}
'''

RETURN = r'''
_value:
  description: The table, one line per row after a header (and a separator line).
  type: str
'''

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.plugin_utils.text_table import TableError, render


def text_table(rows, columns, style='text'):
    """Render a list of mappings as a text or Markdown table."""
    try:
        return render(rows, columns, style)
    except TableError as exc:
        raise AnsibleFilterError(f'cyrus.ha.text_table: {exc}') from exc


class FilterModule:
    """cyrus.ha report filters."""

    def filters(self):
        return {'text_table': text_table}
