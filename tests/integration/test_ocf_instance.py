# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OCF resource agent (ocf:cyrus:instance) on a real Cyrus instance: the standalone `cyhaimap`
of cyha_imapserver on lab host be2 (198.51.100.246), driven by the agent inside be2's network, mount
and UTS namespaces as Pacemaker would run it there, with the real control script; then Pacemaker's
own contract check, ocf-tester, on the same instance."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest
import yaml

import cyha_imapserver
import labutil

pytestmark = pytest.mark.lab

HOST, ADDRESS, NAME = cyha_imapserver.HOST, cyha_imapserver.ADDRESS, cyha_imapserver.NAME
IMAPD_CONF, CYRUS_CONF = f'{cyha_imapserver.ETC}/imapd.conf', f'{cyha_imapserver.ETC}/cyrus.conf'
PIDFILE = f'{cyha_imapserver.RUN}/master.pid'
FOREIGN = '198.51.100.247'   # on no lab host
ABSENT = f'/etc/cyrus-ha/{NAME}-absent'
AGENT_SRC = os.path.join(labutil.REPO, 'roles', 'cluster', 'files', 'cyrus_instance_ocf.py')
ROLE = os.path.join(labutil.REPO, 'roles', 'cyrus_instance')
CLEAN_ENV = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LC_ALL': 'C.UTF-8', 'OCF_ROOT': '/usr/lib/ocf'}
GREETING_TIMEOUT = 2


def sshd_pid() -> int:
    """The PID of be2's sshd: its namespaces are be2's."""
    with open(os.path.join(labutil.LAB_DIR, 'lab.json'), encoding='utf-8') as handle:
        return int(json.load(handle)['pids'][HOST])


def on_be2(argv: list[str], environ: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run argv inside be2's network, mount and UTS namespaces (no SSH), with a clean environment."""
    return subprocess.run(['nsenter', '--target', str(sshd_pid()), '--net', '--mount', '--uts', '--', *argv],
                          env=dict(CLEAN_ENV, **(environ or {})), capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(name='installed', scope='module')
def fixture_installed():
    """The agent and the support directory (the control script and the module_utils both import, the
    list of the cyrus_instance role's vars/main.yml) in a directory every user can read (ocf-tester runs
    the meta-data as nobody), as the cluster role installs them: the agent executable, run by its path
    (beside the support files here; installed, it imports them from /usr/local/lib/cyrus-ha)."""
    directory = tempfile.mkdtemp(prefix='cyha-ocf-')
    os.chmod(directory, 0o755)
    paths = {'agent': os.path.join(directory, 'instance'), 'ctl': os.path.join(directory, 'cyrus_instance_ctl.py')}
    with open(os.path.join(ROLE, 'vars', 'main.yml'), encoding='utf-8') as handle:
        data = yaml.safe_load(handle)
    module_utils = data['__cyrus_instance_module_utils'].replace('{{ role_path }}', ROLE)
    for item in data['__cyrus_instance_support_files']:
        source = item.replace('{{ role_path }}', ROLE).replace('{{ __cyrus_instance_module_utils }}', module_utils)
        target = os.path.join(directory, os.path.basename(source))
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)
    shutil.copyfile(AGENT_SRC, paths['agent'])
    os.chmod(paths['agent'], 0o755)
    yield paths
    shutil.rmtree(directory, ignore_errors=True)


def params(installed: dict, **changes) -> dict:
    """The agent's parameters for cyhaimap (None: unset); the master is the agent's default."""
    values = {'instance': NAME, 'imapd_conf': IMAPD_CONF, 'cyrus_conf': CYRUS_CONF, 'pidfile': PIDFILE,
              'ctl': installed['ctl'], 'address': ADDRESS, 'port': '143', 'greeting_timeout': str(GREETING_TIMEOUT)}
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def agent(installed: dict, action: str, interval: str = '10000', **changes) -> subprocess.CompletedProcess:
    """One action of the agent in be2, as Pacemaker runs it (a recurring monitor unless interval='0')."""
    environ = {f'OCF_RESKEY_{k}': v for k, v in params(installed, **changes).items()}
    environ.update(OCF_RESKEY_CRM_meta_timeout='30000', OCF_RESKEY_CRM_meta_interval=interval,
                   OCF_RESOURCE_INSTANCE='cyha-ocf')
    return on_be2([installed['agent'], action], environ)


def rc(installed: dict, action: str, **kwargs) -> int:
    return agent(installed, action, **kwargs).returncode


def master_pid() -> int | None:
    """The PID in the instance's pidfile (in be2's own /run), if any."""
    proc = on_be2(['cat', PIDFILE])
    return int(proc.stdout.split()[0]) if proc.returncode == 0 and proc.stdout.strip() else None


def carrying_the_conf() -> list[int]:
    """Every live process (the lab shares this machine's PID namespace) started with -C IMAPD_CONF."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/cmdline', 'rb') as handle:
                argv = handle.read().decode('utf-8', 'replace').split('\0')
        except OSError:
            continue
        if any(a == '-C' and argv[i + 1:i + 2] == [IMAPD_CONF] for i, a in enumerate(argv)) \
                and cyha_imapserver.alive(int(entry)):
            found.append(int(entry))
    return found


def greeting() -> str:
    """The first line the service address sends, seen from the lab machine (the lab's controller)."""
    with socket.create_connection((ADDRESS, 143), timeout=10) as conn:
        return conn.recv(200).decode('utf-8', 'replace').splitlines()[0]


def thaw() -> None:
    for pid in carrying_the_conf():
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


@pytest.fixture(name='server', scope='module')
def fixture_server(lab, installed):
    """cyha_imapserver's instance, for this module only: the agent's start gives the master a new PID, so it is
    stopped through the agent at the end and then removed by its pidfile (not by the first master's PID)."""
    assert lab
    pid = cyha_imapserver.start()
    try:
        yield pid
    finally:
        thaw()
        stopped = agent(installed, 'stop')
        cyha_imapserver.remove(None)
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(name='running')
def fixture_running(server, installed):
    """Each test starts and ends with the instance running (started by the agent if a test stopped it)."""
    assert server
    started = agent(installed, 'start')
    assert started.returncode == 0, started.stderr
    yield
    thaw()
    started = agent(installed, 'start')
    assert started.returncode == 0, started.stderr


@pytest.mark.usefixtures('running')
def test_lifecycle_on_a_real_instance(server, installed):
    # the fixture's own master (started without the agent) is recognised and healthy
    assert master_pid() == server
    assert rc(installed, 'monitor') == 0

    stop = agent(installed, 'stop')
    assert stop.returncode == 0, stop.stderr
    assert f'instance {NAME}: stopped' in stop.stderr
    assert rc(installed, 'monitor') == 7
    assert carrying_the_conf() == []
    assert master_pid() is None
    again = agent(installed, 'stop')
    assert again.returncode == 0 and f'instance {NAME}: already stopped' in again.stderr, again.stderr

    start = agent(installed, 'start')
    assert start.returncode == 0, start.stderr
    assert rc(installed, 'monitor') == 0
    assert greeting().startswith('* OK')
    pid = master_pid()
    assert pid and pid != server and pid in carrying_the_conf()
    assert rc(installed, 'start') == 0
    assert master_pid() == pid and cyha_imapserver.alive(pid)

    # a hung instance: the master runs, but nobody greets. The master alone is not enough: an idle imapd
    # it forked for an earlier connection accepts on the same listening socket and greets.
    frozen = carrying_the_conf()
    assert pid in frozen
    try:
        for each in frozen:
            os.kill(each, signal.SIGSTOP)
        hung = agent(installed, 'monitor')
    finally:
        thaw()
    assert hung.returncode == 1, hung.stderr
    assert f'instance {NAME}: the master runs (pid {pid}) but {ADDRESS}:143 gives no IMAP greeting' in hung.stderr
    assert labutil.poll(lambda: rc(installed, 'monitor') == 0, 30, interval=0.5)
    assert master_pid() == pid


@pytest.mark.usefixtures('running')
def test_validate_all_reports_a_missing_imapd_conf(installed):
    assert rc(installed, 'validate-all') == 0
    missing = f'{cyha_imapserver.ETC}/missing-imapd.conf'
    proc = agent(installed, 'validate-all', imapd_conf=missing)
    assert proc.returncode == 5, proc.stderr   # OCF_ERR_INSTALLED: this node only
    assert f'instance {NAME}: the configuration file {missing}' in proc.stderr


@pytest.mark.usefixtures('running')
def test_start_refuses_an_address_that_is_not_on_the_host(installed):
    assert rc(installed, 'stop') == 0
    proc = agent(installed, 'start', address=FOREIGN)
    assert proc.returncode == 1, proc.stderr
    assert f'service address {FOREIGN} is not configured on this host' in proc.stderr
    assert carrying_the_conf() == [] and rc(installed, 'monitor') == 7


@pytest.mark.parametrize('changes', [
    {'imapd_conf': f'{ABSENT}/imapd.conf', 'cyrus_conf': f'{ABSENT}/cyrus.conf'},
    {'instance': 'cyhaimap-absent', 'imapd_conf': None, 'cyrus_conf': None, 'pidfile': None},
])
@pytest.mark.usefixtures('running')
def test_probe_and_stop_without_configuration_files(installed, changes):
    """A node without the instance's files (its volume elsewhere): the probe says not running and the
    stop succeeds, and neither touches the running cyhaimap."""
    pid = master_pid()
    probe = agent(installed, 'monitor', interval='0', **changes)
    assert probe.returncode == 7, probe.stderr
    assert rc(installed, 'validate-all', **changes) == 5   # OCF_ERR_INSTALLED: files missing on this node
    stop = agent(installed, 'stop', **changes)
    assert stop.returncode == 0, stop.stderr
    assert master_pid() == pid and pid in carrying_the_conf()


def comm(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/comm', encoding='utf-8') as handle:
            return handle.read().strip()
    except OSError:
        return ''


def ctl(installed: dict, action: str, kill_at: str = '') -> subprocess.CompletedProcess:
    """The control script itself in be2, as the agent and the role run it; kill_at: the test hook's step."""
    argv = ['/usr/bin/python3', installed['ctl'], action, '--imapd-conf', IMAPD_CONF, '--cyrus-conf', CYRUS_CONF,
            '--pidfile', PIDFILE, '--master', '/usr/lib/cyrus/bin/master', '--address', ADDRESS]
    return on_be2(argv, {'CYRUS_HA_TEST_KILL_AT': kill_at} if kill_at else None)


@pytest.mark.parametrize('action, step', [('start', 'prepared'), ('start', 'spawned'), ('stop', 'signalled'),
                                          ('stop', 'reaped'), ('restart', 'reaped'), ('restart', 'spawned'),
                                          ('kill', 'killed-first')])
@pytest.mark.usefixtures('running')
def test_the_control_script_killed_at_a_step_is_finished_by_the_next_run(installed, action, step):
    """SIGKILL at each step boundary of start, stop, restart and kill: the next run of the same action
    leaves the instance as that action promises (one master serving, or nothing of it left), and the run
    after that changes nothing."""
    if action == 'start':
        assert json.loads(ctl(installed, 'stop').stdout)['state'] == 'stopped'
    before = carrying_the_conf()
    interrupted = ctl(installed, action, kill_at=step)
    assert interrupted.returncode == -signal.SIGKILL, interrupted.stdout + interrupted.stderr
    assert interrupted.stdout == ''
    again = ctl(installed, action)
    assert again.returncode == 0, again.stdout + again.stderr
    # a kill goes on with the processes the first one left (state killed), or finds none left (stopped)
    assert json.loads(again.stdout)['state'] in {'start': ['started'], 'restart': ['started'], 'stop': ['stopped'],
                                                 'kill': ['killed', 'stopped']}[action]
    if action in ('start', 'restart'):
        pid = master_pid()
        assert pid and pid in carrying_the_conf() and pid not in before
        masters = [p for p in carrying_the_conf() if comm(p) == 'master']
        assert masters == [pid], masters
        assert labutil.poll(lambda: rc(installed, 'monitor') == 0, 30, interval=0.2)
        assert greeting().startswith('* OK')
        settled = ctl(installed, 'start')
    else:
        assert carrying_the_conf() == []
        settled = ctl(installed, action)
    assert json.loads(settled.stdout)['changed'] is False, settled.stdout


@pytest.mark.skipif(not shutil.which('ocf-tester') or not shutil.which('xmllint'),
                    reason='ocf-tester (resource-agents) and xmllint (libxml2-utils) are needed')
@pytest.mark.usefixtures('running')
def test_ocf_tester_passes(installed):
    """ocf-tester's full contract (it stops, probes, starts, restarts and stops the instance)."""
    options = []
    for key, value in params(installed).items():
        options += ['-o', f'{key}={value}']
    proc = on_be2(['ocf-tester', '-n', 'cyha-ocf', *options, installed['agent']], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'{installed["agent"]} passed all tests' in proc.stdout, proc.stdout
    assert carrying_the_conf() == []   # its last action was a stop
