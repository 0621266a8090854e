# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures of the unit tests: recorded /proc trees, and the support directory (/usr/local/lib/cyrus-ha)
as the cyrus_instance role installs it."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(REPO, 'roles', 'cyrus_instance')


class ProcTree:
    """A recorded /proc: <pid>/stat (comm as the kernel writes it, in parentheses), <pid>/cmdline
    (NUL-separated), <pid>/ns/{net,mnt} links, and self/ns for the caller's namespaces."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(os.path.join(self.root, 'self', 'ns'))
        os.symlink('net:[1]', os.path.join(self.root, 'self', 'ns', 'net'))
        os.symlink('mnt:[1]', os.path.join(self.root, 'self', 'ns', 'mnt'))

    def add(self, pid: int, argv: list, state: str = 'S', comm: str = None, netns: str = 'net:[1]',
            mntns: str = 'mnt:[1]') -> int:
        directory = os.path.join(self.root, str(pid))
        os.makedirs(os.path.join(directory, 'ns'))
        comm = comm if comm is not None else os.path.basename(argv[0] if argv else 'kthreadd')[:15]
        with open(os.path.join(directory, 'stat'), 'w', encoding='utf-8') as handle:
            handle.write(f'{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 '
                         f'{1000 + pid} 1 1\n')
        with open(os.path.join(directory, 'cmdline'), 'wb') as handle:
            handle.write(b'\0'.join(a.encode() for a in argv) + (b'\0' if argv else b''))
        os.symlink(netns, os.path.join(directory, 'ns', 'net'))
        os.symlink(mntns, os.path.join(directory, 'ns', 'mnt'))
        return pid


@pytest.fixture(name='proc')
def fixture_proc(tmp_path):
    return ProcTree(tmp_path / 'proc')


def support_files(role: str = 'cyrus_instance', files: str = '__cyrus_instance_support_files',
                  module_utils: str = '__cyrus_instance_module_utils') -> list:
    """The files a role installs in /usr/local/lib/cyrus-ha, from its vars/main.yml (the cyrus_instance
    role's by default; the drill role's traffic script with files='__drill_traffic_files')."""
    role_dir = os.path.join(REPO, 'roles', role)
    with open(os.path.join(role_dir, 'vars', 'main.yml'), encoding='utf-8') as handle:
        data = yaml.safe_load(handle)
    utils = data[module_utils].replace('{{ role_path }}', role_dir)
    return [os.path.normpath(item.replace('{{ role_path }}', role_dir).replace('{{ %s }}' % module_utils, utils))
            for item in data[files]]


@pytest.fixture(name='role_support_files')
def fixture_role_support_files():
    """support_files, for tests of other roles' support files."""
    return support_files


@pytest.fixture(name='support_dir')
def fixture_support_dir(tmp_path):
    """The support directory in tmp_path, each file copied under its own name as the role does."""
    directory = tmp_path / 'cyrus-ha'
    directory.mkdir()
    for path in support_files():
        shutil.copyfile(path, directory / os.path.basename(path))
    return directory


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def side_channel():
    """The cross-host options of one run on this machine: the leader's broker on 127.0.0.1, a fresh port and key."""
    return {'channel_address': '127.0.0.1', 'channel_port': free_port(),
            'channel_key': 'unit-' + os.urandom(12).hex()}
