# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One lab for the whole integration run: brought up once, taken down at the end.

CYHA_LAB_KEEP=1 keeps it up after the run and CYHA_LAB_REUSE=1 starts from the lab that is up (for working on
one test file at a time).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# The lab's rigs (lab/rigs: the lab driver, test instances, mounts, IP rigs) are shared with bench/.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'lab', 'rigs'))

import cyha_imapserver  # noqa: E402
import labutil  # noqa: E402


OWN_LAB: list = []


def pytest_collection_modifyitems(items):
    """Modules that bring up a lab of their own (marker own_lab: the systemd hosts) run after every other test,
    test_zz_lab_teardown's included: their fixture takes whatever lab is up down first (the shared lab's
    session fixture, finalized at the end of the session, then finds it down, which is fine)."""
    items.sort(key=lambda item: item.get_closest_marker('own_lab') is not None)
    OWN_LAB[:] = [item for item in items if item.get_closest_marker('own_lab') is not None]


@pytest.fixture(scope='session')
def lab():
    if os.geteuid() != 0:
        pytest.fail('the integration tests need root: they build the lab of network namespaces')
    # The tests bring the lab to the state they need: a lab left by `make lab` (deployed instances
    # holding their service addresses) is taken down first, so the run starts from fresh hosts.
    # CYHA_LAB_REUSE=1 keeps a lab that is already up (for working on one test file at a time).
    if not os.environ.get('CYHA_LAB_REUSE'):
        down = labutil.lab('down')
        assert down.returncode == 0, f'lab down failed:\n{down.stderr}'
    proc = labutil.lab_up()
    assert proc.returncode == 0, f'lab up failed:\n{proc.stderr}'
    # The systemd hosts' base root filesystem (cached; about a minute from the mirror when it is missing) is built
    # in the background while the shared lab's tests run, rather than in the systemd module's fixture at the end
    # (lab.py up --systemd waits for a build under way: they share a lock).
    base = None
    if OWN_LAB:
        os.makedirs(os.path.join(labutil.REPO, 'build'), exist_ok=True)
        with open(os.path.join(labutil.REPO, 'build', 'lab-base.log'), 'w', encoding='utf-8') as log:
            base = subprocess.Popen([sys.executable, os.path.join(labutil.REPO, 'lab', 'lab.py'), 'base'],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    yield labutil.lab_hosts()
    if base is not None:
        base.wait()
    if not os.environ.get('CYHA_LAB_KEEP'):
        labutil.lab('down')


@pytest.fixture(scope='module')
def imap_server(lab):
    """The standalone Cyrus instance of cyha_imapserver on be2 (one per test module that asks): its master's PID."""
    pid = cyha_imapserver.start()
    try:
        yield pid
    finally:
        cyha_imapserver.remove(pid)
