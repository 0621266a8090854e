#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cyrus_replication_facts
short_description: Read the rolling replication state of one Cyrus IMAP instance
version_added: 0.3.0
description:
  - Reads the configuration pair C(<config_root>/<instance>/imapd.conf) and C(cyrus.conf) of one instance
    and reports its replication role, its peer, its rolling C(sync_client) (configured, running), its
    C(sync_server) service, and the backlog of its sync log.
  - A B(master) has C(sync_log) on and a C(sync_host) (or a C(<channel>_sync_host)); a B(replica) has a
    C(SERVICES) entry running C(sync_server). An instance that is both (a replica replicating onward, see
    C(sync_log_chain)) is reported as V(master) with RV(replication.chained=true).
  - The backlog is every C(log), C(log-run) and C(log-*) file under C(<configdirectory>/sync/) (default
    channel) and C(<configdirectory>/sync/<channel>/). C(log-run) is the batch the rolling sync_client works on
    (it stays there while runs fail); any other C(log-*) file is replayed by nobody and is listed in
    C(leftovers) of RV(replication.backlog) (replay it with C(sync_client -C <imapd.conf> -f FILE)).
  - With O(mailboxes=true), also reads the state of every mailbox with C(mbexamine) (C(uniqueid),
    C(uidvalidity), C(uidnext), C(highestmodseq), C(messages)), for the filters
    P(cyrus.ha.replication_diff#filter) and P(cyrus.ha.replication_diverged#filter). The IMAP C(STATUS)
    of Cyrus 3.6 cannot be used for this (its C(MAILBOXID) is garbled).
  - The time of the last known sync (RV(replication.last_sync)) on a master whose sync log holds nothing is now;
    on a replica, it is when the replica was last seen holding the marker of a lag measurement
    (M(cyrus.ha.cyrus_replication_lag)), read from the lag record the replication role's C(lag) entry point keeps
    there (C(<state_dir>/replication-lag-<instance>.json)).
  - C(sync_password) is never read into the result.
author:
  - cyrus.ha contributors (@cyrus-ha)
options:
  mailboxes:
    description:
      - Also read every mailbox's state with C(mbexamine) (from the Cyrus bin directory, run as root it
        switches to the Cyrus user).
      - This opens every mailbox's header and index; it reads no message.
    type: bool
    default: false
  wait_for:
    description:
      - On a replica, the mailboxes of its master as this module read them there (RV(replication.mailboxes)). It
        reads this instance's mailboxes again and again, up to O(wait_timeout) seconds, until it holds everything
        they hold (P(cyrus.ha.replication_diverged#filter) of the two is empty). Implies O(mailboxes=true).
      - The result says whether it did (RV(replication.caught_up)), how long it took and what it still lacks.
        Not holding it is not a failure of the module.
    type: dict
  wait_timeout:
    description: Seconds O(wait_for) waits at most.
    type: float
    default: 30
  state_dir:
    description:
      - The directory where a replica keeps the last measured lag of its master (the replication role's
        C(replication_state_dir)), which dates its last known sync.
    type: path
    default: /var/lib/cyrus-ha
extends_documentation_fragment:
  - cyrus.ha.instance
  - cyrus.ha.attributes
  - cyrus.ha.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Reads only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    details: Linux (C(/proc)), Cyrus IMAP 3.x with its replication tools (Debian C(cyrus-replication)).
notes:
  - Reads the instance's two config files, its sync log directory and C(/proc); with O(mailboxes=true) runs
    C(mbexamine). Changes nothing.
  - A sync_client counts as running when a live process of this node (in its network namespace) runs
    C(sync_client) with C(-r) and C(-C <imapd.conf>) of this instance.
seealso:
  - module: cyrus.ha.cyrus_facts
  - plugin: cyrus.ha.replication_diff
    plugin_type: filter
  - plugin: cyrus.ha.replication_diverged
    plugin_type: filter
  - module: cyrus.ha.cyrus_replication_lag
'''

EXAMPLES = r'''
- name: Read the replication state of be1
  cyrus.ha.cyrus_replication_facts:
    instance: be1
  register: repl

- name: The master's sync_client runs and its backlog is small
  ansible.builtin.assert:
    that:
      - repl.replication.role == 'master'
      - repl.replication.sync_client.running
      - repl.replication.backlog.complete
      - repl.replication.backlog.entries < 1000
      - repl.replication.backlog.leftovers | length == 0

- name: On the replica, its master was last seen in sync within 10 minutes
  cyrus.ha.cyrus_replication_facts:
    instance: be1
  delegate_to: imap-be1-replica
  register: replica_state
  failed_when: replica_state.replication.last_sync.age is none or replica_state.replication.last_sync.age > 600

- name: Read every mailbox's state too, for cyrus.ha.replication_diff
  cyrus.ha.cyrus_replication_facts:
    instance: be1
    mailboxes: true
  register: repl_mailboxes

- name: Every mailbox was read
  ansible.builtin.assert:
    that: repl_mailboxes.replication.mailbox_problems | length == 0
    fail_msg: "{{ repl_mailboxes.replication.mailbox_problems }}"

- name: On the replica, wait up to 10 s until it holds what the master held
  cyrus.ha.cyrus_replication_facts:
    instance: be1
    wait_for: "{{ repl_mailboxes.replication.mailboxes }}"
    wait_timeout: 10
  delegate_to: imap-be1-replica
  register: replica

- name: It did
  ansible.builtin.assert:
    that: replica.replication.caught_up
    fail_msg: "the replica still lacks {{ replica.replication.lacking }}"
'''

RETURN = r'''
replication:
  description: The replication state of the instance.
  returned: always
  type: dict
  contains:
    instance:
      description: The instance's name.
      type: str
      sample: be1
    imapd_conf:
      description: Path of its imapd.conf.
      type: str
      sample: /etc/cyrus-ha/be1/imapd.conf
    cyrus_conf:
      description: Path of its cyrus.conf.
      type: str
      sample: /etc/cyrus-ha/be1/cyrus.conf
    configdirectory:
      description: Its C(configdirectory) (null when unset), where the sync log lives.
      type: str
      sample: /var/lib/cyrus-ha/be1
    role:
      description:
        - V(master) (C(sync_log) on and a sync host), V(replica) (a C(SERVICES) entry runs C(sync_server)) or V(none).
      type: str
      sample: master
    chained:
      description: Whether the instance is both a replica and a master (it replicates onward).
      type: bool
      sample: false
    sync_log:
      description: C(sync_log) as Cyrus reads the switch.
      type: bool
      sample: true
    sync_log_chain:
      description: C(sync_log_chain) (a replica logs what it receives, for onward replication).
      type: bool
      sample: false
    peer:
      description: C(sync_host), as C(host:port) when C(sync_port) is set; null without C(sync_host).
      type: str
      sample: be1-replica.example.org:2005
    channel_peers:
      description: The channels with their own C(<channel>_sync_host), channel to C(host) or C(host:port).
      type: dict
      sample: {}
    authname:
      description: C(sync_authname) (null when unset).
      type: str
      sample: repl
    channels:
      description:
        - The sync log channels (C(sync_log_channels)); the default channel is the empty string.
      type: list
      elements: str
      sample: [""]
    repeat_interval:
      description: C(sync_repeat_interval) as written (null when unset).
      type: str
      sample: "1"
    sync_client:
      description:
        - The rolling sync_client. C(configured) (a C(DAEMON) or C(START) entry runs C(sync_client -r)),
          C(entries) (their names), C(running) and C(pids) (the live ones of this instance on this node).
      type: dict
      sample: {configured: true, entries: [syncclient], running: true, pids: [4242]}
    sync_server:
      description: C(configured) (a C(SERVICES) entry runs C(sync_server)) and C(entries) (their names).
      type: dict
      sample: {configured: false, entries: []}
    backlog:
      description:
        - What the sync log holds and the replica does not have yet. C(bytes), C(entries) (non-blank lines),
          C(files) (each with C(channel), C(file), C(bytes), C(entries) and C(age), the seconds since it was
          last written), C(leftovers) (paths of C(log-*) files other than C(log-run), which nobody replays),
          C(oldest_age) (the largest C(age), 0 without files), C(complete) (false when a directory or file
          could not be read; the numbers are then a lower bound) and C(problems).
      type: dict
      sample:
        bytes: 38
        entries: 2
        files: [{channel: "", file: /var/lib/cyrus-ha/be1/sync/log, bytes: 38, entries: 2, age: 3}]
        leftovers: []
        oldest_age: 3
        complete: true
        problems: []
    last_sync:
      description:
        - When the replica last held every change of its master, as far as this node knows.
        - C(at) (ISO 8601 UTC) when it was seen to; C(through) (ISO 8601 UTC) the changes the master had acknowledged
          by then (every one before it was on the replica at C(at)); C(at_epoch) and C(through_epoch) the same in
          seconds since the epoch; C(age) seconds since C(at); C(source) V(backlog) (a master, not chained, whose
          rolling sync_client runs and whose sync log holds nothing, read completely, so nothing waits to be
          shipped; it cannot tell a replica that never had its first sync), V(marker) (the last lag measurement
          that saw the replica catch up, from the lag record; a chained node is dated so too) or null (unknown,
          all null); C(record) the lag record read (null when there is none); C(problem) why the record could not
          be used.
      type: dict
      sample:
        at: "2026-12-03T21:14:05.412Z"
        through: "2026-12-03T21:14:04.750Z"
        at_epoch: 1796332445.412
        through_epoch: 1796332444.75
        age: 35.2
        source: marker
        record: /var/lib/cyrus-ha/replication-lag-be1.json
        problem: null
    problems:
      description: Syntax errors of the two config files and invalid switch values, each starting with C(FILE:LINE).
      type: list
      elements: str
      sample: []
    mailboxes:
      description:
        - Mailbox name to C(uniqueid), C(uidvalidity), C(uidnext) (last UID + 1), C(highestmodseq) and C(messages).
        - A mailbox that could not be read has null for what is unknown and a C(problem).
      returned: when O(mailboxes=true)
      type: dict
      sample:
        user.alice: {uniqueid: tqbkjob05xvk3u2rj297w2n0, uidvalidity: 1796290794, uidnext: 17, highestmodseq: 17,
                     messages: 16}
    mailbox_problems:
      description: The mailboxes that could not be read and output of C(mbexamine) that was not understood.
      returned: when O(mailboxes=true)
      type: list
      elements: str
      sample: []
    mailboxes_complete:
      description:
        - False when C(mbexamine) stopped at a mailbox it could not open (the mailboxes after it are not listed)
          or printed something that is no mailbox.
      returned: when O(mailboxes=true)
      type: bool
      sample: true
    caught_up:
      description: Whether the instance held everything O(wait_for) holds by the last read.
      returned: when O(wait_for) is given
      type: bool
      sample: true
    waited:
      description: Seconds from the first read to the read that held everything (or to giving up).
      returned: when O(wait_for) is given
      type: float
      sample: 1.204
    lacking:
      description: What the last read still lacked, as P(cyrus.ha.replication_diverged#filter) lists it.
      returned: when O(wait_for) is given
      type: list
      elements: dict
      sample: []
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cyrus.ha.plugins.module_utils.cyrusinstance import CONFIG_ROOT
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusreplication import (
    STATE_DIR, ReplicationError, gather, wait_to_hold)
from ansible_collections.cyrus.ha.plugins.module_utils.replicacompare import ReplicationDataError
from ansible_collections.cyrus.ha.plugins.module_utils.runner import ModuleRunner


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instance=dict(type='str', required=True),
            mailboxes=dict(type='bool', default=False),
            config_root=dict(type='path', default=CONFIG_ROOT),
            wait_for=dict(type='dict'),
            wait_timeout=dict(type='float', default=30.0),
            state_dir=dict(type='path', default=STATE_DIR),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not 0 <= params['wait_timeout'] <= 3600:
        module.fail_json(msg=f"wait_timeout must be from 0 to 3600 seconds, not {params['wait_timeout']}")
    try:
        if params['wait_for'] is not None:
            result = wait_to_hold(params['instance'], params['wait_for'], params['wait_timeout'],
                                  config_root=params['config_root'], run=ModuleRunner(module),
                                  state_dir=params['state_dir'])
        else:
            result = gather(params['instance'], config_root=params['config_root'], with_mailboxes=params['mailboxes'],
                            run=ModuleRunner(module), state_dir=params['state_dir'])
    except ReplicationError as exc:
        module.fail_json(msg=exc.msg)
    except ReplicationDataError as exc:
        module.fail_json(msg=f'wait_for: {exc}')
    module.exit_json(changed=False, replication=result)


if __name__ == '__main__':
    main()
