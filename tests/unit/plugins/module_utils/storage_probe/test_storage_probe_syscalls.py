# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ctypes layer, child processes and work directories on the test machine's own filesystem,
plus the error paths a healthy filesystem never takes (reached by faking one syscall)."""

from __future__ import annotations

import errno
import json
import os
import socket
import time

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import (
    fsx, locks, mmapchecks, namespace, procs, sysapi, workdir)


def test_statfs_type_of_proc():
    assert sysapi.statfs_type('/proc') == 0x9FA0


def test_mapping_reaches_past_eof_and_sees_pwrite(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(b'a' * 100)
    fd = os.open(path, os.O_RDWR)
    try:
        with sysapi.Mapping(fd, 100 + 8192) as mapping:
            os.pwrite(fd, b'xyz', 200)
            assert mapping.read(198, 5) == b'\0\0xyz'
            with pytest.raises(ValueError):
                mapping.read(8290, 10)
    finally:
        os.close(fd)


def test_getlk_sees_a_childs_lock(tmp_path):
    path = str(tmp_path / 'l')
    open(path, 'w').close()
    fd = os.open(path, os.O_RDWR)
    try:
        from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import helpers
        with helpers.helper() as child:
            helpers.value(child.call(op='open', path=path))
            helpers.value(child.call(op='lock', kind='w', start=3, length=4))
            assert sysapi.getlk(fd, 'w') == {'type': 'w', 'pid': child.pid, 'start': 3, 'len': 4}
            with pytest.raises(OSError) as caught:
                sysapi.setlk(fd, 'w', 4, 1)
            assert caught.value.errno in sysapi.CONFLICT
        assert sysapi.getlk(fd, 'w')['type'] == 'u'
    finally:
        os.close(fd)


def _sleep_forever():
    time.sleep(3600)


def _boom():
    raise OSError(errno.EIO, 'boom')


def test_run_in_child_deadline_kill_and_errors():
    assert procs.run_in_child(pow, (2, 10), timeout=5) == 1024
    started = time.monotonic()
    with pytest.raises(procs.ChildError) as caught:
        procs.run_in_child(_sleep_forever, timeout=0.3)
    assert str(caught.value) == 'no answer within 0.3 s' and time.monotonic() - started < 5
    with pytest.raises(OSError) as caught:
        procs.run_in_child(_boom, timeout=5)
    assert caught.value.errno == errno.EIO
    with pytest.raises(procs.ChildError) as caught:
        procs.run_in_child(_die, timeout=5)
    assert str(caught.value) == 'the process died (killed by SIGBUS)'


def _die():
    os.kill(os.getpid(), 7)  # SIGBUS, as a mapping past a shrunk file would


def test_workdir_create_find_clean(tmp_path):
    own = workdir.create(str(tmp_path))
    assert os.path.basename(own).startswith('.cyrus-ha-probe-') and os.stat(own).st_mode & 0o777 == 0o700
    stale = tmp_path / '.cyrus-ha-probe-old'
    stale.mkdir()
    (stale / 'owner.json').write_text(json.dumps({'host': socket.gethostname(), 'pid': 2 ** 22 + 7, 'start': 1}))
    foreign = tmp_path / '.cyrus-ha-probe-other'
    foreign.mkdir()
    (foreign / 'owner.json').write_text(json.dumps({'host': 'elsewhere', 'pid': 1, 'start': 1}))
    found = workdir.find_leftovers(str(tmp_path), own)
    assert [(os.path.basename(item['path']), item['stale']) for item in found] == [
        ('.cyrus-ha-probe-old', True), ('.cyrus-ha-probe-other', False)]
    assert workdir.clean_leftovers(str(tmp_path), check_mode=True) == [str(stale)] and stale.exists()
    assert workdir.clean_leftovers(str(tmp_path), check_mode=False) == [str(stale)] and not stale.exists()
    workdir.remove(own)
    assert sorted(os.listdir(tmp_path)) == ['.cyrus-ha-probe-other']
    with pytest.raises(ValueError):
        workdir.remove(str(tmp_path))


def test_checks_pass_on_this_machine(tmp_path):
    for check in (mmapchecks.mmap_sees_write, mmapchecks.mmap_write_msync, locks.fcntl_locks, locks.flock_locks,
                  namespace.rename_reopen, namespace.hard_links):
        where = tmp_path / check.__name__
        where.mkdir()
        got = check(str(where))
        assert got['status'] == 'pass', got
    assert fsx.run_fsx(str(tmp_path), ops=300, seed=42)['evidence']['counts']['truncate'] > 0


def _enodev(*args, **kwargs):
    raise OSError(errno.ENODEV, 'mmap: No such device')


def test_mmap_enodev_is_reported_as_unsupported(tmp_path, monkeypatch):
    monkeypatch.setattr(sysapi, 'Mapping', _enodev)
    got = mmapchecks.mmap_sees_write(str(tmp_path))
    assert got['status'] == 'fail'
    assert got['reason'] == 'mmap unsupported: MAP_SHARED mmap() failed with ENODEV'
    replaced = fsx.run_fsx(str(tmp_path), ops=200, seed=3)
    assert replaced['status'] == 'warn' and replaced['reason'].startswith('mmap unsupported (ENODEV)')


def _exdev(src, dst):
    raise OSError(errno.EXDEV, 'Invalid cross-device link')


def test_link_refused_only_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'link', _exdev)
    got = namespace.hard_links(str(tmp_path))
    assert got['status'] == 'warn' and got['evidence']['link_errno'] == 'EXDEV'


def test_fsx_reports_the_seed_on_a_mismatch(tmp_path, monkeypatch):
    real_pread = os.pread

    def corrupt(fd, size, offset):
        data = real_pread(fd, size, offset)
        return (b'\xff' + data[1:]) if data and data[0] != 0xff else data
    monkeypatch.setattr(os, 'pread', corrupt)
    got = fsx.run_fsx(str(tmp_path), ops=300, seed=7)
    assert got['status'] == 'fail' and got['reason'].endswith('(seed 7 replays it)')
    assert got['evidence']['seed'] == 7 and got['evidence']['last_ops']


def _enospc(workdir):
    with open(os.path.join(workdir, 'partial'), 'wb') as handle:
        handle.write(b'x')
    raise OSError(errno.ENOSPC, 'No space left on device')


def test_disk_filling_up_mid_probe_is_bad_input_not_a_verdict(tmp_path, monkeypatch):
    from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import probe
    monkeypatch.setattr(namespace, 'hard_links', _enospc)
    with pytest.raises(probe.ProbeError) as caught:
        probe.probe_path(str(tmp_path), ['identity', 'hard_links', 'fsync'])
    assert str(caught.value) == ('%s ran out of space or inodes during the hard_links check (ENOSPC): the '
                                 'filesystem is full; free some space and probe again (work directory removed)'
                                 % tmp_path)
    assert os.listdir(tmp_path) == []
