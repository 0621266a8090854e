# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Put tools/get_pip_standin.py where ansible-test looks for its cached pip bootstrap script.

The pip version comes from the installed ansible-test itself, so an ansible-core upgrade that
changes it needs no edit here. Run with the venv's Python.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

import ansible_test


def main() -> int:
    source = os.path.join(os.path.dirname(ansible_test.__file__), '_internal', 'python_requirements.py')
    with open(source, encoding='utf-8') as handle:
        match = re.search(r"pip='([0-9.]+)'", handle.read())
    if not match:
        print(f'cannot find the pip version ansible-test wants in {source}', file=sys.stderr)
        return 1
    cache = os.path.expanduser('~/.ansible/test/cache')
    os.makedirs(cache, exist_ok=True)
    target = os.path.join(cache, 'get_pip_%s.py' % match.group(1).replace('.', '_'))
    here = os.path.dirname(os.path.abspath(__file__))
    shutil.copyfile(os.path.join(here, 'get_pip_standin.py'), target)
    return 0


if __name__ == '__main__':
    sys.exit(main())
