# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs last: the lab comes down leaving nothing behind, even after a failed `up`."""

from __future__ import annotations

import json
import os

import pytest

import labutil

pytestmark = pytest.mark.lab


def leftovers() -> list[str]:
    proc = labutil.lab('leftovers')
    return [line for line in proc.stdout.splitlines() if line.strip()]


def test_lab_down_leaves_nothing_behind(lab):
    assert leftovers(), 'the lab should be up before this test'
    proc = labutil.lab('down')
    assert proc.returncode == 0, proc.stderr
    assert leftovers() == []
    assert not [n for n in os.listdir('/run/netns') if n.startswith('cyha-')] if os.path.isdir('/run/netns') else True
    assert not os.path.exists(os.path.join(labutil.LAB_DIR, 'inventory.yml'))


def test_a_failed_up_is_undone_by_down():
    proc = labutil.lab('up', '--frontends', '1', '--backends', '1', '--spares', '1', CYHA_LAB_FAIL_AFTER='fe1')
    assert proc.returncode == 2
    assert 'injected failure after host fe1' in proc.stderr
    found = leftovers()
    assert 'netns cyha-mupdate' in found and 'netns cyha-fe1' in found and 'netns cyha-be1' not in found
    assert labutil.lab('down').returncode == 0
    assert leftovers() == []


def test_host_counts_are_parameters():
    try:
        proc = labutil.lab('up', '--frontends', '1', '--backends', '3', '--spares', '2', '--replica-pairs', '0')
        assert proc.returncode == 0, proc.stderr
        with open(labutil.inventory(), encoding='utf-8') as handle:
            text = handle.read()
        groups = json.loads(text[text.index('{'):])['all']['children']['cyha_lab']['children']
        assert sorted(groups['frontends']['hosts']) == ['fe1']
        assert sorted(groups['backends']['hosts']) == ['be1', 'be2', 'be3']
        assert sorted(groups['spares']['hosts']) == ['spare1', 'spare2']
        ping = labutil.ansible('cyha_lab', 'ansible.builtin.ping')
        assert ping.stdout.count('"ping": "pong"') == 8   # and the client
    finally:
        assert labutil.lab('down').returncode == 0
    assert leftovers() == []
