# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The invariants of a traffic run (mailtraffic.py), checked by reading the backends directly over IMAP.

The journal says what the site acknowledged; the backends say what they hold. Each user logs in on
every backend directly (not through a frontend: the check must see where the mail really is), EXAMINEs
the INBOX and FETCHes every message of the run (its Message-ID carries the run's tag). Then:

- ``acknowledged-present``: every delivery and APPEND the site acknowledged is there;
- ``exactly-once``: none of them is there twice, and nothing the site did not acknowledge (a delivery
  still queued or refused, an APPEND whose answer was lost) is there more than once;
- ``byte-for-byte``: what is there is what was acknowledged (SHA-256 of the whole message);
- ``uid-stable``: an acknowledged APPEND's UID (its APPENDUID answer) still names that message, within an
  unchanged UIDVALIDITY (``uidvalidity-kept``): a UID reused or a UIDVALIDITY changed makes every
  client's cache lie or start over;
- ``mailbox-once``: a user's INBOX exists on one backend only (by name, and by its unique id where the
  server tells it: RFC 8474 MAILBOXID);
- ``flag-kept``: a flag change the site acknowledged is still there;
- ``no-corrupt-read``: no read during the run returned an acknowledged message changed.

And of the Murder's mailbox lists, as each running instance's mailboxes.db holds them (``mupdate_list``,
from the ``cyrus.ha.cyrus_facts`` of every host with ``mailbox_lists``):

- ``mupdate-list``: the mupdate master's list is the union of the backends' lists, each mailbox placed
  on the backend that holds it; every frontend's list is the master's; no mailbox is held by two
  backends (by name, or by unique id under two names).

Python 3.9+, standard library only.
"""

from __future__ import annotations

import imaplib
import re

try:
    from ansible_collections.cyrus.ha.plugins.module_utils.imapcheck import CheckError, Imap, stored_digests
    from ansible_collections.cyrus.ha.plugins.module_utils.mailtraffic import message_id_of
except ImportError:   # a standalone script's copy, beside them in the support directory
    from imapcheck import CheckError, Imap, stored_digests
    from mailtraffic import message_id_of

INVARIANTS = ('acknowledged-present', 'exactly-once', 'byte-for-byte', 'uid-stable', 'uidvalidity-kept',
              'mailbox-once', 'flag-kept', 'no-corrupt-read')
_UID = re.compile(rb'\bUID (\d+)')
_FLAGS = re.compile(rb'\bFLAGS \(([^)]*)\)')
_MAILBOXID = re.compile(rb'MAILBOXID \(([^)]+)\)')
_UIDVALIDITY = re.compile(rb'UIDVALIDITY (\d+)')


MUPDATE_INVARIANT = 'mupdate-list'
# mailboxes.db entries that are not a live mailbox on both sides: d a tombstone (Cyrus 3 keeps one per deleted
# mailbox), i an intermediate folder (a name's parent made implicitly), x a name reserved while it is made
_NOT_LIVE = set('dix')


def _live(mailboxes: dict) -> dict:
    return {name: entry for name, entry in mailboxes.items()
            if isinstance(entry, dict) and not (_NOT_LIVE & set(str(entry.get('mbtype') or '')))}


def _murder_lists(hosts: dict) -> tuple:
    """The running instances of a Murder by role from {host: ansible_facts.cyrus}: ({'mupdate': [...],
    'backend': [...], 'frontend': [...]}, errors). Each item is {host, instance, servername, mailboxes}."""
    found = {'mupdate': [], 'backend': [], 'frontend': []}
    errors = []
    for host, facts in sorted(hosts.items()):
        instances = (facts or {}).get('instances') if isinstance(facts, dict) else None
        if not isinstance(instances, dict):
            errors.append(f'{host}: no Cyrus facts (cyrus.ha.cyrus_facts with mailbox_lists: true)')
            continue
        for name, instance in sorted(instances.items()):
            if not isinstance(instance, dict):
                errors.append(f'{host}: the facts of instance {name} are not a mapping')
                continue
            role = instance.get('murder_role')
            if role not in found or not instance.get('running'):
                continue
            if not isinstance(instance.get('servername'), str) or not instance['servername']:
                errors.append(f'{host}: instance {name} runs as a {role} without a servername')
                continue
            if instance.get('mailboxes_error'):
                errors.append(f'{host}: the mailbox list of instance {name} could not be read: {instance["mailboxes_error"]}')
                continue
            if not isinstance(instance.get('mailboxes'), dict):
                errors.append(f'{host}: instance {name} runs and its mailbox list was not gathered (mailbox_lists: true)')
                continue
            found[role].append({'host': host, 'instance': name, 'servername': instance.get('servername'),
                                'mailboxes': _live(instance['mailboxes'])})
    return found, errors


def _server_of(entry: dict) -> str:
    """The server part of a mupdate entry's location (``server`` may carry ``!partition``)."""
    return str(entry.get('server') or '').split('!', 1)[0]


def mupdate_list(hosts: dict, limit: int = 20) -> dict:
    """The mupdate-list invariant of a Murder, from {host: ansible_facts.cyrus} of every host that can run
    one of its instances (mailbox lists gathered). Returns {ok, violations, errors, checked}; each
    violation names the mailbox, where it is and where it was expected. At most ``limit`` violations of
    one kind are listed (their count is in ``checked``)."""
    found, errors = _murder_lists(hosts)
    violations: list[dict] = []
    counts: dict[str, int] = {}

    def violate(kind: str, mailbox: str, detail: str) -> None:
        counts[kind] = counts.get(kind, 0) + 1
        if counts[kind] <= limit:
            violations.append({'invariant': MUPDATE_INVARIANT, 'kind': kind, 'mailbox': mailbox, 'detail': detail})

    if len(found['mupdate']) != 1:
        where = ', '.join(f'{m["instance"]} on {m["host"]}' for m in found['mupdate']) or 'none'
        errors.append(f'expected one running mupdate master, found {len(found["mupdate"])} ({where})')
    by_server: dict[str, dict] = {}
    for backend in found['backend']:
        other = by_server.get(backend['servername'])
        if other is not None:
            violate('two-masters', '*', f'backend {backend["servername"]} runs twice: instance {other["instance"]} on '
                                        f'{other["host"]} and instance {backend["instance"]} on {backend["host"]}')
            continue
        by_server[backend['servername']] = backend
    union: dict[str, str] = {}
    ids: dict[str, tuple] = {}
    for server, backend in sorted(by_server.items()):
        for name, entry in backend['mailboxes'].items():
            if name in union:
                violate('held-twice', name, f'{name} is held by backend {union[name]} and by backend {server}')
                continue
            union[name] = server
            uniqueid = entry.get('uniqueid')
            if uniqueid:
                if uniqueid in ids:
                    violate('held-twice', name, f'{name} on {server} has the unique id {uniqueid} of {ids[uniqueid][0]} '
                                                f'on {ids[uniqueid][1]}')
                else:
                    ids[uniqueid] = (name, server)
    checked = {'backends': sorted(by_server), 'frontends': sorted(f'{f["instance"]}@{f["host"]}' for f in found['frontend']),
               'mailboxes': len(union)}
    if len(found['mupdate']) == 1:
        master = found['mupdate'][0]
        listed = {name: _server_of(entry) for name, entry in master['mailboxes'].items()}
        checked['mupdate_master'] = f'{master["instance"]}@{master["host"]}'
        checked['mupdate_mailboxes'] = len(listed)
        for name, server in sorted(union.items()):
            if name not in listed:
                violate('missing-at-master', name, f'{name} is on backend {server} and not in the mupdate master\'s list')
            elif listed[name] != server:
                violate('misplaced', name, f'the mupdate master places {name} on {listed[name] or "no server"}, and '
                                           f'backend {server} holds it')
        for name, server in sorted(listed.items()):
            if name in union:
                continue
            if server in by_server:
                violate('not-on-backend', name, f'the mupdate master places {name} on {server}, which does not hold it')
            else:
                violate('unknown-backend', name, f'the mupdate master places {name} on {server or "no server"}, '
                                                 f'which no running backend read here is')
        for frontend in found['frontend']:
            theirs = {name: _server_of(entry) for name, entry in frontend['mailboxes'].items()}
            if theirs == listed:
                continue
            missing = sorted(set(listed) - set(theirs))
            extra = sorted(set(theirs) - set(listed))
            moved = sorted(n for n in set(theirs) & set(listed) if theirs[n] != listed[n])
            parts = [f'{label} {", ".join(names[:5])}{" ..." if len(names) > 5 else ""} ({len(names)})'
                     for label, names in (('lacks', missing), ('has besides', extra), ('places elsewhere', moved)) if names]
            violate('frontend-differs', (missing + extra + moved)[0],
                    f'frontend {frontend["instance"]} on {frontend["host"]} differs from the mupdate master: {"; ".join(parts)}')
    checked['violations_by_kind'] = dict(sorted(counts.items()))
    return {'ok': not violations and not errors, 'violations': violations, 'errors': errors, 'checked': checked}


def expectations(records: list[dict]) -> dict:
    """What the journal says the backends must hold: acknowledged messages (by Message-ID: user, digest,
    op, time, APPENDUID), messages of unknown fate (at most once), acknowledged flags, corrupt reads."""
    acked, maybe, flags, corrupt = {}, {}, [], []
    users = set()
    for r in records:
        op, outcome, message_id = r.get('op'), r.get('outcome'), r.get('message_id')
        if op in ('deliver', 'append', 'fetch', 'store', 'idle') and isinstance(r.get('user'), str) and r['user'] != '-':
            users.add(r['user'])
        if op in ('deliver', 'append') and isinstance(message_id, str):
            if outcome == 'ok':
                acked[message_id] = {'user': r.get('user'), 'sha256': r.get('sha256'), 'size': r.get('size'),
                                     'op': op, 't': r.get('t'), 'uidvalidity': r.get('uidvalidity'), 'uid': r.get('uid')}
                maybe.pop(message_id, None)
            elif message_id not in acked:
                maybe[message_id] = {'user': r.get('user'), 'sha256': r.get('sha256'), 'op': op, 'outcome': outcome}
        elif op == 'store' and outcome == 'ok' and isinstance(r.get('uid'), int):
            flags.append({'user': r.get('user'), 'message_id': r.get('message_id'), 'uid': r['uid'],
                          'flag': r.get('flag'), 't': r.get('t')})
        elif op == 'fetch' and r.get('kind') == 'corrupt':
            corrupt.append(r)
    return {'acked': acked, 'maybe': maybe, 'flags': flags, 'corrupt': corrupt, 'users': sorted(users)}


def _parse_fetch(data: list) -> list[dict]:
    """UID, FLAGS and body of each message in an imaplib FETCH answer."""
    out = []
    for index, item in enumerate(data):
        if not isinstance(item, tuple) or len(item) != 2:
            continue
        head = item[0]
        tail = data[index + 1] if index + 1 < len(data) and isinstance(data[index + 1], bytes) else b''
        uid = _UID.search(head) or _UID.search(tail)
        flags = _FLAGS.search(head) or _FLAGS.search(tail)
        out.append({'uid': int(uid.group(1)) if uid else None,
                    'flags': flags.group(1).decode('ascii', 'replace').split() if flags else [],
                    'body': item[1]})
    return out


def read_inbox(backend: dict, user: str, password: str, tag: str, ca_path: str | None, timeout: float) -> dict | None:
    """The run's messages in the user's INBOX on one backend ({message_id: [copies]}, uidvalidity,
    mailbox id), or None when the backend has no INBOX for the user. CheckError when the backend cannot
    be read."""
    session = Imap(backend['host'], backend.get('port', 993), user, password, ssl=True, timeout=timeout,
                   ca_path=ca_path)
    where = f'{user} on backend {backend["name"]} ({backend["host"]})'
    try:
        session.connect()
        conn = session.conn
        status, data = conn.select('INBOX', readonly=True)
        if status != 'OK':
            text = b' '.join(d for d in data if isinstance(d, bytes)).decode('utf-8', 'replace')
            if 'does not exist' in text.lower() or 'nonexistent' in text.lower():
                return None
            raise CheckError(f'EXAMINE INBOX as {where}: {status} {text}')
        uidvalidity = conn.untagged_responses.get('UIDVALIDITY', [None])[-1]
        uidvalidity = int(uidvalidity) if uidvalidity else None
        # RFC 8474's MAILBOXID (imaplib keeps the capabilities from before the login: just ask; a server
        # without OBJECTID answers BAD, and the id stays unknown)
        try:
            status, data = conn.status('INBOX', '(MAILBOXID)')
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            status, data = 'BAD', []
        found = _MAILBOXID.search(b' '.join(d for d in data if isinstance(d, bytes))) if status == 'OK' else None
        mailbox_id = found.group(1).decode('ascii', 'replace') if found else None
        exists = int(conn.untagged_responses.get('EXISTS', [b'0'])[-1] or 0)
        messages: dict[str, list] = {}
        by_uid: dict[int, str] = {}
        if exists:
            status, data = conn.uid('FETCH', '1:*', '(UID FLAGS BODY.PEEK[])')
            if status != 'OK':
                raise CheckError(f'UID FETCH 1:* as {where}: {status} {data!r}')
            marker = f'<cyrus-ha-traffic-{tag}-'
            for item in _parse_fetch(data):
                message_id = message_id_of(item['body'])
                if item['uid'] is not None and message_id:
                    by_uid[item['uid']] = message_id
                if message_id and message_id.startswith(marker):
                    messages.setdefault(message_id, []).append(
                        {'uid': item['uid'], 'flags': item['flags'], 'body': item['body']})
        return {'backend': backend['name'], 'uidvalidity': uidvalidity, 'mailbox_id': mailbox_id,
                'messages': messages, 'by_uid': by_uid, 'exists': exists}
    except CheckError as exc:
        raise CheckError(f'reading {where}: {exc.msg}') from None
    except (OSError, imaplib.IMAP4.error, EOFError) as exc:
        raise CheckError(f'reading {where}: {exc or type(exc).__name__}') from None
    finally:
        session.close()


def check(records: list[dict], backends: list[dict], passwords: dict, tag: str, ca_path: str | None = None,
          timeout: float = 30.0, reader=read_inbox) -> dict:
    """Every invariant of a run's journal against the backends. ok is true only when every user could be
    read and nothing was violated; violations and errors name the user, the message and the backend."""
    expect = expectations(records)
    violations, errors = [], []
    held: dict[str, dict] = {}
    unread = set()
    users = sorted(set(expect['users']) | {v['user'] for v in expect['acked'].values() if v['user']})
    for user in users:
        if user not in passwords:
            errors.append(f'{user}: no password in the traffic profile: not checked')
            unread.add(user)
            continue
        found = []
        for backend in backends:
            try:
                inbox = reader(backend, user, passwords[user], tag, ca_path, timeout)
            except CheckError as exc:
                errors.append(exc.msg)
                unread.add(user)
                continue
            if inbox is not None:
                found.append(inbox)
        if len(found) > 1:
            ids = ', '.join(f'{i["backend"]} (id {i["mailbox_id"] or "?"})' for i in found)
            violations.append({'invariant': 'mailbox-once', 'user': user,
                               'detail': f'the INBOX of {user} exists on {len(found)} backends: {ids}'})
        if found:
            held[user] = found[0]
    acked_found = 0
    for message_id, want in sorted(expect['acked'].items(), key=lambda kv: kv[1]['t'] or 0):
        inbox = held.get(want['user'])
        if inbox is None:
            if want['user'] not in unread:
                violations.append({'invariant': 'acknowledged-present', 'user': want['user'], 'message_id': message_id,
                                   'detail': f'{want["op"]} acknowledged at {want["t"]} and the INBOX of '
                                             f'{want["user"]} is on no backend'})
            continue
        copies = inbox['messages'].get(message_id, [])
        where = f'INBOX of {want["user"]} on {inbox["backend"]}'
        if not copies:
            violations.append({'invariant': 'acknowledged-present', 'user': want['user'], 'message_id': message_id,
                               'detail': f'{want["op"]} acknowledged at {want["t"]} and missing from the {where}'})
            continue
        acked_found += 1
        if len(copies) > 1:
            violations.append({'invariant': 'exactly-once', 'user': want['user'], 'message_id': message_id,
                               'detail': f'{want["op"]} acknowledged once and stored {len(copies)} times in the '
                                         f'{where} (UIDs {", ".join(str(c["uid"]) for c in copies)})'})
        size = want['size'] if isinstance(want['size'], int) else 0
        if any(want['sha256'] not in stored_digests(c['body'], size) for c in copies):
            violations.append({'invariant': 'byte-for-byte', 'user': want['user'], 'message_id': message_id,
                               'detail': f'{want["op"]} acknowledged at {want["t"]} differs byte for byte in the {where}'})
        if want['uid'] is not None and want['uidvalidity'] is not None:
            if inbox['uidvalidity'] != want['uidvalidity']:
                violations.append({'invariant': 'uidvalidity-kept', 'user': want['user'], 'message_id': message_id,
                                   'detail': f'UIDVALIDITY of the {where} is {inbox["uidvalidity"]}, was '
                                             f'{want["uidvalidity"]} when the APPEND was acknowledged'})
            elif inbox['by_uid'].get(want['uid']) != message_id:
                violations.append({'invariant': 'uid-stable', 'user': want['user'], 'message_id': message_id,
                                   'detail': f'UID {want["uid"]} of the {where} was acknowledged for this message '
                                             f'and now names {inbox["by_uid"].get(want["uid"]) or "no message"}'})
    maybe_found = 0
    for message_id, what in sorted(expect['maybe'].items()):
        inbox = held.get(what['user'])
        copies = inbox['messages'].get(message_id, []) if inbox else []
        maybe_found += bool(copies)
        if len(copies) > 1:
            violations.append({'invariant': 'exactly-once', 'user': what['user'], 'message_id': message_id,
                               'detail': f'{what["op"]} never acknowledged ({what["outcome"]}) and stored '
                                         f'{len(copies)} times in the INBOX of {what["user"]} on {inbox["backend"]}'})
    for change in expect['flags']:
        inbox = held.get(change['user'])
        copies = inbox['messages'].get(change['message_id'], []) if inbox else []
        if copies and not any(change['flag'] in c['flags'] for c in copies):
            violations.append({'invariant': 'flag-kept', 'user': change['user'], 'message_id': change['message_id'],
                               'detail': f'{change["flag"]} set on UID {change["uid"]} at {change["t"]} is gone from '
                                         f'the INBOX of {change["user"]} on {inbox["backend"]}'})
    for read in expect['corrupt']:
        violations.append({'invariant': 'no-corrupt-read', 'user': read.get('user'), 'message_id': read.get('message_id'),
                           'detail': f'a FETCH at {read.get("t")} returned it changed: {read.get("error")}'})
    return {'ok': not violations and not errors, 'violations': violations, 'errors': errors,
            'checked': {'acknowledged': len(expect['acked']), 'acknowledged_found': acked_found,
                        'unacknowledged': len(expect['maybe']), 'unacknowledged_found': maybe_found,
                        'flags': len(expect['flags']), 'users': len(users),
                        'mailboxes': {u: i['backend'] for u, i in sorted(held.items())}},
            'invariants': list(INVARIANTS)}
