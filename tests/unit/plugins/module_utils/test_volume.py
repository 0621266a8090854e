# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The volume guards' decisions, from recorded tool output (the real tools run in
tests/integration/test_shared_volume.py)."""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import volume as vol

MMP_CLEAN = """MMP_block:
    mmp_magic: 0x4d4d50
    mmp_check_interval: 5
    mmp_sequence: 0xff4d4d50
    mmp_update_date: Mon Nov 23 20:30:49 2026
    mmp_update_time: 1795465849
    mmp_node_name: vm
    mmp_device_name: loop3
    mmp_block_number: 4385
"""


def mmp(seq: int, when: int = 1795465849, node: str = 'vm', dev: str = 'loop3') -> str:
    return (MMP_CLEAN.replace('0xff4d4d50', hex(seq)).replace('1795465849', str(when))
            .replace('node_name: vm', f'node_name: {node}').replace('device_name: loop3', f'device_name: {dev}'))


SUPERBLOCK = """Filesystem volume name:   cyha-sv
Filesystem features:      has_journal ext_attr resize_inode dir_index filetype extent 64bit mmp flex_bg
Filesystem state:         clean
MMP block number:         4385
MMP update interval:      1
"""


@pytest.mark.parametrize('seq, state', [(0xFF4D4D50, 'clean'), (0xE24D4D50, 'fsck'), (1, 'in_use'),
                                        (0xE24D4D4F, 'in_use'), (0xF0000000, 'unknown')])
def test_parse_mmp_states(seq, state):
    parsed = vol.parse_mmp(mmp(seq))
    assert parsed['state'] == state and parsed['sequence'] == seq and parsed['device_name'] == 'loop3'
    assert parsed['check_interval'] == 5 and parsed['update_time'] == 1795465849


def test_parse_mmp_without_a_sequence_is_an_error():
    with pytest.raises(vol.VolumeError) as caught:
        vol.parse_mmp('e2mmpstatus: Bad magic number')
    assert 'printed no mmp_sequence' in caught.value.msg


def test_parse_blkid_export_blocks():
    text = 'DEVNAME=/dev/loop0\nUUID=a\nTYPE=ext4\n\nDEVNAME=/dev/loop1\nLABEL=x\nTYPE=xfs\n'
    assert vol.parse_blkid_export(text) == [{'DEVNAME': '/dev/loop0', 'UUID': 'a', 'TYPE': 'ext4'},
                                            {'DEVNAME': '/dev/loop1', 'LABEL': 'x', 'TYPE': 'xfs'}]


def test_parse_dumpe2fs():
    info = vol.parse_dumpe2fs(SUPERBLOCK)
    assert 'mmp' in info['features'] and info['state'] == 'clean' and info['mmp_update_interval'] == 1


class FakeTools:
    """Answers argv with recorded outputs; records every call."""

    def __init__(self, answers: dict):
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv):
        self.calls.append(argv)
        answer = self.answers[argv[0]]
        if isinstance(answer, list):
            answer = answer.pop(0)
        return answer


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0 and math.isfinite(seconds)
        self.slept.append(seconds)
        self.now += seconds


# Mountpoints of these tests live in a private directory, never under the machine's /srv.
SCRATCH = os.path.realpath(tempfile.mkdtemp(prefix='cyha-volume-unit-'))
atexit.register(shutil.rmtree, SCRATCH, True)   # the scratch mountpoints go with the test run


def make(answers: dict, check_mode=False, peek=lambda *a: None, **params) -> vol.Volume:
    base = {'uuid': 'u-1', 'mountpoint': os.path.join(SCRATCH, 'x'), 'devices': ['/dev/null'], 'fstype': 'ext4'}
    base.update(params)
    clock = FakeClock()
    volume = vol.Volume(FakeTools(answers), base, check_mode=check_mode, sleep=clock.sleep, clock=clock, peek=peek)
    volume.fake_clock = clock
    return volume


BLKID = (0, 'DEVNAME=/dev/null\nUUID=u-1\nTYPE=ext4\n', '')
NO_MOUNTS = (0, '{"filesystems": []}', '')


def test_live_heartbeat_is_refused_naming_the_device():
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', '')], 'dumpe2fs': (0, SUPERBLOCK, ''),
                   'e2mmpstatus': [(0, mmp(7, dev='loop9'), ''), (0, mmp(8, dev='loop9'), '')]},
                  fenced_peer='be1')
    with pytest.raises(vol.VolumeError) as caught:
        volume.mounted()
    assert '(device loop9)' in caught.value.msg and 'split brain' in caught.value.msg
    assert not [c for c in volume.run.calls if c[0] in ('tune2fs', 'mount', 'e2fsck')]


def test_stale_block_in_check_mode_predicts_clear_fsck_mount_and_runs_nothing():
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', '')], 'dumpe2fs': (0, SUPERBLOCK, ''),
                   'e2mmpstatus': [(0, mmp(7), ''), (0, mmp(7), '')]}, check_mode=True, fenced_peer='be1')
    result = volume.mounted()
    assert result['changed'] and result['actions'] == ['clear_mmp', 'fsck', 'mount']
    assert [c[0] for c in volume.run.calls] == ['blkid', 'findmnt', 'findmnt', 'dumpe2fs', 'e2mmpstatus', 'e2mmpstatus']


def test_fsck_that_cannot_fix_fails_before_mounting():
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', '')],
                   'dumpe2fs': (0, SUPERBLOCK.replace('mmp flex_bg', 'mmp needs_recovery flex_bg'), ''),
                   'e2mmpstatus': (0, MMP_CLEAN, ''), 'e2fsck': (4, 'UNEXPECTED INCONSISTENCY', '')})
    with pytest.raises(vol.VolumeError) as caught:
        volume.mounted()
    assert 'found errors it could not fix (exit 4)' in caught.value.msg
    assert not [c for c in volume.run.calls if c[0] == 'mount']


def test_fsck_running_elsewhere_is_refused():
    volume = make({'blkid': BLKID, 'findmnt': [NO_MOUNTS, (1, '', '')], 'dumpe2fs': (0, SUPERBLOCK, ''),
                   'e2mmpstatus': (0, mmp(0xE24D4D50, node='be1'), '')})
    with pytest.raises(vol.VolumeError) as caught:
        volume.mounted()
    assert 'e2fsck is running on node be1' in caught.value.msg


def test_blkid_tool_failure_is_reported():
    volume = make({'blkid': (4, '', 'blkid: permission denied')})
    with pytest.raises(vol.VolumeError) as caught:
        volume.mounted()
    assert caught.value.msg.startswith('listing block devices failed: blkid -c /dev/null -o export exited 4')
