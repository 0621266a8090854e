# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster role's OCF resource agent (ocf:cyrus:instance) without a Cyrus instance: its meta-data,
parameter checks, timeouts, and return codes against a fake control script that answers as told, and
its IMAP greeting check against tiny TCP servers on 127.0.0.1.

The real thing (a Cyrus master in a lab host, ocf-tester) is tests/integration/test_ocf_instance.py."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socketserver
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
AGENT_PATH = os.path.join(REPO, 'roles', 'cluster', 'files', 'cyrus_instance_ocf.py')
SPEC = importlib.util.spec_from_file_location('cyrus_instance_ocf', AGENT_PATH)
ocf = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ocf)

PARAMETER_NAMES = ['instance', 'imapd_conf', 'cyrus_conf', 'pidfile', 'master', 'ctl', 'user', 'group', 'address',
                   'port', 'check_greeting', 'greeting_timeout']
DTD_DIR = '/usr/share/resource-agents'

# The fake control script: logs its argv to calls.jsonl, answers from script.json ({action: [step, ...]},
# the n-th call of an action takes step n, the last step repeats; a step is {"rc": N, "out": TEXT}).
FAKE_CTL = '''import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, 'calls.jsonl'), 'a+', encoding='utf-8') as handle:
    handle.seek(0)
    calls = [json.loads(line) for line in handle if line.strip()]
    handle.write(json.dumps(sys.argv[1:]) + '\\n')
with open(os.path.join(here, 'script.json'), encoding='utf-8') as handle:
    steps = json.load(handle)[sys.argv[1]]
step = steps[min(len([c for c in calls if c[0] == sys.argv[1]]), len(steps) - 1)]
sys.stdout.write(step['out'])
sys.exit(step['rc'])
'''


def answer(state: str | None = None, rc: int = 0, pid: int | None = None, **extra) -> dict:
    """One step of the fake ctl: a JSON answer like the real one's, with its exit status."""
    if state is None:
        body = {'changed': False, 'failed': True, 'msg': extra.pop('msg', 'it failed')}
    else:
        body = {'changed': extra.pop('changed', False), 'state': state, 'pid': pid, 'msg': extra.pop('msg', state)}
    return {'rc': rc, 'out': json.dumps(dict(body, **extra)) + '\n'}


RUNNING = answer('started', pid=4242)
STOPPED = answer('stopped')
FAILED = answer(rc=1, msg='something broke')


class Node:
    """A node for the agent: a fake ctl and master, the configuration files, and the environment."""

    def __init__(self, root):
        self.root = root
        self.ctl_dir = root / 'ctl'
        self.ctl_dir.mkdir()
        self.ctl = self.ctl_dir / 'cyrus_instance_ctl.py'
        self.ctl.write_text(FAKE_CTL, encoding='utf-8')
        self.master = root / 'master'
        self.master.write_text('#!/bin/sh\nexit 0\n', encoding='utf-8')
        self.master.chmod(0o755)
        self.etc = root / 'etc'
        self.etc.mkdir()
        for name in ('imapd.conf', 'cyrus.conf'):
            (self.etc / name).write_text('# test\n', encoding='utf-8')
        self.script({})

    def script(self, steps: dict) -> None:
        """What the fake ctl answers, per action."""
        (self.ctl_dir / 'script.json').write_text(json.dumps(steps), encoding='utf-8')

    def calls(self) -> list[list[str]]:
        path = self.ctl_dir / 'calls.jsonl'
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()]

    def env(self, **params) -> dict:
        """The agent's environment: OCF_RESKEY_<name> for every parameter (None: unset)."""
        values = {'instance': 'be9', 'imapd_conf': str(self.etc / 'imapd.conf'),
                  'cyrus_conf': str(self.etc / 'cyrus.conf'), 'pidfile': str(self.root / 'master.pid'),
                  'master': str(self.master), 'ctl': str(self.ctl), 'address': '127.0.0.1', 'port': '143',
                  'check_greeting': 'false', 'greeting_timeout': '1'}
        values.update(params)
        environ = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'OCF_ROOT': '/usr/lib/ocf'}
        environ.update({f'OCF_RESKEY_{k}': str(v) for k, v in values.items() if v is not None})
        return environ


@pytest.fixture(name='node')
def fixture_node(tmp_path):
    return Node(tmp_path)


@pytest.fixture(name='syslog', autouse=True)
def fixture_syslog(monkeypatch):
    """What the agent would send to syslog (nothing reaches this machine's syslog)."""
    sent = []
    monkeypatch.setattr(ocf.Agent, 'syslog', lambda self, priority, text: sent.append((priority, text)))
    return sent


class Greeter(socketserver.ThreadingTCPServer):
    """A TCP server on 127.0.0.1 that sends each client a payload, then waits for it to leave; with a
    list of payloads, the n-th client gets the n-th (the last one repeats)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, payload: bytes | list[bytes]):
        self.payloads = payload if isinstance(payload, list) else [payload]
        self.clients = 0
        super().__init__(('127.0.0.1', 0), GreeterHandler)

    def next_payload(self) -> bytes:
        self.clients += 1
        return self.payloads[min(self.clients, len(self.payloads)) - 1]


class GreeterHandler(socketserver.BaseRequestHandler):
    """Send the server's payload (if any), then hold the connection until the client closes it."""

    def handle(self):
        payload = self.server.next_payload()
        if payload:
            self.request.sendall(payload)
        self.request.settimeout(10)
        try:
            self.request.recv(100)
        except OSError:
            pass


@pytest.fixture(name='greeter')
def fixture_greeter():
    """Start a Greeter with a payload: its port."""
    servers = []

    def start(payload: bytes | list[bytes]) -> int:
        server = Greeter(payload)
        servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def run(environ: dict, action: str) -> int:
    return ocf.main([action], environ)


# meta-data ----------------------------------------------------------------------------------------------


def test_meta_data_lists_every_parameter_and_action(capsys):
    assert ocf.main(['meta-data'], {}) == ocf.OCF_SUCCESS
    text = capsys.readouterr().out
    root = ET.fromstring(text)
    assert root.tag == 'resource-agent' and root.get('name') == 'instance' and root.get('version')
    assert root.findtext('version') == '1.1'
    assert root.findtext('longdesc').strip() and root.findtext('shortdesc').strip()
    params = {p.get('name'): p for p in root.find('parameters')}
    assert list(params) == PARAMETER_NAMES
    for name, param in params.items():
        assert param.findtext('longdesc').strip() and param.findtext('shortdesc').strip(), name
        assert param.find('content').get('type') in ('string', 'integer', 'boolean'), name
        # each default is shown: as the content's default, or (computed from the instance) in the longdesc
        assert param.find('content').get('default') or 'Default:' in param.findtext('longdesc') \
            or name in ('instance', 'address'), name
    assert {n for n, p in params.items() if p.get('required') == '1'} == {'instance', 'address'}
    assert {n for n, p in params.items() if p.get('unique') == '1'} == {'instance'}
    defaults = {n: p.find('content').get('default') for n, p in params.items()}
    assert defaults['port'] == '143' and defaults['check_greeting'] == 'true' and defaults['greeting_timeout'] == '5'
    assert defaults['user'] == 'cyrus' and defaults['group'] == 'mail'
    assert defaults['ctl'] == '/usr/local/lib/cyrus-ha/cyrus_instance_ctl.py'
    actions = {a.get('name'): a for a in root.find('actions')}
    assert {n: a.get('timeout') for n, a in actions.items()} == {
        'start': '60s', 'stop': '60s', 'monitor': '20s', 'meta-data': '5s', 'validate-all': '10s'}
    assert actions['monitor'].get('interval') == '10s'


@pytest.mark.skipif(not shutil.which('xmllint'), reason='xmllint (libxml2-utils) is not installed')
def test_meta_data_passes_xmllint_and_the_ocf_dtd(capsys):
    ocf.main(['meta-data'], {})
    text = capsys.readouterr().out
    proc = subprocess.run(['xmllint', '--noout', '-'], input=text, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    if os.path.isfile(os.path.join(DTD_DIR, 'ra-api-1.dtd')):   # as ocf-tester checks it
        proc = subprocess.run(['xmllint', '--noout', '--valid', '-'], input=text, cwd=DTD_DIR, capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not os.access('/usr/bin/python3', os.X_OK), reason='no /usr/bin/python3')
def test_the_file_runs_as_an_executable(support_dir):
    """The shell line hands the file to /usr/bin/python3: as Pacemaker runs it, by its path (here beside
    the support directory's module_utils, which it imports; installed, from /usr/local/lib/cyrus-ha)."""
    assert os.stat(AGENT_PATH).st_mode & 0o777 == 0o755
    agent = support_dir / 'instance'
    shutil.copyfile(AGENT_PATH, agent)
    agent.chmod(0o755)
    proc = subprocess.run([str(agent), 'meta-data'], capture_output=True, text=True, env={}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert ET.fromstring(proc.stdout).get('name') == 'instance'


@pytest.mark.skipif(not os.access('/usr/bin/python3', os.X_OK), reason='no /usr/bin/python3')
def test_without_its_module_utils_the_agent_says_what_to_install(tmp_path):
    agent = tmp_path / 'instance'
    shutil.copyfile(AGENT_PATH, agent)
    agent.chmod(0o755)
    argv = [str(agent)]
    if os.path.exists(ocf.SUPPORT_DIR):
        # a machine where the roles ran has the support directory: hide it from the agent alone (an empty
        # tmpfs over it, in a mount namespace of the agent's own)
        if os.geteuid() != 0:
            pytest.skip('the support directory is installed here, and hiding it needs root')
        argv = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
                'mount -t tmpfs -o size=1m none "$0" && exec "$@"', ocf.SUPPORT_DIR, str(agent)]
    for action in ('meta-data', 'monitor'):
        proc = subprocess.run(argv + [action], capture_output=True, text=True, env={'PATH': '/usr/sbin:/usr/bin:/sbin:/bin'},
                              check=False)
        assert (proc.returncode, proc.stdout) == (ocf.OCF_ERR_INSTALLED, '')
        assert proc.stderr == ('ocf-exit-reason:cyrusinstance.py is missing from /usr/local/lib/cyrus-ha: install it '
                               'with the cyrus.ha.cluster role\n')


@pytest.mark.parametrize('argv, code', [
    ([], ocf.OCF_ERR_ARGS),
    (['start', 'extra'], ocf.OCF_ERR_ARGS),
    (['reload'], ocf.OCF_ERR_UNIMPLEMENTED),
    (['promote'], ocf.OCF_ERR_UNIMPLEMENTED),
    (['usage'], ocf.OCF_SUCCESS),
])
def test_usage_and_unknown_actions(node, argv, code):
    assert ocf.main(argv, node.env()) == code
    assert node.calls() == []


# parameters, defaults, timeouts --------------------------------------------------------------------------


def test_defaults_follow_the_instance_name(monkeypatch, tmp_path):
    rhel = tmp_path / 'cyrus-master'
    rhel.write_text('', encoding='utf-8')
    monkeypatch.setattr(ocf, 'MASTER_CANDIDATES', (str(tmp_path / 'cyrmaster'), str(rhel)))
    values = ocf.resolve({'OCF_RESKEY_instance': 'be1', 'OCF_RESKEY_address': '192.0.2.7'})
    assert values == {
        'instance': 'be1', 'imapd_conf': '/etc/cyrus-ha/be1/imapd.conf', 'cyrus_conf': '/etc/cyrus-ha/be1/cyrus.conf',
        'pidfile': '/run/cyrus-ha/be1/master.pid', 'master': str(rhel),
        'ctl': '/usr/local/lib/cyrus-ha/cyrus_instance_ctl.py', 'user': 'cyrus', 'group': 'mail',
        'address': '192.0.2.7', 'port': '143', 'check_greeting': 'true', 'greeting_timeout': '5'}
    assert ocf.resolve({'OCF_RESKEY_instance': 'be1', 'OCF_RESKEY_master': '/opt/master'})['master'] == '/opt/master'


@pytest.mark.parametrize('timeout, action, escalation', [
    (None, 60.0, 42.0),
    ('20000', 20.0, 14.0),
    ('60000', 60.0, 42.0),
    ('100000', 100.0, 70.0),
    ('2500', 2.5, 2.0),      # 70 % is under the minimum
    ('1000', 1.0, 2.0),
    ('0', 60.0, 42.0),       # not a usable timeout: the default
    ('-5000', 60.0, 42.0),
    ('soon', 60.0, 42.0),
])
def test_timeouts_derive_from_the_action_timeout(timeout, action, escalation):
    environ = {} if timeout is None else {'OCF_RESKEY_CRM_meta_timeout': timeout}
    assert ocf.action_timeout(environ) == action
    assert ocf.escalation_timeout(environ) == escalation


@pytest.mark.parametrize('interval, probe', [('0', True), ('10000', False), (None, False)])
def test_a_probe_is_a_monitor_with_interval_zero(interval, probe):
    assert ocf.is_probe({} if interval is None else {'OCF_RESKEY_CRM_meta_interval': interval}) is probe


@pytest.mark.parametrize('value, parsed', [('true', True), ('Yes', True), ('1', True), ('on', True),
                                           ('false', False), ('NO', False), ('0', False), ('off', False),
                                           ('maybe', None), ('', None)])
def test_booleans_read_as_ocf_is_true(value, parsed):
    assert ocf.parse_bool(value) is parsed


# validate-all --------------------------------------------------------------------------------------------


@pytest.mark.parametrize('change, code, cause', [
    ({}, ocf.OCF_SUCCESS, ''),
    ({'instance': None}, ocf.OCF_ERR_CONFIGURED, 'instance is not set'),
    ({'address': None}, ocf.OCF_ERR_CONFIGURED, 'address is not set'),
    ({'port': 'imap'}, ocf.OCF_ERR_CONFIGURED, "port 'imap'"),
    ({'port': '0'}, ocf.OCF_ERR_CONFIGURED, "port '0'"),
    ({'port': '65536'}, ocf.OCF_ERR_CONFIGURED, "port '65536'"),
    ({'port': '14.3'}, ocf.OCF_ERR_CONFIGURED, "port '14.3'"),
    ({'check_greeting': 'maybe'}, ocf.OCF_ERR_CONFIGURED, "check_greeting 'maybe'"),
    ({'greeting_timeout': '0'}, ocf.OCF_ERR_CONFIGURED, "greeting_timeout '0'"),
    ({'greeting_timeout': 'soon'}, ocf.OCF_ERR_CONFIGURED, "greeting_timeout 'soon'"),
    ({'imapd_conf': '{root}/etc/missing.conf'}, ocf.OCF_ERR_INSTALLED, '{root}/etc/missing.conf'),
    ({'cyrus_conf': '{root}/etc/missing.conf'}, ocf.OCF_ERR_INSTALLED, '{root}/etc/missing.conf'),
    ({'imapd_conf': '{root}/etc'}, ocf.OCF_ERR_INSTALLED, '{root}/etc (imapd_conf) is missing'),
    ({'master': '{root}/no-master'}, ocf.OCF_ERR_INSTALLED, '{root}/no-master'),
    ({'master': '{root}/etc/imapd.conf'}, ocf.OCF_ERR_INSTALLED, 'not executable'),
    ({'ctl': '{root}/no-ctl.py'}, ocf.OCF_ERR_INSTALLED, '{root}/no-ctl.py'),
    ({'user': 'cyha-no-such-user'}, ocf.OCF_ERR_INSTALLED, 'user cyha-no-such-user'),
    ({'group': 'cyha-no-such-group'}, ocf.OCF_ERR_INSTALLED, 'group cyha-no-such-group'),
])
def test_validate_all(node, capsys, change, code, cause):
    params = {k: v.format(root=node.root) if v else v for k, v in change.items()}
    assert run(node.env(**params), 'validate-all') == code
    err = capsys.readouterr().err
    if code:
        cause = cause.format(root=node.root)
        reason = [line for line in err.splitlines() if line.startswith('ocf-exit-reason:')]
        assert len(reason) == 1 and cause in reason[0], err
        assert 'instance ' in reason[0]
    assert node.calls() == []


def test_validate_all_reports_the_missing_python(node, monkeypatch):
    monkeypatch.setattr(ocf.sys, 'executable', str(node.root / 'no-python3'))
    assert run(node.env(), 'validate-all') == ocf.OCF_ERR_INSTALLED


# monitor -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('steps, params, code', [
    ([STOPPED], {}, ocf.OCF_NOT_RUNNING),
    ([RUNNING], {}, ocf.OCF_SUCCESS),
    ([FAILED], {}, ocf.OCF_ERR_GENERIC),
    ([{'rc': 0, 'out': 'not json\n'}], {}, ocf.OCF_ERR_GENERIC),
    ([{'rc': 0, 'out': '[1, 2]\n'}], {}, ocf.OCF_ERR_GENERIC),
    ([STOPPED], {'ctl': '{root}/no-ctl.py'}, ocf.OCF_ERR_INSTALLED),
    ([STOPPED], {'instance': None}, ocf.OCF_ERR_CONFIGURED),
    ([STOPPED], {'port': 'x'}, ocf.OCF_ERR_CONFIGURED),
    # the configuration files are not needed to tell that the master is not running
    ([STOPPED], {'imapd_conf': '{root}/gone/imapd.conf', 'cyrus_conf': '{root}/gone/cyrus.conf'}, ocf.OCF_NOT_RUNNING),
])
@pytest.mark.parametrize('action', ['monitor', 'status'])
def test_monitor_codes(node, steps, params, code, action):
    node.script({'status': steps})
    environ = node.env(**{k: v.format(root=node.root) if v else v for k, v in params.items()})
    assert run(environ, action) == code


@pytest.mark.parametrize('params', [{}, {'ctl': '{root}/no-ctl.py'},
                                    {'imapd_conf': '{root}/gone/imapd.conf', 'cyrus_conf': '{root}/gone/cyrus.conf'}])
def test_a_probe_of_a_stopped_instance_is_not_running(node, params):
    """A probe on a node without the volume, or without the software, must not fail."""
    node.script({'status': [STOPPED]})
    environ = node.env(**{k: v.format(root=node.root) for k, v in params.items()})
    environ.update(OCF_RESKEY_CRM_meta_interval='0', OCF_RESKEY_CRM_meta_timeout='20000')
    assert run(environ, 'monitor') == ocf.OCF_NOT_RUNNING


@pytest.mark.parametrize('payload, code', [
    (b'* OK hello\r\n', ocf.OCF_SUCCESS),
    (b'* OK [CAPABILITY IMAP4rev1] cyhaimap ready\r\n', ocf.OCF_SUCCESS),
    (b'', ocf.OCF_ERR_GENERIC),                         # accepts, says nothing
    (b'* OK half a line', ocf.OCF_ERR_GENERIC),          # no end of line within the timeout
    (b'* BYE too many connections\r\n', ocf.OCF_ERR_GENERIC),
    (b'SSH-2.0-OpenSSH_9.2\r\n', ocf.OCF_ERR_GENERIC),
])
def test_monitor_reads_the_imap_greeting(node, greeter, capsys, payload, code):
    port = greeter(payload)
    node.script({'status': [RUNNING]})
    assert run(node.env(port=port, check_greeting='true', greeting_timeout='0.5'), 'monitor') == code
    err = capsys.readouterr().err
    if code:
        assert f'instance be9: the master runs (pid 4242) but 127.0.0.1:{port} gives no IMAP greeting' in err, err


def test_monitor_fails_when_nothing_listens(node, capsys):
    node.script({'status': [RUNNING]})
    assert run(node.env(port=1, check_greeting='yes', greeting_timeout='1'), 'monitor') == ocf.OCF_ERR_GENERIC
    assert '127.0.0.1:1 gives no IMAP greeting: cannot connect' in capsys.readouterr().err


def test_monitor_without_greeting_check_does_not_connect(node):
    node.script({'status': [RUNNING]})
    assert run(node.env(port=1, check_greeting='false'), 'monitor') == ocf.OCF_SUCCESS


def test_a_stopped_master_is_not_running_even_if_something_greets(node, greeter):
    port = greeter(b'* OK somebody else\r\n')
    node.script({'status': [STOPPED]})
    assert run(node.env(port=port, check_greeting='true'), 'monitor') == ocf.OCF_NOT_RUNNING


# start ---------------------------------------------------------------------------------------------------


def test_start_runs_the_ctl_then_waits_for_the_monitor(node, greeter, syslog):
    port = greeter([b'* BYE not yet\r\n', b'* OK ready\r\n'])
    node.script({'start': [answer('started', pid=4242, changed=True)], 'status': [RUNNING]})
    environ = node.env(port=port, check_greeting='true', greeting_timeout='2')
    environ['OCF_RESKEY_CRM_meta_timeout'] = '20000'
    assert run(environ, 'start') == ocf.OCF_SUCCESS
    calls = node.calls()
    assert [c[0] for c in calls] == ['start', 'status', 'status']
    start = calls[0]
    assert start[start.index('--address') + 1] == '127.0.0.1'
    for flag, key in (('--imapd-conf', 'imapd_conf'), ('--cyrus-conf', 'cyrus_conf'), ('--pidfile', 'pidfile'),
                      ('--master', 'master')):
        assert start[start.index(flag) + 1] == environ[f'OCF_RESKEY_{key}']
    assert (start[start.index('--user') + 1], start[start.index('--group') + 1]) == ('cyrus', 'mail')
    assert any(p == 'info' and 'instance be9: started' in t for p, t in syslog)


def test_start_of_a_running_instance_succeeds(node):
    node.script({'start': [answer('started', pid=4242, msg='master is running')], 'status': [RUNNING]})
    assert run(node.env(), 'start') == ocf.OCF_SUCCESS


@pytest.mark.parametrize('steps, cause', [
    ({'start': [answer(rc=1, msg='service address 192.0.2.9 is not configured on this host: take the '
                                 'address up before starting the instance')]},
     'start failed: service address 192.0.2.9 is not configured on this host'),
    ({'start': [answer('started', pid=4242, changed=True)], 'status': [STOPPED]},
     'the master exited right after the start'),
    ({'start': [answer('started', pid=4242, changed=True)], 'status': [FAILED]}, 'status failed: something broke'),
])
def test_start_failures_name_the_cause(node, capsys, steps, cause):
    node.script(steps)
    assert run(node.env(), 'start') == ocf.OCF_ERR_GENERIC
    err = capsys.readouterr().err
    assert f'ocf-exit-reason:instance be9: {cause}' in err, err


def test_start_gives_up_when_the_instance_never_greets(node, greeter, capsys):
    port = greeter(b'')
    node.script({'start': [answer('started', pid=4242, changed=True)], 'status': [RUNNING]})
    environ = node.env(port=port, check_greeting='true', greeting_timeout='0.5')
    environ['OCF_RESKEY_CRM_meta_timeout'] = '2000'
    assert run(environ, 'start') == ocf.OCF_ERR_GENERIC
    err = capsys.readouterr().err
    assert 'not healthy 2 s after the start' in err and f'127.0.0.1:{port} gives no IMAP greeting' in err, err
    assert [c[0] for c in node.calls()].count('status') >= 1


@pytest.mark.parametrize('params, code', [
    ({'imapd_conf': '{root}/gone/imapd.conf'}, ocf.OCF_ERR_INSTALLED),
    ({'master': '{root}/no-master'}, ocf.OCF_ERR_INSTALLED),
    ({'address': None}, ocf.OCF_ERR_CONFIGURED),
])
def test_start_validates_first(node, params, code):
    node.script({'start': [answer('started', pid=4242, changed=True)], 'status': [RUNNING]})
    assert run(node.env(**{k: v.format(root=node.root) if v else v for k, v in params.items()}), 'start') == code
    assert node.calls() == []


# stop ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('steps, code', [
    ({'stop': [answer('stopped', changed=True)], 'status': [STOPPED]}, ocf.OCF_SUCCESS),
    ({'stop': [answer('stopped', msg='master is not running')], 'status': [STOPPED]}, ocf.OCF_SUCCESS),
    ({'stop': [FAILED], 'status': [STOPPED]}, ocf.OCF_ERR_GENERIC),
    ({'stop': [answer('stopped', changed=True)], 'status': [RUNNING]}, ocf.OCF_ERR_GENERIC),
    ({'stop': [answer('stopped', changed=True)], 'status': [FAILED]}, ocf.OCF_ERR_GENERIC),
])
def test_stop_codes(node, steps, code):
    node.script(steps)
    assert run(node.env(), 'stop') == code
    assert node.calls()[0][0] == 'stop'


@pytest.mark.parametrize('timeout, passed', [(None, '42'), ('20000', '14'), ('120000', '84'), ('1000', '2')])
def test_stop_gives_the_ctl_its_share_of_the_action_timeout(node, timeout, passed):
    node.script({'stop': [answer('stopped', changed=True)], 'status': [STOPPED]})
    environ = node.env()
    if timeout is not None:
        environ['OCF_RESKEY_CRM_meta_timeout'] = timeout
    assert run(environ, 'stop') == ocf.OCF_SUCCESS
    stop = node.calls()[0]
    assert stop[stop.index('--timeout') + 1] == passed


def test_stop_without_configuration_files_succeeds(node):
    """The stop of a node whose volume is not mounted: the ctl finds no process carrying the path."""
    node.script({'stop': [answer('stopped', msg='master is not running')], 'status': [STOPPED]})
    environ = node.env(imapd_conf=str(node.root / 'gone' / 'imapd.conf'), cyrus_conf=str(node.root / 'gone' / 'c'),
                       master=str(node.root / 'no-master'), address=None, port='junk')
    assert run(environ, 'stop') == ocf.OCF_SUCCESS
    stop = node.calls()[0]
    assert stop[0] == 'stop' and stop[stop.index('--imapd-conf') + 1] == str(node.root / 'gone' / 'imapd.conf')


@pytest.mark.parametrize('params, code', [({'instance': None}, ocf.OCF_ERR_CONFIGURED),
                                          ({'ctl': '{root}/no-ctl.py'}, ocf.OCF_ERR_INSTALLED)])
def test_stop_cannot_act_without_instance_or_ctl(node, params, code):
    assert run(node.env(**{k: v.format(root=node.root) if v else v for k, v in params.items()}), 'stop') == code


def test_the_ctl_runs_under_the_agents_python_as_an_argv_list(node, monkeypatch):
    seen = []
    real = subprocess.run

    def spy(argv, check=False, **kwargs):
        seen.append((argv, kwargs))
        return real(argv, check=check, **kwargs)

    monkeypatch.setattr(ocf.subprocess, 'run', spy)
    node.script({'status': [STOPPED]})
    assert run(node.env(), 'monitor') == ocf.OCF_NOT_RUNNING
    argv, kwargs = seen[0]
    assert isinstance(argv, list) and argv[:3] == [sys.executable, str(node.ctl), 'status']
    assert not kwargs.get('shell')


def test_syslog_only_when_the_cluster_runs_the_agent(node, syslog):
    node.script({'stop': [answer('stopped', changed=True)], 'status': [STOPPED]})
    assert run(node.env(), 'stop') == ocf.OCF_SUCCESS
    assert syslog == []
    environ = node.env()
    environ['OCF_RESKEY_CRM_meta_timeout'] = '20000'
    assert run(environ, 'stop') == ocf.OCF_SUCCESS
    assert syslog == [('info', 'instance be9: stopped')]
