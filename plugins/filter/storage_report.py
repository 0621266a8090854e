# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.storage_report filter (documentation in storage_report.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.plugin_utils.storage_report import ReportError, build


def storage_report(path_data, title=None):
    """One path's storage qualification report (verdict, tables, failures with their consequence)."""
    try:
        return build(path_data, title)
    except ReportError as exc:
        raise AnsibleFilterError(f'cyrus.ha.storage_report: {exc}') from exc


class FilterModule:
    """cyrus.ha storage report filter."""

    def filters(self):
        return {'storage_report': storage_report}
