# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.text_table filter (documentation in text_table.yml)."""

from __future__ import annotations

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
