# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The probe's progress file as the storage_probe role reads it: a plan, one line per check of each path as it
ends, a done line however the run ends, each starting with the run's id and step (what the role's waits
match), on a real local directory."""

from __future__ import annotations

import json
import os
import re

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import probe
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import progress
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import spec

RUN = '0123456789abcdef'


def params(**extra) -> dict:
    out = {key: value.get('default') for key, value in spec.argument_spec().items()}
    out.update(extra)
    return out


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_run_says_its_plan_each_check_as_it_ends_and_that_it_is_done(tmp_path):
    first, second = tmp_path / 'a', tmp_path / 'b'
    first.mkdir()
    second.mkdir()
    file = tmp_path / 'progress.jsonl'
    file.write_text('{"id": "an earlier run", "step": 0, "event": "plan"}\n')   # kept: lines are appended
    out = spec.run(params(path=[str(first), str(second)], checks=['identity', 'fcntl_locks', 'hard_links'],
                          progress_file=str(file), progress_id=RUN), check_mode=False)
    got = lines(file)[1:]
    steps = [(0, 'plan')] + [(n, 'check') for n in range(1, 7)] + [(-1, 'done')]
    assert [(g['id'], g['step'], g['event']) for g in got] == [(RUN, step, event) for step, event in steps]
    assert got[0]['paths'] == [str(first), str(second)]
    assert got[0]['checks'] == ['identity', 'fcntl_locks', 'hard_links']
    # the checks in the plan's order (path by path), each with the status the report gives it
    planned = [(p, c) for p in (str(first), str(second)) for c in ('identity', 'fcntl_locks', 'hard_links')]
    assert [(g['path'], g['check']) for g in got[1:-1]] == planned
    for line in got[1:-1]:
        assert line['status'] == out['ansible_facts']['storage_probe'][line['path']]['checks'][line['check']]['status']
        assert isinstance(line['seconds'], float)
    assert got[-1] == {'id': RUN, 'step': -1, 'event': 'done', 'ok': True, 'msg': ''}
    # what the role's waits match: the id and the step first on the line, so an earlier run never matches
    text = file.read_text()
    assert re.search('^\\{"id": "%s", "step": (4|-1), ' % RUN, text, re.MULTILINE).group(1) == '4'
    assert re.search('^\\{"id": "%s", "step": (0|-1), ' % 'an earlier run', text, re.MULTILINE)
    assert lines(file)[0] == {'id': 'an earlier run', 'step': 0, 'event': 'plan'}   # appended, never truncated


def test_a_new_progress_file_is_private(tmp_path):
    (tmp_path / 'p').mkdir()
    file = tmp_path / 'new.jsonl'
    spec.run(params(path=[str(tmp_path / 'p')], checks=['identity'], progress_file=str(file), progress_id=RUN), False)
    assert file.stat().st_mode & 0o777 == 0o600


def test_a_run_that_stops_says_why_in_its_done_line(tmp_path):
    file = tmp_path / 'progress.jsonl'
    with pytest.raises(probe.ProbeError, match='does not exist'):
        spec.run(params(path=[str(tmp_path / 'missing')], progress_file=str(file), progress_id=RUN), False)
    got = lines(file)
    assert [g['event'] for g in got] == ['done']          # no plan: nothing was probed
    assert got[0]['ok'] is False and got[0]['msg'] == f'{tmp_path / "missing"} does not exist'


def test_a_refused_progress_file_is_never_written_and_the_refusal_stands(tmp_path):
    (tmp_path / 'p').mkdir()
    target = tmp_path / 'target'
    target.write_text('')
    link = tmp_path / 'link.jsonl'
    link.symlink_to(target)
    with pytest.raises(probe.ProbeError, match='exists and is not a regular file'):
        spec.run(params(path=[str(tmp_path / 'p')], progress_file=str(link), progress_id=RUN), False)
    assert target.read_text() == ''                       # the symlink was not followed


def test_without_a_file_the_reporter_is_silent(tmp_path):
    reporter = progress.Reporter(None, RUN)
    reporter.plan(['/x'], ['identity'])
    reporter.check('/x', 'identity', {'status': 'pass', 'duration': 0.1})
    reporter.done(True)
    assert reporter.step == 1 and os.listdir(tmp_path) == []


def test_a_progress_file_that_cannot_be_written_stops_the_reporting_not_the_probe(tmp_path, monkeypatch):
    (tmp_path / 'p').mkdir()
    calls = []

    def full(*args, **kwargs):
        calls.append(args)
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(progress, 'append', full)
    out = spec.run(params(path=[str(tmp_path / 'p')], checks=['identity', 'fcntl_locks'],
                          progress_file=str(tmp_path / 'x.jsonl'), progress_id=RUN), False)
    assert out['ansible_facts']['storage_probe_single_verdict'] == 'safe'
    assert len(calls) == 1          # the plan failed: nothing more was tried
