# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""alice's prober through fe1, run from the lab machine (on the lab's bridge) with the collection's own traffic
generator (module_utils/mailtraffic.py): a login (LOGIN, SELECT, LOGOUT) and an LMTP delivery every 0.1 s,
journalled. Its outage of one failure is the longest gap from alice's last success to her first success after
it, per kind of probe: what a user who keeps trying saw, measured by the client, not by the tool that moved
the service. The benches use it where no drill playbook runs the traffic (the cluster's unattended failover)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading

import labutil

sys.path.insert(0, os.path.join(labutil.REPO, 'plugins', 'module_utils'))
import mailtraffic  # noqa: E402  (the generator as the drill role ships it, beside imapcheck.py)

FE1_ADDR = '198.51.100.111'
ALICE = {'name': 'alice', 'password': 'cyha-lab-alice'}


class Prober:
    """Started before a failure, stopped once the service is back: its journal says what alice saw."""

    def __init__(self, interval: float = 0.1, tag: str = 'bench-prober'):
        self.directory = tempfile.mkdtemp(prefix='cyha-prober-')
        self.journal_path = os.path.join(self.directory, 'journal.jsonl')
        profile = mailtraffic.load_profile({
            'imap_host': FE1_ADDR, 'users': [ALICE], 'tag': tag, 'ca_path': os.path.join(labutil.LAB_DIR, 'tls', 'ca.pem'),
            'rate': 2, 'mix': {'deliver': 1}, 'idle_sessions': 0, 'probe_interval': interval, 'timeout': 5,
            'drain': 30})
        self.journal = mailtraffic.Journal(self.journal_path)
        self.traffic = mailtraffic.Traffic(profile, self.journal)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.traffic.run, args=(self.stopping.is_set,), daemon=True)

    def __enter__(self) -> Prober:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> dict:
        """Stop (the deliveries still queued are retried for up to 30 s) and summarize the journal."""
        if not self.stopping.is_set():
            self.stopping.set()
            self.thread.join(90)
            self.journal.close()
            self.summary = mailtraffic.summarize(mailtraffic.read_journal(self.journal_path))
            shutil.rmtree(self.directory, ignore_errors=True)    # the journal is read: nothing is left behind
        return self.summary

    def outage(self, since: float) -> dict:
        """alice's longest gap per kind of probe (login, deliver) among the gaps that open after since - 1 s
        (seconds since the epoch); 0.0 when she saw none."""
        out = {}
        for kind in ('login', 'deliver'):
            gaps = self.summary['outages'].get(kind, {}).get('gaps', [])
            out[kind] = round(max((b - a for a, b, user in gaps if user == 'alice' and a >= since - 1), default=0.0), 3)
        out['lost'] = int(self.summary['deliveries']['failed']) + int(self.summary['deliveries']['still_queued'])
        return out
