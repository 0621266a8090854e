# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cyrus rolling replication of one instance, as the node sees it: its role, its peer, its sync_client,
the backlog of its sync log, and the state of every mailbox (read with ``mbexamine``).

What this reads (Cyrus 3.6):

- imapd.conf: ``sync_log`` (a Cyrus switch), ``sync_host``, ``sync_port``, ``sync_authname``,
  ``sync_log_channels`` (space separated; ``""`` is the default channel), ``<channel>_sync_host`` and
  ``<channel>_sync_port``, ``sync_log_chain``, ``sync_repeat_interval``. ``sync_password`` is never read.
- cyrus.conf: a DAEMON (or START) entry running ``sync_client ... -r`` (rolling), a SERVICES entry
  running ``sync_server`` (a replica).
- The sync log of a channel, ``<configdirectory>/sync/log`` (default channel) or
  ``<configdirectory>/sync/<channel>/log``: one entry per line. The rolling sync_client renames ``log``
  to ``log-run`` for the batch it works on, and a failed batch stays there until a run succeeds;
  ``log-<anything else>`` (``log-<PID>`` of older versions and failed one-shot runs) is replayed by
  nobody: ``sync_client -f FILE`` must replay it.
- The lag record ``<state_dir>/replication-lag-<instance>.json`` a replica keeps (the replication role's
  ``lag`` entry point writes it): the last marker the replica was seen to hold, which dates its last
  known sync (a JSON object with ``instance``, ``measured_at``, ``seen_at``, ``caught_up`` and
  ``last_caught_up``).
- ``mbexamine -C <imapd.conf> -u 4294967295 '*'``: every mailbox's header without its messages
  (no message has that UID). It prints ``Examining NAME...`` before opening a mailbox; a mailbox that
  cannot be opened ends the listing there, with exit status 0.

The instance's paths and the ``-C`` matching are ``cyrusinstance``'s, the config parsers
``cyrusconf``'s. Standard library only (managed node, Python 3.9+).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import stat
import time

from ansible_collections.cyrus.ha.plugins.module_utils import cyrusconf, cyrusinstance, procfs, replicacompare
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusinstance import BINDIRS, CONFIG_ROOT, find_bindir
from ansible_collections.cyrus.ha.plugins.module_utils.runner import ProcessRunner

SYNC_CLIENT = 'sync_client'
SYNC_SERVER = 'sync_server'
MBEXAMINE = 'mbexamine'
# No message has this UID: mbexamine prints every mailbox's header and none of its messages.
NO_SUCH_UID = '4294967295'
# sync_client's getopt string in Cyrus 3.6: the options that take an argument.
SYNC_CLIENT_ARG_OPTIONS = 'CSFfwtdnAp'
LOG = 'log'
LOG_RUN = 'log-run'
# The number of times a channel is read again when sync_client renames a file under our feet.
RESCANS = 5
# Where a replica keeps the last measured lag of its master (the replication role's lag entry point).
STATE_DIR = '/var/lib/cyrus-ha'
LAG_RECORD = 'replication-lag-%s.json'
LAG_RECORD_MAX = 65536
# The mailbox fields mbexamine gives and the comparisons use.
FIELDS = ('uniqueid', 'uidvalidity', 'uidnext', 'highestmodseq', 'messages')


class ReplicationError(Exception):
    """What stops reading an instance's replication state; ``msg`` names the instance or file and the cause."""

    def __init__(self, msg: str):
        super().__init__(msg)
        self.msg = msg


# ---------------------------------------------------------------------------------------------
# the configuration pair
# ---------------------------------------------------------------------------------------------

def switch_value(value):
    """A Cyrus switch as libconfig reads it (case-sensitive, by its first letters): True, False, or None
    when Cyrus refuses the value (or it is absent)."""
    if not value:
        return None
    if value[0] in '0nf' or value.startswith('of'):
        return False
    if value[0] in '1yt' or value.startswith('on'):
        return True
    return None


def peer_address(host, port) -> str | None:
    """``host`` or ``host:port`` (``[host]:port`` for an IPv6 address); None without a host."""
    if not host:
        return None
    if not port:
        return host
    return '[%s]:%s' % (host, port) if ':' in host else '%s:%s' % (host, port)


def parse_channels(value) -> list:
    """The channels of ``sync_log_channels``: names in their order, ``''`` for the default channel
    (written ``""``); without the option, the default channel only."""
    if value is None:
        return ['']
    channels = []
    for word in value.split():
        name = '' if word == '""' else word
        if name not in channels:
            channels.append(name)
    return channels or ['']


def short_options(argv: list, with_argument: str = SYNC_CLIENT_ARG_OPTIONS) -> dict:
    """The short options of a command line as getopt reads them: {letter: value or True}
    (``-r``, ``-vr``, ``-n chan``, ``-nchan``); parsing stops at ``--`` or the first operand."""
    found = {}
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg == '--' or not arg.startswith('-') or arg == '-':
            break
        pos = 1
        while pos < len(arg):
            letter = arg[pos]
            if letter in with_argument:
                if pos + 1 < len(arg):
                    found[letter] = arg[pos + 1:]
                elif index + 1 < len(argv):
                    index += 1
                    found[letter] = argv[index]
                break
            found[letter] = True
            pos += 1
        index += 1
    return found


def is_rolling_client(argv: list) -> bool:
    """Whether a command line runs a rolling sync_client (``sync_client ... -r``)."""
    return bool(argv) and os.path.basename(argv[0]) == SYNC_CLIENT and short_options(argv).get('r') is True


def _read_pair(name: str, config_root: str) -> tuple:
    if not cyrusinstance.valid_name(name):
        raise ReplicationError('instance %r: not a valid instance name (a lower-case letter, then up to 30 of '
                               'a-z 0-9 _ -)' % (name,))
    paths = cyrusinstance.paths(name, config_root)
    texts = []
    for key in ('imapd_conf', 'cyrus_conf'):
        path = paths[key]
        try:
            texts.append(cyrusconf.read_config(path))
        except FileNotFoundError:
            raise ReplicationError('instance %s: %s does not exist: is %s the instance\'s name, and %s its '
                                   'config root?' % (name, path, name, config_root)) from None
        except cyrusconf.FileRefused as exc:
            raise ReplicationError('instance %s: %s' % (name, exc)) from None
        except OSError as exc:
            raise ReplicationError('instance %s: %s cannot be read: %s' % (name, path, exc.strerror or exc)) from None
    return paths, texts[0], texts[1]


# ---------------------------------------------------------------------------------------------
# the sync log
# ---------------------------------------------------------------------------------------------

def channel_dir(configdirectory: str, channel: str) -> str:
    """The sync log directory of a channel (``''``: the default channel)."""
    base = os.path.join(configdirectory, 'sync')
    return os.path.join(base, channel) if channel else base


def is_backlog_file(name: str) -> bool:
    return name == LOG or name.startswith(LOG + '-')


def _count(path: str) -> tuple:
    """(bytes, entries, mtime) of a regular file, never blocking on a FIFO or following a symlink.
    Raises FileNotFoundError when it is gone, OSError when it cannot be read, ValueError when it is not a file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0))
    with os.fdopen(fd, 'rb') as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError('not a regular file')
        entries = 0
        size = 0
        for line in handle:
            size += len(line)
            if line.strip():
                entries += 1
    return size, entries, info.st_mtime


def scan_channel(directory: str, channel: str, now: float) -> tuple:
    """(files, problems) of one channel's directory: each backlog file with its channel, path, bytes,
    entries (non-blank lines) and age (seconds since its last write). A missing directory holds nothing.
    Read again when a file is renamed while it is read (the rolling sync_client renames ``log``)."""
    problems = []
    for dummy in range(RESCANS):
        try:
            names = sorted(entry.name for entry in os.scandir(directory)
                           if is_backlog_file(entry.name) and not entry.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            return [], ['%s: cannot be read: %s' % (directory, exc.strerror or exc)]
        files = []
        problems = []
        renamed = False
        for name in names:
            path = os.path.join(directory, name)
            try:
                size, entries, mtime = _count(path)
            except FileNotFoundError:
                renamed = True
                break
            except (OSError, ValueError) as exc:
                problems.append('%s: cannot be read: %s' % (path, getattr(exc, 'strerror', None) or exc))
                continue
            files.append({'channel': channel, 'file': path, 'bytes': size, 'entries': entries,
                          'age': max(0, int(now - mtime))})
        if not renamed:
            return files, problems
    return [], problems + ['%s: its files kept changing while read (%d tries): backlog unknown' % (directory, RESCANS)]


def backlog(configdirectory, channels: list, now: float = None) -> dict:
    """The sync log backlog of every channel: the configured ones and any other channel directory found
    under ``<configdirectory>/sync`` (a channel dropped from the config with entries left).

    {bytes, entries, files: [{channel, file, bytes, entries, age}], leftovers: [paths of log-* other
    than log-run], oldest_age (0 without files), complete (false when something could not be read),
    problems}."""
    now = time.time() if now is None else now
    result = {'bytes': 0, 'entries': 0, 'files': [], 'leftovers': [], 'oldest_age': 0, 'complete': True,
              'problems': []}
    if not configdirectory:
        result.update(complete=False, problems=['configdirectory is not set: the sync log cannot be found'])
        return result
    wanted = list(channels)
    base = channel_dir(configdirectory, '')
    try:
        found = sorted(e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False))
    except OSError:
        found = []      # scan_channel reports an unreadable base below
    for name in [''] + found:
        if name not in wanted:
            wanted.append(name)
    for channel in wanted:
        if channel and (channel in ('.', '..') or '/' in channel):
            result['problems'].append('sync_log_channels: %r is not a channel directory name: skipped' % channel)
            result['complete'] = False
            continue
        files, problems = scan_channel(channel_dir(configdirectory, channel), channel, now)
        result['files'].extend(files)
        result['problems'].extend(problems)
    result['files'].sort(key=lambda f: (f['channel'], f['file']))
    result['bytes'] = sum(f['bytes'] for f in result['files'])
    result['entries'] = sum(f['entries'] for f in result['files'])
    result['leftovers'] = [f['file'] for f in result['files']
                           if os.path.basename(f['file']) not in (LOG, LOG_RUN)]
    result['oldest_age'] = max([f['age'] for f in result['files']], default=0)
    if result['problems']:
        result['complete'] = False
    return result


# ---------------------------------------------------------------------------------------------
# the last known sync
# ---------------------------------------------------------------------------------------------

def lag_record_path(name: str, state_dir: str = STATE_DIR) -> str:
    return os.path.join(state_dir, LAG_RECORD % name)


def utc_text(epoch: float) -> str:
    """An epoch time as ISO 8601 UTC with milliseconds (``2026-12-03T21:00:00.123Z``)."""
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return stamp.isoformat(timespec='milliseconds').replace('+00:00', 'Z')


def _epoch(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e11


def read_lag_record(path: str, name: str) -> tuple:
    """(found, last caught-up measurement {marked_at, seen_at} or None, problem or None) of a replica's lag
    record. A missing record is no problem: no lag was measured on this node."""
    try:
        with open(path, 'rb') as handle:
            raw = handle.read(LAG_RECORD_MAX + 1)
    except FileNotFoundError:
        return False, None, None
    except OSError as exc:
        return True, None, '%s: cannot be read: %s' % (path, exc.strerror or exc)
    if len(raw) > LAG_RECORD_MAX:
        return True, None, '%s: larger than %d bytes: not a lag record' % (path, LAG_RECORD_MAX)
    try:
        data = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, ValueError):
        return True, None, '%s: not JSON: not a lag record' % path
    if not isinstance(data, dict) or data.get('instance') != name:
        return True, None, '%s: not a lag record of instance %s' % (path, name)
    if data.get('caught_up') is True and _epoch(data.get('measured_at')) and _epoch(data.get('seen_at')):
        return True, {'marked_at': data['measured_at'], 'seen_at': data['seen_at']}, None
    last = data.get('last_caught_up')
    if isinstance(last, dict) and _epoch(last.get('marked_at')) and _epoch(last.get('seen_at')):
        return True, {'marked_at': last['marked_at'], 'seen_at': last['seen_at']}, None
    return True, None, None


def last_sync(name: str, role: str, chained: bool, client_running: bool, pending: dict, state_dir: str,
              now: float) -> dict:
    """When the replica last held every change of its master (see the module's RETURN).

    On a master (not chained) whose rolling client runs and whose sync log holds nothing (read completely), the
    replica holds every logged change now; that says nothing of a replica that never had its first sync.
    A replica, and a chained node (a replica first), are dated by their own lag record.
    Otherwise, on the node that keeps the lag record (the replica), the last marker it was seen to hold:
    every change the master acknowledged before the marker was written (``through``) was on the replica
    when it was seen (``at``)."""
    result = {'at': None, 'through': None, 'age': None, 'source': None, 'record': None, 'problem': None,
              'at_epoch': None, 'through_epoch': None}
    if role == 'master' and not chained:
        if client_running and pending['complete'] and not pending['bytes'] and not pending['entries']:
            result.update(at=utc_text(now), through=utc_text(now), age=0.0, source='backlog', at_epoch=round(now, 3),
                          through_epoch=round(now, 3))
        return result       # a lag record here would be of a time this node was the replica: not read
    path = lag_record_path(name, state_dir)
    found, last, problem = read_lag_record(path, name)
    result.update(record=path if found else None, problem=problem)
    if last is not None:
        result.update(at=utc_text(last['seen_at']), through=utc_text(last['marked_at']),
                      age=round(max(0.0, now - last['seen_at']), 1), source='marker', at_epoch=last['seen_at'],
                      through_epoch=last['marked_at'])
    return result


# ---------------------------------------------------------------------------------------------
# the instance
# ---------------------------------------------------------------------------------------------

def sync_client_pids(imapd_conf: str, proc_root: str = procfs.PROC) -> list:
    """The live rolling sync_clients of this node carrying ``-C imapd_conf``."""
    return [pid for pid in cyrusinstance.instance_pids(imapd_conf, proc_root)
            if is_rolling_client(procfs.cmdline(pid, proc_root))]


def describe(name: str, config_root: str = CONFIG_ROOT, proc_root: str = procfs.PROC, now: float = None,
             state_dir: str = STATE_DIR) -> dict:
    """The replication state of instance ``name`` (see the module's RETURN for every key).

    Raises ReplicationError for an invalid name or a config file that is missing or cannot be read;
    syntax errors of the files are reported in ``problems``."""
    paths, imapd_text, cyrus_text = _read_pair(name, config_root)
    imapd, found = cyrusconf.parse_imapd_lines(imapd_text, paths['imapd_conf'])
    problems = [str(p) for p in found]
    cyrus, found = cyrusconf.parse_cyrus_lines(cyrus_text, paths['cyrus_conf'])
    problems.extend(str(p) for p in found)

    switches = {}
    for key in ('sync_log', 'sync_log_chain'):
        value = imapd.get(key)
        switches[key] = bool(switch_value(value))
        if value is not None and switch_value(value) is None:
            problems.append('%s:%d: %s: %r is not a switch (Cyrus refuses it; use 1/yes/on/true or 0/no/off/false)'
                            % (paths['imapd_conf'], imapd.lineno(key), key, value))
    channels = parse_channels(imapd.get('sync_log_channels'))
    peer = peer_address(imapd.get('sync_host'), imapd.get('sync_port'))
    channel_peers = {}
    for channel in channels:
        host = channel and imapd.get('%s_sync_host' % channel)
        if host:
            channel_peers[channel] = peer_address(host, imapd.get('%s_sync_port' % channel) or imapd.get('sync_port'))

    clients = [e.name for section in ('DAEMON', 'START') for e in cyrus.section(section) if is_rolling_client(e.argv)]
    servers = [e.name for e in cyrus.section('SERVICES') if e.argv and os.path.basename(e.argv[0]) == SYNC_SERVER]
    pids = sync_client_pids(paths['imapd_conf'], proc_root)

    is_master = switches['sync_log'] and bool(peer or channel_peers)
    is_replica = bool(servers)
    configdirectory = imapd.get('configdirectory')
    now = time.time() if now is None else now
    role = 'master' if is_master else ('replica' if is_replica else 'none')
    pending = backlog(configdirectory, channels, now)
    return {
        'instance': name,
        'imapd_conf': paths['imapd_conf'],
        'cyrus_conf': paths['cyrus_conf'],
        'configdirectory': configdirectory,
        'role': role,
        'chained': is_master and is_replica,
        'sync_log': switches['sync_log'],
        'sync_log_chain': switches['sync_log_chain'],
        'peer': peer,
        'channel_peers': channel_peers,
        'authname': imapd.get('sync_authname'),
        'channels': channels,
        'repeat_interval': imapd.get('sync_repeat_interval'),
        'sync_client': {'configured': bool(clients), 'entries': clients, 'running': bool(pids), 'pids': pids},
        'sync_server': {'configured': is_replica, 'entries': servers},
        'backlog': pending,
        'last_sync': last_sync(name, role, is_master and is_replica, bool(pids), pending, state_dir, now),
        'problems': problems,
    }


# ---------------------------------------------------------------------------------------------
# mailboxes (mbexamine)
# ---------------------------------------------------------------------------------------------

_HEADER_END = '... Mailbox Header Info:'
_EXAMINING = 'Examining '
# (field, regular expression, group) over the lines of one mailbox's block
_PATTERNS = (
    ('uniqueid', re.compile(r'^\s*Unique ID:[ \t]*(\S+)\s*$'), 1),
    ('uidvalidity', re.compile(r'^\s*UIDValidity:\s*(\d+)\s+Last UID:\s*\d+\s*$'), 1),
    ('last_uid', re.compile(r'^\s*UIDValidity:\s*\d+\s+Last UID:\s*(\d+)\s*$'), 1),
    ('messages', re.compile(r'^\s*Number of Messages:\s*(\d+)\b'), 1),
    ('highestmodseq', re.compile(r'^\s*Highest Mod Sequence:\s*(\d+)\s*$'), 1),
)


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + '...')


def parse_block(lines: list) -> tuple:
    """(state, problem) of one mailbox's lines after its ``Examining`` line: state has every FIELDS key
    (None where the block does not say), problem is None or what is missing or contradictory."""
    values = {}
    missing_why = []
    for field, pattern, group in _PATTERNS:
        seen = {m.group(group) for m in (pattern.match(line) for line in lines) if m}
        if len(seen) == 1:
            values[field] = seen.pop()
        elif len(seen) > 1:
            missing_why.append('%s given twice with different values (%s)' % (field, ', '.join(sorted(seen))))
    state = {
        'uniqueid': values.get('uniqueid'),
        'uidvalidity': int(values['uidvalidity']) if 'uidvalidity' in values else None,
        'uidnext': int(values['last_uid']) + 1 if 'last_uid' in values else None,
        'highestmodseq': int(values['highestmodseq']) if 'highestmodseq' in values else None,
        'messages': int(values['messages']) if 'messages' in values else None,
    }
    absent = [f for f in FIELDS if state[f] is None]
    if absent:
        missing_why.insert(0, 'no %s in its mbexamine output' % ', '.join(absent))
    return state, ('; '.join(missing_why) or None)


def parse_mbexamine(text: str) -> dict:
    """The mailboxes of ``mbexamine -u 4294967295`` output: {'mailboxes': {name: state}, 'problems': [...],
    'complete': bool}.

    A mailbox whose block lacks a field keeps its name with None for what is unknown and ``problem``
    saying why (never dropped: a comparison must see it). ``complete`` is false when the listing
    stopped at a mailbox mbexamine could not open (it stops there with status 0) or the output holds
    text that is no mailbox block."""
    mailboxes = {}
    problems = []
    complete = True
    blocks = []             # [name, [lines], opened]
    lines = (text or '').splitlines()
    for index, line in enumerate(lines):
        opened = line.endswith(_HEADER_END)
        if line.startswith(_EXAMINING) and (opened or line.endswith('...')):
            body = line[len(_EXAMINING):-len(_HEADER_END) if opened else -3]
            # a mailbox that cannot be opened leaves "Examining NAME..." without a line end: the next
            # one (if the listing goes on) follows on the same line
            names = body.split('...' + _EXAMINING)
            for failed in names[:-1]:
                blocks.append([failed, [], False])
            blocks.append([names[-1], [], opened])
        elif blocks:
            blocks[-1][1].append(line)
        elif line.strip():
            problems.append('mbexamine output line %d is before any mailbox: %s' % (index + 1, _short(line)))
            complete = False
    for name, block, opened in blocks:
        if not opened:
            state = dict.fromkeys(FIELDS)
            problem = 'mbexamine could not open it (see the syslog of mbexamine)'
        else:
            state, problem = parse_block(block)
        if name in mailboxes:
            problem = '; '.join(p for p in (mailboxes[name].get('problem'), 'listed twice by mbexamine', problem) if p)
            state = dict(dict.fromkeys(FIELDS), problem=problem)
        elif problem:
            state['problem'] = problem
        mailboxes[name] = state
    for name, state in mailboxes.items():
        if state.get('problem'):
            problems.append('mailbox %s: %s' % (name, state['problem']))
    if blocks and not blocks[-1][2]:
        problems.append('mbexamine stopped at mailbox %s: the mailboxes after it in its listing were not examined'
                        % blocks[-1][0])
        complete = False
    return {'mailboxes': mailboxes, 'problems': problems, 'complete': complete}


def mbexamine_argv(imapd_conf: str, bindir: str) -> list:
    return [os.path.join(bindir, MBEXAMINE), '-C', imapd_conf, '-u', NO_SUCH_UID, '*']


def mailbox_states(imapd_conf: str, bindir, run) -> dict:
    """Every mailbox of the instance with its uniqueid, uidvalidity, uidnext, highestmodseq and messages,
    from ``mbexamine`` run through ``run(argv) -> (rc, stdout, stderr)``: see parse_mbexamine.

    Raises ReplicationError when Cyrus is not installed or mbexamine fails (its stderr in the message)."""
    if not bindir or not os.path.isfile(os.path.join(bindir, MBEXAMINE)):
        raise ReplicationError('%s not found in %s: install Cyrus (Debian: cyrus-common) on this node'
                               % (MBEXAMINE, bindir or 'any Cyrus bin directory'))
    argv = mbexamine_argv(imapd_conf, bindir)
    rc, out, err = run(argv)
    if rc != 0:
        detail = (err or '').strip() or (out or '').strip()[-400:] or 'no output'
        raise ReplicationError('%s -C %s failed (exit status %s): %s' % (argv[0], imapd_conf, rc, detail))
    return parse_mbexamine(out)


def gather(name: str, config_root: str = CONFIG_ROOT, with_mailboxes: bool = False, run=None, bindirs=BINDIRS,
           proc_root: str = procfs.PROC, now: float = None, state_dir: str = STATE_DIR) -> dict:
    """describe(), plus with ``with_mailboxes`` the keys ``mailboxes``, ``mailbox_problems`` and
    ``mailboxes_complete`` from mailbox_states() (mbexamine from the first of ``bindirs`` holding Cyrus,
    run through ``run``, a ProcessRunner by default). Raises ReplicationError."""
    result = describe(name, config_root, proc_root, now, state_dir)
    if with_mailboxes:
        states = mailbox_states(result['imapd_conf'], find_bindir(bindirs), run or ProcessRunner())
        result.update(mailboxes=states['mailboxes'], mailbox_problems=states['problems'],
                      mailboxes_complete=states['complete'])
    return result


def wait_to_hold(name: str, wanted, timeout: float, config_root: str = CONFIG_ROOT, run=None, bindirs=BINDIRS,
                 proc_root: str = procfs.PROC, interval: float = 0.2, clock=time.monotonic, sleep=time.sleep,
                 state_dir: str = STATE_DIR) -> dict:
    """gather(with_mailboxes) again and again until the instance holds everything ``wanted`` (a master's
    mailboxes, as gather reads them) holds: replicacompare.diverged(wanted, here) is empty. Gives up after
    ``timeout`` seconds. The result is the last gather() with ``caught_up`` (bool), ``waited`` (seconds
    from the first read to the read that held everything, or to giving up) and ``lacking`` (the diverged
    list of the last read). Raises ReplicationError, or replicacompare.ReplicationDataError for a
    ``wanted`` that is not a mapping of mailbox states."""
    replicacompare.mailboxes(wanted, 'master')      # refused before the first read
    started = clock()
    while True:
        result = gather(name, config_root, True, run, bindirs, proc_root, state_dir=state_dir)
        lacking = replicacompare.diverged(wanted, result['mailboxes'])
        waited = round(clock() - started, 3)
        if not lacking or waited >= timeout:
            result.update(caught_up=not lacking, waited=waited, lacking=lacking)
            return result
        sleep(min(interval, max(timeout - waited, 0)))
