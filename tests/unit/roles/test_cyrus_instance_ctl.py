# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cyrus_instance role's control script (cyrus_instance_ctl.py), imported by its path: its imapd.conf
reading, its master and instance processes on recorded /proc trees (Debian master, RHEL cyrus-master,
another instance, zombies), and the decisions of status, layout, start, stop and kill (check mode, or with
the signals faked). The real thing: tests/integration/test_ocf_instance.py and the role's lab runs."""

from __future__ import annotations

import grp
import importlib.util
import json
import os
import pwd

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SPEC = importlib.util.spec_from_file_location(
    'cyrus_instance_ctl', os.path.join(REPO, 'roles', 'cyrus_instance', 'files', 'cyrus_instance_ctl.py'))
ctl = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ctl)

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name
DEBIAN = '/usr/lib/cyrus/bin/master'
RHEL = '/usr/libexec/cyrus-imapd/cyrus-master'


class Instance:
    """An instance's files in tmp_path and the control script's arguments for it."""

    def __init__(self, tmp_path, proc, master=DEBIAN):
        self.proc = proc
        self.etc = tmp_path / 'etc'
        self.etc.mkdir()
        self.run_dir = tmp_path / 'run' / 'be9'
        self.imapd = str(self.etc / 'imapd.conf')
        self.cyrus = str(self.etc / 'cyrus.conf')
        self.pidfile = str(self.run_dir / 'master.pid')
        self.master = master
        with open(self.imapd, 'w', encoding='utf-8') as handle:
            handle.write(f'# be9\nConfigDirectory: {tmp_path}/lib\nsyslog_prefix: cyrus-be9\n'
                         f'proc_path: {self.run_dir}/proc\nmboxname_lockpath: {self.run_dir}/lock\n'
                         f'lmtpsocket: {self.run_dir}/socket/lmtp\n')

    def argv(self, action: str, *extra: str) -> list:
        return [action, '--imapd-conf', self.imapd, '--cyrus-conf', self.cyrus, '--pidfile', self.pidfile,
                '--master', self.master, '--user', ME, '--group', MY_GROUP, '--proc-root', self.proc.root,
                '--timeout', '1', *extra]

    def running(self, pid: int = 4242, state: str = 'S') -> int:
        self.proc.add(pid, [self.master, '-C', self.imapd, '-M', self.cyrus, '-p', self.pidfile, '-d'], state)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.pidfile, 'w', encoding='utf-8') as handle:
            handle.write(f'{pid}\n')
        return pid


def ctl_args(argv: list):
    """The argparse namespace main() builds, without running an action."""
    seen = {}

    def capture(args):
        seen['args'] = args
        return {'changed': False}
    real = ctl.start
    ctl.start = capture
    try:
        ctl.main(['start'] + argv[1:])
    finally:
        ctl.start = real
    args = seen['args']
    args.action = argv[0]
    return args


def run(capsys, argv: list) -> tuple:
    code = ctl.main(argv)
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture(name='be9')
def fixture_be9(tmp_path, proc):
    return Instance(tmp_path, proc)


# reading the configuration ---------------------------------------------------------------------------------


def test_imapd_conf_is_read_by_the_collection_s_parser(be9, tmp_path):
    options = ctl.read_imapd_conf(be9.imapd)
    assert options['configdirectory'] == f'{tmp_path}/lib'      # keys lower-cased, as Cyrus reads them
    assert options['syslog_prefix'] == 'cyrus-be9'
    with open(be9.imapd, 'a', encoding='utf-8') as handle:
        handle.write('proc_path /elsewhere\n')
    with pytest.raises(RuntimeError) as info:
        ctl.read_imapd_conf(be9.imapd)
    assert str(info.value) == f'{be9.imapd} does not parse: {be9.imapd}:7: invalid option name: expected "key: value"'
    assert ctl.syslog_prefix(be9.imapd) == 'cyrus'
    assert ctl.syslog_prefix(str(tmp_path / 'missing.conf')) == 'cyrus'


# which processes are the instance's ------------------------------------------------------------------------


@pytest.mark.parametrize('master', [DEBIAN, RHEL, '/usr/sbin/cyrmaster', '/opt/cyrus/mymaster'])
def test_status_finds_the_master_of_each_platform(tmp_path, proc, capsys, master):
    be9 = Instance(tmp_path, proc, master)
    assert run(capsys, be9.argv('status')) == (0, {'changed': False, 'state': 'stopped', 'pid': None,
                                                   'msg': 'master is not running'})
    be9.running()
    assert run(capsys, be9.argv('status')) == (0, {'changed': False, 'state': 'started', 'pid': 4242,
                                                   'msg': 'master is running'})


@pytest.mark.parametrize('argv, state', [
    (['{master}', '-C', '/etc/cyrus-ha/other/imapd.conf'], 'S'),   # the pid now belongs to another instance
    (['{master}', '-C', '{imapd}'], 'Z'),                          # a zombie
    (['/usr/lib/postfix/sbin/master', '-w'], 'S'),                 # postfix's master
])
def test_status_does_not_take_another_process_for_the_master(be9, capsys, argv, state):
    be9.proc.add(4242, [a.format(master=be9.master, imapd=be9.imapd) for a in argv], state)
    be9.run_dir.mkdir(parents=True)
    with open(be9.pidfile, 'w', encoding='utf-8') as handle:
        handle.write('4242\n')
    assert run(capsys, be9.argv('status'))[1]['state'] == 'stopped'


def test_instance_pids_are_this_node_s_processes_carrying_the_conf(be9):
    be9.running(10)
    be9.proc.add(11, ['imapd', '-C', be9.imapd])
    be9.proc.add(12, ['imapd', '-C', be9.imapd], netns='net:[2]')   # the other node's copy
    be9.proc.add(13, ['imapd', '-C', '/etc/cyrus-ha/other/imapd.conf'])
    be9.proc.add(os.getpid(), ['python3', 'cyrus_instance_ctl.py', 'stop', '-C', be9.imapd])
    assert ctl.instance_pids(ctl_args(be9.argv('stop'))) == [10, 11]


# decisions -------------------------------------------------------------------------------------------------


def test_start_of_a_running_master_changes_nothing(be9, capsys):
    be9.running()
    assert run(capsys, be9.argv('start', '--address', '192.0.2.99')) == (0, {
        'changed': False, 'state': 'started', 'pid': 4242, 'msg': 'master is running'})


def test_start_refuses_an_address_that_is_not_on_this_host(be9, capsys):
    assert run(capsys, be9.argv('start', '--address', '192.0.2.99', '--check')) == (1, {
        'changed': False, 'failed': True, 'msg': 'service address 192.0.2.99 is not configured on this host: take the '
                                                 'address up before starting the instance'})


def test_start_in_check_mode_predicts_and_changes_nothing(be9, capsys):
    assert run(capsys, be9.argv('start', '--address', '127.0.0.1', '--check')) == (0, {
        'changed': True, 'state': 'started', 'pid': None, 'msg': 'master would be started'})
    assert not be9.run_dir.exists()


def test_start_reports_a_master_that_does_not_come_up(be9, capsys, tmp_path):
    be9.master = str(tmp_path / 'false-master')
    with open(be9.master, 'w', encoding='utf-8') as handle:
        handle.write('#!/bin/sh\nexit 75\n')
    os.chmod(be9.master, 0o755)
    code, answer = run(capsys, be9.argv('start', '--address', '127.0.0.1'))
    assert code == 1 and answer['msg'] == (f'master for {be9.imapd} did not start (exit status 75): see the syslog '
                                           'lines of cyrus-be9')
    assert sorted(os.listdir(be9.run_dir)) == ['lock', 'proc', 'socket']   # prepare made the run-time directories


def test_stop_when_nothing_runs_changes_nothing(be9, capsys):
    assert run(capsys, be9.argv('stop')) == (0, {'changed': False, 'state': 'stopped', 'pid': None,
                                                 'msg': 'master is not running'})


def test_stop_in_check_mode_predicts(be9, capsys):
    be9.running()
    assert run(capsys, be9.argv('stop', '--check')) == (0, {'changed': True, 'state': 'stopped', 'pid': 4242,
                                                            'msg': 'master would be stopped'})
    assert os.path.exists(be9.pidfile)


def test_stop_signals_the_master_then_kills_what_is_left(be9, capsys, monkeypatch):
    be9.running(10)
    be9.proc.add(11, ['imapd', '-C', be9.imapd])
    be9.proc.add(12, ['imapd', '-C', '/etc/cyrus-ha/other/imapd.conf'])
    sent = []

    def kill(pid, sig):
        sent.append((pid, sig))
        if sig == ctl.signal.SIGKILL or pid == 10:
            with open(os.path.join(be9.proc.root, str(pid), 'stat'), 'w', encoding='utf-8') as handle:
                handle.write(f'{pid} (x) {"Z" if pid == 10 else "X"} 1\n')
    monkeypatch.setattr(ctl.os, 'kill', kill)
    monkeypatch.setattr(ctl.time, 'sleep', lambda seconds: None)
    assert run(capsys, be9.argv('stop')) == (0, {'changed': True, 'state': 'stopped', 'pid': 10,
                                                 'msg': 'master stopped'})
    assert sent == [(10, ctl.signal.SIGTERM), (11, ctl.signal.SIGKILL)]
    assert not os.path.exists(be9.pidfile)


def test_stop_kills_a_master_left_alone_in_its_shutdown(be9, capsys, monkeypatch):
    """Every service has exited but master spins on (cyrus-imapd#5309): it is killed once it has been the
    instance's last process for MASTER_ALONE_GRACE, long before the timeout."""
    be9.running(10)
    be9.proc.add(11, ['lmtpd', '-C', be9.imapd])
    sent = []
    clock = [1000.0]

    def kill(pid, sig):
        sent.append((pid, sig))
        if pid == 10 and sig == ctl.signal.SIGTERM:   # the services exit at once; master stays
            with open(os.path.join(be9.proc.root, '11', 'stat'), 'w', encoding='utf-8') as handle:
                handle.write('11 (x) X 1\n')
        if sig == ctl.signal.SIGKILL:
            with open(os.path.join(be9.proc.root, str(pid), 'stat'), 'w', encoding='utf-8') as handle:
                handle.write(f'{pid} (x) X 1\n')

    def sleep(seconds):
        clock[0] += seconds
    monkeypatch.setattr(ctl.os, 'kill', kill)
    monkeypatch.setattr(ctl.time, 'sleep', sleep)
    monkeypatch.setattr(ctl.time, 'monotonic', lambda: clock[0])
    code, answer = run(capsys, be9.argv('stop', '--timeout', '30'))
    assert (code, answer['changed'], answer['pid']) == (0, True, 10)
    assert answer['msg'] == ('master stopped (every service had exited and master still ran 0.5 s later, hung in its '
                             'shutdown: killed)')
    assert sent == [(10, ctl.signal.SIGTERM), (10, ctl.signal.SIGKILL)]
    assert 0.5 <= clock[0] - 1000.0 < 1, 'killed after the grace, not at the 30 s timeout'
    assert not os.path.exists(be9.pidfile)


def test_a_master_alone_but_with_a_live_child_is_waited_for(be9, capsys, monkeypatch):
    """A service started without -C (a hand-written cyrus.conf) is invisible by command line but is master's
    child: master is not taken for hung while it runs; a zombie child does not count."""
    be9.running(10)
    task = os.path.join(be9.proc.root, '10', 'task', '10')
    os.makedirs(task)
    with open(os.path.join(task, 'children'), 'w', encoding='ascii') as handle:
        handle.write('21 22 ')
    be9.proc.add(21, ['/usr/lib/cyrus/bin/imapd'])            # no -C
    be9.proc.add(22, ['/usr/lib/cyrus/bin/lmtpd'], 'Z')
    assert ctl.live_children(10, be9.proc.root) == [21]
    sent = []
    clock = [1000.0]

    def kill(pid, sig):
        sent.append((pid, sig))
        if sig == ctl.signal.SIGKILL:
            with open(os.path.join(be9.proc.root, str(pid), 'stat'), 'w', encoding='utf-8') as handle:
                handle.write(f'{pid} (x) X 1\n')
    monkeypatch.setattr(ctl.os, 'kill', kill)
    monkeypatch.setattr(ctl.time, 'sleep', lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    monkeypatch.setattr(ctl.time, 'monotonic', lambda: clock[0])
    code, answer = run(capsys, be9.argv('stop', '--timeout', '30'))
    assert (code, answer['msg']) == (0, 'master stopped')
    assert clock[0] - 1000.0 >= 30, 'waited for the timeout, not the 2 s grace'
    assert sent == [(10, ctl.signal.SIGTERM), (10, ctl.signal.SIGKILL)]


def test_kill_in_check_mode_and_with_nothing_running(be9, capsys):
    assert run(capsys, be9.argv('kill')) == (0, {'changed': False, 'state': 'stopped', 'pid': None,
                                                 'msg': 'no process of the instance runs'})
    be9.running()
    assert run(capsys, be9.argv('kill', '--check')) == (0, {'changed': True, 'state': 'killed', 'pid': 4242,
                                                            'msg': 'would be killed'})


def test_layout_and_prepare_make_the_directories_once(be9, capsys, tmp_path):
    wanted = [str(tmp_path / 'lib'), str(tmp_path / 'lib' / 'db')]
    argv = be9.argv('layout', *[f'--directory={d}' for d in wanted])
    assert run(capsys, argv + ['--check'])[1]['changed'] is True and not os.path.exists(wanted[0])
    assert run(capsys, argv) == (0, {'changed': True, 'state': 'laid out', 'pid': None, 'msg': ' '.join(wanted)})
    assert all(os.stat(d).st_mode & 0o777 == 0o750 for d in wanted)
    assert run(capsys, argv)[1]['changed'] is False
    made = run(capsys, be9.argv('prepare'))[1]
    assert made['changed'] is True and sorted(made['msg'].split()) == sorted(
        [str(be9.run_dir), str(be9.run_dir / 'proc'), str(be9.run_dir / 'lock'), str(be9.run_dir / 'socket')])


def test_layout_refuses_a_relative_directory(be9, capsys):
    assert run(capsys, be9.argv('layout', '--directory=spool')) == (1, {
        'changed': False, 'failed': True, 'msg': "directory 'spool' is not an absolute path"})


# take-address: the unit's ExecStartPre at boot (an instance whose service address is its own)

def test_take_address_leaves_an_address_that_is_up_alone(monkeypatch):
    def no_probe(*args, **kwargs):
        raise AssertionError('no probe for an address that is up')
    monkeypatch.setattr(ctl.announce, 'probe', no_probe)
    expected = {'changed': False, 'state': 'present', 'pid': None, 'msg': '127.0.0.1 is already on this host'}
    assert ctl.take_address('127.0.0.1/8', None) == expected


class FakeRun:
    """subprocess.run for take-address: `ip -j addr show` answers no address, everything else is recorded."""
    def __init__(self):
        self.calls = []

    def __call__(self, argv, **kwargs):
        if argv[:3] == ['ip', '-j', 'addr']:
            return type('Done', (), {'stdout': '[{"ifname": "eth9", "addr_info": [{"local": "198.51.100.11"}]}]'})()
        self.calls.append(argv)
        return type('Done', (), {'stdout': ''})()


def fake_link(monkeypatch, tmp_path, operstate='up'):
    (tmp_path / 'address').write_text('02:00:00:00:00:01\n')
    (tmp_path / 'operstate').write_text(operstate + '\n')
    real_open = open

    def fake_open(path, *args, **kwargs):
        if isinstance(path, str) and path.startswith('/sys/class/net/eth9/'):
            path = tmp_path / path.rsplit('/', 1)[1]
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr('builtins.open', fake_open)


def test_take_address_refuses_an_address_another_host_answers(monkeypatch, tmp_path):
    monkeypatch.setattr(ctl.announce, 'probe', lambda *a, **k: {'conflict': True, 'mac': '02:00:00:00:00:09'})
    run = FakeRun()
    monkeypatch.setattr(ctl.subprocess, 'run', run)
    fake_link(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError) as err:
        ctl.take_address('198.51.100.111/24', 'eth9')
    assert str(err.value) == ('198.51.100.111 answers from 02:00:00:00:00:09 on eth9: another host holds the service '
                              'address, refusing to take it (and to start the instance)')
    assert run.calls == []


def test_take_address_does_not_probe_a_link_that_is_down(monkeypatch, tmp_path):
    def no_probe(*args, **kwargs):
        raise AssertionError('a probe on a dark link proves nothing')
    monkeypatch.setattr(ctl.announce, 'probe', no_probe)
    run = FakeRun()
    monkeypatch.setattr(ctl.subprocess, 'run', run)
    fake_link(monkeypatch, tmp_path, operstate='down')
    with pytest.raises(RuntimeError) as err:
        ctl.take_address('198.51.100.111/24', 'eth9')
    assert str(err.value) == 'eth9 is down: cannot probe for 198.51.100.111, not taking it'
    assert run.calls == []


def test_take_address_adds_a_free_address_then_announces_it(monkeypatch, tmp_path):
    probes, announced = [], []
    monkeypatch.setattr(ctl.announce, 'probe', lambda *a, **k: probes.append((a, k)) or {'conflict': False, 'mac': None})
    monkeypatch.setattr(ctl.announce, 'announce', lambda *a, **k: announced.append((a, k)))
    run = FakeRun()
    monkeypatch.setattr(ctl.subprocess, 'run', run)
    fake_link(monkeypatch, tmp_path)
    assert ctl.take_address('198.51.100.111/24', 'eth9') == {
        'changed': True, 'state': 'present', 'pid': None, 'msg': '198.51.100.111/24 added on eth9'}
    assert probes == [(('eth9', '02:00:00:00:00:01', '198.51.100.111'), {'count': 3, 'timeout': 3.0})]
    assert run.calls == [['ip', 'addr', 'add', '198.51.100.111/24', 'dev', 'eth9']]
    assert announced == [(('eth9', '02:00:00:00:00:01', '198.51.100.111'), {'count': 3, 'interval': 0.2})]
    # an address already on the host is left alone, without a probe
    assert ctl.take_address('198.51.100.11/24', 'eth9')['changed'] is False and len(probes) == 1


@pytest.mark.parametrize('argv, message', [
    (['take-address'], 'take-address needs one --address IP/PREFIX'),
    (['take-address', '--address', '198.51.100.111'], 'take-address needs --address IP/PREFIX, not \'198.51.100.111\''),
    (['status', '--pidfile', '/run/x.pid'], 'status needs --imapd-conf, --cyrus-conf, --master'),
])
def test_take_address_and_the_other_actions_refuse_missing_arguments(capsys, argv, message):
    try:
        code = ctl.main(argv)
    except SystemExit as exc:       # argparse's error: exit 2 and the message on stderr
        code = exc.code
    out = capsys.readouterr()
    assert code in (1, 2)
    assert message in out.err + out.out
