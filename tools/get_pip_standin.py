# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for the pip bootstrap script that `ansible-test --venv` would download.

ansible-test runs `python get_pip.py [pip options] PACKAGES --no-setuptools --no-wheel` in an
empty virtual environment. This does the same from the package index alone: ensurepip, then
`pip install` of the requested packages (the two --no-* flags belong to get-pip only).
"""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    args = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
    subprocess.run([sys.executable, '-m', 'ensurepip', '--default-pip'], check=True, stdout=subprocess.DEVNULL)
    return subprocess.run([sys.executable, '-m', 'pip', 'install', *args], check=False).returncode


if __name__ == '__main__':
    sys.exit(main())
