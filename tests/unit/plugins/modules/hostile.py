# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the hostile-input tests of the modules share: a deadline that turns a hang into a failure, and a
module's main() run as Ansible runs it, its JSON answer read back."""

from __future__ import annotations

import contextlib
import json
import signal

import pytest

from ansible.module_utils.testing import patch_module_args


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


def run_main(module, args, capsys):
    """module.main() with args, under the deadline: (its JSON answer, the raw output)."""
    with deadline(), patch_module_args(args):
        with pytest.raises(SystemExit):
            module.main()
    out = capsys.readouterr().out
    return json.loads(out), out
