# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cyrus IMAP facts of one host: version, paths, and every instance with its configuration,
listen addresses, murder role, partitions (filesystem, size, file count), master process and, on
request, the mailbox list of each running instance (``ctl_mboxlist -d``).

Instances are the config pairs ``<config_root>/<name>/imapd.conf`` + ``cyrus.conf``, plus the
distribution's ``/etc/imapd.conf`` + ``/etc/cyrus.conf`` as instance ``default``. The instance
conventions (paths, master binaries, whether a master runs) are ``cyrusinstance``'s. Standard
library only (managed node, Python 3.9+).
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess

from ansible_collections.cyrus.ha.plugins.module_utils import cyrusconf, cyrusconf_lint, cyrusinstance
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusinstance import (
    BINDIRS, CONFIG_ROOT, INSTANCE_NAME, RUN_ROOT, find_bindir)

DEFAULT_PAIR = ('/etc/imapd.conf', '/etc/cyrus.conf')
DEFAULT_PIDFILES = ('/run/cyrus-master.pid', '/var/run/cyrus-master.pid')
# The fields of a mailboxes.db entry the facts keep: where it is (server on a Murder's mupdate master and
# frontends, partition), what it is (mbtype: e a mailbox, r remote, ...) and its unique id (backends).
MAILBOX_FIELDS = ('server', 'partition', 'mbtype', 'uniqueid')


def cyrus_version(bindir, imapd_conf, run=None) -> dict:
    """``cyr_info -C CONF version``: {'version': '3.6.1', 'version_full': 'cyrus-imapd 3.6.1-...'}."""
    if not bindir or not imapd_conf:
        return {'version': None, 'version_full': None}
    run = run or _run
    rc, out, dummy = run([os.path.join(bindir, 'cyr_info'), '-C', imapd_conf, 'version'])
    line = out.strip().splitlines()[0] if rc == 0 and out.strip() else ''
    match = re.search(r'(\d+\.\d+(?:\.\d+)?)', line)
    return {'version': match.group(1) if match else None, 'version_full': line or None}


def _run(argv):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                              env=dict(os.environ, LC_ALL='C'))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, '', str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def read_text(path: str):
    try:   # never blocks on a FIFO, never reads a device or a huge file (cyrusconf.read_config)
        return cyrusconf.read_config(path)
    except (OSError, ValueError):
        return None


def mailbox_list(imapd_conf: str, bindir, run=None) -> dict:
    """The instance's mailbox list as its mailboxes.db holds it: {name: {server, partition, mbtype,
    uniqueid}} (a field the entry lacks is left out), read with ``ctl_mboxlist -C CONF -d`` (Cyrus 3 dumps
    it as one JSON object; the tool reads the database in place, as its backups do, and runs as the Cyrus
    user). Raises ValueError naming the instance's file and the cause."""
    if not bindir or not os.path.isfile(os.path.join(bindir, 'ctl_mboxlist')):
        raise ValueError('ctl_mboxlist not found in %s: install Cyrus (Debian: cyrus-common)'
                         % (bindir or 'any Cyrus bin directory'))
    run = run or _run
    argv = [os.path.join(bindir, 'ctl_mboxlist'), '-C', imapd_conf, '-d']
    rc, out, err = run(argv)
    if rc != 0:
        detail = (err or '').strip()[-400:] or (out or '').strip()[-400:] or 'no output'
        raise ValueError('%s -C %s -d failed (exit status %s): %s' % (argv[0], imapd_conf, rc, detail))
    try:
        dump = json.loads(out) if out.strip() else {}
    except ValueError as exc:
        raise ValueError('%s -C %s -d printed no JSON mailbox list (Cyrus 3 prints one): %s'
                         % (argv[0], imapd_conf, exc)) from None
    if not isinstance(dump, dict) or not all(isinstance(v, dict) for v in dump.values()):
        raise ValueError('%s -C %s -d printed JSON that is not a mapping of mailbox names to entries'
                         % (argv[0], imapd_conf))
    return {name: {k: entry[k] for k in MAILBOX_FIELDS if isinstance(entry.get(k), str)}
            for name, entry in sorted(dump.items())}


def master_process(pidfile: str, imapd_conf: str = None, proc_root: str = '/proc') -> dict:
    """The master of a pidfile: {'pid': N or None, 'running': bool} (``cyrusinstance.master_status``)."""
    return cyrusinstance.master_status(pidfile, imapd_conf, proc_root)


def mounts(mountinfo: str = '/proc/self/mountinfo') -> list:
    """[(mount point, fstype, source)], from /proc/self/mountinfo."""
    result = []
    text = read_text(mountinfo) or ''
    for line in text.splitlines():
        left, sep, right = line.partition(' - ')
        fields = left.split()
        extra = right.split()
        if not sep or len(fields) < 5 or len(extra) < 2:
            continue
        point = fields[4].replace('\\040', ' ').replace('\\011', '\t').replace('\\012', '\n').replace('\\134', '\\')
        result.append((point, extra[0], extra[1]))
    return result


def filesystem_of(path: str, mount_table: list) -> dict:
    real = os.path.realpath(path)
    best = None
    for point, fstype, source in mount_table:
        if real == point or real.startswith(point.rstrip('/') + '/') or point == '/':
            if best is None or len(point) >= len(best[0]):
                best = (point, fstype, source)
    result = {'mount': None, 'fstype': None, 'source': None, 'size_bytes': None, 'free_bytes': None}
    if best is not None:
        result.update(mount=best[0], fstype=best[1], source=best[2])
    try:
        stat = os.statvfs(real)
    except OSError:
        return result
    result['size_bytes'] = stat.f_blocks * stat.f_frsize
    result['free_bytes'] = stat.f_bavail * stat.f_frsize
    return result


def usage(path: str) -> dict:
    """Bytes and number of regular files under path (not following symlinks)."""
    total = 0
    files = 0
    for root, dirs, names in os.walk(path):
        for name in names:
            try:
                stat = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, name)):
                total += stat.st_size
                files += 1
    return {'used_bytes': total, 'files': files}


def describe_instance(name: str, imapd_path: str, cyrus_path: str, pidfile: str, mount_table: list,
                      with_usage: bool = True, proc_root: str = '/proc', match_config: bool = True) -> dict:
    """Everything about one instance; parse errors land in ``problems``, never raise."""
    problems = []
    imapd_text = read_text(imapd_path)
    imapd, found = cyrusconf.parse_imapd_lines(imapd_text or '', imapd_path)
    problems.extend(found)
    if imapd_text is None:
        problems.append(cyrusconf.Problem(imapd_path, 0, 'cannot be read'))
    cyrus_text = read_text(cyrus_path)
    cyrus, found = cyrusconf.parse_cyrus_lines(cyrus_text or '', cyrus_path)
    problems.extend(found)
    if cyrus_text is None:
        problems.append(cyrusconf.Problem(cyrus_path, 0, 'cannot be read'))
    listen = []
    for entry in cyrus.section('SERVICES'):
        value = entry.get('listen')
        if value is None:
            continue
        item = {'service': entry.name, 'listen': value, 'proto': entry.get('proto', 'tcp')}
        try:
            item.update(cyrusconf.parse_listen(value))
        except ValueError as exc:
            item['error'] = str(exc)
        listen.append(item)
    partitions = {}
    for part, path in sorted(imapd.partitions().items()):
        info = {'path': path, 'exists': os.path.isdir(path)}
        if info['exists']:
            info['filesystem'] = filesystem_of(path, mount_table)
            if with_usage:
                info.update(usage(path))
        partitions[part] = info
    master = master_process(pidfile, imapd_path if match_config else None, proc_root)
    options = imapd.options
    return {
        'name': name,
        'imapd_conf': imapd_path,
        'cyrus_conf': cyrus_path,
        'servername': options.get('servername'),
        'configdirectory': options.get('configdirectory'),
        'syslog_prefix': options.get('syslog_prefix'),
        'murder_role': cyrusconf.murder_role(imapd, cyrus),
        'mupdate_server': options.get('mupdate_server'),
        'listen': listen,
        'services': [e.as_dict() for e in cyrus.entries],
        'partitions': partitions,
        'pidfile': pidfile,
        'running': master['running'],
        'master_pid': master['pid'] if master['running'] else None,
        'problems': [str(p) for p in problems],
    }


def instance_pairs(config_root: str = CONFIG_ROOT, include_default: bool = True,
                   default_pair: tuple = DEFAULT_PAIR) -> dict:
    """{name: (imapd.conf, cyrus.conf)} for every instance directory (and the default pair)."""
    pairs = {}
    for imapd_path in sorted(glob.glob(os.path.join(glob.escape(config_root), '*', 'imapd.conf'))):
        directory = os.path.dirname(imapd_path)
        name = os.path.basename(directory)
        if INSTANCE_NAME.fullmatch(name):
            pairs[name] = (imapd_path, os.path.join(directory, 'cyrus.conf'))
    if include_default and 'default' not in pairs and os.path.isfile(default_pair[0]) and \
            os.path.isfile(default_pair[1]):
        pairs['default'] = default_pair
    return pairs


def gather(config_root: str = CONFIG_ROOT, run_root: str = RUN_ROOT, include_default: bool = True,
           with_usage: bool = True, default_pair: tuple = DEFAULT_PAIR, bindirs=BINDIRS, run=None,
           proc_root: str = '/proc', mountinfo: str = '/proc/self/mountinfo', with_mailboxes: bool = False) -> dict:
    """The ``ansible_facts.cyrus`` dictionary of this host. With ``with_mailboxes``, each instance whose
    master runs also gets ``mailboxes`` (mailbox_list) or, when it cannot be read, ``mailboxes_error``;
    a stopped instance gets neither (on a warm spare its configdirectory is on a volume mounted
    elsewhere)."""
    bindir = find_bindir(bindirs)
    pairs = instance_pairs(config_root, include_default, default_pair)
    table = mounts(mountinfo)
    instances = {}
    for name, (imapd_path, cyrus_path) in pairs.items():
        if name == 'default' and (imapd_path, cyrus_path) == tuple(default_pair):
            pidfile = next((p for p in DEFAULT_PIDFILES if os.path.exists(p)), DEFAULT_PIDFILES[0])
            instances[name] = describe_instance(name, imapd_path, cyrus_path, pidfile, table, with_usage,
                                                proc_root, match_config=False)
        else:
            pidfile = cyrusinstance.paths(name, config_root, run_root)['pidfile']
            instances[name] = describe_instance(name, imapd_path, cyrus_path, pidfile, table, with_usage, proc_root)
        if with_mailboxes and instances[name]['running']:
            try:
                instances[name]['mailboxes'] = mailbox_list(imapd_path, bindir, run)
            except ValueError as exc:
                instances[name]['mailboxes_error'] = str(exc)
    candidates = [default_pair[0]] + [p[0] for p in pairs.values()]
    facts = {'version': None, 'version_full': None}
    for candidate in dict.fromkeys(c for c in candidates if os.path.isfile(c)):
        facts = cyrus_version(bindir, candidate, run)
        if facts['version']:
            break
    facts['paths'] = {
        'bindir': bindir,
        'master': cyrusinstance.master_binary(bindir),
        'config_root': config_root,
        'run_root': run_root,
        'default_imapd_conf': default_pair[0] if os.path.isfile(default_pair[0]) else None,
        'default_cyrus_conf': default_pair[1] if os.path.isfile(default_pair[1]) else None,
    }
    facts['instances'] = instances
    facts['conflicts'] = host_conflicts(pairs)
    return facts


def host_conflicts(pairs: dict, resolve=None) -> list:
    """Addresses, sockets and directories claimed by two instances of this host."""
    parsed = {}
    for name, (imapd_path, cyrus_path) in pairs.items():
        imapd, dummy = cyrusconf.parse_imapd_lines(read_text(imapd_path) or '', imapd_path)
        cyrus, dummy = cyrusconf.parse_cyrus_lines(read_text(cyrus_path) or '', cyrus_path)
        parsed[name] = (imapd, cyrus)
    return cyrusconf_lint.cross_check(parsed, resolve)


class PlanError(ValueError):
    """The file cannot be validated or edited; ``problems`` lists the findings as strings."""

    def __init__(self, message: str, problems=None):
        super().__init__(message)
        self.problems = list(problems or [])


def guess_kind(path: str):
    base = os.path.basename(path)
    if base.startswith('imapd') or base.endswith('imapd.conf'):
        return 'imapd'
    if base.startswith('cyrus') or base.endswith('cyrus.conf'):
        return 'cyrus'
    return None


def plan_config(path: str, kind: str = None, imapd_conf: str = None, settings: dict = None,
                check_host: bool = False, config_root: str = CONFIG_ROOT, include_default: bool = False,
                bindir: str = None, resolve=None) -> dict:
    """Validate ``path`` (after applying ``settings`` to an imapd.conf) and, with ``check_host``,
    check it against every other instance of the host.

    Returns {'kind', 'before', 'after', 'problems' (warnings), 'conflicts', 'murder_role',
    'imapd_conf'}; raises PlanError naming the file and every error."""
    kind = kind or guess_kind(path)
    if kind not in ('imapd', 'cyrus'):
        raise PlanError('cannot tell whether %s is an imapd.conf or a cyrus.conf: set kind' % path)
    before = read_text(path)
    if before is None:
        raise PlanError('%s does not exist or cannot be read' % path)
    after = before
    if settings:
        if kind != 'imapd':
            raise PlanError('settings apply to an imapd.conf only, and %s is a cyrus.conf' % path)
        conf, problems = cyrusconf.parse_imapd_lines(before, path)
        if problems:
            raise PlanError('%s does not parse, so it cannot be edited: %s' % (path, '; '.join(map(str, problems))),
                            problems)
        for key, value in settings.items():
            try:
                conf.set(key, value)
            except ValueError as exc:
                raise PlanError('%s: %s' % (path, exc))
        after = conf.render()
    if kind == 'imapd':
        problems = cyrusconf_lint.lint_imapd(after, path)
        imapd_conf = path
    else:
        imapd_conf = imapd_conf or os.path.join(os.path.dirname(path), 'imapd.conf')
        problems = cyrusconf_lint.lint_cyrus(after, path, imapd_conf, bindir if bindir is not None else find_bindir())
    errors = [str(p) for p in problems if p.severity == 'error']
    if errors:
        raise PlanError('%s is not a valid %s.conf: %s' % (path, kind, '; '.join(errors)), errors)
    pair_imapd = read_text(imapd_conf) if kind == 'cyrus' else after
    pair_cyrus = after if kind == 'cyrus' else read_text(os.path.join(os.path.dirname(path), 'cyrus.conf'))
    imapd_parsed = cyrusconf.parse_imapd_lines(pair_imapd or '', imapd_conf)[0]
    cyrus_parsed = cyrusconf.parse_cyrus_lines(pair_cyrus or '', path)[0]
    conflicts = []
    if check_host:
        pairs = instance_pairs(config_root, include_default)
        mine = os.path.realpath(path)
        parsed = {}
        this_name = None
        for name, (imapd_path, cyrus_path) in pairs.items():
            if mine in (os.path.realpath(imapd_path), os.path.realpath(cyrus_path)):
                this_name = name
                continue
            parsed[name] = (cyrusconf.parse_imapd_lines(read_text(imapd_path) or '', imapd_path)[0],
                            cyrusconf.parse_cyrus_lines(read_text(cyrus_path) or '', cyrus_path)[0])
        if this_name is None:
            this_name = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
        parsed[this_name] = (imapd_parsed, cyrus_parsed)
        conflicts = [c for c in cyrusconf_lint.cross_check(parsed, resolve)
                     if c.startswith(this_name + ':') or (' and %s:' % this_name) in c]
        if conflicts:
            raise PlanError('%s conflicts with another instance of this host: %s' % (path, '; '.join(conflicts)),
                            conflicts)
    return {'kind': kind, 'before': before, 'after': after, 'problems': [str(p) for p in problems],
            'conflicts': conflicts, 'murder_role': cyrusconf.murder_role(imapd_parsed, cyrus_parsed),
            'imapd_conf': imapd_conf}
