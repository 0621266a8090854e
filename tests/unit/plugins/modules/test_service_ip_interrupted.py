# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""service_ip's markers and interrupted runs (issue 19): a marker from a previous life (another boot,
another network namespace under the same name, another interface) is never trusted; a run SIGKILLed at
each step boundary is finished (announced) or undone by the next one; hostile numbers and texts are refused
before anything changes.

The run is killed for real: it runs in a forked child against a fake `ip` whose state lives in a file,
and the step hook (Request.on_step, or the CYRUS_HA_TEST_KILL_AT variable) SIGKILLs the child at the
boundary. The same against real namespaces is in tests/integration/test_service_ip.py."""

from __future__ import annotations

import json
import os
import signal

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils import service_ip as sip, testhook
from test_service_ip_module import PARAMS, FakeIp  # the fake `ip` and the options of the module's tests

VIP = '203.0.113.50'


class FileIp(FakeIp):
    """FakeIp whose links live in a JSON file: what a killed child did is what the next run sees."""

    def __init__(self, path):
        self.path = str(path)
        super().__init__()
        self.save()

    def save(self):
        with open(self.path, 'w', encoding='utf-8') as handle:
            json.dump(self.links, handle)

    def __call__(self, argv):
        with open(self.path, encoding='utf-8') as handle:
            self.links = json.load(handle)
        try:
            return super().__call__(argv)
        finally:
            self.save()

    def reload(self):
        with open(self.path, encoding='utf-8') as handle:
            self.links = json.load(handle)
        return self


class Wire:
    """A raw socket factory whose frames are appended to a file (they survive the child)."""

    def __init__(self, path):
        self.path = str(path)

    def __call__(self, *args):
        wire = self

        class Sock:
            def bind(self, addr):
                pass

            def send(self, frame):
                with open(wire.path, 'ab') as handle:
                    handle.write(frame.hex().encode() + b'\n')

            def close(self):
                pass
        return Sock()

    def frames(self) -> int:
        try:
            with open(self.path, 'rb') as handle:
                return len(handle.read().splitlines())
        except FileNotFoundError:
            return 0


@pytest.fixture()
def node(tmp_path, monkeypatch):
    monkeypatch.setattr(sip, 'MARK_DIR', str(tmp_path / 'marks'))
    monkeypatch.setattr(sip.ann, 'probe', lambda *a, **k: {'conflict': False, 'mac': None, 'probes': 2, 'seconds': 0.0})
    return FileIp(tmp_path / 'links.json'), Wire(tmp_path / 'wire'), tmp_path / 'marks'


def run(node, check=False, on_step=None, **params):
    fake, wire, dummy = node
    params = dict(dict(PARAMS, address=f'{VIP}/24', announce_count=3, announce_interval=0.001), **params)
    return sip.manage(params, fake, check, promote=lambda dev: False, setns=None, sock_factory=wire, on_step=on_step)


def killed_at(node, step, env=False, **params):
    """Run in a child killed by SIGKILL at `step`; True when it died there (never reaching the end)."""
    pid = os.fork()
    if pid == 0:        # the child: never returns into pytest
        try:
            if env:
                os.environ[testhook.ENV] = step
                run(node, **params)
            else:
                run(node, on_step=lambda s: os.kill(os.getpid(), signal.SIGKILL) if s == step else None, **params)
        finally:
            os._exit(0)
    dummy, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def held(node):
    return [a for a in node[0].reload().held('eth0') if a[0] == VIP]


def record(node, address=VIP):
    return sip.read_mark(None, address, str(node[2]))


STEPS = ['probed', 'marked', 'stale-removed', 'added', 'announced-1', 'announced-2', 'announced-3', 'recorded']


@pytest.mark.parametrize('step', STEPS)
def test_a_run_killed_at_each_step_is_finished_by_the_next(node, step):
    assert killed_at(node, step, conflict_probe=True), f'the run was not killed at {step}'
    added = STEPS.index(step) >= STEPS.index('added')
    assert bool(held(node)) is added
    sent_before = node[1].frames()
    again = run(node, conflict_probe=True)
    assert held(node) == [(VIP, 24, 'eth0')] and record(node)['state'] == 'announced'
    if step == 'recorded':
        assert again['changed'] is False and 'interrupted' not in again and node[1].frames() == sent_before
    else:
        assert again['changed'] is True and again['announcements']['sent'] == 3
        assert node[1].frames() == sent_before + 3
        assert ('interrupted' in again) is added, again
        if added:
            assert again['interrupted'] == (f'a previous run added {VIP} on eth0 but stopped before announcing it '
                                            '(its marker says `adding`): this run announces it')
            assert again['conflict_probe'] == {'skipped': 'not needed'}
    assert run(node, conflict_probe=True)['changed'] is False


@pytest.mark.parametrize('step', ['marked', 'added', 'announced-2'])
def test_a_killed_run_is_undone_by_absent_and_shown_by_facts(node, step):
    assert killed_at(node, step, env=True), 'the environment hook did not kill the run'
    facts = sip.held_addresses(runner=node[0], setns=None)
    listed = [(a['address'], a['interrupted']) for a in facts['service_ips']]
    assert listed == ([(VIP, True)] if step != 'marked' else [])
    gone = run(node, state='absent')
    assert gone['changed'] is (step != 'marked')
    assert held(node) == [] and list(node[2].iterdir()) == []


def test_a_killed_ipv6_run_waits_for_dad_and_announces(node):
    fake = node[0]
    assert killed_at(node, 'added', address='2001:db8::50/64', ipv6_dad=True)
    fake.reload()
    entry = next(a for a in fake.link('eth0')['addr_info'] if a['local'] == '2001:db8::50')
    assert record(node, '2001:db8::50')['state'] == 'adding'
    entry['tentative'] = True           # still tentative: the next run waits for DAD (the fake ends it)
    fake.save()
    calls = []
    fake_wait = type(fake).__call__

    def wait_sees_done(self, argv):
        calls.append(argv)
        out = fake_wait(self, argv)
        for link in self.links:
            for info in link['addr_info']:
                info.pop('tentative', None)
        self.save()
        return out
    type(fake).__call__ = wait_sees_done
    try:
        again = run(node, address='2001:db8::50/64', ipv6_dad=True)
    finally:
        type(fake).__call__ = fake_wait
    assert again['changed'] is True and 'interrupted' in again and 'dad_wait' in again['timings']
    assert record(node, '2001:db8::50')['state'] == 'announced'


# --------------------------------------------------------------------------- markers from a previous life

def plant(node, address=VIP, **changes):
    """A marker as this module writes it, with some of its identity changed."""
    fake = node[0].reload()
    ident = sip.node_identity()
    sip.write_mark(None, address, changes.pop('state', 'announced'), dict(ident, **changes.pop('ident', {})), 'eth0',
                   changes.pop('ifindex', fake.link('eth0')['ifindex']), str(node[2]),
                   changes.pop('mac', fake.link('eth0')['address']))


@pytest.mark.parametrize('changes', [
    {'ident': {'netns': [0, 1]}},                   # a namespace deleted and made again under the same name
    {'ident': {'netns_cookie': 1}},                 # ... that got the same inode number (inodes are reused)
    {'mac': '02:00:00:00:00:99'},                   # another interface (a new veth) under the same index
    {'ident': {'boot_id': '00000000-0000-0000-0000-000000000000'}},     # a previous boot
    {'ifindex': 99},                                # an interface deleted and made again
])
def test_a_marker_from_a_previous_life_is_never_trusted(node, changes):
    fake = node[0]
    fake.link('eth0')['addr_info'] = [a for a in fake.link('eth0')['addr_info'] if a['family'] == 'inet']
    fake.add('2001:db8::60/64', 'eth0')             # the node's own address now: its only global IPv6 address
    fake.save()
    plant(node, '2001:db8::60', **changes)
    facts = sip.held_addresses(runner=fake, setns=None)
    assert '2001:db8::60' in [a['address'] for a in facts['boot_ips']]
    assert '2001:db8::60' not in [a['address'] for a in facts['service_ips']]
    with pytest.raises(sip.ServiceIpError) as caught:
        run(node, address='2001:db8::60/64', state='absent')
    assert caught.value.msg.startswith('2001:db8::60 is the own (boot) address of eth0')
    assert ('2001:db8::60', 64, None) in fake.reload().held('eth0')


def test_a_trusted_marker_still_makes_a_lone_ipv6_address_a_service_address(node):
    fake = node[0]
    fake.link('eth0')['addr_info'] = [a for a in fake.link('eth0')['addr_info'] if a['family'] == 'inet']
    fake.add('2001:db8::60/64', 'eth0')
    fake.save()
    plant(node, '2001:db8::60')
    facts = sip.held_addresses(runner=fake, setns=None)
    assert [a['address'] for a in facts['service_ips']] == ['2001:db8::60']
    assert run(node, address='2001:db8::60/64', state='absent')['changed'] is True


def test_an_untrusted_marker_of_a_present_secondary_is_cleaned_up_not_trusted(node):
    fake = node[0]
    fake.add(f'{VIP}/24', 'eth0')                   # a secondary: a service address by the boot rule alone
    fake.save()
    plant(node, state='adding', ident={'netns': [0, 1]})
    before = os.listdir(node[2])
    same = run(node)
    assert same['changed'] is False and 'interrupted' not in same, 'an untrusted `adding` marker is not ours'
    assert before == [f'{VIP}@-'] and os.listdir(node[2]) == []
    predicted = run(node, check=True)
    assert predicted['changed'] is False


@pytest.mark.parametrize('kind', ['symlink', 'fifo', 'directory', 'huge', 'garbage', 'legacy-empty', 'list'])
def test_a_marker_that_is_not_a_record_is_ignored_without_hanging(node, kind):
    mark_dir = node[2]
    mark_dir.mkdir()
    path = mark_dir / f'{VIP}@-'
    if kind == 'symlink':
        path.symlink_to('/etc/passwd')
    elif kind == 'fifo':
        os.mkfifo(path)
    elif kind == 'directory':
        path.mkdir()
    else:
        path.write_text({'huge': 'x' * (sip.MARK_MAX_BYTES + 1), 'garbage': '{not json', 'legacy-empty': '',
                         'list': '[1, 2]'}[kind])
    assert sip.read_mark(None, VIP, str(mark_dir)) is None
    node[0].add(f'{VIP}/24', 'eth0')
    node[0].save()
    assert run(node)['changed'] is False
    assert os.path.exists('/etc/passwd')
    assert (kind == 'directory') is os.path.lexists(path), 'an untrusted marker file goes, a directory is left'


def test_a_marker_that_cannot_be_written_refuses_before_any_change(node, tmp_path, monkeypatch):
    blocker = tmp_path / 'blocker'
    blocker.write_text('')
    monkeypatch.setattr(sip, 'MARK_DIR', str(blocker / 'marks'))
    with pytest.raises(sip.ServiceIpError) as caught:
        run(node)
    assert caught.value.msg.startswith(f'{VIP}: cannot record the takeover in {blocker}/marks: ')
    assert caught.value.msg.endswith('. Nothing was changed') and caught.value.result['changed'] is False
    assert held(node) == [] and node[1].frames() == 0


def test_an_unexpected_error_while_announcing_undoes_the_address(node, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError('sleep length must be non-negative')
    monkeypatch.setattr(sip.ann, 'announce', broken)
    with pytest.raises(sip.ServiceIpError) as caught:
        run(node)
    assert caught.value.msg == (f'{VIP} on eth0: unexpected ValueError: sleep length must be non-negative; the '
                                'address was removed again')
    assert caught.value.result['changed'] is False and held(node) == [] and list(node[2].iterdir()) == []


# --------------------------------------------------------------------------- guards

def test_turning_the_probe_off_needs_a_statement_that_the_peer_is_down(node):
    with pytest.raises(sip.ServiceIpError) as caught:
        run(node, conflict_probe=False, peer_state=None)
    assert caught.value.msg == ('conflict_probe=false on eth0 needs peer_state (fenced or down): without the probe '
                                'nothing stops the address from being added while the peer still holds it (two nodes '
                                'answering for it); state why the peer cannot, or keep the probe')
    assert held(node) == [] and not node[2].exists()
    done = run(node, conflict_probe=False, peer_state='fenced')
    assert done['changed'] is True and done['conflict_probe'] == {'skipped': 'conflict_probe=false',
                                                                  'peer_state': 'fenced'}
    assert run(node, conflict_probe=False, peer_state=None, state='absent')['changed'] is True


NAN, INF = float('nan'), float('inf')
HOSTILE = [
    ({'announce_interval': NAN}, 'announce_interval must be a finite number, not nan'),
    ({'announce_interval': INF}, 'announce_interval must be a finite number, not inf'),
    ({'announce_interval': -0.5}, 'announce_interval must be at least 0, not -0.5'),
    ({'announce_interval': 1e9}, 'announce_interval must be at most 10, not 1000000000.0'),
    ({'announce_count': 10 ** 9}, 'announce_count must be at most 100, not 1000000000'),
    ({'probe_timeout': NAN}, 'probe_timeout must be a finite number, not nan'),
    ({'probe_timeout': -INF}, 'probe_timeout must be a finite number, not -inf'),
    ({'probe_timeout': 0}, 'probe_timeout must be at least 0.001, not 0'),
    ({'probe_timeout': 1e300}, 'probe_timeout must be at most 10, not 1e+300'),
    ({'probe_count': 10 ** 6}, 'probe_count must be at most 100, not 1000000'),
    ({'dad_timeout': NAN}, 'dad_timeout must be a finite number, not nan'),
    ({'dad_timeout': 1e12}, 'dad_timeout must be at most 300, not 1000000000000.0'),
    ({'announce_count': True}, 'announce_count must be a number, not True'),
    ({'address': '203.0.113.50/\u00b2\u2074'}, "address '203.0.113.50/²⁴' contains characters that are not "
     "printable ASCII: write it with ASCII digits, e.g. 203.0.113.50/24"),
    ({'address': '203.0.113.50/\u0662\u0664'}, "address '203.0.113.50/٢٤' contains characters that are not "
     "printable ASCII: write it with ASCII digits, e.g. 203.0.113.50/24"),
    ({'address': '\uff12\uff10\uff13.0.113.50/24'}, "address '２０３.0.113.50/24' contains characters that are not "
     "printable ASCII: write it with ASCII digits, e.g. 203.0.113.50/24"),
    ({'address': '203.0.113.50/24\n'}, "address '203.0.113.50/24\\n' contains characters that are not printable "
     "ASCII: write it with ASCII digits, e.g. 203.0.113.50/24"),
    ({'address': '203.0.113.50/ 24'}, "address '203.0.113.50/ 24' has an invalid prefix length ' 24': use 1 to 32 "
     "for IPv4"),
    ({'address': '2001:db8::50%eth0/64'}, "address '2001:db8::50%eth0/64' has a zone index (%...): write the "
     "address without it and set interface"),
    ({'address': '::ffff:203.0.113.50/120'}, "address '::ffff:203.0.113.50/120' is an IPv4-mapped IPv6 address "
     "(::ffff:203.0.113.50): nobody reaches a service there; write the IPv4 address, 203.0.113.50/PREFIX"),
    ({'address': '169.254.10.10/16'}, "address '169.254.10.10/16' is a link-local address (169.254.0.0/16): it is "
     "never routed beyond its link, and the kernel makes its own there; a service address must be a global or "
     "unique-local one"),
    ({'address': 'fe80::50/64', 'interface': 'eth0'}, "address 'fe80::50/64' is a link-local address (fe80::/10): it "
     "is never routed beyond its link, and the kernel makes its own there; a service address must be a global or "
     "unique-local one"),
    ({'namespace': ''}, "namespace is empty (''): omit it to act in the network namespace the module runs in"),
    ({'interface': ' '}, "interface is empty (' '): omit it to use the default"),
    ({'label': ''}, "label is empty (''): omit it to use the default"),
    ({'interface': 'eth0\n'}, "interface 'eth0\\n' is not a valid name: use letters, digits, \".\", \"_\", \"-\" (no "
     "spaces, slashes or shell metacharacters), at most 15 characters"),
    ({'preferred_lft': '\u0663'}, "preferred_lft '٣' must be \"forever\" or a number of seconds"),
    ({'preferred_lft': '99999999999'}, "preferred_lft '99999999999' must be \"forever\" or a number of seconds"),
    ({'broadcast': '\uff12\uff10\uff13.0.113.255'}, "broadcast '２０３.0.113.255' is not an IPv4 address"),
]


@pytest.mark.parametrize('params, message', HOSTILE, ids=[m[:50] for dummy, m in HOSTILE])
def test_hostile_input_is_refused_before_anything_is_read_or_changed(node, params, message):
    fake = node[0]
    with pytest.raises(sip.ServiceIpError) as caught:
        run(node, **params)
    assert caught.value.msg == message
    assert fake.calls == [] and held(node) == [] and not node[2].exists() and node[1].frames() == 0


def test_the_address_sshd_reports_in_ipv4_mapped_form_is_the_node_s_own(node, monkeypatch):
    fake = node[0]
    fake.add(f'{VIP}/24', 'eth0')
    fake.save()
    monkeypatch.setenv('SSH_CONNECTION', f'::ffff:203.0.113.1 40000 ::ffff:{VIP} 22')
    with pytest.raises(sip.ServiceIpError) as caught:
        run(node, state='absent')
    assert caught.value.msg.startswith(f'{VIP} is the own (boot) address of eth0')
    assert held(node) == [(VIP, 24, 'eth0')]


def test_an_address_ip_prints_in_another_form_is_matched():
    links = [{'ifindex': 2, 'ifname': 'eth0', 'addr_info': [
        {'family': 'inet6', 'local': '2001:DB8:0:0::0:50', 'prefixlen': 64, 'scope': 'global'},
        {'family': 'inet6', 'local': '::ffff:203.0.113.5', 'prefixlen': 96, 'scope': 'global'}]}]
    assert [a['local'] for a in sip.flatten_addresses(links)] == ['2001:db8::50', '::ffff:cb00:7105']


@pytest.mark.parametrize('within', [[''], [' '], ['203.0.113.0/24\u0660'], [5]])
def test_facts_refuse_a_within_that_is_no_network(node, within):
    with pytest.raises(sip.ServiceIpError) as caught:
        sip.held_addresses(within=within, runner=node[0], setns=None)
    assert caught.value.msg == f'within: {within[0]!r} is not an IPv4 or IPv6 network'


def test_facts_refuse_an_empty_namespace(node):
    with pytest.raises(sip.ServiceIpError) as caught:
        sip.held_addresses(namespace='', runner=node[0], setns=None)
    assert caught.value.msg.startswith("namespace is empty (''): omit it")
    assert node[0].calls == []


def test_the_identity_names_this_boot_and_this_namespace():
    ident = sip.node_identity()
    assert len(ident['boot_id']) == 36 and ident['netns'][1] == os.stat('/proc/self/ns/net').st_ino
    assert isinstance(ident['netns_cookie'], int), 'this kernel (5.14+) has SO_NETNS_COOKIE'
    assert sip.node_identity() == ident


def test_a_kernel_without_netns_cookies_gives_none(monkeypatch):
    class NoCookie:
        def __init__(self, *args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def getsockopt(self, *args):
            raise OSError(92, 'Protocol not available')
    monkeypatch.setattr(sip.socket, 'socket', NoCookie)
    assert sip.netns_cookie() is None


def test_a_node_whose_boot_id_cannot_be_read_refuses_before_any_change(node, monkeypatch, tmp_path):
    monkeypatch.setattr(sip, 'BOOT_ID', str(tmp_path / 'no-boot-id'))
    with pytest.raises(sip.ServiceIpError) as caught:
        run(node)
    assert caught.value.msg.startswith(f"cannot read this node's identity ({tmp_path}/no-boot-id, ")
    assert caught.value.msg.endswith('nothing was changed') and held(node) == [] and node[1].frames() == 0
