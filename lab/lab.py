# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The built-in lab: virtual hosts on one Debian machine, reached by Ansible over real SSH.

Each lab host is a network namespace ``cyha-<name>`` joined to the bridge ``cyha-br0`` in the
root namespace (the controller, 198.51.100.1). Each runs its own sshd inside a private mount
namespace with its own /run, /dev/shm, /etc/hosts and /dev/log (bound to a per-host syslog
socket of the lab's rsyslogd), and its own host name (UTS namespace).

Usage (as root)::

    python3 lab/lab.py up [--frontends N] [--backends N] [--spares N] [--replica-pairs N] [--systemd]
    python3 lab/lab.py down
    python3 lab/lab.py revive         # boot again the hosts a crash or a fence killed
    python3 lab/lab.py status
    python3 lab/lab.py leftovers      # exit 1 and list what a lab left behind

With ``--systemd`` each host is instead a container with its own root filesystem (an overlay of a cached
Debian base) and systemd as its PID 1, running sshd as a unit: see lab/osroot.py.

Everything the lab makes carries the ``cyha-`` prefix or lives under the lab directory
(``$CYHA_LAB_DIR``, default /var/lib/cyha-lab); ``down`` removes exactly that and only
processes it can tie to the lab (its namespaces, its PID files, its control sockets).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import osroot  # noqa: E402  (lab/osroot.py: the systemd hosts' roots)

PREFIX = 'cyha-'
BRIDGE = PREFIX + 'br0'
NET4 = ipaddress.ip_network('198.51.100.0/24')
NET6 = ipaddress.ip_network('2001:db8::/64')
CONTROLLER4 = '198.51.100.1'
CONTROLLER6 = '2001:db8::1'
DOMAIN = 'cyha.test'
DEFAULT_DIR = '/var/lib/cyha-lab'
SAN_MB = 128            # each backend's "SAN" disk; bench/scale_curve.py asks for more (--san-mb)
LAB_NAME = re.compile(r'^cyha-(mupdate|fe[0-9]|be[0-9]|spare[0-9]?|replica[0-9]?|client)$')

# The boot address plan: one block of host numbers per kind of host. Service addresses
# (Cyrus instances, later) use 198.51.100.100-199; other rigs use 203.0.113.0/24.
# The replica pairs' sync_server port: not Cyrus's usual 2005, so that the lab proves a pair's own port is
# used everywhere (deploy, replica, lag, promotion, rejoin). lab/vars/murder_hosts.yml says the same.
SYNC_PORT = 2015
KIND_BASE = {'mupdate': 10, 'frontend': 10, 'backend': 20, 'spare': 30, 'client': 40, 'replica': 50}
# Directories each host keeps private (bind-mounted from its host directory, first filled with a copy
# of the machine's own): what a cluster stack on a real host keeps to itself.
PRIVATE_DIRS = ('/etc/corosync', '/etc/pacemaker', '/var/lib/corosync', '/var/lib/pacemaker', '/var/log/pacemaker',
                '/var/log/corosync')
# Directories a replica host keeps to itself, starting empty: its "own disk". It runs the same instance
# (same name, same paths) as the home node it replicates, so it must not see the home node's copy.
OWN_DIRS = ('/etc/cyrus-ha', '/var/lib/cyrus-ha', '/var/spool/cyrus-ha')
# Files each host keeps private, starting empty (a server's own shell start-up files).
PRIVATE_FILES = ('/root/.bashrc', '/root/.profile')
# The lab's fence agent (lab/fence_cyhalab), installed where Pacemaker's fencer looks.
FENCE_AGENT = '/usr/sbin/fence_cyhalab'
# The network power switch the systemd hosts' fence agents ask (lab/power_switch.py), on the controller.
POWER_SWITCH_PORT = 7099
KIND_GROUP = {'mupdate': 'mupdate_master', 'frontend': 'frontends', 'backend': 'backends', 'spare': 'spares',
              'client': 'clients', 'replica': 'replicas'}

HOST_INIT = r'''
set -eu
hostname "$1"
mount -t tmpfs -o mode=0755,size=64m cyha-run /run
mkdir -p /run/sshd /run/lock
mount -t tmpfs -o mode=1777,size=256m cyha-shm /dev/shm
mount --bind "$2" /etc/hosts
mount --bind "$3" /dev/log
sshd_config="$4"
shift 4
# private state directories (cluster stacks: /etc/corosync, /var/lib/pacemaker, ...): SRC=DST
for pair in "$@"; do
    mount --bind "${pair%%=*}" "${pair#*=}"
done
exec /usr/sbin/sshd -D -e -f "$sshd_config"
'''

SSHD_CONFIG = '''# cyrus.ha lab host {name}: generated, do not edit
ListenAddress {addr4}
ListenAddress {addr6}
Port 22
HostKey {hostkey}
PidFile /run/sshd.pid
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
MaxSessions 64
MaxStartups 64:30:128
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
'''

RSYSLOG_CONFIG = '''# cyrus.ha lab syslog: one socket per lab host, one file per host
global(workDirectory="{workdir}")
module(load="imuxsock" SysSock.Use="off")
template(name="cyhaFile" type="string" string="{logdir}/%HOSTNAME%.log")
template(name="cyhaLine" type="string"
         string="%TIMESTAMP:::date-rfc3339% %HOSTNAME% %syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n")
{inputs}
*.* action(type="omfile" dynaFile="cyhaFile" template="cyhaLine" dirCreateMode="0750" fileCreateMode="0640")
'''


class LabError(Exception):
    """A lab step failed; the message says which and why."""


def log(msg: str) -> None:
    print(f'lab: {msg}', file=sys.stderr, flush=True)


def run(argv: list[str], check: bool = True, capture: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run one command from an argv list (never a shell string)."""
    proc = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout, check=False,
                          env=dict(os.environ, LC_ALL='C'))
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or '').strip()}")
    return proc


def ip_json(*args: str) -> list:
    out = run(['ip', '-j', *args]).stdout.strip()
    return json.loads(out) if out else []


# ---------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------

def topology(frontends: int, backends: int, spares: int, replica_pairs: int = 0) -> list[dict]:
    """Return the lab's hosts in start order: name, kind, addresses, namespace, link. The backends
    be1..beN have SAN disks (shared-volume pairs); each replica pair adds one more backend after them
    (no SAN disk: it replicates to a replica host) and one replica host."""
    for label, count, top in (('frontends', frontends, 9), ('backends', backends, 9), ('spares', spares, 9),
                              ('replica pairs', replica_pairs, 9)):
        if not 0 <= count <= top:
            raise LabError(f'{label} must be between 0 and {top}, not {count}')
    if backends + replica_pairs > 9:
        raise LabError(f'backends and replica pairs together must be at most 9, not {backends + replica_pairs}')
    names = [('mupdate', 'mupdate', 0)]
    names += [(f'fe{i}', 'frontend', i) for i in range(1, frontends + 1)]
    names += [(f'be{i}', 'backend', i) for i in range(1, backends + replica_pairs + 1)]
    if spares == 1:
        names.append(('spare', 'spare', 0))
    else:
        names += [(f'spare{i}', 'spare', i - 1) for i in range(1, spares + 1)]
    if replica_pairs == 1:
        names.append(('replica', 'replica', 0))
    else:
        names += [(f'replica{i}', 'replica', i - 1) for i in range(1, replica_pairs + 1)]
    # The users' side: the mail traffic of drills runs here (an MTA and IMAP clients, no Cyrus).
    names.append(('client', 'client', 0))
    hosts = []
    for name, kind, index in names:
        number = KIND_BASE[kind] + index
        hosts.append({
            'name': name,
            'kind': kind,
            'group': KIND_GROUP[kind],
            'fqdn': f'{name}.{DOMAIN}',
            'addr4': str(NET4[number]),
            'addr6': f'2001:db8::{number}',
            'netns': PREFIX + name,
            'link': PREFIX + name,
            # The service address of the Cyrus instance this host is home to (not configured
            # by the lab: the roles take it up, and a spare takes it over).
            'service_name': f'{name}-svc',
            'service_fqdn': f'{name}-svc.{DOMAIN}',
            'service_addr4': str(NET4[100 + number]),
        })
    # each replica pair: its home backend (after the SAN backends) and its replica host
    replicas = [h for h in hosts if h['kind'] == 'replica']
    homes = [h for h in hosts if h['kind'] == 'backend'][backends:]
    for home, replica in zip(homes, replicas):
        home['replica'] = replica['name']
        replica['replica_of'] = home['name']
    return hosts


class Lab:
    """The lab's state directory and the operations on it."""

    def __init__(self, directory: str):
        self.dir = os.path.abspath(directory)
        self.state_file = os.path.join(self.dir, 'lab.json')
        self.key = os.path.join(self.dir, 'id_ed25519')
        self.authorized_keys = os.path.join(self.dir, 'authorized_keys')
        self.known_hosts = os.path.join(self.dir, 'known_hosts')
        self.hosts_file = os.path.join(self.dir, 'etc-hosts')
        self.inventory = os.path.join(self.dir, 'inventory.yml')
        self.topology = os.path.join(self.dir, 'topology.yml')
        self.cp_dir = os.path.join(self.dir, 'cp')
        self.log_dir = os.path.join(self.dir, 'log')
        self.sock_dir = os.path.join(self.dir, 'syslog')
        self.rsyslog_conf = os.path.join(self.dir, 'rsyslog.conf')
        self.rsyslog_pid = os.path.join(self.dir, 'rsyslogd.pid')
        self.netns_dir = os.path.join(self.dir, 'netns')
        self.tls_dir = os.path.join(self.dir, 'tls')
        self.power_key = os.path.join(self.dir, 'power.key')

    # -- state ---------------------------------------------------------------------------------
    def load(self) -> dict:
        try:
            with open(self.state_file, encoding='utf-8') as handle:
                return json.load(handle)
        except FileNotFoundError:
            return {}

    def save(self, state: dict) -> None:
        write_atomic(self.state_file, json.dumps(state, indent=2, sort_keys=True) + '\n', 0o600)

    def host_dir(self, name: str) -> str:
        return os.path.join(self.dir, 'hosts', name)

    # -- up ------------------------------------------------------------------------------------
    def up(self, frontends: int, backends: int, spares: int, san_mb: int = SAN_MB, replica_pairs: int = 0,
           systemd: bool = False) -> dict:
        for tool in ('ip', 'unshare', '/usr/sbin/sshd', 'ssh-keygen', 'rsyslogd', 'mkfs.ext4', 'losetup'):
            if not shutil.which(tool):
                raise LabError(f'{tool} is not installed: run `make deps` (apt packages in bindep.txt)')
        if os.geteuid() != 0:
            raise LabError('the lab needs root (network and mount namespaces)')
        hosts = topology(frontends, backends, spares, replica_pairs)
        params = [frontends, backends, spares, replica_pairs]
        state = self.load()
        self.install_fence_agent()
        if not 64 <= san_mb <= 65536:
            raise LabError(f'the SAN disks must be from 64 to 65536 MiB, not {san_mb}')
        same = state and state.get('params') == params and state.get('san_mb', SAN_MB) == san_mb \
            and bool(state.get('systemd')) == systemd
        if same and state.get('up'):
            self.revive(state)
        if state and (not same or not self.healthy(state)):
            log('existing lab differs from the request or is unhealthy: rebuilding it')
            self.down()
            state = {}
        if state:
            if 'san' not in state:      # a lab made before SAN disks existed: add them in place
                self.make_san(state, hosts)
                self.save(state)
            else:
                log('lab already up: nothing to do')
            self.repair_network(hosts)
            self.make_tls(hosts)
            self.write_inventory(hosts, state)
            self.write_topology(hosts, state)
            return state

        # the systemd hosts' base root filesystem first: a failed build leaves no half-made lab
        base = osroot.ensure_base(log) if systemd else None
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.makedirs(self.cp_dir, mode=0o700, exist_ok=True)
        os.makedirs(self.log_dir, mode=0o750, exist_ok=True)
        os.makedirs(self.sock_dir, mode=0o755, exist_ok=True)
        state = {'params': params, 'san_mb': san_mb, 'hosts': hosts, 'pids': {},
                 'created_dev_log': False, 'systemd': systemd, 'base': base}
        self.save(state)   # saved before anything is made, so a failed `up` is undone by `down`
        self.ensure_keys()
        self.make_tls(hosts)
        self.write_hosts_file(hosts)
        self.start_syslog(state, hosts)
        self.make_bridge()
        if systemd:
            self.start_power_switch(state)
        fail_after = os.environ.get('CYHA_LAB_FAIL_AFTER')
        for host in hosts:
            self.make_host(host, state)
            self.save(state)
            if fail_after == host['name']:
                raise LabError(f'injected failure after host {host["name"]} (CYHA_LAB_FAIL_AFTER)')
        # every namespace is named under the lab directory before any host boots, so that each host
        # sees the others' (the lab's fence agent finds its target there)
        for host in hosts:
            self.name_netns(host)
        # the SAN disks before the hosts boot: a systemd host gets its loop devices in its own /dev
        self.make_san(state, hosts)
        for host in hosts:
            self.spawn_host(host, state)
            self.save(state)
        self.wait_sshd(hosts, 90 if systemd else 20)
        self.write_known_hosts(hosts)
        self.write_inventory(hosts, state)
        self.write_topology(hosts, state)
        state['up'] = True
        self.save(state)
        log(f'lab up: {len(hosts)} hosts; inventory {self.inventory}')
        return state

    def repair_network(self, hosts: list[dict]) -> None:
        """A lab left behind by a run that cut links or deleted addresses gets them back: each host's
        link up and its boot addresses present, as `up` made them."""
        for host in hosts:
            netns = host['netns']
            run(['ip', 'netns', 'exec', netns, 'sysctl', '-qw', 'net.ipv6.conf.eth0.keep_addr_on_down=1'])
            run(['ip', '-n', netns, 'link', 'set', 'eth0', 'up'])
            run(['ip', '-n', netns, 'addr', 'replace', f"{host['addr4']}/24", 'dev', 'eth0'])
            run(['ip', '-n', netns, 'addr', 'replace', f"{host['addr6']}/64", 'dev', 'eth0', 'nodad'])

    def make_san(self, state: dict, hosts: list[dict]) -> None:
        """One "SAN" disk per backend: an ext4 image with multiple-mount protection (update
        interval 1 s), reached by one loop device for the backend and one for each spare: several
        block devices for one disk, each host using its own."""
        san_dir = os.path.join(self.dir, 'san')
        os.makedirs(san_dir, mode=0o700, exist_ok=True)
        spares = [h['name'] for h in hosts if h['kind'] == 'spare']
        state['san'] = {}
        for host in (h for h in hosts if h['kind'] == 'backend' and not h.get('replica')):
            name = host['name']
            image = os.path.join(san_dir, f'{name}.img')
            volume = {'image': image, 'uuid': str(uuid.uuid4()), 'label': f'cyha-{name}', 'devices': {}}
            state['san'][name] = volume
            self.save(state)
            size = state.get('san_mb', SAN_MB)
            with open(image, 'wb') as handle:
                handle.truncate(size * 1024 * 1024)
            # a larger disk is for many mailboxes: one inode per 4 KiB (a mailbox is a directory and a few small files)
            density = ['-i', '4096'] if size > SAN_MB else []
            run(['mkfs.ext4', '-q', '-F', '-O', 'mmp', '-E', 'mmp_update_interval=1', *density, '-L', volume['label'],
                 '-U', volume['uuid'], image])
            for user in [name] + spares:
                volume['devices'][user] = run(['losetup', '-f', '--show', image]).stdout.strip()
                self.save(state)

    def healthy(self, state: dict) -> bool:
        if not state.get('up'):
            return False
        attached = {d['name']: d.get('back-file') for d in loop_devices()}
        for volume in state.get('san', {}).values():
            if any(attached.get(dev) != volume['image'] for dev in volume['devices'].values()):
                return False
        if not pid_alive(state.get('pids', {}).get('rsyslogd'), 'rsyslogd'):
            return False
        if state.get('systemd') and not pid_alive(state.get('pids', {}).get('power_switch'), 'power_switch.py'):
            return False
        namespaces = set(list_netns())
        for host in state.get('hosts', []):
            if host['netns'] not in namespaces:
                return False
            if not self.host_alive(state, host['name']):
                return False
        return True

    @staticmethod
    def host_alive(state: dict, name: str) -> bool:
        """The host's first process runs: its sshd (direct hosts) or its boot process, whose child is its systemd."""
        return pid_alive(state.get('pids', {}).get(name), 'cyha-host-boot' if state.get('systemd') else 'sshd')

    def ensure_keys(self) -> None:
        if not os.path.exists(self.key):
            run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'cyha-lab', '-f', self.key])
        if not os.path.exists(self.power_key):
            write_atomic(self.power_key, os.urandom(32).hex() + '\n', 0o600)
        with open(self.key + '.pub', encoding='utf-8') as handle:
            write_atomic(self.authorized_keys, handle.read(), 0o600)

    def make_tls(self, hosts: list[dict]) -> None:
        """The lab's CA and, for each host's instance, a server certificate for its service name,
        short name and service address (tls/<host>.pem and tls/<host>.key), as a site's CA would
        issue them. Made once; kept across `down` and `up` like the SSH keys."""
        os.makedirs(self.tls_dir, mode=0o700, exist_ok=True)
        make_ca(self.tls_dir, 'ca', 'cyrus.ha lab CA')
        by_name = {h['name']: h for h in hosts}
        for host in hosts:
            dns, ips = [host['service_fqdn'], host['service_name']], [host['service_addr4']]
            if host.get('replica'):
                # the same instance runs as the replica on either node of the pair, on that node's own address
                replica = by_name[host['replica']]
                dns, ips = dns + [host['fqdn'], replica['fqdn']], ips + [host['addr4'], replica['addr4']]
            make_server_cert(self.tls_dir, 'ca', host['name'], host['service_fqdn'], dns, ips)

    def write_hosts_file(self, hosts: list[dict]) -> None:
        lines = ['# cyrus.ha lab: generated, bound over /etc/hosts inside each lab host',
                 '127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback',
                 f'{CONTROLLER4}\tcontroller.{DOMAIN} controller', f'{CONTROLLER6}\tcontroller.{DOMAIN} controller']
        for host in hosts:
            lines.append(f"{host['addr4']}\t{host['fqdn']} {host['name']}")
            lines.append(f"{host['addr6']}\t{host['fqdn']} {host['name']}")
        for host in hosts:
            lines.append(f"{host['service_addr4']}\t{host['service_fqdn']} {host['service_name']}")
        # Rewritten in place: lab hosts bind-mount this inode, so it must never be replaced.
        with open(self.hosts_file, 'w', encoding='utf-8') as handle:
            handle.write('\n'.join(lines) + '\n')
        os.chmod(self.hosts_file, 0o644)

    def start_syslog(self, state: dict, hosts: list[dict]) -> None:
        inputs = []
        if not os.path.exists('/dev/log'):
            # The lab's socket becomes the machine's /dev/log; hosts bind their own over it.
            inputs.append('input(type="imuxsock" Socket="/dev/log" HostName="controller")')
            state['created_dev_log'] = True
            self.save(state)
        for host in hosts:
            sock = os.path.join(self.sock_dir, host['name'] + '.sock')
            inputs.append(f'input(type="imuxsock" Socket="{sock}" HostName="{host["name"]}")')
        workdir = os.path.join(self.dir, 'rsyslog')
        os.makedirs(workdir, mode=0o700, exist_ok=True)
        write_atomic(self.rsyslog_conf, RSYSLOG_CONFIG.format(workdir=workdir, logdir=self.log_dir,
                                                              inputs='\n'.join(inputs)), 0o644)
        proc = spawn(['rsyslogd', '-n', '-f', self.rsyslog_conf, '-i', self.rsyslog_pid],
                     os.path.join(self.dir, 'rsyslogd.out'))
        state['pids']['rsyslogd'] = proc.pid
        self.save(state)
        wanted = [os.path.join(self.sock_dir, h['name'] + '.sock') for h in hosts]
        if state['created_dev_log']:
            wanted.append('/dev/log')
        wait_for(lambda: all(os.path.exists(p) for p in wanted), 10, 'rsyslogd sockets')

    def start_power_switch(self, state: dict) -> None:
        """The network power switch of the systemd hosts' fence agents (lab/power_switch.py) on the controller."""
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'power_switch.py')
        proc = spawn([sys.executable, script, '--listen', f'{CONTROLLER4}:{POWER_SWITCH_PORT}', '--key', self.power_key,
                      '--netns-dir', self.netns_dir, '--agent', FENCE_AGENT], os.path.join(self.dir, 'power_switch.log'))
        state['pids']['power_switch'] = proc.pid
        self.save(state)

        def listening() -> bool:
            try:
                with socket.create_connection((CONTROLLER4, POWER_SWITCH_PORT), timeout=0.5):
                    return True
            except OSError:
                return False
        wait_for(listening, 10, 'the power switch')

    def make_bridge(self) -> None:
        if not link_exists(BRIDGE):
            run(['ip', 'link', 'add', BRIDGE, 'type', 'bridge'])
        run(['ip', 'link', 'set', BRIDGE, 'up'])
        have = {a['local'] for link in ip_json('addr', 'show', 'dev', BRIDGE) for a in link.get('addr_info', [])}
        if CONTROLLER4 not in have:
            run(['ip', 'addr', 'add', f'{CONTROLLER4}/24', 'dev', BRIDGE])
        if CONTROLLER6 not in have:
            run(['ip', 'addr', 'add', f'{CONTROLLER6}/64', 'dev', BRIDGE, 'nodad'])

    def make_host(self, host: dict, state: dict) -> None:
        name, netns, link = host['name'], host['netns'], host['link']
        hdir = self.host_dir(name)
        os.makedirs(hdir, mode=0o700, exist_ok=True)
        hostkey = os.path.join(hdir, 'ssh_host_ed25519_key')
        if not os.path.exists(hostkey):
            run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', f'root@{name}', '-f', hostkey])
        sshd_conf = os.path.join(hdir, 'sshd_config')
        write_atomic(sshd_conf, SSHD_CONFIG.format(name=name, addr4=host['addr4'], addr6=host['addr6'],
                                                   hostkey=hostkey, authorized_keys=self.authorized_keys), 0o600)
        run(['ip', 'netns', 'add', netns])
        run(['ip', 'link', 'add', link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns])
        run(['ip', 'link', 'set', link, 'master', BRIDGE, 'up'])
        run(['ip', '-n', netns, 'link', 'set', 'lo', 'up'])
        run(['ip', '-n', netns, 'addr', 'add', f"{host['addr4']}/24", 'dev', 'eth0'])
        run(['ip', '-n', netns, 'addr', 'add', f"{host['addr6']}/64", 'dev', 'eth0', 'nodad'])
        run(['ip', '-n', netns, 'link', 'set', 'eth0', 'up'])
        # a link cut by a test (a fenced host) comes back with its IPv6 boot address
        run(['ip', 'netns', 'exec', netns, 'sysctl', '-qw', 'net.ipv6.conf.eth0.keep_addr_on_down=1'])
        # a new lab's hosts start with fresh private directories (a revived host keeps its own)
        shutil.rmtree(os.path.join(hdir, 'private'), ignore_errors=True)
        if state.get('systemd'):
            # a systemd host's own root filesystem: a fresh overlay of the base, made this host's
            root = osroot.make_root(hdir, state['base'], fresh=True)
            with open(self.hosts_file, encoding='utf-8') as handle:
                hosts_text = handle.read()
            osroot.configure(root, name, hosts_text, hostkey, self.authorized_keys, FENCE_AGENT, self.power_key)

    def name_netns(self, host: dict) -> None:
        """Bind the host's namespace at <lab dir>/netns/<netns>, a path every lab host can see."""
        os.makedirs(self.netns_dir, mode=0o755, exist_ok=True)
        handle = os.path.join(self.netns_dir, host['netns'])
        if handle not in mounts_under(self.netns_dir):
            with open(handle, 'a', encoding='ascii'):
                pass
            run(['mount', '--bind', f'/run/netns/{host["netns"]}', handle])

    def private_dirs(self, name: str, kind: str = '') -> list[str]:
        """SRC=DST bind pairs of the host's private copies of PRIVATE_DIRS that exist on this machine
        (and, on a replica host, its own empty OWN_DIRS)."""
        pairs = []
        for path in OWN_DIRS if kind == 'replica' else ():
            own = os.path.join(self.host_dir(name), 'private', path.strip('/').replace('/', '_'))
            os.makedirs(own, mode=0o755, exist_ok=True)
            os.makedirs(path, mode=0o755, exist_ok=True)
            pairs.append(f'{own}={path}')
        for path in PRIVATE_DIRS:
            if not os.path.isdir(path):
                continue
            copy = os.path.join(self.host_dir(name), 'private', path.strip('/').replace('/', '_'))
            if not os.path.isdir(copy):
                os.makedirs(os.path.dirname(copy), mode=0o755, exist_ok=True)
                shutil.copytree(path, copy, symlinks=True)
                shutil.copystat(path, copy)
                stat = os.stat(path)
                os.chown(copy, stat.st_uid, stat.st_gid)
            pairs.append(f'{copy}={path}')
        # Root's shell start-up file on this machine sets up developer tools (pyenv init: ~0.2 s on every
        # SSH command Ansible runs); a lab host, like a server, has a plain one of its own.
        for path in PRIVATE_FILES:
            if os.path.isfile(path):
                copy = os.path.join(self.host_dir(name), 'private', path.strip('/').replace('/', '_'))
                if not os.path.isfile(copy):
                    write_atomic(copy, '# cyrus.ha lab host: a plain shell start-up file of its own\n', 0o644)
                pairs.append(f'{copy}={path}')
        return pairs

    def spawn_host(self, host: dict, state: dict) -> None:
        """Boot the host: its init (private mounts, host name) that becomes its sshd."""
        name, hdir = host['name'], self.host_dir(host['name'])
        if state.get('systemd'):
            root = osroot.make_root(hdir, state['base'], fresh=False)
            loops = [vol['devices'][name] for vol in state.get('san', {}).values() if name in vol['devices']]
            osroot.remove_cgroups(name)     # a host powered off: its emptied cgroups from the last boot
            proc = spawn(osroot.boot_argv(host['netns'], root, name, osroot.devices(loops)),
                         os.path.join(hdir, 'console.log'), preexec=osroot.enter_cgroups(name))
            state['pids'][name] = proc.pid
            return
        sock = os.path.join(self.sock_dir, name + '.sock')
        proc = spawn(['ip', 'netns', 'exec', host['netns'], 'unshare', '--mount', '--uts', '--propagation', 'private',
                      'sh', '-c', HOST_INIT, 'cyha-host-init', name, self.hosts_file, sock,
                      os.path.join(hdir, 'sshd_config')] + self.private_dirs(name, host['kind']),
                     os.path.join(hdir, 'sshd.log'))
        state['pids'][name] = proc.pid

    def revive(self, state: dict) -> list[str]:
        """Boot again the hosts whose every process was killed (a crash or a fence: their namespace and
        link remain). Like a rebooted machine, a revived host has only its boot addresses."""
        namespaces = set(list_netns())
        dead = [h for h in state.get('hosts', []) if h['netns'] in namespaces
                and not self.host_alive(state, h['name']) and not pids_in_netns(h['netns'])]
        if dead:
            # SSH control masters to a host that died without closing its connections would hang
            for pid in pids_matching(lambda cmd: self.cp_dir in cmd):
                kill_pid(pid)
        for host in dead:
            log(f'host {host["name"]} is down: booting it again')
            run(['ip', '-n', host['netns'], 'addr', 'flush', 'dev', 'eth0'])
            self.repair_network([host])
            self.spawn_host(host, state)
        if dead:
            self.save(state)
            self.wait_sshd(dead, 90 if state.get('systemd') else 20)
        return [h['name'] for h in dead]

    def install_fence_agent(self) -> None:
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fence_cyhalab')
        with open(source, encoding='utf-8') as handle:
            write_atomic(FENCE_AGENT, handle.read(), 0o755)

    def wait_sshd(self, hosts: list[dict], timeout: float = 20) -> None:
        waiting = list(hosts)

        def ready() -> bool:
            while waiting:
                try:
                    with socket.create_connection((waiting[0]['addr4'], 22), timeout=0.5) as conn:
                        if not conn.recv(64).startswith(b'SSH-'):
                            return False
                except OSError:
                    return False
                waiting.pop(0)
            return True
        try:
            wait_for(ready, timeout, 'sshd on every lab host')
        except LabError as exc:
            name = waiting[0]['name']
            logs = [os.path.join(self.host_dir(name), f) for f in ('sshd.log', 'console.log')]
            with open(next((f for f in logs if os.path.exists(f)), os.devnull), encoding='utf-8',
                      errors='replace') as handle:
                tail = handle.read()[-600:].strip()
            raise LabError(f'{exc}: sshd on {name} is not answering; its log ends: {tail}') from exc

    def write_known_hosts(self, hosts: list[dict]) -> None:
        lines = []
        for host in hosts:
            with open(os.path.join(self.host_dir(host['name']), 'ssh_host_ed25519_key.pub'), encoding='utf-8') as handle:
                keytype, key = handle.read().split()[:2]
            names = ','.join([host['name'], host['fqdn'], host['addr4'], host['addr6']])
            lines.append(f'{names} {keytype} {key}')
        write_atomic(self.known_hosts, '\n'.join(lines) + '\n', 0o644)

    def write_inventory(self, hosts: list[dict], state: dict) -> None:
        groups: dict[str, dict] = {}
        san = state.get('san', {})
        for host in hosts:
            groups.setdefault(host['group'], {'hosts': {}})['hosts'][host['name']] = {
                # The SAN volumes this host reaches, each through its own block device.
                'cyha_lab_san_devices': {vol: v['devices'][host['name']] for vol, v in san.items()
                                         if host['name'] in v['devices']},
                'ansible_host': host['addr4'],
                'cyha_lab_addr6': host['addr6'],
                'cyha_lab_netns': host['netns'],
                'cyha_lab_kind': host['kind'],
                'cyha_lab_service_name': host['service_fqdn'],
                'cyha_lab_service_addr4': host['service_addr4'],
                # replica pairs: the home backend names its replica host, the replica host its home (the
                # topology declares the pairs: murder_replication_peer and replication_pairs come from it)
                **({'cyha_lab_replica': host['replica']} if host.get('replica') else {}),
                **({'cyha_lab_replica_of': host['replica_of']} if host.get('replica_of') else {}),
            }
        ssh_args = (f'-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes '
                    '-o IdentitiesOnly=yes -o ConnectTimeout=10')
        inventory = {'all': {'children': {'cyha_lab': {'children': groups}}, 'vars': {
            'ansible_user': 'root',
            'ansible_ssh_private_key_file': self.key,
            'ansible_ssh_common_args': ssh_args,
            'ansible_control_path_dir': self.cp_dir,
            'ansible_python_interpreter': '/usr/bin/python3',
            'cyha_lab_dir': self.dir,
            # the lab's own files (hooks, vars) for the product playbooks' hooks
            'cyha_lab_home': os.path.dirname(os.path.abspath(__file__)),
            'cyha_lab_san': {vol: {'uuid': v['uuid'], 'label': v['label']} for vol, v in san.items()},
            'cyha_lab_log_dir': self.log_dir,
            # how the hosts run their services: systemd (own root, systemd as PID 1) or direct (shared root)
            'cyha_lab_init': 'systemd' if state.get('systemd') else 'direct',
        }}}
        # JSON is YAML: no YAML library is needed to write it.
        write_atomic(self.inventory, '# cyrus.ha lab inventory: generated by lab/lab.py\n'
                     + json.dumps(inventory, indent=2, sort_keys=True) + '\n', 0o644)

    def write_topology(self, hosts: list[dict], state: dict) -> None:
        """The lab's Murder as a cyrus.ha.murder topology (use it beside inventory.yml)."""
        role = {'mupdate': 'mupdate', 'frontend': 'frontend', 'backend': 'backend'}
        spares = [h['name'] for h in hosts if h['kind'] == 'spare']
        topo = {
            'plugin': 'cyrus.ha.murder',
            'subnets': [str(NET4), str(NET6)],
            'hosts': {h['name']: {'address': h['addr4'], 'address6': h['addr6']} for h in hosts},
            'instances': {h['name']: {'role': role[h['kind']], 'host': h['name'], 'address': h['service_addr4'],
                                      'servername': h['service_fqdn']} for h in hosts if h['kind'] in role},
            'warm_spares': [{'instance': name, 'home': name, 'spare': spares[0],
                             'volume': {'label': volume['label'], 'mount': f'/srv/cyrus-ha/{name}'}}
                            for name, volume in sorted(state.get('san', {}).items()) if spares],
            # each replica pair: the home backend's instance replicates to its replica host's own disk
            'replicas': [{'instance': h['name'], 'home': h['name'], 'replica': h['replica'], 'port': SYNC_PORT}
                         for h in hosts if h.get('replica')],
        }
        write_atomic(self.topology, '# cyrus.ha lab topology: generated by lab/lab.py\n'
                     + json.dumps(topo, indent=2, sort_keys=True) + '\n', 0o644)

    # -- down ----------------------------------------------------------------------------------
    def down(self) -> None:
        state = self.load()
        # 1. The controller's SSH control masters for lab hosts (they would keep sessions alive).
        for pid in pids_matching(lambda cmd: self.cp_dir in cmd):
            kill_pid(pid)
        # 2. Every process inside a lab namespace, found by its network namespace, by PID.
        #    Lab namespaces are those of its hosts (from the state, or by the lab's host-name
        #    pattern after a lost state); other cyha- rigs (module tests) are not the lab's.
        ours = {h['netns'] for h in state.get('hosts', [])}
        namespaces = [ns for ns in list_netns() if ns in ours or LAB_NAME.match(ns)]
        # a systemd host ignores SIGTERM at its PID 1: pull its plug (SIGKILL ends its whole PID namespace)
        for host in state.get('hosts', []) if state.get('systemd') else ():
            if self.host_alive(state, host['name']):
                first = osroot.pid1(state['pids'][host['name']])
                if first:
                    kill_pid(first, signal.SIGKILL)
        targets = []
        for netns in namespaces:
            targets += pids_in_netns(netns)
        terminate(targets)
        # 3. The lab's syslog daemon and power switch, by their recorded PIDs (checked to be ours).
        pid = state.get('pids', {}).get('rsyslogd') or read_pid(self.rsyslog_pid)
        if pid and self.rsyslog_conf in proc_cmdline(pid):
            terminate([pid])
        # the power switch: found by its key file on its command line (this lab's alone, even after a lost state)
        switches = list(pids_matching(lambda cmd: self.power_key in cmd and 'power_switch.py' in cmd))
        if switches:
            terminate(switches)
        # 4. Namespaces and links.
        for netns in namespaces:
            run(['ip', 'netns', 'del', netns], check=False)
        for name in list_links():
            if name in ours or name == BRIDGE or LAB_NAME.match(name):
                run(['ip', 'link', 'del', name], check=False)
        # 5. Mounts and loop devices the lab or its tests left under the lab directory.
        for mountpoint in sorted(mounts_under(self.dir), key=len, reverse=True):
            run(['umount', '-l', mountpoint], check=False)
        for dev in loops_under(self.dir):
            run(['losetup', '-d', dev], check=False)
        # the systemd hosts' own roots (their overlays were unmounted above) and cgroups
        for host in state.get('hosts', []):
            removed = wait_for_value(lambda h=host: not osroot.remove_cgroups(h['name']), 10)
            if not removed:
                log(f'cgroups of host {host["name"]} are still busy: {osroot.cgroup_dirs(host["name"])}')
            for path in osroot.host_paths(self.host_dir(host['name'])).values():
                shutil.rmtree(path, ignore_errors=True)
        if os.path.isdir(self.netns_dir):
            shutil.rmtree(self.netns_dir)
        if os.path.isdir(os.path.join(self.dir, 'san')):
            shutil.rmtree(os.path.join(self.dir, 'san'))
        if os.path.exists(FENCE_AGENT):
            os.unlink(FENCE_AGENT)
        # 6. The /dev/log socket, when the lab made it.
        if state.get('created_dev_log') and os.path.exists('/dev/log'):
            os.unlink('/dev/log')
        for path in (self.state_file, self.inventory, self.topology, self.rsyslog_pid):
            if os.path.exists(path):
                os.unlink(path)
        if os.path.isdir(self.sock_dir):
            shutil.rmtree(self.sock_dir)
        wait_for(lambda: not [n for n in list_links() if n in ours or n == BRIDGE or LAB_NAME.match(n)], 10,
                 'lab links to disappear')
        log('lab down')

    def status(self) -> dict:
        state = self.load()
        return {'dir': self.dir, 'up': bool(state) and self.healthy(state), 'systemd': bool(state.get('systemd')),
                'hosts': state.get('hosts', []),
                'inventory': self.inventory if os.path.exists(self.inventory) else None}

    def leftovers(self) -> list[str]:
        """Everything named cyha- or tied to the lab directory that still exists."""
        found = [f'netns {n}' for n in list_netns() if n.startswith(PREFIX)]
        found += [f'link {n}' for n in list_links() if n.startswith(PREFIX)]
        me = os.getpid()
        for pid in pids_matching(lambda cmd: self.dir in cmd or 'cyha-host-init' in cmd):
            if pid != me:
                found.append(f'process {pid}: {proc_cmdline(pid)}')
        root_ns = os.stat('/proc/self/ns/net').st_ino
        for pid in all_pids():
            try:
                if os.stat(f'/proc/{pid}/ns/net').st_ino != root_ns and proc_state(pid) != 'Z' \
                        and PREFIX in ' '.join(netns_names_of(pid)):
                    found.append(f'process {pid} in a lab namespace: {proc_cmdline(pid)}')
            except OSError:
                continue
        found += [f'mount {m}' for m in mounts_under(self.dir)]
        found += [f'mount {m}' for m in all_mounts() if PREFIX in m]
        found += [f'loop device {d}' for d in loops_under(PREFIX)]
        found += [f'file {FENCE_AGENT}'] if os.path.exists(FENCE_AGENT) else []
        found += [f'cgroup {path}' for path in cgroups_named(PREFIX)]
        return sorted(set(found))


# ---------------------------------------------------------------------------------------------
# Small system helpers
# ---------------------------------------------------------------------------------------------

def write_atomic(path: str, text: str, mode: int) -> None:
    """Write a file through a temp file in the same directory and an atomic rename."""
    tmp = f'{path}.{os.getpid()}.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def make_ca(directory: str, name: str, subject: str, days: int = 3650) -> None:
    """A CA (NAME.pem, NAME.key) in directory, unless it is there already."""
    cert, key = os.path.join(directory, f'{name}.pem'), os.path.join(directory, f'{name}.key')
    if os.path.exists(cert) and os.path.exists(key):
        return
    run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
         '-keyout', key, '-out', cert, '-days', str(days), '-subj', f'/CN={subject}',
         '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
         '-addext', 'subjectKeyIdentifier=hash'])
    os.chmod(key, 0o600)


def make_server_cert(directory: str, ca: str, name: str, common_name: str, dns: list[str], ips: list[str],
                     days: int = 825) -> None:
    """A server certificate NAME.pem with its key NAME.key, signed by the CA CA.pem/CA.key in
    directory, for the DNS names and IP addresses given, unless it is there already for exactly those names."""
    cert, key = os.path.join(directory, f'{name}.pem'), os.path.join(directory, f'{name}.key')
    names = ','.join([f'DNS:{n}' for n in dns] + [f'IP:{a}' for a in ips])
    if os.path.exists(cert) and os.path.exists(key) and cert_names(cert) == sorted(names.split(',')):
        return
    csr, ext = os.path.join(directory, f'{name}.csr'), os.path.join(directory, f'{name}.ext')
    write_atomic(ext, f'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n'
                      f'extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={names}\n'
                      'subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n', 0o600)
    try:
        run(['openssl', 'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
             '-keyout', key, '-out', csr, '-subj', f'/CN={common_name}'])
        os.chmod(key, 0o600)
        run(['openssl', 'x509', '-req', '-in', csr, '-CA', os.path.join(directory, f'{ca}.pem'),
             '-CAkey', os.path.join(directory, f'{ca}.key'), '-set_serial', str(int.from_bytes(os.urandom(8), 'big')),
             '-days', str(days), '-extfile', ext, '-out', cert])
    finally:
        for path in (csr, ext):
            if os.path.exists(path):
                os.unlink(path)


def cert_names(cert: str) -> list[str]:
    """The subjectAltNames of a PEM certificate, sorted, as DNS:name and IP:address."""
    proc = run(['openssl', 'x509', '-in', cert, '-noout', '-ext', 'subjectAltName'], check=False)
    text = proc.stdout.split('\n', 1)[1] if proc.returncode == 0 and '\n' in proc.stdout else ''
    return sorted(n.strip().replace('IP Address:', 'IP:') for n in text.split(',') if n.strip())


def spawn(argv: list[str], logfile: str, preexec=None) -> subprocess.Popen:
    """Start a daemon detached from this process; its output goes to logfile."""
    with open(logfile, 'ab') as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, preexec_fn=preexec)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise LabError(f'timed out after {timeout:.0f} s waiting for {what}')


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir('/run/netns'))
    except FileNotFoundError:
        return []


def list_links() -> list[str]:
    return [link['ifname'] for link in ip_json('link', 'show')]


def link_exists(name: str) -> bool:
    return name in list_links()


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir('/proc') if p.isdigit()]


def proc_cmdline(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace').strip()
    except OSError:
        return ''


def proc_state(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/stat', encoding='utf-8') as handle:
            return handle.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return ''


def pid_alive(pid, name: str) -> bool:
    return bool(pid) and proc_state(pid) not in ('', 'Z', 'X') and name in proc_cmdline(pid)


def read_pid(path: str):
    try:
        with open(path, encoding='utf-8') as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def pids_matching(predicate) -> list[int]:
    me = os.getpid()
    return [pid for pid in all_pids() if pid != me and proc_state(pid) != 'Z' and predicate(proc_cmdline(pid))]


def netns_inode(netns: str):
    try:
        return os.stat(os.path.join('/run/netns', netns)).st_ino
    except OSError:
        return None


def pids_in_netns(netns: str) -> list[int]:
    inode = netns_inode(netns)
    found = []
    for pid in all_pids():
        try:
            if os.stat(f'/proc/{pid}/ns/net').st_ino == inode:
                found.append(pid)
        except OSError:
            continue
    return found


def netns_names_of(pid: int) -> list[str]:
    inode = os.stat(f'/proc/{pid}/ns/net').st_ino
    return [ns for ns in list_netns() if netns_inode(ns) == inode]


def kill_pid(pid: int, sig: int = signal.SIGTERM) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def terminate(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after the grace time; wait until each is gone or a zombie."""
    for pid in pids:
        kill_pid(pid)

    def gone() -> bool:
        return all(proc_state(p) in ('', 'Z', 'X') for p in pids)
    try:
        wait_for(gone, grace, 'processes to stop')
    except LabError:
        for pid in pids:
            kill_pid(pid, signal.SIGKILL)
        wait_for(gone, 10, 'processes to die after SIGKILL')


def all_mounts() -> list[str]:
    points = []
    with open('/proc/self/mountinfo', encoding='utf-8') as handle:
        for line in handle:
            fields = line.split()
            points.append(fields[4].replace('\\040', ' '))
    return points


def mounts_under(directory: str) -> list[str]:
    return [m for m in all_mounts() if m == directory or m.startswith(directory + '/')]


def cgroups_named(prefix: str) -> list[str]:
    """Top-level cgroups whose name starts with prefix, in every hierarchy (the systemd hosts' own)."""
    found = []
    root = osroot.CGROUP_ROOT
    for hierarchy in [root] + [os.path.join(root, e) for e in (os.listdir(root) if os.path.isdir(root) else ())]:
        if os.path.isdir(hierarchy) and os.path.exists(os.path.join(hierarchy, 'cgroup.procs')):
            found += [os.path.join(hierarchy, e) for e in os.listdir(hierarchy)
                      if e.startswith(prefix) and os.path.isdir(os.path.join(hierarchy, e))]
    return sorted(found)


def wait_for_value(predicate, timeout: float) -> bool:
    """Poll predicate until true or timeout; whether it came true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def loop_devices() -> list[dict]:
    out = run(['losetup', '-J', '-l'], check=False).stdout.strip()
    return json.loads(out).get('loopdevices', []) if out else []


def loops_under(fragment: str) -> list[str]:
    return [d['name'] for d in loop_devices() if fragment in (d.get('back-file') or '')]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='cyrus.ha lab of virtual hosts')
    parser.add_argument('--dir', default=os.environ.get('CYHA_LAB_DIR', DEFAULT_DIR))
    sub = parser.add_subparsers(dest='command', required=True)
    up = sub.add_parser('up')
    up.add_argument('--frontends', type=int, default=int(os.environ.get('CYHA_FRONTENDS', '2')))
    up.add_argument('--backends', type=int, default=int(os.environ.get('CYHA_BACKENDS', '2')))
    up.add_argument('--spares', type=int, default=int(os.environ.get('CYHA_SPARES', '1')))
    up.add_argument('--replica-pairs', type=int, default=int(os.environ.get('CYHA_REPLICA_PAIRS', '1')),
                    help='backends after the SAN ones that replicate to a replica host of their own (Cyrus rolling '
                         'replication)')
    up.add_argument('--san-mb', type=int, default=int(os.environ.get('CYHA_SAN_MB', str(SAN_MB))),
                    help='size of each backend\'s SAN disk in MiB (sparse; more for many mailboxes)')
    up.add_argument('--systemd', action='store_true', default=bool(os.environ.get('CYHA_LAB_SYSTEMD')),
                    help='each host a container with its own root filesystem and systemd as PID 1 (lab/osroot.py)')
    sub.add_parser('down')
    sub.add_parser('base', help='build the systemd hosts\' base root filesystem now (cached; up --systemd needs it)')
    sub.add_parser('revive')
    sub.add_parser('status')
    sub.add_parser('leftovers')
    args = parser.parse_args(argv)
    lab = Lab(args.dir)
    try:
        if args.command == 'up':
            lab.up(args.frontends, args.backends, args.spares, args.san_mb, args.replica_pairs, args.systemd)
        elif args.command == 'down':
            lab.down()
        elif args.command == 'base':
            print(osroot.ensure_base(log))
        elif args.command == 'revive':
            state = lab.load()
            if not state.get('up'):
                raise LabError('the lab is not up')
            lab.revive(state)
        elif args.command == 'status':
            print(json.dumps(lab.status(), indent=2))
        else:
            found = lab.leftovers()
            for item in found:
                print(item)
            return 1 if found else 0
    except (LabError, osroot.RootError, subprocess.TimeoutExpired, OSError) as exc:
        log(f'error: {exc}')
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
