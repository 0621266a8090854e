# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the hostile-input tests of the modules share: a deadline that turns a hang into a failure."""

from __future__ import annotations

import contextlib
import signal


class Blocked(Exception):
    """Raised by the alarm: not an OSError, so no `except OSError` of the code under test swallows it."""


@contextlib.contextmanager
def deadline(seconds: int = 20):
    """A test that would block forever fails instead."""
    def expired(*dummy):
        raise Blocked('blocked for %d s' % seconds)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
