# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""procfs: /proc/<pid>/stat read robustly (a comm with spaces and parentheses, zombies), cmdline, pidfiles,
namespaces, on recorded /proc trees and on this process's real /proc entry."""

from __future__ import annotations

import os

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import procfs


@pytest.mark.parametrize('text, comm, state, ppid, start', [
    ('42 (master) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 987 1 1\n', 'master', 'S', 1, 987),
    ('42 (cyrus-master) R 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 987 1 1\n', 'cyrus-master', 'R', 1, 987),
    ('7 (a b) c) Z 3 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 1 1\n', 'a b) c', 'Z', 3, 5),
    ('7 ((sd-pam)) S 3 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 1 1\n', '(sd-pam)', 'S', 3, 5),
    ('7 (x) S 9\n', 'x', 'S', 9, None),       # truncated: no start time
    ('7 () S 9 1', '', 'S', 9, None),
])
def test_parse_stat_finds_the_fields_after_the_last_parenthesis(text, comm, state, ppid, start):
    found = procfs.parse_stat(text)
    assert (found.comm, found.state, found.ppid, found.starttime) == (comm, state, ppid, start)


@pytest.mark.parametrize('text', ['', 'garbage', '7 (x', '7 (x) S', 'x (y) S 1 2'])
def test_parse_stat_refuses_what_is_not_a_stat_line(text):
    assert procfs.parse_stat(text) is None


def test_recorded_tree(proc):
    proc.add(10, ['/usr/lib/cyrus/bin/master', '-C', '/etc/cyrus-ha/be1/imapd.conf'])
    proc.add(11, ['imapd'], state='Z')
    proc.add(12, ['x'], comm='we (ird) name')
    assert procfs.pids(proc.root) == [10, 11, 12]
    assert procfs.state(10, proc.root) == 'S' and procfs.alive(10, proc.root)
    assert procfs.state(11, proc.root) == 'Z' and not procfs.alive(11, proc.root)
    assert procfs.state(99, proc.root) == '' and not procfs.alive(99, proc.root)
    assert procfs.read_stat(12, proc.root).comm == 'we (ird) name' and procfs.alive(12, proc.root)
    assert procfs.cmdline(10, proc.root) == ['/usr/lib/cyrus/bin/master', '-C', '/etc/cyrus-ha/be1/imapd.conf']
    assert procfs.cmdline(99, proc.root) == []
    assert procfs.start_time(10, proc.root) == 1010 and procfs.start_time(99, proc.root) is None
    assert procfs.namespace(10, 'net', proc.root) == procfs.namespace('self', 'net', proc.root) == 'net:[1]'
    assert procfs.namespace(99, 'net', proc.root) is None
    assert procfs.pids(os.path.join(proc.root, 'missing')) == []


def test_this_process_in_the_real_proc():
    me = os.getpid()
    assert procfs.alive(me) and procfs.state(me) in ('R', 'S')
    assert procfs.start_time(me) > 0
    assert procfs.cmdline(me)[0]
    assert me in procfs.pids()
    assert procfs.namespace(me, 'net') == procfs.namespace('self', 'net')


@pytest.mark.parametrize('content, pid', [('4242\n', 4242), ('4242 extra\n', 4242), ('', None), ('x\n', None),
                                          ('-1\n', None), (None, None)])
def test_read_pidfile(tmp_path, content, pid):
    path = tmp_path / 'master.pid'
    if content is not None:
        path.write_text(content)
    assert procfs.read_pidfile(str(path)) == pid
