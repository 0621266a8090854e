"""A certification run on the built-in lab: a seeded random sequence of failures under mail traffic,
with every invariant checked after each one, in the manner of Pacemaker's CTS and of Jepsen.

The lab must be up and deployed with the warm-spare pairs (`make lab` does both). Mail traffic runs
from the lab's client host through fe1 for the whole run (lab/vars/traffic.yml, the drill role's
traffic_start: LMTP deliveries retried as an MTA does, IMAP APPEND, FETCH, STORE, idle sessions) to
twelve users: alice and mail01-05 on be1, bob and mail06-10 on be2. Then, failure after failure (kinds
drawn with the seed), on both engines:

  the Ansible engine (the collection's runbooks move the instance):
    planned          the backend moves to the other node of its pair (failover.yml / failback.yml)
    instance-killed  SIGKILL to every process of the backend instance, then the move (the node answers)
    link-down        the node running the backend drops off the network; the move is unplanned, the
                     node fenced first (lab/hooks/fence_home.yml); then its link comes back
    frontend-killed  SIGKILL to every process of fe1's instance; restarted 2 s later, as a service
                     manager would
    mupdate-killed   SIGKILL to every process of the mupdate master; restarted 2 s later
  Pacemaker (cyrus.ha.cluster runs be1 on the nodes be1 and spare; nothing is done but the injection):
    node-crash       the node running be1 is powered off (the lab's power switch); the cluster fences it
                     and starts be1 on the other node
    node-hang        every process of the node running be1 is stopped (SIGSTOP); the cluster fences it
  A fenced node is powered on again and rejoins the cluster before the next failure.

With a Pacemaker kind in the run, the cluster is formed first (playbooks/cluster.yml) and the Ansible
engine's kinds move be2 only; at the end the cluster is taken down and the pairs deployed again
(playbooks/warm_spare.yml), as `make lab` left them.

After each failure: every backend serves again, then the invariants are read back on both backends
(every acknowledged message there once and intact, UIDs, UIDVALIDITY, flags, one INBOX per user), and the
Murder's mailbox lists are compared (cyrus.ha.cyrus_facts with mailbox_lists on every host, the
mupdate-list invariant: the mupdate master lists exactly what the backends hold, the frontends the same).
The run stops at the first violation, failed step or backend that does not come back, and leaves the
evidence in its directory: journal.jsonl (copied from the client host), steps.jsonl, each step's
Ansible output, summary.json and summary.md (counts per kind, the outage per kind as the clients saw it:
median, p95, max).

Usage (root, repository root):
    .venv/bin/python bench/certify.py [--failures 100] [--seed 1] [--rate 20] [--kinds K,K,...]
        [--sequence K,K,...] [--out build/certify]
--kinds are drawn from with equal weight each; a kind listed twice is drawn twice as often (a Pacemaker failure
takes about a minute more than the others: its node is powered on and rejoins). --sequence runs exactly those
kinds in that order (the short run of make test). Exit status: 0 when every failure was survived with every
invariant holding, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'lab', 'rigs'))
sys.path.insert(0, os.path.join(REPO, 'plugins', 'module_utils'))

import cyha_cluster  # noqa: E402  (the lab's Pacemaker cluster of be1 and spare)
import cyha_imap  # noqa: E402  (the lab's IMAP rig: instance processes by host)
import cyha_traffic  # noqa: E402  (the Murder's mailbox lists compared, as the drill role does)
import labutil  # noqa: E402
import mailtraffic  # noqa: E402  (the journal's reader and summary, as the drill role ships them)

ANSIBLE_KINDS = ('planned', 'instance-killed', 'link-down', 'frontend-killed', 'mupdate-killed')
PACEMAKER_KINDS = ('node-crash', 'node-hang')
KINDS = ANSIBLE_KINDS + PACEMAKER_KINDS
BACKENDS = {'be1': '198.51.100.121', 'be2': '198.51.100.122'}
PAIRS = {'be1': ('be1', 'spare'), 'be2': ('be2', 'spare')}
SERVICES = {'fe1': '198.51.100.111', 'mupdate': '198.51.100.110'}
VARS = ['-e', '@lab/vars/murder.yml', '-e', '@lab/vars/murder_hosts.yml', '-e', '@lab/vars/warm_spare.yml',
        '-e', '@lab/vars/replication.yml', '-e', '@lab/vars/traffic.yml']
SCRIPT = '/usr/local/lib/cyrus-ha/cyrus_ha_traffic.py'
TRAFFIC_DIR = '/var/lib/cyrus-ha/traffic'
CTL = '/usr/local/lib/cyrus-ha/cyrus_instance_ctl.py'
RECOVERY = 120.0      # how long every backend may take to serve again after a step
RESTART_DELAY = 2.0   # a killed frontend or mupdate master is started again after this long

TRAFFIC_PLAY = """- name: {name} the certification run's mail traffic
  hosts: client
  gather_facts: false
  vars:
    drill_imap_host: 198.51.100.111
    drill_tag: {tag}
    drill_traffic_backends: {backends}
  tasks:
    - name: {name} the traffic
      ansible.builtin.include_role:
        name: cyrus.ha.drill
        tasks_from: traffic_{action}
"""


class Stop(Exception):
    """The run stops here; the message says why."""


class Run:
    def __init__(self, args):
        self.args = args
        self.tag = f'certify-{args.seed}-{time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())}'
        self.out = os.path.join(args.out, self.tag)
        os.makedirs(self.out, exist_ok=True)
        self.steps: list[dict] = []
        self.tmp = tempfile.mkdtemp(prefix='cyrus-ha-certify-')
        self.kinds = self.sequence()
        # with a Pacemaker kind, be1 belongs to the cluster and the runbooks move be2 only
        self.cluster = any(kind in PACEMAKER_KINDS for kind in self.kinds)
        self.moved = ['be2'] if self.cluster else sorted(BACKENDS)

    # -- Ansible and the lab ---------------------------------------------------------------------
    def play(self, name: str, path: str, *extra: str) -> subprocess.CompletedProcess:
        proc = labutil.run([os.path.join(labutil.BIN, 'ansible-playbook'), '-i', labutil.inventory(), path, *VARS,
                            *extra], timeout=900)
        with open(os.path.join(self.out, f'{name}.log'), 'w', encoding='utf-8') as handle:
            handle.write(proc.stdout + proc.stderr)
        return proc

    def traffic(self, action: str) -> subprocess.CompletedProcess:
        path = os.path.join(self.tmp, f'traffic_{action}.yml')
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(TRAFFIC_PLAY.format(name=action.capitalize(), tag=self.tag, action=action,
                                             backends=json.dumps(BACKENDS)))
        extra = {'cyha_lab_traffic_extra': {'rate': self.args.rate, 'seed': self.args.seed, 'duration': 0}}
        return self.play(f'traffic-{action}', path, '-e', json.dumps(extra))

    @staticmethod
    def where(backend: str) -> str:
        """The node of the pair whose master runs the backend instance now."""
        running = [node for node in PAIRS[backend] if cyha_imap.master_pid(backend, f'cyha-{node}')]
        if len(running) != 1:
            raise Stop(f'{backend} runs on {running or "no node"}: expected exactly one node of {PAIRS[backend]}')
        return running[0]

    def serving(self) -> list[str]:
        """The backends that do not serve IMAPS at their address right now."""
        down = []
        for name, address in BACKENDS.items():
            try:
                with cyha_imap.imap(address, 'cyrus', 'cyha-lab-admin'):
                    pass
            except Exception:  # noqa: BLE001 - any failure means "not serving"
                down.append(name)
        return down

    def restart(self, instance: str, host: str) -> None:
        address = SERVICES[instance]
        proc = labutil.ansible(host, 'ansible.builtin.command', json.dumps({'argv': [
            'python3', CTL, 'start', '--imapd-conf', f'/etc/cyrus-ha/{instance}/imapd.conf',
            '--cyrus-conf', f'/etc/cyrus-ha/{instance}/cyrus.conf', '--pidfile', f'/run/cyrus-ha/{instance}/master.pid',
            '--master', '/usr/lib/cyrus/bin/master', '--address', address, '--user', 'cyrus', '--group', 'mail']}),
            check=False)
        if proc.returncode != 0:
            raise Stop(f'{instance} did not start again on {host}: {proc.stdout[-1000:]}')

    @staticmethod
    def kill(instance: str, host: str) -> int:
        pids = cyha_imap.instance_pids(instance, f'cyha-{host}')
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    # -- one failure ------------------------------------------------------------------------------
    def move(self, name: str, backend: str, node: str, unplanned: bool = False) -> str:
        """Move the backend from node (where it ran before the failure) to the other node of its pair."""
        runbook = 'playbooks/failover.yml' if node == PAIRS[backend][0] else 'playbooks/failback.yml'
        extra = ['-e', f'warm_spare_instance={backend}']
        if unplanned:
            extra += ['-e', 'warm_spare_failure=unplanned',
                      '-e', f'warm_spare_fence_tasks={os.path.join(REPO, "lab", "hooks", "fence_home.yml")}']
        proc = self.play(name, runbook, *extra)
        if proc.returncode != 0:
            raise Stop(f'{name}: {runbook} for {backend} failed (see {name}.log)')
        return os.path.basename(runbook)

    def prepare(self, name: str, kind: str, backend: str | None) -> dict:
        """With the cluster formed, be2 leaves the spare (a planned move, before the failure and not counted in
        it) when the failure would take the spare down under it: a Pacemaker failure of the spare (the cluster
        fences the node), or be2's link down there (the cluster would fence the spare as well)."""
        if not self.cluster or self.where('be2') != 'spare':
            return {}
        if (kind in PACEMAKER_KINDS and cyha_cluster.active() == 'spare') or (kind == 'link-down' and backend == 'be2'):
            self.move(f'{name}-prepare', 'be2', 'spare')
            return {'prepared': 'be2 moved home from spare first'}
        return {}

    def pacemaker_failure(self, name: str, kind: str) -> dict:
        """node-crash or node-hang on the node running be1 (the cluster's), then that node back in the cluster."""
        victim = cyha_cluster.active()
        if victim not in cyha_cluster.NODES:
            raise Stop(f'{name}: be1 does not run on exactly one cluster node')
        survivor = cyha_cluster.NODES[1 - cyha_cluster.NODES.index(victim)]
        cyha_cluster.inject(kind, victim)
        if not labutil.poll(lambda: cyha_cluster.active() == survivor, cyha_cluster.FAILOVER_TIMEOUT, interval=0.2):
            raise Stop(f'{name}: the cluster did not start be1 on {survivor} within {cyha_cluster.FAILOVER_TIMEOUT} s '
                       f'after {kind} of {victim}:\n{cyha_cluster.crm(survivor, "crm_mon", "-1r").stdout}')
        return {'backend': 'be1', 'node': victim, 'to': survivor, 'runbook': 'pacemaker'}

    def rejoin(self, name: str, node: str) -> None:
        """A fenced cluster node powered on again and back in the cluster."""
        try:
            cyha_cluster.rejoin(node)
        except (AssertionError, subprocess.SubprocessError) as exc:
            raise Stop(f'{name}: {node} did not rejoin the cluster: {str(exc)[-1500:]}') from None

    def form_cluster(self) -> None:
        """be1 and spare as the cluster running be1 (be1 home first), before the traffic starts."""
        if self.where('be1') != 'be1':
            self.move('prepare-be1-home', 'be1', self.where('be1'))
        cyha_cluster.wipe()
        proc = self.play('cluster-form', 'playbooks/cluster.yml', '-e', '@lab/vars/cluster.yml')
        if proc.returncode != 0 or not labutil.poll(
                lambda: cyha_cluster.active() and cyha_cluster.both_online('be1') and not self.serving(),
                cyha_cluster.JOIN_TIMEOUT, interval=0.5):
            self.unform_cluster()            # the lab as make lab left it, not half a cluster
            raise SystemExit(f'the cluster of be1 and spare did not form (see {self.out}/cluster-form.log)')

    def unform_cluster(self) -> None:
        """The cluster taken down and the pairs deployed again, as `make lab` left them. be2 goes home first
        when the run left it on the spare: the deployment mounts each volume on its home node, and refuses
        (rightly) a volume the spare still holds."""
        try:
            node = self.where('be2')
            if node != PAIRS['be2'][0]:
                self.move('cluster-unform-be2-home', 'be2', node)
        except Stop as exc:
            print(f'be2 was not moved home before the pairs were deployed again: {exc}', flush=True)
        cyha_cluster.wipe()
        proc = self.play('cluster-unform-deploy', 'playbooks/warm_spare.yml')
        if proc.returncode != 0:
            print(f'the pairs were not deployed again after the cluster (see {self.out}/cluster-unform-deploy.log)',
                  flush=True)

    def failure(self, index: int, kind: str, rng: random.Random) -> dict:
        name = f'step-{index:03d}-{kind}'
        backend = rng.choice(self.moved) if kind in ('planned', 'instance-killed', 'link-down') else None
        prepared = self.prepare(name, kind, backend)
        step = {'index': index, 'kind': kind, 'started': time.time(), **prepared}
        if kind in PACEMAKER_KINDS:
            step.update(self.pacemaker_failure(name, kind))
        elif backend:
            node = self.where(backend)
            step.update(backend=backend, node=node)
            if kind == 'instance-killed':
                step['killed'] = self.kill(backend, node)
                step['runbook'] = self.move(name, backend, node)
            elif kind == 'link-down':
                subprocess.run(['ip', '-n', f'cyha-{node}', 'link', 'set', 'eth0', 'down'], check=True)
                try:
                    step['runbook'] = self.move(name, backend, node, unplanned=True)
                finally:
                    subprocess.run(['ip', '-n', f'cyha-{node}', 'link', 'set', 'eth0', 'up'], check=True)
                if not labutil.poll(lambda: labutil.ansible(node, 'ansible.builtin.ping', check=False).returncode == 0,
                                    60, interval=0.5):
                    raise Stop(f'{name}: {node} does not answer SSH after its link came back')
            else:
                step['runbook'] = self.move(name, backend, node)
            step['to'] = self.where(backend)
            if step['to'] == node:
                raise Stop(f'{name}: {backend} still runs on {node} after the move')
        else:
            instance = 'fe1' if kind == 'frontend-killed' else 'mupdate'
            step.update(instance=instance, killed=self.kill(instance, instance))
            time.sleep(RESTART_DELAY)
            self.restart(instance, instance)
        step['acted'] = time.time()
        step['placement'] = {b: [n for n in PAIRS[b] if cyha_imap.master_pid(b, f'cyha-{n}')] for b in BACKENDS}
        if not labutil.poll(lambda: not self.serving(), RECOVERY, interval=0.5):
            raise Stop(f'{name}: {", ".join(self.serving())} not serving {RECOVERY:.0f} s after the step')
        step['recovered'] = time.time()
        if kind in PACEMAKER_KINDS:
            self.rejoin(name, step['node'])
            step['rejoined'] = time.time()
        return step

    def check(self) -> dict:
        """The traffic's invariants read on the backends, and the Murder's mailbox lists compared."""
        directory = f'{TRAFFIC_DIR}/{self.tag}'
        proc = subprocess.run(['ip', 'netns', 'exec', 'cyha-client', 'python3', SCRIPT, 'check', '--profile',
                               f'{directory}/profile.json', '--journal', f'{directory}/journal.jsonl',
                               '--backends', json.dumps(BACKENDS)], capture_output=True, text=True, timeout=600,
                              check=False)
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            result = {'ok': False, 'violations': [], 'errors': [f'the check did not answer: {proc.stderr[-1000:]}']}
        lists = cyha_traffic.murder_lists()
        result['ok'] = result.get('ok') is True and lists['ok']
        result['violations'] = (result.get('violations') or []) + lists['violations']
        result['errors'] = (result.get('errors') or ([result['msg']] if result.get('failed') else [])) + lists['errors']
        result['murder_lists'] = lists['checked']
        return result

    # -- the run ------------------------------------------------------------------------------------
    def sequence(self) -> list[str]:
        if self.args.sequence:
            return self.args.sequence
        rng = random.Random(self.args.seed)
        return [rng.choice(self.args.kinds) for _index in range(self.args.failures)]

    def run(self) -> int:
        verdict, reason = 'passed', ''
        if self.cluster:
            try:
                self.form_cluster()
            except Stop as exc:               # before any failure: nothing to summarize
                raise SystemExit(f'the run could not start: {exc}') from None
        started = self.traffic('start')
        if started.returncode != 0:
            if self.cluster:
                self.unform_cluster()
            raise SystemExit(f'the traffic did not start (see {self.out}/traffic-start.log)')
        rng = random.Random(self.args.seed + 1)
        time.sleep(self.args.settle)
        try:
            for index, kind in enumerate(self.kinds, 1):
                step = self.failure(index, kind, rng)
                time.sleep(self.args.settle)
                result = self.check()
                step.update(checked=time.time(), invariants_ok=result.get('ok') is True,
                            violations=result.get('violations') or [],
                            errors=result.get('errors') or ([result['msg']] if result.get('failed') else []),
                            acknowledged=(result.get('checked') or {}).get('acknowledged'))
                self.steps.append(step)
                self.write_steps()
                print(f'{index:3d} {kind:16s} {step.get("backend") or step.get("instance")}: '
                      f'{step["recovered"] - step["started"]:.1f} s to serve again, '
                      f'{step["acknowledged"]} acknowledged, invariants {"ok" if step["invariants_ok"] else "BROKEN"}',
                      flush=True)
                if not step['invariants_ok']:
                    raise Stop(f'step {index} ({kind}): invariants broken: {step["violations"][:3]} {step["errors"][:3]}')
        except Stop as exc:
            verdict, reason = 'failed', str(exc)
            print(f'STOPPED: {reason}', flush=True)
        finally:
            stopped = self.traffic('stop')
            if stopped.returncode != 0 and verdict == 'passed':
                verdict, reason = 'failed', f'the traffic did not stop cleanly (see {self.out}/traffic-stop.log)'
            final = self.check()
            journal = f'{TRAFFIC_DIR}/{self.tag}/journal.jsonl'
            if os.path.exists(journal):
                shutil.copyfile(journal, os.path.join(self.out, 'journal.jsonl'))
            if verdict == 'passed' and final.get('ok') is not True:
                verdict, reason = 'failed', (f'the final check found: {(final.get("violations") or [])[:3]} '
                                             f'{(final.get("errors") or [final.get("msg")])[:3]}')
            self.summarize(verdict, reason, final)
            if self.cluster:
                self.unform_cluster()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return 0 if verdict == 'passed' else 1

    def write_steps(self) -> None:
        with open(os.path.join(self.out, 'steps.jsonl'), 'w', encoding='utf-8') as handle:
            for step in self.steps:
                handle.write(json.dumps(step, sort_keys=True) + '\n')

    # -- the summary --------------------------------------------------------------------------------
    def summarize(self, verdict: str, reason: str, final: dict) -> None:
        path = os.path.join(self.out, 'journal.jsonl')
        records = mailtraffic.read_journal(path) if os.path.exists(path) else []
        traffic = mailtraffic.summarize(records)
        windows = traffic.get('outages', {}).get('any', {}).get('windows', [])
        for step in self.steps:
            # what the clients saw of this step: the longest outage window (any user, any operation) that
            # opened between the step's start and its recovery
            mine = [w[1] - w[0] for w in windows if step['started'] - 1 <= w[0] <= step['recovered']]
            step['client_outage'] = round(max(mine, default=0.0), 3)
        kinds = {}
        for kind in sorted({s['kind'] for s in self.steps}):
            outages = [s['client_outage'] for s in self.steps if s['kind'] == kind]
            kinds[kind] = {'count': len(outages), 'median': round(statistics.median(outages), 3),
                           'p95': round(sorted(outages)[min(len(outages) - 1, int(round(0.95 * (len(outages) - 1))))], 3),
                           'max': round(max(outages), 3)}
        summary = {'verdict': verdict, 'reason': reason, 'tag': self.tag, 'seed': self.args.seed,
                   'failures': len(self.steps), 'rate_asked': self.args.rate, 'traffic': {
                       'operations': traffic.get('operations'), 'rate': traffic.get('rate'),
                       'seconds': traffic.get('seconds'), 'deliveries': traffic.get('deliveries'),
                       'kinds': {k: v['outcomes'] for k, v in traffic.get('kinds', {}).items()}},
                   'invariants': {'ok': final.get('ok'), 'violations': final.get('violations'),
                                  'errors': final.get('errors'), 'checked': final.get('checked'),
                                  'murder_lists': final.get('murder_lists')},
                   'engines': {'ansible': [k for k in self.kinds if k in ANSIBLE_KINDS],
                               'pacemaker': [k for k in self.kinds if k in PACEMAKER_KINDS]},
                   'outage_by_kind': kinds, 'steps': self.steps}
        with open(os.path.join(self.out, 'summary.json'), 'w', encoding='utf-8') as handle:
            json.dump(summary, handle, indent=2, sort_keys=True)
        lines = [f'# Certification run {self.tag}: {verdict.upper()}', '']
        if reason:
            lines += [f'Stopped: {reason}', '']
        checked = final.get('checked') or {}
        lists = final.get('murder_lists') or {}
        survived = sum(1 for s in self.steps if s.get('invariants_ok'))
        lines += [f'- failures survived (served again, every invariant holding): {survived} of {len(self.steps)} '
                  f'completed (seed {self.args.seed}{"; the run stopped: see above" if reason else ""})',
                  f'- traffic: {traffic.get("operations")} operations in {traffic.get("seconds")} s '
                  f'({traffic.get("rate")}/s; asked {self.args.rate}/s of new operations, retries of deferred '
                  f'deliveries on top)',
                  f'- acknowledged messages: {checked.get("acknowledged")}, found once and intact: '
                  f'{checked.get("acknowledged_found")}; violations: {len(final.get("violations") or [])}; '
                  f'backends not read: {len(final.get("errors") or [])}',
                  f'- mailbox lists after the last failure: {lists.get("mupdate_mailboxes")} at the mupdate master, '
                  f'{lists.get("mailboxes")} on the backends ({", ".join(lists.get("backends") or [])}), frontends '
                  f'{", ".join(lists.get("frontends") or []) or "-"} compared; differences: '
                  f'{json.dumps(lists.get("violations_by_kind") or {}, sort_keys=True)}',
                  f'- deliveries: {json.dumps(traffic.get("deliveries"), sort_keys=True)}', '',
                  '| failure | count | client outage median (s) | p95 (s) | max (s) |', '|---|---|---|---|---|']
        lines += [f'| {k} | {v["count"]} | {v["median"]:.2f} | {v["p95"]:.2f} | {v["max"]:.2f} |' for k, v in kinds.items()]
        lines += ['', 'The client outage of a failure is the longest time one user of the traffic could not do one '
                  'kind of operation (first failed operation to the end of the first one that succeeded after it), '
                  'among the outages that began during that failure.']
        with open(os.path.join(self.out, 'summary.md'), 'w', encoding='utf-8') as handle:
            handle.write('\n'.join(lines) + '\n')
        print('\n'.join(lines))
        print(f'evidence: {self.out}')


def kinds_list(text: str) -> list[str]:
    kinds = [k for k in text.split(',') if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f'kinds are {", ".join(KINDS)}; not {", ".join(unknown) or "none"}')
    return kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--failures', type=int, default=100)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--rate', type=float, default=20.0)
    parser.add_argument('--kinds', type=kinds_list, default=list(KINDS))
    parser.add_argument('--sequence', type=kinds_list)
    parser.add_argument('--settle', type=float, default=2.0, help='seconds of traffic before each failure and check')
    parser.add_argument('--out', default=os.path.join(REPO, 'build', 'certify'))
    args = parser.parse_args()
    run = Run(args)
    try:
        return run.run()
    finally:
        shutil.rmtree(run.tmp, ignore_errors=True)     # also when the run could not start


if __name__ == '__main__':
    sys.exit(main())
