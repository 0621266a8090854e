#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cyrus_replication_lag
short_description: Measure the replication lag of a Cyrus IMAP master with a marker
version_added: 0.3.0
description:
  - Runs on the B(master) of a replica pair (Cyrus rolling replication). Writes a marker on the master and
    times it until the replica holds it, on the master's one monotonic clock.
  - The marker is the C(\Flagged) flag of the one message of the mailbox C(cyrus-ha-lag-<instance>), a shared
    mailbox that only the replication user (C(sync_authname)) can see, created by the first measurement
    (its ACL is put right on every run). Each measurement toggles the flag over IMAPS on the
    instance's address (C(client_bind_name)), logged in as the replication user with C(sync_password), both
    read from the instance's C(imapd.conf); the user must be an admin of the instance (the C(murder) role
    makes it one on both nodes). A flag change creates no file, so measuring leaves nothing behind.
  - The replica is asked over the replication protocol, as C(sync_client) asks it (C(STARTTLS), SASL
    C(PLAIN) as the replication user, C(GET MAILBOXES)), read only, every 10 ms until its copy of the marker
    mailbox has the marker's C(MODSEQ) or O(timeout) passes. Both TLS sessions trust only the CA in
    C(tls_server_ca_file) and check the name of the host connected to.
  - A replica that does not catch up within O(timeout) is no failure; RV(lag.caught_up=false) and
    RV(lag.seconds) is then a lower bound.
author:
  - cyrus.ha contributors (@cyrus-ha)
options:
  timeout:
    description: Seconds to wait for the replica to hold the marker (more than 0, at most 3600).
    type: float
    default: 30
extends_documentation_fragment:
  - cyrus.ha.instance
  - cyrus.ha.attributes
  - cyrus.ha.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Logs in and says whether the marker mailbox would be created; writes and measures nothing.
  diff_mode:
    support: none
  platform:
    details: Cyrus IMAP 3.x with its replication tools (Debian C(cyrus-replication)); the replica's C(sync_server) reachable.
seealso:
  - module: cyrus.ha.cyrus_replication_facts
notes:
  - The figure is the replica's lag behind the master as clients' changes meet it, at one moment. The
    C(replication) role's C(lag) entry point keeps the last figure on the replica, where an unplanned
    promotion reads it after the master has gone.
'''

EXAMPLES = r'''
- name: Measure how far the replica is behind
  cyrus.ha.cyrus_replication_lag:
    instance: be3
  register: be3_lag

- name: Show it
  ansible.builtin.debug:
    msg: "be3's replica holds a change {{ be3_lag.lag.seconds }} s after the master acknowledged it"
  when: be3_lag.lag.caught_up
'''

RETURN = r'''
changed:
  description:
    - True when the marker mailbox was created or its ACL put right (or would be, in check mode). The flag toggled
      by each measurement is a replicated write to that mailbox, not counted as a change.
  returned: always
  type: bool
lag:
  description: The measurement.
  returned: always
  type: dict
  contains:
    instance:
      description: The instance's name.
      type: str
      sample: be3
    mailbox:
      description: The marker mailbox.
      type: str
      sample: cyrus-ha-lag-be3
    peer:
      description: The replica asked (C(sync_host:sync_port)).
      type: str
      sample: 198.51.100.50:2005
    created:
      description: Whether this run created the marker mailbox.
      type: bool
      sample: false
    measured:
      description: False in check mode.
      type: bool
      sample: true
    modseq:
      description: The MODSEQ of the master's change the replica was waited for.
      type: int
      sample: 42
    marked_at:
      description: When the master acknowledged the change (seconds since the epoch, the master's clock).
      type: float
      sample: 1796317869.412
    seen_at:
      description: When the replica first answered that it holds it (the master's clock), null when it did not.
      type: float
      sample: 1796317869.721
    seconds:
      description: The lag, C(seen_at - marked_at) on the monotonic clock; a lower bound when RV(lag.caught_up) is false.
      type: float
      sample: 0.309
    caught_up:
      description: Whether the replica held the change within O(timeout).
      type: bool
      sample: true
    timeout:
      description: O(timeout).
      type: float
      sample: 30.0
    polls:
      description: How many times the replica was asked.
      type: int
      sample: 31
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cyrus.ha.plugins.module_utils.cyrusinstance import CONFIG_ROOT
from ansible_collections.cyrus.ha.plugins.module_utils.replicationlag import LagError, measure, settings


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instance=dict(type='str', required=True),
            timeout=dict(type='float', default=30.0),
            config_root=dict(type='path', default=CONFIG_ROOT),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not 0 < params['timeout'] <= 3600:
        module.fail_json(msg=f"timeout must be more than 0 and at most 3600 seconds, not {params['timeout']}")
    try:
        conf = settings(params['instance'], params['config_root'])
        module.no_log_values.add(conf['password'])
        result = measure(params['instance'], params['timeout'], config_root=params['config_root'],
                         check_mode=module.check_mode, conf=conf)
    except LagError as exc:
        module.fail_json(msg=exc.msg)
    module.exit_json(changed=result['created'], lag=result)


if __name__ == '__main__':
    main()
