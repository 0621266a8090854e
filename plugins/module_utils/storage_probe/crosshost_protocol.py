# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The token protocol of the cross-host checks: how the hosts of one run meet and pass messages.

The first host of ``peers`` is the leader ("A"): it creates the run directory under the shared path
(create_rundir), every other host waits for it to appear (await_rundir). The checks keep their data
files there. A step is "post a message, wait for messages": a host posts JSON data under a step name,
another host waits for that step from that host. A host that does not post a step within
``step_timeout`` is gone (Gone): its checks fail naming it, and nobody waits for it again.

The seam: Run (peers, leader, gone hosts, waiting with a deadline) talks to a channel with two
methods, ``post(step, host, data)`` and ``poll(step, host)``. FileChannel carries the messages as token
files ``t-<step>-<host>`` in the run directory, made under a temporary name and renamed into place.
A side channel between the hosts would be another channel with the same two methods; the checks and
the runner would not change.

Nothing in the run directory is trusted: a token is opened without following a symlink or blocking on a
FIFO, must be a regular file of at most MAX_MESSAGE bytes of UTF-8 JSON (no NaN or Infinity), and each
step's data has the shape the checks expect (wait(..., valid=)). A host whose token stays malformed for
``step_timeout`` is gone like a host that does not answer, and Run.why() says which it was.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import time

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import workdir as workdirs

PREFIX = workdirs.PREFIX + 'xh-'
RUN_ID = re.compile(r'[A-Za-z0-9_-]{6,64}')  # fullmatch: '$' would let a trailing newline through
POLL = 0.01
MAX_MESSAGE = 64 * 1024
# What poll() returns while a message has not arrived (a message may be null).
MISSING = object()


class Gone(Exception):
    """A peer did not post a token (a well-formed one) in time."""


class BadMessage(Exception):
    """A token that is there but is not a message: what is wrong with it, never its content."""


def _no_constant(name: str):
    raise ValueError('%s is not JSON' % name)


def decode(data: bytes):
    """A message from the bytes of a token; raises BadMessage."""
    if len(data) > MAX_MESSAGE:
        raise BadMessage('its token holds more than the %d bytes a message may have' % MAX_MESSAGE)
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        raise BadMessage('its token is not UTF-8 text')
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:
        raise BadMessage('its token is not a JSON message (truncated, or not written by the probe)')


def rundir_of(path: str, run_id: str) -> str:
    """The run directory of run_id under the shared path."""
    return os.path.join(path, PREFIX + run_id)


def create_rundir(rundir: str) -> None:
    """The leader's side of meeting: the run directory (mode 0700) with a note of its owner. Raises OSError
    (EEXIST when anything, a symlink too, already has the name: mkdir never follows one)."""
    os.mkdir(rundir, 0o700)
    workdirs.claim(rundir)


def is_rundir(rundir: str) -> bool:
    """A real directory (not a symlink to one) has the run directory's name."""
    try:
        return stat.S_ISDIR(os.lstat(rundir).st_mode)
    except OSError:
        return False


def await_rundir(rundir: str, timeout: float) -> bool:
    """A peer's side of meeting: whether the leader's run directory (a directory, not a symlink) appeared
    here within timeout. False at once for a symlink: the leader's mkdir cannot replace it."""
    deadline = time.monotonic() + timeout
    while not is_rundir(rundir):
        if time.monotonic() > deadline or os.path.islink(rundir):
            return False
        time.sleep(POLL)
    return True


class FileChannel:
    """Messages as token files in the run directory: written under a temporary name, renamed into place."""

    def __init__(self, rundir: str):
        self.dir = rundir

    def token(self, step: str, host: str) -> str:
        return os.path.join(self.dir, 't-%s-%s' % (step, host))

    def post(self, step: str, host: str, data) -> None:
        """Post data (JSON) for step as host, whole or not at all (rename); posting a step again replaces it."""
        name = self.token(step, host)
        tmp = name + '.tmp'
        data = json.dumps(data, allow_nan=False).encode()
        if len(data) > MAX_MESSAGE:
            raise ValueError('a message for step %s is %d bytes, more than %d' % (step, len(data), MAX_MESSAGE))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
        os.rename(tmp, name)

    def poll(self, step: str, host: str):
        """The data host posted for step, MISSING while it is not there; raises BadMessage for a token that
        is not a message (a symlink, a FIFO, a directory, too big, not UTF-8 JSON). Never blocks."""
        try:
            fd = os.open(self.token(step, host), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return MISSING
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BadMessage('its token is a symlink')
            try:
                mode = os.lstat(self.token(step, host)).st_mode
            except OSError:
                mode = stat.S_IFREG
            if not stat.S_ISREG(mode):  # a socket answers ENXIO
                raise BadMessage('its token is a %s, not a regular file' % _kind(mode))
            raise BadMessage('its token cannot be opened (%s)' % errno.errorcode.get(exc.errno, exc.errno))
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise BadMessage('its token is a %s, not a regular file' % _kind(mode))
            chunks = []
            size = 0
            while size <= MAX_MESSAGE:
                chunk = os.read(fd, MAX_MESSAGE + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
        data = b''.join(chunks)
        if not data:
            return MISSING
        return decode(data)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, 'directory'), (stat.S_ISFIFO, 'FIFO'), (stat.S_ISSOCK, 'socket'),
                       (stat.S_ISCHR, 'character device'), (stat.S_ISBLK, 'block device')):
        if test(mode):
            return name
    return 'special file'


class Run:
    """One host's view of a run: the peers, the leader, the data files, the messages, the peers that stopped answering."""

    def __init__(self, rundir: str, me: str, peers: list, step_timeout: float, channel=None):
        self.dir = rundir
        self.me = me
        self.peers = peers
        self.leader = peers[0]
        self.others = [p for p in peers if p != peers[0]]
        self.step_timeout = step_timeout
        self.gone = set()
        self.bad = {}
        self.channel = FileChannel(rundir) if channel is None else channel

    def why(self, host: str) -> str:
        """Why host is gone: it did not answer, or what it sent was not a message."""
        return self.bad.get(host) or 'did not answer within %g s: the host or its probe process is gone' % (
            self.step_timeout)

    def file(self, name: str) -> str:
        """A data file of the checks in the run directory (on the filesystem under test)."""
        return os.path.join(self.dir, name)

    def post(self, step: str, data=None) -> None:
        self.channel.post(step, self.me, data)

    def wait(self, step: str, host: str, timeout: float | None = None, valid=None):
        """The data host posted for step; raises Gone (and remembers it) when it does not come in time.

        valid(data) says what is wrong with the data ('' when nothing): a malformed token or data is
        waited on (the host may post the step again) and makes the host gone, with the reason, at the
        deadline."""
        if host in self.gone:
            raise Gone(host)
        deadline = time.monotonic() + (timeout or self.step_timeout)
        problem = ''
        while True:
            try:
                data = self.channel.poll(step, host)
            except BadMessage as exc:
                data, problem = MISSING, str(exc)
            if data is not MISSING:
                problem = valid(data) if valid is not None else ''
                if not problem:
                    return data
            if time.monotonic() > deadline:
                self.gone.add(host)
                if problem:
                    self.bad[host] = 'sent a malformed message for step %s: %s' % (step, problem)
                raise Gone(host)
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
