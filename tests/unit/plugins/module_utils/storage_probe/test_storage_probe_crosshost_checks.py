# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cross-host checks called directly, without the runner: the registry, the leader's summary, the
lock probes, and checks whose two parts can run as two threads of this process (whose fcntl locks never conflict, so
these runs show the steps and messages, not lock exclusion)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import crosshost
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import crosshost_checks as checks
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import crosshost_protocol as protocol
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import helpers, result, verdict

OPTS = dict(crosshost.DEFAULTS, neighbour_files=70)


def test_the_registry_names_every_check_once_with_its_own_final_step():
    assert checks.CHECK_NAMES == ('lock_exclusion', 'pingpong_rw', 'pingpong_cyrus', 'pingpong_mmap',
                                  'append_visibility', 'rename_visibility', 'metadata_coherence', 'excl_race',
                                  'lock_recovery', 'neighbour_stat')
    assert len({check.done for check in checks.CHECKS}) == len(checks.CHECKS)
    assert set(checks.CHECK_NAMES) - set(checks.CRITICAL) == {'neighbour_stat'}
    assert crosshost.CHECK_NAMES == checks.CHECK_NAMES and repr(checks.BY_NAME['excl_race']) == "Check('excl_race')"


@pytest.mark.parametrize('statuses, expected, reasons', [
    ({'lock_exclusion': 'pass', 'neighbour_stat': 'pass'}, 'safe', ['every cross-host check run passed']),
    ({'neighbour_stat': 'fail', 'excl_race': 'fail', 'lock_exclusion': 'fail'}, 'unsafe',
     ['lock_exclusion: r', 'excl_race: r', 'neighbour_stat: r']),
    ({'neighbour_stat': 'warn', 'metadata_coherence': 'warn'}, 'degraded', ['metadata_coherence: r', 'neighbour_stat: r']),
])
def test_one_decide_judges_the_cross_host_results_in_check_order(statuses, expected, reasons):
    results = {name: result.result(name, status, 'r') for name, status in statuses.items()}
    assert verdict.decide(results, checks.CRITICAL, crosshost.PASSED) == {'verdict': expected, 'reasons': reasons}


def test_a_critical_check_skipped_for_lack_of_time_is_not_safe_across_hosts_either():
    skipped = {'lock_recovery': result.result('lock_recovery', 'skip', 'no time', {'budget_exhausted': True})}
    assert verdict.decide(skipped, checks.CRITICAL)['verdict'] == 'degraded'


class MemoryChannel:
    """The side channel of hosts that are threads of one process."""

    def __init__(self):
        self.messages = {}

    def post(self, step, host, data, timeout=None):
        self.messages[(step, host)] = data

    def poll(self, step, host):
        return self.messages.get((step, host), protocol.MISSING)


def _run(tmp_path, me, peers=('a', 'b', 'c'), step_timeout=0.2, channel=None):
    return protocol.Run(str(tmp_path), me, list(peers), step_timeout, channel or MemoryChannel())


def test_the_leader_names_the_peers_that_failed_and_those_gone(tmp_path):
    run = _run(tmp_path, 'a')
    answers = {'b': result.result('x', 'fail', 'no'), 'c': None}
    out = checks.leader_summary(result.Steps('x'), run, answers, 'all good')
    assert out['status'] == 'fail' and out['reason'] == 'failed on b'
    gone = checks.leader_summary(result.Steps('x'), run, {'b': result.result('x', 'pass', 'ok')}, 'all good')
    assert gone['reason'] == 'c did not answer within 0.2 s: the host or its probe process is gone'
    assert gone['evidence'] == {'failed_peers': [], 'gone': ['c']}
    assert checks.leader_summary(result.Steps('x'), run, {'b': {}, 'c': {'status': 'pass'}}, 'all good')['status'] \
        == 'pass'


def test_a_peer_without_its_leader_names_the_leader(tmp_path):
    out = checks.metadata_coherence(_run(tmp_path, 'b'), OPTS)
    assert out['status'] == 'fail' and out['evidence'] == {'gone': ['a']}
    assert out['reason'] == 'the leader a did not answer within 0.2 s: the host or its probe process is gone'


def test_the_lock_probes_tell_a_conflict_from_a_grant(tmp_path):
    path = str(tmp_path / 'l')
    checks.make_file(path, b'x' * 10)
    assert (tmp_path / 'l').read_bytes() == b'x' * 10
    with pytest.raises(FileExistsError):
        checks.make_file(path, b'')
    fd = os.open(path, os.O_RDWR)
    try:
        assert checks.refused(fd) is False and checks.flock_refused(fd) is False
        with helpers.helper() as holder:
            helpers.value(holder.call(op='open', path=path))
            helpers.value(holder.call(op='lock', kind='w'))
            helpers.value(holder.call(op='flock', mode='ex'))
            assert checks.refused(fd) is True and checks.refused(fd, 'r') is True
            assert checks.flock_refused(fd) is True
    finally:
        os.close(fd)


def _both(tmp_path, check, peers=('a', 'b')):
    """Play a check as the leader and one peer, two threads of this process sharing one directory."""
    out = {}
    channel = MemoryChannel()

    def play(me):
        out[me] = check(_run(tmp_path, me, peers, 5.0, channel), OPTS)

    threads = [threading.Thread(target=play, args=(me,)) for me in peers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return out


@pytest.mark.parametrize('check', [checks.metadata_coherence, checks.neighbour_stat, checks.rename_visibility,
                                   checks.append_visibility])
def test_a_check_passes_for_the_leader_and_the_peer_on_one_directory(tmp_path, check):
    out = _both(tmp_path, check)
    assert out['a']['status'] == 'pass' and out['b']['status'] == 'pass', out
    assert out['a']['evidence']['failed_peers'] == [] and out['a']['evidence']['gone'] == []


def test_exactly_one_host_wins_the_excl_race(tmp_path):
    out = _both(tmp_path, checks.excl_race, ('a', 'b', 'c'))
    assert out['a']['status'] == 'pass', out['a']
    assert len(out['a']['evidence']['winners']) == 1
    assert sum(bool(out[me]['evidence'].get('won')) for me in ('b', 'c')) in (0, 1)
    assert (tmp_path / 'excl').read_text() == out['a']['evidence']['winners'][0]


def test_neighbour_stat_counts_what_the_peer_saw(tmp_path):
    out = _both(tmp_path, checks.neighbour_stat)
    assert out['b']['evidence']['files'] == 70 and out['b']['evidence']['missing'] == 0
    assert out['b']['reason'].startswith('stat here of the 70 files a created: ')


def test_a_change_seen_at_once_every_time_passes():
    steps = result.Steps('x')
    checks.judge_visibility(steps, 'mmap', [0.0] * 5, 'a message appended on be1', 'an mmap of the index on be2',
                            'Cyrus would serve stale indexes and corrupt cyrus.index', 2)
    assert steps.failures == [] and steps.evidence['mmap'] == {'tries': 5, 'at_once': 5, 'never': 0, 'median_s': 0.0,
                                                               'max_s': 0.0}


def test_a_change_seen_late_fails_with_the_measured_delay_in_cyrus_terms():
    steps = result.Steps('x')
    checks.judge_visibility(steps, 'mmap', [0.0, 0.41, 0.38, 0.0, 0.5], 'a message appended on be1',
                            'an mmap of the index on be2', 'Cyrus would serve stale indexes and corrupt cyrus.index', 2)
    assert steps.failures == [
        'a message appended on be1 became visible to an mmap of the index on be2 only after 0.5 s (median 0.38 s, max '
        '0.5 s over 5 tries; Cyrus reads right after taking its lock and tolerates no delay): Cyrus would serve stale '
        'indexes and corrupt cyrus.index']


def test_a_change_never_seen_fails_saying_so():
    steps = result.Steps('x')
    checks.judge_visibility(steps, 'mmap', [None], 'a message appended on be1', 'an mmap of the index on be2',
                            'Cyrus would serve stale indexes and corrupt cyrus.index', 2)
    assert steps.failures == ['a message appended on be1 is not visible to an mmap of the index on be2 after 2 s (1 '
                              'of 1 tries): Cyrus would serve stale indexes and corrupt cyrus.index']
    assert steps.evidence['mmap']['never'] == 1 and steps.evidence['mmap']['median_s'] is None


def test_until_measures_from_the_start_and_gives_up_at_the_limit():
    started = time.monotonic()
    flips = iter([False, False, True])
    assert 0 < checks.until(lambda: next(flips), 1.0, started) < 1.0
    assert checks.until(lambda: True, 1.0, started) == 0.0
    assert checks.until(lambda: False, 0.05, time.monotonic()) is None
