# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The probe's progress file: JSON lines appended as the run goes, for ``tail -f`` and for the storage_probe
role, which runs the module in the background and shows each check as it ends.

A run tagged with an id writes, in order: one ``plan`` line (step 0: the paths and checks it will run), one
``check`` line per check of each path as it ends (steps 1, 2, ...: its status and seconds), and one ``done``
line (step -1) however the run ends. Each of these lines starts ``{"id": ID, "step": N, "event": ...`` so
that a reader can wait for exactly one of them with a regular expression. The deep metadata check adds a
line per batch (``deep.py``)."""

from __future__ import annotations

import json
import os


def append(progress_file: str | None, line: dict, sort_keys: bool = True) -> None:
    """Append one JSON line to progress_file (nothing when it is not given). O_NOFOLLOW: a symlink planted
    at the path is refused, never followed; a new file is 0600."""
    if not progress_file:
        return
    fd = os.open(progress_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (json.dumps(line, sort_keys=sort_keys) + '\n').encode('ascii'))
    finally:
        os.close(fd)


class Reporter:
    """The plan, check and done lines of one run (silent without a progress file). The file is only for
    watching: a write that fails (a full disk, a file that cannot be opened) stops the reporting, never the
    probe; the failure is kept in ``error``."""

    def __init__(self, progress_file: str | None, run_id: str | None):
        self.progress_file = progress_file
        self.run_id = run_id or ''
        self.step = 0
        self.error = None

    def _line(self, step: int, event: str, **fields) -> None:
        line = {'id': self.run_id, 'step': step, 'event': event}
        line.update(fields)
        if self.error is None:
            try:
                append(self.progress_file, line, sort_keys=False)
            except OSError as exc:
                self.error = str(exc)

    def plan(self, paths: list, checks: list) -> None:
        self._line(0, 'plan', paths=list(paths), checks=list(checks))

    def check(self, path: str, name: str, outcome: dict) -> None:
        self.step += 1
        self._line(self.step, 'check', path=path, check=name, status=outcome.get('status'),
                   seconds=outcome.get('duration'))

    def done(self, ok: bool, message: str = '') -> None:
        self._line(-1, 'done', ok=ok, msg=message)
