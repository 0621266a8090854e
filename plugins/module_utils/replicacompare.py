# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Two instances' mailboxes compared, as M(cyrus.ha.cyrus_replication_facts) reads them with mbexamine: on the
controller by the filters replication_diff and replication_diverged, on a replica by the module waiting to hold
what its master held (wait_for). Standard library only.

Input on each side: {mailbox name: {uniqueid, uidvalidity, uidnext, highestmodseq, messages}}, where a
mailbox mbexamine could not read has None for what is unknown and ``problem`` saying why. Unknown is
never equal: a mailbox with a None field or a problem always differs, and is always diverged.

- ``diff(master, replica)``: is the replica a copy of the master?
- ``diverged(old_master, new_master)``: what does the old master hold that the new one lacks (before
  the old master is made a replica of the new one, which would throw that away)?
"""

from __future__ import annotations

from collections.abc import Mapping

FIELDS = ('uniqueid', 'uidvalidity', 'uidnext', 'highestmodseq', 'messages')
NUMBERS = ('uidvalidity', 'uidnext', 'highestmodseq', 'messages')


class ReplicationDataError(ValueError):
    """An input that is not a mapping of mailbox states; the message names the side and the mailbox."""


def _number(value, where: str):
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ReplicationDataError(f'{where} is {value!r}, not a whole number')


def mailboxes(value, side: str) -> dict:
    """``value`` checked and normalised: {name: {every FIELDS key, and ``problem`` (None or text)}}.
    Numbers given as digit strings become ints; a missing field is None (unknown)."""
    if not isinstance(value, Mapping):
        raise ReplicationDataError(f'the {side} mailboxes must be a mapping of mailbox name to its state (the '
                                   f'mailboxes of cyrus.ha.cyrus_replication_facts), not {type(value).__name__}')
    result = {}
    for name, state in value.items():
        if not isinstance(name, str):
            raise ReplicationDataError(f'{side} mailbox name {name!r} is not a string')
        if not isinstance(state, Mapping):
            raise ReplicationDataError(f'{side} mailbox {name}: its state must be a mapping with '
                                       f'{", ".join(FIELDS)}, not {type(state).__name__}')
        uniqueid = state.get('uniqueid')
        if uniqueid is not None and not isinstance(uniqueid, str):
            raise ReplicationDataError(f'{side} mailbox {name}: uniqueid is {uniqueid!r}, not a string')
        normal = {'uniqueid': uniqueid or None}
        for field in NUMBERS:
            normal[field] = _number(state.get(field), f'{side} mailbox {name}: {field}')
        normal['problem'] = state.get('problem') or None
        result[name] = normal
    return result


def _unknown(state: dict) -> bool:
    return state['problem'] is not None or any(state[f] is None for f in FIELDS)


def diff(master, replica) -> dict:
    """{equal, missing (on the master only), extra (on the replica only), differ: [{mailbox, fields: {field:
    {master, replica}}}], counts: {master, replica}}; lists sorted by name.

    A mailbox differs when any of FIELDS differs, or is unknown on either side (then every unknown field
    is listed, and ``problem`` too when either side has one)."""
    left = mailboxes(master, 'master')
    right = mailboxes(replica, 'replica')
    differ = []
    for name in sorted(set(left) & set(right)):
        one, two = left[name], right[name]
        fields = {f: {'master': one[f], 'replica': two[f]} for f in FIELDS
                  if one[f] != two[f] or one[f] is None}
        if one['problem'] or two['problem']:
            fields['problem'] = {'master': one['problem'], 'replica': two['problem']}
        if fields:
            differ.append({'mailbox': name, 'fields': fields})
    missing = sorted(set(left) - set(right))
    extra = sorted(set(right) - set(left))
    return {'equal': not (missing or extra or differ), 'missing': missing, 'extra': extra, 'differ': differ,
            'counts': {'master': len(left), 'replica': len(right)}}


def _why(old: dict, new: dict) -> list:
    if _unknown(old) or _unknown(new):
        why = [f'{side} master: {state["problem"]}' for side, state in (('old', old), ('new', new))
               if state['problem']]
        unknown = [f for f in FIELDS if old[f] is None or new[f] is None]
        if unknown:
            why.append(f'{", ".join(unknown)} unknown')
        return ['cannot be compared (' + '; '.join(why) + ')']
    if old['uniqueid'] != new['uniqueid']:
        return [f'created on both sides (split brain): uniqueid {old["uniqueid"]} on the old master, '
                f'{new["uniqueid"]} on the new']
    why = []
    if old['uidvalidity'] != new['uidvalidity']:
        why.append(f'uidvalidity {old["uidvalidity"]} on the old master, {new["uidvalidity"]} on the new')
    if old['uidnext'] > new['uidnext']:
        why.append(f'uidnext {old["uidnext"]} on the old master > {new["uidnext"]} on the new: messages the new '
                   'master lacks')
    if old['highestmodseq'] > new['highestmodseq']:
        why.append(f'highestmodseq {old["highestmodseq"]} on the old master > {new["highestmodseq"]} on the new: '
                   'changes (flags, expunges) the new master lacks')
    return why


# The lag marker of cyrus.ha.cyrus_replication_lag: cyrus-ha-lag-<instance>, one message whose flag it toggles.
MARKER_PREFIX = 'cyrus-ha-lag-'


def diverged(old_master, new_master, skip_markers: bool = False) -> list:
    """The mailboxes where the old master holds something the new master lacks, sorted by name, each as
    {mailbox, reason}: only on the old master; a different uniqueid (created twice: split brain); a
    different uidvalidity; a higher uidnext or highestmodseq on the old master; or anything unknown.
    skip_markers leaves out the lag marker (MARKER_PREFIX), whose only writes are the measurements' flag toggles
    (an old master about to rejoin); a replica that must hold everything is compared with it."""
    old = mailboxes(old_master, 'old master')
    new = mailboxes(new_master, 'new master')
    found = []
    for name in sorted(old):
        if skip_markers and name.startswith(MARKER_PREFIX):
            continue
        if name not in new:
            found.append({'mailbox': name, 'reason': 'only on the old master'})
            continue
        why = _why(old[name], new[name])
        if why:
            found.append({'mailbox': name, 'reason': '; '.join(why)})
    return found
