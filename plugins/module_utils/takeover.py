# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A warm-spare pair's instance given up or taken over on this node in one call.

release: instance stopped -> address released -> volume unmounted (the stop order).
acquire: volume mounted -> address taken -> instance started -> the record of the active node written on the
volume (the start order).

Each step is the same code as its own module (volume.Volume for shared_volume, service_ip.manage for
service_ip; the instance through its systemd unit or the control script the cyrus_instance role installs),
with the same refusals, check mode and idempotency; what this adds is that the whole move is one round trip
from the controller, and each phase is stamped on the node itself (epoch seconds, this node's clock).

An acquire that fails after it changed something undoes what it did, in reverse (instance stopped, address
released, volume unmounted): the node is left as it was, never holding the volume without the instance.
A release that fails stops where it failed: each step it did is one in the right direction, and the next
run finishes it. A run killed in the middle is finished by the next one (each step is idempotent).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time

try:
    from ansible_collections.cyrus.ha.plugins.module_utils import cyrusinstance, testhook
    from ansible_collections.cyrus.ha.plugins.module_utils.service_ip import (
        PROBE_COUNT, PROBE_TIMEOUT, ServiceIpError, manage as manage_address, validate as validate_address)
    from ansible_collections.cyrus.ha.plugins.module_utils.volume import Volume, VolumeError, check_params
except ImportError:  # pragma: no cover - the support directory's copy
    import cyrusinstance  # type: ignore
    import testhook  # type: ignore
    from service_ip import PROBE_COUNT, PROBE_TIMEOUT, ServiceIpError, manage as manage_address  # type: ignore
    from service_ip import validate as validate_address  # type: ignore
    from volume import Volume, VolumeError, check_params  # type: ignore

CONTROL_SCRIPT = '/usr/local/lib/cyrus-ha/cyrus_instance_ctl.py'
UNIT = 'cyrus-imapd@{}.service'
# The step boundaries CYRUS_HA_TEST_KILL_AT may name (testhook): after each phase of either direction.
KILL_POINTS = ('instance-stopped', 'address-released', 'volume-unmounted', 'volume-mounted', 'address-taken',
               'instance-started')
_XPATH = ("//primitive[@class='ocf' and @provider='cyrus' and @type='instance']"
          "[instance_attributes/nvpair[@name='instance' and @value='{}']]")
_PRIMITIVE_ID = re.compile(r'<primitive[^>]* id="([^"]+)"')


class TakeoverError(Exception):
    """The move cannot go on; msg names the instance, the step and the cause; result is what was done."""

    def __init__(self, msg: str, result: dict):
        super().__init__(msg)
        self.msg = msg
        self.result = result


def check(params: dict) -> None:
    """The request, before anything is read or changed; TakeoverError naming the option."""
    name = params.get('instance')
    if not cyrusinstance.valid_name(name):
        raise TakeoverError(f'instance {name!r}: not a valid instance name (letters, digits, dot, dash, underscore; '
                            'starting with a letter or digit)', {'changed': False})
    if params.get('state') == 'acquired' and not params.get('mountpoint'):
        raise TakeoverError(f'instance {name}: acquiring needs mountpoint', {'changed': False})
    if params.get('force') and not params.get('peer_state'):
        raise TakeoverError(f'instance {name}: force needs peer_state (fenced or down), the statement that the peer '
                            'cannot answer for the address', {'changed': False})
    timeout = params.get('timeout')
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 3600:
        raise TakeoverError(f'instance {name}: timeout must be a number of seconds from 1 to 3600, not {timeout!r}',
                            {'changed': False})
    # the address before anything: a release stops the instance first and must not do so for a request that
    # would then fail on its address
    try:
        validate_address(address_params(params, 'present'))
    except ServiceIpError as exc:
        raise TakeoverError(f'instance {name}: service address: {exc.msg}', {'changed': False}) from None
    try:
        check_params(volume_params(params, 'mounted'))
    except VolumeError as exc:
        raise TakeoverError(f'instance {name}: volume: {exc.msg}', {'changed': False}) from None
    for key in ('record_file', 'control_script', 'master'):
        value = params.get(key)
        if value is not None and (not isinstance(value, str) or not value.startswith('/') or '\0' in value):
            raise TakeoverError(f'instance {name}: {key} must be an absolute path, not {value!r}', {'changed': False})


def volume_params(params: dict, state: str) -> dict:
    """The shared_volume request of this move (shared_volume's defaults for what the pair does not set)."""
    return {'uuid': params.get('uuid'), 'label': params.get('label'), 'state': state,
            'mountpoint': params.get('mountpoint'), 'fstype': params.get('fstype') or 'ext4',
            'opts': params.get('opts') or 'defaults', 'devices': params.get('devices') or ['/dev/*'],
            'fsck': 'auto', 'require_mmp': True, 'unclean_mmp': params.get('unclean_mmp') or 'wait',
            'fenced_peer': params.get('fenced_peer') or None,
            'mmp_probe_timeout': params.get('mmp_probe_timeout', 130), 'mmp_update_interval': 5,
            'pidfile': params.get('pidfile') or cyrusinstance.paths(params['instance'])['pidfile'],
            'stop_timeout': params.get('timeout', 30)}


def address_params(params: dict, state: str, announce_count: int | None = None) -> dict:
    """The service_ip request of this move (service_ip's defaults for what the pair does not set)."""
    fenced = bool(params.get('fenced_peer'))
    return {'address': params['address'], 'interface': params.get('interface') or None, 'label': None,
            'broadcast': None, 'preferred_lft': None, 'noprefixroute': False, 'namespace': None, 'state': state,
            'announce_count': params.get('announce_count', 3) if announce_count is None else announce_count,
            'announce_interval': params.get('announce_interval', 0.2), 'announce_mode': 'request',
            'conflict_probe': True, 'probe_count': PROBE_COUNT, 'probe_timeout': PROBE_TIMEOUT, 'ipv6_dad': True,
            'dad_timeout': 10, 'require_link_up': True,
            'force': bool(params.get('force')) or fenced,
            'peer_state': params.get('peer_state') or ('fenced' if fenced else None)}


def service_manager(wanted: str, root: str = '/') -> str:
    """systemd when asked, or (auto) when systemd runs this host (sd_booted: /run/systemd/system exists)."""
    if wanted in ('systemd', 'direct'):
        return wanted
    return 'systemd' if os.path.isdir(os.path.join(root, 'run/systemd/system')) else 'direct'


class Takeover:
    """One move of one instance on this node: run(state) -> result, or TakeoverError."""

    def __init__(self, run, params: dict, check_mode: bool = False, ip_bin: str = 'ip', clock=time.time,
                 python: str = '/usr/bin/python3', address_manager=manage_address, volume_factory=Volume):
        self.run = run
        self.p = params
        self.name = params['instance']
        self.check_mode = check_mode
        self.ip_bin = ip_bin
        self.clock = clock
        self.python = python
        self.manage_address = address_manager
        self.volume_factory = volume_factory
        self.manager = service_manager(params.get('service_manager') or 'auto')
        self.paths = cyrusinstance.paths(self.name)
        self.started = clock()
        self.starting = False
        self.result: dict = {'changed': False, 'instance': self.name, 'state': params['state'],
                             'service_manager': self.manager, 'phases': [], 'undone': []}

    # -- the phases ------------------------------------------------------------------------------
    def phase(self, name: str, changed: bool, began: float) -> None:
        now = self.clock()
        self.result['phases'].append({'phase': name, 'at': round(now, 3), 'seconds': round(now - began, 3),
                                      'changed': bool(changed)})
        self.result['changed'] = self.result['changed'] or bool(changed)

    def fail(self, msg: str) -> TakeoverError:
        self.result['seconds'] = round(self.clock() - self.started, 3)
        return TakeoverError(f'instance {self.name}: {msg}', self.result)

    # -- the cluster ---------------------------------------------------------------------------
    def cluster_owner(self) -> str:
        """The primitive of a Pacemaker cluster running here that manages the instance ('' when none does)."""
        cibadmin = shutil.which('cibadmin', path=os.pathsep.join([os.environ.get('PATH', os.defpath), '/usr/sbin',
                                                                  '/sbin']))
        if self.p.get('ignore_cluster') or not cibadmin:
            return ''
        rc, out, _err = self.run([cibadmin, '--query', '--scope', 'resources', '--xpath', _XPATH.format(self.name)])
        if rc != 0 or not out.strip():
            return ''
        return (_PRIMITIVE_ID.findall(out) + ['?'])[0]

    # -- the instance --------------------------------------------------------------------------
    def _control(self, action: str) -> dict:
        argv = [self.python, self.p.get('control_script') or CONTROL_SCRIPT, action,
                '--imapd-conf', self.paths['imapd_conf'], '--cyrus-conf', self.paths['cyrus_conf'],
                '--pidfile', self.p.get('pidfile') or self.paths['pidfile'],
                '--master', self.p.get('master') or cyrusinstance.default_master(),
                '--address', self.p['address'].split('/')[0], '--user', self.p.get('user') or 'cyrus',
                '--group', self.p.get('group') or 'mail', '--timeout', str(self.p.get('timeout', 30))]
        if self.check_mode and action != 'status':
            argv.append('--check')
        rc, out, err = self.run(argv)
        try:
            answer = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        except ValueError:
            answer = {}
        if rc != 0 or not isinstance(answer, dict) or 'changed' not in answer:
            reason = answer.get('msg') if isinstance(answer, dict) and answer.get('msg') else (err or out).strip()
            raise self.fail(f'the control script could not {action} the instance: {reason or f"exit status {rc}"}')
        return answer

    def _unit_state(self) -> str:
        rc, out, err = self.run(['systemctl', 'show', '--property=ActiveState', '--value', UNIT.format(self.name)])
        if rc != 0:
            raise self.fail(f'cannot read the state of {UNIT.format(self.name)}: {(err or out).strip()}')
        return out.strip()

    def _systemctl(self, *args: str) -> None:
        rc, out, err = self.run(['systemctl', *args, UNIT.format(self.name)])
        if rc != 0:
            raise self.fail(f'systemctl {" ".join(args)} {UNIT.format(self.name)} failed: {(err or out).strip()}')

    def instance(self, want: str) -> dict:
        """The instance started or stopped: {'changed': bool, 'msg': ...}."""
        if self.manager == 'direct':
            if self.check_mode:     # the status only: a start's own checks need the address this run would take
                state = self._control('status').get('state')
                return {'changed': state != want, 'msg': f'master would be {want}' if state != want else f'master is {state}'}
            return self._control('start' if want == 'started' else 'stop')
        state = self._unit_state()
        running = state in ('active', 'activating', 'reloading', 'deactivating')
        if want == 'started':
            if state == 'active':
                return {'changed': False, 'msg': f'{UNIT.format(self.name)} is active'}
            if not self.check_mode:
                self._systemctl('start')
            return {'changed': True, 'msg': f'{UNIT.format(self.name)} started (was {state})'}
        if not running:
            if state == 'failed' and not self.check_mode:
                self._systemctl('reset-failed')     # nothing of it runs: a stopped instance is left inactive
            return {'changed': False, 'msg': f'{UNIT.format(self.name)} is {state}'}
        if not self.check_mode:
            self._systemctl('stop')
            if self._unit_state() == 'failed':      # a hung master killed by the stop leaves the unit failed
                self._systemctl('reset-failed')
        return {'changed': True, 'msg': f'{UNIT.format(self.name)} stopped (was {state})'}

    # -- the address and the volume ------------------------------------------------------------
    def address(self, state: str, announce_count: int | None = None) -> dict:
        try:
            return self.manage_address(address_params(self.p, state, announce_count), self.run, self.check_mode,
                                       self.ip_bin)
        except ServiceIpError as exc:
            raise self.fail(f'service address {self.p["address"]}: {exc.msg}') from None

    def volume(self, state: str) -> dict:
        vol = self.volume_factory(self.run, volume_params(self.p, state), check_mode=self.check_mode)
        try:
            return getattr(vol, state)()
        except VolumeError as exc:
            raise self.fail(f'volume: {exc.msg}') from None
        except OSError as exc:
            raise self.fail(f'volume {vol.identity()}: {exc}') from None

    # -- the record of the active node ------------------------------------------------------------
    def record(self) -> bool:
        """The record on the volume names this node (written atomically; kept when it already does)."""
        path = self.p.get('record_file')
        if not path:
            return False
        want = dict(self.p.get('record') or {})
        node = want.get('active')
        try:
            with open(path, encoding='utf-8') as handle:
                old = json.load(handle)
        except (OSError, ValueError):
            old = {}
        if isinstance(old, dict) and old.get('active') == node and old.get('instance') == self.name:
            return False
        if self.check_mode:
            return True
        want.update(instance=self.name, since=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.clock())))
        directory = os.path.dirname(path)
        fd, tmp = tempfile.mkstemp(prefix='.cyrus-ha-record.', dir=directory)
        try:
            with os.fdopen(fd, 'w', encoding='utf-8') as handle:
                handle.write(json.dumps(want, indent=4, sort_keys=True) + '\n')
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return True

    # -- the two directions ------------------------------------------------------------------------
    def refuse_cluster(self) -> None:
        primitive = self.cluster_owner()
        if primitive:
            raise self.fail(f'managed by the Pacemaker cluster running on this node (primitive {primitive}): refusing '
                            'to move it here as well. Let the cluster move it, or take it out of the cluster\'s hands '
                            'first; ignore_cluster=true only when the cluster no longer manages it. Nothing was changed')

    def release(self) -> dict:
        self.refuse_cluster()
        began = self.clock()
        self.result['instance_result'] = self.instance('stopped')
        self.phase('instance stopped', self.result['instance_result']['changed'], began)
        testhook.kill_point('instance-stopped')
        began = self.clock()
        self.result['address_result'] = self.address('absent')
        self.phase('address released', self.result['address_result']['changed'], began)
        testhook.kill_point('address-released')
        began = self.clock()
        self.result['volume_result'] = self.volume('unmounted')
        self.phase('volume unmounted', self.result['volume_result']['changed'], began)
        testhook.kill_point('volume-unmounted')
        return self.finish()

    def acquire(self) -> dict:
        self.refuse_cluster()
        count = int(self.p.get('announce_count', 3))
        try:
            began = self.clock()
            self.result['volume_result'] = self.volume('mounted')
            self.phase('volume mounted', self.result['volume_result']['changed'], began)
            testhook.kill_point('volume-mounted')
            began = self.clock()
            # the first announcement goes out with the address, the others once the instance is started: the
            # start does not wait for them
            self.result['address_result'] = self.address('present', min(count, 1))
            announced_at = self.clock()
            self.phase('address taken', self.result['address_result']['changed'], began)
            testhook.kill_point('address-taken')
            began = self.clock()
            self.starting = True
            self.result['instance_result'] = self.instance('started')
            self.phase('instance up', self.result['instance_result']['changed'], began)
            testhook.kill_point('instance-started')
        except TakeoverError as exc:
            self.undo()
            raise TakeoverError(exc.msg + self.undone_text(), self.result) from None
        if count > 1 and self.result['address_result']['changed'] and not self.check_mode:
            time.sleep(max(0.0, float(self.p.get('announce_interval', 0.2)) - (self.clock() - announced_at)))
            try:
                self.result['announced'] = self.address('announced', count - 1)
            except TakeoverError as exc:   # the address is up and answered for: a lost extra announcement is a warning
                self.result.setdefault('warnings', []).append(exc.msg)
        began = self.clock()
        self.result['record_changed'] = self.record()
        if self.result['record_changed']:
            self.phase('record written', True, began)
        return self.finish()

    def undo(self) -> None:
        """What this acquire changed, undone in reverse (a real run only: check mode changed nothing). An instance
        whose start failed is stopped whatever of it runs; one that ran before this run is left alone."""
        if self.check_mode:
            return
        started_here = self.starting and self.result.get('instance_result', {}).get('changed', True)
        steps = [(started_here, 'instance stopped', lambda: self.instance('stopped')),
                 (self.result.get('address_result', {}).get('changed'), 'address released', lambda: self.address('absent')),
                 (self.result.get('volume_result', {}).get('changed'), 'volume unmounted', lambda: self.volume('unmounted'))]
        for needed, what, action in steps:
            if not needed:
                continue
            try:
                if action().get('changed'):
                    self.result['undone'].append(what)
            except TakeoverError as exc:
                self.result['undone'].append(f'{what} FAILED ({exc.msg})')

    def undone_text(self) -> str:
        if not self.result['undone']:
            return '. Nothing was changed' if not self.result['changed'] else ''
        return '. Undone: ' + ', '.join(self.result['undone'])

    def finish(self) -> dict:
        self.result['seconds'] = round(self.clock() - self.started, 3)
        return self.result

    def execute(self) -> dict:
        return self.release() if self.p['state'] == 'released' else self.acquire()
