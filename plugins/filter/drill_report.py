# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.drill_report filter (documentation in drill_report.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.plugin_utils.drill_report import DrillReportError, build_record, render


def drill_report(drill, fmt='data'):
    """Render a failover drill record as data, Markdown or an SVG timeline."""
    try:
        return render(drill, fmt)
    except DrillReportError as exc:
        raise AnsibleFilterError(f'cyrus.ha.drill_report: {exc}') from exc


def drill_record(pieces):
    """Assemble a failover drill record from the evidence the drill gathered."""
    try:
        return build_record(pieces)
    except DrillReportError as exc:
        raise AnsibleFilterError(f'cyrus.ha.drill_record: {exc}') from exc


class FilterModule:
    """cyrus.ha drill report filters."""

    def filters(self):
        return {'drill_report': drill_report, 'drill_record': drill_record}
