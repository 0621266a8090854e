# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every secret of the lab, and where it must never appear: what Ansible prints (even at -vvv) and
what the lab's hosts write to syslog ($CYHA_LAB_DIR/log/<host>.log) or, on hosts with systemd, to their journal."""

from __future__ import annotations

import glob
import os

import yaml

import labutil

SECRET_KEYS = ('password', 'secret', 'authkey', 'private_key')


def _walk(value, path: str, found: dict) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and any(word in str(key) for word in SECRET_KEYS) and '{{' not in item:
                found[f'{path}{key}'] = item
            else:
                _walk(item, f'{path}{key}.', found)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f'{path}{index}.', found)


def lab_secrets() -> dict[str, str]:
    """Label -> secret: every password of lab/vars and the body of every TLS key the lab made (each
    base64 line of it: a key shown in part is a key shown)."""
    found: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(labutil.REPO, 'lab', 'vars', '*.yml'))):
        with open(path, encoding='utf-8') as handle:
            _walk(yaml.safe_load(handle) or {}, os.path.basename(path) + ':', found)
    for path in sorted(glob.glob(os.path.join(labutil.LAB_DIR, 'tls', '*.key'))):
        with open(path, encoding='ascii') as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.startswith('-----')]
        for index, line in enumerate(lines):
            if len(line) >= 24:
                found[f'{os.path.basename(path)} line {index + 1}'] = line
    assert found, 'no secret found in the lab: nothing would be checked'
    return found


def leaks(text: str, secrets: dict[str, str] | None = None) -> list[str]:
    """The labels of the secrets that appear in text."""
    secrets = lab_secrets() if secrets is None else secrets
    return sorted(label for label, secret in secrets.items() if secret in text)


def syslog_leaks(secrets: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Per lab syslog file, the labels of the secrets it holds (only files with a hit)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(labutil.LAB_DIR, 'log', '*.log'))):
        with open(path, encoding='utf-8', errors='replace') as handle:
            hits = leaks(handle.read(), secrets)
        if hits:
            out[os.path.basename(path)] = hits
    return out


def journal_leaks(journals: dict[str, str], secrets: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Per host with systemd, the labels of the secrets its journal holds (journals: host -> the journal's text,
    read on the host with journalctl); only hosts with a hit."""
    out = {}
    for host, text in sorted(journals.items()):
        hits = leaks(text, secrets)
        if hits:
            out[host] = hits
    return out
