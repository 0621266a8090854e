# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.drill_record filter."""

from __future__ import annotations

DOCUMENTATION = r'''
name: drill_record
author: cyrus.ha contributors
version_added: 0.2.0
short_description: Assemble a failover drill record from the evidence a drill gathered
description:
  - Takes what a drill gathered on its hosts (timestamped phases of each host, the results of
    M(cyrus.ha.imap_check) checking the canaries, the asynchronous job of the delivery made during
    the outage, and the engine's own checks) and returns the drill record that
    P(cyrus.ha.drill_report#filter) renders.
  - The C(cyrus.ha.drill) role's C(report) entry point uses it; the canary counts come from the first
    verification, each verification becomes the check C(every canary intact <name>), and the outage
    delivery becomes the check C(the delivery made during the outage arrives, intact).
options:
  _input:
    description:
      - A mapping with C(instance), C(failure), C(engine), C(from), C(to), C(frontend), C(name) and
        C(traffic) (what a load generator saw during the drill, when one ran), kept as they are,
        C(timelines) (a list of phase lists, one per host; empty ones are skipped),
        C(verifications) (a non-empty list of C(name), C(result) mappings, C(result) being a registered
        M(cyrus.ha.imap_check) V(verify) result), optional C(outage_job) (the registered
        M(ansible.builtin.async_status) result of the delivery made during the outage) and optional
        C(checks) (mappings with C(name), C(ok), C(detail)).
    type: dict
    required: true
'''

EXAMPLES = r'''
- name: Assemble and render the record
  ansible.builtin.debug:
    msg: "{{ (drill_evidence | cyrus.ha.drill_record | cyrus.ha.drill_report('markdown')).splitlines() }}"
  vars:
    drill_evidence:
      instance: be1
      failure: planned
      timelines:
        - [{phase: failure injected, at: 1700000000.0, host: be1}]
        - [{phase: first IMAP login, at: 1700000006.5, host: fe1}]
      verifications:
        - {name: after the failover, result: {expected: 3, found: 3, missing: [], mismatched: []}}
'''

RETURN = r'''
_value:
  description:
    - The drill record (C(phases), C(canaries), C(checks), C(outage_delivery) when there was an outage
      delivery, and the kept keys, C(traffic) among them when given).
  type: dict
'''

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.plugin_utils.drill_report import DrillReportError, build_record


def drill_record(pieces):
    """Assemble a failover drill record from the evidence the drill gathered."""
    try:
        return build_record(pieces)
    except DrillReportError as exc:
        raise AnsibleFilterError(f'cyrus.ha.drill_record: {exc}') from exc


class FilterModule:
    """cyrus.ha.drill_record."""

    def filters(self):
        return {'drill_record': drill_record}
