# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cyrus IMAP configuration files as data: imapd.conf and cyrus.conf.

Parsers that keep every byte (comments, blank lines, spacing, line endings) so that
``render(parse(text)) == text``, renderers for new entries, the split of a ``listen=`` value, and
the murder role a config pair gives. The checks (lint, the cross-instance checker) are in
``cyrusconf_lint.py``; the command line for templates' ``validate:`` is the cyrus_instance role's
``files/cyrusconf_cli.py``.

The grammar follows Cyrus 3.x: ``lib/libconfig.c`` (imapd.conf) and ``master/masterconf.c``
(cyrus.conf); ``listen=`` follows ``parse_inet_listen`` in ``master/master.c``.

Standard library only (runs on the managed node, Python 3.9+); it imports nothing of the
collection, so the standalone scripts import it from their support directory as is.
"""

from __future__ import annotations

import os
import re
import stat

SECTIONS = ('START', 'SERVICES', 'EVENTS', 'DAEMON')
_IMAPD_KEY = re.compile(r'@?[A-Za-z0-9_-]*')
_ALNUM = re.compile(r'[A-Za-z0-9]*')
_SPACE = ' \t\n\r\f\v'
# Keys naming unix sockets and directories that must never be shared by two instances.
SOCKET_KEYS = ('lmtpsocket', 'idlesocket', 'notifysocket', 'ptloader_sock')
DIRECTORY_KEYS = ('configdirectory', 'proc_path', 'mboxname_lockpath')


class Problem:
    """One finding, printed as ``path:line: message`` (``line`` 0 = the file as a whole)."""

    __slots__ = ('path', 'line', 'message', 'severity')

    def __init__(self, path: str, line: int, message: str, severity: str = 'error'):
        self.path = path
        self.line = line
        self.message = message
        self.severity = severity

    def __str__(self) -> str:
        prefix = 'warning: ' if self.severity == 'warning' else ''
        return '%s:%d: %s%s' % (self.path, self.line, prefix, self.message)

    def __repr__(self) -> str:
        return 'Problem(%r)' % str(self)

    def __eq__(self, other) -> bool:
        return isinstance(other, Problem) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def as_dict(self) -> dict:
        return {'path': self.path, 'line': self.line, 'message': self.message, 'severity': self.severity}


class ConfigError(ValueError):
    """A file does not parse; ``problems`` holds every syntax error found, with file and line."""

    def __init__(self, problems: list):
        self.problems = list(problems)
        super().__init__('\n'.join(str(p) for p in self.problems))


# ---------------------------------------------------------------------------------------------
# reading a config file, and what may be printed of it
# ---------------------------------------------------------------------------------------------

# A Cyrus config is a few KiB; anything beyond this is not one (and would be slow to lint).
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MASK = '********'
# Options whose values are secrets in Cyrus terms: mupdate_password, proxy_password, <server>_password,
# ldap_password, sasl_*secret*, ...: never printed, whatever their spacing.
_SECRET_KEY = re.compile(r'.*(password|passwd|secret|_pass)[a-z0-9_-]*', re.I)


class FileRefused(ValueError):
    """A config path that is not a regular text file of sane size: the message names it and the cause."""


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO'), (stat.S_ISSOCK, 'a socket'),
                       (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device')):
        if test(mode):
            return name
    return 'not a regular file'


def read_config(path: str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of the config file at ``path``, following a symlink to its target.

    Never blocks: a directory, FIFO, socket or device is refused from stat() before opening, and the
    open is O_NONBLOCK with an fstat() after it (a file swapped in between is refused too). Refused as
    well: more than ``max_bytes``, NUL bytes, text that is not UTF-8. Raises FileRefused (or OSError
    for a missing or unreadable file); the message never holds the file's content."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused('%s is %s, not a regular file: refused' % (path, _kind_of(st.st_mode)))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0) | getattr(os, 'O_NOCTTY', 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused('%s is %s, not a regular file: refused' % (path, _kind_of(st.st_mode)))
        if st.st_size > max_bytes:
            raise FileRefused('%s is %d bytes, more than the %d a Cyrus config may have: refused'
                              % (path, st.st_size, max_bytes))
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(65536, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    data = b''.join(chunks)
    if len(data) > max_bytes:
        raise FileRefused('%s grew beyond the %d bytes a Cyrus config may have: refused' % (path, max_bytes))
    if b'\0' in data:
        raise FileRefused('%s holds NUL bytes: it is not a text config file, refused' % path)
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as exc:
        raise FileRefused('%s is not UTF-8 text (byte %d): refused' % (path, exc.start)) from None


def is_secret_key(key: str) -> bool:
    """Whether an imapd.conf option holds a secret (its value is never printed)."""
    return bool(_SECRET_KEY.fullmatch(key.strip().lower()))


def secret_values(texts, extra=()) -> list:
    """Every secret found: the values of secret options in the imapd.conf ``texts`` and the ``extra``
    values, each as given and stripped, longest first (so that masking never leaves a tail)."""
    found = set()
    for text in texts:
        for line in _split_lines(text or ''):
            key, sep, value = _body(line).partition(':')
            if sep and is_secret_key(key):
                found.update((value, value.strip(_SPACE)))
    for value in extra:
        text = format_value(value) if value is not None else ''
        found.update((str(value) if value is not None else '', text))
    return sorted((v for v in found if v.strip(_SPACE)), key=len, reverse=True)


def scrub(value, secrets: list):
    """``value`` (a string, or lists/dicts of them) with every secret replaced by the mask."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    return value


def masked(text: str, secret_keys=(), secrets=()) -> str:
    """imapd.conf text for a diff: every option that is a secret in Cyrus terms (or named in
    ``secret_keys``) written as ``key: ********``, and every value in ``secrets`` masked wherever else
    it appears (a comment, another option)."""
    keys = {k.lower() for k in secret_keys}
    out = []
    for line in _split_lines(text or ''):
        key, sep, dummy = _body(line).partition(':')
        key = key.strip(_SPACE).lower()
        if sep and not key.startswith('#') and (key in keys or is_secret_key(key)):
            out.append('%s: %s%s' % (key, MASK, '\n' if line.endswith('\n') else ''))
        else:
            out.append(scrub(line, secrets))
    return ''.join(out)


def _split_lines(text: str) -> list:
    """Lines with their endings kept (only \\n ends a line, as for fgets)."""
    parts = text.split('\n')
    lines = [p + '\n' for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _body(raw: str) -> str:
    return raw[:-1] if raw.endswith('\n') else raw


# ---------------------------------------------------------------------------------------------
# imapd.conf
# ---------------------------------------------------------------------------------------------

class ImapdLine:
    """One line of imapd.conf: ``kind`` is ``option``, ``comment`` or ``blank``; ``raw`` is its
    exact text including the line ending."""

    __slots__ = ('kind', 'raw', 'key', 'value', 'lineno')

    def __init__(self, kind: str, raw: str, lineno: int, key: str = '', value: str = ''):
        self.kind = kind
        self.raw = raw
        self.lineno = lineno
        self.key = key
        self.value = value


class ImapdConf:
    """A parsed imapd.conf. ``options`` maps lower-cased keys to values (Cyrus lower-cases keys).

    The options and their line numbers are indexed once per version of ``lines`` (one pass), so that
    looking every option up stays linear in the number of lines."""

    def __init__(self, lines: list, path: str = 'imapd.conf'):
        self.lines = lines
        self.path = path
        self._index = None

    def _indexed(self) -> tuple:
        if self._index is None or self._index[0] is not self.lines:
            options, linenos = {}, {}
            for line in self.lines:
                if line.kind == 'option':
                    options[line.key] = line.value
                    linenos.setdefault(line.key, line.lineno)
            self._index = (self.lines, options, linenos)
        return self._index

    @property
    def options(self) -> dict:
        return dict(self._indexed()[1])

    def get(self, key: str, default=None):
        return self._indexed()[1].get(key.lower(), default)

    def lineno(self, key: str) -> int:
        return self._indexed()[2].get(key.lower(), 0)

    def partitions(self) -> dict:
        return {k[len('partition-'):]: v for k, v in self.options.items() if k.startswith('partition-')}

    def set(self, key: str, value) -> bool:
        """Set ``key`` (replacing its line in place, or appending one); ``None`` removes it.
        Returns whether the text changed."""
        key = key.lower()
        if value is not None:
            value = format_value(value)
            _check_option(key, value)
        before = self.render()
        kept = []
        done = False
        for line in self.lines:
            if line.kind == 'option' and line.key == key:
                if value is None or done:
                    continue
                if line.value != value:
                    ending = '\n' if line.raw.endswith('\n') else ''
                    line = ImapdLine('option', '%s: %s%s' % (key, value, ending), line.lineno, key, value)
                done = True
            kept.append(line)
        if value is not None and not done:
            if kept and not kept[-1].raw.endswith('\n'):
                last = kept[-1]
                kept[-1] = ImapdLine(last.kind, last.raw + '\n', last.lineno, last.key, last.value)
            kept.append(ImapdLine('option', '%s: %s\n' % (key, value), 0, key, value))
        self.lines = kept
        return self.render() != before

    def render(self) -> str:
        return ''.join(line.raw for line in self.lines)


def format_value(value) -> str:
    """A Python value as imapd.conf writes it: booleans as yes/no, lists space-separated."""
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, (list, tuple)):
        return ' '.join(format_value(v) for v in value)
    return str(value).strip(_SPACE)


def _check_option(key: str, value: str) -> None:
    if not key or _IMAPD_KEY.fullmatch(key) is None or key == '@':
        raise ValueError('invalid imapd.conf option name %r: use letters, digits, "-" and "_"' % key)
    if not value or '\n' in value or '\r' in value:
        raise ValueError('invalid value for imapd.conf option %r: it must be one non-empty line' % key)


def parse_imapd_lines(text: str, path: str = 'imapd.conf') -> tuple:
    """Return (ImapdConf, problems) without raising: syntax errors become problems."""
    lines = []
    problems = []
    seen = {}
    for lineno, raw in enumerate(_split_lines(text), 1):
        body = _body(raw)
        stripped = body.lstrip(_SPACE)
        if not stripped:
            lines.append(ImapdLine('blank', raw, lineno))
            continue
        if stripped.startswith('#'):
            lines.append(ImapdLine('comment', raw, lineno))
            continue
        key = _IMAPD_KEY.match(stripped).group(0)
        rest = stripped[len(key):]
        if not key or key == '@' or not rest.startswith(':'):
            problems.append(Problem(path, lineno, 'invalid option name: expected "key: value"'))
            lines.append(ImapdLine('comment', raw, lineno))
            continue
        value = rest[1:].strip(_SPACE)
        key = key.lower()
        if not value:
            problems.append(Problem(path, lineno, 'empty value for option %s' % key))
        elif key in seen:
            problems.append(Problem(path, lineno, 'option %s set twice (first on line %d)' % (key, seen[key])))
        else:
            seen[key] = lineno
        lines.append(ImapdLine('option', raw, lineno, key, value))
    return ImapdConf(lines, path), problems


def parse_imapd(text: str, path: str = 'imapd.conf') -> ImapdConf:
    """Parse imapd.conf text; raise ConfigError naming file and line of every syntax error."""
    conf, problems = parse_imapd_lines(text, path)
    if problems:
        raise ConfigError(problems)
    return conf


def render_imapd(options: dict, header: str = '') -> str:
    """A new imapd.conf from a mapping (in its order), after an optional comment header."""
    out = []
    for line in header.splitlines():
        out.append(line if line.startswith('#') else ('# ' + line).rstrip())
    for key, value in options.items():
        text = format_value(value)
        _check_option(key, text)
        out.append('%s: %s' % (key, text))
    return '\n'.join(out) + '\n'


# ---------------------------------------------------------------------------------------------
# cyrus.conf
# ---------------------------------------------------------------------------------------------

class Entry:
    """One ``name key=value ...`` entry of a cyrus.conf section; ``args`` is a list of
    (key, value, quoted)."""

    __slots__ = ('section', 'name', 'args', 'lineno', 'raw')

    def __init__(self, section: str, name: str, args: list, lineno: int = 0, raw: str = ''):
        self.section = section
        self.name = name
        self.args = args
        self.lineno = lineno
        self.raw = raw

    def get(self, key: str, default=None):
        for arg_key, value, dummy in self.args:
            if arg_key == key:
                return value
        return default

    @property
    def argv(self) -> list:
        return self.get('cmd', '').split()

    def as_dict(self) -> dict:
        result = {'section': self.section, 'name': self.name, 'line': self.lineno}
        result.update((k, v) for k, v, dummy in self.args)
        return result

    def render(self) -> str:
        parts = [self.name]
        for key, value, quoted in self.args:
            parts.append('%s="%s"' % (key, value) if quoted or _needs_quotes(value) else '%s=%s' % (key, value))
        return '\t'.join(parts[:1]) + ('\t' + ' '.join(parts[1:]) if len(parts) > 1 else '')


def _needs_quotes(value: str) -> bool:
    return value == '' or any(c in value for c in _SPACE)


class CyrusConf:
    """A parsed cyrus.conf: ``chunks`` is the text as a list of raw strings and Entry objects,
    so that rendering an unchanged file gives back its exact bytes."""

    def __init__(self, chunks: list, path: str = 'cyrus.conf'):
        self.chunks = chunks
        self.path = path

    @property
    def entries(self) -> list:
        return [c for c in self.chunks if isinstance(c, Entry)]

    def section(self, name: str) -> list:
        return [e for e in self.entries if e.section == name]

    def find(self, section: str, name: str):
        for entry in self.section(section):
            if entry.name == name:
                return entry
        return None

    def render(self) -> str:
        out = []
        for chunk in self.chunks:
            if isinstance(chunk, Entry):
                out.append(chunk.raw if chunk.raw else chunk.render() + '\n')
            else:
                out.append(chunk)
        return ''.join(out)


def _split_args(text: str, path: str, lineno: int) -> tuple:
    """masterconf.c split_args: ``key=value`` or ``key="value"`` (no escapes)."""
    args = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in _SPACE:
            pos += 1
        if pos >= len(text):
            return args, None
        key = _ALNUM.match(text, pos).group(0)
        pos += len(key)
        if pos >= len(text) or text[pos] != '=':
            bad = text[pos] if pos < len(text) else 'end of line'
            return args, Problem(path, lineno, "bad character '%s' in argument" % bad)
        pos += 1
        if pos < len(text) and text[pos] == '"':
            end = text.find('"', pos + 1)
            if end < 0:
                return args, Problem(path, lineno, 'missing closing " in argument %s' % key)
            args.append((key, text[pos + 1:end], True))
            pos = end + 1
        else:
            end = pos
            while end < len(text) and text[end] not in _SPACE:
                end += 1
            args.append((key, text[pos:end], False))
            pos = end + 1


def parse_cyrus_lines(text: str, path: str = 'cyrus.conf') -> tuple:
    """Return (CyrusConf, problems) without raising: syntax errors become problems."""
    chunks = []
    problems = []
    section = None
    opened_at = 0
    for lineno, raw in enumerate(_split_lines(text), 1):
        body = _body(raw).lstrip(_SPACE)
        code = body.split('#', 1)[0]
        if not code.strip(_SPACE):
            chunks.append(raw)
            continue
        if section is None:
            name = _ALNUM.match(code).group(0)
            rest = code[len(name):]
            level = rest.count('{') - rest.count('}')
            if name.upper() in SECTIONS and level == 1 and rest.strip(_SPACE) == '{':
                section = name.upper()
                opened_at = lineno
            else:
                problems.append(Problem(path, lineno, 'text outside a section: expected START, SERVICES, '
                                                      'EVENTS or DAEMON followed by "{"'))
            chunks.append(raw)
            continue
        if code.startswith('}'):
            if code.strip(_SPACE) != '}':
                problems.append(Problem(path, lineno, 'text after the "}" closing section %s' % section))
            section = None
            chunks.append(raw)
            continue
        name = _ALNUM.match(code).group(0)
        rest = code[len(name):]
        if not name or (rest and rest[0] not in _SPACE):
            bad = rest[0] if rest else code[0]
            problems.append(Problem(path, lineno, "bad character '%s' in name" % bad))
            chunks.append(raw)
            continue
        args, problem = _split_args(rest, path, lineno)
        if problem is not None:
            problems.append(problem)
            chunks.append(raw)
            continue
        chunks.append(Entry(section, name, args, lineno, raw))
    if section is not None:
        problems.append(Problem(path, opened_at, 'section %s is not closed with "}"' % section))
    return CyrusConf(chunks, path), problems


def parse_cyrus(text: str, path: str = 'cyrus.conf') -> CyrusConf:
    """Parse cyrus.conf text; raise ConfigError naming file and line of every syntax error."""
    conf, problems = parse_cyrus_lines(text, path)
    if problems:
        raise ConfigError(problems)
    return conf


def render_cyrus(sections: dict, header: str = '') -> str:
    """A new cyrus.conf from ``{section: {name: {key: value}}}`` (dict order kept)."""
    out = [line if line.startswith('#') else ('# ' + line).rstrip() for line in header.splitlines()]
    for section, entries in sections.items():
        if section not in SECTIONS:
            raise ValueError('unknown cyrus.conf section %r: use one of %s' % (section, ', '.join(SECTIONS)))
        if out:
            out.append('')
        out.append('%s {' % section)
        for name, args in entries.items():
            if not name or _ALNUM.fullmatch(name) is None:
                raise ValueError('invalid cyrus.conf entry name %r in %s: use letters and digits' % (name, section))
            for key, value in args.items():
                value = str(value)
                if not key or _ALNUM.fullmatch(key) is None:
                    raise ValueError('invalid argument name %r in %s entry %s' % (key, section, name))
                if '"' in value or '#' in value or '\n' in value:
                    raise ValueError('value of %s in %s entry %s cannot hold ", # or a newline' % (key, section, name))
            entry = Entry(section, name, [(k, str(v), k == 'cmd' or _needs_quotes(str(v))) for k, v in args.items()])
            out.append('  ' + entry.render())
        out.append('}')
    return '\n'.join(out) + '\n'


def parse_listen(listen: str) -> dict:
    """Split a ``listen=`` value as master.c parse_inet_listen does.

    Returns ``{'kind': 'unix', 'path': ...}`` or ``{'kind': 'inet', 'host': h or None,
    'port': p or None}``; raises ValueError for a value master refuses."""
    if listen.startswith('/'):
        return {'kind': 'unix', 'path': listen}
    if listen.startswith('['):
        end = listen.rfind(']')
        if end < 0:
            raise ValueError('listen=%s has "[" without "]"' % listen)
        after = listen[end + 1:]
        if after.startswith(':') and len(after) > 1:
            return {'kind': 'inet', 'host': listen[1:end], 'port': after[1:]}
        if not after:
            return {'kind': 'inet', 'host': listen[1:end], 'port': None}
        raise ValueError('listen=%s: expected "[address]:port"' % listen)
    colon = listen.rfind(':')
    if colon >= 0:
        if colon == len(listen) - 1:
            raise ValueError('listen=%s ends with ":" and no port' % listen)
        return {'kind': 'inet', 'host': listen[:colon], 'port': listen[colon + 1:]}
    return {'kind': 'inet', 'host': None, 'port': listen}


def murder_role(imapd: ImapdConf, cyrus: CyrusConf = None) -> str:
    """mupdate, backend, frontend or standalone, as Cyrus derives it from the pair."""
    if cyrus is not None:
        for entry in cyrus.section('SERVICES'):
            argv = entry.argv
            if argv and os.path.basename(argv[0]) == 'mupdate' and '-m' in argv[1:]:
                return 'mupdate'
    if imapd.get('mupdate_server'):
        return 'backend' if imapd.get('proxyservers') else 'frontend'
    return 'standalone'
