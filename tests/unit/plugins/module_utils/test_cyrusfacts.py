# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrusfacts: instance discovery, master liveness from a (fake) /proc, mounts, the config plan."""

from __future__ import annotations

import os

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import cyrusfacts
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusfacts import (
    PlanError, filesystem_of, gather, instance_pairs, master_process, mounts, plan_config)

CONF = '/etc/cyrus-ha/be1/imapd.conf'


def fake_proc(root, pid: int, state: str, argv: list[str]) -> None:
    directory = root / str(pid)
    directory.mkdir(parents=True)
    (directory / 'stat').write_text(f'{pid} (master) {state} 1 {pid} {pid} 0 -1\n')
    (directory / 'cmdline').write_bytes(b'\0'.join(a.encode() for a in argv) + b'\0')


@pytest.mark.parametrize('state, argv, conf, running', [
    ('S', ['/usr/lib/cyrus/bin/master', '-C', CONF, '-M', 'x', '-p', 'p', '-d'], CONF, True),
    ('S', ['/usr/lib/cyrus/bin/master', '-C', '/etc/cyrus-ha/be2/imapd.conf'], CONF, False),
    ('S', ['/usr/sbin/cyrmaster', '-l', '32'], None, True),
    ('Z', ['/usr/lib/cyrus/bin/master', '-C', CONF], CONF, False),
    ('S', ['/usr/sbin/sshd', '-D'], None, False),
])
def test_master_process(tmp_path, state, argv, conf, running):
    fake_proc(tmp_path / 'proc', 4242, state, argv)
    pidfile = tmp_path / 'master.pid'
    pidfile.write_text('4242\n')
    assert master_process(str(pidfile), conf, str(tmp_path / 'proc')) == {'pid': 4242, 'running': running}


def test_master_process_without_pidfile_or_process(tmp_path):
    assert master_process(str(tmp_path / 'none.pid')) == {'pid': None, 'running': False}
    (tmp_path / 'junk.pid').write_text('not a pid\n')
    assert master_process(str(tmp_path / 'junk.pid')) == {'pid': None, 'running': False}
    (tmp_path / 'gone.pid').write_text('999999\n')
    assert master_process(str(tmp_path / 'gone.pid'), None, str(tmp_path)) == {'pid': 999999, 'running': False}


def test_mounts_and_filesystem_of(tmp_path):
    info = tmp_path / 'mountinfo'
    info.write_text('22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n'
                    '40 22 0:33 / /srv/cyrus\\040ha rw - xfs /dev/loop3 rw\n'
                    'garbage line\n')
    table = mounts(str(info))
    assert table == [('/', 'ext4', '/dev/vda'), ('/srv/cyrus ha', 'xfs', '/dev/loop3')]
    found = filesystem_of('/srv/cyrus ha/be1/mail', table)
    assert (found['mount'], found['fstype'], found['source']) == ('/srv/cyrus ha', 'xfs', '/dev/loop3')
    assert filesystem_of('/srv/cyrus hax', table)['mount'] == '/'


def test_instance_pairs_takes_valid_names_and_the_default_pair(tmp_path):
    for name in ('be1', 'Bad', 'x' * 40, 'fe_2'):
        (tmp_path / name).mkdir()
        (tmp_path / name / 'imapd.conf').write_text('configdirectory: /c\n')
    default = (str(tmp_path / 'imapd.conf'), str(tmp_path / 'cyrus.conf'))
    assert sorted(instance_pairs(str(tmp_path), True, default)) == ['be1', 'fe_2']
    for path in default:
        open(path, 'w', encoding='utf-8').close()
    assert sorted(instance_pairs(str(tmp_path), True, default)) == ['be1', 'default', 'fe_2']
    assert sorted(instance_pairs(str(tmp_path), False, default)) == ['be1', 'fe_2']


def test_gather_without_cyrus_installed(tmp_path):
    facts = gather(config_root=str(tmp_path), run_root=str(tmp_path), include_default=False,
                   bindirs=(str(tmp_path / 'nobin'),), proc_root=str(tmp_path))
    assert facts == {'version': None, 'version_full': None, 'instances': {}, 'conflicts': [],
                     'paths': {'bindir': None, 'master': None, 'config_root': str(tmp_path),
                               'run_root': str(tmp_path), 'default_imapd_conf': facts['paths']['default_imapd_conf'],
                               'default_cyrus_conf': facts['paths']['default_cyrus_conf']}}


def test_version_comes_from_cyr_info(tmp_path):
    calls = []

    def run(argv):
        calls.append(argv)
        return 0, 'cyrus-imapd 3.6.1-Debian-3.6.1-4+deb12u5\n', ''
    assert cyrusfacts.cyrus_version('/bin', '/etc/imapd.conf', run) == {
        'version': '3.6.1', 'version_full': 'cyrus-imapd 3.6.1-Debian-3.6.1-4+deb12u5'}
    assert calls == [['/bin/cyr_info', '-C', '/etc/imapd.conf', 'version']]
    assert cyrusfacts.cyrus_version('/bin', '/x', lambda argv: (75, '', 'no config')) == {
        'version': None, 'version_full': None}


def test_plan_config_edits_and_refuses(tmp_path):
    path = tmp_path / 'imapd.conf'
    path.write_text('# keep me\nconfigdirectory: /var/lib/cyrus-ha/t\n')
    plan = plan_config(str(path), settings={'servername': 't.cyha.test'})
    assert plan['after'] == '# keep me\nconfigdirectory: /var/lib/cyrus-ha/t\nservername: t.cyha.test\n'
    assert plan['before'] == path.read_text()
    path.write_text('configdirectory /x\n')
    with pytest.raises(PlanError) as info:
        plan_config(str(path), settings={'a': 1})
    assert str(info.value) == (f'{path} does not parse, so it cannot be edited: {path}:1: invalid option name: '
                               'expected "key: value"')
    assert os.path.exists(path)


def test_version_falls_back_to_the_next_config_that_cyr_info_reads(tmp_path):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    (bindir / 'master').write_text('')
    for name in ('a', 'b'):
        (tmp_path / 'etc' / name).mkdir(parents=True)
        (tmp_path / 'etc' / name / 'imapd.conf').write_text('configdirectory: /c\n')
    tried = []

    def run(argv):
        tried.append(argv[2])
        return (0, 'cyrus-imapd 3.6.1\n', '') if argv[2].endswith('/b/imapd.conf') else (75, '', 'bad config')
    facts = gather(config_root=str(tmp_path / 'etc'), run_root=str(tmp_path), include_default=False,
                   default_pair=(str(tmp_path / 'none'), str(tmp_path / 'none2')), bindirs=(str(bindir),), run=run)
    assert facts['version'] == '3.6.1'
    assert tried == [str(tmp_path / 'etc' / 'a' / 'imapd.conf'), str(tmp_path / 'etc' / 'b' / 'imapd.conf')]
    assert facts['paths']['master'] == str(bindir / 'master')


@pytest.mark.parametrize('daemon', ['master', 'cyrus-master'])
def test_the_daemon_directory_of_debian_and_rhel(tmp_path, daemon):
    debian, rhel = tmp_path / 'lib-cyrus-bin', tmp_path / 'libexec-cyrus-imapd'
    debian.mkdir()
    rhel.mkdir()
    (rhel / daemon).write_text('')
    assert cyrusfacts.find_bindir((str(debian), str(rhel))) == str(rhel)
    assert cyrusfacts.find_bindir((str(debian),)) is None


@pytest.mark.parametrize('master', ['/usr/libexec/cyrus-imapd/cyrus-master', '/usr/lib/cyrus/bin/master'])
def test_cyrus_facts_reports_a_running_rhel_and_debian_master(tmp_path, proc, master):
    """The recorded /proc of a RHEL host, whose binary is cyrus-master: the instance runs (and Debian's)."""
    etc, run = tmp_path / 'etc', tmp_path / 'run'
    (etc / 'be1').mkdir(parents=True)
    (etc / 'be2').mkdir()
    for name in ('be1', 'be2'):
        (etc / name / 'imapd.conf').write_text(f'configdirectory: /var/lib/cyrus-ha/{name}\n')
        (etc / name / 'cyrus.conf').write_text('SERVICES {\n}\n')
        (run / name).mkdir(parents=True)
    imapd = str(etc / 'be1' / 'imapd.conf')
    proc.add(4242, [master, '-C', imapd, '-M', str(etc / 'be1' / 'cyrus.conf'), '-p', str(run / 'be1' / 'master.pid'),
                    '-D'], comm=os.path.basename(master))
    (run / 'be1' / 'master.pid').write_text('4242\n')
    (run / 'be2' / 'master.pid').write_text('4242\n')   # be2's stale pidfile names be1's master
    facts = gather(config_root=str(etc), run_root=str(run), include_default=False, with_usage=False,
                   bindirs=(str(tmp_path / 'nobin'),), proc_root=proc.root, run=lambda argv: (1, '', ''))
    be1, be2 = facts['instances']['be1'], facts['instances']['be2']
    assert (be1['running'], be1['master_pid'], be1['pidfile']) == (True, 4242, str(run / 'be1' / 'master.pid'))
    assert (be2['running'], be2['master_pid']) == (False, None)


FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'cyrus', 'debian12')


def dump_of(name: str) -> str:
    with open(os.path.join(FIXTURES, name), encoding='utf-8') as handle:
        return handle.read()


def test_mailbox_list_keeps_where_and_what_each_mailbox_is(tmp_path):
    (tmp_path / 'ctl_mboxlist').write_text('')
    calls = []

    def run(argv):
        calls.append(argv)
        return 0, dump_of('ctl_mboxlist-d-mupdate.json'), ''
    listed = cyrusfacts.mailbox_list('/etc/cyrus-ha/mupdate/imapd.conf', str(tmp_path), run)
    assert calls == [[str(tmp_path / 'ctl_mboxlist'), '-C', '/etc/cyrus-ha/mupdate/imapd.conf', '-d']]
    assert listed['user.bob'] == {'server': 'be2-svc.cyha.test', 'partition': 'default', 'mbtype': 'er'}
    assert sorted(listed) == ['cyrus-ha-lag-be3', 'user.alice', 'user.bob', 'user.dave']
    backend = cyrusfacts.mailbox_list('x', str(tmp_path), lambda argv: (0, dump_of('ctl_mboxlist-d-be2.json'), ''))
    assert backend == {'user.bob': {'partition': 'default', 'mbtype': 'e', 'uniqueid': 'tyg92b237rilkwc2ct19eyrk'}}
    assert cyrusfacts.mailbox_list('x', str(tmp_path), lambda argv: (0, '', '')) == {}


@pytest.mark.parametrize('answer, message', [
    ((75, '', "fatal error: can't read mailboxes file\n"),
     "ctl_mboxlist -C /e/be2/imapd.conf -d failed (exit status 75): fatal error: can't read mailboxes file"),
    ((0, 'user.bob\tdefault\tbob\tlrswipkxtecdan\n', ''),
     'ctl_mboxlist -C /e/be2/imapd.conf -d printed no JSON mailbox list (Cyrus 3 prints one): Expecting value: '
     'line 1 column 1 (char 0)'),
    ((0, '["user.bob"]', ''),
     'ctl_mboxlist -C /e/be2/imapd.conf -d printed JSON that is not a mapping of mailbox names to entries'),
])
def test_mailbox_list_refusals_name_the_instance_and_the_cause(tmp_path, answer, message):
    (tmp_path / 'ctl_mboxlist').write_text('')
    with pytest.raises(ValueError) as info:
        cyrusfacts.mailbox_list('/e/be2/imapd.conf', str(tmp_path), lambda argv: answer)
    assert str(info.value) == f'{tmp_path}/{message}'
    with pytest.raises(ValueError, match=r'^ctl_mboxlist not found in /nowhere: install Cyrus \(Debian: cyrus-common\)$'):
        cyrusfacts.mailbox_list('/e/be2/imapd.conf', '/nowhere', lambda argv: answer)


def test_gather_lists_the_mailboxes_of_running_instances_only(tmp_path):
    etc, run_root, bindir, proc = tmp_path / 'etc', tmp_path / 'run', tmp_path / 'bin', tmp_path / 'proc'
    for name in ('be1', 'be2'):
        (etc / name).mkdir(parents=True)
        (etc / name / 'imapd.conf').write_text(f'configdirectory: /var/lib/cyrus-ha/{name}\n')
        (etc / name / 'cyrus.conf').write_text('SERVICES {\n}\n')
        (run_root / name).mkdir(parents=True)
    bindir.mkdir()
    (bindir / 'ctl_mboxlist').write_text('')
    (bindir / 'master').write_text('')
    (run_root / 'be1' / 'master.pid').write_text('4242\n')
    fake_proc(proc, 4242, 'S', [str(bindir / 'master'), '-C', str(etc / 'be1' / 'imapd.conf')])

    def run(argv):
        if argv[0].endswith('ctl_mboxlist'):
            return (0, dump_of('ctl_mboxlist-d-be2.json'), '') if 'be1' in argv[2] else (75, '', 'not this one')
        return 1, '', ''
    facts = gather(config_root=str(etc), run_root=str(run_root), include_default=False, with_usage=False,
                   bindirs=(str(bindir),), run=run, proc_root=str(proc), with_mailboxes=True)
    assert facts['instances']['be1']['mailboxes'] == {
        'user.bob': {'partition': 'default', 'mbtype': 'e', 'uniqueid': 'tyg92b237rilkwc2ct19eyrk'}}
    assert 'mailboxes' not in facts['instances']['be2'] and 'mailboxes_error' not in facts['instances']['be2']
    (run_root / 'be2' / 'master.pid').write_text('4343\n')
    fake_proc(proc, 4343, 'S', [str(bindir / 'master'), '-C', str(etc / 'be2' / 'imapd.conf')])
    facts = gather(config_root=str(etc), run_root=str(run_root), include_default=False, with_usage=False,
                   bindirs=(str(bindir),), run=run, proc_root=str(proc), with_mailboxes=True)
    assert facts['instances']['be2']['mailboxes_error'] == (
        f'{bindir}/ctl_mboxlist -C {etc}/be2/imapd.conf -d failed (exit status 75): not this one')
