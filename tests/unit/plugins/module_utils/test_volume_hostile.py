# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile inputs to the volume guards (issue 19): every bad input refused before any tool runs, the MMP
watch as long as the kernel's, pidfiles read without trusting them, changes undone on failure.
The real tools and devices: tests/integration/test_shared_volume_mmp.py."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import testhook, volume as vol

from test_volume import BLKID, MMP_CLEAN, NO_MOUNTS, SUPERBLOCK, make, mmp

GOOD = {'uuid': '0b6e3c0e-8f0a-4e8e-9d4b-2f1d7f0c1a22', 'mountpoint': '/srv/be1', 'devices': ['/dev/loop*'],
        'fstype': 'ext4', 'opts': 'defaults', 'mmp_update_interval': 5, 'mmp_probe_timeout': 130.0, 'stop_timeout': 10.0}


def superblock(interval: int) -> str:
    return SUPERBLOCK.replace('MMP update interval:      1', f'MMP update interval:      {interval}')


def refused(**changes) -> str:
    params = dict(GOOD, **changes)
    with pytest.raises(vol.VolumeError) as caught:
        vol.check_params(params)
    return caught.value.msg


def test_good_params_pass():
    vol.check_params(dict(GOOD))


@pytest.mark.parametrize('name, value', [
    ('mmp_probe_timeout', float('nan')), ('mmp_probe_timeout', float('inf')), ('mmp_probe_timeout', -1.0),
    ('mmp_probe_timeout', 0.0), ('mmp_probe_timeout', 1e9), ('stop_timeout', float('nan')), ('stop_timeout', -5.0),
    ('stop_timeout', float('-inf')), ('stop_timeout', 0.0), ('mmp_update_interval', 0), ('mmp_update_interval', 301),
    ('mmp_update_interval', True), ('mmp_update_interval', '5'),
])
def test_numbers_not_finite_or_out_of_range_are_refused(name, value):
    assert refused(**{name: value}).startswith(f'{name} must be a')


@pytest.mark.parametrize('name, value', [
    ('uuid', '0b6e3c0e-8f0a-4e8e-9d4b-2f1d7f0c1a22\n'), ('uuid', '\u0661\u0662\u0663\u0664-\u0661\u0662\u0663\u0664'),
    ('uuid', 'not a uuid!'), ('label', 'cyr\u00fcs'), ('label', 'be1\n'), ('label', ''), ('fstype', ''),
    ('fstype', 'ext4 -o x'), ('opts', ''), ('opts', 'rw,\nexec'), ('opts', 'rw bind'), ('fenced_peer', ''),
    ('fenced_peer', ' be1 '), ('fenced_peer', 'b\u00e9'),
])
def test_text_that_is_empty_not_ascii_or_with_newlines_is_refused(name, value):
    params = dict(GOOD, **{name: value})
    if name == 'label':
        params.pop('uuid')
    with pytest.raises(vol.VolumeError) as caught:
        vol.check_params(params)
    assert caught.value.msg.startswith(f'{name} {value!r} is not ')


@pytest.mark.parametrize('value', ['/', '/srv/..', 'relative/dir', '/srv/a b', '/srv/\u00e9t\u00e9', '/srv/x\n', '/srv/x;rm'])
def test_bad_mountpoints_are_refused(value):
    assert refused(mountpoint=value).startswith(f'mountpoint {value!r} must be an absolute path')


@pytest.mark.parametrize('value', [[], [''], ['sda'], ['/dev/../etc/passwd'], ['/dev/loop\u0661'], ['/dev/x y']])
def test_bad_device_patterns_are_refused(value):
    assert refused(devices=value).startswith('devices ')


def test_relative_pidfile_is_refused():
    assert refused(pidfile='run/x.pid').startswith("pidfile 'run/x.pid' must be an absolute")


# -- the mountpoint: checked before the disk is even looked at --------------------------------

def no_tools():
    return make({})     # any tool call raises KeyError: the check must come first


def test_symlinked_mountpoint_is_refused_before_any_tool(tmp_path):
    (tmp_path / 'real').mkdir()
    (tmp_path / 'link').symlink_to(tmp_path / 'real')
    volume = no_tools()
    volume.p['mountpoint'] = str(tmp_path / 'link')
    with pytest.raises(vol.VolumeError) as caught:
        volume.mounted()
    assert 'is a symlink' in caught.value.msg and volume.run.calls == []
    volume.p['mountpoint'] = str(tmp_path / 'link' / 'below')
    with pytest.raises(vol.VolumeError) as caught:
        volume.mounted()
    assert f"{tmp_path / 'link'} is a symlink" in caught.value.msg and volume.run.calls == []


def test_symlinked_mountpoint_is_refused_for_unmount_too(tmp_path):
    (tmp_path / 'link').symlink_to('/')
    volume = no_tools()
    volume.p['mountpoint'] = str(tmp_path / 'link')
    with pytest.raises(vol.VolumeError) as caught:
        volume.unmounted()
    assert 'give the real path' in caught.value.msg and volume.run.calls == []


def test_mountpoint_that_is_a_file_is_refused_before_any_tool(tmp_path):
    (tmp_path / 'file').write_text('x')
    volume = no_tools()
    volume.p['mountpoint'] = str(tmp_path / 'file')
    with pytest.raises(vol.VolumeError) as caught:
        volume.mounted()
    assert 'is not a directory' in caught.value.msg and volume.run.calls == []


def test_stale_mmp_with_a_bad_mountpoint_clears_nothing(tmp_path):
    """The issue's case: MMP cleared and e2fsck run before the mountpoint was found unusable."""
    (tmp_path / 'file').write_text('x')
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', '')], 'dumpe2fs': (0, SUPERBLOCK, ''),
                   'e2mmpstatus': (0, mmp(7), ''), 'tune2fs': (0, '', ''), 'e2fsck': (0, '', '')},
                  fenced_peer='be1', mountpoint=str(tmp_path / 'file' / 'sub'))
    with pytest.raises(vol.VolumeError):
        volume.mounted()
    assert not [c for c in volume.run.calls if c[0] in ('e2mmpstatus', 'tune2fs', 'e2fsck', 'mount')]


def test_failed_fsck_removes_the_mountpoint_it_made(tmp_path):
    target = tmp_path / 'new' / 'mnt'
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', ''), (1, '', '')],
                   'dumpe2fs': (0, SUPERBLOCK.replace('mmp flex_bg', 'mmp needs_recovery flex_bg'), ''),
                   'e2mmpstatus': (0, MMP_CLEAN, ''), 'e2fsck': (8, 'operational error', '')}, mountpoint=str(target))
    with pytest.raises(vol.VolumeError):
        volume.mounted()
    assert not target.exists() and 'mkdir' not in volume.actions


# -- the MMP watch -------------------------------------------------------------------------

@pytest.mark.parametrize('interval, block_ci, needed', [
    (1, 5, 11), (5, 10, 21), (30, 60, 120), (300, 300, 360), (300, 600, 660), (None, 0, 11), (1, 65535, 65595), (0, 0, 11),
])
def test_the_watch_is_the_kernels(interval, block_ci, needed):
    assert vol.mmp_wait_needed(interval, block_ci) == needed


@pytest.mark.parametrize('interval, block_ci, needed', [(1, 5, 11), (5, 10, 21), (30, 60, 120)])
def test_stale_heartbeat_is_watched_as_long_as_the_kernel_would(interval, block_ci, needed):
    block = mmp(7).replace('mmp_check_interval: 5', f'mmp_check_interval: {block_ci}')
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', '')], 'dumpe2fs': (0, superblock(interval), ''),
                   'e2mmpstatus': (0, block, '')}, check_mode=True, fenced_peer='be1')
    result = volume.mounted()
    assert result['mmp']['state'] == 'stale' and result['mmp']['wait_needed'] == needed
    assert result['mmp']['watched_seconds'] >= needed and sum(volume.fake_clock.slept) >= needed


def test_the_issue_case_interval_30_with_a_short_budget_is_refused_not_cleared():
    block = mmp(7).replace('mmp_check_interval: 5', 'mmp_check_interval: 60')
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', '')], 'dumpe2fs': (0, superblock(30), ''),
                   'e2mmpstatus': (0, block, ''), 'tune2fs': (0, '', '')}, fenced_peer='be1', mmp_probe_timeout=11)
    with pytest.raises(vol.VolumeError) as caught:
        volume.mounted()
    assert 'takes 120 s of watching' in caught.value.msg and 'Raise mmp_probe_timeout to at least 120' in caught.value.msg
    assert volume.fake_clock.slept == [] and not [c for c in volume.run.calls if c[0] in ('tune2fs', 'e2fsck', 'mount')]


def test_interval_300_needs_360_s_and_the_default_budget_refuses():
    block = mmp(7).replace('mmp_check_interval: 5', 'mmp_check_interval: 300')
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', '')], 'dumpe2fs': (0, superblock(300), ''),
                   'e2mmpstatus': (0, block, '')}, fenced_peer='be1')
    with pytest.raises(vol.VolumeError) as caught:
        volume.mounted()
    assert 'takes 360 s' in caught.value.msg and caught.value.details['mmp']['wait_needed'] == 360


def test_interval_300_with_the_budget_raised_watches_360_s():
    block = mmp(7).replace('mmp_check_interval: 5', 'mmp_check_interval: 300')
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', '')], 'dumpe2fs': (0, superblock(300), ''),
                   'e2mmpstatus': (0, block, '')}, check_mode=True, fenced_peer='be1', mmp_probe_timeout=400)
    assert volume.mounted()['mmp']['watched_seconds'] >= 360


def test_a_heartbeat_seen_moving_by_a_direct_read_ends_the_watch_early():
    seen = []

    def peek(dev, block, size):
        seen.append((dev, block, size))
        return {'sequence': 7 if len(seen) < 3 else 8, 'update_time': 1795465849, 'check_interval': 60}
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', '')], 'dumpe2fs': (0, superblock(30), ''),
                   'e2mmpstatus': (0, mmp(7), ''), 'tune2fs': (0, '', '')}, fenced_peer='be1', peek=peek)
    with pytest.raises(vol.VolumeError) as caught:
        volume.mounted()
    assert 'still updating it; refusing to mount (split brain)' in caught.value.msg
    assert caught.value.details['mmp']['live'] is True and caught.value.details['mmp']['watched_seconds'] == 3
    assert not [c for c in volume.run.calls if c[0] in ('tune2fs', 'e2fsck', 'mount')]


def test_a_direct_read_that_fails_never_lets_a_live_heartbeat_through():
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', '')], 'dumpe2fs': (0, SUPERBLOCK, ''),
                   'e2mmpstatus': [(0, mmp(7), ''), (0, mmp(8), '')]}, fenced_peer='be1', peek=lambda *a: None)
    with pytest.raises(vol.VolumeError) as caught:
        volume.mounted()
    assert 'split brain' in caught.value.msg


def test_a_block_that_moves_between_the_watch_and_the_clear_is_not_cleared(tmp_path):
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', '')], 'dumpe2fs': (0, SUPERBLOCK, ''),
                   'e2mmpstatus': [(0, mmp(7), ''), (0, mmp(7), ''), (0, mmp(9), '')], 'tune2fs': (0, '', '')},
                  fenced_peer='be1', mountpoint=str(tmp_path))
    with pytest.raises(vol.VolumeError) as caught:
        volume.mounted()
    assert 'changed after it was watched' in caught.value.msg
    assert not [c for c in volume.run.calls if c[0] in ('tune2fs', 'e2fsck', 'mount')]


def test_a_stopped_fsck_block_with_fenced_peer_is_cleared_after_the_watch(tmp_path):
    fsck_block = mmp(0xE24D4D50, node='be1')
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', ''), (0, '{"filesystems": [{"source": "/dev/null", '
                   f'"target": "{tmp_path}", "fstype": "ext4", "options": "rw", "maj:min": "1:3"}}]}}', '')],
                   'dumpe2fs': (0, SUPERBLOCK, ''), 'e2mmpstatus': (0, fsck_block, ''), 'tune2fs': (0, '', ''),
                   'e2fsck': (0, '', ''), 'mount': (0, '', '')}, fenced_peer='be1', mountpoint=str(tmp_path))
    result = volume.mounted()
    assert result['actions'] == ['clear_mmp', 'fsck', 'mount'] and result['mmp']['watched_seconds'] >= 11


def test_mmp_output_with_garbage_numbers_is_an_error_not_a_traceback():
    with pytest.raises(vol.VolumeError):
        vol.parse_mmp(MMP_CLEAN.replace('0xff4d4d50', '0xzz'))
    with pytest.raises(vol.VolumeError):
        vol.parse_mmp(MMP_CLEAN.replace('1795465849', '\u0661\u0662'))


def test_peek_reads_a_crafted_mmp_block(tmp_path):
    image = tmp_path / 'disk.img'
    block = bytearray(4096)
    struct.pack_into('<IIQ', block, 0, vol.MMP_MAGIC, 42, 1795465849)
    struct.pack_into('<H', block, 112, 60)
    image.write_bytes(bytes(4096 * 3) + bytes(block))
    try:
        fd = os.open(image, os.O_RDONLY | os.O_DIRECT)
        os.close(fd)
    except OSError:
        pytest.skip('O_DIRECT is not supported where tmp_path lives')
    assert vol.peek_mmp(str(image), 3, 4096) == {'sequence': 42, 'update_time': 1795465849, 'check_interval': 60}
    assert vol.peek_mmp(str(image), 2, 4096) is None     # no magic there
    assert vol.peek_mmp(str(image), 3, 1000) is None     # not a block size
    assert vol.peek_mmp(str(tmp_path / 'missing'), 3, 4096) is None


# -- pidfiles ------------------------------------------------------------------------------

def test_fifo_pidfile_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / 'master.pid'
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(vol.VolumeError) as caught:
        vol.read_pidfile(str(fifo))
    assert 'is a FIFO, not a regular file' in caught.value.msg and time.monotonic() - started < 5


@pytest.mark.parametrize('kind', ['dir', 'symlink', 'huge', 'empty', 'arabic', 'words', 'two', 'zero', 'one', 'big', 'negative'])
def test_pidfiles_that_are_not_one_ascii_pid_in_a_regular_file_are_refused(tmp_path, kind):
    path = tmp_path / 'master.pid'
    contents = {'huge': '1' * 100000, 'empty': '', 'arabic': '\u0661\u0662\u0663\n', 'words': 'pid 123\n',
                'two': '12 34\n', 'zero': '0\n', 'one': '1\n', 'big': '99999999\n', 'negative': '-5\n'}
    if kind == 'dir':
        path.mkdir()
    elif kind == 'symlink':
        (tmp_path / 'real').write_text(f'{os.getpid()}\n')
        path.symlink_to(tmp_path / 'real')
    else:
        path.write_text(contents[kind], encoding='utf-8')
    with pytest.raises(vol.VolumeError) as caught:
        vol.read_pidfile(str(path))
    assert caught.value.msg.startswith(f'pidfile {path} ')


def test_missing_pidfile_is_no_process_and_a_good_one_is_read(tmp_path):
    assert vol.read_pidfile(str(tmp_path / 'missing')) is None
    (tmp_path / 'ok.pid').write_text('1234\n')
    assert vol.read_pidfile(str(tmp_path / 'ok.pid')) == 1234


def test_bad_pidfile_fails_an_unmount_before_any_tool(tmp_path):
    os.mkfifo(tmp_path / 'fifo')
    volume = no_tools()
    volume.p.update(pidfile=str(tmp_path / 'fifo'), mountpoint=None)
    with pytest.raises(vol.VolumeError) as caught:
        volume.unmounted()
    assert 'FIFO' in caught.value.msg and volume.run.calls == []


def poll(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def sleeper(tmp_path):
    procs = []

    def start(cwd, argv=('sleep', '60')):
        proc = subprocess.Popen(list(argv), cwd=cwd)
        procs.append(proc)
        (tmp_path / 'sleeper.pid').write_text(f'{proc.pid}\n')
        return proc
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_an_unrelated_live_process_in_the_pidfile_is_never_signalled(tmp_path, sleeper):
    """The issue's case: a reused PID in the pidfile; the process holds nothing on the volume."""
    proc = sleeper('/')
    unused_dev = os.makedev(4095, 1048575)
    with pytest.raises(vol.VolumeError) as caught:
        vol.stop_by_pidfile(str(tmp_path / 'sleeper.pid'), 1, st_dev=unused_dev)
    assert 'holds nothing on the volume' in caught.value.msg and 'refusing to signal it' in caught.value.msg
    time.sleep(0.2)
    assert proc.poll() is None


def test_the_process_holding_the_volume_is_stopped(tmp_path, sleeper):
    holder_dir = tmp_path / 'vol'
    holder_dir.mkdir()
    proc = sleeper(str(holder_dir))
    assert vol.stop_by_pidfile(str(tmp_path / 'sleeper.pid'), 5, st_dev=os.stat(holder_dir).st_dev)['signal'] == 'TERM'
    assert proc.wait(5) == -signal.SIGTERM


def test_a_parent_whose_child_holds_the_volume_counts_as_holder(tmp_path, sleeper):
    if os.stat('/dev/shm').st_dev == os.stat('/').st_dev:
        pytest.skip('needs /dev/shm on its own filesystem')
    holder_dir = '/dev/shm'
    proc = sleeper('/', ('sh', '-c', f'cd {holder_dir} && sleep 60 & wait'))
    assert poll(lambda: vol.holds_mount(proc.pid, os.stat(holder_dir).st_dev), 5)
    assert vol.stop_by_pidfile(str(tmp_path / 'sleeper.pid'), 5, st_dev=os.stat(holder_dir).st_dev)['was_running']


# -- interrupted runs ----------------------------------------------------------------------

@pytest.mark.parametrize('step', vol.KILL_POINTS)
def test_the_kill_hook_kills_only_at_its_step(step):
    code = 'from ansible_collections.cyrus.ha.plugins.module_utils import testhook as t\n' \
           f't.kill_point("other")\nt.kill_point({step!r})\nprint("survived")'
    root = vol.__file__
    for dummy in range(6):      # .../ansible_collections/cyrus/ha/plugins/module_utils/volume.py
        root = os.path.dirname(root)
    env = dict(os.environ, **{testhook.ENV: step, 'PYTHONPATH': root})
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL and 'survived' not in proc.stdout
    env[testhook.ENV] = ''
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and 'survived' in proc.stdout
