# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the tests check of a drill run under mail traffic (lab/vars/traffic.yml: from the client host
through fe1 to alice on be1 and bob on be2), and the traffic's invariants checked again from the client
host with the drill role's script."""

from __future__ import annotations

import json
import re
import subprocess

TRAFFIC_DIR = '/var/lib/cyrus-ha/traffic'
BACKENDS = {'be1': '198.51.100.121', 'be2': '198.51.100.122'}
SCRIPT = '/usr/local/lib/cyrus-ha/cyrus_ha_traffic.py'


def check_drill_traffic(report: dict, markdown: str, failure: str) -> None:
    """What the traffic saw through the drill: every kind of operation ran, alice's (on be1) failed while
    be1 was away and came back, and every invariant holds on the backends."""
    traffic = report['traffic']
    assert traffic['complete'] is True and traffic['host'] == 'client'
    assert set(traffic['kinds']) == {'deliver', 'append', 'fetch', 'store', 'idle', 'login'}, traffic['kinds']
    for kind, stats in traffic['kinds'].items():
        assert stats['outcomes'].get('ok', 0) > 0, (kind, stats)
    # alice's prober (lab/vars/traffic.yml): a login every 0.1 s at most, so at least a few a second over the run
    assert traffic['kinds']['login']['total'] >= 2 * traffic['seconds'], (traffic['kinds']['login'], traffic['seconds'])
    login = traffic['outages']['login']
    assert 'bob' not in login['by_user'] and login['longest_gap'] > 0, login
    assert all(b - a >= 0.5 and user == 'alice' for a, b, user in login['gaps']), login
    # every delivery was accepted in the end, some only after being deferred while be1 was away
    assert traffic['deliveries']['failed'] == traffic['deliveries']['still_queued'] == 0, traffic['deliveries']
    assert traffic['deliveries']['deferred_then_accepted'] > 0, traffic['deliveries']
    # alice's clients saw the outage: windows that open after the failure and close within the drill
    alice = [w for w in traffic['outages']['any']['windows'] if w[2] == 'alice']
    assert alice and traffic['outages']['any']['by_user']['alice'] > 0, traffic['outages']['any']
    failure_at = next(p['at'] for p in report['phases'] if p['phase'] == 'failure injected')
    assert alice[0][0] >= failure_at - 1 and alice[-1][1] <= traffic['stopped'], (failure_at, alice)
    invariants = traffic['invariants']
    assert (invariants['ok'], invariants['violations'], invariants['errors']) == (True, [], []), invariants
    checked = invariants['checked']
    assert checked['acknowledged'] == checked['acknowledged_found'] > 0
    assert checked['mailboxes'] == {'alice': 'be1', 'bob': 'be2'}
    names = [c['name'] for c in report['checks'] if c['ok']]
    assert {'traffic: every invariant holds', 'traffic: the generator ran to its end',
            'traffic: every delivery accepted, none refused for good or left queued'} <= set(names)
    with open(markdown, encoding='utf-8') as handle:
        text = handle.read()
    assert '| operation | done | ok | not ok | errors | longest outage | ms p50 / p95 |' in text
    assert re.search(r'\| login \| \d+ \| \d+ \| \d+ \| .* \| \d+\.\d\d s \(\d+\), \d+\.\d\d s between two successes \|',
                     text), text
    by_user = traffic['outages']['any']['by_user']
    print(f'traffic ({failure}): {traffic["operations"]} operations at {traffic["rate"]}/s, longest outage as '
          f'clients saw it {by_user}; {checked["acknowledged"]} acknowledged messages, all found once')


def check_again(tag: str) -> dict:
    """The invariants of the traffic of the drill named `tag`, checked again now from the client host."""
    directory = f'{TRAFFIC_DIR}/{tag}'
    proc = subprocess.run(['ip', 'netns', 'exec', 'cyha-client', 'python3', SCRIPT,
                           'check', '--profile', f'{directory}/profile.json', '--journal', f'{directory}/journal.jsonl',
                           '--backends', json.dumps(BACKENDS)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)
