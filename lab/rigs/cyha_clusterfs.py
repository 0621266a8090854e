# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real clustered filesystems for the storage probe: servers on the controller (198.51.100.1, the lab's
bridge), one FUSE client per lab host mounted in that host's own mount namespace, so two lab hosts are two
clients of one filesystem, as two backends of a site would be.

Every daemon is started with its own configuration and state under one ``cyha-`` directory, and stopped by
PID; close() unmounts every client, stops every daemon and removes the directory whatever happened.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile

import cyha_cluster
import labutil

SERVER = '198.51.100.1'


def inside(host: str, argv: list, timeout: float = 30) -> subprocess.CompletedProcess:
    """A command in a lab host's network, mount and UTS namespaces (no SSH: works when the host is busy)."""
    return subprocess.run(['nsenter', '-t', str(cyha_cluster.node_pid(host)), '-n', '-m', '-u', *argv],
                          capture_output=True, text=True, timeout=timeout, check=False)


def alive(pid: int) -> bool:
    try:
        with open('/proc/%d/stat' % pid, encoding='ascii', errors='replace') as handle:
            return handle.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


def stop_pid(pid: int, wait: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after wait seconds; returns once the process is gone (or a zombie)."""
    if not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    if not labutil.poll(lambda: not alive(pid), wait, 0.05):
        os.kill(pid, signal.SIGKILL)
        labutil.poll(lambda: not alive(pid), 10, 0.05)


class ClusterFS:
    """The FUSE clients of one clustered filesystem on lab hosts; subclasses start the servers and say how a
    client mounts."""

    name = 'clusterfs'
    subtype = ''

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix='cyha-%s-' % self.name)
        os.chmod(self.base, 0o755)
        self.point = tempfile.mkdtemp(prefix='cyha-%s-mnt-' % self.name, dir=labutil.LAB_DIR)
        self.clients = {}  # host -> Popen of its FUSE client (run in the foreground)
        self.daemons = []  # PIDs of the servers, stopped in reverse order
        self.stopped = False  # the servers were stopped under mounted clients: their umount would hang
        self.connections = {}  # host -> its client's FUSE connection number (/sys/fs/fuse/connections/N)

    def client_argv(self, options: str) -> list:
        raise NotImplementedError

    def mounted(self, host: str) -> bool:
        out = inside(host, ['findmnt', '-n', '-o', 'FSTYPE', self.point])
        return out.returncode == 0 and out.stdout.strip().startswith('fuse')

    def ready(self, host: str) -> bool:
        """Mounted, and the filesystem answers with some space (the servers have registered their storage)."""
        if not self.mounted(host):
            return False
        out = inside(host, ['stat', '-f', '-c', '%b', self.point], timeout=10)
        return out.returncode == 0 and out.stdout.strip().isdigit() and int(out.stdout) > 0

    def mount(self, hosts, options: str = '') -> None:
        for host in hosts:
            log = open(os.path.join(self.base, 'client-%s.log' % host), 'wb')
            try:
                self.clients[host] = subprocess.Popen(
                    ['nsenter', '-t', str(cyha_cluster.node_pid(host)), '-n', '-m', '-u', *self.client_argv(options)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            finally:
                log.close()
            if not labutil.poll(lambda: self.ready(host), 60, 0.1):  # noqa: B023 - called at once
                raise AssertionError('%s did not mount on %s: %s' % (self.name, host, self.client_log(host)))
            found = inside(host, ['findmnt', '-n', '-o', 'MAJ:MIN', self.point]).stdout.split()
            if found:
                self.connections[host] = found[0].split(':')[1]

    def client_log(self, host: str) -> str:
        try:
            with open(os.path.join(self.base, 'client-%s.log' % host), encoding='utf-8', errors='replace') as handle:
                return handle.read()[-2000:]
        except OSError:
            return ''

    def unmount(self) -> None:
        """Unmount every client. A client whose servers are gone, or with a request its servers never answer (a
        lock), hangs its umount or its exit: its FUSE connection is aborted (every request stuck in it ends with
        ENOTCONN), then it is killed by PID and the mount detached."""
        for host, proc in list(self.clients.items()):
            done = False
            if self.mounted(host) and not self.stopped:
                try:
                    done = inside(host, ['umount', self.point], timeout=10).returncode == 0
                except subprocess.TimeoutExpired:
                    done = False
            if done:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    done = False
            if not done or proc.poll() is None:
                self._abort(host, proc)
            del self.clients[host]
            self.connections.pop(host, None)

    def _abort(self, host: str, proc: subprocess.Popen) -> None:
        if host in self.connections:
            labutil.abort_fuse_connection(self.connections[host])
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        if self.mounted(host):
            inside(host, ['umount', '-l', self.point], timeout=10)

    def stop_servers(self) -> None:
        """Stop every server by PID (a test may do it mid-run: the filesystem is then gone under its clients)."""
        self.stopped = self.stopped or bool(self.clients)
        for pid in reversed(self.daemons):
            stop_pid(pid)

    def close(self) -> None:
        try:
            self.unmount()
        finally:
            self.stop_servers()
            shutil.rmtree(self.base, ignore_errors=True)
            if os.path.isdir(self.point):
                os.rmdir(self.point)


class MooseFS(ClusterFS):
    """MooseFS 3: a master and one chunkserver on the controller, mfsmount on each lab host. Options given to
    mount() go to every client (for example mfscachemode=YES)."""

    name = 'moosefs'
    subtype = 'mfs'

    def __init__(self, port: int = 9419):
        """port: the first of the four ports of this instance (metaloggers, chunkservers, clients, chunk data)."""
        super().__init__()
        self.PORTS = {'MATOML': port, 'MATOCS': port + 1, 'MATOCL': port + 2, 'CSSERV': port + 3}
        for part in ('master', 'cs', 'hdd'):
            os.makedirs(os.path.join(self.base, part))
        self.master_cfg = os.path.join(self.base, 'mfsmaster.cfg')
        self.cs_cfg = os.path.join(self.base, 'mfschunkserver.cfg')
        self._write(self.master_cfg, {
            'WORKING_USER': 'mfs', 'WORKING_GROUP': 'mfs', 'SYSLOG_IDENT': 'cyha-mfsmaster',
            'DATA_PATH': os.path.join(self.base, 'master'),
            'EXPORTS_FILENAME': os.path.join(self.base, 'mfsexports.cfg'),
            'TOPOLOGY_FILENAME': os.path.join(self.base, 'mfstopology.cfg'),
            'MATOML_LISTEN_HOST': SERVER, 'MATOML_LISTEN_PORT': self.PORTS['MATOML'],
            'MATOCS_LISTEN_HOST': SERVER, 'MATOCS_LISTEN_PORT': self.PORTS['MATOCS'],
            'MATOCL_LISTEN_HOST': SERVER, 'MATOCL_LISTEN_PORT': self.PORTS['MATOCL']})
        self._write(self.cs_cfg, {
            'WORKING_USER': 'mfs', 'WORKING_GROUP': 'mfs', 'SYSLOG_IDENT': 'cyha-mfschunkserver',
            'DATA_PATH': os.path.join(self.base, 'cs'), 'HDD_CONF_FILENAME': os.path.join(self.base, 'mfshdd.cfg'),
            'BIND_HOST': SERVER, 'MASTER_HOST': SERVER, 'MASTER_PORT': self.PORTS['MATOCS'],
            'CSSERV_LISTEN_HOST': SERVER, 'CSSERV_LISTEN_PORT': self.PORTS['CSSERV']})
        with open(os.path.join(self.base, 'mfsexports.cfg'), 'w', encoding='ascii') as handle:
            handle.write('198.51.100.0/24\t/\trw,alldirs,maproot=0:0\n')
        open(os.path.join(self.base, 'mfstopology.cfg'), 'w', encoding='ascii').close()
        with open(os.path.join(self.base, 'mfshdd.cfg'), 'w', encoding='ascii') as handle:
            handle.write('%s\n' % os.path.join(self.base, 'hdd'))
        shutil.copy('/var/lib/mfs/metadata.mfs.empty', os.path.join(self.base, 'master', 'metadata.mfs'))
        for root, dirs, files in os.walk(self.base):
            for name in [root] + [os.path.join(root, item) for item in dirs + files]:
                shutil.chown(name, 'mfs', 'mfs')

    @staticmethod
    def _write(path: str, settings: dict) -> None:
        with open(path, 'w', encoding='ascii') as handle:
            handle.writelines('%s = %s\n' % item for item in settings.items())

    def _start(self, binary: str, cfg: str, lock: str) -> None:
        proc = subprocess.run([binary, '-c', cfg, 'start'], capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise AssertionError('%s did not start: %s' % (binary, proc.stdout + proc.stderr))
        with open(lock, encoding='ascii') as handle:
            self.daemons.append(int(''.join(filter(str.isdigit, handle.read()))))

    def start(self) -> 'MooseFS':
        self._start('mfsmaster', self.master_cfg, os.path.join(self.base, 'master', '.mfsmaster.lock'))
        self._start('mfschunkserver', self.cs_cfg, os.path.join(self.base, 'cs', '.mfschunkserver.lock'))
        return self

    def client_argv(self, options: str) -> list:
        return ['mfsmount', '-f', self.point, '-H', SERVER, '-P', str(self.PORTS['MATOCL'])] + (
            ['-o', options] if options else [])


class GlusterFS(ClusterFS):
    """GlusterFS: glusterd and one brick on the controller (a distribute volume of one brick), the glusterfs FUSE
    client on each lab host. volume_options are set before the volume starts; options given to mount() are the
    client's own command-line options (for example --entry-timeout=0)."""

    name = 'glusterfs'
    subtype = 'glusterfs'
    VOLUME = 'cyha-gv0'
    # written by glusterd and its bricks outside their working directory: removed when they were not there before
    OUTSIDE = ('/var/lib/glusterd/geo-replication/gsyncd_template.conf', '/var/lib/glusterd/geo-replication',
               '/var/lib/glusterd/ss_brick', '/run/gluster/snaps', '/run/gluster', '/var/lib/glusterd')

    def __init__(self, volume_options: dict | None = None):
        super().__init__()
        self.volume_options = dict(volume_options or {})
        for part in ('lib', 'run', 'log', 'brick'):
            os.makedirs(os.path.join(self.base, part))
        self.socket = os.path.join(self.base, 'run', 'glusterd.socket')
        self.vol = os.path.join(self.base, 'glusterd.vol')
        self.made_outside = [path for path in self.OUTSIDE if not os.path.exists(path)]
        options = {'working-directory': os.path.join(self.base, 'lib'), 'run-directory': os.path.join(self.base, 'run'),
                   'logging-directory': os.path.join(self.base, 'log'), 'glusterd-sockfile': self.socket,
                   'transport-type': 'socket', 'transport.address-family': 'inet',
                   'transport.socket.bind-address': SERVER, 'transport.socket.listen-port': 24007,
                   'ping-timeout': 0, 'event-threads': 1, 'base-port': 49152, 'max-port': 49252}
        with open(self.vol, 'w', encoding='ascii') as handle:
            handle.write('volume management\n    type mgmt/glusterd\n')
            handle.writelines('    option %s %s\n' % item for item in options.items())
            handle.write('end-volume\n')

    def cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(['gluster', '--mode=script', '--glusterd-sock=%s' % self.socket,
                               '--log-file=%s' % os.path.join(self.base, 'log', 'cli.log'), *argv],
                              capture_output=True, text=True, timeout=60, check=False)
        if check and proc.returncode != 0:
            raise AssertionError('gluster %s: %s' % (' '.join(argv), proc.stdout + proc.stderr))
        return proc

    def start(self) -> 'GlusterFS':
        pidfile = os.path.join(self.base, 'run', 'glusterd.pid')
        subprocess.run(['glusterd', '-f', self.vol, '-p', pidfile, '-l', os.path.join(self.base, 'log', 'glusterd.log')],
                       check=True, timeout=60, capture_output=True)
        with open(pidfile, encoding='ascii') as handle:
            self.daemons.append(int(handle.read().strip()))
        if not labutil.poll(lambda: self.cli('volume', 'list', check=False).returncode == 0, 30, 0.1):
            raise AssertionError('glusterd did not answer: %s' % self.cli('volume', 'list', check=False).stderr)
        self.cli('volume', 'create', self.VOLUME, 'transport', 'tcp',
                 '%s:%s' % (SERVER, os.path.join(self.base, 'brick', 'b1')), 'force')
        if self.volume_options:
            self.cli('volume', 'set', self.VOLUME, *[str(part) for item in self.volume_options.items() for part in item])
        self.cli('volume', 'start', self.VOLUME)
        bricks = os.path.join(self.base, 'run', 'vols', self.VOLUME)
        if not labutil.poll(lambda: os.path.isdir(bricks) and any(name.endswith('.pid') for name in os.listdir(bricks))
                            and 'Y' in self.cli('volume', 'status', self.VOLUME, check=False).stdout.split(), 30, 0.1):
            raise AssertionError('the brick did not come up: %s' % self.cli('volume', 'status', self.VOLUME).stdout)
        for name in os.listdir(bricks):
            if name.endswith('.pid'):
                with open(os.path.join(bricks, name), encoding='ascii') as handle:
                    pid = int(handle.read().strip())
                self.daemons.append(pid)
                with open('/proc/%d/cmdline' % pid, 'rb') as handle:
                    argv = handle.read().split(b'\0')
                if b'-S' in argv:  # the brick's socket to glusterd, always in /var/run/gluster
                    self.made_outside.insert(0, argv[argv.index(b'-S') + 1].decode())
        return self

    def client_argv(self, options: str) -> list:
        return ['glusterfs', '-N', '--process-name', 'fuse', '--volfile-server=%s' % SERVER,
                '--volfile-id=%s' % self.VOLUME, '-l', os.path.join(self.base, 'log', 'client.log')] + \
            options.split() + [self.point]

    def close(self) -> None:
        try:
            super().close()
        finally:
            for path in self.made_outside:
                if os.path.isdir(path) and not os.path.islink(path):
                    try:
                        os.rmdir(path)
                    except OSError:
                        pass
                elif os.path.lexists(path):
                    os.unlink(path)


def inside_path(clusterfs: ClusterFS, host: str, *parts: str) -> str:
    """A path under the client mount of a lab host, as the controller reaches it (through the host's root)."""
    return os.path.join('/proc/%d/root' % cyha_cluster.node_pid(host) + clusterfs.point, *parts)


def until_gone(clusterfs: ClusterFS, hosts) -> bool:
    """No client of clusterfs is left mounted on hosts, and none of its daemons runs."""
    return not any(clusterfs.mounted(host) for host in hosts) and not any(alive(pid) for pid in clusterfs.daemons)
