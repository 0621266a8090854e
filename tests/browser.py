# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The real headless browser the report tests open pages in: Debian's Chromium driven by its ChromeDriver
(packages chromium and chromium-driver), with the page's console kept for the tests to read."""

from __future__ import annotations

import contextlib
import shutil

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


@contextlib.contextmanager
def chromium(width: int, height: int):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which('chromium') or '/usr/bin/chromium'
    for argument in ('--headless=new', '--no-sandbox', '--disable-gpu', f'--window-size={width},{height}'):
        options.add_argument(argument)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    driver = webdriver.Chrome(service=Service(shutil.which('chromedriver') or '/usr/bin/chromedriver'), options=options)
    try:
        yield driver
    finally:
        driver.quit()
