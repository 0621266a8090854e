#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: storage_probe
short_description: Qualify a directory's filesystem for a Cyrus IMAP mail store on one host
version_added: 0.1.0
description:
  - Runs the single-host storage checks Cyrus depends on against each O(path) and says whether
    Cyrus can live there (V(safe)), can live there at a cost (V(degraded)), or will corrupt mailboxes
    (V(unsafe)), and exactly why.
  - C(identity) names the filesystem from C(statfs) C(f_type), the FUSE subtype, mount source and
    options from C(/proc/self/mountinfo), free space and inodes, and flags risky options (C(nolock),
    C(local_lock), C(localflocks), C(actimeo), ...).
  - C(mmap_sees_write) checks that a read-only C(MAP_SHARED) mapping, never remapped, sees C(pwrite())s
    from the same fd, another fd and another process at once, across a page boundary and into the
    8 KiB slop Cyrus maps past end of file. C(mmap_write_msync) checks stores through a writable
    mapping + C(msync) against C(pread) in another process, the reverse, and C(ftruncate) growth + remap.
  - C(fcntl_locks) checks whole-file and sub-page byte-range locks, read versus write, that C(F_GETLK)
    names the holder, that closing any fd or a C(SIGKILL) releases a process's locks, that C(F_SETLKW)
    wakes promptly, that locks are advisory, and runs a two-process ping-pong ring of byte locks
    (as CTDB's C(ping_pong -rw)) whose increment must be 2; it reports both lock rates. C(flock) checks flock
    exclusion and sharing, C(SIGKILL) release, mandatory behaviour, and reports whether flock and
    fcntl locks interact.
  - C(rename_reopen) replaces an open, mapped file by C(.NEW) + C(fsync) + C(rename) + directory
    C(fsync) and checks Cyrus's lock-then-compare-inode reopen. C(hard_links) checks exact link
    counts (a C(link()) refused with C(EXDEV)/C(EPERM) only warns, Cyrus falls back to copying).
    C(excl_race) lets processes race C(O_EXCL) creates (exactly one must win). C(fsync) checks
    C(fsync), C(fdatasync), C(msync) and directory C(fsync).
  - C(fsx) runs seeded random C(pread)/C(pwrite)/mapped read/mapped write/C(ftruncate) operations
    against an in-memory model; the seed is reported so a failure can be replayed with O(fsx_seed).
  - C(metadata_scale) grows a Cyrus-like tree in doubling batches and reports create, stat, open and
    unlink rates and latency percentiles per batch. A batch is flagged when its rate (at the median
    latency) falls under half the first batch's, or its p99 latency exceeds 10x its median (and 5 ms);
    a cliff, and a warning, is a flagged batch whose rate halved, when every later batch is one too.
  - C(metadata_deep), run only when named (V(all) leaves it out), looks for the cliff where the seed found it,
    at hundreds of thousands of messages. It grows the tree in doubling batches (1,024 files, 2,048, ...) up to
    O(deep_files), measures after each batch the batch's create rate and the stat and open rates over a
    random sample of the whole tree, and reports each batch as it ends (a JSON line in O(progress_file),
    a syslog line). Growth stops before a batch that would take the tree past O(deep_budget_mb), leave
    under 5% of the filesystem free, or not finish in the time left of O(timeout); every file is removed
    before the check returns. The result is the curve (C(evidence.curve)) and where it falls off (a
    phase whose rate at the median stays under half the first batch's), a warning.
  - Checks about another process run in child processes, each with a hard deadline; every call that
    could hang on the probed filesystem runs in a child, so a hung filesystem fails the module within
    O(timeout) instead of hanging it.
  - The probe writes only in its own work directory C(.cyrus-ha-probe-*) created safely under each
    O(path) (an unpredictable name, C(mkdir) that never follows a symlink planted under it, mode C(0700)
    whatever the umask), and removes it whatever happens (success, failure, timeout, C(SIGTERM), a
    creation that hung). Work directories left by an earlier run that was killed are reported, and removed
    with O(clean_leftovers); a symlink or file named like one is not one, and its owner note is read
    without trusting it (only a note naming this host and a process that is gone makes it removable).
author:
  - cyrus.ha contributors (@cyrus-ha)
options:
  path:
    description:
      - The directories to probe (where the mail store, or its partitions, will live).
      - Each must exist, be a directory, be writable, and have room for the probe.
      - Each is an absolute path without C(..) components, named once. A symlink is followed; the directory
        it resolves to is probed (and its filesystem identified) and returned as C(real_path).
    type: list
    elements: path
    required: true
  checks:
    description:
      - The checks to run; V(all) runs every one but C(metadata_deep). Checks not run show as V(skip).
      - An empty list, or a check named twice, is refused.
    type: list
    elements: str
    default: [all]
    choices: [all, identity, mmap_sees_write, mmap_write_msync, fcntl_locks, flock, rename_reopen,
              hard_links, excl_race, fsync, fsx, metadata_scale, metadata_deep]
  timeout:
    description:
      - Time budget in seconds for each path. A check still running when it ends is killed and
        fails; checks not started are skipped (which makes the verdict at best V(degraded)).
    type: float
    default: 120
  stat_timeout:
    description:
      - Seconds the first C(stat)/C(statfs) of a path, and the creation and removal of the work
        directory, may take before the filesystem is declared hung.
    type: float
    default: 10
  fsx_ops:
    description: Number of random operations of the C(fsx) check.
    type: int
    default: 1000
  fsx_seed:
    description: Seed of the C(fsx) check (to replay a failure); a random seed when unset, reported.
    type: int
  scale_files:
    description: Files in the largest batch of the C(metadata_scale) check (batches double up to it).
    type: int
    default: 2048
  scale_rounds:
    description: Number of doubling batches of the C(metadata_scale) check.
    type: int
    default: 4
  deep_files:
    description:
      - Files the C(metadata_deep) check grows the tree to (it stops earlier at O(deep_budget_mb) or the time budget).
      - Give O(timeout) room for it; creating, measuring and removing 500,000 files takes minutes on a local disk.
    type: int
    default: 500000
  deep_budget_mb:
    description: Disk space in MiB the C(metadata_deep) tree may use (measured as it grows).
    type: int
    default: 2048
  progress_file:
    description:
      - A file on the managed node (absolute, not on the probed filesystem) that the probe appends JSON lines to as
        it goes, for C(tail -f) and for the C(cyrus.ha.storage_probe) role, which runs the module in the background
        and shows each check as it ends.
      - One C(plan) line (the paths and checks to run), one C(check) line per check of each path as it ends (its
        status and seconds), one C(done) line however the run ends; each starts with O(progress_id) and its step
        number (C(0) for the plan, C(1), C(2), ... for the checks, C(-1) for done).
      - C(metadata_deep) adds one line per batch; syslog gets those either way.
      - A symlink at the path is refused; a new file is created mode C(0600).
    type: path
  progress_id:
    description:
      - A tag written first in each C(plan), C(check) and C(done) line of O(progress_file), so a reader can tell
        this run's lines from an earlier run's in the same file.
    type: str
    version_added: 0.3.0
  clean_leftovers:
    description:
      - Remove work directories of earlier runs on this host whose process is gone.
      - Leftovers of other hosts or of a run still going are only reported.
    type: bool
    default: false
extends_documentation_fragment:
  - cyrus.ha.attributes
  - cyrus.ha.attributes.facts
  - cyrus.ha.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - The probe writes only in its own work directory, which it removes, so it runs in check mode too; only O(clean_leftovers) is predicted instead of done.
  diff_mode:
    support: none
notes:
  - A path that does not exist, is not a directory, is not writable, is read-only, lacks the free
    space or inodes the probe needs (or runs out of them during the probe), or does not answer
    C(stat) within O(stat_timeout) fails the module with a message saying so; it is not a verdict.
  - Every input is checked before any path is touched; an empty or relative path, a NUL byte, a C(..)
    component, a number that is not finite or out of range (a boolean is not a number) fail the module.
  - Linux only (C(/proc/self/mountinfo), C(statfs) through ctypes, C(fork)).
  - This module was called C(cyrus.ha.fs_probe) before; that name still works until 2.0.0.
  - A single host cannot see what a second host sharing the filesystem sees; shared filesystems
    (NFS, CephFS, GPFS, OCFS2, sshfs, ...) are marked C(shared) in the identity and need the
    cross-host checks as well.
seealso:
  - module: cyrus.ha.storage_probe_peer
  - name: CTDB ping_pong
    description: The cluster filesystem lock and coherence test this probe agrees with.
    link: https://wiki.samba.org/index.php/Ping_pong
'''

EXAMPLES = r'''
- name: Qualify the mail spool of a backend
  cyrus.ha.storage_probe:
    path: /var/spool/cyrus/mail

- name: Fail when a partition is unsafe for Cyrus
  ansible.builtin.assert:
    that: ansible_facts.storage_probe_single_verdict != 'unsafe'
    fail_msg: "{{ ansible_facts.storage_probe | dict2items | map(attribute='value.reasons') | flatten }}"

- name: Only the lock and mmap checks, quickly, on two partitions
  cyrus.ha.storage_probe:
    path:
      - /srv/cyrus/part1
      - /srv/cyrus/part2
    checks: [identity, mmap_sees_write, mmap_write_msync, fcntl_locks]
    timeout: 30

- name: Replay an fsx failure with its seed, and remove leftovers of killed runs
  cyrus.ha.storage_probe:
    path: /srv/cyrus/part1
    checks: [fsx]
    fsx_seed: 1234567
    fsx_ops: 20000
    clean_leftovers: true

- name: Look for the metadata cliff of a backend's volume up to 500,000 files (tail -f the progress file)
  cyrus.ha.storage_probe:
    path: [/srv/cyrus-ha/be1]
    checks: [metadata_deep]
    timeout: 3600
    deep_budget_mb: 4096
    progress_file: /var/tmp/metadata-deep.jsonl
'''

RETURN = r'''
ansible_facts:
  description: Facts to add to C(ansible_facts).
  returned: always
  type: complex
  contains:
    storage_probe:
      description:
        - One report per probed path (the key is the absolute path), with C(path), C(real_path) (the path
          with its symlinks resolved, where the probe ran), C(verdict)
          (V(safe), V(degraded) or V(unsafe)), C(reasons) (one line per failed or warning check),
          C(identity) (C(fs_type), C(magic), C(mount_fstype), C(fuse_subtype), C(source), C(mount_point),
          C(options), C(risky_options), C(shared), C(free_bytes), C(total_bytes), C(free_inodes),
          C(total_inodes), C(read_only)), C(checks), C(workdir), C(workdir_cleanup) (C(removed) or why
          not), C(leftovers) (earlier work directories with C(path), C(host), C(pid), C(stale)),
          C(leftovers_removed), C(fsx_seed), C(duration) (seconds), C(peak_rss_kib).
        - C(checks) maps each check name to C(name), C(status) (V(pass), V(fail), V(warn) or V(skip)),
          a one-line C(reason), C(evidence) (the numbers and sub-results) and C(duration) (seconds).
      type: dict
      returned: always
      sample:
        /srv/cyrus/part1:
          path: /srv/cyrus/part1
          verdict: safe
          reasons: [every check run passed]
          identity: {fs_type: xfs, magic: '0x58465342', source: /dev/sdb1, shared: false}
          checks:
            fcntl_locks:
              name: fcntl_locks
              status: pass
              reason: fcntl locks exclude, share, split by range, name the holder, ...
              evidence: {getlk_names_holder: true, locks_per_s: 812345.0}
              duration: 0.29
          fsx_seed: 1234567
          duration: 2.4
    storage_probe_single_verdict:
      description:
        - The worst verdict over all probed paths (for grouping hosts in an inventory).
        - Single-host checks only; the role C(cyrus.ha.storage_probe) sets C(storage_probe_verdict) from these
          and the cross-host checks of M(cyrus.ha.storage_probe_peer).
      type: str
      returned: always
      sample: safe
'''

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import probe
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import spec


def main():
    module = AnsibleModule(argument_spec=spec.argument_spec(), supports_check_mode=True)
    try:
        outcome = spec.run(module.params, module.check_mode)
    except (probe.ProbeError, probe.Interrupted) as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # noqa: BLE001 - never a traceback for the user: say where it stopped
        module.fail_json(msg='the probe of %s stopped on an unexpected error: %s' % (
            ', '.join(module.params['path']), exc), exception=traceback.format_exc())
    module.exit_json(**outcome)


if __name__ == '__main__':
    main()
