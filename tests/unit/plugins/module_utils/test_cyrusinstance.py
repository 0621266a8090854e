# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrusinstance: the instance's paths, each platform's master, and THE check of "is this instance's master
running", on recorded /proc trees of Debian (master) and RHEL (cyrus-master)."""

from __future__ import annotations

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import cyrusinstance
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusinstance import master_status

BE1 = cyrusinstance.paths('be1')
BE2 = cyrusinstance.paths('be2')
DEBIAN = '/usr/lib/cyrus/bin/master'
RHEL = '/usr/libexec/cyrus-imapd/cyrus-master'


def test_paths_of_an_instance():
    assert BE1 == {'config_dir': '/etc/cyrus-ha/be1', 'run_dir': '/run/cyrus-ha/be1',
                   'imapd_conf': '/etc/cyrus-ha/be1/imapd.conf', 'cyrus_conf': '/etc/cyrus-ha/be1/cyrus.conf',
                   'pidfile': '/run/cyrus-ha/be1/master.pid'}
    assert cyrusinstance.paths('t', '/e', '/r')['pidfile'] == '/r/t/master.pid'


@pytest.mark.parametrize('name, valid', [('be1', True), ('fe_2', True), ('a-b', True), ('Be1', False), ('1be', False),
                                         ('', False), ('x' * 32, False), ('be1/..', False), (None, False)])
def test_instance_names(name, valid):
    assert cyrusinstance.valid_name(name) is valid


def test_masters_of_each_platform():
    assert cyrusinstance.MASTER_CANDIDATES == (DEBIAN, RHEL, '/usr/sbin/cyrmaster')
    assert cyrusinstance.BINDIRS == ('/usr/lib/cyrus/bin', '/usr/libexec/cyrus-imapd')


@pytest.mark.parametrize('daemon', ['master', 'cyrus-master', 'cyrmaster'])
def test_bindir_and_master_binary(tmp_path, daemon):
    debian, rhel = tmp_path / 'debian', tmp_path / 'rhel'
    debian.mkdir()
    rhel.mkdir()
    (rhel / daemon).write_text('')
    assert cyrusinstance.find_bindir((str(debian), str(rhel))) == str(rhel)
    assert cyrusinstance.master_binary(str(rhel)) == str(rhel / daemon)
    assert cyrusinstance.master_binary(None) is None
    assert cyrusinstance.default_master((str(debian / 'master'), str(rhel / daemon))) == str(rhel / daemon)
    assert cyrusinstance.default_master((str(debian / 'master'),)) == str(debian / 'master')


@pytest.mark.parametrize('argv, values', [
    (['master', '-C', '/a', '-M', '/b'], ['/a']),
    (['imapd', '-C/a'], ['/a']),
    (['imapd', '-C'], []),
    (['imapd', '-C', '/a', '-C', '/b'], ['/a', '/b']),
    ([], []),
])
def test_config_args(argv, values):
    assert cyrusinstance.config_args(argv) == values
    assert cyrusinstance.carries_config(argv, '/a') is ('/a' in values)


def pidfile(tmp_path, pid) -> str:
    path = tmp_path / 'master.pid'
    path.write_text(f'{pid}\n')
    return str(path)


@pytest.mark.parametrize('argv, state, comm, running', [
    ([DEBIAN, '-C', BE1['imapd_conf'], '-M', BE1['cyrus_conf'], '-p', BE1['pidfile'], '-d'], 'S', None, True),
    ([RHEL, '-C', BE1['imapd_conf'], '-M', BE1['cyrus_conf'], '-p', BE1['pidfile'], '-D'], 'S', None, True),
    (['/usr/sbin/cyrmaster', '-C', BE1['imapd_conf']], 'R', None, True),
    ([RHEL, '-C' + BE1['imapd_conf']], 'S', 'cyrus (master) x', True),   # comm with spaces and parentheses
    ([DEBIAN, '-C', BE1['imapd_conf']], 'Z', None, False),               # a zombie is gone
    ([RHEL, '-C', BE1['imapd_conf']], 'X', None, False),
    ([DEBIAN, '-C', BE2['imapd_conf']], 'S', None, False),               # ANOTHER instance's master
    ([RHEL, '-C', BE2['imapd_conf']], 'S', None, False),
    ([RHEL], 'S', None, False),                                           # no -C: the distribution's master
    (['/usr/lib/postfix/sbin/master', '-w'], 'S', None, False),
    (['/usr/libexec/cyrus-imapd/imapd', '-C', BE1['imapd_conf']], 'S', None, False),  # a service, not master
    ([], 'S', None, False),                                               # a kernel thread
])
def test_master_status(tmp_path, proc, argv, state, comm, running):
    proc.add(4242, argv, state, comm)
    assert master_status(pidfile(tmp_path, 4242), BE1['imapd_conf'], proc.root) == {'pid': 4242, 'running': running}


def test_master_status_without_config_match_or_pidfile(tmp_path, proc):
    proc.add(4242, [RHEL, '-C', BE2['imapd_conf']])
    assert master_status(pidfile(tmp_path, 4242), None, proc.root) == {'pid': 4242, 'running': True}
    assert master_status(pidfile(tmp_path, 4343), None, proc.root) == {'pid': 4343, 'running': False}
    assert master_status(str(tmp_path / 'none.pid'), None, proc.root) == {'pid': None, 'running': False}
    assert master_status(None, None, proc.root) == {'pid': None, 'running': False}
    (tmp_path / 'junk.pid').write_text('junk\n')
    assert master_status(str(tmp_path / 'junk.pid'), None, proc.root) == {'pid': None, 'running': False}


def test_a_custom_master_name_counts_only_when_given(tmp_path, proc):
    proc.add(4242, ['/opt/cyrus/bin/mymaster', '-C', BE1['imapd_conf']])
    assert not master_status(pidfile(tmp_path, 4242), BE1['imapd_conf'], proc.root)['running']
    names = cyrusinstance.MASTER_NAMES + ('mymaster',)
    assert master_status(pidfile(tmp_path, 4242), BE1['imapd_conf'], proc.root, names)['running']


def test_instance_pids_are_this_node_s_live_processes_of_the_instance(proc):
    proc.add(10, [DEBIAN, '-C', BE1['imapd_conf'], '-d'])
    proc.add(11, ['imapd', '-C', BE1['imapd_conf'], '-U', '30'])
    proc.add(12, ['lmtpd', '-C' + BE1['imapd_conf']])
    proc.add(13, ['imapd', '-C', BE1['imapd_conf']], state='Z')             # zombie
    proc.add(14, ['imapd', '-C', BE2['imapd_conf']])                        # another instance
    proc.add(15, [DEBIAN, '-C', BE1['imapd_conf']], netns='net:[2]')        # the spare's copy (other node)
    proc.add(16, ['sh', '-c', 'grep -C 3 x'])
    assert cyrusinstance.instance_pids(BE1['imapd_conf'], proc.root) == [10, 11, 12]
    assert cyrusinstance.instance_pids(BE1['imapd_conf'], proc.root, exclude=(11,)) == [10, 12]
    assert cyrusinstance.instance_pids(BE1['imapd_conf'], proc.root, same_netns=False) == [10, 11, 12, 15]
    assert cyrusinstance.instance_pids(BE2['imapd_conf'], proc.root) == [14]
