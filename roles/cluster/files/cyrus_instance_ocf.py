#!/bin/sh
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# /bin/sh runs the next line only, which hands this file to the platform Python 3 (3.9+, standard
# library only); to Python that line is a string. The agent's description is __doc__ below.
''''exec /usr/bin/python3 "$0" "$@" # '''

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import namedtuple

# The instance conventions (paths, master binaries) are the collection's cyrusinstance.py: from the
# collection when it is importable (the unit tests), else beside the agent, else from the support
# directory where the roles install it with the control script.
SUPPORT_DIR = '/usr/local/lib/cyrus-ha'
try:
    from ansible_collections.cyrus.ha.plugins.module_utils import cyrusinstance
except ImportError:
    sys.path.append(SUPPORT_DIR)
    try:
        import cyrusinstance
    except ImportError:
        cyrusinstance = None

__doc__ = """OCF resource agent for one Cyrus IMAP instance (installed as ocf:cyrus:instance).

    instance {start|stop|monitor|status|validate-all|meta-data|usage}

Parameters come from OCF_RESKEY_<name> (see meta-data). The agent does not manage processes
itself: it runs the instance control script (cyrus_instance_ctl.py: status, start, stop with
SIGTERM then SIGKILL) and adds what the cluster needs on top: the OCF return codes, timeouts
derived from the action's timeout, and a health check that reads the IMAP greeting from the
instance's service address. The control script and the module_utils it imports live in the support
directory /usr/local/lib/cyrus-ha (the cluster role installs it).
"""

OCF_SUCCESS = 0
OCF_ERR_GENERIC = 1
OCF_ERR_ARGS = 2
OCF_ERR_UNIMPLEMENTED = 3
OCF_ERR_INSTALLED = 5
OCF_ERR_CONFIGURED = 6
OCF_NOT_RUNNING = 7

AGENT_VERSION = '1.0'
# Debian's master (the path the cyrus_instance role starts, so both name the process alike), RHEL's, then
# Debian's /usr/sbin link to it
MASTER_CANDIDATES = cyrusinstance.MASTER_CANDIDATES if cyrusinstance else ()
DEFAULT_CTL = os.path.join(SUPPORT_DIR, 'cyrus_instance_ctl.py')
# How the paths of instance INSTANCE look (for the meta-data)
EXAMPLE = cyrusinstance.paths('INSTANCE') if cyrusinstance else {}
DEFAULT_ACTION_TIMEOUT = 60.0   # seconds, when the cluster gives no OCF_RESKEY_CRM_meta_timeout
ESCALATION_SHARE = 0.7          # of the action timeout, for the ctl's own wait (SIGTERM, then SIGKILL)
MIN_ESCALATION = 2.0            # seconds
STATUS_TIMEOUT = 10.0           # seconds for one `ctl status` (it only reads a pidfile and /proc)
POLL_INTERVAL = 0.5             # seconds between health checks while a start waits
TRUE_WORDS = ('1', 'true', 'yes', 'on', 'y')
FALSE_WORDS = ('0', 'false', 'no', 'off', 'n')
SYSLOG_PRIORITY = {'ERROR': 'err', 'WARN': 'warning', 'INFO': 'info'}

Parameter = namedtuple('Parameter', 'name content default required unique shortdesc longdesc')

# default None: computed from other parameters (the longdesc says how), so not in the meta-data.
PARAMETERS = (
    Parameter('instance', 'string', None, True, True, 'Instance name',
              'The name of the Cyrus instance (for example be1). It names the default configuration and '
              'run-time paths and every message of the agent.'),
    Parameter('imapd_conf', 'string', None, False, False, 'imapd.conf path',
              'The instance\'s imapd.conf. Every process of the instance carries this path after -C, '
              'which is how they are found. Default: ' + EXAMPLE.get('imapd_conf', '') + '.'),
    Parameter('cyrus_conf', 'string', None, False, False, 'cyrus.conf path',
              'The instance\'s cyrus.conf (the services master runs). '
              'Default: ' + EXAMPLE.get('cyrus_conf', '') + '.'),
    Parameter('pidfile', 'string', None, False, False, 'Master PID file',
              'The PID file of the instance\'s master. Default: ' + EXAMPLE.get('pidfile', '') + '.'),
    Parameter('master', 'string', None, False, False, 'Cyrus master binary',
              'The Cyrus master binary. Default: the first of ' + ', '.join(MASTER_CANDIDATES) +
              ' that exists (Debian, then the RHEL family).'),
    Parameter('ctl', 'string', DEFAULT_CTL, False, False, 'Instance control script',
              'The instance control script (cyrus_instance_ctl.py) that starts, stops and inspects the master; '
              'it runs under the same Python as the agent.'),
    Parameter('user', 'string', 'cyrus', False, False, 'Cyrus user',
              'The user that owns the run-time directories the start creates.'),
    Parameter('group', 'string', 'mail', False, False, 'Cyrus group',
              'The group that owns the run-time directories the start creates.'),
    Parameter('address', 'string', None, True, False, 'Service address',
              'The IP address the instance\'s services listen on. It must be configured on the node '
              'before the start (order the instance after its address resource): the start refuses otherwise.'),
    Parameter('port', 'integer', '143', False, False, 'IMAP port',
              'The IMAP port on the service address that the monitor connects to for the greeting.'),
    Parameter('check_greeting', 'boolean', 'true', False, False, 'Check the IMAP greeting',
              'When true, the monitor connects to address:port and needs a line starting with "* OK": a master '
              'that runs but does not greet counts as failed. When false, a running master is enough.'),
    Parameter('greeting_timeout', 'integer', '5', False, False, 'Greeting timeout (seconds)',
              'How long the monitor waits for the connection and the IMAP greeting.'),
)

# name, timeout (s), interval (s) or None
ACTIONS = (('start', 60, None), ('stop', 60, None), ('monitor', 20, 10), ('meta-data', 5, None),
           ('validate-all', 10, None))


def meta_data() -> str:
    """The agent's OCF 1.1 meta-data, valid against Pacemaker's ra-api-1.dtd."""
    root = ET.Element('resource-agent', name='instance', version=AGENT_VERSION)
    ET.SubElement(root, 'version').text = '1.1'
    ET.SubElement(root, 'longdesc', lang='en').text = (
        'Runs one Cyrus IMAP instance (its master and the services of its cyrus.conf), identified by its '
        'imapd.conf path and PID file, so that several instances can share a node. The monitor checks that '
        'the master runs and, by default, that the service address answers with an IMAP greeting.')
    ET.SubElement(root, 'shortdesc', lang='en').text = 'One Cyrus IMAP instance'
    parameters = ET.SubElement(root, 'parameters')
    for param in PARAMETERS:
        node = ET.SubElement(parameters, 'parameter', name=param.name, required=str(int(param.required)),
                             unique=str(int(param.unique)))
        ET.SubElement(node, 'longdesc', lang='en').text = param.longdesc
        ET.SubElement(node, 'shortdesc', lang='en').text = param.shortdesc
        content = ET.SubElement(node, 'content', type=param.content)
        if param.default is not None:
            content.set('default', param.default)
    actions = ET.SubElement(root, 'actions')
    for name, timeout, interval in ACTIONS:
        node = ET.SubElement(actions, 'action', name=name, timeout=f'{timeout}s')
        if interval is not None:
            node.set('interval', f'{interval}s')
            node.set('depth', '0')
    ET.indent(root)
    return ('<?xml version="1.0"?>\n<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">\n'
            + ET.tostring(root, encoding='unicode') + '\n')


def action_timeout(environ) -> float:
    """The action's timeout in seconds, from OCF_RESKEY_CRM_meta_timeout (milliseconds)."""
    try:
        value = float(environ.get('OCF_RESKEY_CRM_meta_timeout', '')) / 1000
    except ValueError:
        return DEFAULT_ACTION_TIMEOUT
    return value if value > 0 else DEFAULT_ACTION_TIMEOUT


def escalation_timeout(environ) -> float:
    """The ctl's own wait within the action (the SIGTERM wait of a stop): a share of the action's
    timeout, so that the SIGKILL and the answer still fit in it."""
    return max(MIN_ESCALATION, round(ESCALATION_SHARE * action_timeout(environ), 3))


def is_probe(environ) -> bool:
    """A probe is a monitor with interval 0 (as ocf_is_probe decides)."""
    return environ.get('OCF_RESKEY_CRM_meta_interval') == '0'


def parse_bool(value: str) -> bool | None:
    """An OCF boolean (as ocf_is_true reads it); None when the value is neither true nor false."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def default_master() -> str:
    """The first candidate master binary that exists, else the first candidate (validate reports it)."""
    return cyrusinstance.default_master(MASTER_CANDIDATES)


def resolve(environ) -> dict:
    """Every parameter's value, defaults applied (as strings: validation reads them)."""
    values = {p.name: environ.get(f'OCF_RESKEY_{p.name}', '').strip() for p in PARAMETERS}
    computed = cyrusinstance.paths(values['instance'])
    for param in PARAMETERS:
        if not values[param.name]:
            if param.name in computed:
                values[param.name] = computed[param.name]
            elif param.name == 'master':
                values[param.name] = default_master()
            elif param.default is not None:
                values[param.name] = param.default
    return values


def read_greeting(address: str, port: int, timeout: float) -> tuple[str | None, str]:
    """Connect to address:port and read the first line within timeout: (line, '') or (None, why not)."""
    deadline = time.monotonic() + timeout
    data = b''
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            while b'\n' not in data and len(data) < 4096:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout()
                conn.settimeout(left)
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            try:
                conn.sendall(b'. LOGOUT\r\n')
            except OSError:
                pass
    except socket.timeout:
        return None, f'no greeting within {timeout:g} s' + (f' (got {data[:80]!r})' if data else '')
    except OSError as exc:
        return None, f'cannot connect: {exc.strerror or exc}'
    if not data:
        return None, 'the connection closed without a greeting'
    return data.split(b'\n', 1)[0].rstrip(b'\r').decode('utf-8', 'replace'), ''


class Agent:
    """One invocation of the agent: the parameters of one instance and the environment it runs in."""

    def __init__(self, environ=None):
        self.environ = dict(os.environ if environ is None else environ)
        self.params = resolve(self.environ)
        self.name = self.params['instance'] or '(unset)'
        self.to_syslog = any(key.startswith('OCF_RESKEY_CRM_meta_') for key in self.environ)

    # logging -------------------------------------------------------------------------------------

    def log(self, level: str, message: str) -> None:
        """An ocf_log-style line on stderr, and in syslog when the cluster runs the agent."""
        text = f'instance {self.name}: {message}'
        if level == 'DEBUG' and self.environ.get('HA_debug', '0') in ('', '0'):
            return
        print(f'{level}: {text}', file=sys.stderr)
        if self.to_syslog and level in SYSLOG_PRIORITY:
            self.syslog(SYSLOG_PRIORITY[level], text)

    def syslog(self, priority: str, text: str) -> None:
        """Send one line to syslog with logger (best effort: logging never fails an action)."""
        try:
            subprocess.run(['logger', '-t', f'cyrus-instance({self.name})', '-p', f'daemon.{priority}', '--', text],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            pass

    def fail(self, code: int, message: str) -> int:
        """Log an error, give the cluster its exit reason, and return code."""
        self.log('ERROR', message)
        print(f'ocf-exit-reason:instance {self.name}: {message}', file=sys.stderr)
        return code

    # the control script -----------------------------------------------------------------------------

    def ctl(self, action: str, timeout: float, *extra: str, limit: float | None = None) -> tuple[int, dict]:
        """Run the control script: (exit status, its JSON answer). limit bounds the whole run."""
        p = self.params
        argv = [sys.executable, p['ctl'], action, '--imapd-conf', p['imapd_conf'], '--cyrus-conf', p['cyrus_conf'],
                '--pidfile', p['pidfile'], '--master', p['master'], '--user', p['user'], '--group', p['group'],
                '--timeout', f'{timeout:g}', *extra]
        limit = limit if limit is not None else timeout + STATUS_TIMEOUT
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=limit,
                                  check=False)
        except subprocess.TimeoutExpired:
            return OCF_ERR_GENERIC, {'failed': True, 'msg': f'{action} did not finish within {limit:g} s'}
        except OSError as exc:
            return OCF_ERR_GENERIC, {'failed': True, 'msg': f'cannot run {p["ctl"]}: {exc.strerror or exc}'}
        answer = None
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if lines:
            try:
                answer = json.loads(lines[-1])
            except ValueError:
                answer = None
        if not isinstance(answer, dict):
            detail = (proc.stderr.strip().splitlines() or ['no answer'])[-1]
            answer = {'failed': True, 'msg': f'{action}: unexpected answer from {p["ctl"]} '
                                             f'(exit status {proc.returncode}): {detail}'}
        if proc.returncode != 0:
            answer['failed'] = True
        return proc.returncode, answer

    def master_state(self) -> tuple[int | None, int]:
        """(master PID or None, OCF_SUCCESS) or (None, an error code, already logged)."""
        if not os.path.isfile(self.params['ctl']):
            if is_probe(self.environ):
                self.log('INFO', f'{self.params["ctl"]} is missing: not running here (probe)')
                return None, OCF_SUCCESS
            return None, self.fail(OCF_ERR_INSTALLED, f'the control script {self.params["ctl"]} is missing')
        status, answer = self.ctl('status', STATUS_TIMEOUT)
        if status != 0 or answer.get('failed'):
            return None, self.fail(OCF_ERR_GENERIC, f'status failed: {answer.get("msg")}')
        return (answer.get('pid') if answer.get('state') == 'started' else None), OCF_SUCCESS

    # validation -----------------------------------------------------------------------------------

    def check_parameters(self, for_stop: bool = False) -> int:
        """OCF_ERR_CONFIGURED (logged) when a parameter is unset or malformed, else OCF_SUCCESS."""
        p = self.params
        if not p['instance']:
            return self.fail(OCF_ERR_CONFIGURED, 'the parameter instance is not set')
        if for_stop:
            return OCF_SUCCESS
        if not p['address']:
            return self.fail(OCF_ERR_CONFIGURED, 'the parameter address is not set')
        try:
            port = int(p['port'])
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            return self.fail(OCF_ERR_CONFIGURED, f'port {p["port"]!r} is not an integer between 1 and 65535')
        if parse_bool(p['check_greeting']) is None:
            return self.fail(OCF_ERR_CONFIGURED, f'check_greeting {p["check_greeting"]!r} is not a boolean')
        try:
            seconds = float(p['greeting_timeout'])
        except ValueError:
            seconds = 0
        if not seconds > 0:
            return self.fail(OCF_ERR_CONFIGURED,
                             f'greeting_timeout {p["greeting_timeout"]!r} is not a positive number of seconds')
        return OCF_SUCCESS

    def validate(self) -> int:
        """validate-all: parameters (6), installation (5), configuration files (6)."""
        rc = self.check_parameters()
        if rc:
            return rc
        p = self.params
        if not os.access(sys.executable, os.X_OK):
            return self.fail(OCF_ERR_INSTALLED, f'the Python interpreter {sys.executable} is missing')
        if not os.path.isfile(p['ctl']):
            return self.fail(OCF_ERR_INSTALLED, f'the control script {p["ctl"]} is missing')
        if not (os.path.isfile(p['master']) and os.access(p['master'], os.X_OK)):
            return self.fail(OCF_ERR_INSTALLED, f'the master binary {p["master"]} is missing or not executable')
        for kind, name, lookup in (('user', p['user'], pwd.getpwnam), ('group', p['group'], grp.getgrnam)):
            try:
                lookup(name)
            except KeyError:
                return self.fail(OCF_ERR_INSTALLED, f'the {kind} {name} does not exist on this node')
        # The instance's files are installed per node: missing or unreadable here rules out this node
        # only (OCF_ERR_INSTALLED), not the resource everywhere (OCF_ERR_CONFIGURED would).
        for key in ('imapd_conf', 'cyrus_conf'):
            path = p[key]
            if not os.path.isfile(path):
                return self.fail(OCF_ERR_INSTALLED, f'the configuration file {path} ({key}) is missing')
            try:
                with open(path, 'rb') as handle:
                    handle.read(1)
            except OSError as exc:
                return self.fail(OCF_ERR_INSTALLED,
                                 f'the configuration file {path} is unreadable: {exc.strerror or exc}')
        return OCF_SUCCESS

    # actions --------------------------------------------------------------------------------------

    def health(self, greeting_timeout: float) -> tuple[int, str]:
        """(OCF code, what was found): 7 no master, 0 master runs (and greets), 1 master runs but no greeting;
        other codes (already logged) when the state cannot be read."""
        pid, rc = self.master_state()
        if rc:
            return rc, ''
        if pid is None:
            return OCF_NOT_RUNNING, 'the master is not running'
        p = self.params
        if not parse_bool(p['check_greeting']):
            return OCF_SUCCESS, f'the master runs (pid {pid})'
        line, why = read_greeting(p['address'], int(p['port']), greeting_timeout)
        where = f'{p["address"]}:{p["port"]}'
        if line is not None and line.startswith('* OK'):
            return OCF_SUCCESS, f'the master runs (pid {pid}) and {where} greets'
        why = why or f'unexpected greeting {line[:80]!r}'
        return OCF_ERR_GENERIC, f'the master runs (pid {pid}) but {where} gives no IMAP greeting: {why}'

    def monitor(self) -> int:
        """monitor/status: 0 running (and greeting), 7 cleanly stopped, 1 running without a greeting."""
        rc = self.check_parameters()
        if rc:
            return rc
        code, found = self.health(float(self.params['greeting_timeout']))
        if code == OCF_ERR_GENERIC and found:
            return self.fail(code, found)
        if found:
            self.log('DEBUG', found)
        return code

    def start(self) -> int:
        """Validate, start through the ctl (which takes the run-time directories and the address check
        on itself), then wait within the action timeout until the monitor passes."""
        rc = self.validate()
        if rc:
            return rc
        p = self.params
        budget = escalation_timeout(self.environ)
        deadline = time.monotonic() + budget
        self.log('INFO', f'starting: {p["master"]} -C {p["imapd_conf"]} on {p["address"]}:{p["port"]}')
        # the ctl waits up to its timeout for master -d, then as long again for the pidfile
        status, answer = self.ctl('start', max(1.0, budget / 2), '--address', p['address'], limit=budget + 1)
        if status != 0 or answer.get('failed'):
            return self.fail(OCF_ERR_GENERIC, f'start failed: {answer.get("msg")}')
        greeting_timeout = float(p['greeting_timeout'])
        while True:
            left = deadline - time.monotonic()
            code, found = self.health(max(0.5, min(greeting_timeout, left)))
            if code == OCF_SUCCESS:
                self.log('INFO', f'started: {found}')
                return OCF_SUCCESS
            if code == OCF_NOT_RUNNING:
                return self.fail(OCF_ERR_GENERIC, 'the master exited right after the start: see the instance\'s '
                                                  'syslog lines (a service that cannot bind its address?)')
            if not found:   # the state could not be read (already logged)
                return code
            if time.monotonic() + POLL_INTERVAL >= deadline:
                return self.fail(OCF_ERR_GENERIC, f'not healthy {budget:g} s after the start: {found}')
            time.sleep(POLL_INTERVAL)

    def stop(self) -> int:
        """Stop through the ctl (SIGTERM, SIGKILL after the escalation timeout). The configuration files
        are not needed: a node without them (its volume not mounted) has nothing running, and stops with 0."""
        rc = self.check_parameters(for_stop=True)
        if rc:
            return rc
        p = self.params
        if not os.path.isfile(p['ctl']):
            return self.fail(OCF_ERR_INSTALLED, f'the control script {p["ctl"]} is missing: cannot stop')
        escalation = escalation_timeout(self.environ)
        limit = max(escalation + 1, action_timeout(self.environ) - 1)
        status, answer = self.ctl('stop', escalation, limit=limit)
        if status != 0 or answer.get('failed'):
            return self.fail(OCF_ERR_GENERIC, f'stop failed: {answer.get("msg")}')
        pid, rc = self.master_state()
        if rc:
            return rc
        if pid is not None:
            return self.fail(OCF_ERR_GENERIC, f'the master (pid {pid}) still runs after the stop')
        self.log('INFO', 'stopped' if answer.get('changed') else 'already stopped')
        return OCF_SUCCESS

    def validate_all(self) -> int:
        """validate-all."""
        rc = self.validate()
        if rc == OCF_SUCCESS:
            self.log('DEBUG', 'configuration is valid')
        return rc


def usage() -> str:
    """The one-line usage."""
    return f'usage: {os.path.basename(sys.argv[0] or "instance")} ' \
           '{start|stop|monitor|status|validate-all|meta-data|usage}'


def main(argv: list[str] | None = None, environ=None) -> int:
    """Run one OCF action; its return code."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(usage(), file=sys.stderr)
        return OCF_ERR_ARGS
    action = argv[0]
    if cyrusinstance is None and action not in ('usage', 'help'):
        # without its module_utils the agent cannot name a default; say what to install
        print(f'ocf-exit-reason:cyrusinstance.py is missing from {SUPPORT_DIR}: install it with the cyrus.ha.cluster '
              'role', file=sys.stderr)
        return OCF_ERR_INSTALLED
    if action == 'meta-data':
        sys.stdout.write(meta_data())
        return OCF_SUCCESS
    if action in ('usage', 'help'):
        print(usage())
        return OCF_SUCCESS
    agent = Agent(environ)
    handlers = {'start': agent.start, 'stop': agent.stop, 'monitor': agent.monitor, 'status': agent.monitor,
                'validate-all': agent.validate_all}
    if action not in handlers:
        print(usage(), file=sys.stderr)
        return OCF_ERR_UNIMPLEMENTED
    return handlers[action]()


if __name__ == '__main__':
    sys.exit(main())
