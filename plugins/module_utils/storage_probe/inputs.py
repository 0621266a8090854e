# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The inputs of both storage probe modules, checked before anything touches a filesystem.

Numbers are finite and in range (a bool is not a number), paths are absolute without NUL bytes or
``..``, check lists are not empty and name each check once, peer names are host names or addresses
that name each host once, whatever the spelling (``BE1``/``be1``, ``::ffff:10.0.0.1``/``10.0.0.1``).
"""

from __future__ import annotations

import ipaddress
import math
import re

# An inventory host name, DNS name or IP address: ASCII only, as it is part of file names on the
# shared filesystem (no '/', no NUL, no space; '%' zone indexes are not names).
HOST = re.compile(r'[A-Za-z0-9_:][A-Za-z0-9._:-]{0,252}')
HOST_CHARS = 'letters, digits, ., -, _ and :'


class InputError(ValueError):
    """A bad input; the message names it and the cause."""


def number(key: str, value, low, high) -> None:
    """value is a finite int or float within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError('%s must be a number between %s and %s, got %r' % (key, low, high, value))
    if not (math.isfinite(value) and low <= value <= high):
        raise InputError('%s must be between %s and %s, got %s' % (key, low, high, value))


def path(value, key: str = 'path') -> str:
    """An absolute path without NUL or '..', returned without '.', doubled or trailing slashes."""
    if not isinstance(value, str) or not value:
        raise InputError('%s is empty: give the absolute path of a directory' % key)
    if '\0' in value:
        raise InputError('%s %r contains a NUL byte' % (key, value))
    if not value.startswith('/'):
        raise InputError('%s %r is relative: give an absolute path (a relative one would be taken from the '
                         'working directory of the module on the host)' % (key, value))
    parts = [part for part in value.split('/') if part not in ('', '.')]
    if '..' in parts:
        raise InputError("%s %r has a '..' component: give the directory itself" % (key, value))
    return '/' + '/'.join(parts)


def paths(values) -> list:
    """Each path checked and normalised; a directory named twice is refused."""
    if not values:
        raise InputError('path must name at least one directory')
    seen = {}
    out = []
    for value in values:
        clean = path(value)
        if clean in seen:
            raise InputError('path names %s twice (%r and %r): name each directory once' % (clean, seen[clean], value))
        seen[clean] = value
        out.append(clean)
    return out


def checks(values, known) -> list:
    """The check names, each known and named once; [] is refused (it would mean nothing, or everything)."""
    if values is None:
        return ['all']
    if not values:
        raise InputError('checks is empty: name the checks to run, or all')
    unknown = [value for value in values if value not in ('all',) + tuple(known)]
    if unknown:
        raise InputError('checks: %s is not a check (known: all, %s)' % (
            ', '.join(repr(value) for value in unknown), ', '.join(known)))
    twice = sorted(set(value for value in values if values.count(value) > 1))
    if twice:
        raise InputError('checks names %s twice: name each check once' % ', '.join(twice))
    return list(values)


def host_key(name: str) -> str:
    """The one spelling of a host: an address in its compressed form (an IPv4-mapped IPv6 address as the
    IPv4 address), a name in lower case without a trailing dot."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name.lower().rstrip('.')
    mapped = getattr(address, 'ipv4_mapped', None)
    return str(mapped if mapped is not None else address)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def peers(me, names) -> None:
    """me and every peer are host names, me is one of them, and no host is named twice in any spelling."""
    for key, name in [('peers', name) for name in names] + [('me', me)]:
        if not isinstance(name, str) or not HOST.fullmatch(name):
            raise InputError('%s: %r is not a host name (1 to 253 of %s)' % (key, name, HOST_CHARS))
    if me not in names:
        raise InputError('me (%s) is not one of the peers (%s)' % (me, ', '.join(names)))
    if len(set(names)) != len(names):
        raise InputError('peers name a host twice: %s' % ', '.join(names))
    seen = {}
    for name in names:
        key = host_key(name)
        if key in seen:
            raise InputError('peers name a host twice: %s and %s are the same %s' % (
                seen[key], name, 'address' if _is_address(name) else 'host name (host names are not case-sensitive)'))
        seen[key] = name
