# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.shared_volume's MMP watch at every update interval it accepts, and runs killed at each step
boundary (issue 19), on the lab "SAN": one ext4 image, one loop device per host.

- Live heartbeats are real (be1 mounts, the kernel's kmmpd updates the block) at 1, 5 and 30 s; the spare
  must refuse even with fenced_peer. At 300 s the kernel's own watch (360-660 s) is longer than the module's
  default budget, so the module refuses to decide at once: the safe outcome. The kernel itself waits 360 s to
  mount at 300 s, so the real 300 s heartbeat runs only with CYHA_MMP_FULL=1; by default a crafted block whose
  sequence a writer changes every half second (the documented shortcut: it weakens nothing, the module still
  needs the full budget to call a block stopped) shows the live verdict at 300 s, and the same block left
  alone the refusal to decide.
- Stopped heartbeats are copies of the disk taken while be1 had it mounted (MMP in use, nobody updating it):
  the module must watch at least as long as the kernel's mount would before it calls them stopped: 11 s at 1,
  21 s at 5, 120 s at 30. At 300 s it refuses to decide within the default budget; CYHA_MMP_FULL=1 runs the
  full watch (about 11 minutes) as well.
- Interrupted runs: CYRUS_HA_TEST_KILL_AT=<step> (read only in plugins/module_utils/testhook.py) SIGKILLs the
  module right after that step; the next run finishes the job.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import threading
import time
import uuid as uuidlib

import pytest

import labutil
from ansible_collections.cyrus.ha.plugins.module_utils import volume as vol
from test_shared_volume import San, module, on, sh

pytestmark = pytest.mark.lab

MOUNT = '/srv/cyha-svm-test'
MOUNT30 = '/srv/cyha-svm-test30'     # the background takeover at 30 s (fixture disk30)
FULL = bool(os.environ.get('CYHA_MMP_FULL'))


def mounted_at(host: str, target: str = MOUNT) -> str:
    proc = on(host, f'findmnt -n -o SOURCE {target}', check=False)
    return proc.stdout.split('>>', 1)[-1].strip() if proc.returncode == 0 else ''


def mmp_state(device: str) -> str:
    return vol.parse_mmp(sh('e2mmpstatus', '-i', device))['state']


def superblock(device: str) -> dict:
    return vol.parse_dumpe2fs(sh('dumpe2fs', '-h', device))


def mmp_disk(name: str, interval: int):
    san = San.__new__(San)      # San's own directory is test_shared_volume's: this file keeps its own
    san.dir = os.path.join(labutil.LAB_DIR, name)
    os.makedirs(san.dir, exist_ok=True)
    san.image = os.path.join(san.dir, 'cyha-svm.img')
    san.uuid = str(uuidlib.uuid4())
    san.loops = {}
    san.make(mmp=True, interval=interval)
    san.attach('be1')
    san.attach('spare')
    yield san
    for host in ('be1', 'spare'):
        for target in (MOUNT, KILL_MOUNT):
            on(host, f'umount {target}', check=False)
    for target in (MOUNT, KILL_MOUNT):
        if os.path.isdir(target):
            os.rmdir(target)
    san.release()


@pytest.fixture(scope='module')
def disk(lab):
    """The disk of the tests at 1 and 5 s (and of the interrupted runs, at 1 s)."""
    yield from mmp_disk('san-mmp-test', 1)


@pytest.fixture(scope='module')
def disk30(lab, tmp_path_factory):
    """A disk made at 30 s: changing the interval takes tune2fs as long as the kernel's wait at the old one
    (61 s at 30), so the 30 s tests keep a disk of their own rather than set the shared one back.

    The takeover of a crashed copy of it starts here, in the background: its 120 s watch runs while the other
    tests of this file run (on other devices and mountpoints), and test_stopped_heartbeat_at_30_s_... checks
    what it did."""
    for san in mmp_disk('san-mmp30-test', 30):
        tmp = tmp_path_factory.mktemp('stopped30')
        device = crashed_copy(san, tmp, 'stopped30')
        san.stopped30 = {'device': device}

        def take_over():
            args = {'uuid': san.uuid, 'mountpoint': MOUNT30, 'devices': [device], 'fenced_peer': 'be1'}
            try:
                san.stopped30['short'] = module('spare', tmp, mmp_probe_timeout=11, **args)
                san.stopped30['state_after_short'] = (mmp_state(device), mounted_at('spare', MOUNT30))
                san.stopped30['taken'] = module('spare', tmp, **args)
            except Exception as exc:  # noqa: BLE001 -- the test reports it
                san.stopped30['error'] = repr(exc)
        thread = threading.Thread(target=take_over, daemon=True)
        thread.start()
        san.stopped30['thread'] = thread
        yield san
        thread.join(600)
        on('spare', f'umount {MOUNT30}', check=False)
        if os.path.isdir(MOUNT30):
            os.rmdir(MOUNT30)


def set_interval(disk, interval: int, tmp_path) -> None:
    done = module('be1', tmp_path, uuid=disk.uuid, state='prepared', mmp_update_interval=interval,
                  devices=[disk.loops['be1']])
    assert not done['failed'], done
    assert superblock(disk.loops['be1'])['mmp_update_interval'] == interval


def mount_be1(disk, tmp_path, device=None) -> None:
    done = module('be1', tmp_path, uuid=disk.uuid, mountpoint=MOUNT, devices=[device or disk.loops['be1']])
    assert done['changed'] and not done['failed'], done


def unmount_be1(disk, tmp_path, device=None) -> None:
    done = module('be1', tmp_path, uuid=disk.uuid, mountpoint=MOUNT, state='unmounted', devices=[device or disk.loops['be1']])
    assert not done['failed'], done
    assert mounted_at('be1') == ''


def crashed_copy(disk, tmp_path, name: str) -> str:
    """The disk as be1 leaves it when it dies while mounted: MMP in use, nobody updating it. A loop device on it."""
    mount_be1(disk, tmp_path)
    on('be1', f'sh -c "echo {name} > {MOUNT}/canary && sync"')
    copy = os.path.join(disk.dir, f'{name}.img')
    sh('cp', '--sparse=always', disk.image, copy)
    unmount_be1(disk, tmp_path)
    device = disk.attach(name, copy)
    assert mmp_state(device) == 'in_use'
    return device


# -- live heartbeats -------------------------------------------------------------------------------

# 1 s: under the kernel's floor of 5 s, which sets the wait; 30 s: over it, the interval sets the wait. Every
# other interval takes one of these two paths (unit tests: mmp_wait_needed).
@pytest.mark.parametrize('interval', [1, 30])
def test_live_heartbeat_is_refused_even_with_fenced_peer(disk, disk30, tmp_path, interval):
    if interval == 30:
        disk = disk30
        assert superblock(disk.loops['be1'])['mmp_update_interval'] == 30
    else:
        set_interval(disk, interval, tmp_path)
    mount_be1(disk, tmp_path)
    try:
        refused = module('spare', tmp_path, uuid=disk.uuid, mountpoint=MOUNT, devices=[disk.loops['spare']],
                         fenced_peer='be1')
        assert refused['failed'] and 'is still updating it; refusing to mount (split brain)' in refused['msg'], refused
        assert refused['mmp']['live'] is True
        assert refused['mmp']['wait_needed'] >= vol.mmp_wait_needed(interval, 0)
        assert 'clear_mmp' not in refused['actions'] and mounted_at('spare') == ''
        assert mounted_at('be1') == disk.loops['be1'] and mmp_state(disk.loops['be1']) == 'in_use'
    finally:
        unmount_be1(disk, tmp_path)


@pytest.mark.skipif(not FULL, reason='the kernel takes 360 s to mount at 300 s; CYHA_MMP_FULL=1 runs it '
                    '(the crafted 300 s heartbeats below show both verdicts in seconds)')
def test_live_heartbeat_at_300_s_is_refused_without_deciding(disk, tmp_path):
    set_interval(disk, 300, tmp_path)
    mount_be1(disk, tmp_path)
    try:
        refused = module('spare', tmp_path, uuid=disk.uuid, mountpoint=MOUNT, devices=[disk.loops['spare']],
                         fenced_peer='be1')
        assert refused['failed'] and 'refusing to decide' in refused['msg'], refused
        assert refused['mmp']['wait_needed'] >= 360 and f"at least {refused['mmp']['wait_needed']}" in refused['msg']
        assert mounted_at('spare') == '' and mmp_state(disk.loops['be1']) == 'in_use'
    finally:
        unmount_be1(disk, tmp_path)


def craft_in_use_block(image: str, interval_block: int, seq: int) -> tuple[int, int]:
    """Write an in-use MMP block (as a node that mounted the disk writes it) into an unmounted image without
    metadata_csum; return the block's byte offset and the time written."""
    info = vol.parse_dumpe2fs(sh('dumpe2fs', '-h', image))
    offset = info['mmp_block'] * info['block_size']
    now = int(time.time())
    with open(image, 'r+b') as handle:
        handle.seek(offset)
        block = bytearray(handle.read(info['block_size']))
        struct.pack_into('<IIQ64s32sH', block, 0, vol.MMP_MAGIC, seq, now, b'crafted-node', b'loop-crafted', interval_block)
        handle.seek(offset)
        handle.write(block)
    return offset, now


@pytest.fixture
def crafted(disk, tmp_path):
    """A second disk, MMP at 300 s and no metadata checksums (so a test can write the MMP block itself)."""
    image = os.path.join(disk.dir, 'crafted.img')
    with open(image, 'wb') as handle:
        handle.truncate(64 * 1024 * 1024)
    sh('mkfs.ext4', '-q', '-F', '-U', disk.uuid, '-O', 'mmp,^metadata_csum', '-E', 'mmp_update_interval=300', image)
    offset, now = craft_in_use_block(image, 600, 1000)
    device = disk.attach(f'crafted-{len(disk.loops)}', image)
    yield image, device, offset
    subprocess.run(['losetup', '-d', device], check=False)


def test_crafted_live_heartbeat_at_300_s_is_seen_in_seconds(crafted, tmp_path):
    image, device, offset = crafted
    stop = threading.Event()

    def writer():
        seq = 1000
        with open(image, 'r+b') as handle:
            while not stop.is_set():
                seq += 1
                handle.seek(offset + 4)
                handle.write(struct.pack('<IQ', seq, int(time.time())))
                handle.flush()
                os.fsync(handle.fileno())
                stop.wait(0.5)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        refused = module('spare', tmp_path, uuid=vol_uuid(device), mountpoint=MOUNT, devices=[device], fenced_peer='x',
                         mmp_probe_timeout=700)
        seconds = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
    assert refused['failed'] and 'refusing to mount (split brain)' in refused['msg'], refused
    assert refused['mmp']['wait_needed'] == 660 and refused['mmp']['watched_seconds'] < 60
    print(f'live verdict on a crafted 300 s heartbeat after {seconds:.1f} s')
    assert mounted_at('spare') == '' and mmp_state(device) == 'in_use'


def test_crafted_stopped_heartbeat_at_300_s(crafted, tmp_path):
    image, device, offset = crafted
    args = {'uuid': vol_uuid(device), 'mountpoint': MOUNT, 'devices': [device], 'unclean_mmp': 'refuse'}
    refused = module('spare', tmp_path, **args)
    assert refused['failed'] and 'refusing to decide' in refused['msg'] and 'at least 660' in refused['msg'], refused
    assert mmp_state(device) == 'in_use' and mounted_at('spare') == ''
    if not FULL:
        return
    # CYHA_MMP_FULL=1: the whole watch (660 s: the block records the 600 s check interval of a fresh mount).
    tree = tmp_path / 'tree-full'
    proc = labutil.run([os.path.join(labutil.BIN, 'ansible'), '-i', labutil.inventory(), 'spare', '-m', 'cyrus.ha.shared_volume',
                        '-a', json.dumps(dict(args, mmp_probe_timeout=700)), '--tree', str(tree)], timeout=1200)
    waited = json.loads((tree / 'spare').read_text(encoding='utf-8'))
    assert proc.returncode != 0 and 'its heartbeat has stopped' in waited['msg'], waited
    assert waited['mmp']['watched_seconds'] >= 660 and mmp_state(device) == 'in_use'


def vol_uuid(device: str) -> str:
    return sh('blkid', '-c', '/dev/null', '-o', 'value', '-s', 'UUID', device)


# -- stopped heartbeats ----------------------------------------------------------------------------

# 1 s here, 30 s in the last test of this file: the two paths of the kernel's wait, as for live heartbeats above
@pytest.mark.parametrize('interval', [1])
def test_stopped_heartbeat_is_watched_as_long_as_the_kernel_would(disk, tmp_path, interval):
    set_interval(disk, interval, tmp_path)
    device = crashed_copy(disk, tmp_path, f'stopped{interval}')
    refused = module('spare', tmp_path, uuid=disk.uuid, mountpoint=MOUNT, devices=[device], unclean_mmp='refuse')
    assert refused['failed'] and 'its heartbeat has stopped' in refused['msg'], refused
    needed = refused['mmp']['wait_needed']
    assert needed >= vol.mmp_wait_needed(interval, 0) and refused['mmp']['watched_seconds'] >= needed
    assert refused['mmp']['live'] is False and mmp_state(device) == 'in_use' and mounted_at('spare') == ''


# -- checks before changes on the real thing -------------------------------------------------------

def test_symlinked_mountpoint_is_refused_before_mmp_is_touched(disk, tmp_path):
    set_interval(disk, 1, tmp_path)
    device = crashed_copy(disk, tmp_path, 'symlinked')
    link = '/srv/cyha-svm-link'
    os.makedirs(MOUNT, exist_ok=True)
    os.symlink(MOUNT, link)
    try:
        refused = module('spare', tmp_path, uuid=disk.uuid, mountpoint=link, devices=[device], fenced_peer='be1')
        assert refused['failed'] and 'is a symlink' in refused['msg'], refused
        assert mmp_state(device) == 'in_use' and mounted_at('spare') == ''    # MMP not cleared, no e2fsck
        for state in ('mounted', 'unmounted'):
            again = module('spare', tmp_path, uuid=disk.uuid, mountpoint=link, devices=[device], state=state)
            assert again['failed'] and 'give the real path' in again['msg']
    finally:
        os.unlink(link)


def test_pidfile_of_an_unrelated_process_is_never_signalled(disk, tmp_path):
    mount_be1(disk, tmp_path)
    pidfile = '/run/cyha-svm-unrelated.pid'
    holder_pid = '/run/cyha-svm-holder.pid'
    # A holder that is not in the pidfile, and an unrelated live process that is (a reused PID).
    on('be1', f"setsid -f sh -c 'cd {MOUNT} && echo $$ > {holder_pid} && exec sleep 300'")
    on('be1', f"setsid -f sh -c 'cd / && echo $$ > {pidfile} && exec sleep 300'")
    assert labutil.poll(lambda: on('be1', f'cat {pidfile} {holder_pid}', check=False).returncode == 0, 10)
    unrelated = int(on('be1', f'cat {pidfile}').stdout.split('>>', 1)[-1])
    holder = int(on('be1', f'cat {holder_pid}').stdout.split('>>', 1)[-1])
    try:
        refused = module('be1', tmp_path, uuid=disk.uuid, mountpoint=MOUNT, state='unmounted', pidfile=pidfile,
                         devices=[disk.loops['be1']])
        assert refused['failed'] and 'holds nothing on the volume' in refused['msg'], refused
        assert vol.proc_alive(unrelated) and vol.proc_alive(holder) and mounted_at('be1') == disk.loops['be1']
    finally:
        for pid in (unrelated, holder):
            subprocess.run(['kill', str(pid)], check=False)
        on('be1', f'rm -f {pidfile} {holder_pid}', check=False)
    assert labutil.poll(lambda: not vol.proc_alive(holder), 10)
    unmount_be1(disk, tmp_path)


# -- interrupted runs ------------------------------------------------------------------------------

KILL_MOUNT = '/srv/cyha-svk-test'
KILL_PLAY = """
- hosts: "{{ target }}"
  gather_facts: false
  tasks:
    - name: One run of shared_volume, killed after one step when kill_at names it
      cyrus.ha.shared_volume:
        uuid: "{{ sv.uuid }}"
        devices: "{{ sv.devices }}"
        mountpoint: "{{ sv.mountpoint | default(omit) }}"
        state: "{{ sv.state | default(omit) }}"
        fenced_peer: "{{ sv.fenced_peer | default(omit) }}"
        fsck: "{{ sv.fsck | default(omit) }}"
        pidfile: "{{ sv.pidfile | default(omit) }}"
        stop_timeout: "{{ sv.stop_timeout | default(omit) }}"
      environment:
        CYRUS_HA_TEST_KILL_AT: "{{ kill_at }}"
      register: outcome
      ignore_errors: true
    - name: Keep the result
      ansible.builtin.copy:
        content: "{{ outcome | to_json }}"
        dest: "{{ out }}"
      delegate_to: localhost
"""


def run_killed(tmp_path, host: str, kill_at: str, **sv) -> dict:
    play, out = tmp_path / 'kill.yml', tmp_path / f'outcome-{len(os.listdir(tmp_path))}.json'
    play.write_text(KILL_PLAY, encoding='utf-8')
    labutil.playbook(str(play), '-e', json.dumps({'target': host, 'kill_at': kill_at, 'sv': sv, 'out': str(out)}))
    return json.loads(out.read_text(encoding='utf-8'))


def was_killed(outcome: dict) -> bool:
    return bool(outcome.get('failed')) and (outcome.get('rc') in (137, -9) or 'MODULE FAILURE' in outcome.get('msg', ''))


def reset_kill_mount(device: str, tmp_path) -> None:
    on('be1', f'umount {KILL_MOUNT}', check=False)
    if os.path.isdir(KILL_MOUNT):
        os.rmdir(KILL_MOUNT)


@pytest.mark.parametrize('step', ['mmp_watched', 'mkdir', 'fsck', 'mount'])
def test_mount_killed_after_a_step_is_finished_by_the_next_run(disk, tmp_path, step):
    set_interval(disk, 1, tmp_path)
    device = disk.loops['be1']
    reset_kill_mount(device, tmp_path)
    args = {'uuid': disk.uuid, 'devices': [device], 'mountpoint': KILL_MOUNT, 'fsck': 'always'}
    try:
        killed = run_killed(tmp_path, 'be1', step, **args)
        assert was_killed(killed), killed
        assert os.path.isdir(KILL_MOUNT) == (step != 'mmp_watched')
        assert (mounted_at('be1', KILL_MOUNT) == device) == (step == 'mount')
        assert mmp_state(device) in ('clean', 'in_use')
        again = run_killed(tmp_path, 'be1', '', **args)
        assert not again.get('failed') and mounted_at('be1', KILL_MOUNT) == device, again
        assert again['changed'] == (step != 'mount')
        assert ('mkdir' in again['actions']) == (step == 'mmp_watched')
    finally:
        reset_kill_mount(device, tmp_path)


def test_mount_killed_after_clearing_mmp_is_finished_by_the_next_run(disk, tmp_path):
    set_interval(disk, 1, tmp_path)
    device = crashed_copy(disk, tmp_path, 'killclear')
    reset_kill_mount(device, tmp_path)
    args = {'uuid': disk.uuid, 'devices': [device], 'mountpoint': KILL_MOUNT, 'fenced_peer': 'be1'}
    try:
        killed = run_killed(tmp_path, 'be1', 'clear_mmp', **args)
        assert was_killed(killed) and mmp_state(device) == 'clean' and mounted_at('be1', KILL_MOUNT) == '', killed
        again = run_killed(tmp_path, 'be1', '', **args)
        assert again['changed'] and again['mmp']['state'] == 'clean' and mounted_at('be1', KILL_MOUNT) == device, again
        assert on('be1', f'cat {KILL_MOUNT}/canary').stdout.split('>>', 1)[-1].strip() == 'killclear'
    finally:
        reset_kill_mount(device, tmp_path)


@pytest.mark.parametrize('step', ['stop', 'umount'])
def test_unmount_killed_after_a_step_is_finished_by_the_next_run(disk, tmp_path, step):
    set_interval(disk, 1, tmp_path)
    device = disk.loops['be1']
    reset_kill_mount(device, tmp_path)
    args = {'uuid': disk.uuid, 'devices': [device], 'mountpoint': KILL_MOUNT}
    assert run_killed(tmp_path, 'be1', '', **args)['changed']
    pidfile = '/run/cyha-svk-instance.pid'
    on('be1', f"setsid -f sh -c 'cd {KILL_MOUNT} && echo $$ > {pidfile} && exec sleep 300'")
    assert labutil.poll(lambda: on('be1', f'cat {pidfile}', check=False).returncode == 0, 10)
    instance = int(on('be1', f'cat {pidfile}').stdout.split('>>', 1)[-1])
    try:
        killed = run_killed(tmp_path, 'be1', step, state='unmounted', pidfile=pidfile, stop_timeout=5, **args)
        assert was_killed(killed), killed
        assert labutil.poll(lambda: not vol.proc_alive(instance), 10), 'the instance holding the mount was stopped'
        assert (mounted_at('be1', KILL_MOUNT) == '') == (step == 'umount')
        again = run_killed(tmp_path, 'be1', '', state='unmounted', pidfile=pidfile, **args)
        assert not again.get('failed') and mounted_at('be1', KILL_MOUNT) == '', again
        assert again['changed'] == (step == 'stop')
    finally:
        subprocess.run(['kill', str(instance)], check=False)
        on('be1', f'rm -f {pidfile}', check=False)
        reset_kill_mount(device, tmp_path)


# -- last: the 30 s takeover the disk30 fixture started, its 120 s watch run beside every test above ----------

def test_stopped_heartbeat_at_30_s_is_cleared_only_after_120_s(disk30, tmp_path):
    """The takeover the disk30 fixture started in the background: refused at once within an 11 s budget, then
    watched 120 s (the kernel's wait at 30 s) before the stale block is cleared and the volume mounted."""
    disk = disk30
    assert superblock(disk.loops['be1'])['mmp_update_interval'] == 30
    stopped = disk.stopped30
    stopped['thread'].join(600)
    assert 'error' not in stopped and not stopped['thread'].is_alive(), stopped
    short, taken = stopped['short'], stopped['taken']
    assert short['failed'] and 'Raise mmp_probe_timeout to at least 120' in short['msg'], short   # the case
    assert stopped['state_after_short'] == ('in_use', '')
    assert taken['changed'] and taken['actions'][-3:] == ['clear_mmp', 'fsck', 'mount'], taken
    assert taken['mmp']['wait_needed'] == 120 and taken['mmp']['watched_seconds'] >= 120
    assert on('spare', f'cat {MOUNT30}/canary').stdout.split('>>', 1)[-1].strip() == 'stopped30'
    done = module('spare', tmp_path, uuid=disk.uuid, mountpoint=MOUNT30, state='unmounted', devices=[stopped['device']])
    assert not done['failed'] and mounted_at('spare', MOUNT30) == ''
