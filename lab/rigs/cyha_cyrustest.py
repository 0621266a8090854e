# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small real Cyrus instance ``cyhatest`` on lab host be2, bound to 198.51.100.245, started
directly by PID and stopped by PID: what the cyrus_facts and cyrus_config tests run against."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess

import labutil

HOST = 'be2'
NETNS = 'cyha-be2'
ADDRESS = '198.51.100.245'
NAME = 'cyhatest'
ETC = f'/etc/cyrus-ha/{NAME}'
IMAPD = f'{ETC}/imapd.conf'
CYRUS = f'{ETC}/cyrus.conf'
CONFIGDIR = f'/var/lib/cyrus-ha/{NAME}'
SPOOL = f'/var/spool/cyrus-ha/{NAME}'
RUN = f'/run/cyrus-ha/{NAME}'
PIDFILE = f'{RUN}/master.pid'
MASTER = '/usr/lib/cyrus/bin/master'
BIN = '/usr/lib/cyrus/bin'

IMAPD_TEXT = f'''# cyhatest: a test instance of the cyrus.ha integration tests
configdirectory: {CONFIGDIR}
partition-default: {SPOOL}
servername: cyhatest.cyha.test
syslog_prefix: cyrus-{NAME}
proc_path: {RUN}/proc
mboxname_lockpath: {RUN}/lock
lmtpsocket: {RUN}/lmtp
idlesocket: {RUN}/idle
notifysocket: {RUN}/notify
sasl_pwcheck_method: auxprop
sasl_sasldb_path: {CONFIGDIR}/sasldb2
master_bind_errors_fatal: yes
admins: cyrus
altnamespace: no
unixhierarchysep: no
'''

CYRUS_TEXT = f'''# cyhatest: a test instance of the cyrus.ha integration tests
START {{
  recover\tcmd="{BIN}/ctl_cyrusdb -C {IMAPD} -r"
}}

SERVICES {{
  imap\tcmd="imapd -C {IMAPD}" listen="{ADDRESS}:143" prefork=0 maxchild=5
  lmtpunix\tcmd="lmtpd -C {IMAPD}" listen="{RUN}/lmtp" prefork=0 maxchild=2
}}

EVENTS {{
  checkpoint\tcmd="ctl_cyrusdb -C {IMAPD} -c" period=30
}}
'''

# Files put in the partition before start: their count and bytes are what facts must report.
PARTITION_FILES = {'a': b'x' * 100, 'sub/b': b'y' * 50}


def on_host(command: str, check: bool = True) -> subprocess.CompletedProcess:
    """A command on be2 over SSH (its own /run), as an argv string for ansible.builtin.command."""
    return labutil.ansible(HOST, 'ansible.builtin.command', command, check=check)


def proc_state(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/stat', encoding='utf-8') as handle:
            return handle.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return ''


def alive(pid: int) -> bool:
    return proc_state(pid) not in ('', 'Z', 'X')


def master_pid():
    out = on_host(f'cat {PIDFILE}', check=False)
    for line in out.stdout.splitlines():
        if line.strip().isdigit():
            return int(line.strip())
    return None


def imap_banner(timeout: float = 5) -> str:
    with socket.create_connection((ADDRESS, 143), timeout=timeout) as conn:
        return conn.recv(200).decode('ascii', 'replace')


def write(path: str, text: str, mode: int = 0o640) -> None:
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(text)
    os.chmod(path, mode)
    os.chown(path, 0, grp.getgrnam('mail').gr_gid)


def make_instance() -> None:
    cyrus = pwd.getpwnam('cyrus')
    mail = grp.getgrnam('mail').gr_gid
    os.makedirs(ETC, exist_ok=True)
    write(IMAPD, IMAPD_TEXT)
    write(CYRUS, CYRUS_TEXT)
    for sub in ('', 'db', 'log', 'msg', 'proc', 'quota', 'user', 'lock', 'socket', 'sieve'):
        os.makedirs(os.path.join(CONFIGDIR, sub), exist_ok=True)
    os.makedirs(SPOOL, exist_ok=True)
    for name, data in PARTITION_FILES.items():
        path = os.path.join(SPOOL, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as handle:
            handle.write(data)
    for root in (CONFIGDIR, SPOOL):
        for directory, dirs, files in os.walk(root):
            for entry in [directory] + [os.path.join(directory, f) for f in files]:
                os.chown(entry, cyrus.pw_uid, mail)
    on_host(f'install -d -o cyrus -g mail -m 0750 {RUN}')


def start() -> int:
    on_host(f'{MASTER} -C {IMAPD} -M {CYRUS} -p {PIDFILE} -d')
    pid = labutil.poll(master_pid, 10)
    assert pid, 'master wrote no pidfile'
    assert labutil.poll(_listening, 10), 'master does not listen on 198.51.100.245:143'
    return pid


def _listening() -> bool:
    try:
        return imap_banner(2).startswith('* OK')
    except OSError:
        return False


def stop(pid) -> None:
    if pid and alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not labutil.poll(lambda: not alive(pid), 15):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            labutil.poll(lambda: not alive(pid), 5)


def address(action: str) -> None:
    subprocess.run(['ip', '-n', NETNS, 'addr', action, f'{ADDRESS}/24', 'dev', 'eth0'], check=False,
                   capture_output=True)


def remove_instance() -> None:
    on_host(f'rm -rf {RUN}', check=False)
    for path in (ETC, CONFIGDIR, SPOOL):
        shutil.rmtree(path, ignore_errors=True)
