# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one test hook of the collection's changes made in several steps.

With CYRUS_HA_TEST_KILL_AT=<step> in its environment, a module or control script SIGKILLs itself right
after that step boundary: an interrupted run, as a crash, an OOM kill or an impatient operator leaves it.
The tests then show that the next run finishes the change or undoes it. Each user lists its step names
(volume.KILL_POINTS, service_ip.STEPS, pacemaker.KILL_POINTS, the control script's STEPS). Never set outside tests.
"""

from __future__ import annotations

import os
import signal

ENV = 'CYRUS_HA_TEST_KILL_AT'


def kill_point(step: str) -> None:
    """SIGKILL this process when the hook names `step`; nothing otherwise."""
    if os.environ.get(ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
