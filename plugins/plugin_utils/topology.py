# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Cyrus Murder topology (hosts, instances, warm-spare and replica pairs) validated into inventory data.

The file the ``cyrus.ha.murder`` inventory plugin reads::

    plugin: cyrus.ha.murder
    subnets: [198.51.100.0/24, 2001:db8:100::/64]
    hosts:
      imap-mupdate: {address: 198.51.100.10}
      imap-be1: {address: 198.51.100.21, address6: 2001:db8:100::21}
      imap-be2: {address: 198.51.100.22}
      imap-spare: {address: 198.51.100.30}
      imap-replica: {address: 198.51.100.50}
    instances:
      mupdate: {role: mupdate, host: imap-mupdate, address: 198.51.100.110, servername: mupdate.imap.example.org}
      be1: {role: backend, host: imap-be1, address: 198.51.100.121, servername: be1.imap.example.org}
      be2: {role: backend, host: imap-be2, address: 198.51.100.122, servername: be2.imap.example.org}
    warm_spares:
      - {instance: be1, home: imap-be1, spare: imap-spare, volume: {label: cyrus-be1, mount: /srv/cyrus/be1}}
    replicas:
      - {instance: be2, home: imap-be2, replica: imap-replica}

``build()`` runs one step per part, in this order (the first error stops it): ``parse_subnets``,
``build_hosts`` (host names, boot addresses, host vars), ``build_instances`` (service addresses,
servernames, instance vars) and ``check_master``, ``attach_warm_spares`` (pairs and their volumes),
``attach_replicas`` (replica pairs),
``check_constructed`` (the compose, groups and keyed_groups options) and ``global_vars``, then
``place_instances``, ``build_groups`` and ``first_instance_vars`` (the inventory's groups and host
variables). ``check_duplicate_keys`` reads the file's text for keys YAML would drop, and
``check_keyed_groups`` the groups keyed_groups made. Every error names
the offending entry (``instances.be1.address: ...``) and the cause; an optional key set to null is
the same as a key left out.
"""

from __future__ import annotations

import datetime
import keyword
import posixpath
import re

import yaml

# what the shared_volume module accepts, so that a pair the inventory takes is one the module takes
from ansible_collections.cyrus.ha.plugins.module_utils.volume import (
    FSTYPE_RE, LABEL_RE, MOUNTPOINT_RE, OPTS_RE, UUID_RE)

try:
    import netaddr
except ImportError:  # pragma: no cover - reported by the caller
    netaddr = None

ROLES = ('mupdate', 'backend', 'frontend')
ROLE_GROUPS = {'mupdate': 'mupdate_master', 'backend': 'backends', 'frontend': 'frontends'}
SPARE_GROUP = 'spares'
REPLICA_GROUP = 'replicas'
ALL_GROUP = 'murder'
# The groups this plugin fills, and Ansible's own: no host and no composed group may take their names.
GROUP_NAMES = (ALL_GROUP, 'mupdate_master', 'backends', 'frontends', SPARE_GROUP, REPLICA_GROUP, 'all', 'ungrouped')
INSTANCE_NAME = re.compile(r'[a-z][a-z0-9_-]{0,30}')
HOST_LABEL = r'[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?'
HOST_NAME = re.compile(r'%s(?:\.%s)*' % (HOST_LABEL, HOST_LABEL))
HOST_NAME_MAX = 63
DNS_NAME = re.compile(r'(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}'
                      r'[A-Za-z0-9])?)*')
IDENTIFIER = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
PLAIN_KEY = re.compile(r'[A-Za-z0-9_@:+=,-][A-Za-z0-9_.@:+=,-]*')
DEVICE_PATH = re.compile(r'/dev(/[A-Za-z0-9_.:+@-]+)+')
TOP_KEYS = {'plugin', 'subnets', 'hosts', 'instances', 'warm_spares', 'replicas', 'vars', 'compose', 'groups',
            'keyed_groups', 'strict', 'use_extra_vars', 'leading_separator'}
HOST_KEYS = {'address', 'address6', 'vars'}
INSTANCE_KEYS = {'role', 'host', 'address', 'address6', 'servername', 'vars'}
SPARE_KEYS = {'instance', 'home', 'spare', 'volume'}
REPLICA_KEYS = {'instance', 'home', 'replica', 'port'}
# Cyrus's sync_server port (the murder role's murder_replication_port): each pair's nodes listen on their boot
# address there while they hold the replica, so two pairs sharing a node need ports of their own.
SYNC_PORT = 2005
VOLUME_KEYS = {'uuid', 'label', 'device', 'mount', 'fstype', 'options'}
# The variables the plugin sets itself, and from what: no vars or compose entry may set them.
GENERATED = {
    'ansible_host': "the host's address",
    'ansible_ssh_host': "the host's address (as ansible_host)",
    'murder_host_address6': "the host's address6",
    'murder_instances': 'instances',
    'murder_standby_instances': 'warm_spares',
    'murder_replica_instances': 'replicas',
    'murder_replication_peer': "the replica host of the host's first instance (replicas)",
    'murder_replication_port': "the replica pair of the host's first instance (replicas)",
    'replication_pairs': 'replicas',
    'warm_spare_pairs': 'warm_spares',
    'murder_role': "the host's first instance",
    'murder_instance': "the host's first instance",
    'murder_address': "the host's first instance",
    'murder_address_prefix': "the subnet of the host's first instance",
    'murder_servername': "the host's first instance",
    'murder_mupdate_servername': 'the mupdate instance (or the top-level vars)',
}
# Variables Ansible sets itself.
ANSIBLE_VARS = ('ansible_check_mode', 'ansible_facts', 'ansible_play_batch', 'ansible_play_hosts', 'ansible_version',
                'group_names', 'groups', 'hostvars', 'inventory_dir', 'inventory_file', 'inventory_hostname',
                'inventory_hostname_short', 'omit', 'play_hosts', 'playbook_dir')
# Ranges that hold no host or service address (the first match names the cause).
SPECIAL_RANGES = (
    ('0.0.0.0/32', 'the unspecified address', 'the unspecified address'),
    ('0.0.0.0/8', 'a "this network" address', '"this network" addresses'),
    ('127.0.0.0/8', 'a loopback address', 'loopback addresses'),
    ('169.254.0.0/16', 'a link-local address', 'link-local addresses'),
    ('224.0.0.0/4', 'a multicast address', 'multicast addresses'),
    ('255.255.255.255/32', 'the limited broadcast address', 'the limited broadcast address'),
    ('240.0.0.0/4', 'a reserved address', 'reserved addresses'),
    ('::/128', 'the unspecified address', 'the unspecified address'),
    ('::1/128', 'the loopback address', 'the loopback address'),
    ('::ffff:0:0/96', 'an IPv4-mapped address', 'IPv4-mapped addresses'),
    ('::/96', 'a deprecated IPv4-compatible address', 'deprecated IPv4-compatible addresses'),
    ('fe80::/10', 'a link-local address', 'link-local addresses'),
    ('fec0::/10', 'a deprecated site-local address', 'deprecated site-local addresses'),
    ('ff00::/8', 'a multicast address', 'multicast addresses'),
)
# Mount points a shared volume would hide a system directory at; and trees of virtual filesystems.
SYSTEM_DIRS = ('/', '/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib32', '/lib64', '/proc', '/root', '/run',
               '/sbin', '/sys', '/tmp', '/usr', '/var')
VIRTUAL_TREES = ('/dev/', '/proc/', '/run/', '/sys/')


class TopologyError(ValueError):
    """The topology is invalid; the message names the entry and the cause."""


def _require_netaddr():
    if netaddr is None:
        raise TopologyError('the cyrus.ha.murder inventory needs the Python library netaddr on the controller: '
                            'pip install netaddr')


def _kind(value) -> str:
    """The YAML name of a value's type."""
    if value is None:
        return 'null'
    for types, name in ((bool, 'boolean'), (int, 'integer'), (float, 'number'), (str, 'string'), (dict, 'mapping'),
                        ((list, tuple), 'list'), ((set, frozenset), 'set'), ((bytes, bytearray), 'binary'),
                        ((datetime.date, datetime.datetime), 'date')):
        if isinstance(value, types):
            return name
    return type(value).__name__


def _show(value, limit: int = 60) -> str:
    """repr() of a value, cut short when long (a message names a value, it does not replay it)."""
    if isinstance(value, str):
        value = str(value)
    text = repr(value)
    if len(text) > limit:
        size = len(value) if isinstance(value, str) else len(text)
        text = '%s... (%d characters)' % (text[:limit], size)
    return text


def _got(value) -> str:
    """What a message says was found instead: its type, and the value when it is a short scalar."""
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'boolean %s' % str(value).lower()
    if isinstance(value, str) and not value:
        return 'an empty string'
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        return _kind(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return 'date %s (quote it to keep it text)' % value.isoformat()
    return '%s %s' % (_kind(value), _show(value))


def _name(value) -> str:
    """A key as part of an entry's name: as written when plain, else quoted (a newline or a / never blurs a message)."""
    if isinstance(value, str) and len(value) <= 64 and PLAIN_KEY.fullmatch(value):
        return str(value)
    return _show(value)


def _mapping(value, where: str, allowed: set = None, required: bool = True) -> dict:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise TopologyError('%s: expected a mapping, got %s' % (where, _got(value)))
    if allowed is not None:
        unknown = sorted(_name(k) for k in value if k not in allowed)
        if unknown:
            raise TopologyError('%s: unknown key %s (known: %s)' % (where, ', '.join(unknown), ', '.join(sorted(allowed))))
    return value


def _token(value, where: str, what: str) -> str:
    """A non-empty string of printable ASCII without spaces (an address or a network as written)."""
    if not isinstance(value, str) or not value:
        raise TopologyError('%s: expected %s, got %s' % (where, what, _got(value)))
    if not value.isascii():
        raise TopologyError('%s: %s has characters other than ASCII: write %s with the ASCII digits 0-9'
                            % (where, _show(value), what))
    if not value.isprintable() or ' ' in value:
        raise TopologyError('%s: %s has spaces or control characters: write %s alone' % (where, _show(value), what))
    return str(value)


def _special(address):
    """(range, one of it, all of it) of the special range an address or a network falls in or overlaps, or None."""
    for cidr, one, every in SPECIAL_RANGES:
        network = netaddr.IPNetwork(cidr)
        if network.version == address.version and (address in network or
                                                   (isinstance(address, netaddr.IPNetwork) and network in address)):
            return network, one, every
    return None


def parse_subnet(text, where: str):
    """One network in canonical CIDR form, without host bits, holding no special range."""
    _require_netaddr()
    example = 'a network in CIDR form such as 198.51.100.0/24'
    text = _token(text, where, example)
    if '/' not in text:
        raise TopologyError('%s: %s is not %s' % (where, _show(text), example))
    prefix = text.split('/', 1)[1]
    maximum = 128 if ':' in text else 32
    if prefix.isdigit() and (len(prefix.lstrip('0')) > 3 or int(prefix) > maximum):
        raise TopologyError('%s: %s: the prefix length %s is out of range (0 to %d for IPv%d)'
                            % (where, _show(text), _show(prefix, 24), maximum, 4 if maximum == 32 else 6))
    if not prefix.isdigit() and not (maximum == 32 and re.fullmatch(r'[0-9.]+', prefix)):
        raise TopologyError('%s: %s: the prefix length %s is not a number from 0 to %d'
                            % (where, _show(text), _show(prefix, 24), maximum))
    try:
        network = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise TopologyError('%s: %s is not a valid network' % (where, _show(text))) from None
    if network.ip != network.network:
        raise TopologyError('%s: %s has host bits set: write %s' % (where, text, network.cidr))
    if str(network) != text:
        raise TopologyError('%s: write %s as %s' % (where, text, network))
    special = _special(network)
    if special:
        raise TopologyError('%s: %s overlaps %s (%s), where no host or service address can be: declare only the '
                            'networks of the hosts and their service addresses' % (where, text, special[0], special[2]))
    return network


def parse_address(text, where: str, version: int, subnets: list):
    """One address without prefix, written canonically, inside a declared subnet of its family."""
    _require_netaddr()
    kind = 'IPv4' if version == 4 else 'IPv6'
    text = _token(text, where, 'an %s address' % kind)
    if '/' in text:
        raise TopologyError('%s: %s has a prefix length: write the address alone (the prefix comes from subnets)'
                            % (where, text))
    if '%' in text:
        raise TopologyError('%s: %s has a zone index (%s): host and service addresses are global, write one '
                            'without it' % (where, text, text[text.index('%'):]))
    try:
        address = netaddr.IPAddress(text, version)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        form = ' (four decimal numbers from 0 to 255 without leading zeros)' if version == 4 else ''
        raise TopologyError('%s: %s is not a valid %s address%s' % (where, _show(text), kind, form)) from None
    if version == 6 and address.is_ipv4_mapped():
        raise TopologyError('%s: %s is an IPv4-mapped address: write it as the IPv4 address %s (IPv4 addresses '
                            'go in address)' % (where, text, address.ipv4()))
    special = _special(address)
    if special:
        raise TopologyError('%s: %s is %s (%s): it cannot be a host or service address'
                            % (where, text, special[1], special[0]))
    canonical = str(address)
    if canonical != text:
        raise TopologyError('%s: write %s as %s' % (where, text, canonical))
    matching = [n for n in subnets if n.version == version and address in n]
    if not matching:
        declared = ', '.join(str(n) for n in subnets if n.version == version) or 'none declared'
        raise TopologyError('%s: %s is outside the declared %s subnets (%s)' % (where, text, kind, declared))
    network = matching[0]
    if version == 4 and network.prefixlen < 31 and address in (network.network, network.broadcast):
        raise TopologyError('%s: %s is the network or broadcast address of %s' % (where, text, network))
    if version == 6 and network.prefixlen < 127 and address == network.network:
        raise TopologyError('%s: %s is the subnet-router anycast address of %s' % (where, text, network))
    return address, network.prefixlen


def parse_subnets(raw) -> list:
    """The declared networks, each canonical, no two of one family overlapping."""
    if not isinstance(raw, list) or not raw:
        raise TopologyError('subnets: expected a non-empty list of networks such as 198.51.100.0/24')
    subnets = [parse_subnet(s, 'subnets[%d]' % i) for i, s in enumerate(raw)]
    for i, one in enumerate(subnets):
        for j, other in enumerate(subnets[:i]):
            if one.version == other.version and (one in other or other in one):
                raise TopologyError('subnets[%d]: %s overlaps subnets[%d] %s' % (i, one, j, other))
    return subnets


class AddressClaims:
    """Every boot and service address has one owner (``hosts.X.address``, ``instances.Y.address6``...)."""

    def __init__(self):
        self.owners = {}

    def claim(self, address, owner: str, where: str) -> None:
        key = str(address)
        if key in self.owners:
            first = self.owners[key]
            if first.startswith('hosts.') and owner.startswith('instances.'):
                host = first[len('hosts.'):].rsplit('.', 1)[0]   # host names may hold dots
                raise TopologyError('%s: %s is the boot address of %s: a service address must be its own'
                                    % (where, key, host))
            raise TopologyError('%s: %s is already used by %s' % (where, key, first))
        self.owners[key] = owner


def check_vars(raw, where: str, allowed: tuple = ()) -> dict:
    """A ``vars`` mapping: valid variable names, none of them one the plugin or Ansible sets itself
    (except those in ``allowed``); returns a copy."""
    variables = _mapping(raw, where, required=False)
    for name in variables:
        check_variable_name(name, where, allowed)
    return dict(variables)


def check_variable_name(name, where: str, allowed: tuple = ()) -> None:
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name) or keyword.iskeyword(name):
        raise TopologyError('%s: %s is not a valid variable name (ASCII letters, digits and _, not starting with a '
                            'digit)' % (where, _show(name)))
    if name in GENERATED and name not in allowed:
        raise TopologyError('%s.%s: the plugin sets %s itself, from %s: it cannot be set here'
                            % (where, name, name, GENERATED[name]))
    if name in ANSIBLE_VARS:
        raise TopologyError('%s.%s: %s is a variable Ansible sets itself: it cannot be set here' % (where, name, name))


def check_host_name(name, where: str) -> None:
    if not isinstance(name, str) or len(name) > HOST_NAME_MAX or not HOST_NAME.fullmatch(name):
        raise TopologyError('%s: %s is not a valid inventory host name (dot-separated labels of ASCII letters, '
                            'digits, _ and -, each starting and ending with a letter or digit; at most %d characters)'
                            % (where, _show(name), HOST_NAME_MAX))
    if name in GROUP_NAMES:
        raise TopologyError('%s: %s is the name of a group of this inventory (%s): name the host otherwise'
                            % (where, name, ', '.join(sorted(GROUP_NAMES))))


def build_host(name, spec, subnets: list, claims: AddressClaims) -> dict:
    """One machine: its variables (``ansible_host``, empty instance lists, its own ``vars``)."""
    where = 'hosts.%s' % _name(name)
    check_host_name(name, where)
    spec = _mapping(spec, where, HOST_KEYS)
    if spec.get('address') is None:
        raise TopologyError('%s: address (the host\'s own boot address) is required' % where)
    version = 6 if isinstance(spec['address'], str) and ':' in spec['address'] else 4
    address, dummy = parse_address(spec['address'], where + '.address', version, subnets)
    claims.claim(address, where + '.address', where + '.address')
    hv = {'ansible_host': str(address), 'murder_instances': [], 'murder_standby_instances': [],
          'murder_replica_instances': []}
    if spec.get('address6') is not None:
        address6, dummy = parse_address(spec['address6'], where + '.address6', 6, subnets)
        claims.claim(address6, where + '.address6', where + '.address6')
        hv['murder_host_address6'] = str(address6)
    hv.update(check_vars(spec.get('vars'), where + '.vars'))
    return hv


def build_hosts(raw, subnets: list, claims: AddressClaims) -> dict:
    """``hosts`` -> {host: variables}, in the file's order; no two names differ only in case."""
    hosts = _mapping(raw, 'hosts')
    if not hosts:
        raise TopologyError('hosts: declare at least one host')
    built = {}
    folded = {}
    for name, spec in hosts.items():
        built[name] = build_host(name, spec, subnets, claims)
        if name.lower() in folded:
            raise TopologyError('hosts.%s: %s differs from hosts.%s only in case: name the host otherwise'
                                % (name, name, folded[name.lower()]))
        folded[name.lower()] = name
    return built


def _fqdn(value, where: str, why: str) -> str:
    if not isinstance(value, str) or not value.isascii() or not DNS_NAME.fullmatch(value) or \
            re.fullmatch(r'[0-9.]+', value) or '.' not in value:
        hint = ('; write an internationalized name in its ASCII (xn--) form'
                if isinstance(value, str) and not value.isascii() else '')
        raise TopologyError('%s: %s must be a fully qualified host name (%s)%s' % (where, _show(value), why, hint))
    return str(value)


def check_servername(where: str, servername) -> str:
    """A fully qualified name; returns its first label, lower case (Cyrus's <short>_password key)."""
    servername = _fqdn(servername, where + '.servername',
                       'Cyrus derives <short>_password keys from the label before the first dot')
    return servername.split('.', 1)[0].lower()


def build_instance(name, spec, hostvars: dict, subnets: list, claims: AddressClaims, short_names: dict) -> dict:
    """One Cyrus instance: role, host, service addresses with their prefix, servername; no spare yet.
    ``short_names`` maps the first label of each servername seen so far to its instance."""
    where = 'instances.%s' % _name(name)
    if not isinstance(name, str) or not INSTANCE_NAME.fullmatch(name):
        raise TopologyError('%s: instance names are a lower-case letter then up to 30 of a-z 0-9 _ -' % where)
    spec = _mapping(spec, where, INSTANCE_KEYS)
    for key in ('role', 'host', 'address', 'servername'):
        if spec.get(key) in (None, ''):
            raise TopologyError('%s: %s is required' % (where, key))
    if spec['role'] not in ROLES:
        raise TopologyError('%s.role: %s is not one of %s' % (where, _show(spec['role']), ', '.join(ROLES)))
    if not isinstance(spec['host'], str) or spec['host'] not in hostvars:
        raise TopologyError('%s.host: %s is not declared under hosts' % (where, _show(spec['host'])))
    if ':' in _token(spec['address'], where + '.address', 'an IPv4 address'):
        raise TopologyError('%s.address: %s is IPv6: put it in address6 (address is the IPv4 service address)'
                            % (where, spec['address']))
    address, prefix = parse_address(spec['address'], where + '.address', 4, subnets)
    claims.claim(address, where + '.address', where + '.address')
    item = {'name': name, 'role': spec['role'], 'host': spec['host'], 'address': str(address),
            'address_prefix': prefix, 'servername': None, 'spare': None, 'volume': None, 'replica': None,
            'replication_port': None}
    if spec.get('address6') is not None:
        address6, prefix6 = parse_address(spec['address6'], where + '.address6', 6, subnets)
        claims.claim(address6, where + '.address6', where + '.address6')
        item['address6'] = str(address6)
        item['address6_prefix'] = prefix6
    short = check_servername(where, spec['servername'])
    if short in short_names:
        raise TopologyError('%s.servername: %s has the same first label %r as instances.%s: servernames must '
                            'differ before the first dot' % (where, spec['servername'], short, short_names[short]))
    short_names[short] = name
    item['servername'] = str(spec['servername'])
    item['vars'] = check_vars(spec.get('vars'), where + '.vars')
    return item


def build_instances(raw, hostvars: dict, subnets: list, claims: AddressClaims) -> dict:
    """``instances`` -> {instance: description}, in the file's order; servernames differ before the first dot;
    only the first instance of a host has ``vars`` (only they reach the host)."""
    instances = _mapping(raw, 'instances')
    if not instances:
        raise TopologyError('instances: declare at least the mupdate master instance')
    described = {}
    short_names = {}
    first_of = {}
    for name, spec in instances.items():
        item = build_instance(name, spec, hostvars, subnets, claims, short_names)
        host = item['host']
        if host in first_of and item['vars']:
            raise TopologyError('instances.%s.vars: %s is not the first instance of host %s (%s is) and only the first '
                                'instance\'s vars reach the host: put them in hosts.%s.vars'
                                % (name, name, host, first_of[host], host))
        first_of.setdefault(host, name)
        described[name] = item
    return described


def check_master(described: dict) -> str:
    """The name of the one mupdate master instance."""
    masters = [n for n, i in described.items() if i['role'] == 'mupdate']
    if len(masters) != 1:
        raise TopologyError('instances: a Murder has exactly one mupdate master instance, found %d%s'
                            % (len(masters), (' (%s)' % ', '.join(masters)) if masters else ''))
    return masters[0]


def _volume_text(volume: dict, key: str, where: str, pattern, what: str):
    """One optional text setting of a volume, matching what the shared_volume module accepts; None when absent."""
    value = volume.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TopologyError('%s.volume.%s: expected %s, got %s' % (where, key, what, _got(value)))
    if not value.isascii() or not pattern.fullmatch(value):
        raise TopologyError('%s.volume.%s: %s is not %s' % (where, key, _show(value), what))
    return str(value)


def check_mount(where: str, mount) -> str:
    """A mount point: absolute, written plainly (no ., .., // or trailing /), not a system directory."""
    where += '.volume.mount'
    if not isinstance(mount, str) or not mount.startswith('/'):
        raise TopologyError('%s: an absolute path is required' % where)
    if mount != '/' and (not mount.isascii() or not MOUNTPOINT_RE.fullmatch(mount)):
        raise TopologyError('%s: %s is not an absolute path of A-Z a-z 0-9 _ . : + @ , = - /' % (where, _show(mount)))
    if {'.', '..'} & set(mount.split('/')):
        raise TopologyError('%s: %s has . or .. in it: write the mount point itself' % (where, mount))
    plain = '/' + '/'.join(part for part in mount.split('/') if part)
    if plain != mount:
        raise TopologyError('%s: write %s as %s' % (where, mount, plain))
    if mount in SYSTEM_DIRS or mount.startswith(VIRTUAL_TREES):
        raise TopologyError('%s: %s is (or is inside) a system directory: mounting the volume there would hide it; '
                            'give the volume a directory of its own such as /srv/cyrus/<instance>' % (where, mount))
    return mount


def parse_volume(where: str, raw, owner: str, seen: dict) -> dict:
    """A pair's shared volume with its defaults; ``seen`` maps (uuid|label|device|mount, value) to the
    instance that has it already (one volume, one mount point per instance, no mount point inside another)."""
    volume = _mapping(raw, where + '.volume', VOLUME_KEYS)
    mount = check_mount(where, volume.get('mount'))
    uuid = _volume_text(volume, 'uuid', where, UUID_RE, 'a filesystem UUID (hex digits and -)')
    label = _volume_text(volume, 'label', where, LABEL_RE, 'a filesystem label (1 to 16 of A-Z a-z 0-9 _ . : + -)')
    device = _volume_text(volume, 'device', where, DEVICE_PATH, 'a device path under /dev such as /dev/mapper/cyrus')
    if device is not None and (posixpath.normpath(device) != device or '..' in device.split('/')):
        raise TopologyError('%s.volume.device: %s is not a device path under /dev such as /dev/mapper/cyrus'
                            % (where, _show(device)))
    fstype = _volume_text(volume, 'fstype', where, FSTYPE_RE, 'a filesystem type (1 to 32 of a-z 0-9 _ .)')
    options = _volume_text(volume, 'options', where, OPTS_RE,
                           'a list of mount options (A-Z a-z 0-9 _ = , . : + / @ -, no spaces)')
    if uuid is None and label is None:
        raise TopologyError('%s.volume: name the shared volume by its uuid or its label' % where)
    if uuid is not None and label is not None:
        raise TopologyError('%s.volume: give uuid or label, not both (the volume is found by one of them)' % where)
    identity = [(k, v) for k, v in (('uuid', uuid and uuid.lower()), ('label', label), ('device', device)) if v]
    for key, value in identity:
        if (key, value) in seen:
            raise TopologyError('%s.volume.%s: %s is already the volume of %s'
                                % (where, key, volume[key], seen[(key, value)]))
    for (key, other), other_owner in seen.items():
        if key != 'mount':
            continue
        if other == mount:
            raise TopologyError('%s.volume.mount: %s is already the mount point of %s' % (where, mount, other_owner))
        if mount.startswith(other + '/') or other.startswith(mount + '/'):
            raise TopologyError('%s.volume.mount: %s and %s, the mount point of %s, are one inside the other: give '
                                'each volume a mount point outside the others' % (where, mount, other, other_owner))
    for key, value in identity + [('mount', mount)]:
        seen[(key, value)] = owner
    return {'uuid': uuid, 'label': label, 'device': device, 'mount': mount, 'fstype': fstype or 'ext4',
            'options': options or 'defaults'}


def _pair_instance(kind: str, index: int, spec: dict, described: dict) -> tuple:
    """(where, name, item) of a pair entry's backend-to-be: ``<kind>[n] (<instance>)`` once the instance is known."""
    where = '%s[%d]' % (kind, index)
    name = spec.get('instance')
    if not isinstance(name, str) or name not in described:
        raise TopologyError('%s.instance: %s is not declared under instances' % (where, _show(name)))
    return '%s[%d] (%s)' % (kind, index, name), name, described[name]


def _pair_nodes(where: str, spec: dict, key: str, item: dict, hostvars: dict) -> tuple:
    """(home, other) of a pair entry: ``home`` the instance's host (its default), ``other`` (under ``key``) another
    declared host."""
    name = item['name']
    home = item['host'] if spec.get('home') is None else spec['home']
    if home != item['host']:
        raise TopologyError('%s.home: %s is not the host of instance %s (%s)'
                            % (where, _show(home), name, item['host']))
    other = spec.get(key)
    if not isinstance(other, str) or other not in hostvars:
        raise TopologyError('%s.%s: %s is not declared under hosts' % (where, key, _show(other)))
    if other == home:
        raise TopologyError('%s.%s: the %s must be another host than the home host %s' % (where, key, key, home))
    return home, other


def attach_warm_spare(index: int, raw, described: dict, hostvars: dict, seen: dict) -> None:
    """One ``warm_spares`` entry: sets ``spare`` and ``volume`` of its backend instance."""
    spec = _mapping(raw, 'warm_spares[%d]' % index, SPARE_KEYS)
    where, name, item = _pair_instance('warm_spares', index, spec, described)
    if item['role'] != 'backend':
        raise TopologyError('%s: only backends have warm spares, and %s is a %s' % (where, name, item['role']))
    if item['spare'] is not None:
        raise TopologyError('%s: %s already has the warm spare %s' % (where, name, item['spare']))
    dummy, spare = _pair_nodes(where, spec, 'spare', item, hostvars)
    item['volume'] = parse_volume(where, spec.get('volume'), name, seen)
    item['spare'] = spare


def attach_warm_spares(raw, described: dict, hostvars: dict) -> None:
    """``warm_spares`` -> each backend instance's ``spare`` and ``volume``."""
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise TopologyError('warm_spares: expected a list of {instance, home, spare, volume}, got %s' % _got(raw))
    seen = {}
    for index, spec in enumerate(raw):
        attach_warm_spare(index, spec, described, hostvars, seen)


def attach_replica(index: int, raw, described: dict, hostvars: dict, ports: dict) -> None:
    """One ``replicas`` entry: sets ``replica`` and ``replication_port`` of its backend instance (Cyrus rolling
    replication to the same instance on the replica host, on that host's own disk). ``ports`` maps (host, port)
    to the instance whose pair listens there (either node holds the replica at some time)."""
    spec = _mapping(raw, 'replicas[%d]' % index, REPLICA_KEYS)
    where, name, item = _pair_instance('replicas', index, spec, described)
    if item['role'] != 'backend':
        raise TopologyError('%s: only backends are replicated, and %s is a %s' % (where, name, item['role']))
    if item['replica'] is not None:
        raise TopologyError('%s: %s already replicates to %s (one replica per backend instance)'
                            % (where, name, item['replica']))
    if item['spare'] is not None:
        raise TopologyError('%s: %s already has the warm spare %s on a shared volume: a backend is kept either by '
                            'a warm spare or by a replica, not both' % (where, name, item['spare']))
    home, replica = _pair_nodes(where, spec, 'replica', item, hostvars)
    for node in (home, replica):
        if ':' in hostvars[node]['ansible_host']:
            raise TopologyError('%s: hosts.%s.address is IPv6 (%s): the nodes of a replica pair replicate over '
                                'their IPv4 boot addresses (sync_host), give the host an IPv4 address'
                                % (where, node, hostvars[node]['ansible_host']))
    port = SYNC_PORT if spec.get('port') is None else spec['port']
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise TopologyError('%s.port: expected a TCP port from 1 to 65535, got %s' % (where, _got(port)))
    for node in (home, replica):
        if (node, port) in ports:
            raise TopologyError('%s.port: %s is a node of the replica pair of %s too, which listens on port %d '
                                'there (sync_server, while that node holds the replica): give one of the pairs '
                                'another port' % (where, node, ports[(node, port)], port))
    for node in (home, replica):
        ports[(node, port)] = name
    item['replica'] = replica
    item['replication_port'] = port


def attach_replicas(raw, described: dict, hostvars: dict) -> None:
    """``replicas`` -> each backend instance's ``replica``."""
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise TopologyError('replicas: expected a list of {instance, home, replica, port}, got %s' % _got(raw))
    ports = {}
    for index, spec in enumerate(raw):
        attach_replica(index, spec, described, hostvars, ports)


def warm_spare_pairs(described: dict) -> list:
    """The warm-spare pairs as the warm_spare role takes them (``warm_spare_pairs``): the volume by its uuid or
    label, and its mount point."""
    return [{'instance': name, 'home': item['host'], 'spare': item['spare'], 'address': item['address'],
             'servername': item['servername'],
             'volume': {k: item['volume'][k] for k in ('uuid', 'label', 'mount') if item['volume'][k] is not None}}
            for name, item in described.items() if item['spare'] is not None]


def replication_pairs(described: dict, hostvars: dict) -> list:
    """The replica pairs as the replication role takes them (``replication_pairs``), in the file's order of
    instances."""
    return [{'instance': name, 'home': item['host'], 'replica': item['replica'], 'servername': item['servername'],
             'address': item['address'], 'home_address': hostvars[item['host']]['ansible_host'],
             'replica_address': hostvars[item['replica']]['ansible_host'], 'port': item['replication_port']}
            for name, item in described.items() if item['replica'] is not None]


def check_constructed(data: dict, hostvars: dict) -> None:
    """The options of Ansible's constructed features: compose sets no variable the plugin or Ansible sets,
    groups makes no group named as one of the plugin's groups or as a host, each option of its type."""
    for key in ('strict', 'use_extra_vars', 'leading_separator'):
        if data.get(key) is not None and not isinstance(data[key], bool):
            raise TopologyError('%s: expected true or false, got %s' % (key, _got(data[key])))
    for name, expression in _mapping(data.get('compose'), 'compose', required=False).items():
        check_variable_name(name, 'compose')
        if not isinstance(expression, str) or not expression:
            raise TopologyError('compose.%s: expected an expression, got %s' % (name, _got(expression)))
    for name, condition in _mapping(data.get('groups'), 'groups', required=False).items():
        if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
            raise TopologyError('groups: %s is not a valid group name (ASCII letters, digits and _, not starting '
                                'with a digit)' % _show(name))
        if name in GROUP_NAMES:
            raise TopologyError('groups.%s: %s is a group the plugin fills (or one of Ansible\'s): name the composed '
                                'group otherwise' % (name, name))
        if name in hostvars:
            raise TopologyError('groups.%s: %s is the name of a host: name the group otherwise' % (name, name))
        if not isinstance(condition, (str, bool)) or condition == '':
            raise TopologyError('groups.%s: expected a condition, got %s' % (name, _got(condition)))
    keyed = data.get('keyed_groups')
    if keyed is None:
        return
    if not isinstance(keyed, list):
        raise TopologyError('keyed_groups: expected a list of {key, prefix, separator...}, got %s' % _got(keyed))
    for index, entry in enumerate(keyed):
        entry = _mapping(entry, 'keyed_groups[%d]' % index)
        if not isinstance(entry.get('key'), str) or not entry['key']:
            raise TopologyError('keyed_groups[%d].key: expected an expression, got %s'
                                % (index, _got(entry.get('key'))))


def check_keyed_groups(new_groups, hostvars: dict) -> None:
    """The groups keyed_groups made (known only once Ansible has built them) take no host's name."""
    clash = sorted(set(new_groups) & set(hostvars))
    if clash:
        raise TopologyError('keyed_groups: the group%s %s would have the name of a host: give the keyed groups a '
                            'prefix' % ('s' if len(clash) > 1 else '', ', '.join(clash)))


def place_instances(described: dict, hostvars: dict) -> None:
    """Each instance (without its ``vars``) into its host's ``murder_instances``, its spare's
    ``murder_standby_instances`` and its replica host's ``murder_replica_instances``."""
    for item in described.values():
        public = {k: v for k, v in item.items() if k != 'vars'}
        hostvars[item['host']]['murder_instances'].append(public)
        if item['spare'] is not None:
            hostvars[item['spare']]['murder_standby_instances'].append(public)
        if item['replica'] is not None:
            hostvars[item['replica']]['murder_replica_instances'].append(public)


def build_groups(described: dict, hostvars: dict) -> dict:
    """murder (every host), mupdate_master, backends, frontends (by the role of the instances a host
    is home to), spares and replicas; hosts in the order of the file."""
    groups = {ALL_GROUP: list(hostvars), 'mupdate_master': [], 'backends': [], 'frontends': [], SPARE_GROUP: [],
              REPLICA_GROUP: []}
    for item in described.values():
        group = ROLE_GROUPS[item['role']]
        if item['host'] not in groups[group]:
            groups[group].append(item['host'])
        for key, group in (('spare', SPARE_GROUP), ('replica', REPLICA_GROUP)):
            if item[key] is not None and item[key] not in groups[group]:
                groups[group].append(item[key])
    return groups


def first_instance_vars(described: dict, hostvars: dict) -> None:
    """murder_role, murder_instance, murder_address(_prefix), murder_servername of each host's first
    instance (and murder_replication_peer, its replica host's address, when it has one), and that instance's
    ``vars`` unless the host sets them."""
    for host in hostvars.values():
        home = host['murder_instances']
        if home:
            first = home[0]
            host.update(murder_role=first['role'], murder_instance=first['name'], murder_address=first['address'],
                        murder_address_prefix=first['address_prefix'], murder_servername=first['servername'])
            if first['replica'] is not None:
                host['murder_replication_peer'] = hostvars[first['replica']]['ansible_host']
                host['murder_replication_port'] = first['replication_port']
            for key, value in described[first['name']]['vars'].items():
                host.setdefault(key, value)


def global_vars(raw, master: dict) -> dict:
    """The variables of every host: ``vars``, and murder_mupdate_servername unless set there."""
    extra = check_vars(raw, 'vars', allowed=('murder_mupdate_servername',))
    if 'murder_mupdate_servername' in extra:
        _fqdn(extra['murder_mupdate_servername'], 'vars.murder_mupdate_servername',
              'the servername of the mupdate master')
    extra.setdefault('murder_mupdate_servername', master['servername'])
    return extra


def check_duplicate_keys(text: str) -> None:
    """A key written twice in one mapping (YAML keeps the last one, with only a warning) names both lines."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return   # what the loader accepted and PyYAML alone does not is the loader's to judge
    stack = [(root, '')]
    visited = set()
    while stack:
        node, where = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, '%s[%d]' % (where, i)) for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            lines = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == 'tag:yaml.org,2002:merge':
                    stack.append((value, where))
                    continue
                path = '%s.%s' % (where, _name(key.value)) if where else _name(key.value)
                if (key.tag, key.value) in lines:
                    raise TopologyError('%s: written twice (lines %d and %d): YAML would keep only the last'
                                        % (path, lines[(key.tag, key.value)], key.start_mark.line + 1))
                lines[(key.tag, key.value)] = key.start_mark.line + 1
                stack.append((value, path))


def build(data: dict) -> dict:
    """Validate a topology mapping; return {'groups': {group: [hosts]}, 'hostvars': {host: {...}},
    'vars': {...}}."""
    _require_netaddr()
    data = _mapping(data, 'topology', TOP_KEYS)
    subnets = parse_subnets(data.get('subnets'))
    claims = AddressClaims()
    hostvars = build_hosts(data.get('hosts'), subnets, claims)
    described = build_instances(data.get('instances'), hostvars, subnets, claims)
    master = check_master(described)
    attach_warm_spares(data.get('warm_spares'), described, hostvars)
    attach_replicas(data.get('replicas'), described, hostvars)
    check_constructed(data, hostvars)
    extra = global_vars(data.get('vars'), described[master])
    extra.update(warm_spare_pairs=warm_spare_pairs(described), replication_pairs=replication_pairs(described, hostvars))
    place_instances(described, hostvars)
    groups = build_groups(described, hostvars)
    first_instance_vars(described, hostvars)
    return {'groups': groups, 'hostvars': hostvars, 'vars': extra}
