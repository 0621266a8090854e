# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the docs site offline: antsibull-docs writes the collection's plugin, role and guide pages
(docs/docsite) as the controller resolves cyrus.ha, then Sphinx makes HTML of them. Any warning fails.

    python tools/docs/build.py [OUTDIR]      (default build/docs: OUTDIR/rst, OUTDIR/html)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def main() -> int:
    out = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, 'build', 'docs'))
    rst, html = os.path.join(out, 'rst'), os.path.join(out, 'html')
    for path in (rst, html):
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(rst)
    os.chmod(rst, 0o755)   # antsibull-docs wants its output directory writable by itself only
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get('PATH', ''), CYRUS_HA_DOCS_OUT=out,
               ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'))
    steps = [
        [os.path.join(bindir, 'antsibull-docs'), '--config-file', os.path.join(HERE, 'antsibull-docs.cfg'),
         'collection', '--use-current', '--fail-on-error', '--cleanup', 'everything', '--dest-dir', rst, 'cyrus.ha'],
        [os.path.join(bindir, 'sphinx-build'), '-b', 'html', '-c', HERE, '-W', '--keep-going', '-n', '-q', rst, html],
    ]
    for number, argv in enumerate(steps):
        if number == 1:
            shutil.copy(os.path.join(HERE, 'index.rst'), os.path.join(rst, 'index.rst'))
        if subprocess.run(argv, cwd=REPO, env=env, check=False).returncode != 0:
            print(f'docs: {os.path.basename(argv[0])} failed', file=sys.stderr)
            return 1
    print(f'docs: {os.path.join(html, "index.html")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
