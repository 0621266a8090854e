# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's network power switch (lab/power_switch.py) and the fence agent's side of it (lab/fence_cyhalab with
power_switch=): a signed request runs the switch's agent, anything unsigned, stale or malformed is refused. The
switch runs on loopback here, with a stand-in agent that records what it was asked."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

LAB = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'lab')
SPEC = importlib.util.spec_from_file_location('cyha_power_switch', os.path.join(LAB, 'power_switch.py'))
power_switch = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(power_switch)
KEY = b'0123456789abcdef' * 4


@pytest.fixture
def switch(tmp_path):
    calls = tmp_path / 'calls'
    agent = tmp_path / 'agent'
    agent.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "asked $2"\nexit 0\n')
    agent.chmod(0o755)
    server = power_switch.Switch(('127.0.0.1', 0), power_switch.Handler)
    server.key, server.netns_dir, server.agent = KEY, str(tmp_path / 'netns'), str(agent)
    server.lock, server.seen = threading.Lock(), {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    key_file = tmp_path / 'power.key'
    key_file.write_bytes(KEY + b'\n')
    try:
        yield {'port': server.server_address[1], 'calls': calls, 'key': key_file, 'netns': server.netns_dir}
    finally:
        server.shutdown()
        server.server_close()


def ask(port: int, body: dict) -> dict:
    with socket.create_connection(('127.0.0.1', port), timeout=10) as conn:
        conn.sendall(json.dumps(body).encode() + b'\n')
        return json.loads(conn.makefile('r', encoding='utf-8').readline())


def signed(action: str, plug: str, stamp: float | None = None, key: bytes = KEY) -> dict:
    stamp = time.time() if stamp is None else stamp
    return {'action': action, 'plug': plug, 'time': stamp, 'mac': power_switch.signature(key, action, plug, stamp)}


def test_a_signed_request_runs_the_agent_on_the_lab_machine(switch):
    assert ask(switch['port'], signed('off', 'be1')) == {'rc': 0, 'msg': 'asked off'}
    assert switch['calls'].read_text() == f"-o off --netns-dir {switch['netns']} -n be1\n"


@pytest.mark.parametrize('body, message', [
    (lambda: signed('off', 'be1', key=b'another key'), 'refused: bad signature, stale or replayed request'),
    (lambda: signed('off', 'be1', stamp=time.time() - 120), 'refused: bad signature, stale or replayed request'),
    (lambda: signed('off', 'be1', stamp=float('nan')), 'refused: bad signature, stale or replayed request'),
    (lambda: dict(signed('off', 'be1'), plug='spare'), 'refused: bad signature, stale or replayed request'),
    (lambda: signed('format', 'be1'), "refused: action 'format' on plug 'be1'"),
    (lambda: signed('off', '../be1'), "refused: action 'off' on plug '../be1'"),
    (lambda: signed('off', ''), "refused: action 'off' on plug ''"),
    (lambda: {'action': 'off'}, 'malformed request'),
])
def test_anything_else_is_refused_and_runs_nothing(switch, body, message):
    assert ask(switch['port'], body()) == {'rc': 1, 'msg': message}
    assert not switch['calls'].exists()


def test_a_replayed_request_is_refused(switch):
    request = signed('off', 'be1')
    assert ask(switch['port'], request)['rc'] == 0
    assert ask(switch['port'], request) == {'rc': 1, 'msg': 'refused: bad signature, stale or replayed request'}
    assert switch['calls'].read_text().count('\n') == 1


def test_the_fence_agent_asks_the_switch_when_given_one(switch):
    agent = os.path.join(LAB, 'fence_cyhalab')
    argv = [sys.executable, agent, '-o', 'status', '-n', 'spare', '--power-switch', f"127.0.0.1:{switch['port']}",
            '--power-key', str(switch['key'])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
    assert (proc.returncode, proc.stdout) == (0, 'asked status\n'), proc.stderr
    assert switch['calls'].read_text() == f"-o status --netns-dir {switch['netns']} -n spare\n"
    # as Pacemaker's fencer calls it: options on stdin, key=value
    proc = subprocess.run([sys.executable, agent], input=f"action=monitor\npower_switch=127.0.0.1:{switch['port']}\n"
                          f"power_key={switch['key']}\n", capture_output=True, text=True, timeout=30, check=False)
    assert (proc.returncode, proc.stdout) == (0, 'switch up\n'), proc.stderr


def test_the_fence_agent_fails_when_the_switch_is_unreachable(tmp_path):
    key = tmp_path / 'power.key'
    key.write_bytes(KEY)
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]       # closed again: nothing listens there
    proc = subprocess.run([sys.executable, os.path.join(LAB, 'fence_cyhalab'), '-o', 'off', '-n', 'be1',
                           '--power-switch', f'127.0.0.1:{port}', '--power-key', str(key)],
                          capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f'fence_cyhalab: power switch 127.0.0.1:{port}: ')
