# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One lab for the whole integration run: brought up once, taken down at the end.

CYHA_LAB_KEEP=1 keeps it up after the run (for working on one test file at a time).
"""

from __future__ import annotations

import os

import pytest

import cyha_imapserver
import labutil


@pytest.fixture(scope='session')
def lab():
    if os.geteuid() != 0:
        pytest.fail('the integration tests need root: they build the lab of network namespaces')
    proc = labutil.lab_up()
    assert proc.returncode == 0, f'lab up failed:\n{proc.stderr}'
    yield labutil.lab_hosts()
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
