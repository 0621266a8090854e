# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's network power switch: what a BMC or a switched PDU is to a real site's fencing.

A systemd host (lab/osroot.py) runs in its own PID namespace: Pacemaker's fencer there cannot see, let alone kill,
another host's processes. So its fence agent (``fence_cyhalab power_switch=198.51.100.1:7099``) asks this switch,
which runs on the lab machine, over TCP. One request per connection, one JSON line each way::

    {"action": "off", "plug": "be1", "time": 1700000000.0, "mac": HMAC-SHA256(key, "off\\nbe1\\n<time>")}
    {"rc": 0, "msg": "..."}

The key is the lab's (``<lab dir>/power.key``, copied into each systemd host as /etc/cyha-lab/power.key, 0600); a
request older than 30 s or with a wrong MAC is refused. The switch runs ``fence_cyhalab`` itself, locally, for the
action: off/reboot (link down, every process of the host SIGKILLed), on, status, list.

    python3 lab/power_switch.py --listen 198.51.100.1:7099 --key FILE --netns-dir DIR --agent /usr/sbin/fence_cyhalab
"""

from __future__ import annotations

import argparse
import hmac
import json
import math
import socketserver
import subprocess
import sys
import threading
import time

ACTIONS = ('off', 'reboot', 'on', 'status', 'list', 'monitor')
MAX_SKEW = 30.0


def _agent_module():
    """fence_cyhalab beside this file (it holds the request's signature, the one both sides compute)."""
    import importlib.machinery
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fence_cyhalab')
    loader = importlib.machinery.SourceFileLoader('fence_cyhalab', path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader('fence_cyhalab', loader))
    loader.exec_module(module)
    return module


signature = _agent_module().signature


class Handler(socketserver.StreamRequestHandler):
    timeout = 10        # a client that sends nothing does not hold a thread

    def handle(self) -> None:
        server = self.server
        try:
            ask = json.loads(self.rfile.readline(4096))
            action, plug, stamp = str(ask['action']), str(ask['plug']), float(ask['time'])
            ok = hmac.compare_digest(str(ask['mac']), signature(server.key, action, plug, stamp))
        except (ValueError, KeyError, TypeError):
            self.answer(1, 'malformed request')
            return
        with server.lock:
            fresh = ok and math.isfinite(stamp) and abs(time.time() - stamp) <= MAX_SKEW and ask['mac'] not in server.seen
            if fresh:       # a request is carried out once: a replay inside the time window is refused too
                server.seen = {mac: t for mac, t in server.seen.items() if time.time() - t <= 2 * MAX_SKEW}
                server.seen[ask['mac']] = time.time()
        if not fresh:
            self.answer(1, 'refused: bad signature, stale or replayed request')
            return
        if action not in ACTIONS or '/' in plug or (action not in ('list', 'monitor') and not plug):
            self.answer(1, f'refused: action {action!r} on plug {plug!r}')
            return
        if action == 'monitor':
            self.answer(0, 'switch up')
            return
        argv = [server.agent, '-o', action, '--netns-dir', server.netns_dir] + (['-n', plug] if plug else [])
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            print(f'{time.strftime("%H:%M:%S")} {self.client_address[0]} {action} {plug}: {exc}', flush=True)
            self.answer(1, f'the switch could not run its agent: {exc}')
            return
        print(f'{time.strftime("%H:%M:%S")} {self.client_address[0]} {action} {plug}: rc {proc.returncode}',
              flush=True)
        self.answer(proc.returncode, proc.stdout.strip() or proc.stderr.strip())

    def answer(self, rc: int, msg: str) -> None:
        self.wfile.write(json.dumps({'rc': rc, 'msg': msg}).encode() + b'\n')


class Switch(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--listen', required=True, help='ADDRESS:PORT')
    parser.add_argument('--key', required=True)
    parser.add_argument('--netns-dir', required=True)
    parser.add_argument('--agent', default='/usr/sbin/fence_cyhalab')
    args = parser.parse_args(argv)
    host, dummy, port = args.listen.rpartition(':')
    with open(args.key, 'rb') as handle:
        key = handle.read().strip()
    server = Switch((host, int(port)), Handler)
    server.key, server.netns_dir, server.agent = key, args.netns_dir, args.agent
    server.lock, server.seen = threading.Lock(), {}
    print(f'power switch on {args.listen}', flush=True)
    server.serve_forever()
    return 0


if __name__ == '__main__':
    sys.exit(main())
