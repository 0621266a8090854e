# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check one Cyrus IMAP configuration file: the command templates' ``validate:`` runs.

    python3 cyrusconf_cli.py lint --kind imapd [--cyr-info BIN [--cyrus-conf F]] FILE
    python3 cyrusconf_cli.py lint --kind cyrus --imapd-conf /etc/cyrus-ha/be1/imapd.conf [--bindir D] FILE

It exits 0 when the file is valid, 1 after printing ``FILE:LINE: message`` lines on stderr
otherwise (warnings are printed too, as ``FILE:LINE: warning: message``, and do not fail). With
``--cyr-info``, an imapd.conf that passes the collection's checks is also checked by Cyrus's own
``cyr_info conf-lint`` (option names Cyrus does not know; ``--cyrus-conf`` names the services whose
prefixed options are known).

The cyrus_instance role installs it in the support directory (/usr/local/lib/cyrus-ha) beside the
collection's module_utils it imports (cyrusconf.py, cyrusconf_lint.py, cyrusinstance.py, procfs.py).
Python 3.9+, standard library only.
"""

from __future__ import annotations

import argparse
import sys

try:
    from ansible_collections.cyrus.ha.plugins.module_utils import cyrusinstance
    from ansible_collections.cyrus.ha.plugins.module_utils.cyrusconf_lint import cyr_info_lint, lint_cyrus, lint_imapd
except ImportError:   # installed: the module_utils are beside this file, in the support directory
    import cyrusinstance
    from cyrusconf_lint import cyr_info_lint, lint_cyrus, lint_imapd


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog='cyrusconf_cli.py', description='Check Cyrus IMAP configuration files.')
    commands = result.add_subparsers(dest='command', required=True)
    lint = commands.add_parser('lint', help='check one imapd.conf or cyrus.conf; exit 1 on errors')
    lint.add_argument('--kind', choices=('imapd', 'cyrus'), required=True)
    lint.add_argument('--imapd-conf', help='(cyrus) the imapd.conf path every cmd= must pass with -C')
    lint.add_argument('--bindir', help='(cyrus) where bare program names are found (default: autodetect; '
                                       '"none" skips the check)')
    lint.add_argument('--cyr-info', help='(imapd) also run this cyr_info conf-lint on the file')
    lint.add_argument('--cyrus-conf', help='(imapd, with --cyr-info) the instance\'s cyrus.conf (its services)')
    lint.add_argument('--display-path', help='name to print instead of FILE')
    lint.add_argument('file')
    return result


def lint_file(args, text: str, shown: str, run=None) -> list:
    """The problems of the file, or None after a usage error (already printed)."""
    if args.kind == 'imapd':
        problems = lint_imapd(text, shown)
        if args.cyr_info and not any(p.severity == 'error' for p in problems):
            problems += cyr_info_lint(args.cyr_info, args.file, text, args.cyrus_conf, shown, run)
        return problems
    if not args.imapd_conf:
        sys.stderr.write('%s:0: --imapd-conf is required with --kind cyrus\n' % shown)
        return None
    bindir = args.bindir if args.bindir is not None else cyrusinstance.find_bindir()
    return lint_cyrus(text, shown, args.imapd_conf, None if bindir == 'none' else bindir)


def main(argv=None, run=None) -> int:
    args = parser().parse_args(argv)
    shown = args.display_path or args.file
    try:
        with open(args.file, encoding='utf-8', newline='') as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        sys.stderr.write('%s:0: cannot read: %s\n' % (shown, exc))
        return 1
    problems = lint_file(args, text, shown, run)
    if problems is None:
        return 1
    for problem in problems:
        sys.stderr.write('%s\n' % problem)
    return 1 if any(p.severity == 'error' for p in problems) else 0


if __name__ == '__main__':
    sys.exit(main())
