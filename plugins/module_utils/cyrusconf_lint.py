# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks of Cyrus IMAP configuration files for a host of single-address instances.

``lint_imapd`` and ``lint_cyrus`` check one file: every ``listen=`` on an explicit address and
port, every ``cmd=`` passing the instance's ``-C``, absolute paths, mupdate's prefork. ``cross_check``
checks several instances of one host: no shared address:port, unix socket or lock directory.
``cyr_info_lint`` adds Cyrus's own check (``cyr_info conf-lint``: the option names Cyrus does not
know). Every finding is a ``cyrusconf.Problem`` naming the file and the line.

Standard library only (runs on the managed node, Python 3.9+). The standalone scripts import it
from their support directory, beside ``cyrusconf.py`` and ``cyrusinstance.py``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess

try:
    from ansible_collections.cyrus.ha.plugins.module_utils import cyrusinstance
    from ansible_collections.cyrus.ha.plugins.module_utils.cyrusconf import (
        DIRECTORY_KEYS, SOCKET_KEYS, CyrusConf, ImapdConf, Problem, parse_cyrus_lines, parse_imapd_lines, parse_listen)
except ImportError:   # a standalone script's copy, beside cyrusconf.py in the support directory
    import cyrusinstance
    from cyrusconf import (
        DIRECTORY_KEYS, SOCKET_KEYS, CyrusConf, ImapdConf, Problem, parse_cyrus_lines, parse_imapd_lines, parse_listen)

WILDCARD_HOSTS = ('', '*', '0.0.0.0', '::', '0:0:0:0:0:0:0:0')
# Ports of Cyrus's service names, for comparing listen= values when /etc/services lacks them
# (Debian 12's has no lmtp, mupdate or csync).
KNOWN_PORTS = {'imap': 143, 'imaps': 993, 'pop3': 110, 'pop3s': 995, 'lmtp': 24, 'sieve': 4190, 'mupdate': 3905,
               'nntp': 119, 'nntps': 563, 'http': 80, 'https': 443, 'csync': 2005}


def is_wildcard(host) -> bool:
    return host is None or host in WILDCARD_HOSTS


def _ip(host: str):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_listen(listen: str) -> list:
    """Problems (messages) with one ``listen=`` value for a single-address instance."""
    try:
        parsed = parse_listen(listen)
    except ValueError as exc:
        return [str(exc)]
    if parsed['kind'] == 'unix':
        return []
    host, port = parsed['host'], parsed['port']
    messages = []
    if host is None:
        # a bare "1.2.3.4" is taken by master as a port: say so
        if _ip(port) is not None or '.' in port:
            messages.append('listen=%s is read as a port with no address: write %s:PORT' % (listen, port))
        else:
            messages.append('listen=%s has no address: master would bind every address; write ADDRESS:%s'
                            % (listen, port))
        return messages
    if is_wildcard(host):
        messages.append('listen=%s binds the wildcard address: bind the instance\'s own address' % listen)
    elif ':' in host and not listen.startswith('['):
        messages.append('listen=%s: write an IPv6 address in brackets, [%s]:PORT' % (listen, host))
    elif ':' in host and _ip(host) is None:
        messages.append('listen=%s: %s is not a valid IPv6 address' % (listen, host))
    if port is None:
        messages.append('listen=%s has no port: write %s:PORT' % (listen, listen))
    elif not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', port):
        messages.append('listen=%s: %r is not a port number or service name' % (listen, port))
    elif port.isdigit() and not 0 < int(port) < 65536:
        messages.append('listen=%s: port %s is out of range' % (listen, port))
    return messages


def lint_imapd(text: str, path: str = 'imapd.conf') -> list:
    """Every problem of an imapd.conf (syntax first, then meaning)."""
    conf, problems = parse_imapd_lines(text, path)
    options = conf.options
    if 'configdirectory' not in options:
        problems.append(Problem(path, 0, 'configdirectory is not set: every instance needs its own'))
    for key, value in sorted(options.items()):
        line = conf.lineno(key)
        if (key in DIRECTORY_KEYS or key in SOCKET_KEYS or key.startswith('partition-')) and \
                not value.startswith('/'):
            problems.append(Problem(path, line, '%s must be an absolute path (master runs with -d from /), '
                                                'not %s' % (key, value)))
    server = options.get('mupdate_server')
    if server is not None:
        host_port = server
        if host_port.startswith('['):
            has_port = ']:' in host_port
        else:
            has_port = ':' in host_port and not _ip(host_port)
        if not has_port:
            problems.append(Problem(path, conf.lineno('mupdate_server'),
                                    'mupdate_server %s has no port: mupdate_port is read by nothing, '
                                    'write %s:3905' % (server, server), 'warning'))
    if 'proxyservers' in options and 'mupdate_server' not in options:
        problems.append(Problem(path, conf.lineno('proxyservers'),
                                'proxyservers is set but mupdate_server is not: a backend needs its '
                                'mupdate master', 'warning'))
    return problems


def lint_cyrus(text: str, path: str = 'cyrus.conf', imapd_conf: str = None, bindir: str = None) -> list:
    """Every problem of a cyrus.conf for an instance whose imapd.conf is ``imapd_conf``."""
    conf, problems = parse_cyrus_lines(text, path)
    seen = {}
    for entry in conf.entries:
        where = '%s entry %s' % (entry.section, entry.name)
        first = seen.get((entry.section, entry.name))
        if first is not None:
            problems.append(Problem(path, entry.lineno, '%s defined twice (first on line %d)' % (where, first)))
        else:
            seen[(entry.section, entry.name)] = entry.lineno
        argv = entry.argv
        if not argv:
            problems.append(Problem(path, entry.lineno, '%s has no cmd=' % where))
            continue
        if imapd_conf is not None:
            values = cyrusinstance.config_args(argv)
            found = imapd_conf in values
            if not found and values:
                problems.append(Problem(path, entry.lineno, '%s passes -C %s, not this instance\'s -C %s'
                                        % (where, values[0], imapd_conf)))
            elif not found:
                problems.append(Problem(path, entry.lineno, '%s: cmd="%s" lacks -C %s (master\'s -C is not '
                                                            'inherited by its children)'
                                        % (where, entry.get('cmd'), imapd_conf)))
        program = argv[0]
        if bindir and '/' not in program and not os.path.exists(os.path.join(bindir, program)):
            problems.append(Problem(path, entry.lineno, '%s: program %s is not in %s%s'
                                    % (where, program, bindir,
                                       ' (Debian ships no proxyd binaries: use imapd, pop3d, lmtpd -a)'
                                       if program.endswith('proxyd') else '')))
        if entry.section == 'SERVICES':
            listen = entry.get('listen')
            if listen is None:
                problems.append(Problem(path, entry.lineno, '%s has no listen=' % where))
            else:
                for message in check_listen(listen):
                    problems.append(Problem(path, entry.lineno, '%s: %s' % (where, message)))
            if os.path.basename(program) == 'mupdate':
                prefork = entry.get('prefork', '0')
                if not prefork.isdigit() or int(prefork) < 1:
                    problems.append(Problem(path, entry.lineno, '%s: mupdate needs prefork=1 (a slave syncs '
                                                                'only after its first client otherwise)' % where))
        elif entry.section == 'EVENTS' and all(entry.get(k) is None for k in ('period', 'at', 'cron')):
            problems.append(Problem(path, entry.lineno, '%s has none of period=, at= or cron=' % where))
    return problems


def editable_imapd(text: str, path: str = 'imapd.conf') -> list:
    """Why an existing file must not be edited as an imapd.conf ([] when it may): it must be one on its
    own already (every error of ``lint_imapd``), or hold no option at all (a new, empty file). So a
    file that is something else (a symlink to /etc/shadow parses as "key: value" lines too) is
    refused before it is changed or shown; the problems name lines and causes, never values."""
    conf, problems = parse_imapd_lines(text, path)
    if not problems and not any(line.kind == 'option' for line in conf.lines):
        return []
    return [p for p in lint_imapd(text, path) if p.severity == 'error']


# ---------------------------------------------------------------------------------------------
# several instances on one host
# ---------------------------------------------------------------------------------------------

def instance_claims(name: str, imapd: ImapdConf, cyrus: CyrusConf, resolve=None) -> list:
    """What one instance claims exclusively: (kind, key, description) tuples.

    kind: ``inet`` (key (address, port)), ``unix`` (a socket path), ``directory`` (a lock,
    proc or config directory). ``resolve(host, port)`` turns names into (address, port number)
    pairs; by default host names and service names are looked up with socket.getaddrinfo."""
    resolve = resolve or _resolve
    claims = []
    for entry in cyrus.section('SERVICES'):
        listen = entry.get('listen')
        if listen is None:
            continue
        try:
            parsed = parse_listen(listen)
        except ValueError:
            continue
        what = '%s: %s listen=%s' % (name, entry.name, listen)
        if parsed['kind'] == 'unix':
            claims.append(('unix', os.path.normpath(parsed['path']), what))
            continue
        for address, port in resolve(parsed['host'], parsed['port'] or entry.name):
            claims.append(('inet', (address, port, entry.get('proto', 'tcp')), what))
    options = imapd.options
    configdirectory = options.get('configdirectory')
    for key in SOCKET_KEYS:
        if key in options:
            claims.append(('unix', os.path.normpath(options[key]), '%s: %s' % (name, key)))
    for key in DIRECTORY_KEYS:
        if key in options:
            claims.append(('directory', os.path.normpath(options[key]), '%s: %s' % (name, key)))
    if configdirectory:
        claims.append(('directory', os.path.normpath(os.path.join(configdirectory, 'socket')),
                       '%s: service lock directory %s/socket' % (name, configdirectory)))
    for part, path in sorted(imapd.partitions().items()):
        claims.append(('directory', os.path.normpath(path), '%s: partition-%s' % (name, part)))
    return claims


def _resolve(host, port) -> list:
    import socket
    if port is not None and not str(port).isdigit():
        try:
            number = socket.getservbyname(port, 'tcp')
        except OSError:
            number = KNOWN_PORTS.get(port, port)
    else:
        number = int(port) if port is not None else None
    if is_wildcard(host):
        return [('*', number)]
    address = _ip(host)
    if address is not None:
        return [(str(address), number)]
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except OSError:
        return [(host, number)]
    return sorted({(str(ipaddress.ip_address(info[4][0].split('%')[0])), number) for info in infos})


def cross_check(instances: dict, resolve=None) -> list:
    """Conflicts between instances on one host. ``instances`` maps name to (ImapdConf, CyrusConf).
    Returns messages naming both instances and what they share."""
    owners = {}
    by_port = {}    # (port, proto) -> [(address, owner)]: each claim is compared with its port's claims only
    messages = []
    for name in sorted(instances):
        imapd, cyrus = instances[name]
        mine = set()
        for kind, key, what in instance_claims(name, imapd, cyrus, resolve):
            if (kind, key) in mine:
                continue
            mine.add((kind, key))
            if kind == 'inet':
                address, port, proto = key
                clash = [o for o_address, o in by_port.get((port, proto), [])
                         if o_address == address or '*' in (o_address, address)]
            else:
                clash = [owners[(kind, key)]] if (kind, key) in owners else []
            for other in clash:
                if other.split(':', 1)[0] != name:
                    messages.append('%s and %s claim the same %s' % (other, what, _describe(kind, key)))
            if (kind, key) not in owners:
                owners[(kind, key)] = what
                if kind == 'inet':
                    by_port.setdefault((key[1], key[2]), []).append((key[0], what))
    return messages


def _describe(kind: str, key) -> str:
    if kind == 'inet':
        address, port, proto = key
        shown = '[%s]' % address if ':' in address else address
        return '%s %s:%s' % (proto, shown, port)
    if kind == 'unix':
        return 'unix socket %s' % key
    return 'directory %s' % key


# ---------------------------------------------------------------------------------------------
# Cyrus's own check
# ---------------------------------------------------------------------------------------------

# Options Cyrus reads although cyr_info conf-lint does not know them: the per-server proxy passwords and
# SASL mechanisms "<first label of a servername>_password" and "_mechs" (imap/backend.c), which the murder
# role writes on frontends and backends, and SASL options for one service, "<service>_sasl_<option>"
# (imap/global.c mysasl_config looks sasl_<option> up with the service's name first).
READ_BUT_UNKNOWN_TO_CONF_LINT = (re.compile(r'[a-z0-9][a-z0-9-]*_(password|mechs)'),
                                 re.compile(r'[a-z0-9]+_sasl_[a-z0-9_]+'))


def cyr_info_lint(cyr_info: str, path: str, text: str, cyrus_conf: str = None, display: str = None, run=None) -> list:
    """Cyrus's own check of the imapd.conf at ``path`` (whose content is ``text``):
    ``cyr_info -C PATH [-M CYRUS_CONF] conf-lint`` prints every option Cyrus does not know (an option
    prefixed with a service name counts as known only for the services of CYRUS_CONF). Each is an
    error on its line; the values are never repeated (they may be secrets). cyr_info reads CYRUS_CONF
    as the cyrus user (root:mail 0640 is readable), the imapd.conf before it drops root."""
    shown = display or path
    argv = [cyr_info, '-C', path] + (['-M', cyrus_conf] if cyrus_conf else []) + ['conf-lint']
    rc, out, err = (run or _run)(argv)
    if rc != 0:
        detail = (err.strip().splitlines() or out.strip().splitlines() or ['no output'])[-1]
        return [Problem(shown, 0, 'cyr_info conf-lint failed (%s, exit status %d): %s' % (cyr_info, rc, detail))]
    conf = parse_imapd_lines(text, shown)[0]
    problems = []
    for line in out.splitlines():
        key = line.split(':', 1)[0].strip().lower()
        if not key or any(p.fullmatch(key) for p in READ_BUT_UNKNOWN_TO_CONF_LINT):
            continue
        problems.append(Problem(shown, conf.lineno(key), 'unknown option %s: Cyrus does not read it '
                                                         '(cyr_info conf-lint); check its spelling' % key))
    return sorted(problems, key=lambda p: (p.line, p.message))


def _run(argv: list) -> tuple:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                              env=dict(os.environ, LC_ALL='C'))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, '', str(exc)
    return proc.returncode, proc.stdout, proc.stderr
