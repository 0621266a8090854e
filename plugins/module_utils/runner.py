# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""External commands, run one way: argv lists only (never a shell), the C locale, each binary looked up once.

Code in module_utils takes its runner as a plain callable, `run(argv) -> (rc, stdout, stderr)`, so that
unit tests pass a fake function instead. Two runners provide it:

- `ModuleRunner(module)` inside a module: `AnsibleModule.run_command`; binaries are found with
  `module.get_bin_path(name, required=True)`, so a missing one fails the module naming it.
- `ProcessRunner()` where no module runs (iproute's default, facts read with subprocess, test rigs,
  bench): `subprocess`; binaries are found on PATH and in the sbin directories as get_bin_path finds
  them. A missing binary, one that cannot be started, or a timeout comes back as an exit status (127,
  126, 124, as a shell reports them) with the reason in stderr, never as an exception.

A bare argv[0] (`ip`, `cibadmin`) is looked up; a path (`/usr/sbin/ip`) is run as given. A module
calls `runner.binary(name)` for each tool before it changes anything, so that a missing tool stops
the run before its first step rather than in the middle. Check mode stays with the callers: each
module_utils function knows which of its commands only read.
"""

from __future__ import annotations

import os
import shutil
import subprocess

# The locale every command runs in: untranslated messages and numbers, whatever the node's locale is.
C_LOCALE = {'LC_ALL': 'C'}
# Searched after PATH, as AnsibleModule.get_bin_path does (ip, blkid and the Pacemaker tools live there).
SBIN_DIRS = ('/sbin', '/usr/sbin', '/usr/local/sbin')


def checked_argv(argv) -> list:
    """`argv` as a list, or TypeError: a command is a non-empty list of strings, never a shell string."""
    if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(arg, str) for arg in argv):
        raise TypeError(f'a command is a non-empty list of strings (no shell), not {argv!r}')
    return list(argv)


class _Runner:
    """What both runners share: argv checking and the binary cache. Subclasses find and execute."""

    def __init__(self):
        self._paths: dict = {}

    def binary(self, name: str) -> str | None:
        """The path of `name` (a path is returned as it is); None when a ProcessRunner finds nothing."""
        if '/' in name:
            return name
        if name not in self._paths:
            path = self._lookup(name)
            if path is None:
                return None     # not cached: it may be installed before the next call
            self._paths[name] = path
        return self._paths[name]

    def __call__(self, argv: list) -> tuple:
        argv = checked_argv(argv)
        path = self.binary(argv[0])
        if path is None:
            return 127, '', (f'{argv[0]} is not installed on this node (not found in PATH or '
                             f'{", ".join(SBIN_DIRS)})')
        return self._execute([path] + argv[1:])

    def _lookup(self, name: str) -> str | None:
        raise NotImplementedError

    def _execute(self, argv: list) -> tuple:
        raise NotImplementedError


class ModuleRunner(_Runner):
    """Commands of a module, through `module.run_command`.

    `hints` maps a tool to what its absence means for the user ('install Pacemaker first'); a missing
    tool with a hint fails the module with '<tool> is not installed on this node: <hint>', one without
    with get_bin_path's own message."""

    def __init__(self, module, hints: dict | None = None):
        super().__init__()
        self.module = module
        self.hints = dict(hints or {})

    def _lookup(self, name: str) -> str | None:
        path = self.module.get_bin_path(name, required=name not in self.hints)
        if not path:
            self.module.fail_json(msg=f'{name} is not installed on this node: {self.hints[name]}')
        return path

    def _execute(self, argv: list) -> tuple:
        # the arguments are literal: no "~" or "$VAR" expansion in a device, label or file name
        return self.module.run_command(argv, environ_update=dict(C_LOCALE), expand_user_and_vars=False)


class ProcessRunner(_Runner):
    """Commands without a module, through `subprocess`; `timeout` in seconds (None: wait for the end)."""

    def __init__(self, timeout: float | None = None):
        super().__init__()
        self.timeout = timeout

    def _lookup(self, name: str) -> str | None:
        return shutil.which(name, path=os.pathsep.join([os.environ.get('PATH', os.defpath)] + list(SBIN_DIRS)))

    def _execute(self, argv: list) -> tuple:
        try:
            proc = subprocess.run(argv, capture_output=True, encoding='utf-8', errors='replace',
                                  timeout=self.timeout, check=False, env=dict(os.environ, **C_LOCALE))
        except subprocess.TimeoutExpired:
            return 124, '', f'{argv[0]} did not finish within {self.timeout:g} s'
        except OSError as exc:
            return 126, '', f'{argv[0]} cannot be started: {exc.strerror or exc}'
        return proc.returncode, proc.stdout, proc.stderr
