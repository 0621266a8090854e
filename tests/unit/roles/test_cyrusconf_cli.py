# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The config CLI the templates' validate: runs (roles/cyrus_instance/files/cyrusconf_cli.py): its exit
codes and messages as installed in the support directory, and its imapd mode that adds Cyrus's own
cyr_info conf-lint (a fake cyr_info, and the real one when Cyrus is installed)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SPEC = importlib.util.spec_from_file_location('cyrusconf_cli', os.path.join(REPO, 'roles', 'cyrus_instance', 'files',
                                                                            'cyrusconf_cli.py'))
cli = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(cli)

CONF = '/etc/cyrus-ha/be1/imapd.conf'
GOOD_CYRUS = f'''START {{
  recover cmd="ctl_cyrusdb -C {CONF} -r"
}}
SERVICES {{
  imap cmd="imapd -C {CONF}" listen="198.51.100.121:imap" prefork=0
  lmtpunix cmd="lmtpd -C{CONF}" listen="/run/cyrus-ha/be1/lmtp"
}}
EVENTS {{
  checkpoint cmd="ctl_cyrusdb -C {CONF} -c" period=30
}}
'''
GOOD_IMAPD = 'configdirectory: /var/lib/cyrus-ha/be1\nservername: be1.example.org\n'


@pytest.fixture(name='run_cli')
def fixture_run_cli(support_dir):
    """The CLI as the role installs it: run from the support directory, its module_utils beside it."""
    def run_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, '-E', '-s', str(support_dir / 'cyrusconf_cli.py'), *args],
                              capture_output=True, text=True, check=False, cwd='/')
    return run_cli


def test_cli_exit_codes_and_messages(tmp_path, run_cli):
    good = tmp_path / 'cyrus.conf'
    good.write_text(GOOD_CYRUS)
    ok = run_cli('lint', '--kind', 'cyrus', '--bindir', 'none', '--imapd-conf', CONF, str(good))
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, '', '')
    bad = tmp_path / 'bad.conf'
    bad.write_text(GOOD_CYRUS.replace('198.51.100.121:imap', 'imap'))
    failed = run_cli('lint', '--kind', 'cyrus', '--bindir', 'none', '--imapd-conf', CONF, str(bad))
    assert failed.returncode == 1
    assert failed.stderr == (f'{bad}:5: SERVICES entry imap: listen=imap has no address: master would bind every '
                             'address; write ADDRESS:imap\n')
    wrong_c = run_cli('lint', '--kind', 'cyrus', '--bindir', 'none', '--imapd-conf', '/etc/imapd.conf', str(good))
    assert wrong_c.returncode == 1 and wrong_c.stderr.count('not this instance') == 4, wrong_c.stderr
    imapd = tmp_path / 'imapd.conf'
    imapd.write_text('configdirectory: /var/lib/cyrus-ha/be1\nmupdate_server: m\n')
    warned = run_cli('lint', '--kind', 'imapd', str(imapd))
    assert (warned.returncode, warned.stderr) == (0, f'{imapd}:2: warning: mupdate_server m has no port: '
                                                     'mupdate_port is read by nothing, write m:3905\n')
    imapd.write_text('configdirectory /x\n')
    broken = run_cli('lint', '--kind', 'imapd', str(imapd))
    assert (broken.returncode, broken.stderr) == (1, f'{imapd}:1: invalid option name: expected "key: value"\n'
                                                     f'{imapd}:0: configdirectory is not set: every instance needs '
                                                     'its own\n')
    missing = run_cli('lint', '--kind', 'imapd', str(tmp_path / 'nope'))
    assert missing.returncode == 1 and missing.stderr.startswith(f'{tmp_path / "nope"}:0: cannot read:')
    no_conf = run_cli('lint', '--kind', 'cyrus', str(good))
    assert (no_conf.returncode, no_conf.stderr) == (1, f'{good}:0: --imapd-conf is required with --kind cyrus\n')


def test_imapd_mode_runs_cyr_info_after_the_collection_s_checks(tmp_path, capsys):
    imapd = tmp_path / 'imapd.conf'
    imapd.write_text(GOOD_IMAPD + 'servernmae: typo\n')
    calls = []

    def run(argv):
        calls.append(argv)
        return 0, 'servernmae: typo\n', ''
    argv = ['lint', '--kind', 'imapd', '--cyr-info', '/x/cyr_info', '--cyrus-conf', '/e/cyrus.conf',
            '--display-path', 'shown.conf', str(imapd)]
    assert cli.main(argv, run) == 1
    assert calls == [['/x/cyr_info', '-C', str(imapd), '-M', '/e/cyrus.conf', 'conf-lint']]
    assert capsys.readouterr().err == ('shown.conf:3: unknown option servernmae: Cyrus does not read it (cyr_info '
                                       'conf-lint); check its spelling\n')
    imapd.write_text(GOOD_IMAPD)
    assert cli.main(argv, lambda argv: (0, '', '')) == 0
    assert capsys.readouterr().err == ''
    # a file the collection already refuses is not handed to cyr_info
    imapd.write_text('configdirectory /x\n')
    assert cli.main(argv, lambda argv: pytest.fail('cyr_info ran on a file that does not parse')) == 1
    # without --cyr-info, no cyr_info
    imapd.write_text(GOOD_IMAPD + 'servernmae: typo\n')
    assert cli.main(argv[:3] + [str(imapd)], lambda argv: pytest.fail('cyr_info ran unasked')) == 0


def test_a_cyr_info_that_cannot_run_fails_the_validation(tmp_path, run_cli):
    imapd = tmp_path / 'imapd.conf'
    imapd.write_text(GOOD_IMAPD)
    failed = run_cli('lint', '--kind', 'imapd', '--cyr-info', str(tmp_path / 'no-cyr_info'), str(imapd))
    assert failed.returncode == 1
    assert failed.stderr.startswith(f'{imapd}:0: cyr_info conf-lint failed ({tmp_path / "no-cyr_info"}, exit status 127)')


CYR_INFO = shutil.which('cyr_info', path='/usr/lib/cyrus/bin:/usr/libexec/cyrus-imapd')


@pytest.mark.skipif(CYR_INFO is None, reason='Cyrus (cyr_info) is not installed')
def test_the_validate_command_with_the_real_cyr_info(run_cli):
    """As the role's template task runs it: the rendered file, then the instance's cyrus.conf (read by
    cyr_info as the cyrus user, so in a directory it can read)."""
    directory = tempfile.mkdtemp(prefix='cyha-cli-')
    try:
        os.chmod(directory, 0o755)
        imapd, cyrus = os.path.join(directory, 'imapd.conf'), os.path.join(directory, 'cyrus.conf')
        with open(cyrus, 'w', encoding='utf-8') as handle:
            handle.write(GOOD_CYRUS)
        with open(imapd, 'w', encoding='utf-8') as handle:
            handle.write(GOOD_IMAPD + 'imap_admins: admin\nbe2_password: pw\n')
        args = ('lint', '--kind', 'imapd', '--cyr-info', CYR_INFO, '--cyrus-conf', cyrus, imapd)
        ok = run_cli(*args)
        assert (ok.returncode, ok.stderr) == (0, '')
        with open(imapd, 'a', encoding='utf-8') as handle:
            handle.write('pop3_admins: admin\nallowusermove: yes\n')
        failed = run_cli(*args)
        assert failed.returncode == 1
        assert failed.stderr.splitlines() == [
            f'{imapd}:5: unknown option pop3_admins: Cyrus does not read it (cyr_info conf-lint); check its spelling',
            f'{imapd}:6: unknown option allowusermove: Cyrus does not read it (cyr_info conf-lint); check its spelling']
    finally:
        shutil.rmtree(directory, ignore_errors=True)
