#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: storage_probe_peer
short_description: Qualify a filesystem shared by several hosts for a Cyrus IMAP mail store
version_added: 0.1.0
description:
  - Runs the cross-host storage checks among the hosts O(peers) that share O(path). Run it as one task
    over all of them at the same time (every host of O(peers) in the same play batch, C(forks) at least
    the number of hosts, no C(serial)). The first host of O(peers) (the leader, "A") creates a run
    directory C(.cyrus-ha-probe-xh-<run_id>) under O(path) for the checks' data files.
  - The hosts never pass messages through the filesystem under test, which may delay or drop what
    another client wrote; the leader listens on O(channel_address) port O(channel_port) (TCP) and every host
    connects to it. Each request and answer is signed (HMAC-SHA256) with O(channel_key), so a host outside
    the run can neither read nor post. Let the port through between the hosts for the length of the run.
  - The leader sets each check up and plays A; every other host plays B at the same time, so N hosts
    cost about the wall time of two.
  - C(lock_exclusion) A holds a whole-file C(fcntl) write lock and a C(flock); B must be refused both and
    C(F_GETLK) must show the holder. C(pingpong_rw), C(pingpong_cyrus), C(pingpong_mmap) one process per
    host chases the others round a ring of K+1 one-byte locks (as CTDB's C(ping_pong -rw)), reading with
    C(pread), from a never-remapped read-only mapping (Cyrus's index), or through a writable mapping +
    C(msync); every increment must equal the number of hosts K.
  - C(append_visibility) A appends a record under a lock + C(fdatasync); B locks, and C(fstat), C(pread)
    and a mapping made before the append must show it. C(rename_visibility) A renames a new C(cyrus.header)
    over the one B holds open; right after locking B must see the new inode and bytes. C(metadata_coherence)
    create, C(link) and C(unlink) on A seen by C(stat)/C(open) on B (a link count other than 2 only warns).
  - Each of these three is done O(tries) times. B looks at once, as Cyrus does right after taking its lock,
    then keeps looking for up to O(visibility_timeout). A change seen at once every time passes, one seen
    late fails with the measured delay (median and max over the tries), one never seen fails saying so.
    Every failure names the Cyrus property that broke and what Cyrus would do wrong, for example
    C(a message appended on be1 is not visible to an mmap of the index on be2 after 2 s (1 of 1 tries),
    Cyrus would serve stale indexes and corrupt cyrus.index).
    C(excl_race) every host races one C(O_EXCL) create, exactly one must win. C(lock_recovery) A's lock holder
    is killed with C(SIGKILL); B must get the lock, the time is reported. C(neighbour_stat) B stats a
    Cyrus-like tree A created three times (rate and p99 reported, missing files fail); latency only warns
    when every pass has a p99 over 10x its median and well over this host's own noise, measured in the same
    run, so a busy host is not called slow.
  - Before the checks, every host says how long the run directory took to appear there (C(run_dir_seen_s));
    one that never sees it within O(step_timeout) stops the run, saying that a directory created on one host
    is not seen on another.
  - A host that does not post a message within O(step_timeout) (it died, its probe process was killed, or
    the leader cannot be reached) fails the checks with a message naming it and why, and is not waited for
    again. Every process the module starts has a hard deadline, is killed and reaped by PID, and dies with
    the module. Only the leader removes the run directory, whatever happens; no host removes another's
    files.
  - Nothing another host sends is trusted. A message is at most 64 KiB of UTF-8 JSON (no NaN or Infinity)
    with the fields the step expects; a host whose message stays malformed for O(step_timeout) is named with
    what was wrong, as a host that does not answer is. A run directory that is a symlink is refused.
  - The leader posts its O(peers) and O(checks); a host given other ones (or another order) fails, saying
    so, instead of running checks the others do not.
author:
  - cyrus.ha contributors (@cyrus-ha)
options:
  path:
    description:
      - The shared directory, as this host sees it (the mount point may differ per host).
      - An absolute path without C(..) components.
    type: path
    required: true
  peers:
    description:
      - Every host taking part, in the same order on every host; the first one is the leader.
      - Host names or addresses (1 to 253 letters, digits, C(.), C(-), C(_) or C(:)); they label the
        messages and are never connected to (only O(channel_address) is). A host named twice, also in two spellings (C(BE1) and
        C(be1), C(::ffff:10.0.0.1) and C(10.0.0.1), C(FE80::1) and C(fe80::1)), is refused.
      - With a single host nothing is compared and every check is V(skip).
    type: list
    elements: str
    required: true
  me:
    description: This host's name in O(peers).
    type: str
    required: true
  run_id:
    description:
      - The same token on every host of one run (6 to 64 letters, digits, C(-) or C(_)), unique per run,
        for example a random string made once on the controller.
      - Not a secret (it names the run directory on the shared filesystem, and is returned in C(run_dir)).
    type: str
    required: true
  checks:
    description: The checks to run; V(all) runs every one. An empty list, or a check named twice, is refused.
    type: list
    elements: str
    default: [all]
    choices: [all, lock_exclusion, pingpong_rw, pingpong_cyrus, pingpong_mmap, append_visibility,
              rename_visibility, metadata_coherence, excl_race, lock_recovery, neighbour_stat]
  channel_address:
    description:
      - The leader's address (or a name that resolves to it) on which the other hosts reach it; the leader
        listens there. Required with more than one host.
      - The same on every host of the run; it must be an address of the leader itself.
    type: str
  channel_port:
    description: The TCP port the leader listens on for the run (1 to 65535).
    type: int
    default: 4743
  channel_key:
    description:
      - The secret every request and answer of the run is signed with (16 to 256 letters, digits, C(-) or
        C(_)), the same on every host, for example a random string made once on the controller. Required
        with more than one host; never logged or returned.
    type: str
  tries:
    description: How many times each visibility check (append, rename, create/link/unlink) changes a file on A (1 to 100).
    type: int
    default: 5
  visibility_timeout:
    description:
      - Seconds B keeps looking for a change it did not see at once, to tell a late change (with its delay)
        from one never seen.
    type: float
    default: 2
  timeout:
    description: Hard time budget in seconds of the whole run on this host (5 to 86400; numbers are finite).
    type: float
    default: 120
  step_timeout:
    description: Seconds a host waits for another host's token before declaring it gone.
    type: float
    default: 10
  recovery_timeout:
    description: Seconds B waits for the lock of a SIGKILLed holder on A.
    type: float
    default: 10
  pingpong_iterations:
    description: Lock steps each host makes round the ping-pong ring, per flavour.
    type: int
    default: 2000
  neighbour_files:
    description: Files A creates for the C(neighbour_stat) check.
    type: int
    default: 256
  progress_file:
    description:
      - A file on this host (absolute, not on the probed filesystem) that the run appends JSON lines to as it goes,
        for C(tail -f) and for the C(cyrus.ha.storage_probe) role, which runs the module in the background and shows
        each check as it ends; the lines of M(cyrus.ha.storage_probe), for this one path.
      - One C(plan) line (the path and the checks this host runs), one C(check) line per check as it ends (its status
        and seconds), one C(done) line however the run ends; each starts with O(progress_id) and its step number.
      - A symlink at the path is refused; a new file is created mode C(0600).
    type: path
    version_added: 0.3.0
  progress_id:
    description: A tag written first in each line of O(progress_file), to tell this run's lines from another's.
    type: str
    version_added: 0.3.0
extends_documentation_fragment:
  - cyrus.ha.attributes
  - cyrus.ha.attributes.facts
  - cyrus.ha.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - The checks write only in their own run directory, which the leader removes, so they run in check mode too; the module never reports a change.
  diff_mode:
    support: none
notes:
  - Linux only (C(fork), C(prctl), C(fcntl) locks through ctypes).
  - The role C(cyrus.ha.storage_probe) runs this module and M(cyrus.ha.storage_probe) (the single-host checks) and
    renders one report per path on the controller.
  - This module was called C(cyrus.ha.fs_probe_peer) before; that name still works until 2.0.0.
seealso:
  - module: cyrus.ha.storage_probe
  - name: CTDB ping_pong
    description: The cluster filesystem lock and coherence test the ping-pong checks agree with.
    link: https://wiki.samba.org/index.php/Ping_pong
'''

EXAMPLES = r'''
- name: Cross-host checks among the backends sharing the mail spool
  cyrus.ha.storage_probe_peer:
    path: /srv/cyrus/shared
    peers: "{{ ansible_play_hosts_all | sort }}"
    me: "{{ inventory_hostname }}"
    run_id: "{{ hostvars[ansible_play_hosts_all[0]].spool_run_id }}"
    channel_address: "{{ hostvars[(ansible_play_hosts_all | sort)[0]].ansible_host }}"
    channel_key: "{{ hostvars[ansible_play_hosts_all[0]].spool_run_key }}"

- name: Only the lock checks, quickly
  cyrus.ha.storage_probe_peer:
    path: /srv/cyrus/shared
    peers: [be1, be2]
    me: "{{ inventory_hostname }}"
    run_id: locks0001
    channel_address: 198.51.100.11
    channel_key: "{{ probe_key }}"
    checks: [lock_exclusion, pingpong_rw, lock_recovery]
    step_timeout: 5
'''

RETURN = r'''
ansible_facts:
  description: Facts to add to C(ansible_facts).
  returned: always
  type: complex
  contains:
    storage_probe_peer:
      description:
        - This host's report per path (the key is the absolute path) with C(path), C(me), C(leader),
          C(peers), C(run_dir), C(run_dir_cleanup) (V(removed) on the leader, or why not; V(not mine)
          elsewhere), C(channel) (the leader's address and port), C(run_dir_seen_s) (on a peer, seconds until
          the run directory appeared there, null when it never did; on the leader, the same per peer),
          C(verdict) (V(safe), V(degraded) or V(unsafe)), C(reasons), C(gone) (hosts that stopped answering),
          C(duration) (seconds), C(error) (when the run could not start or was cut short) and C(checks).
        - C(checks) maps each check to C(name), C(status) (V(pass), V(fail), V(warn), V(skip)), C(reason),
          C(evidence) and C(duration). On the leader a check fails naming the peers where it failed
          (C(evidence.failed_peers)) or that were gone (C(evidence.gone)); on the others it says what this
          host saw.
      type: dict
      returned: always
      sample:
        /srv/cyrus/shared:
          path: /srv/cyrus/shared
          me: be2
          leader: be1
          peers: [be1, be2]
          verdict: unsafe
          reasons: ['lock_exclusion: a whole-file fcntl write lock was granted here while be1 held one']
          gone: []
          checks:
            lock_recovery:
              name: lock_recovery
              status: pass
              reason: got the lock 0.014 s after the holder on be1 was SIGKILLed
              evidence: {recovery_s: 0.014}
              duration: 0.2
'''

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import crosshost


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            peers=dict(type='list', elements='str', required=True),
            me=dict(type='str', required=True),
            run_id=dict(type='str', required=True),
            checks=dict(type='list', elements='str', default=['all'], choices=['all'] + list(crosshost.CHECK_NAMES)),
            timeout=dict(type='float', default=crosshost.DEFAULTS['timeout']),
            step_timeout=dict(type='float', default=crosshost.DEFAULTS['step_timeout']),
            recovery_timeout=dict(type='float', default=crosshost.DEFAULTS['recovery_timeout']),
            visibility_timeout=dict(type='float', default=crosshost.DEFAULTS['visibility_timeout']),
            tries=dict(type='int', default=crosshost.DEFAULTS['tries']),
            channel_address=dict(type='str'),
            channel_port=dict(type='int', default=crosshost.CHANNEL_PORT),
            channel_key=dict(type='str', no_log=True),
            pingpong_iterations=dict(type='int', default=crosshost.DEFAULTS['pingpong_iterations']),
            neighbour_files=dict(type='int', default=crosshost.DEFAULTS['neighbour_files']),
            progress_file=dict(type='path'),
            progress_id=dict(type='str'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        report = crosshost.run_checked(params)
    except (ValueError, crosshost.Interrupted) as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # noqa: BLE001 - never a traceback for the user: say where it stopped
        module.fail_json(msg='the cross-host checks of %s stopped on an unexpected error: %s' % (params['path'], exc),
                         exception=traceback.format_exc())
    module.exit_json(changed=False, ansible_facts={'storage_probe_peer': {report['path']: report}})


if __name__ == '__main__':
    main()
