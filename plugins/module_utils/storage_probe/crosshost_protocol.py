# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the hosts of one cross-host run meet and pass messages: over TCP, never through the filesystem under test.

A filesystem that delays or drops what one client wrote is what the checks measure, so it cannot also
carry their messages: the hosts talk over a side channel. The first host of ``peers`` is the leader
("A"): it listens on ``address:port`` and runs a broker, a process that keeps the messages of the run;
every host (the leader too) connects to it. A step is "post a message, wait for messages": a host
posts JSON data under a step name, another host polls for that step from that host. A host that does
not post a step within ``step_timeout`` is gone (Gone): its checks fail naming it, and nobody waits for
it again.

Every request and every answer carries an HMAC-SHA256 of its content with the run's key, which the
controller makes once per run and hands to every host (the module's ``channel_key``, never logged): a
host that is not part of the run can neither post nor read. A request is one line of JSON of at most
MAX_FRAME bytes; the data is UTF-8 JSON of at most MAX_MESSAGE bytes without NaN or Infinity, and each
step's data has the shape the checks expect (wait(..., valid=)). A host whose message stays malformed
for ``step_timeout`` is gone like a host that does not answer, and Run.why() says which it was.

The run directory (created by the leader under the shared path) holds only the checks' data files.
Peers measure how long it takes to appear there (await_dir); no host but the leader removes it.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import re
import selectors
import socket
import stat
import time

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import workdir as workdirs

PREFIX = workdirs.PREFIX + 'xh-'
RUN_ID = re.compile(r'[A-Za-z0-9_-]{6,64}')  # fullmatch: '$' would let a trailing newline through
KEY = re.compile(r'[A-Za-z0-9_-]{16,256}')
STEP = re.compile(r'[A-Za-z0-9_.-]{1,64}')
POLL = 0.01
MAX_MESSAGE = 64 * 1024
MAX_FRAME = MAX_MESSAGE * 2 + 4096  # a message's JSON inside a request, escaped at worst
CONNECT_TIMEOUT = 2.0
# What poll() returns while a message has not arrived (a message may be null).
MISSING = object()


class Gone(Exception):
    """A peer did not post a message (a well-formed one) in time."""


class BadMessage(Exception):
    """A message that is there but is not what the step expects: what is wrong with it, never its content."""


class ChannelError(OSError):
    """The side channel to the leader's broker is not there or broke: why, naming the address."""


def _no_constant(name: str):
    raise ValueError('%s is not JSON' % name)


def decode(data: bytes):
    """JSON from bytes another host sent; raises BadMessage."""
    if len(data) > MAX_FRAME:
        raise BadMessage('it holds more than the %d bytes a message may have' % MAX_MESSAGE)
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        raise BadMessage('it is not UTF-8 text')
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:
        raise BadMessage('it is not a JSON message (truncated, or not sent by the probe)')


def encode(data) -> bytes:
    """Compact JSON of data, finite numbers only; raises ValueError."""
    return json.dumps(data, allow_nan=False, separators=(',', ':'), sort_keys=True).encode()


def sign(key: str, *parts) -> str:
    """The HMAC-SHA256 of parts (JSON) with the run's key."""
    return hmac.new(key.encode(), encode(list(parts)), hashlib.sha256).hexdigest()


def rundir_of(path: str, run_id: str) -> str:
    """The run directory of run_id under the shared path."""
    return os.path.join(path, PREFIX + run_id)


def create_rundir(rundir: str) -> None:
    """The leader's run directory (mode 0700) with a note of its owner. Raises OSError (EEXIST when
    anything, a symlink too, already has the name: mkdir never follows one)."""
    os.mkdir(rundir, 0o700)
    workdirs.claim(rundir)


def is_rundir(rundir: str) -> bool:
    """A real directory (not a symlink to one) has the run directory's name."""
    try:
        return stat.S_ISDIR(os.lstat(rundir).st_mode)
    except OSError:
        return False


def await_dir(rundir: str, timeout: float):
    """Seconds until the leader's run directory (a directory, not a symlink) was seen here (0.0 at once),
    None when not within timeout, or 'symlink' at once for a symlink (the leader's mkdir cannot replace it)."""
    started = time.monotonic()
    while not is_rundir(rundir):
        if os.path.islink(rundir):
            return 'symlink'
        if time.monotonic() - started > timeout:
            return None
        time.sleep(POLL)
    return round(time.monotonic() - started, 3)


# ---- the broker: the leader's process that keeps the run's messages --------------------------------

def listen(address: str, port: int) -> socket.socket:
    """The leader's listening socket on address:port. Raises ChannelError naming both."""
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ChannelError(errno.EADDRNOTAVAIL, 'the leader address %s does not resolve (%s)' % (address, exc))
    last = None
    for family, kind, proto, dummy, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(64)
            sock.set_inheritable(False)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    why = errno.errorcode.get(last.errno, str(last.errno)) if last is not None else 'no address'
    hint = ': another run (or service) uses the port; give another channel_port' if \
        last is not None and last.errno == errno.EADDRINUSE else \
        ': it is not an address of this host (channel_address must be the leader\'s own)' if \
        last is not None and last.errno == errno.EADDRNOTAVAIL else ''
    raise ChannelError(getattr(last, 'errno', errno.EADDRNOTAVAIL),
                       'could not listen on %s port %d for the other hosts (%s)%s' % (address, port, why, hint))


class Broker:
    """The messages of one run, answering signed requests: post a step's data, poll for it, and how long ago a
    host last posted anything (its heartbeat: 'age')."""

    def __init__(self, key: str, run_id: str, clock=time.monotonic):
        self.key = key
        self.run_id = run_id
        self.store = {}
        self.last = {}
        self.clock = clock

    def reply(self, step: str, host: str, found: bool, data=None) -> dict:
        return {'found': found, 'data': data, 'mac': sign(self.key, self.run_id, 'reply', step, host, found, data)}

    def handle(self, line: bytes) -> dict:
        """The answer to one request line; never raises on what a client sent."""
        try:
            request = decode(line)
        except BadMessage as exc:
            return {'error': 'refused: %s' % exc}
        if not isinstance(request, dict):
            return {'error': 'refused: not a request'}
        op, step, host = request.get('op'), request.get('step'), request.get('host')
        if op not in ('post', 'poll', 'age') or not isinstance(step, str) or not STEP.fullmatch(step) or \
                not isinstance(host, str) or not isinstance(request.get('mac'), str):
            return {'error': 'refused: not a request of the probe'}
        data = request.get('data')
        if not hmac.compare_digest(request['mac'], sign(self.key, self.run_id, op, step, host, data)):
            return {'error': 'refused: the request is not signed with this run\'s key'}
        if op == 'post':
            self.store[(step, host)] = data
            self.last[host] = self.clock()
            return self.reply(step, host, True)
        if op == 'age':
            return self.reply(step, host, host in self.last,
                              round(self.clock() - self.last[host], 3) if host in self.last else None)
        if (step, host) in self.store:
            return self.reply(step, host, True, self.store[(step, host)])
        return self.reply(step, host, False)


def serve(chan, sock: socket.socket, key: str, run_id: str) -> None:  # pragma: no cover - runs in a child
    """The broker's loop (the target of a procs.Child): until it is killed."""
    broker = Broker(key, run_id)
    sel = selectors.DefaultSelector()
    sock.setblocking(False)
    sel.register(sock, selectors.EVENT_READ, None)
    buffers = {}
    while True:
        for item, dummy in sel.select(1.0):
            if item.data is None:
                try:
                    conn, dummy_addr = sock.accept()
                except OSError:
                    continue
                conn.setblocking(True)
                conn.settimeout(5.0)
                buffers[conn] = b''
                sel.register(conn, selectors.EVENT_READ, 'conn')
                continue
            conn = item.fileobj
            try:
                chunk = conn.recv(65536)
            except OSError:
                chunk = b''
            buffers[conn] = buffers[conn] + chunk if chunk else buffers[conn]
            drop = not chunk or (b'\n' not in buffers[conn] and len(buffers[conn]) > MAX_FRAME)
            while not drop and b'\n' in buffers[conn]:
                line, dummy, buffers[conn] = buffers[conn].partition(b'\n')
                try:
                    conn.sendall(encode(broker.handle(line)) + b'\n')
                except (OSError, ValueError):
                    drop = True
            if drop:
                sel.unregister(conn)
                del buffers[conn]
                conn.close()


# ---- a host's end of the channel ---------------------------------------------------------------------

class TcpChannel:
    """Requests to the leader's broker at address:port, one connection per process (a forked check opens
    its own), signed with the run's key."""

    def __init__(self, address: str, port: int, key: str, run_id: str):
        self.address = address
        self.port = port
        self.key = key
        self.run_id = run_id
        self.sock = None
        self.pid = None
        self.buf = b''

    def where(self) -> str:
        return '%s port %d' % (self.address, self.port)

    def _connect(self) -> None:
        if self.sock is not None and self.pid == os.getpid():
            return
        if self.sock is not None:  # inherited over fork: the parent's connection, not ours
            self.sock.detach()
        self.sock = None
        self.buf = b''
        try:
            sock = socket.create_connection((self.address, self.port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise ChannelError(exc.errno or errno.ECONNREFUSED, 'could not connect to the leader\'s probe at %s (%s)' % (
                self.where(), errno.errorcode.get(exc.errno, str(exc)) if exc.errno else exc))
        sock.settimeout(10.0)
        self.sock, self.pid = sock, os.getpid()

    def close(self) -> None:
        if self.sock is not None and self.pid == os.getpid():
            self.sock.close()
        self.sock = None

    def request(self, op: str, step: str, host: str, data=None):
        """One signed request and its checked answer: (found, data). Raises ChannelError or BadMessage."""
        self._connect()
        line = encode({'op': op, 'step': step, 'host': host, 'data': data,
                       'mac': sign(self.key, self.run_id, op, step, host, data)}) + b'\n'
        try:
            self.sock.sendall(line)
            while b'\n' not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ChannelError(errno.ECONNRESET, 'the leader\'s probe at %s closed the channel' % self.where())
                self.buf += chunk
                if len(self.buf) > MAX_FRAME:
                    raise BadMessage('its answer holds more than the %d bytes a message may have' % MAX_MESSAGE)
        except (OSError, BadMessage) as exc:
            self.close()
            if isinstance(exc, (ChannelError, BadMessage)):
                raise
            raise ChannelError(exc.errno or errno.EIO, 'the channel to the leader\'s probe at %s broke (%s)' % (
                self.where(), errno.errorcode.get(exc.errno, str(exc)) if exc.errno else 'timed out'))
        answer, dummy, self.buf = self.buf.partition(b'\n')
        answer = decode(answer)
        if not isinstance(answer, dict) or 'error' in answer or not isinstance(answer.get('found'), bool) or \
                not isinstance(answer.get('mac'), str):
            raise BadMessage('the broker answered %s' % (answer.get('error') if isinstance(answer, dict) and
                                                         isinstance(answer.get('error'), str) else 'something else'))
        if not hmac.compare_digest(answer['mac'], sign(self.key, self.run_id, 'reply', step, host, answer['found'],
                                                       answer.get('data'))):
            raise BadMessage('the answer is not signed with this run\'s key')
        return answer['found'], answer.get('data')

    def post(self, step: str, host: str, data, timeout: float = 10.0) -> None:
        """Post data (JSON) for step as host; posting a step again replaces it. Retries a channel not yet
        there (the leader starting) for timeout seconds, then raises ChannelError."""
        if len(encode(data)) > MAX_MESSAGE:
            raise ValueError('a message for step %s is more than %d bytes' % (step, MAX_MESSAGE))
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request('post', step, host, data)
                return
            except ChannelError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def poll(self, step: str, host: str):
        """The data host posted for step, MISSING while it is not there. Raises ChannelError, BadMessage."""
        found, data = self.request('poll', step, host)
        return data if found else MISSING

    def age(self, host: str):
        """Seconds since host last posted anything (its heartbeat), None when it never did."""
        found, data = self.request('age', 'alive', host)
        return data if found and isinstance(data, (int, float)) and not isinstance(data, bool) else None


HEARTBEAT = 0.5


def heartbeat(chan, channel: TcpChannel, me: str) -> None:  # pragma: no cover - runs in a child
    """Post 'alive' every HEARTBEAT seconds until killed (with its host's worker): while a host's heartbeat goes
    on, the others wait for its slow steps; once it stops for step_timeout, the host is gone."""
    while True:
        try:
            channel.request('post', 'alive', me, None)
        except (ChannelError, BadMessage):
            pass
        time.sleep(HEARTBEAT)


class Run:
    """One host's view of a run: the peers, the leader, the data files, the messages, the peers that stopped answering."""

    def __init__(self, rundir: str, me: str, peers: list, step_timeout: float, channel, longest: float = 0.0):
        self.dir = rundir
        self.me = me
        self.peers = peers
        self.leader = peers[0]
        self.others = [p for p in peers if p != peers[0]]
        self.step_timeout = step_timeout
        self.longest = longest  # seconds a host whose heartbeat goes on may take for one step
        self.done = None  # the final step of the check being played: a host that posted it plays no more
        self.gone = set()
        self.bad = {}
        self.channel = channel

    def silence(self) -> float:
        """Seconds without a heartbeat after which a host is gone."""
        return max(self.step_timeout, 3 * HEARTBEAT)

    def still_here(self, host: str, step: str, waited: float) -> bool:
        """Whether to go on waiting for host past step_timeout: its heartbeat is fresh, it has not finished the
        check (posted its final step), and the longest wait is not over. Names why not in self.bad."""
        if waited > self.longest:
            if self.longest:
                self.bad[host] = 'was still running but did not reach step %s within %g s' % (step, self.longest)
            return False
        try:
            age = self.channel.age(host) if hasattr(self.channel, 'age') else None
            if self.done and self.done != step:
                ended = self.channel.poll(self.done, host)
                if ended is not MISSING:
                    reason = ended.get('reason') if isinstance(ended, dict) else None
                    self.bad[host] = 'stopped this check before step %s%s' % (
                        step, ': %s' % reason[:300] if isinstance(reason, str) else '')
                    return False
        except (ChannelError, BadMessage):
            return False
        return age is not None and age <= self.silence()

    def why(self, host: str) -> str:
        """Why host is gone: it did not answer, what it sent was not a message, or the channel broke."""
        return self.bad.get(host) or 'did not answer within %g s: the host or its probe process is gone' % (
            self.step_timeout)

    def file(self, name: str) -> str:
        """A data file of the checks in the run directory (on the filesystem under test)."""
        return os.path.join(self.dir, name)

    def post(self, step: str, data=None) -> None:
        self.channel.post(step, self.me, data, timeout=self.step_timeout)

    def wait(self, step: str, host: str, timeout: float | None = None, valid=None):
        """The data host posted for step; raises Gone (and remembers it) when it does not come in time.

        valid(data) says what is wrong with the data ('' when nothing): a malformed message is waited on
        (the host may post the step again) and makes the host gone, with the reason, at the deadline. A
        channel that is not there (yet) is retried until the deadline, then named as the reason. Past the
        deadline, a host whose heartbeat goes on is waited for (still_here) up to self.longest: slow is not
        gone."""
        if host in self.gone:
            raise Gone(host)
        started = time.monotonic()
        deadline = started + (timeout or self.step_timeout)
        problem = ''
        next_look = deadline
        while True:
            try:
                data = self.channel.poll(step, host)
                problem = ''
            except BadMessage as exc:
                data, problem = MISSING, 'sent a malformed message for step %s: %s' % (step, exc)
            except ChannelError as exc:
                data, problem = MISSING, 'could not be heard: %s' % exc.strerror
            if data is not MISSING:
                problem = valid(data) if valid is not None else ''
                if not problem:
                    return data
                problem = 'sent a malformed message for step %s: %s' % (step, problem)
            now = time.monotonic()
            if now > deadline and (problem or (now >= next_look and not self.still_here(host, step, now - started))):
                self.gone.add(host)
                if problem:
                    self.bad[host] = problem
                raise Gone(host)
            if now >= next_look:
                next_look = now + 0.5
            time.sleep(POLL)

    def gather(self, step: str, hosts=None, valid=None) -> dict:
        """{host: data} of every host (others by default) that posted step; the rest become gone."""
        out = {}
        for host in self.others if hosts is None else hosts:
            try:
                out[host] = self.wait(step, host, valid=valid)
            except Gone:
                pass
        return out
