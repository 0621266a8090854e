# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The page of a lab run (lab/report_index.py, written by `make lab`) opened in a real headless browser:
Debian's Chromium driven by its ChromeDriver. The reports are a drill's real output under mail traffic
(fixtures/lab-reports: JSON, Markdown and SVG timeline of a lab drill) and a storage report built by
the collection's own storage_report from an unsafe result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from browser import chromium
from pngdata import png_pixels, png_size

from ansible_collections.cyrus.ha.plugins.plugin_utils.storage_report import CROSS, build

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'lab-reports')
WIDTH, HEIGHT = 1280, 1600


def check(name, status='pass', reason='ok'):
    return {'name': name, 'status': status, 'reason': reason, 'evidence': {}, 'duration': 0.1}


def storage_result() -> dict:
    """be1 and be2 sharing /srv/mail where be2 is granted a lock be1 holds."""
    def cross(me, **over):
        checks = {name: check(name) for name in CROSS}
        checks.update(over)
        return {'path': '/srv/mail', 'me': me, 'leader': 'be1', 'peers': ['be1', 'be2'],
                'verdict': 'unsafe' if over else 'safe', 'checks': checks}
    single = {'path': '/srv/mail', 'verdict': 'safe', 'checks': {'fcntl_locks': check('fcntl_locks')}}
    leader = dict(check('lock_exclusion', 'fail', 'be2 was granted the lock be1 holds'),
                  evidence={'failed_peers': ['be2'], 'gone': []})
    data = {'be1': {'single': single, 'cross': cross('be1', lock_exclusion=leader)},
            'be2': {'single': single, 'cross': cross('be2', lock_exclusion=check('lock_exclusion', 'fail', 'granted here'))}}
    return build(data)


@pytest.fixture(name='reports')
def fixture_reports(tmp_path):
    directory = tmp_path / 'reports'
    shutil.copytree(FIXTURES, directory)
    (directory / 'hosts.txt').write_text('host     hostname  address        kernel\n----\nbe1      be1       198.51.100.21  6.1\n',
                                         encoding='utf-8')
    (directory / 'storage-probe-srv-mail.json').write_text(json.dumps(storage_result()), encoding='utf-8')
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'lab', 'report_index.py'), str(directory)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, str(directory / 'index.html')), proc.stderr
    return directory


@pytest.fixture(name='browser')
def fixture_browser():
    with chromium(WIDTH, HEIGHT) as driver:
        yield driver


def test_the_lab_run_page_opens_in_a_browser_with_every_report(reports, browser, tmp_path):
    browser.get((reports / 'index.html').as_uri())
    assert browser.title.startswith('cyrus.ha lab run, ')
    # the summary at the top: the storage verdict and the drill's result, in the report's words
    summary = browser.execute_script(
        "return Array.from(document.querySelectorAll('table')[0].rows).slice(1).map(r => [r.cells[0].innerText, "
        "r.cells[1].innerText, r.cells[1].className])")
    assert summary == [['storage /srv/mail', 'unsafe', 'bad'], ['drill drill-be1-lab', 'passed', 'ok']]
    # the drill's timeline is an image the browser could decode, at the SVG's own width
    images = browser.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert images == [['drill/drill-be1-lab.svg', 900]]
    text = browser.find_element('tag name', 'body').text
    assert 'be2 was granted the lock be1 holds' in text or 'granted here' in text
    assert 'longest outage per user' in text and 'alice' in text
    # every link names a file that is there
    hrefs = browser.execute_script("return Array.from(document.links).map(a => a.getAttribute('href'))")
    assert hrefs and all((reports / href).is_file() for href in hrefs), hrefs
    assert browser.get_log('browser') == [], 'the page logged to the console'
    shot = tmp_path / 'index.png'
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    viewport = browser.execute_script('return [window.innerWidth * devicePixelRatio, window.innerHeight * devicePixelRatio]')
    assert png_size(data) == tuple(viewport) and viewport[0] == WIDTH
    assert len(set(png_pixels(data))) > 50, 'a blank page'


def test_an_empty_directory_says_what_to_run(tmp_path, browser):
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'lab', 'report_index.py'), str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    browser.get((tmp_path / 'index.html').as_uri())
    assert 'No report in this directory yet: run make lab.' in browser.find_element('tag name', 'body').text


def test_a_missing_directory_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'lab', 'report_index.py'), str(tmp_path / 'none')],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stderr) == (2, 'usage: report_index.py REPORTS_DIRECTORY (an existing directory)\n')
