# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names: rename over an open mapped file, hard links, the O_EXCL race."""

from __future__ import annotations

import errno
import os
import select

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import helpers
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import procs
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import result
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi

LINK_UNSUPPORTED = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOSYS)


def _fsync_dir(path: str) -> None:
    dfd = os.open(path, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def rename_reopen(workdir: str) -> dict:
    """Cyrus's writer: file.NEW + fsync + rename + dir fsync; readers lock, compare inodes, reopen."""
    steps = result.Steps('rename_reopen')
    path = os.path.join(workdir, 'cyrus.header')
    old_data = b'o' * 5000
    new_data = b'n' * 6000
    with open(path, 'xb') as handle:
        handle.write(old_data)
    fd = os.open(path, os.O_RDWR)
    try:
        old_ino = os.fstat(fd).st_ino
        mapping = None
        try:
            mapping = sysapi.Mapping(fd, len(old_data))
        except OSError as exc:
            steps.evidence['mmap_errno'] = sysapi.errname(exc)
        with helpers.helper() as child:
            tmp = path + '.NEW'
            nfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(nfd, new_data)
                try:
                    os.fsync(nfd)
                except OSError as exc:  # judged by the fsync check
                    steps.evidence['fsync_errno'] = sysapi.errname(exc)
            finally:
                os.close(nfd)
            os.rename(tmp, path)
            try:
                _fsync_dir(workdir)
            except OSError as exc:
                steps.evidence['dir_fsync_errno'] = sysapi.errname(exc)
            sysapi.setlk(fd, 'r')
            new_ino = os.stat(path).st_ino
            steps.evidence.update({'old_inode': old_ino, 'new_inode': new_ino})
            steps.expect('new_inode_seen', new_ino != old_ino, 'stat() after the rename still showed the old inode')
            with open(path, 'rb') as handle:
                steps.expect('reopen_reads_new', handle.read() == new_data,
                             'reopening after the rename did not read the new file')
            seen = helpers.value(child.call(op='stat', path=path))
            steps.expect('other_process_sees_new', seen['ino'] == new_ino and seen['size'] == len(new_data),
                         'another process did not see the renamed file at once')
            steps.expect('other_process_reads_new',
                         helpers.unb64(helpers.value(child.call(op='read_path', path=path))) == new_data,
                         'another process did not read the new contents at once')
            steps.expect('old_fd_readable', os.pread(fd, len(old_data), 0) == old_data,
                         'the old open fd no longer reads the replaced file')
            nlink = os.fstat(fd).st_nlink
            steps.evidence['old_nlink'] = nlink
            steps.expect('old_nlink_zero', nlink == 0, 'the replaced file has nlink %d, not 0' % nlink)
            if mapping is not None:
                steps.expect('old_mapping_intact', mapping.read(0, len(old_data)) == old_data,
                             'the mapping of the replaced file changed')
                mapping.close()
    finally:
        os.close(fd)
    return steps.finish('rename of .NEW over an open, mapped file: new inode seen at once by this and another '
                        'process, old fd and mapping still read the old file')


def hard_links(workdir: str) -> dict:
    steps = result.Steps('hard_links')
    first = os.path.join(workdir, 'links-a')
    second = os.path.join(workdir, 'links-b')
    os.mkdir(first)
    os.mkdir(second)
    source = os.path.join(first, '1.')
    target = os.path.join(second, '1.')
    with open(source, 'xb') as handle:
        handle.write(b'message body\r\n')
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno in LINK_UNSUPPORTED:
            steps.evidence['link_errno'] = sysapi.errname(exc)
            steps.warn('link() not supported (%s): Cyrus falls back to copying, so single-instance store costs '
                       'space' % sysapi.errname(exc))
            return steps.finish('')
        return steps.fail_now('link() failed: %s' % exc)
    counts = [os.stat(source).st_nlink, os.stat(target).st_nlink]
    with open(target, 'r+b') as handle:
        handle.write(b'M')
    with open(source, 'rb') as handle:
        steps.expect('same_file', handle.read(1) == b'M', 'the two links do not share data')
    os.unlink(source)
    counts.append(os.stat(target).st_nlink)
    steps.evidence['nlink_sequence'] = counts
    steps.expect('nlink_exact', counts == [2, 2, 1], 'nlink went %s instead of [2, 2, 1]' % counts)
    return steps.finish('link across sibling directories: nlink 1 -> 2 -> 1 exactly, data shared')


def _racer(chan, path, gate, gate_w):  # pragma: no cover - runs in the child
    os.close(gate_w)
    chan.send('ready')
    select.select([gate], [], [], 10)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        chan.send(sysapi.errname(exc))
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    chan.send('won')


def excl_race(workdir: str, processes: int = 8, rounds: int = 5) -> dict:
    """N processes create one name with O_EXCL at the same moment: exactly one wins, per round."""
    steps = result.Steps('excl_race')
    outcomes = []
    for number in range(rounds):
        path = os.path.join(workdir, 'race.%d' % number)
        gate_r, gate_w = os.pipe()
        racers = []
        try:
            for dummy in range(processes):
                racers.append(procs.Child(_racer, path, gate_r, gate_w, deadline=15))
            for racer in racers:
                racer.recv(10)
            os.close(gate_w)  # EOF wakes every racer at once
            gate_w = None
            answers = {racer.pid: racer.recv(10) for racer in racers}
        finally:
            if gate_w is not None:
                os.close(gate_w)
            os.close(gate_r)
            for racer in racers:
                racer.kill()
        winners = [pid for pid, answer in answers.items() if answer == 'won']
        losers = sorted(set(answer for answer in answers.values() if answer != 'won'))
        with open(path, 'rb') as handle:
            owner = handle.read().decode()
        outcomes.append({'winners': len(winners), 'losers': losers})
        steps.expect('round_%d' % number, len(winners) == 1 and losers in ([], ['EEXIST']) and
                     owner == str(winners[0] if winners else None),
                     'round %d: %d of %d processes won an O_EXCL create (others: %s)' % (
                         number, len(winners), processes, ', '.join(losers) or 'none'))
    steps.evidence['rounds'] = outcomes
    return steps.finish('%d rounds of %d processes racing O_EXCL: exactly one winner each' % (rounds, processes))
