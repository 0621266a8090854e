# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.replication_diff filter."""

from __future__ import annotations

DOCUMENTATION = r'''
name: replication_diff
author: cyrus.ha contributors
version_added: 0.3.0
short_description: Compare the mailboxes of a Cyrus replication master and its replica
description:
  - Compares the mailboxes of two instances, as M(cyrus.ha.cyrus_replication_facts) returns them with
    O(cyrus.ha.cyrus_replication_facts#module:mailboxes=true), field by field - C(uniqueid), C(uidvalidity),
    C(uidnext), C(highestmodseq) and C(messages).
  - A mailbox mbexamine could not read (a C(problem), or a field that is null) is never equal, even when
    it is unreadable on both sides.
  - The replica is a copy of the master when the C(equal) of the result is true; read it once the master's sync log
    backlog is empty, or mailboxes still being replicated show as different.
positional: replica_mailboxes
options:
  _input:
    description: The master's mailboxes, mailbox name to its state (RV(cyrus.ha.cyrus_replication_facts#module:replication.mailboxes)).
    type: dict
    required: true
  replica_mailboxes:
    description: The replica's mailboxes, in the same form.
    type: dict
    required: true
seealso:
  - module: cyrus.ha.cyrus_replication_facts
  - plugin: cyrus.ha.replication_diverged
    plugin_type: filter
'''

EXAMPLES = r'''
- name: Read the mailboxes of the master and of the replica
  cyrus.ha.cyrus_replication_facts:
    instance: be1
    mailboxes: true
  register: repl

- name: The replica holds what the master holds
  ansible.builtin.assert:
    that: comparison.equal
    fail_msg: "missing {{ comparison.missing }}, extra {{ comparison.extra }}, differ {{ comparison.differ }}"
  vars:
    comparison: >-
      {{ hostvars['imap-be1'].repl.replication.mailboxes
         | cyrus.ha.replication_diff(hostvars['imap-be1-replica'].repl.replication.mailboxes) }}
  run_once: true
'''

RETURN = r'''
_value:
  description:
    - C(equal) (bool), C(missing) (names on the master only), C(extra) (names on the replica only),
      C(differ) (a list of C(mailbox) and C(fields), each differing field with its C(master) and C(replica)
      value, plus C(problem) when either side could not be read), C(counts) (C(master), C(replica)).
    - Lists are sorted by mailbox name.
  type: dict
  sample:
    equal: false
    missing: [user.carol]
    extra: []
    differ:
      - mailbox: user.alice
        fields: {uidnext: {master: 17, replica: 12}, messages: {master: 16, replica: 11}}
    counts: {master: 3, replica: 2}
'''

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.module_utils.replicacompare import ReplicationDataError, diff


def replication_diff(master_mailboxes, replica_mailboxes):
    """The differences between a master's mailboxes and its replica's."""
    try:
        return diff(master_mailboxes, replica_mailboxes)
    except ReplicationDataError as exc:
        raise AnsibleFilterError(f'cyrus.ha.replication_diff: {exc}') from exc


class FilterModule:
    """cyrus.ha.replication_diff."""

    def filters(self):
        return {'replication_diff': replication_diff}
