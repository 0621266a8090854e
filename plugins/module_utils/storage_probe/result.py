# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The result every check returns: {name, status, reason, evidence, duration}."""

from __future__ import annotations

import time

STATUSES = ('pass', 'warn', 'fail', 'skip')


def result(name: str, status: str, reason: str, evidence: dict | None = None, duration: float = 0.0) -> dict:
    if status not in STATUSES:
        raise ValueError('unknown status %r' % status)
    return {'name': name, 'status': status, 'reason': reason, 'evidence': dict(evidence or {}),
            'duration': round(duration, 4)}


class Steps:
    """Collects named sub-checks of one check; the first failures make its reason."""

    def __init__(self, name: str):
        self.name = name
        self.started = time.monotonic()
        self.evidence = {}
        self.failures = []
        self.warnings = []

    def expect(self, key: str, ok: bool, failure: str) -> bool:
        self.evidence[key] = bool(ok)
        if not ok:
            self.failures.append(failure)
        return ok

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def finish(self, passed: str) -> dict:
        duration = time.monotonic() - self.started
        if self.failures:
            return result(self.name, 'fail', '; '.join(self.failures), self.evidence, duration)
        if self.warnings:
            return result(self.name, 'warn', '; '.join(self.warnings), self.evidence, duration)
        return result(self.name, 'pass', passed, self.evidence, duration)

    def fail_now(self, reason: str) -> dict:
        self.failures.append(reason)
        return self.finish('')
