# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""metadata_deep on a real local directory: the curve batch by batch, progress as it goes, the stops
(disk budget, free space, time) and nothing left behind whatever stopped it."""

from __future__ import annotations

import json
import os
import time

import pytest

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import deep
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import probe
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import spec


def test_tree_sizes_double_from_1024_to_the_largest():
    assert deep.tree_sizes(1024) == [1024]
    assert deep.tree_sizes(5000) == [1024, 2048, 4096, 5000]
    assert deep.tree_sizes(8192) == [1024, 2048, 4096, 8192]


def test_the_curve_is_reported_batch_by_batch_and_the_tree_removed(tmp_path):
    progress = tmp_path / 'progress.jsonl'
    (tmp_path / 'work').mkdir()
    out = deep.metadata_deep(str(tmp_path / 'work'), largest=4096, progress_file=str(progress))
    assert out['status'] in ('pass', 'warn'), out['reason']
    curve = out['evidence']['curve']
    assert [row['files'] for row in curve] == [1024, 2048, 4096]
    assert all(row['create_per_s'] > 0 and row['stat_per_s'] > 0 and row['open_per_s'] > 0 for row in curve)
    lines = [json.loads(line) for line in progress.read_text().splitlines()]
    assert lines == curve                                   # each batch was written as it ended
    assert out['evidence']['removed']['files'] == 4096
    assert os.listdir(tmp_path / 'work') == []             # the tree and its root are gone
    if out['status'] == 'pass':
        assert out['reason'].startswith('no fall-off up to 4096 files: create ')


@pytest.mark.parametrize('args, stop', [
    (dict(size=8192, files=4096, used=40 * deep.MIB, budget=64 * deep.MIB, free=10 ** 12, total=10 ** 12, left=None,
          last_seconds=1.0, create_rate=1000.0),
     'the batch to 8192 files would take the tree past the disk budget of 64 MiB (40 MiB used by 4096 files)'),
    (dict(size=8192, files=4096, used=4 * deep.MIB, budget=10 ** 12, free=8 * deep.MIB, total=100 * deep.MIB,
          left=None, last_seconds=1.0, create_rate=1000.0),
     'the batch to 8192 files would leave under 5% of the filesystem free'),
    (dict(size=8192, files=4096, used=4 * deep.MIB, budget=10 ** 12, free=10 ** 12, total=10 ** 12, left=5.0,
          last_seconds=1.0, create_rate=1000.0),
     'the batch to 8192 files would not finish (and the tree be removed) in the 5 s left of the time budget '
     '(about 14 s needed)'),
    (dict(size=8192, files=4096, used=4 * deep.MIB, budget=10 ** 12, free=10 ** 12, total=10 ** 12, left=60.0,
          last_seconds=1.0, create_rate=1000.0), ''),
])
def test_growth_stops_before_a_batch_that_breaks_a_budget(args, stop):
    assert deep.why_stop(**args) == stop


def test_a_tight_budget_stops_growth_and_still_reports_and_cleans_up(tmp_path):
    (tmp_path / 'work').mkdir()
    out = deep.metadata_deep(str(tmp_path / 'work'), largest=100000, budget_bytes=deep.MIB, deadline=None)
    if not out['evidence']['curve']:        # a filesystem whose first 1024 files already take the budget
        assert out['status'] == 'skip'
    else:
        assert 'stopped at' in out['reason'] or out['status'] == 'warn'
        assert 'disk budget of 1 MiB' in out['evidence']['stopped']
    assert os.listdir(tmp_path / 'work') == []


def test_the_deadline_stops_growth(tmp_path):
    (tmp_path / 'work').mkdir()
    out = deep.metadata_deep(str(tmp_path / 'work'), largest=10 ** 7, deadline=time.monotonic() + 3)
    assert 'time budget' in out['evidence']['stopped']
    assert out['evidence']['curve'] and out['evidence']['curve'][-1]['files'] < 10 ** 7
    assert os.listdir(tmp_path / 'work') == []


def test_an_error_mid_run_still_removes_every_file(tmp_path, monkeypatch):
    (tmp_path / 'work').mkdir()
    real_create = deep.scale._create
    made = []

    def create(path):
        if len(made) == 1500:
            raise OSError(28, 'No space left on device')
        real_create(path)
        made.append(path)
    monkeypatch.setattr(deep.scale, '_create', create)
    with pytest.raises(OSError):
        deep.metadata_deep(str(tmp_path / 'work'), largest=4096)
    assert os.listdir(tmp_path / 'work') == []


def test_deep_runs_only_when_named():
    assert 'metadata_deep' not in probe.select_checks(['all'])
    assert probe.select_checks(['all', 'metadata_deep'])[-1] == 'metadata_deep'
    assert probe.select_checks(['metadata_deep']) == ['metadata_deep']


@pytest.mark.parametrize('extra, message', [
    (dict(deep_files=100), 'deep_files'),
    (dict(deep_budget_mb=1), 'deep_budget_mb'),
    (dict(progress_file='relative.jsonl'), 'progress_file relative.jsonl must be an absolute path in an existing directory'),
    (dict(progress_file='/nonexistent/dir/p.jsonl'), 'must be an absolute path in an existing directory'),
    (dict(progress_file='/etc'), 'progress_file /etc exists and is not a regular file'),
])
def test_bad_deep_options_are_refused_before_anything_runs(tmp_path, extra, message):
    params = {key: spec_default['default'] if 'default' in spec_default else None
              for key, spec_default in spec.argument_spec().items()}
    params.update(path=[str(tmp_path)], checks=['metadata_deep'], **extra)
    with pytest.raises(probe.ProbeError, match=message.replace('(', r'\(').replace(')', r'\)')):
        spec.validate(params)
