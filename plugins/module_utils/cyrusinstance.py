# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One Cyrus instance's conventions, in one place: its paths, the master binary of each platform,
and whether its master runs.

An instance ``<name>`` keeps its config pair in ``/etc/cyrus-ha/<name>/`` (``imapd.conf``,
``cyrus.conf``) and its run-time files in ``/run/cyrus-ha/<name>/`` (``master.pid``, sockets).
Every process of the instance carries ``-C <its imapd.conf>``, which is how it is told apart from
another instance's on the same machine. This module is where the modules, module_utils, the
roles' control scripts and the OCF agent read those conventions; the roles' own copy of the two
roots is ``roles/cyrus_instance/vars/main.yml``.

Standard library only (managed node, Python 3.9+). The standalone scripts import it from their
support directory (SUPPORT_DIR), where its sibling ``procfs.py`` is a plain module.
"""

from __future__ import annotations

import os
import re

try:
    from ansible_collections.cyrus.ha.plugins.module_utils import procfs
except ImportError:   # a standalone script's copy, beside procfs.py in SUPPORT_DIR
    import procfs

CONFIG_ROOT = '/etc/cyrus-ha'
RUN_ROOT = '/run/cyrus-ha'
# Where the roles install the control scripts, the config CLI and the module_utils they import.
SUPPORT_DIR = '/usr/local/lib/cyrus-ha'
INSTANCE_NAME = re.compile(r'[a-z][a-z0-9_-]{0,30}')
IMAPD_CONF = 'imapd.conf'
CYRUS_CONF = 'cyrus.conf'
PIDFILE = 'master.pid'

# The Cyrus daemon directory and master binary of each platform: Debian's master, RHEL's cyrus-master
# (postfix has a master too); cyrmaster is Debian's /usr/sbin link and older packages' name.
PLATFORMS = {
    'Debian': {'bindir': '/usr/lib/cyrus/bin', 'master': 'master'},
    'RedHat': {'bindir': '/usr/libexec/cyrus-imapd', 'master': 'cyrus-master'},
}
BINDIRS = tuple(p['bindir'] for p in PLATFORMS.values())
MASTER_NAMES = ('master', 'cyrus-master', 'cyrmaster')
MASTER_CANDIDATES = tuple(os.path.join(p['bindir'], p['master']) for p in PLATFORMS.values()) + ('/usr/sbin/cyrmaster',)


def valid_name(name: str) -> bool:
    return isinstance(name, str) and INSTANCE_NAME.fullmatch(name) is not None


def paths(name: str, config_root: str = CONFIG_ROOT, run_root: str = RUN_ROOT) -> dict:
    """The paths of instance ``name``: config_dir, run_dir, imapd_conf, cyrus_conf, pidfile."""
    config_dir = os.path.join(config_root, name)
    run_dir = os.path.join(run_root, name)
    return {'config_dir': config_dir, 'run_dir': run_dir, 'imapd_conf': os.path.join(config_dir, IMAPD_CONF),
            'cyrus_conf': os.path.join(config_dir, CYRUS_CONF), 'pidfile': os.path.join(run_dir, PIDFILE)}


def find_bindir(candidates=BINDIRS):
    """The directory of Cyrus's daemons: the first candidate holding a master binary (a directory
    that merely exists, or one with only postfix's master elsewhere, does not count)."""
    for candidate in candidates:
        if any(os.path.isfile(os.path.join(candidate, name)) for name in MASTER_NAMES):
            return candidate
    return None


def master_binary(bindir):
    """The master binary in a daemon directory (None without one)."""
    if not bindir:
        return None
    for name in MASTER_NAMES:
        if os.path.isfile(os.path.join(bindir, name)):
            return os.path.join(bindir, name)
    return os.path.join(bindir, MASTER_NAMES[0])


def default_master(candidates=MASTER_CANDIDATES) -> str:
    """The first candidate master binary that exists, else the first candidate."""
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    return candidates[0]


def config_args(argv: list) -> list:
    """The ``-C`` arguments of a command line, as getopt reads them (``-C FILE`` or ``-CFILE``)."""
    values = []
    for index, arg in enumerate(argv):
        if arg == '-C' and index + 1 < len(argv):
            values.append(argv[index + 1])
        elif arg.startswith('-C') and len(arg) > 2:
            values.append(arg[2:])
    return values


def carries_config(argv: list, imapd_conf: str) -> bool:
    """Whether a command line passes ``-C imapd_conf``."""
    return imapd_conf in config_args(argv)


def is_master(argv: list, names=MASTER_NAMES) -> bool:
    """Whether a command line runs a Cyrus master (by the binary's name)."""
    return bool(argv) and os.path.basename(argv[0]) in names


def master_status(pidfile, imapd_conf=None, proc_root: str = procfs.PROC, names=MASTER_NAMES) -> dict:
    """Whether this instance's master runs: {'pid': N or None, 'running': bool}.

    Running means: the pidfile names a process that exists, is no zombie, runs a master binary
    (``names``), and, when ``imapd_conf`` is given, carries ``-C imapd_conf`` (a stale pidfile
    whose PID now belongs to another instance's master does not count)."""
    pid = procfs.read_pidfile(pidfile) if pidfile else None
    if pid is None:
        return {'pid': None, 'running': False}
    if not procfs.alive(pid, proc_root):
        return {'pid': pid, 'running': False}
    argv = procfs.cmdline(pid, proc_root)
    if not is_master(argv, names) or (imapd_conf is not None and not carries_config(argv, imapd_conf)):
        return {'pid': pid, 'running': False}
    return {'pid': pid, 'running': True}


def instance_pids(imapd_conf: str, proc_root: str = procfs.PROC, exclude=(), same_netns: bool = True) -> list:
    """Every live process of the instance (its master and the services it forked): those carrying
    ``-C imapd_conf``. With ``same_netns``, only those in the caller's network namespace: another
    node's copy of the instance (a warm spare's, when nodes share a PID namespace) is never counted."""
    own = procfs.namespace('self', 'net', proc_root) if same_netns else None
    found = []
    for pid in procfs.pids(proc_root):
        if pid in exclude or not carries_config(procfs.cmdline(pid, proc_root), imapd_conf):
            continue
        if procfs.alive(pid, proc_root) and (not same_netns or procfs.namespace(pid, 'net', proc_root) == own):
            found.append(pid)
    return found
