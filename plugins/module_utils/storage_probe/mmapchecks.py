# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""mmap coherence: what Cyrus's never-remapped read-only mappings and newer RW mappings need."""

from __future__ import annotations

import errno
import os

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import helpers
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import result
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi

PAGE = sysapi.PAGE
SLOP = 8192  # Cyrus maps this much past end of file


def _pattern(char: str, size: int) -> bytes:
    return (char.encode() * size)[:size]


def mmap_unsupported(steps: result.Steps, exc: OSError) -> dict:
    steps.evidence['mmap_errno'] = sysapi.errname(exc)
    if exc.errno in (errno.ENODEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return steps.fail_now('mmap unsupported: MAP_SHARED mmap() failed with %s' % sysapi.errname(exc))
    return steps.fail_now('mmap() failed: %s' % exc)


def mmap_sees_write(workdir: str) -> dict:
    """A read-only MAP_SHARED mapping, never remapped, sees pwrite()s from every source at once."""
    steps = result.Steps('mmap_sees_write')
    path = os.path.join(workdir, 'cyrus.index')
    size = PAGE + 904
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    other = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, _pattern('a', size), 0)
        try:
            mapping = sysapi.Mapping(fd, size + SLOP)
        except OSError as exc:
            return mmap_unsupported(steps, exc)
        with mapping, helpers.helper() as child:
            def check(key, offset, data, who):
                steps.expect(key, mapping.read(offset, len(data)) == data,
                             'the mapping did not show bytes written by %s' % who)

            data = _pattern('S', 16)
            os.pwrite(fd, data, PAGE - 8)
            check('same_fd_across_page', PAGE - 8, data, 'the same fd (across a page boundary)')
            data = _pattern('O', 32)
            os.pwrite(other, data, 100)
            check('other_fd', 100, data, 'another fd')
            helpers.value(child.call(op='open', path=path))
            data = _pattern('C', 64)
            helpers.value(child.call(op='pwrite', data=helpers.b64(data), offset=PAGE - 32))
            check('other_process_across_page', PAGE - 32, data, 'another process (across a page boundary)')
            data = _pattern('E', 1500)
            os.pwrite(other, data, size)
            check('append_into_slop_other_fd', size, data, 'another fd appending into the slop past EOF')
            data = _pattern('P', 3000)
            helpers.value(child.call(op='pwrite', data=helpers.b64(data), offset=size + 1500))
            check('append_into_slop_other_process', size + 1500, data,
                  'another process appending into the slop (into a new page)')
            steps.evidence['file_size'] = os.fstat(fd).st_size
            steps.evidence['mapped_bytes'] = size + SLOP
    finally:
        os.close(other)
        os.close(fd)
    return steps.finish('a read-only MAP_SHARED mapping saw every write (same fd, other fd, other process, '
                        'page boundary, appends into the slop) at once')


def mmap_write_msync(workdir: str) -> dict:
    """Writes through a PROT_WRITE mapping + msync are seen by pread elsewhere, and the reverse."""
    steps = result.Steps('mmap_write_msync')
    path = os.path.join(workdir, 'cyrus.cache')
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, 2 * PAGE)
        try:
            mapping = sysapi.Mapping(fd, 2 * PAGE, writable=True)
        except OSError as exc:
            return mmap_unsupported(steps, exc)
        with helpers.helper() as child:
            helpers.value(child.call(op='open', path=path))
            try:
                data = _pattern('M', 200)
                mapping.write(PAGE - 100, data)
                mapping.sync()
                seen = helpers.unb64(helpers.value(child.call(op='pread', size=200, offset=PAGE - 100)))
                steps.expect('mapped_write_seen_by_other_process', seen == data,
                             'another process did not read what was stored through the mapping + msync')
                steps.expect('mapped_write_seen_by_pread', os.pread(fd, 200, PAGE - 100) == data,
                             'pread did not return what was stored through the mapping')
                data = _pattern('W', 300)
                helpers.value(child.call(op='pwrite', data=helpers.b64(data), offset=10))
                steps.expect('pwrite_seen_by_mapping', mapping.read(10, 300) == data,
                             'the mapping did not show a pwrite from another process')
            finally:
                mapping.close()
            os.ftruncate(fd, 4 * PAGE)
            try:
                mapping = sysapi.Mapping(fd, 4 * PAGE, writable=True)
            except OSError as exc:
                return mmap_unsupported(steps, exc)
            with mapping:
                steps.expect('grown_file_keeps_data', mapping.read(PAGE - 100, 200) == _pattern('M', 200),
                             'data was lost when the file grew by ftruncate')
                steps.expect('grown_tail_zeroed', mapping.read(2 * PAGE, 64) == bytes(64),
                             'the grown part of the file is not zero')
                data = _pattern('G', 100)
                mapping.write(3 * PAGE + 10, data)
                mapping.sync()
                seen = helpers.unb64(helpers.value(child.call(op='pread', size=100, offset=3 * PAGE + 10)))
                steps.expect('grown_mapping_write_seen', seen == data,
                             'another process did not read what was stored in the grown, remapped file')
    finally:
        os.close(fd)
    return steps.finish('stores through a PROT_WRITE mapping + msync and pwrite()s from another process were '
                        'seen both ways, also after ftruncate growth and remap')
