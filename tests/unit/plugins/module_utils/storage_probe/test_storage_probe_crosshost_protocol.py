# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cross-host token protocol on its own: meeting in the run directory, token files, waiting, gone
hosts, and the channel seam (a Run over a channel that is not the filesystem)."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import crosshost_protocol as protocol


def test_the_run_directory_is_named_for_the_collection_not_the_lab(tmp_path):
    assert protocol.rundir_of(str(tmp_path), 'abc123') == str(tmp_path / '.cyrus-ha-probe-xh-abc123')


def test_the_leader_creates_the_run_directory_once_with_its_owner(tmp_path):
    rundir = protocol.rundir_of(str(tmp_path), 'meet01')
    assert protocol.await_rundir(rundir, 0.05) is False
    protocol.create_rundir(rundir)
    assert os.stat(rundir).st_mode & 0o777 == 0o700
    with open(os.path.join(rundir, 'owner.json'), encoding='utf-8') as handle:
        owner = json.load(handle)
    assert owner['host'] == socket.gethostname() and owner['pid'] == os.getpid() and owner['start'] is not None
    assert protocol.await_rundir(rundir, 0.05) is True
    with pytest.raises(FileExistsError):
        protocol.create_rundir(rundir)


def test_a_token_file_carries_json(tmp_path):
    channel = protocol.FileChannel(str(tmp_path))
    assert channel.poll('go', 'a') is protocol.MISSING
    channel.post('go', 'a', {'at': 1.5})
    channel.post('none', 'a', None)
    assert channel.poll('go', 'a') == {'at': 1.5}
    assert channel.poll('none', 'a') is None
    assert sorted(os.listdir(tmp_path)) == ['t-go-a', 't-none-a']
    channel.post('go', 'a', 'again')  # a peer's failure posted after its own result replaces it
    assert channel.poll('go', 'a') == 'again' and sorted(os.listdir(tmp_path)) == ['t-go-a', 't-none-a']


def test_an_empty_token_is_missing(tmp_path):
    (tmp_path / 't-step-b').write_text('')
    assert protocol.FileChannel(str(tmp_path)).poll('step', 'b') is protocol.MISSING


def test_a_truncated_token_is_malformed_not_waited_on_forever(tmp_path):
    (tmp_path / 't-step-b').write_text('{"half": ')
    with pytest.raises(protocol.BadMessage) as caught:
        protocol.FileChannel(str(tmp_path)).poll('step', 'b')
    assert str(caught.value) == 'its token is not a JSON message (truncated, or not written by the probe)'


def test_wait_returns_what_a_peer_posted(tmp_path):
    leader = protocol.Run(str(tmp_path), 'a', ['a', 'b'], 1.0)
    peer = protocol.Run(str(tmp_path), 'b', ['a', 'b'], 1.0)
    assert (leader.leader, leader.others, peer.leader) == ('a', ['b'], 'a')
    peer.post('seen', {'ok': True})
    assert leader.wait('seen', 'b') == {'ok': True} and leader.gone == set()
    assert leader.file('data') == str(tmp_path / 'data')


def test_a_host_that_does_not_post_is_gone_and_not_waited_for_again(tmp_path):
    run = protocol.Run(str(tmp_path), 'a', ['a', 'b', 'c'], 0.2)
    started = time.monotonic()
    with pytest.raises(protocol.Gone):
        run.wait('seen', 'b')
    assert time.monotonic() - started >= 0.2 and run.gone == {'b'}
    protocol.Run(str(tmp_path), 'b', ['a', 'b', 'c'], 0.2).post('later')
    started = time.monotonic()
    with pytest.raises(protocol.Gone):
        run.wait('later', 'b', timeout=5.0)
    assert time.monotonic() - started < 0.1


def test_gather_keeps_the_answers_and_marks_the_rest_gone(tmp_path):
    run = protocol.Run(str(tmp_path), 'a', ['a', 'b', 'c'], 0.1)
    protocol.Run(str(tmp_path), 'c', ['a', 'b', 'c'], 0.1).post('done', {'status': 'pass'})
    assert run.gather('done') == {'c': {'status': 'pass'}}
    assert run.gone == {'b'}


class MemoryChannel:
    """A channel that is not the filesystem: what a side channel between the hosts would plug in."""

    def __init__(self):
        self.messages = {}

    def post(self, step, host, data):
        self.messages[(step, host)] = data

    def poll(self, step, host):
        return self.messages.get((step, host), protocol.MISSING)


def test_the_channel_is_a_seam(tmp_path):
    channel = MemoryChannel()
    leader = protocol.Run(str(tmp_path), 'a', ['a', 'b'], 0.1, channel=channel)
    peer = protocol.Run(str(tmp_path), 'b', ['a', 'b'], 0.1, channel=channel)
    leader.post('go', {'at': 3})
    assert peer.wait('go', 'a') == {'at': 3}
    assert leader.gather('done') == {} and leader.gone == {'b'}
    assert os.listdir(tmp_path) == []
