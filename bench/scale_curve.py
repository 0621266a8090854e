# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a backend's size costs: failover, instance start and deploy time at several mailbox counts.

The lab must be up with SAN disks large enough (`CYHA_SAN_MB=4096 make lab-up`: a sparse 4 GiB ext4 image
per backend with one inode per 4 KiB) and the Murder deployed (`make lab`, or playbooks/warm_spare.yml).
For each count, in increasing order, be1 is filled up to that many mailboxes, then measured:

- populate: mailboxes user.s000001... created over IMAP by the admin on be1 itself (each CREATE is
  pushed to the mupdate master by Cyrus, as any CREATE is), then --messages messages delivered to each
  by LMTP through fe1, one message to up to 100 recipients per transaction (Cyrus stores one copy per
  mailbox, hard-linked within the partition, with its own index record in each). Cyrus's own protocols,
  nothing written behind its back: the honest path, and the fast one that stays honest;
- start: be1's instance stopped and started again with its control script; the start (START section:
  ctl_cyrusdb -r, ctl_mboxlist -m pushing every mailbox to mupdate) and the time from the stop to the
  first login with SELECT through fe1, as a client sees it;
- failover: a planned drill of be1 under mail traffic (bench/drill_bench.py's drill): the clients' outage
  in the failover and in the failback, beside the drill's own figure;
- deploy: playbooks/warm_spare.yml with nothing to change.

Usage (root, repository root):
    .venv/bin/python bench/scale_curve.py [--counts 100,10000,50000] [--messages 5] [--json FILE]
Nothing here is a test: it prints a table. The mailboxes stay (a later run with larger counts adds to them).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import imaplib
import json
import os
import smtplib
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'lab', 'rigs'))
sys.path.insert(0, HERE)

import cyha_imap  # noqa: E402
import drill_bench  # noqa: E402  (one drill of be1, with the clients' outage from its traffic)
import labutil  # noqa: E402

BE1 = '198.51.100.121'
FE1 = '198.51.100.111'
ADMIN = ('cyrus', 'cyha-lab-admin')
ALICE = ('alice', 'cyha-lab-alice')
PREFIX = 'user.s'
CTL = ['python3', '/usr/local/lib/cyrus-ha/cyrus_instance_ctl.py']
CTL_ARGS = ['--imapd-conf', '/etc/cyrus-ha/be1/imapd.conf', '--cyrus-conf', '/etc/cyrus-ha/be1/cyrus.conf',
            '--pidfile', '/run/cyrus-ha/be1/master.pid', '--master', '/usr/lib/cyrus/bin/master', '--address', BE1,
            '--user', 'cyrus', '--group', 'mail', '--timeout', '600']
WORKERS = 4
RCPT_PER_MESSAGE = 100


def name(index: int) -> str:
    return f'{PREFIX}{index:06d}'


def existing() -> int:
    with cyha_imap.imap(BE1, *ADMIN) as conn:
        status, lines = conn.list('""', PREFIX + '%')
        assert status == 'OK', lines
        return sum(1 for line in lines if line)


def create(indexes: list[int]) -> None:
    with cyha_imap.imap(BE1, *ADMIN) as conn:
        conn.socket().settimeout(120)
        for index in indexes:
            status, detail = conn.create(name(index))
            if status != 'OK' and b'exists' not in b' '.join(d for d in detail if isinstance(d, bytes)).lower():
                raise SystemExit(f'CREATE {name(index)}: {status} {detail}')


def deliver(indexes: list[int], messages: int, tag: str) -> int:
    delivered = 0
    for start in range(0, len(indexes), RCPT_PER_MESSAGE):
        rcpts = [name(i)[len('user.'):] for i in indexes[start:start + RCPT_PER_MESSAGE]]
        for number in range(messages):
            body = (f'From: scale@cyrus-ha.invalid\r\nTo: many@cyrus-ha.invalid\r\nSubject: scale {tag} {number}\r\n'
                    f'Message-ID: <scale-{tag}-{start}-{number}-{os.urandom(6).hex()}@cyrus-ha.invalid>\r\n\r\n'
                    + 'x' * 2000 + '\r\n').encode()
            client = smtplib.LMTP(FE1, 24, timeout=300)
            try:
                refused = client.sendmail('scale@cyrus-ha.invalid', rcpts, body)
            finally:
                client.quit()
            if refused:
                raise SystemExit(f'LMTP refused {len(refused)} recipients, for example {sorted(refused.items())[:2]}')
            delivered += len(rcpts)
    return delivered


def chunks(items: list[int], parts: int) -> list[list[int]]:
    return [items[i::parts] for i in range(parts) if items[i::parts]]


def populate(count: int, messages: int) -> dict:
    have = existing()
    new = list(range(have + 1, count + 1))
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(create, chunks(new, WORKERS)))
    created = time.monotonic() - started
    # the frontends learn each new mailbox from the mupdate master: wait for the last one before delivering
    if new:
        assert labutil.poll(lambda: lmtp_accepts(name(new[-1])[len('user.'):]), 300, interval=1), \
            f'fe1 never learned {name(new[-1])} from the mupdate master'
    started = time.monotonic()
    tag = str(int(time.time()))
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        delivered = sum(pool.map(lambda part: deliver(part, messages, tag), chunks(new, WORKERS)))
    sent = time.monotonic() - started
    return {'mailboxes_before': have, 'created': len(new), 'create_s': round(created, 1),
            'create_per_s': round(len(new) / created, 1) if new and created else None,
            'delivered': delivered, 'deliver_s': round(sent, 1),
            'deliver_per_s': round(delivered / sent, 1) if delivered and sent else None}


def lmtp_accepts(user: str) -> bool:
    client = smtplib.LMTP(FE1, 24, timeout=30)
    try:
        client.ehlo_or_helo_if_needed()
        client.mail('scale@cyrus-ha.invalid')
        code, _text = client.rcpt(user)
        client.rset()
        return code == 250
    finally:
        client.quit()


def login_works() -> bool:
    try:
        with cyha_imap.imap(FE1, *ALICE) as conn:
            return conn.select('INBOX', readonly=True)[0] == 'OK'
    except (OSError, imaplib.IMAP4.error, AssertionError):
        return False


def be1(argv: list[str]) -> dict:
    proc = labutil.ansible('be1', 'ansible.builtin.command', json.dumps({'argv': argv}), check=False)
    if proc.returncode != 0:
        raise SystemExit(f'{argv[2]} of be1 failed: {proc.stdout[-2000:]}')
    return json.loads(proc.stdout[proc.stdout.index('{'):]) if '{' in proc.stdout else {}


def restart() -> dict:
    """Stop and start be1's instance where it runs (home); the client's view: stop to first login through fe1."""
    started = time.monotonic()
    be1(CTL + ['stop'] + CTL_ARGS)
    stopped = time.monotonic()
    be1(CTL + ['start'] + CTL_ARGS)
    up = time.monotonic()
    assert labutil.poll(login_works, 600, interval=0.1), 'alice cannot log in through fe1 after the restart'
    served = time.monotonic()
    return {'stop_s': round(stopped - started, 2), 'start_s': round(up - stopped, 2),
            'stop_to_login_s': round(served - started, 2)}


def volume_files() -> int:
    proc = labutil.ansible('be1', 'ansible.builtin.shell', 'find /srv/cyrus-ha/be1 -xdev | wc -l', check=False)
    lines = [line for line in proc.stdout.splitlines() if line.strip().isdigit()]
    return int(lines[-1]) if lines else -1


def deploy() -> float:
    started = time.monotonic()
    proc = labutil.run([os.path.join(labutil.BIN, 'ansible-playbook'), '-i', labutil.inventory(),
                        'playbooks/warm_spare.yml', *drill_bench.VARS[:-2]], timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f'deploy failed:\n{proc.stdout[-3000:]}')
    return round(time.monotonic() - started, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--counts', default='100,10000,50000')
    parser.add_argument('--messages', type=int, default=5, help='messages delivered to each new mailbox')
    parser.add_argument('--json', help='write the figures to this file')
    args = parser.parse_args()
    counts = sorted(int(c) for c in args.counts.split(','))
    rows = []
    with tempfile.TemporaryDirectory(prefix='cyha-scale-') as report_dir:
        for count in counts:
            row = {'mailboxes': count, **populate(count, args.messages)}
            row['files_on_volume'] = volume_files()
            row.update(restart())
            drill = drill_bench.drill('planned', count, report_dir, traffic=True)
            # the clients' outage: alice's prober, the longer of her logins' and her deliveries' (drill_bench)
            row.update({'drill_passed': drill['passed'], 'drill_failover_s': drill['failover_s'],
                        'client_failover_s': max(drill.get('client_login_failover_s', 0.0),
                                                 drill.get('client_deliver_failover_s', 0.0)),
                        'client_failback_s': max(drill.get('client_login_failback_s', 0.0),
                                                 drill.get('client_deliver_failback_s', 0.0))})
            row['deploy_s'] = deploy()
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump(rows, handle, indent=2)
    print()
    print('| mailboxes | files on be1\'s volume | create /s | deliver /s | instance start (s) | stop to first login '
          '(s) | drill failover (s) | clients\' failover outage (s) | clients\' failback outage (s) | deploy (s) |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {r["mailboxes"]} | {r["files_on_volume"]} | {r["create_per_s"]} | {r["deliver_per_s"]} | {r["start_s"]} | '
              f'{r["stop_to_login_s"]} | {r["drill_failover_s"]} | {r["client_failover_s"]} | {r["client_failback_s"]} | '
              f'{r["deploy_s"]} |')
    return 0 if all(r['drill_passed'] for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
