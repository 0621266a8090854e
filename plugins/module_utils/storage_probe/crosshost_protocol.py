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
"""

from __future__ import annotations

import json
import os
import re
import socket
import time

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import workdir as workdirs

PREFIX = workdirs.PREFIX + 'xh-'
RUN_ID = re.compile(r'^[A-Za-z0-9_-]{6,64}$')
POLL = 0.01
# What poll() returns while a message has not arrived (a message may be null).
MISSING = object()


class Gone(Exception):
    """A peer did not post a token in time."""


def rundir_of(path: str, run_id: str) -> str:
    """The run directory of run_id under the shared path."""
    return os.path.join(path, PREFIX + run_id)


def create_rundir(rundir: str) -> None:
    """The leader's side of meeting: the run directory (mode 0700) with a note of its owner. Raises OSError."""
    os.mkdir(rundir, 0o700)
    os.chmod(rundir, 0o700)
    owner = {'host': socket.gethostname(), 'pid': os.getpid(), 'start': workdirs.process_start(os.getpid())}
    with open(os.path.join(rundir, workdirs.OWNER), 'x', encoding='utf-8') as handle:
        handle.write(json.dumps(owner))


def await_rundir(rundir: str, timeout: float) -> bool:
    """A peer's side of meeting: whether the leader's run directory appeared here within timeout."""
    deadline = time.monotonic() + timeout
    while not os.path.isdir(rundir):
        if time.monotonic() > deadline:
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
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, json.dumps(data).encode())
        finally:
            os.close(fd)
        os.rename(tmp, name)

    def poll(self, step: str, host: str):
        """The data host posted for step, or MISSING while it is not (completely) there."""
        try:
            with open(self.token(step, host), encoding='utf-8') as handle:
                text = handle.read()
        except FileNotFoundError:
            return MISSING
        if not text:
            return MISSING
        try:
            return json.loads(text)
        except ValueError:
            return MISSING


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
        self.channel = FileChannel(rundir) if channel is None else channel

    def file(self, name: str) -> str:
        """A data file of the checks in the run directory (on the filesystem under test)."""
        return os.path.join(self.dir, name)

    def post(self, step: str, data=None) -> None:
        self.channel.post(step, self.me, data)

    def wait(self, step: str, host: str, timeout: float | None = None):
        """The data host posted for step; raises Gone (and remembers it) when it does not come in time."""
        if host in self.gone:
            raise Gone(host)
        deadline = time.monotonic() + (timeout or self.step_timeout)
        while True:
            data = self.channel.poll(step, host)
            if data is not MISSING:
                return data
            if time.monotonic() > deadline:
                self.gone.add(host)
                raise Gone(host)
            time.sleep(POLL)

    def gather(self, step: str, hosts=None) -> dict:
        """{host: data} of every host (others by default) that posted step; the rest become gone."""
        out = {}
        for host in self.others if hosts is None else hosts:
            try:
                out[host] = self.wait(step, host)
            except Gone:
                pass
        return out
