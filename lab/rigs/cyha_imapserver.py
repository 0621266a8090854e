# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A standalone Cyrus instance (`cyhaimap`) on lab host be2, bound to 198.51.100.246, with an
administrator and alice: the real server the IMAP modules' tests talk to from another lab host.
It speaks IMAP on 143 (STARTTLS, and plaintext LOGIN for the tests of the plain path) and IMAPS on
993, with a certificate for its name and address signed by the lab's CA (cyha_tls.lab_ca_path()),
and IMAPS on 994 with one of the same CA for another name."""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess

import cyha_tls
import labutil

HOST, NETNS, ADDRESS, NAME = 'be2', 'cyha-be2', '198.51.100.246', 'cyhaimap'
SERVERNAME = 'cyhaimap.cyha.test'
ETC, CONFIGDIR, SPOOL, RUN = f'/etc/cyrus-ha/{NAME}', f'/var/lib/cyrus-ha/{NAME}', f'/var/spool/cyrus-ha/{NAME}', \
    f'/run/cyrus-ha/{NAME}'
BIN = '/usr/lib/cyrus/bin'
# IMAPS with a certificate of the lab's CA for another name (the service-specific tls_server_cert of
# the service "wrongname"): what a client checking host names must refuse.
WRONG_NAME_PORT = 994
PASSWORDS = {'cyrus': 'cyha-admin-secret', 'alice': 'cyha-alice-secret'}

IMAPD = f'''configdirectory: {CONFIGDIR}
partition-default: {SPOOL}
servername: {SERVERNAME}
syslog_prefix: cyrus-{NAME}
proc_path: {RUN}/proc
mboxname_lockpath: {RUN}/lock
lmtpsocket: {RUN}/lmtp
idlesocket: {RUN}/idle
notifysocket: {RUN}/notify
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {CONFIGDIR}/sasldb2
sasl_mech_list: PLAIN LOGIN
allowplaintext: yes
master_bind_errors_fatal: yes
admins: cyrus
altnamespace: no
unixhierarchysep: no
tls_server_cert: {ETC}/tls.pem
tls_server_key: {ETC}/tls.pem
wrongname_tls_server_cert: {ETC}/wrongname.pem
wrongname_tls_server_key: {ETC}/wrongname.pem
'''

CYRUS = f'''START {{
  recover cmd="{BIN}/ctl_cyrusdb -C {ETC}/imapd.conf -r"
}}
SERVICES {{
  imap cmd="imapd -C {ETC}/imapd.conf" listen="{ADDRESS}:143" prefork=0 maxchild=10
  imaps cmd="imapd -s -C {ETC}/imapd.conf" listen="{ADDRESS}:993" prefork=0 maxchild=10
  wrongname cmd="imapd -s -C {ETC}/imapd.conf" listen="{ADDRESS}:{WRONG_NAME_PORT}" prefork=0 maxchild=5
  lmtp cmd="lmtpd -a -C {ETC}/imapd.conf" listen="{ADDRESS}:24" prefork=0 maxchild=5
}}
EVENTS {{
}}
'''


def on_be2(command: str, check: bool = True):
    return labutil.ansible(HOST, 'ansible.builtin.command', command, check=check)


def alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat', encoding='utf-8') as handle:
            return handle.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except OSError:
        return False


def listening() -> bool:
    try:
        with socket.create_connection((ADDRESS, 143), timeout=2) as conn:
            return conn.recv(100).startswith(b'* OK')
    except OSError:
        return False


def start() -> int:
    """The instance, running, with user.alice and user.alice.Drill: its master's PID (remove() undoes it)."""
    try:
        return _start()
    except BaseException:
        remove(None)
        raise


def _start() -> int:
    cyrus, mail = pwd.getpwnam('cyrus').pw_uid, grp.getgrnam('mail').gr_gid
    for path in (ETC, CONFIGDIR, SPOOL):
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(ETC)
    authority = cyha_tls.lab_authority()
    cert, key = authority.issue([SERVERNAME, ADDRESS])
    wrong_cert, wrong_key = authority.issue(['somewhere-else.cyha.test'])
    for name, text in (('imapd.conf', IMAPD), ('cyrus.conf', CYRUS), ('tls.pem', key + cert),
                       ('wrongname.pem', wrong_key + wrong_cert)):
        with open(os.path.join(ETC, name), 'w', encoding='utf-8') as handle:
            handle.write(text)
        os.chmod(os.path.join(ETC, name), 0o640)
        os.chown(os.path.join(ETC, name), 0, mail)
    for sub in ('', 'db', 'log', 'msg', 'proc', 'quota', 'user', 'lock', 'socket', 'sieve'):
        os.makedirs(os.path.join(CONFIGDIR, sub), exist_ok=True)
    os.makedirs(SPOOL)
    for user, password in PASSWORDS.items():
        subprocess.run(['saslpasswd2', '-p', '-c', '-f', f'{CONFIGDIR}/sasldb2', '-u', SERVERNAME, user],
                       input=password, text=True, check=True)
    for root in (CONFIGDIR, SPOOL):
        for directory, dirs, files in os.walk(root):
            for entry in [directory] + [os.path.join(directory, f) for f in files]:
                os.chown(entry, cyrus, mail)
    subprocess.run(['ip', '-n', NETNS, 'addr', 'add', f'{ADDRESS}/24', 'dev', 'eth0'], check=True)
    on_be2(f'install -d -o cyrus -g mail -m 0750 {RUN}')
    on_be2(f'{BIN}/master -C {ETC}/imapd.conf -M {ETC}/cyrus.conf -p {RUN}/master.pid -d')
    assert labutil.poll(listening, 15), 'the test instance does not answer IMAP'
    pid = int(on_be2(f'cat {RUN}/master.pid').stdout.split('>>', 1)[-1])
    admin = imaplib.IMAP4(ADDRESS, 143, timeout=10)
    admin.login('cyrus', PASSWORDS['cyrus'])
    assert admin.create('user.alice')[0] == 'OK'
    assert admin.create('user.alice.Drill')[0] == 'OK'
    admin.logout()
    return pid


def remove(pid) -> None:
    """Stop the instance by its master's PID (None: by its pidfile, if any) and remove everything it had."""
    if pid is None:   # the pidfile is in be2's own /run
        found = on_be2(f'cat {RUN}/master.pid', check=False)
        with contextlib.suppress(ValueError, IndexError):
            pid = int(found.stdout.split('>>', 1)[-1].split()[0]) if found.returncode == 0 else None
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not labutil.poll(lambda: not alive(pid), 15):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    subprocess.run(['ip', '-n', NETNS, 'addr', 'del', f'{ADDRESS}/24', 'dev', 'eth0'], check=False)
    for path in (ETC, CONFIGDIR, SPOOL):
        shutil.rmtree(path, ignore_errors=True)


def add_user(user: str, password: str) -> None:
    """One more SASL user of the running instance (UTF-8 name and password allowed); remove_user() undoes it."""
    subprocess.run(['saslpasswd2', '-p', '-c', '-f', f'{CONFIGDIR}/sasldb2', '-u', SERVERNAME, user],
                   input=password.encode('utf-8'), check=True)
    os.chown(f'{CONFIGDIR}/sasldb2', pwd.getpwnam('cyrus').pw_uid, grp.getgrnam('mail').gr_gid)


def remove_user(user: str) -> None:
    subprocess.run(['saslpasswd2', '-d', '-f', f'{CONFIGDIR}/sasldb2', '-u', SERVERNAME, user], check=False)
