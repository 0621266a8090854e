# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ping_pong ring shared by the single-host fcntl check and the cross-host checks: it judges a
step only while every process is in the ring, so a late starter or an early finisher (a busy machine)
is never taken for lost updates, while locks that do not exclude are."""

from __future__ import annotations

import os
import time

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import locks, procs, ring, sysapi


def _ring(path: str, iterations: list, delays: list, flavour: str = 'rw', presence_wait: float = 3.0) -> list:
    ring.make(path)
    workers = []
    try:
        for index, (count, delay) in enumerate(zip(iterations, delays)):
            time.sleep(delay)
            workers.append(procs.Child(ring.worker, path, index, len(iterations), flavour, count, presence_wait,
                                       deadline=60))
        return [worker.recv(55) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()


@pytest.mark.parametrize('flavour', ['rw', 'cyrus', 'mmap'])
def test_two_processes_increment_by_two(tmp_path, flavour):
    answers = _ring(str(tmp_path / 'pp'), [600, 600], [0, 0], flavour)
    assert all(answer['judged'] > 0 and answer['bad'] == 0 for answer in answers), answers
    assert {v for answer in answers for v in answer['values']} == {2}


def test_a_late_starter_and_an_early_finisher_are_not_lost_updates(tmp_path):
    # Process 0 runs alone first (no presence wait) and long after process 1 has left:
    # only the steps while both were in the ring are judged, and each of them saw 2.
    answers = _ring(str(tmp_path / 'pp'), [200000, 3000], [0, 0.2], presence_wait=0)
    assert answers[0]['judged'] > 0 and answers[1]['judged'] > 0, answers
    assert answers[0]['judged'] < 200000 - 2 * 3, 'the steps run alone must not be judged'
    assert [answer['bad'] for answer in answers] == [0, 0], answers


def test_locks_that_grant_everyone_show_as_bad_increments(tmp_path, monkeypatch):
    real = sysapi.setlk

    def granted(fd, kind, start=0, length=0, wait=False):
        if length == 1:   # the ring's byte locks: granted without excluding anyone
            return None
        return real(fd, kind, start, length, wait)

    monkeypatch.setattr(sysapi, 'setlk', granted)
    answers = _ring(str(tmp_path / 'pp'), [20000, 20000], [0, 0])
    assert sum(answer['bad'] for answer in answers) > 0, answers


def test_single_host_pingpong_reports_the_rate_and_cleans_its_children(tmp_path):
    out = locks.pingpong(str(tmp_path), iterations=1000)
    assert out['increment_ok'] is True and out['judged'] > 0 and out['values'] == [2], out
    assert out['locks_per_s'] > 0
    assert os.listdir(tmp_path) == ['pingpong']
