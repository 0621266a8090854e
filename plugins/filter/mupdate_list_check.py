# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.mupdate_list_check filter."""

from __future__ import annotations

DOCUMENTATION = r'''
name: mupdate_list_check
author: cyrus.ha contributors
version_added: 0.3.0
short_description: Check that a Murder's mupdate master lists exactly the mailboxes its backends hold
description:
  - Compares the mailbox lists of a Cyrus Murder's running instances, as each one's C(mailboxes.db) holds them
    (M(cyrus.ha.cyrus_facts) with O(cyrus.ha.cyrus_facts#module:mailbox_lists=true) on every host that can run one
    of its instances).
  - The mupdate master's list must be the union of the backends' lists, each mailbox placed on the backend
    (C(servername)) that holds it; every frontend's list must be the master's; no mailbox may be held by two
    backends, by name or by unique id; no backend may run twice.
  - Tombstones of deleted mailboxes, intermediate folders and reserved names are not compared.
  - Instances that are stopped are not read (a warm spare's instance runs on one node of its pair); a host
    without facts or a running instance whose list could not be read is an error, and the result is not ok.
positional: limit
options:
  _input:
    description: Each host's C(ansible_facts.cyrus), by host name.
    type: dict
    required: true
  limit:
    description: At most this many violations of one kind are listed; C(checked.violations_by_kind) counts them all.
    type: int
    default: 20
seealso:
  - module: cyrus.ha.cyrus_facts
'''

EXAMPLES = r'''
- name: Read the mailbox list of every running instance
  cyrus.ha.cyrus_facts:
    partition_usage: false
    mailbox_lists: true

- name: The mupdate master lists what the backends hold, and the frontends list the same
  ansible.builtin.assert:
    that: murder_lists.ok
    fail_msg: "{{ murder_lists.violations + murder_lists.errors }}"
  vars:
    murder_lists: >-
      {{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars, ['ansible_facts', 'cyrus'])))
         | cyrus.ha.mupdate_list_check }}
  run_once: true
'''

RETURN = r'''
_value:
  description:
    - C(ok) (true when nothing is violated and every list was read), C(violations) (each with C(invariant)
      C(mupdate-list), C(kind), C(mailbox) and C(detail)), C(errors) (lists that could not be read) and C(checked)
      (the backends and frontends compared, the mupdate master, the number of mailboxes on each side and the
      violations by kind).
    - Kinds are C(missing-at-master), C(misplaced), C(not-on-backend), C(unknown-backend), C(frontend-differs),
      C(held-twice) and C(two-masters).
  type: dict
  sample:
    ok: false
    violations:
      - invariant: mupdate-list
        kind: missing-at-master
        mailbox: user.bob
        detail: user.bob is on backend be2.example.org and not in the mupdate master's list
    errors: []
    checked: {backends: [be1.example.org, be2.example.org], frontends: [fe1@fe1], mailboxes: 2,
              mupdate_master: mupdate@mupdate, mupdate_mailboxes: 1, violations_by_kind: {missing-at-master: 1}}
'''

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.module_utils.mailinvariants import mupdate_list


def mupdate_list_check(hosts, limit=20):
    """The mupdate-list invariant of a Murder from every host's Cyrus facts."""
    if not isinstance(hosts, dict):
        raise AnsibleFilterError('cyrus.ha.mupdate_list_check: the input must be a mapping of host names to their '
                                 f'ansible_facts.cyrus, not {type(hosts).__name__}')
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise AnsibleFilterError(f'cyrus.ha.mupdate_list_check: limit must be a positive integer, not {limit!r}')
    return mupdate_list(hosts, limit=limit)


class FilterModule:
    """cyrus.ha.mupdate_list_check."""

    def filters(self):
        return {'mupdate_list_check': mupdate_list_check}
