# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The command runners: real commands (sh, printf, sleep) through subprocess and through an AnsibleModule."""

from __future__ import annotations

import json
import os

import pytest

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args
from ansible_collections.cyrus.ha.plugins.module_utils import runner as runner_mod
from ansible_collections.cyrus.ha.plugins.module_utils.runner import ModuleRunner, ProcessRunner, checked_argv


@pytest.mark.parametrize('argv', ['ip addr show', b'ip', [], ['ip', 5], None, ('ip', None)])
def test_a_command_is_a_list_of_strings(argv):
    with pytest.raises(TypeError) as caught:
        checked_argv(argv)
    assert str(caught.value) == f'a command is a non-empty list of strings (no shell), not {argv!r}'
    with pytest.raises(TypeError):
        ProcessRunner()(argv)


def test_process_runner_runs_in_the_c_locale_and_finds_the_binary(monkeypatch):
    monkeypatch.setenv('LC_ALL', 'de_DE.UTF-8')
    run = ProcessRunner()
    assert run(['sh', '-c', 'printf "%s|%s" "$LC_ALL" "$0"', 'literal $HOME']) == (0, 'C|literal $HOME', '')
    assert os.path.isabs(run.binary('sh')) and run.binary('/bin/sh') == '/bin/sh'
    assert run(['sh', '-c', 'echo out; echo err >&2; exit 3']) == (3, 'out\n', 'err\n')


def test_process_runner_searches_the_sbin_directories_after_path(tmp_path, monkeypatch):
    tool = tmp_path / 'sbin' / 'cyrus-ha-tool'
    tool.parent.mkdir()
    tool.write_text('#!/bin/sh\necho found\n')
    tool.chmod(0o755)
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    monkeypatch.setattr(runner_mod, 'SBIN_DIRS', (str(tool.parent),))
    run = ProcessRunner()
    assert run.binary('cyrus-ha-tool') == str(tool)
    assert run(['cyrus-ha-tool']) == (0, 'found\n', '')


def test_process_runner_reports_failures_as_exit_statuses(tmp_path):
    run = ProcessRunner(timeout=0.2)
    assert run(['cyrus-ha-no-such-tool', '-x']) == (
        127, '', f'cyrus-ha-no-such-tool is not installed on this node (not found in PATH or '
                 f'{", ".join(runner_mod.SBIN_DIRS)})')
    assert run.binary('cyrus-ha-no-such-tool') is None
    assert run(['sleep', '5']) == (124, '', f'{run.binary("sleep")} did not finish within 0.2 s')
    script = tmp_path / 'not-executable'
    script.write_text('#!/bin/sh\n')
    assert run([str(script)]) == (126, '', f'{script} cannot be started: Permission denied')


def test_process_runner_replaces_bytes_that_are_not_utf8():
    assert ProcessRunner()(['printf', 'caf\\351\\n']) == (0, 'caf\ufffd\n', '')


class FakeModule:
    """get_bin_path and run_command as AnsibleModule has them, recorded."""

    def __init__(self, paths):
        self.paths = paths
        self.lookups = []
        self.commands = []

    def get_bin_path(self, name, required=False):
        self.lookups.append((name, required))
        return self.paths.get(name)

    def run_command(self, argv, **kwargs):
        self.commands.append((argv, kwargs))
        return 0, 'ok', ''

    def fail_json(self, **kwargs):
        raise SystemExit(kwargs)


def test_module_runner_looks_each_binary_up_once_and_passes_the_locale():
    module = FakeModule({'blkid': '/usr/sbin/blkid'})
    run = ModuleRunner(module)
    assert run(['blkid', '-o', 'export']) == (0, 'ok', '')
    assert run(['blkid', '-c', '/dev/null']) == (0, 'ok', '')
    assert run(['/usr/local/bin/other', '~', '$HOME']) == (0, 'ok', '')
    assert module.lookups == [('blkid', True)]
    assert module.commands == [
        (['/usr/sbin/blkid', '-o', 'export'], {'environ_update': {'LC_ALL': 'C'}, 'expand_user_and_vars': False}),
        (['/usr/sbin/blkid', '-c', '/dev/null'], {'environ_update': {'LC_ALL': 'C'}, 'expand_user_and_vars': False}),
        (['/usr/local/bin/other', '~', '$HOME'], {'environ_update': {'LC_ALL': 'C'}, 'expand_user_and_vars': False})]


def test_module_runner_fails_the_module_with_the_hint_for_a_missing_tool():
    module = FakeModule({})
    run = ModuleRunner(module, hints={'cibadmin': 'install Pacemaker first'})
    with pytest.raises(SystemExit) as caught:
        run.binary('cibadmin')
    assert caught.value.args[0] == {'msg': 'cibadmin is not installed on this node: install Pacemaker first'}
    assert module.lookups == [('cibadmin', False)] and module.commands == []


def module_result(capsys, body):
    with patch_module_args({}):
        module = AnsibleModule(argument_spec={})
        with pytest.raises(SystemExit):
            body(module)
    return json.loads(capsys.readouterr().out)


def test_module_runner_through_a_real_module(capsys, monkeypatch):
    monkeypatch.setenv('LC_ALL', 'de_DE.UTF-8')

    def body(module):
        run = ModuleRunner(module)
        rc, out, err = run(['sh', '-c', 'printf "%s|%s" "$LC_ALL" "$0"', '$HOME ~'])
        module.exit_json(rc=rc, out=out, sh=run.binary('sh'))
    result = module_result(capsys, body)
    assert (result['rc'], result['out']) == (0, 'C|$HOME ~') and os.path.isabs(result['sh'])

    def missing(module):
        ModuleRunner(module).binary('cyrus-ha-no-such-tool')
    result = module_result(capsys, missing)
    assert result['failed'] is True and 'cyrus-ha-no-such-tool' in result['msg']
