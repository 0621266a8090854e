# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.storage_report filter."""

from __future__ import annotations

DOCUMENTATION = r'''
name: storage_report
author: cyrus.ha contributors
version_added: 0.1.0
short_description: One storage qualification report per path from the single-host and cross-host probes
description:
  - Merges what M(cyrus.ha.storage_probe) and M(cyrus.ha.storage_probe_peer) returned on each host for one path
    into one report - the verdict of the path (the worst of every host's and every host pair's), a table
    of the single-host checks per host, a table of the cross-host checks per host pair (leader > peer),
    and each failure with what it means for a Cyrus mail store.
  - The role C(cyrus.ha.storage_probe) writes it as JSON and Markdown on the controller.
positional: title
options:
  _input:
    description:
      - A mapping of host name to a mapping with C(single) (the C(storage_probe) report of the path on that host)
        and C(cross) (the C(storage_probe_peer) report of the path on that host); either may be null.
    type: dict
    required: true
  title:
    description: The name of the path in the report (default the leader's path).
    type: str
'''

EXAMPLES = r'''
- name: Report on one path shared by be1 and be2
  ansible.builtin.copy:
    content: "{{ (data | cyrus.ha.storage_report).markdown }}"
    dest: /tmp/report.md
    mode: "0644"
  vars:
    data:
      be1:
        single: "{{ hostvars.be1.ansible_facts.storage_probe['/srv/mail'] }}"
        cross: "{{ hostvars.be1.ansible_facts.storage_probe_peer['/srv/mail'] }}"
      be2:
        single: "{{ hostvars.be2.ansible_facts.storage_probe['/srv/mail'] }}"
        cross: "{{ hostvars.be2.ansible_facts.storage_probe_peer['/srv/mail'] }}"
'''

RETURN = r'''
_value:
  description:
    - C(path), C(verdict) (V(safe), V(degraded), V(unsafe)), C(hosts) (verdict per host), C(leader),
      C(single) (rows check x host), C(pairs) (rows check x host pair), C(failures) (C(check), C(where),
      C(status), C(reason), C(consequence)), C(lock_recovery_s) (seconds per peer) and C(markdown).
  type: dict
'''

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
