# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mailboxes of a Cyrus server as an IMAP administrator sees them: exists, create (on a partition),
storage quota, delete. What `cyradm`'s createmailbox / setquota / deletemailbox do, idempotently.

On a Murder backend, a mailbox created here is pushed to the mupdate master at once and reaches
the frontends through their mupdate slaves; create mailboxes on the backend that should hold them.
"""

from __future__ import annotations

import re

from ansible_collections.cyrus.ha.plugins.module_utils.imapcheck import CheckError, Imap, _quote

# Mailbox names: Cyrus's internal separator '.', no wildcards, no quoting or control characters.
NAME_RE = re.compile(r'^[A-Za-z0-9_+=@-]+(\.[A-Za-z0-9_+=@ -]+)*$')
PARTITION_RE = re.compile(r'^[A-Za-z0-9_-]{1,64}$')
ALL_RIGHTS = 'lrswipkxtecda'


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 490:
        raise CheckError(f'mailbox name {name!r} is not a plain Cyrus mailbox name (letters, digits, _ + = @ -, '
                         "levels separated by '.', no wildcards), e.g. user.alice")


def check_partition(partition) -> None:
    if partition is not None and not PARTITION_RE.match(partition):
        raise CheckError(f'partition {partition!r} is not a partition name (letters, digits, _ and -)')


class Admin(Imap):
    """An administrator's session with the few commands mailbox management needs."""

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
            text = line.decode('utf-8', 'replace') if isinstance(line, bytes) else str(line)
            parts = text.split()
            if len(parts) > 1:
                root = parts[1].strip('"')
        for line in quotas or []:
            text = line.decode('utf-8', 'replace') if isinstance(line, bytes) else str(line)
            found = re.search(r'STORAGE\s+\d+\s+(\d+)', text, re.I)
            if found:
                return root, int(found.group(1))
        return root, None

    def create(self, name: str, partition=None) -> None:
        args = (_quote(name),) if partition is None else (_quote(name), partition)
        self._ok(f'CREATE {name}', self.conn._simple_command('CREATE', *args))

    def set_quota(self, name: str, kib) -> None:
        limits = '()' if kib is None else f'(STORAGE {int(kib)})'
        self._ok(f'SETQUOTA {name}', self.conn.setquota(_quote(name), limits))

    def delete(self, name: str) -> None:
        # Cyrus admins may administer every mailbox but need the x right to delete one (cyradm does this too)
        self._ok(f'SETACL {name}', self.conn.setacl(_quote(name), self.user, ALL_RIGHTS))
        self._ok(f'DELETE {name}', self.conn.delete(_quote(name)))


def manage(p: dict, check_mode: bool = False, session=Admin) -> dict:
    """Make mailbox p['name'] present (with p['quota'] KiB, None: leave it; 0: no limit) or absent."""
    check_name(p['name'])
    check_partition(p.get('partition'))
    quota = p.get('quota')
    if quota is not None and quota < 0:
        raise CheckError(f'quota {quota} for {p["name"]} must be 0 (no limit) or a size in KiB')
    admin = session(p['host'], p['port'], p['user'], p['password'], p.get('ssl', False), p.get('starttls', False),
                    p.get('timeout', 10.0))
    result = {'name': p['name'], 'changed': False, 'actions': []}
    try:
        admin.connect(wait=p.get('wait', 0.0))
        existed = admin.exists(p['name'])
        root, limit = admin.quota(p['name']) if existed else (None, None)
        before = {'exists': existed, 'quota': limit} if existed else {'exists': False}
        result.update(exists_before=existed, quota_root=root, quota_before=limit)
        if p['state'] == 'absent':
            if existed:
                result['actions'].append('delete')
                if not check_mode:
                    admin.delete(p['name'])
            after = {'exists': False}
        else:
            if not existed:
                result['actions'].append('create' + (f' on partition {p["partition"]}' if p.get('partition') else ''))
                if not check_mode:
                    admin.create(p['name'], p.get('partition'))
            wanted = None if quota == 0 else quota
            if quota is not None and (not existed or limit != wanted) and not (not existed and wanted is None):
                result['actions'].append(f'quota {wanted} KiB' if wanted is not None else 'quota removed')
                if not check_mode:
                    admin.set_quota(p['name'], wanted)
            after = {'exists': True, 'quota': wanted if quota is not None else limit}
        result['changed'] = bool(result['actions'])
        result['diff'] = {'before': before, 'after': after}
    finally:
        admin.close()
    return result
