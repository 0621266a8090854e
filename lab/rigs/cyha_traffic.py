# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the tests check of a drill run under mail traffic (lab/vars/traffic.yml: from the client host
through fe1 to alice and mail01-05 on be1, bob and mail06-10 on be2), the traffic's invariants checked
again from the client host with the drill role's script, and the Murder's mailbox lists compared."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile

import labutil

try:
    from ansible_collections.cyrus.ha.plugins.module_utils import mailinvariants
except ImportError:     # bench/certify.py: plugins/module_utils on the path
    import mailinvariants

TRAFFIC_DIR = '/var/lib/cyrus-ha/traffic'
BACKENDS = {'be1': '198.51.100.121', 'be2': '198.51.100.122'}
SCRIPT = '/usr/local/lib/cyrus-ha/cyrus_ha_traffic.py'
# where the Murder's mailbox lists are read: every host of the lab's Murder
LIST_HOSTS = 'mupdate_master:frontends:backends:spares:replicas'


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
    assert all(b - a >= 0.5 - 1e-3 and user == 'alice' for a, b, user in login['gaps']), login
    # every delivery was accepted in the end. alice's prober's deliveries went without a success while be1 was
    # away: deferred by the frontend (connection refused: a stopped instance) or held until the address came
    # back (a node that went silent: the frontend's connect waits), which of the two depends on the failure
    # and on timing, so the gap is what is asserted, not the deferrals
    assert traffic['deliveries']['failed'] == traffic['deliveries']['still_queued'] == 0, traffic['deliveries']
    delivery_gaps = [b - a for a, b, user in traffic['outages']['deliver']['gaps'] if user == 'alice']
    assert delivery_gaps and max(delivery_gaps) >= 0.5, (traffic['outages']['deliver'], traffic['deliveries'])
    # alice's clients saw the outage: windows that open after the failure and close within the drill
    alice = [w for w in traffic['outages']['any']['windows'] if w[2] == 'alice']
    assert alice and traffic['outages']['any']['by_user']['alice'] > 0, traffic['outages']['any']
    failure_at = next(p['at'] for p in report['phases'] if p['phase'] == 'failure injected')
    assert alice[0][0] >= failure_at - 1 and alice[-1][1] <= traffic['stopped'], (failure_at, alice)
    invariants = traffic['invariants']
    assert (invariants['ok'], invariants['violations'], invariants['errors']) == (True, [], []), invariants
    checked = invariants['checked']
    assert checked['acknowledged'] == checked['acknowledged_found'] > 0
    # the lab profile's twelve users, each INBOX on its one backend
    homes = dict({'alice': 'be1', 'bob': 'be2'}, **{f'mail{i:02d}': 'be1' if i <= 5 else 'be2' for i in range(1, 11)})
    assert checked['mailboxes'] == homes, checked['mailboxes']
    # the Murder's mailbox lists: the mupdate master's is the union of the backends', and both frontends hold the same
    lists = invariants['murder_lists']
    assert 'mupdate-list' in invariants['invariants']
    assert lists['mupdate_master'] == 'mupdate@mupdate' and lists['frontends'] == ['fe1@fe1', 'fe2@fe2'], lists
    assert {'be1-svc.cyha.test', 'be2-svc.cyha.test'} <= set(lists['backends']), lists
    assert lists['mupdate_mailboxes'] == lists['mailboxes'] >= 12 and lists['violations_by_kind'] == {}, lists
    names = [c['name'] for c in report['checks'] if c['ok']]
    assert {'traffic: every invariant holds', 'traffic: the generator ran to its end',
            'traffic: the mupdate master lists what the backends hold, the frontends the same',
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


def murder_lists() -> dict:
    """The mupdate-list invariant now, as the drill role checks it: cyrus.ha.cyrus_facts with mailbox_lists on
    every host of the Murder, compared (mailinvariants.mupdate_list, the cyrus.ha.mupdate_list_check filter's).
    A host whose facts could not be gathered is an error in the result."""
    with tempfile.TemporaryDirectory(prefix='cyha-lists-') as tree:
        proc = labutil.ansible(LIST_HOSTS, 'cyrus.ha.cyrus_facts', 'partition_usage=false mailbox_lists=true',
                               '--tree', tree, check=False)
        hosts = {}
        for host in sorted(os.listdir(tree)):
            with open(os.path.join(tree, host), encoding='utf-8') as handle:
                hosts[host] = (json.load(handle).get('ansible_facts') or {}).get('cyrus')
    result = mailinvariants.mupdate_list(hosts)
    if proc.returncode != 0:
        result['ok'] = False
        result['errors'].append(f'cyrus.ha.cyrus_facts failed on a host: {proc.stdout[-1000:]}')
    return result
