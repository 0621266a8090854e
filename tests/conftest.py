# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared pytest setup: make `ansible_collections.cyrus.ha` importable from this checkout."""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, 'build', 'collections')
LINK = os.path.join(COLLECTIONS, 'ansible_collections', 'cyrus', 'ha')

if not os.path.exists(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink('../../../..', LINK)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
# the tests' own helpers beside this file (pngdata.py)
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('ANSIBLE_CONFIG', os.path.join(REPO, 'ansible.cfg'))
