# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Child processes with a hard deadline, a JSON-lines channel, and kill + reap by PID.

Modules run as a zipped payload, so children are made with os.fork(): they need no import.
A child never returns into the parent's stack: it always leaves through os._exit().
"""

from __future__ import annotations

import faulthandler
import json
import math
import os
import select
import signal
import time

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import sysapi

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM)
ALARM_MAX = 2 ** 31 - 1  # alarm() takes an unsigned int


class ChildError(Exception):
    """A child did not answer in time, or died."""


def seconds(value, what: str = 'timeout') -> float:
    """A wait that select(), alarm() and time.sleep() can take: finite and not negative. Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError('%s must be a finite number of seconds, got %r' % (what, value))
    return float(value)


class Channel:
    """One direction each way: newline-delimited JSON over two pipes."""

    def __init__(self, rfd: int, wfd: int):
        self.rfd = rfd
        self.wfd = wfd
        self.buf = b''

    def send(self, obj) -> None:
        data = (json.dumps(obj) + '\n').encode()
        while data:
            data = data[os.write(self.wfd, data):]

    def recv(self, timeout: float):
        deadline = time.monotonic() + seconds(timeout)
        while b'\n' not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError('no answer within %.1f s' % timeout)
            ready, dummy, dummy2 = select.select([self.rfd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                raise ChildError('the process exited without answering')
            self.buf += chunk
        line, dummy, self.buf = self.buf.partition(b'\n')
        return json.loads(line.decode())

    def poll(self) -> bool:
        return b'\n' in self.buf or bool(select.select([self.rfd], [], [], 0)[0])

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


class Child:
    """target(channel, *args) runs in a forked child that is killed at its deadline."""

    def __init__(self, target, *args, deadline: float = 30.0):
        seconds(deadline, 'deadline')
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 70
            try:
                for sig in HANDLED_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                faulthandler.disable()  # a fault in a child is a result (e.g. SIGBUS), not a crash report
                # a child stuck on a hung filesystem must not keep the module's output pipes open
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.close(null)
                sysapi.set_parent_death_signal()
                signal.alarm(max(1, min(int(math.ceil(deadline)), ALARM_MAX)))
                os.close(to_child_w)
                os.close(to_parent_r)
                target(Channel(to_child_r, to_parent_w), *args)
                code = 0
            except BaseException:  # noqa: B036 - the child reports what it can to its channel and leaves
                pass
            finally:
                os._exit(code)
        os.close(to_child_r)
        os.close(to_parent_w)
        self.pid = pid
        self.chan = Channel(to_parent_r, to_child_w)
        self.status = None

    def send(self, obj) -> None:
        self.chan.send(obj)

    def recv(self, timeout: float = 5.0):
        return self.chan.recv(timeout)

    def call(self, timeout: float = 5.0, **command):
        """Send one command to a serve() loop and return its answer."""
        self.send(command)
        return self.recv(timeout)

    def describe_exit(self) -> str:
        if self.status is None:
            return 'still running'
        if os.WIFSIGNALED(self.status):
            sig = os.WTERMSIG(self.status)
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = str(sig)
            return 'killed by %s' % name
        return 'exit status %d' % os.WEXITSTATUS(self.status)

    def wait(self, timeout: float = 5.0) -> bool:
        """Reap the child if it exits within timeout."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.status = 0
                break
            if pid:
                self.status = status
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def kill(self, reap_timeout: float = 2.0) -> bool:
        """SIGKILL by PID and reap; True once reaped. Waits for the reap once only."""
        if self.chan.rfd is None:
            return self.status is not None
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reaped = self.wait(reap_timeout)
        self.chan.close()
        self.chan.rfd = self.chan.wfd = None
        return reaped

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def _run_target(chan, func, args):  # pragma: no cover - runs in the child
    try:
        chan.send({'ok': True, 'value': func(*args)})
    except Exception as exc:  # noqa: BLE001 - everything is reported to the parent
        chan.send({'ok': False, 'error': '%s: %s' % (type(exc).__name__, exc),
                   'errno': getattr(exc, 'errno', None)})


def run_in_child(func, args=(), timeout: float = 10.0):
    """Run func(*args) in a child; return its value, raise ChildError (timeout, death) or OSError."""
    return run_watched(func, args, timeout)


def run_watched(func, args=(), timeout: float = 10.0, watch=None, every: float = 5.0):
    """As run_in_child, and every `every` seconds while func runs, watch() says why to give it up ('' to go
    on): then the child is killed and ChildError carries that reason."""
    child = Child(_run_target, func, args, deadline=timeout + 1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                wait = every if watch is not None else timeout
                answer = child.recv(max(0.0, min(wait, deadline - time.monotonic())))
                break
            except ChildError as exc:
                if 'exited' in str(exc):
                    child.kill()
                    raise ChildError('the process died (%s)' % child.describe_exit())
                if time.monotonic() >= deadline:
                    raise
            why = watch() if watch is not None else ''
            if why:
                raise ChildError(why)
    finally:
        child.kill()
    if answer['ok']:
        return answer['value']
    if answer.get('errno'):
        raise OSError(answer['errno'], answer['error'])
    raise ChildError(answer['error'])


def serve(chan, handlers: dict) -> None:  # pragma: no cover - runs in the child
    """A command loop for helper children: {'op': NAME, ...} -> handlers[NAME](**args) -> answer."""
    state = {}
    while True:
        command = chan.recv(3600)
        op = command.pop('op')
        if op == 'exit':
            chan.send({'ok': True})
            return
        try:
            chan.send({'ok': True, 'value': handlers[op](state, chan, **command)})
        except OSError as exc:
            chan.send({'ok': False, 'errno': exc.errno, 'error': sysapi.errname(exc)})
