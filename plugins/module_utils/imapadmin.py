# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mailboxes of a Cyrus server as an IMAP administrator sees them: exists, create (on a partition),
storage quota, delete. What `cyradm`'s createmailbox / setquota / deletemailbox do, idempotently.

On a Murder backend, a mailbox created here is pushed to the mupdate master at once and reaches
the frontends through their mupdate slaves; create mailboxes on the backend that should hold them.
"""

from __future__ import annotations

import imaplib
import re
import unicodedata

from ansible_collections.cyrus.ha.plugins.module_utils.imapcheck import CheckError, Imap, _quote, check_session, encode_mailbox

# Mailbox names: Cyrus's internal separator '.', no wildcards, no quoting or control characters. Letters
# beyond ASCII are allowed and sent in modified UTF-7 (RFC 3501 5.1.3), as Cyrus stores them.
NAME_RE = re.compile(r'^[A-Za-z0-9_+=@-]+(\.[A-Za-z0-9_+=@ -]+)*$')
PARTITION_RE = re.compile(r'^[A-Za-z0-9_-]{1,64}$')
ALL_RIGHTS = 'lrswipkxtecda'
MAX_NAME = 490            # Cyrus's MAX_MAILBOX_NAME, counted on the name as sent
MAX_QUOTA = 2 ** 63 - 1   # a storage limit in KiB: IMAP QUOTA's number64 (RFC 9208)


def _plain(name: str) -> str:
    """The name with every non-ASCII letter, mark or number replaced by 'a', for NAME_RE."""
    return ''.join('a' if ord(c) > 127 and unicodedata.category(c)[0] in 'LMN' else c for c in name)


def check_name(name: str) -> str:
    """The name as IMAP sends it (modified UTF-7 for non-ASCII), or CheckError."""
    if not isinstance(name, str) or not NAME_RE.match(_plain(name)) or len(encode_mailbox(name)) > MAX_NAME:
        raise CheckError(f'mailbox name {name!r} is not a plain Cyrus mailbox name (letters, digits, _ + = @ -, '
                         "levels separated by '.', no wildcards), e.g. user.alice")
    return encode_mailbox(name)


def check_partition(partition) -> None:
    if partition is not None and (not isinstance(partition, str) or not PARTITION_RE.match(partition)):
        raise CheckError(f'partition {partition!r} is not a partition name (letters, digits, _ and -)')


def check_quota(name: str, quota) -> None:
    if quota is None:
        return
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
        raise CheckError(f'quota {quota} for {name} must be 0 (no limit) or a size in KiB')
    if quota > MAX_QUOTA:
        raise CheckError(f'quota {quota} for {name} is beyond what IMAP carries ({MAX_QUOTA} KiB)')


def validate(p: dict) -> str:
    """Every option checked before the first packet; the mailbox name as sent."""
    imap_name = check_name(p['name'])
    check_partition(p.get('partition'))
    check_quota(p['name'], p.get('quota'))
    if p.get('state', 'present') not in ('present', 'absent'):
        raise CheckError(f"state {p.get('state')!r} must be present or absent")
    check_session(p)
    return imap_name


def _text(item) -> str:
    return item.decode('utf-8', 'replace') if isinstance(item, bytes) else str(item)


class Admin(Imap):
    """An administrator's session with the few commands mailbox management needs. Names are as sent
    (modified UTF-7); messages name the mailbox as the user wrote it when ``shown`` is given."""

    def exists(self, name: str) -> bool:
        data = self._ok(f'LIST {name}', self.conn.list('""', _quote(name)))
        return any(item is not None for item in data)

    def quota(self, name: str):
        """(quota root, storage limit in KiB or None) of the mailbox."""
        typ, data = self.conn.getquotaroot(_quote(name))
        if typ != 'OK':
            return None, None
        roots, quotas = (data + [[], []])[:2]
        root = None
        for line in roots or []:
            parts = _text(line).split()
            if len(parts) > 1:
                root = parts[1].strip('"')
        for line in quotas or []:
            found = re.search(r'STORAGE\s+\d+\s+(\d+)', _text(line), re.I | re.A)
            if found:
                return root, int(found.group(1))
        return root, None

    def create(self, name: str, partition=None) -> None:
        args = (_quote(name),) if partition is None else (_quote(name), partition)
        self._ok(f'CREATE {name}', self.conn._simple_command('CREATE', *args))

    def set_quota(self, name: str, kib) -> None:
        limits = '()' if kib is None else f'(STORAGE {int(kib)})'
        self._ok(f'SETQUOTA {name}', self.conn.setquota(_quote(name), limits))

    def my_rights(self, name: str):
        """The session's rights on the mailbox (MYRIGHTS), or None when the server does not say."""
        typ, data = self.conn.myrights(_quote(name))
        if typ != 'OK':
            return None
        for item in data or []:
            parts = _text(item).split()
            if len(parts) >= 2:
                return parts[-1].strip('"')
        return None

    def acl_of(self, name: str, who: str):
        """``who``'s entry in the mailbox's ACL (GETACL), '' when it has none."""
        data = self._ok(f'GETACL {name}', self.conn.getacl(_quote(name)))
        for item in data or []:
            parts = _text(item).split()
            pairs = parts[1:]
            for index in range(0, len(pairs) - 1, 2):
                if pairs[index].strip('"') == who:
                    return pairs[index + 1].strip('"')
        return ''

    def delete(self, name: str, done: list = None) -> None:
        """DELETE; Cyrus admins need the x right on the mailbox (cyradm grants it too): granted only when
        MYRIGHTS lacks it, and put back as it was when the DELETE fails. ``done`` collects what changed."""
        done = [] if done is None else done
        rights = self.my_rights(name)
        if rights is not None and 'x' in rights:
            typ, dummy = self.conn.delete(_quote(name))
            if typ == 'OK':
                return
            # a server whose MYRIGHTS claims more than DELETE allows: grant as cyradm does
        previous = self.acl_of(name, self.user)
        self._ok(f'SETACL {name}', self.conn.setacl(_quote(name), self.user, ALL_RIGHTS))
        done.append(f'granted {self.user} {ALL_RIGHTS}')
        try:
            self._ok(f'DELETE {name}', self.conn.delete(_quote(name)))
        except (CheckError, OSError, EOFError, imaplib.IMAP4.error) as exc:
            if not isinstance(exc, CheckError):
                exc = CheckError(f'IMAP DELETE {name} as {self.where()} failed: {type(exc).__name__}: {exc}')
            try:
                if previous:
                    self._ok(f'SETACL {name}', self.conn.setacl(_quote(name), self.user, previous))
                else:
                    self._ok(f'DELETEACL {name}', self.conn.deleteacl(_quote(name), self.user))
                done.remove(f'granted {self.user} {ALL_RIGHTS}')
            except (CheckError, OSError, EOFError, imaplib.IMAP4.error) as undo:
                exc.msg += f'; putting back the ACL of {self.user} failed too ({undo}): it holds {ALL_RIGHTS}'
            raise exc


def manage(p: dict, check_mode: bool = False, session=Admin) -> dict:
    """Make mailbox p['name'] present (with p['quota'] KiB, None: leave it; 0: no limit) or absent.

    Everything is checked before the first command; the steps run in the order create, quota (or
    grant, delete, revoke on failure), and when one fails after another changed something the
    CheckError carries changed=True and the actions done, so the next run finishes the job."""
    name = validate(p)
    quota = p.get('quota')
    admin = session(p['host'], p['port'], p['user'], p['password'], p.get('ssl', False), p.get('starttls', False),
                    p.get('timeout', 10.0), p.get('validate_certs', True), p.get('ca_path'))
    result = {'name': p['name'], 'changed': False, 'actions': []}
    if name != p['name']:
        result['imap_name'] = name
    done = []
    try:
        admin.connect(wait=p.get('wait', 0.0))
        existed = admin.exists(name)
        root, limit = admin.quota(name) if existed else (None, None)
        before = {'exists': existed, 'quota': limit} if existed else {'exists': False}
        result.update(exists_before=existed, quota_root=root, quota_before=limit)
        if p['state'] == 'absent':
            if existed:
                result['actions'].append('delete')
                if not check_mode:
                    admin.delete(name, done)
                    done.append('delete')
            after = {'exists': False}
        else:
            if not existed:
                result['actions'].append('create' + (f' on partition {p["partition"]}' if p.get('partition') else ''))
                if not check_mode:
                    admin.create(name, p.get('partition'))
                    done.append(result['actions'][-1])
            wanted = None if quota == 0 else quota
            if quota is not None and (not existed or limit != wanted) and not (not existed and wanted is None):
                result['actions'].append(f'quota {wanted} KiB' if wanted is not None else 'quota removed')
                if not check_mode:
                    admin.set_quota(name, wanted)
                    done.append(result['actions'][-1])
            after = {'exists': True, 'quota': wanted if quota is not None else limit}
        result['changed'] = bool(result['actions'])
        result['diff'] = {'before': before, 'after': after}
    except CheckError as exc:
        if done:
            exc.msg += f' (after {", ".join(done)}: run again to finish)'
            exc.details.update(changed=True, actions=done, name=p['name'])
        raise
    except (OSError, EOFError, ValueError, imaplib.IMAP4.error) as exc:
        what = f' after {", ".join(done)}' if done else ''
        broke = not isinstance(exc, imaplib.IMAP4.error) or isinstance(exc, imaplib.IMAP4.abort)
        raise CheckError(f'managing mailbox {p["name"]} on {admin.where()} failed{what}: '
                         f'{"the connection broke" if broke else "the server refused a command"} '
                         f'({type(exc).__name__}: {exc}); run again to finish', changed=bool(done), actions=done,
                         name=p['name']) from exc
    finally:
        admin.close()
    return result
