# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Mermaid gantt of the drill's Markdown report rendered by Mermaid itself (the version pinned in
tests/quality/mermaid, installed from the npm registry with its lock) in a real headless browser (Debian's
Chromium): the chart parses, every phase of a lab drill is a bar or a milestone with its label, the outage is
marked, and the browser logged no error. The rendering is kept as build/reports/drill-mermaid.png."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from browser import chromium
from pngdata import png_pixels, png_size
from selenium.webdriver.support.ui import WebDriverWait

from ansible_collections.cyrus.ha.plugins.plugin_utils.drill_report import render

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURE = os.path.join(HERE, 'fixtures', 'lab-reports', 'drill', 'drill-be1-lab.json')
NPM_DIR = os.path.join(REPO, 'build', 'mermaid')
MERMAID_JS = os.path.join(NPM_DIR, 'node_modules', 'mermaid', 'dist', 'mermaid.min.js')


@pytest.fixture(name='mermaid_js', scope='module')
def fixture_mermaid_js() -> str:
    """Mermaid's browser bundle, installed once per checkout (npm ci from the committed lock), again when the
    lock changed."""
    def same(name: str) -> bool:
        installed = os.path.join(NPM_DIR, name)
        if not os.path.exists(installed):
            return False
        with open(os.path.join(HERE, 'mermaid', name), 'rb') as wanted, open(installed, 'rb') as have:
            return have.read() == wanted.read()

    if not (os.path.exists(MERMAID_JS) and same('package.json') and same('package-lock.json')):
        npm = shutil.which('npm')
        if not npm:
            pytest.fail('npm is needed to install Mermaid from the npm registry (Node.js and npm)')
        os.makedirs(NPM_DIR, exist_ok=True)
        for name in ('package.json', 'package-lock.json'):
            shutil.copyfile(os.path.join(HERE, 'mermaid', name), os.path.join(NPM_DIR, name))
        proc = subprocess.run([npm, 'ci', '--no-audit', '--no-fund', '--ignore-scripts'], cwd=NPM_DIR,
                              capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0 and os.path.exists(MERMAID_JS), proc.stdout + proc.stderr
    return MERMAID_JS


@pytest.fixture(name='browser')
def fixture_browser():
    with chromium(1280, 800) as driver:
        yield driver


def gantt_of(record: dict) -> str:
    text = render(record, 'markdown')
    return text.split('```mermaid\n', 1)[1].split('```', 1)[0]


def draw(browser, mermaid_js: str, gantt: str, tmp_path) -> str:
    """Render the gantt with Mermaid in the page; 'ok' or Mermaid's error."""
    page = tmp_path / 'gantt.html'
    page.write_text(
        '<!doctype html><html><head><meta charset="utf-8"><title>gantt</title>'
        f'<script src="{"file://" + mermaid_js}"></script></head><body><div id="chart"></div><script>'
        'mermaid.initialize({startOnLoad: false, securityLevel: "strict"});'
        f'mermaid.render("drill", {json.dumps(gantt)})'
        '.then(r => { document.getElementById("chart").innerHTML = r.svg; window.rendered = "ok"; })'
        '.catch(e => { window.rendered = "error: " + e; });'
        '</script></body></html>', encoding='utf-8')
    browser.get(page.as_uri())
    return WebDriverWait(browser, 30).until(lambda b: b.execute_script('return window.rendered'))


def labels(browser) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#chart text.taskText, #chart text.taskTextOutsideRight,"
        " #chart text.taskTextOutsideLeft')).map(t => t.textContent.trim())")


def test_the_drill_gantt_renders_in_mermaid_with_every_phase(mermaid_js, browser, tmp_path):
    with open(FIXTURE, encoding='utf-8') as handle:
        record = json.load(handle)
    gantt = gantt_of(record)
    outcome = draw(browser, mermaid_js, gantt, tmp_path)
    assert outcome == 'ok', f'{outcome}\n{gantt}'
    # each task line of the gantt is drawn: a bar (or a milestone) and its label
    tasks = [line.strip().rsplit(' :', 1)[0] for line in gantt.splitlines() if ' :' in line]
    assert len(tasks) == len(record['phases']) + len(record['outages']), (tasks, record['phases'])
    drawn = [browser.execute_script("return document.querySelectorAll('#chart rect.task').length"), labels(browser)]
    assert drawn[0] == len(tasks), drawn
    assert sorted(drawn[1]) == sorted(tasks), drawn[1]
    sections = browser.execute_script(
        "return Array.from(document.querySelectorAll('#chart text.sectionTitle')).map(t => t.textContent)")
    assert sections == ['failover', 'failback'], sections
    assert any(task.startswith('outage ') for task in drawn[1]), 'no outage bar'
    errors = [entry for entry in browser.get_log('browser') if entry['level'] == 'SEVERE']
    assert errors == [], errors
    chart = browser.find_element('css selector', '#chart svg')
    shot = chart.screenshot_as_png
    width, height = png_size(shot)
    assert width > 300 and height > 100 and len(set(png_pixels(shot))) > 20, (width, height)
    os.makedirs(os.path.join(REPO, 'build', 'reports'), exist_ok=True)
    with open(os.path.join(REPO, 'build', 'reports', 'drill-mermaid.png'), 'wb') as handle:
        handle.write(shot)


def test_labels_mermaid_would_read_as_syntax_are_drawn_as_written(mermaid_js, browser, tmp_path):
    """A phase or host name holding what Mermaid's gantt syntax reads (: # ; and a line break) is escaped in
    the Markdown and drawn as the admin wrote it."""
    record = {'phases': [{'phase': 'failure injected', 'at': 1000.0, 'host': 'be1'},
                         {'phase': 'step: #1; done\nnext', 'at': 1075.5, 'host': 'h:1'}]}
    gantt = gantt_of(record)
    outcome = draw(browser, mermaid_js, gantt, tmp_path)
    assert outcome == 'ok', f'{outcome}\n{gantt}'
    assert labels(browser) == ['failure injected (be1)', 'step: #1; done next (h:1)'], gantt
