# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drill role's traffic script as it runs from the support directory: the files of its vars/main.yml
alone, imported as plain modules. Its refusals, each with its exact message; the traffic itself runs
against real Cyrus in tests/integration/test_warm_spare.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

TRAFFIC = ('drill', '__drill_traffic_files', '__drill_module_utils')


@pytest.fixture(name='script')
def fixture_script(tmp_path, role_support_files):
    directory = tmp_path / 'cyrus-ha'
    directory.mkdir()
    for path in role_support_files(*TRAFFIC):
        shutil.copyfile(path, directory / os.path.basename(path))
    return str(directory / 'cyrus_ha_traffic.py')


def run(argv: list) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, '-E', '-s', *argv], capture_output=True, text=True, check=False, cwd='/')
    assert proc.stderr == ''
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(name='profile')
def fixture_profile(tmp_path):
    path = tmp_path / 'run' / 'profile.json'
    path.parent.mkdir(mode=0o700)
    path.write_text(json.dumps({'imap_host': '127.0.0.1', 'tag': 't1', 'users': [{'name': 'a', 'password': 'p'}]}))
    path.chmod(0o600)
    return path


def test_the_support_files_are_the_script_and_what_it_imports(role_support_files):
    names = sorted(os.path.basename(p) for p in role_support_files(*TRAFFIC))
    assert names == ['cyrus_ha_traffic.py', 'imapcheck.py', 'mailinvariants.py', 'mailtraffic.py']


def test_a_profile_others_can_read_is_refused(script, profile):
    profile.chmod(0o644)
    assert run([script, 'start', '--profile', str(profile), '--dir', str(profile.parent)]) == (1, {
        'changed': False, 'failed': True,
        'msg': f'traffic profile {profile} is mode 0644: it holds passwords, make it 0600'})


def test_a_bad_profile_is_refused_naming_the_key(script, profile):
    profile.write_text(json.dumps({'imap_host': 'x', 'tag': 't', 'users': [], 'rate': 5}))
    assert run([script, 'start', '--profile', str(profile), '--dir', str(profile.parent)]) == (1, {
        'changed': False, 'failed': True,
        'msg': f'{profile}: traffic profile: users must be a non-empty list of {{name, password}}'})


def test_a_run_directory_others_can_write_to_is_refused(script, profile):
    profile.parent.chmod(0o777)
    try:
        code, answer = run([script, 'start', '--profile', str(profile), '--dir', str(profile.parent)])
    finally:
        profile.parent.chmod(0o700)
    assert (code, answer['msg']) == (1, f'{profile.parent} must be a directory of this user that no one else can write to')
    assert not os.path.exists(profile.parent / 'traffic.pid')


@pytest.mark.parametrize('backends, message', [
    ('[]', '--backends must be a non-empty JSON mapping of backend name to address'),
    ('{"be1": "198.51.100.121 -x"}', "--backends: the address of backend 'be1' must be a host name or an IP address, "
                                     "not '198.51.100.121 -x'"),
    ('{be1}', '--backends must be a JSON mapping of backend name to address: Expecting property name enclosed in '
              'double quotes: line 1 column 2 (char 1)'),
])
def test_bad_backends_are_refused_before_anything_is_read(script, profile, backends, message):
    journal = profile.parent / 'journal.jsonl'
    journal.write_text('')
    assert run([script, 'check', '--profile', str(profile), '--journal', str(journal), '--backends', backends]) == (
        1, {'changed': False, 'failed': True, 'msg': message})


def test_stop_without_a_run_says_so(script, tmp_path):
    assert run([script, 'stop', '--dir', str(tmp_path)]) == (1, {
        'changed': False, 'failed': True, 'msg': f'no traffic journal in {tmp_path}: the traffic never ran there'})


def test_a_journal_is_summarized_from_the_support_directory(script, tmp_path):
    journal = tmp_path / 'journal.jsonl'
    journal.write_text('{"op": "run", "t": 0, "outcome": "started"}\n'
                       '{"op": "fetch", "user": "a", "t": 1, "end": 2, "outcome": "failed", "kind": "select"}\n'
                       '{"op": "fetch", "user": "a", "t": 3, "end": 4, "outcome": "ok"}\n'
                       '{"op": "run", "t": 5, "outcome": "stopped"}\n{"op": "fe')
    code, answer = run([script, 'summary', '--journal', str(journal)])
    assert code == 0 and answer['summary']['outages']['fetch'] == {'windows': [[1, 4, 'a']], 'longest': 3,
                                                                   'by_user': {'a': 3}, 'gaps': [[1, 4, 'a']],
                                                                   'longest_gap': 3}
    assert answer['summary']['complete'] is True and answer['summary']['operations'] == 2


def test_a_missing_run_directory_is_a_clear_error(script, profile, tmp_path):
    assert run([script, 'start', '--profile', str(profile), '--dir', str(tmp_path / 'none')]) == (1, {
        'changed': False, 'failed': True,
        'msg': f'{tmp_path / "none"} cannot be used as the run directory: No such file or directory'})


def test_a_timeout_that_is_not_positive_is_refused(script, tmp_path):
    assert run([script, 'stop', '--dir', str(tmp_path), '--timeout', '-1']) == (1, {
        'changed': False, 'failed': True, 'msg': '--timeout must be above 0, not -1.0'})
