# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cross-host protocol on its own: the run directory, the leader's broker and the signed TCP side channel,
waiting, gone hosts."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import crosshost_protocol as protocol
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import procs

KEY = 'k' * 32


@pytest.fixture
def broker(side_channel):
    """A real broker process on 127.0.0.1; yields the channel options."""
    sock = protocol.listen('127.0.0.1', side_channel['channel_port'])
    child = procs.Child(protocol.serve, sock, KEY, 'run001', deadline=60)
    sock.close()
    try:
        yield side_channel
    finally:
        child.kill()


def channel(opts, key=KEY, run_id='run001'):
    return protocol.TcpChannel('127.0.0.1', opts['channel_port'], key, run_id)


def test_the_run_directory_is_named_for_the_collection_not_the_lab(tmp_path):
    assert protocol.rundir_of(str(tmp_path), 'abc123') == str(tmp_path / '.cyrus-ha-probe-xh-abc123')


def test_the_leader_creates_the_run_directory_once_with_its_owner(tmp_path):
    rundir = protocol.rundir_of(str(tmp_path), 'meet01')
    assert protocol.await_dir(rundir, 0.05) is None
    protocol.create_rundir(rundir)
    assert os.stat(rundir).st_mode & 0o777 == 0o700
    with open(os.path.join(rundir, 'owner.json'), encoding='utf-8') as handle:
        owner = json.load(handle)
    assert owner['host'] == socket.gethostname() and owner['pid'] == os.getpid() and owner['start'] is not None
    assert protocol.await_dir(rundir, 0.05) == 0.0
    with pytest.raises(FileExistsError):
        protocol.create_rundir(rundir)


def test_a_symlink_in_place_of_the_run_directory_is_named_at_once(tmp_path):
    (tmp_path / 'elsewhere').mkdir()
    (tmp_path / 'run').symlink_to(tmp_path / 'elsewhere')
    started = time.monotonic()
    assert protocol.await_dir(str(tmp_path / 'run'), 5) == 'symlink' and time.monotonic() - started < 1


def test_messages_go_through_the_leaders_broker_not_the_filesystem(broker, tmp_path):
    one, two = channel(broker), channel(broker)
    assert one.poll('go', 'a') is protocol.MISSING
    one.post('go', 'a', {'at': 1.5})
    one.post('none', 'a', None)
    assert two.poll('go', 'a') == {'at': 1.5} and two.poll('none', 'a') is None
    one.post('go', 'a', {'at': 2})
    assert two.poll('go', 'a') == {'at': 2}
    assert os.listdir(tmp_path) == []


def test_a_request_without_the_runs_key_is_refused(broker):
    channel(broker).post('go', 'a', {'secret': 1})
    with pytest.raises(protocol.BadMessage) as caught:
        channel(broker, key='x' * 32).poll('go', 'a')
    assert str(caught.value) == "the broker answered refused: the request is not signed with this run's key"
    with pytest.raises(protocol.BadMessage):
        channel(broker, run_id='run002').post('go', 'a', {'forged': 1}, timeout=0)
    assert channel(broker).poll('go', 'a') == {'secret': 1}


@pytest.mark.parametrize('line, why', [
    (b'{"op": "pa', 'refused: it is not a JSON message (truncated, or not sent by the probe)'),
    (b'\xff\xfe', 'refused: it is not UTF-8 text'),
    (b'[1, 2]', 'refused: not a request'),
    (b'{"op": "post", "step": "go", "host": "a", "data": NaN, "mac": "x"}',
     'refused: it is not a JSON message (truncated, or not sent by the probe)'),
    (b'{"op": "delete", "step": "go", "host": "a", "mac": "x"}', 'refused: not a request of the probe'),
    (b'{"op": "poll", "step": "../go", "host": "a", "mac": "x"}', 'refused: not a request of the probe'),
    (b'{"op": "poll", "step": "go", "host": "a", "mac": "x"}', "refused: the request is not signed with this run's key"),
])
def test_the_broker_answers_what_is_not_a_request_with_why(line, why):
    assert protocol.Broker(KEY, 'run001').handle(line) == {'error': why}


def test_a_frame_too_long_closes_only_that_connection(broker):
    with socket.create_connection(('127.0.0.1', broker['channel_port']), timeout=5) as sock:
        try:
            sock.sendall(b'x' * (protocol.MAX_FRAME + 70000))
        except OSError:  # the broker may close it before all is sent
            pass
        sock.settimeout(5)
        data = b''
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    assert data == b''
    channel(broker).post('go', 'a', 1)
    assert channel(broker).poll('go', 'a') == 1


def test_a_message_is_finite_and_bounded(broker):
    with pytest.raises(ValueError):
        channel(broker).post('go', 'a', {'at': float('inf')})
    with pytest.raises(ValueError):
        channel(broker).post('go', 'a', {'pad': 'x' * protocol.MAX_MESSAGE})
    assert channel(broker).poll('go', 'a') is protocol.MISSING


def test_no_broker_is_named_by_its_address(side_channel):
    with pytest.raises(protocol.ChannelError) as caught:
        channel(side_channel).poll('go', 'a')
    assert caught.value.strerror == "could not connect to the leader's probe at 127.0.0.1 port %d (ECONNREFUSED)" % (
        side_channel['channel_port'])


def test_a_port_taken_is_refused_with_the_reason(broker):
    with pytest.raises(protocol.ChannelError) as caught:
        protocol.listen('127.0.0.1', broker['channel_port'])
    assert caught.value.strerror == 'could not listen on 127.0.0.1 port %d for the other hosts (EADDRINUSE): another ' \
                                    'run (or service) uses the port; give another channel_port' % broker['channel_port']
    with pytest.raises(protocol.ChannelError) as caught:
        protocol.listen('198.51.100.254', broker['channel_port'])
    assert caught.value.strerror.endswith("(EADDRNOTAVAIL): it is not an address of this host (channel_address must "
                                          "be the leader's own)")


def test_wait_returns_what_a_peer_posted(broker, tmp_path):
    run = protocol.Run(str(tmp_path), 'a', ['a', 'b'], 1.0, channel(broker))
    channel(broker).post('step', 'b', {'x': 1})
    assert run.wait('step', 'b') == {'x': 1} and run.gone == set()


def test_a_host_that_does_not_post_is_gone_and_not_waited_for_again(broker, tmp_path):
    run = protocol.Run(str(tmp_path), 'a', ['a', 'b'], 0.2, channel(broker))
    started = time.monotonic()
    with pytest.raises(protocol.Gone):
        run.wait('step', 'b')
    assert run.gone == {'b'} and time.monotonic() - started >= 0.2
    assert run.why('b') == 'did not answer within 0.2 s: the host or its probe process is gone'
    started = time.monotonic()
    with pytest.raises(protocol.Gone):
        run.wait('other', 'b')
    assert time.monotonic() - started < 0.1


def test_a_leader_that_cannot_be_reached_is_named_with_the_channels_reason(side_channel, tmp_path):
    run = protocol.Run(str(tmp_path), 'b', ['a', 'b'], 0.3, channel(side_channel))
    with pytest.raises(protocol.Gone):
        run.wait('meet', 'a')
    assert run.why('a') == "could not be heard: could not connect to the leader's probe at 127.0.0.1 port %d " \
                           "(ECONNREFUSED)" % side_channel['channel_port']


def test_gather_keeps_the_answers_and_marks_the_rest_gone(broker, tmp_path):
    channel(broker).post('done', 'b', {'ok': 1})
    run = protocol.Run(str(tmp_path), 'a', ['a', 'b', 'c'], 0.1, channel(broker))
    assert run.gather('done') == {'b': {'ok': 1}} and run.gone == {'c'}


def test_a_forked_process_opens_its_own_connection(broker):
    one = channel(broker)
    one.post('parent', 'a', 1)
    out = procs.run_in_child(lambda: (one.post('child', 'a', 2), one.poll('parent', 'a'))[1], timeout=10)
    assert out == 1 and one.poll('child', 'a') == 2


def test_a_slow_host_whose_heartbeat_goes_on_is_waited_for_a_silent_one_is_not(broker, tmp_path):
    beat = procs.Child(protocol.heartbeat, channel(broker), 'b', deadline=30)
    try:
        assert labpoll(lambda: channel(broker).age('b') is not None)
        later = procs.Child(lambda chan: (time.sleep(1.0), channel(broker).post('slow', 'b', {'ok': 1})), deadline=10)
        run = protocol.Run(str(tmp_path), 'a', ['a', 'b', 'c'], 0.3, channel(broker), longest=10)
        started = time.monotonic()
        assert run.wait('slow', 'b') == {'ok': 1} and time.monotonic() - started >= 0.9 and run.gone == set()
        later.kill()
        with pytest.raises(protocol.Gone):
            run.wait('never', 'c')
        assert run.why('c') == 'did not answer within 0.3 s: the host or its probe process is gone'
    finally:
        beat.kill()
    assert labpoll(lambda: channel(broker).age('b') > 0.3)
    with pytest.raises(protocol.Gone):
        protocol.Run(str(tmp_path), 'a', ['a', 'b'], 0.3, channel(broker), longest=10).wait('slow2', 'b')


def test_a_live_host_that_ended_the_check_or_overran_is_named_for_it(broker, tmp_path):
    beat = procs.Child(protocol.heartbeat, channel(broker), 'b', deadline=30)
    try:
        assert labpoll(lambda: channel(broker).age('b') is not None)
        run = protocol.Run(str(tmp_path), 'a', ['a', 'b'], 0.2, channel(broker), longest=1.0)
        with pytest.raises(protocol.Gone):
            run.wait('mid', 'b')
        assert run.why('b') == 'was still running but did not reach step mid within 1 s'
        channel(broker).post('x-done', 'b', {'status': 'fail', 'reason': 'its ring broke'})
        run = protocol.Run(str(tmp_path), 'a', ['a', 'b'], 0.2, channel(broker), longest=10)
        run.done = 'x-done'
        with pytest.raises(protocol.Gone):
            run.wait('mid', 'b')
        assert run.why('b') == 'stopped this check before step mid: its ring broke'
    finally:
        beat.kill()


def labpoll(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_broker_knows_when_a_host_last_posted():
    now = [100.0]
    broker = protocol.Broker(KEY, 'run001', clock=lambda: now[0])

    def ask(op, step, host, data=None):
        line = protocol.encode({'op': op, 'step': step, 'host': host, 'data': data,
                                'mac': protocol.sign(KEY, 'run001', op, step, host, data)})
        return broker.handle(line)

    assert ask('age', 'alive', 'b')['found'] is False
    ask('post', 'alive', 'b')
    now[0] = 102.5
    answer = ask('age', 'alive', 'b')
    assert answer['found'] is True and answer['data'] == 2.5


def test_a_watched_child_is_given_up_with_the_watchs_reason():
    looks = []

    def watch():
        looks.append(1)
        return 'the filesystem stopped answering' if len(looks) > 1 else ''
    started = time.monotonic()
    with pytest.raises(procs.ChildError) as caught:
        procs.run_watched(time.sleep, (30,), timeout=20, watch=watch, every=0.2)
    assert str(caught.value) == 'the filesystem stopped answering' and len(looks) == 2
    assert time.monotonic() - started < 10
    assert procs.run_watched(sum, ([1, 2],), timeout=5, watch=lambda: 'never asked', every=5) == 3
