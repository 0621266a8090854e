# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.drill_report filter."""

from __future__ import annotations

DOCUMENTATION = r'''
name: drill_report
author: cyrus.ha contributors
version_added: 0.1.0
short_description: Render a failover drill as data, a Markdown summary or an SVG timeline
description:
  - Takes the record of a failover drill (timestamped phases, canary counts, checks) and returns
    it normalised (phases sorted, each with its offset from the first phase, its duration and its
    section, the failover time from the first phase to the phase V(first IMAP login), the outage of
    each move, and whether it passed), or that summary as Markdown, or as an SVG timeline.
  - The phases up to those of the host that timestamped V(first IMAP login) (the frontend) are the
    failover; the first later phase of another host starts the failback. The failover's outage runs
    from its first phase to V(first IMAP login); the failback's from its first phase on the host the
    instance had moved to (C(to)) to its next phase on the frontend.
  - The Markdown summary holds the timeline as a Mermaid gantt (a section per move, its outage and a
    task per phase), the phases and the checks as tables.
  - The SVG timeline is self-contained (no fonts, scripts or links) and readable as an image (for
    example converted to PNG for a mail) - for each move its outage shaded and labelled with its length,
    one lane per host with the host named, a bar per phase from the phase before it to its own time,
    labelled with its name and that length; then the canaries (intact, missing, changed), the delivery
    made during the outage, the traffic when the record has C(traffic), and the checks. It is at least
    900 pixels wide, wider when a label needs it.
  - The drill passed when no canary is missing or changed and every check is ok.
positional: fmt
options:
  _input:
    description:
      - The drill record, a mapping with C(phases) (a list of mappings with C(phase), a name, and
        C(at), seconds since the epoch, and optionally C(host)), optional C(canaries) (C(expected),
        C(found), C(missing), C(changed)), optional C(checks) (mappings with C(name), C(ok), C(detail)),
        optional C(outage_delivery) (as P(cyrus.ha.drill_record#filter) writes it), optional C(traffic)
        (what a load generator saw during the drill - a mapping, whose boolean C(ok) is the verdict, a
        list or a string; shown as it is) and any other keys (C(instance), C(failure), C(from), C(to),
        C(frontend)), which are kept.
    type: dict
    required: true
  fmt:
    description: V(data) for the normalised mapping (for JSON), V(markdown) or V(svg).
    type: str
    default: data
    choices: [data, markdown, svg]
'''

EXAMPLES = r'''
- name: Write the drill's reports
  ansible.builtin.copy:
    content: "{{ drill | cyrus.ha.drill_report(item.fmt) | string if item.fmt != 'data' else drill | cyrus.ha.drill_report | to_nice_json }}"
    dest: "/var/tmp/drill.{{ item.ext }}"
    mode: "0644"
  loop:
    - {fmt: data, ext: json}
    - {fmt: markdown, ext: md}
    - {fmt: svg, ext: svg}
  vars:
    drill:
      instance: be1
      failure: planned
      phases:
        - {phase: failure injected, at: 1700000000.0}
        - {phase: first IMAP login, at: 1700000006.5}
      canaries: {expected: 3, found: 3, missing: 0, changed: 0}
'''

RETURN = r'''
_value:
  description:
    - With V(data), the normalised drill (C(phases) with C(offset), C(duration) and C(section), V(failover)
      or V(failback); C(started_at), C(total_seconds), C(failover_seconds), C(failback_seconds), C(outages),
      one C(section), C(start), C(end), C(seconds), C(from), C(until) mapping per measured outage, and
      C(passed)); with V(markdown) or V(svg), a string.
  type: raw
'''

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.plugin_utils.drill_report import DrillReportError, render


def drill_report(drill, fmt='data'):
    """Render a failover drill record as data, Markdown or an SVG timeline."""
    try:
        return render(drill, fmt)
    except DrillReportError as exc:
        raise AnsibleFilterError(f'cyrus.ha.drill_report: {exc}') from exc


class FilterModule:
    """cyrus.ha.drill_report."""

    def filters(self):
        return {'drill_report': drill_report}
