# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fsync, fdatasync, msync and directory fsync succeed, and the data reads back elsewhere."""

from __future__ import annotations

import os

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import helpers
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import result
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi


def fsync_family(workdir: str) -> dict:
    steps = result.Steps('fsync')
    path = os.path.join(workdir, 'cyrus.squat')
    data = os.urandom(3 * sysapi.PAGE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    errors = []

    def attempt(key, func, *args):
        try:
            func(*args)
        except OSError as exc:
            errors.append('%s: %s' % (key, sysapi.errname(exc)))
            steps.evidence[key] = sysapi.errname(exc)
            return False
        steps.evidence[key] = 'ok'
        return True

    try:
        os.write(fd, data)
        attempt('fsync', os.fsync, fd)
        os.pwrite(fd, b'D' * 100, 50)
        attempt('fdatasync', getattr(os, 'fdatasync', os.fsync), fd)
        try:
            mapping = sysapi.Mapping(fd, len(data), writable=True)
        except OSError as exc:
            steps.evidence['msync'] = 'not run: mmap %s' % sysapi.errname(exc)
        else:
            with mapping:
                mapping.write(sysapi.PAGE, b'Y' * 100)
                attempt('msync', mapping.sync)
        dfd = os.open(workdir, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
        try:
            attempt('dir_fsync', os.fsync, dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(fd)
    expected = bytearray(data)
    expected[50:150] = b'D' * 100
    if steps.evidence.get('msync') == 'ok':
        expected[sysapi.PAGE:sysapi.PAGE + 100] = b'Y' * 100
    with open(path, 'rb') as handle:
        steps.expect('reads_back', handle.read() == bytes(expected), 'the synced data did not read back through a '
                     'new fd')
    with helpers.helper() as child:
        seen = helpers.unb64(helpers.value(child.call(op='read_path', path=path)))
    steps.expect('other_process_reads_back', seen == bytes(expected),
                 'another process did not read back the synced data')
    if errors:
        steps.failures.insert(0, 'sync calls failed: ' + ', '.join(errors))
    return steps.finish('fsync, fdatasync, msync and directory fsync returned 0 and the data read back')
