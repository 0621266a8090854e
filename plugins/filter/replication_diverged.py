# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus.ha.replication_diverged filter."""

from __future__ import annotations

DOCUMENTATION = r'''
name: replication_diverged
author: cyrus.ha contributors
version_added: 0.3.0
short_description: The mailboxes an old Cyrus master holds that the new master lacks
description:
  - Before the old master of a replication pair is made the replica of the new one (which throws away
    whatever only it holds), lists the mailboxes where the old master has something the new one lacks.
  - A mailbox is listed when it is only on the old master, when its C(uniqueid) differs (created on
    both sides, a split brain), when its C(uidvalidity) differs, when the old master's C(uidnext) or
    C(highestmodseq) is higher (messages or changes the new master lacks), or when it could not be read
    on either side.
  - Mailboxes only on the new master are not listed (the new master is ahead there).
  - An empty list is the go-ahead.
positional: new_master_mailboxes
options:
  _input:
    description: The old master's mailboxes, mailbox name to its state (RV(cyrus.ha.cyrus_replication_facts#module:replication.mailboxes)).
    type: dict
    required: true
  new_master_mailboxes:
    description: The new master's mailboxes, in the same form.
    type: dict
    required: true
  skip_markers:
    description:
      - Leave out the lag marker C(cyrus-ha-lag-<instance>) of M(cyrus.ha.cyrus_replication_lag), whose only writes
        are the measurements' flag toggles (what an old master is compared for before it rejoins).
      - Keep it (the default) where a replica must hold everything, the marker included.
    type: bool
    default: false
seealso:
  - module: cyrus.ha.cyrus_replication_facts
  - plugin: cyrus.ha.replication_diff
    plugin_type: filter
'''

EXAMPLES = r'''
- name: The old master holds nothing the new master lacks
  ansible.builtin.assert:
    that: lost | length == 0
    fail_msg: "these mailboxes would lose data: {{ lost }}"
  vars:
    lost: >-
      {{ hostvars['imap-be1'].repl.replication.mailboxes
         | cyrus.ha.replication_diverged(hostvars['imap-be1-replica'].repl.replication.mailboxes) }}
  run_once: true
'''

RETURN = r'''
_value:
  description: The diverged mailboxes sorted by name, each with C(mailbox) and C(reason).
  type: list
  elements: dict
  sample:
    - mailbox: user.alice
      reason: "uidnext 17 on the old master > 12 on the new: messages the new master lacks"
    - mailbox: user.carol
      reason: only on the old master
'''

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.module_utils.replicacompare import ReplicationDataError, diverged


def replication_diverged(old_master_mailboxes, new_master_mailboxes, skip_markers=False):
    """The mailboxes where the old master holds something the new master lacks."""
    if not isinstance(skip_markers, bool):
        raise AnsibleFilterError(f'cyrus.ha.replication_diverged: skip_markers must be true or false, not {skip_markers!r}')
    try:
        return diverged(old_master_mailboxes, new_master_mailboxes, skip_markers=skip_markers)
    except ReplicationDataError as exc:
        raise AnsibleFilterError(f'cyrus.ha.replication_diverged: {exc}') from exc


class FilterModule:
    """cyrus.ha.replication_diverged."""

    def filters(self):
        return {'replication_diverged': replication_diverged}
