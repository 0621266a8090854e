# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Install the Debian packages that bindep.txt lists for the given profiles, when any is missing.

    python3 tools/install-deps.py [PROFILE ...]      (default profiles: lab test)

Only dpkg-platform lines are read; a package is installed when `dpkg-query` says it is not.
`apt-get update` runs only when something must be installed, so a second run is instant.
"""

from __future__ import annotations

import os
import subprocess
import sys


def wanted_packages(path: str, profiles: set[str]) -> list[str]:
    packages = []
    with open(path, encoding='utf-8') as handle:
        for raw in handle:
            line = raw.split('#', 1)[0].strip()
            if not line:
                continue
            name, dummy, rest = line.partition(' ')
            selectors = rest.strip().strip('[]').split()
            platforms = [s for s in selectors if s.startswith('platform:')]
            tags = {s for s in selectors if not s.startswith('platform:') and not s.startswith('!')}
            if platforms and 'platform:dpkg' not in platforms:
                continue
            if tags and not tags & profiles:
                continue
            packages.append(name)
    return packages


def missing(packages: list[str]) -> list[str]:
    absent = []
    for package in packages:
        proc = subprocess.run(['dpkg-query', '-W', '-f=${db:Status-Status}', package],
                              capture_output=True, text=True, check=False)
        if proc.stdout.strip() != 'installed':
            absent.append(package)
    return absent


def main() -> int:
    profiles = set(sys.argv[1:]) or {'lab', 'test'}
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    absent = missing(wanted_packages(os.path.join(here, 'bindep.txt'), profiles))
    if not absent:
        return 0
    if os.geteuid() != 0:
        print(f"install-deps: missing Debian packages (run as root): {' '.join(absent)}", file=sys.stderr)
        return 1
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    print(f"install-deps: installing {' '.join(absent)}", file=sys.stderr)
    subprocess.run(['apt-get', 'update', '-qq'], check=True, env=env)
    subprocess.run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', *absent], check=True, env=env)
    return 0


if __name__ == '__main__':
    sys.exit(main())
