# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The takeover's order, refusals, undo and record, with the volume, the address and the commands faked (the
real ones run in tests/integration/test_warm_spare.py, on the lab's SAN pair)."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import takeover as tk
from ansible_collections.cyrus.ha.plugins.module_utils.service_ip import ServiceIpError
from ansible_collections.cyrus.ha.plugins.module_utils.volume import VolumeError


def params(**extra) -> dict:
    base = {'instance': 'be1', 'state': 'acquired', 'address': '198.51.100.121/24', 'label': 'cyrus-be1',
            'mountpoint': '/srv/cyrus-ha/be1', 'timeout': 30, 'announce_count': 3, 'announce_interval': 0.0,
            'service_manager': 'systemd', 'ignore_cluster': True}
    base.update(extra)
    return base


class World:
    """What the faked node holds, and every step taken in order."""

    def __init__(self, mounted=False, address=False, unit='inactive', fail=None):
        self.mounted, self.address, self.unit, self.fail = mounted, address, unit, fail or {}
        self.steps: list[str] = []

    def run(self, argv):
        if argv[0] == 'systemctl':
            if argv[1] == 'show':
                return 0, self.unit + '\n', ''
            self.steps.append(f'systemctl {argv[1]}')
            if argv[1] in self.fail:
                return 1, '', self.fail[argv[1]]
            self.unit = {'start': 'active', 'stop': 'inactive', 'reset-failed': 'inactive'}[argv[1]]
            return 0, '', ''
        raise AssertionError(f'unexpected command {argv}')

    def manage_address(self, request, runner, check_mode, ip_bin):
        state = request['state']
        if state in self.fail:
            raise ServiceIpError(self.fail[state])
        if state == 'announced':
            self.steps.append(f'announce {request["announce_count"]}')
            return {'changed': True, 'announcements': {'sent': request['announce_count']}}
        want = state == 'present'
        changed = self.address != want
        if changed and not check_mode:
            self.steps.append(f'address {state} (announce {request["announce_count"]})')
            self.address = want
        return {'changed': changed}

    def volume(self, runner, request, check_mode=False):
        world = self

        class Fake:
            def identity(self):
                return 'LABEL=cyrus-be1'

            def mounted(self):
                if 'mount' in world.fail:
                    raise VolumeError(world.fail['mount'])
                changed = not world.mounted
                if changed and not check_mode:
                    world.steps.append('mount')
                    world.mounted = True
                return {'changed': changed}

            def unmounted(self):
                changed = world.mounted
                if changed and not check_mode:
                    world.steps.append('umount')
                    world.mounted = False
                return {'changed': changed}
        return Fake()


def takeover(world: World, check_mode=False, **extra) -> tk.Takeover:
    return tk.Takeover(world.run, params(**extra), check_mode, address_manager=world.manage_address,
                       volume_factory=world.volume)


def test_acquire_goes_volume_address_instance_and_announces_the_rest_after_the_start():
    world = World()
    result = takeover(world).execute()
    assert world.steps == ['mount', 'address present (announce 1)', 'systemctl start', 'announce 2']
    assert [p['phase'] for p in result['phases']] == ['volume mounted', 'address taken', 'instance up']
    assert result['changed'] is True and result['undone'] == []
    again = takeover(world).execute()
    assert again['changed'] is False and world.steps[-1] == 'announce 2', 'nothing more was done'


def test_release_goes_instance_address_volume_and_clears_a_failed_unit():
    world = World(mounted=True, address=True, unit='active')
    result = takeover(world, state='released').execute()
    assert world.steps == ['systemctl stop', 'address absent (announce 3)', 'umount']
    assert [p['phase'] for p in result['phases']] == ['instance stopped', 'address released', 'volume unmounted']
    failed = World(unit='failed')
    assert takeover(failed, state='released').execute()['changed'] is False
    assert failed.steps == ['systemctl reset-failed'], 'a failed unit with nothing running is left inactive'


def test_check_mode_predicts_and_changes_nothing():
    world = World()
    result = takeover(world, check_mode=True).execute()
    assert result['changed'] is True and [p['changed'] for p in result['phases']] == [True, True, True]
    assert world.steps == [] and not world.mounted and not world.address


def test_a_failed_start_undoes_the_address_and_the_mount_in_reverse():
    world = World(fail={'start': 'Job for cyrus-imapd@be1.service failed'})
    with pytest.raises(tk.TakeoverError) as err:
        takeover(world).execute()
    assert err.value.msg == ('instance be1: systemctl start cyrus-imapd@be1.service failed: Job for '
                             'cyrus-imapd@be1.service failed. Undone: address released, volume unmounted')
    assert world.steps == ['mount', 'address present (announce 1)', 'systemctl start', 'address absent (announce 3)',
                           'umount']
    assert not world.mounted and not world.address


def test_a_refused_address_unmounts_what_this_run_mounted_but_not_a_mount_it_found():
    world = World(fail={'present': '198.51.100.121 answered from 02:00:00:00:00:01'})
    with pytest.raises(tk.TakeoverError) as err:
        takeover(world).execute()
    assert err.value.msg.endswith('. Undone: volume unmounted') and not world.mounted
    held = World(mounted=True, fail={'present': 'answered'})
    with pytest.raises(tk.TakeoverError) as err:
        takeover(held).execute()
    assert err.value.msg == 'instance be1: service address 198.51.100.121/24: answered. Nothing was changed'
    assert held.mounted, 'a volume mounted before this run is not this run\'s to unmount'


def test_a_refused_volume_changes_nothing():
    world = World(fail={'mount': 'MMP says node be1 has it in use'})
    with pytest.raises(tk.TakeoverError) as err:
        takeover(world).execute()
    assert err.value.msg == 'instance be1: volume: MMP says node be1 has it in use. Nothing was changed'
    assert world.steps == []


def test_an_instance_a_running_cluster_manages_is_refused_before_anything(monkeypatch):
    world = World()
    monkeypatch.setattr(tk.shutil, 'which', lambda name, path=None: '/usr/sbin/cibadmin')

    def run(argv):
        if argv[0] == '/usr/sbin/cibadmin':
            assert "@value='be1'" in argv[-1]
            return 0, '<primitive class="ocf" id="cyrus-be1" provider="cyrus" type="instance"/>', ''
        return world.run(argv)
    move = tk.Takeover(run, params(ignore_cluster=False), address_manager=world.manage_address,
                       volume_factory=world.volume)
    with pytest.raises(tk.TakeoverError) as err:
        move.execute()
    assert err.value.msg.startswith('instance be1: managed by the Pacemaker cluster running on this node '
                                    '(primitive cyrus-be1)')
    assert err.value.msg.endswith('Nothing was changed') and world.steps == []


@pytest.mark.parametrize('extra, message', [
    ({'instance': '../x'}, "instance '../x': not a valid instance name"),
    ({'mountpoint': None}, 'instance be1: acquiring needs mountpoint'),
    ({'force': True}, 'instance be1: force needs peer_state'),
    ({'timeout': 0}, 'instance be1: timeout must be a number of seconds from 1 to 3600, not 0'),
    ({'timeout': True}, 'instance be1: timeout must be a number of seconds from 1 to 3600, not True'),
    ({'record_file': 'state.json'}, "instance be1: record_file must be an absolute path, not 'state.json'"),
    ({'mountpoint': '/srv/a b'}, 'instance be1: volume: '),
    ({'address': '198.51.100.121'}, 'instance be1: service address: '),
    ({'address': '198.51.100.0/24'}, 'instance be1: service address: '),
    ({'address': '198.51.100.121/24; reboot'}, 'instance be1: service address: '),
])
def test_bad_requests_are_refused_naming_the_option(extra, message):
    with pytest.raises(tk.TakeoverError) as err:
        tk.check(params(**extra))
    assert err.value.msg.startswith(message)


def test_the_record_is_written_once_atomically_and_kept_when_it_names_this_node(tmp_path):
    path = tmp_path / 'cyrus-ha-warm-spare.json'
    world = World()
    first = takeover(world, record_file=str(path), record={'active': 'spare', 'home': 'be1'}).execute()
    assert first['record_changed'] is True and first['phases'][-1]['phase'] == 'record written'
    written = json.loads(path.read_text())
    assert written['active'] == 'spare' and written['instance'] == 'be1' and 'since' in written
    assert oct(os.stat(path).st_mode & 0o777) == '0o644'
    assert [p.name for p in tmp_path.iterdir()] == [path.name], 'no temporary file left'
    again = takeover(world, record_file=str(path), record={'active': 'spare', 'home': 'be1'}).execute()
    assert again['record_changed'] is False and json.loads(path.read_text()) == written


def test_service_manager_auto_follows_sd_booted(tmp_path):
    assert tk.service_manager('auto', str(tmp_path)) == 'direct'
    (tmp_path / 'run' / 'systemd' / 'system').mkdir(parents=True)
    assert tk.service_manager('auto', str(tmp_path)) == 'systemd'
    assert tk.service_manager('direct', str(tmp_path)) == 'direct'


def test_the_direct_manager_runs_the_control_script_with_an_argv(monkeypatch):
    calls = []

    def run(argv):
        calls.append(argv)
        return 0, json.dumps({'changed': True, 'state': 'started', 'msg': 'master started'}) + '\n', ''
    world = World()
    move = tk.Takeover(run, params(service_manager='direct', master='/usr/lib/cyrus/bin/master'),
                       address_manager=world.manage_address, volume_factory=world.volume, python='/usr/bin/python3')
    assert move.execute()['instance_result']['changed'] is True
    assert calls == [['/usr/bin/python3', tk.CONTROL_SCRIPT, 'start', '--imapd-conf', '/etc/cyrus-ha/be1/imapd.conf',
                      '--cyrus-conf', '/etc/cyrus-ha/be1/cyrus.conf', '--pidfile', '/run/cyrus-ha/be1/master.pid',
                      '--master', '/usr/lib/cyrus/bin/master', '--address', '198.51.100.121', '--user', 'cyrus',
                      '--group', 'mail', '--timeout', '30']]


def test_a_bad_address_is_refused_before_a_release_stops_the_instance():
    """The release's first step stops the instance: an address its third step would refuse must stop the call
    before anything, with service_ip's own message."""
    world = World(mounted=True, address=True, unit='active')
    bad = params(state='released', address='198.51.100.121')
    with pytest.raises(tk.TakeoverError) as err:
        tk.check(bad)
    assert err.value.msg == ("instance be1: service address: address '198.51.100.121' has no prefix length: write it "
                             'as ADDRESS/PREFIX, e.g. 203.0.113.50/24 or 2001:db8::50/64')
    assert world.unit == 'active' and world.steps == []
