# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mail traffic through a Murder's frontends, journalled as clients see it, and its invariants.

    python3 cyrus_ha_traffic.py run     --profile P.json --journal J.jsonl [--duration S]
    python3 cyrus_ha_traffic.py start   --profile P.json --dir D
    python3 cyrus_ha_traffic.py stop    --dir D [--timeout S]
    python3 cyrus_ha_traffic.py summary --journal J.jsonl
    python3 cyrus_ha_traffic.py check   --profile P.json --journal J.jsonl --backends JSON

run sends the traffic in the foreground until --duration ends or SIGTERM/SIGINT (then it stops sending,
lets the operations under way finish and retries the queued deliveries for the profile's `drain` s).
start runs it in the background (its own session; journal D/journal.jsonl, log D/traffic.log, pid
D/traffic.pid) and returns once the journal says it started (a generator already running there is left
as it is; the journal of one that ended is kept as D/journal-<its end time>.jsonl); stop ends it and
prints the summary;
summary reads a journal back; check reads every backend directly over IMAP and checks the invariants
(--backends: a JSON mapping of each backend's name to its instance's address; --port: its IMAPS port, 993).
The profile (JSON, mode 0600: it holds the users' passwords) is described in mailtraffic.py. Every
answer is one JSON object on stdout (changed, msg, ...); the exit status is 0 unless the action failed.
Python 3.9+, standard library only. The drill role installs it in the support directory
(/usr/local/lib/cyrus-ha) beside the collection's module_utils it imports (mailtraffic.py,
mailinvariants.py, imapcheck.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

try:
    from ansible_collections.cyrus.ha.plugins.module_utils import mailinvariants, mailtraffic
except ImportError:   # installed: the module_utils are beside this file, in the support directory
    import mailinvariants
    import mailtraffic


class Failed(Exception):
    """The action failed; the message says what and why."""


def answer(**result) -> None:
    sys.stdout.write(json.dumps(result, sort_keys=True) + '\n')


def read_profile(path: str) -> dict:
    """The profile, refused when others could read the passwords in it."""
    try:
        info = os.stat(path)
        with open(path, encoding='utf-8') as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise Failed(f'traffic profile {path} cannot be read: {exc}') from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise Failed(f'traffic profile {path} is mode {stat.S_IMODE(info.st_mode):04o}: it holds passwords, make it 0600')
    try:
        return mailtraffic.load_profile(data)
    except mailtraffic.ProfileError as exc:
        raise Failed(f'{path}: {exc}') from None


def paths(directory: str) -> dict:
    return {'journal': os.path.join(directory, 'journal.jsonl'), 'log': os.path.join(directory, 'traffic.log'),
            'pid': os.path.join(directory, 'traffic.pid'), 'profile': os.path.join(directory, 'profile.json')}


def running_pid(directory: str) -> int | None:
    """The pid of this directory's generator, when one runs (its command line names the journal)."""
    where = paths(directory)
    try:
        with open(where['pid'], encoding='ascii') as handle:
            pid = int(handle.read().strip() or 0)
        with open(f'/proc/{pid}/cmdline', 'rb') as handle:
            argv = handle.read().split(b'\0')
    except (OSError, ValueError):
        return None
    try:
        with open(f'/proc/{pid}/stat', 'rb') as handle:
            if handle.read().rsplit(b')', 1)[1].split()[0] == b'Z':
                return None
    except (OSError, IndexError):
        return None
    return pid if where['journal'].encode() in argv and b'run' in argv else None


def do_run(args) -> int:
    profile = read_profile(args.profile)
    if args.duration is not None:
        profile['duration'] = args.duration
    journal = mailtraffic.Journal(args.journal)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        result = mailtraffic.Traffic(profile, journal).run(should_stop=stop.is_set)
    finally:
        journal.close()
    answer(changed=True, msg='traffic stopped', **result)
    return 0


def do_start(args) -> int:
    directory = args.dir = os.path.abspath(args.dir)      # the generator runs from /
    args.profile = os.path.abspath(args.profile)
    where = paths(directory)
    read_profile(args.profile)
    pid = running_pid(directory)
    if pid:
        answer(changed=False, pid=pid, journal=where['journal'], msg=f'traffic already running as pid {pid}')
        return 0
    try:
        info = os.lstat(directory)
    except OSError as exc:
        raise Failed(f'{directory} cannot be used as the run directory: {exc.strerror}') from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Failed(f'{directory} must be a directory of this user that no one else can write to')
    if os.path.lexists(where['journal']):
        # a run that ended (or was killed) before: its journal is kept under its end time, and this run
        # starts a journal of its own
        kept = os.path.join(directory, time.strftime('journal-%Y%m%dT%H%M%SZ.jsonl',
                                                     time.gmtime(os.lstat(where['journal']).st_mtime)))
        os.replace(where['journal'], kept)
    log = os.open(where['log'], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o640)
    started = time.time()
    try:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), 'run', '--profile', args.profile,
                                 '--journal', where['journal']], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                close_fds=True, start_new_session=True, cwd='/')
    finally:
        os.close(log)
    tmp = where['pid'] + '.tmp'
    if os.path.lexists(tmp):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, 'w', encoding='ascii') as handle:
        handle.write(f'{proc.pid}\n')
    os.replace(tmp, where['pid'])
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failed(f'the traffic generator exited at once (status {proc.returncode}): see {where["log"]}')
        if os.path.exists(where['journal']) and any(
                r.get('op') == 'run' and r.get('outcome') == 'started' and r.get('t', 0) >= started - 1
                for r in mailtraffic.read_journal(where['journal'])):
            answer(changed=True, pid=proc.pid, journal=where['journal'], msg=f'traffic started as pid {proc.pid}')
            return 0
        time.sleep(0.1)
    proc.kill()
    raise Failed(f'the traffic generator did not start within {args.timeout} s: see {where["log"]}')


def do_stop(args) -> int:
    where = paths(args.dir)
    pid = running_pid(args.dir)
    killed = False
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + args.timeout
            while running_pid(args.dir) == pid and time.monotonic() < deadline:
                time.sleep(0.1)
            if running_pid(args.dir) == pid:
                os.kill(pid, signal.SIGKILL)
                killed = True
        except ProcessLookupError:
            pass                          # it ended on its own meanwhile
    if not os.path.exists(where['journal']):
        raise Failed(f'no traffic journal in {args.dir}: the traffic never ran there')
    summary = mailtraffic.summarize(mailtraffic.read_journal(where['journal']))
    msg = ('traffic stopped' if pid else 'traffic was not running') + (
        f' (killed after {args.timeout} s: it did not drain)' if killed else '')
    answer(changed=bool(pid), killed=killed, msg=msg, summary=summary)
    return 0


def do_summary(args) -> int:
    try:
        records = mailtraffic.read_journal(args.journal)
    except OSError as exc:
        raise Failed(f'traffic journal {args.journal} cannot be read: {exc}') from None
    answer(changed=False, msg='summary', summary=mailtraffic.summarize(records))
    return 0


def parse_backends(text: str, port: int) -> list[dict]:
    """--backends: a JSON mapping of each backend's name to the address its instance serves on."""
    try:
        backends = json.loads(text)
    except ValueError as exc:
        raise Failed(f'--backends must be a JSON mapping of backend name to address: {exc}') from None
    if not isinstance(backends, dict) or not backends:
        raise Failed('--backends must be a non-empty JSON mapping of backend name to address')
    for name, host in backends.items():
        if not name or not isinstance(host, str) or not host or any(c.isspace() or not c.isprintable() for c in host):
            raise Failed(f'--backends: the address of backend {name!r} must be a host name or an IP address, not {host!r}')
    return [{'name': name, 'host': host, 'port': port} for name, host in sorted(backends.items())]


def do_check(args) -> int:
    profile = read_profile(args.profile)
    backends = parse_backends(args.backends, args.port)
    try:
        records = mailtraffic.read_journal(args.journal)
    except OSError as exc:
        raise Failed(f'traffic journal {args.journal} cannot be read: {exc}') from None
    result = mailinvariants.check(records, backends, {u['name']: u['password'] for u in profile['users']},
                                  profile['tag'], profile['ca_path'], timeout=args.timeout)
    verdict = 'every invariant holds' if result['ok'] else (
        f'{len(result["violations"])} violation(s), {len(result["errors"])} backend(s) or user(s) not read')
    answer(changed=False, msg=verdict, **result)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    sub = parser.add_subparsers(dest='action', required=True)
    run = sub.add_parser('run')
    run.add_argument('--profile', required=True)
    run.add_argument('--journal', required=True)
    run.add_argument('--duration', type=float)
    start = sub.add_parser('start')
    start.add_argument('--profile', required=True)
    start.add_argument('--dir', required=True)
    start.add_argument('--timeout', type=float, default=30.0)
    stop = sub.add_parser('stop')
    stop.add_argument('--dir', required=True)
    stop.add_argument('--timeout', type=float, default=300.0)
    summary = sub.add_parser('summary')
    summary.add_argument('--journal', required=True)
    check = sub.add_parser('check')
    check.add_argument('--profile', required=True)
    check.add_argument('--journal', required=True)
    check.add_argument('--backends', required=True)
    check.add_argument('--port', type=int, default=993, choices=range(1, 65536), metavar='PORT')
    check.add_argument('--timeout', type=float, default=30.0)
    args = parser.parse_args(argv)
    if getattr(args, 'timeout', 1) <= 0:
        answer(changed=False, failed=True, msg=f'--timeout must be above 0, not {args.timeout}')
        return 1
    try:
        return {'run': do_run, 'start': do_start, 'stop': do_stop, 'summary': do_summary, 'check': do_check}[
            args.action](args)
    except Failed as exc:
        answer(changed=False, failed=True, msg=str(exc))
        return 1
    except OSError as exc:
        answer(changed=False, failed=True, msg=f'{args.action}: {exc.filename or ""}: {exc.strerror or exc}')
        return 1


if __name__ == '__main__':
    sys.exit(main())
