# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.shared_volume on a lab "SAN": one ext4 image reached by two loop devices, one used by
be1 and one by spare, each mounting in its own mount namespace: two paths to one disk, exactly
where a double mount corrupts a filesystem and MMP prevents it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid as uuidlib

import pytest

import labutil

pytestmark = pytest.mark.lab

MOUNT = '/srv/cyha-sv-test'


def sh(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout.strip()


def module(host: str, tmp_path, *, check: bool = False, diff: bool = False, **args) -> dict:
    """Run cyrus.ha.shared_volume on a lab host over SSH; return its JSON result."""
    tree = tmp_path / f'tree-{host}-{len(os.listdir(tmp_path))}'
    argv = [os.path.join(labutil.BIN, 'ansible'), '-i', labutil.inventory(), host, '-m', 'cyrus.ha.shared_volume',
            '-a', json.dumps(args), '--tree', str(tree)]
    if check:
        argv.append('--check')
    if diff:
        argv.append('--diff')
    proc = labutil.run(argv)
    with open(tree / host, encoding='utf-8') as handle:
        result = json.load(handle)
    # The tree callback keeps the module's result; the run's exit code says whether it failed.
    result['failed'] = proc.returncode != 0
    result['_stdout'] = proc.stdout + proc.stderr    # --diff and warnings are printed, not kept in the tree
    return result


def on(host: str, command: str, check: bool = True):
    return labutil.ansible(host, 'ansible.builtin.command', command, check=check)


def mounted_on(host: str) -> str:
    proc = on(host, f'findmnt -n -o SOURCE {MOUNT}', check=False)
    return proc.stdout.split('>>', 1)[-1].strip() if proc.returncode == 0 else ''


class San:
    """One image file, one loop device per host."""

    def __init__(self, lab_dir: str):
        self.dir = os.path.join(lab_dir, 'san-test')
        os.makedirs(self.dir, exist_ok=True)
        self.image = os.path.join(self.dir, 'cyha-sv-test.img')
        self.uuid = str(uuidlib.uuid4())
        self.loops: dict[str, str] = {}

    def make(self, mmp: bool, interval: int = 1) -> None:
        with open(self.image, 'wb') as handle:
            handle.truncate(64 * 1024 * 1024)
        argv = ['mkfs.ext4', '-q', '-F', '-L', 'cyha-sv', '-U', self.uuid]
        if mmp:
            argv += ['-O', 'mmp', '-E', f'mmp_update_interval={interval}']
        sh(*argv, self.image)

    def attach(self, name: str, image: str | None = None) -> str:
        self.loops[name] = sh('losetup', '-f', '--show', image or self.image)
        return self.loops[name]

    def release(self) -> None:
        for dev in self.loops.values():
            subprocess.run(['losetup', '-d', dev], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope='module')
def san(lab):
    disk = San(labutil.LAB_DIR)
    disk.make(mmp=False)
    disk.attach('be1')
    disk.attach('spare')
    yield disk
    for host in ('be1', 'spare'):
        on(host, f'umount -l {MOUNT}', check=False)
    disk.release()


def test_prepare_enables_mmp_once(san, tmp_path):
    base = {'uuid': san.uuid, 'state': 'prepared', 'mmp_update_interval': 1, 'devices': [san.loops['be1']]}
    refused = module('be1', tmp_path, uuid=san.uuid, mountpoint=MOUNT, devices=[san.loops['be1']])
    assert refused['failed'] and 'has no multiple-mount protection' in refused['msg']
    assert mounted_on('be1') == ''
    predicted = module('be1', tmp_path, check=True, **base)
    assert predicted['changed'] and predicted['actions'] == ['enable_mmp']
    assert 'mmp' not in sh('dumpe2fs', '-h', san.image).split('Filesystem features:')[1].split('\n')[0]
    done = module('be1', tmp_path, **base)
    assert done['changed'] and done['actions'] == ['enable_mmp']
    assert 'MMP update interval:      1' in sh('dumpe2fs', '-h', san.image)
    again = module('be1', tmp_path, **base)
    assert not again['changed'] and again['actions'] == []


def test_mount_on_home_node_then_idempotent(san, tmp_path):
    args = {'uuid': san.uuid, 'mountpoint': MOUNT, 'devices': [san.loops['be1']]}
    predicted = module('be1', tmp_path, check=True, diff=True, **args)
    assert predicted['changed'] and predicted['actions'] == ['mount']
    assert '-    "mounted": false,' in predicted['_stdout'] and '+    "mounted": true,' in predicted['_stdout']
    assert mounted_on('be1') == ''
    done = module('be1', tmp_path, **args)
    assert done['changed'] and done['mmp']['state'] == 'clean' and done['device'] == san.loops['be1']
    assert mounted_on('be1') == san.loops['be1']
    assert mounted_on('spare') == '', 'a mount on be1 must be invisible on spare'
    again = module('be1', tmp_path, **args)
    assert not again['changed'] and again['mounted_before']
    assert not module('be1', tmp_path, check=True, **args)['changed']


def test_spare_refuses_while_home_heartbeat_is_live(san, tmp_path):
    refused = module('spare', tmp_path, uuid=san.uuid, mountpoint=MOUNT, devices=[san.loops['spare']],
                     fenced_peer='be1')
    assert refused['failed']
    assert 'is still updating it; refusing to mount (split brain)' in refused['msg']
    assert f"(device {os.path.basename(san.loops['be1'])})" in refused['msg']
    assert refused['mmp']['live'] is True
    assert mounted_on('spare') == ''
    assert 'clear_mmp' not in refused['actions']


BAD_INPUT_PLAY = """
- hosts: be1
  gather_facts: false
  tasks:
    - name: Each bad input, one at a time
      cyrus.ha.shared_volume:
        uuid: "{{ item.uuid | default(omit) }}"
        label: "{{ item.label | default(omit) }}"
        mountpoint: "{{ item.mountpoint | default(omit) }}"
        devices: "{{ item.devices | default(omit) }}"
        fstype: "{{ item.fstype | default(omit) }}"
      loop: "{{ cases }}"
      register: outcome
      ignore_errors: true
    - name: Keep the messages
      ansible.builtin.copy:
        content: "{{ outcome.results | map(attribute='msg') | list | to_json }}"
        dest: "{{ out }}"
      delegate_to: localhost
"""


def test_bad_input_is_refused_with_a_clear_message(san, tmp_path):
    cases = [
        ({'uuid': 'not a uuid!', 'mountpoint': MOUNT}, "uuid 'not a uuid!' is not a filesystem UUID"),
        ({'label': 'x' * 17, 'mountpoint': MOUNT}, f"label '{'x' * 17}' is not a valid filesystem label"),
        ({'uuid': san.uuid, 'mountpoint': 'relative/dir'}, "mountpoint 'relative/dir' must be an absolute path"),
        ({'uuid': san.uuid}, 'state is mounted but all of the following are missing: mountpoint'),
        ({'uuid': san.uuid, 'label': 'cyha-sv', 'mountpoint': MOUNT}, 'parameters are mutually exclusive: uuid|label'),
        ({'uuid': str(uuidlib.uuid4()), 'mountpoint': MOUNT}, 'no block device carries UUID='),
        ({'uuid': san.uuid, 'mountpoint': MOUNT}, 'is on several devices'),
        ({'uuid': san.uuid, 'mountpoint': MOUNT, 'devices': [san.loops['spare']], 'fstype': 'xfs'}, 'holds ext4, not xfs'),
        ({'uuid': san.uuid, 'mountpoint': '/srv/cyha-sv-other', 'devices': [san.loops['be1']]},
         'is already mounted on this node at /srv/cyha-sv-test'),
    ]
    play, out = tmp_path / 'bad.yml', tmp_path / 'messages.json'
    play.write_text(BAD_INPUT_PLAY, encoding='utf-8')
    proc = labutil.playbook(str(play), '-e', json.dumps({'cases': [c for c, m in cases], 'out': str(out)}))
    assert labutil.recap(proc.stdout)['be1']['ignored'] == 1, proc.stdout
    messages = json.loads(out.read_text(encoding='utf-8'))
    assert len(messages) == len(cases)
    for (args, expected), message in zip(cases, messages):
        assert expected in message, (args, message)
    assert 'Traceback' not in proc.stdout
    assert mounted_on('be1') == san.loops['be1']


def test_unmount_stops_only_the_instance_then_names_other_holders(san, tmp_path):
    pidfile = '/run/cyha-sv-instance.pid'
    # The "instance": a process with its working directory on the volume, started from be1's
    # SSH session (so in be1's mount namespace), its PID in a pidfile.
    on('be1', f"setsid -f sh -c 'cd {MOUNT} && echo $$ > {pidfile} && exec sleep 300'")
    labutil.poll(lambda: on('be1', f'cat {pidfile}', check=False).returncode == 0, 10)
    instance_pid = int(on('be1', f'cat {pidfile}').stdout.split('>>', 1)[-1])
    # Another process holding the mount that is NOT the instance.
    other = subprocess.Popen(['nsenter', '-t', str(instance_pid), '-m', '-n', 'sh', '-c',
                              f'cd {MOUNT} && exec sleep 300'])
    assert labutil.poll(lambda: os.path.exists(f'/proc/{other.pid}/cwd')
                        and os.stat(f'/proc/{other.pid}/cwd').st_dev != os.stat('/').st_dev, 10)
    try:
        result = module('be1', tmp_path, uuid=san.uuid, mountpoint=MOUNT, state='unmounted', pidfile=pidfile,
                        devices=[san.loops['be1']], stop_timeout=5)
        assert result['failed'] and f'cannot unmount {MOUNT}' in result['msg']
        assert f'PID {other.pid} (sleep: cwd)' in result['msg']
        assert result['stopped']['pid'] == instance_pid and result['stopped']['signal'] == 'TERM'
        assert other.poll() is None, 'a process outside the pidfile must never be killed'
        assert mounted_on('be1') == san.loops['be1']
    finally:
        other.kill()
        other.wait()
    predicted = module('be1', tmp_path, check=True, uuid=san.uuid, state='unmounted', devices=[san.loops['be1']])
    assert predicted['changed'] and mounted_on('be1') == san.loops['be1']
    done = module('be1', tmp_path, uuid=san.uuid, mountpoint=MOUNT, state='unmounted', devices=[san.loops['be1']])
    assert done['changed'] and done['actions'] == ['umount'] and mounted_on('be1') == ''
    again = module('be1', tmp_path, uuid=san.uuid, mountpoint=MOUNT, state='unmounted', devices=[san.loops['be1']])
    assert not again['changed']


def test_planned_takeover_by_spare_is_immediate(san, tmp_path):
    result = module('spare', tmp_path, uuid=san.uuid, mountpoint=MOUNT, devices=[san.loops['spare']])
    assert result['changed'] and result['mmp']['state'] == 'clean' and result['fsck']['ran'] is False
    assert mounted_on('spare') == san.loops['spare'] and mounted_on('be1') == ''
    on('spare', f'sh -c "echo takeover > {MOUNT}/canary && sync"')
    assert module('spare', tmp_path, uuid=san.uuid, mountpoint=MOUNT, state='unmounted',
                  devices=[san.loops['spare']])['changed']


def test_unclean_takeover_needs_fencing_or_waits_out_the_heartbeat(san, tmp_path):
    # be1 mounts and writes; the disk as it stands is copied: the state a SAN is left in when
    # be1 dies without unmounting (MMP in use, journal needing recovery, nobody updating).
    assert module('be1', tmp_path, uuid=san.uuid, mountpoint=MOUNT, devices=[san.loops['be1']])['changed']
    on('be1', f'sh -c "echo before-crash > {MOUNT}/canary && sync"')
    crashed = [os.path.join(san.dir, f'crashed{i}.img') for i in (1, 2)]
    for copy in crashed:
        shutil.copyfile(san.image, copy)
    module('be1', tmp_path, uuid=san.uuid, mountpoint=MOUNT, state='unmounted', devices=[san.loops['be1']])
    base = {'uuid': san.uuid, 'mountpoint': MOUNT, 'devices': [san.attach('crashed1', crashed[0])]}

    refused = module('spare', tmp_path, unclean_mmp='refuse', **base)
    assert refused['failed'] and 'did not unmount cleanly and its heartbeat has stopped' in refused['msg']
    assert refused['mmp']['state'] == 'stale' and refused['mmp']['live'] is False
    assert mounted_on('spare') == ''

    predicted = module('spare', tmp_path, check=True, fenced_peer='be1', **base)
    assert predicted['changed'] and predicted['actions'] == ['clear_mmp', 'fsck', 'mount']
    assert mounted_on('spare') == ''

    fenced = module('spare', tmp_path, fenced_peer='be1', **base)
    assert fenced['changed'] and fenced['actions'] == ['clear_mmp', 'fsck', 'mount']
    assert fenced['fsck']['ran'] and fenced['fsck']['rc'] in (0, 1)
    assert on('spare', f'cat {MOUNT}/canary').stdout.split('>>', 1)[-1].strip() == 'before-crash'
    module('spare', tmp_path, state='unmounted', **base)

    # Without fencing, the default waits out the stale heartbeat (the kernel's MMP wait).
    base['devices'] = [san.attach('crashed2', crashed[1])]
    waited = module('spare', tmp_path, **base)
    assert waited['changed'] and waited['actions'] == ['fsck', 'mount'], waited
    assert waited['mmp']['state'] == 'stale'
    assert 'e2fsck and the kernel wait out its MMP heartbeat' in waited['_stdout']
    assert on('spare', f'cat {MOUNT}/canary').stdout.split('>>', 1)[-1].strip() == 'before-crash'
    module('spare', tmp_path, state='unmounted', **base)
