# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Cyrus Murder topology (hosts, instances, warm-spare pairs) validated into inventory data.

The file the ``cyrus.ha.murder`` inventory plugin reads::

    plugin: cyrus.ha.murder
    subnets: [198.51.100.0/24, 2001:db8:100::/64]
    hosts:
      imap-mupdate: {address: 198.51.100.10}
      imap-be1: {address: 198.51.100.21, address6: 2001:db8:100::21}
      imap-spare: {address: 198.51.100.30}
    instances:
      mupdate: {role: mupdate, host: imap-mupdate, address: 198.51.100.110, servername: mupdate.imap.example.org}
      be1: {role: backend, host: imap-be1, address: 198.51.100.121, servername: be1.imap.example.org}
    warm_spares:
      - {instance: be1, home: imap-be1, spare: imap-spare, volume: {label: cyrus-be1, mount: /srv/cyrus/be1}}

``build()`` runs one step per part, in this order (the first error stops it): ``parse_subnets``,
``build_hosts`` (boot addresses), ``build_instances`` (service addresses, servernames) and
``check_master``, ``attach_warm_spares`` (pairs and their volumes), then ``place_instances``,
``build_groups`` and ``first_instance_vars`` (the inventory's groups and host variables) and
``global_vars``. Every error names the offending entry (``instances.be1.address: ...``).
"""

from __future__ import annotations

import re

try:
    import netaddr
except ImportError:  # pragma: no cover - reported by the caller
    netaddr = None

ROLES = ('mupdate', 'backend', 'frontend')
ROLE_GROUPS = {'mupdate': 'mupdate_master', 'backend': 'backends', 'frontend': 'frontends'}
SPARE_GROUP = 'spares'
ALL_GROUP = 'murder'
INSTANCE_NAME = re.compile(r'[a-z][a-z0-9_-]{0,30}')
HOST_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,62}')
DNS_NAME = re.compile(r'(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}'
                      r'[A-Za-z0-9])?)*')
TOP_KEYS = {'plugin', 'subnets', 'hosts', 'instances', 'warm_spares', 'vars', 'compose', 'groups',
            'keyed_groups', 'strict', 'use_extra_vars', 'leading_separator', 'cache', 'cache_plugin',
            'cache_timeout', 'cache_connection', 'cache_prefix'}
HOST_KEYS = {'address', 'address6', 'vars'}
INSTANCE_KEYS = {'role', 'host', 'address', 'address6', 'servername', 'vars'}
SPARE_KEYS = {'instance', 'home', 'spare', 'volume'}
VOLUME_KEYS = {'uuid', 'label', 'device', 'mount', 'fstype', 'options'}


class TopologyError(ValueError):
    """The topology is invalid; the message names the entry and the cause."""


def _require_netaddr():
    if netaddr is None:
        raise TopologyError('the cyrus.ha.murder inventory needs the Python library netaddr on the controller: '
                            'pip install netaddr')


def _mapping(value, where: str, allowed: set = None, required: bool = True) -> dict:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise TopologyError('%s: expected a mapping, got %s' % (where, type(value).__name__))
    if allowed is not None:
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise TopologyError('%s: unknown key %s (known: %s)' % (where, ', '.join(unknown), ', '.join(sorted(allowed))))
    return value


def parse_subnet(text, where: str):
    _require_netaddr()
    if not isinstance(text, str) or '/' not in text:
        raise TopologyError('%s: %r is not a network in CIDR form such as 198.51.100.0/24' % (where, text))
    try:
        network = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise TopologyError('%s: %r is not a valid network' % (where, text))
    if network.ip != network.network:
        raise TopologyError('%s: %s has host bits set: write %s' % (where, text, network.cidr))
    if str(network) != text:
        raise TopologyError('%s: write %s as %s' % (where, text, network))
    return network


def parse_address(text, where: str, version: int, subnets: list):
    """One address without prefix, written canonically, inside a declared subnet of its family."""
    _require_netaddr()
    kind = 'IPv4' if version == 4 else 'IPv6'
    if not isinstance(text, str) or not text:
        raise TopologyError('%s: expected an %s address, got %r' % (where, kind, text))
    if '/' in text:
        raise TopologyError('%s: %s has a prefix length: write the address alone (the prefix comes from subnets)'
                            % (where, text))
    try:
        address = netaddr.IPAddress(text, version)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise TopologyError('%s: %r is not a valid %s address' % (where, text, kind))
    canonical = str(address)
    if canonical != text:
        raise TopologyError('%s: write %s as %s' % (where, text, canonical))
    if address.is_loopback() or address.is_multicast() or str(address) in ('0.0.0.0', '::') or \
            (version == 6 and address.is_link_local()):
        raise TopologyError('%s: %s cannot be a host or service address' % (where, text))
    matching = [n for n in subnets if n.version == version and address in n]
    if not matching:
        declared = ', '.join(str(n) for n in subnets if n.version == version) or 'none declared'
        raise TopologyError('%s: %s is outside the declared %s subnets (%s)' % (where, text, kind, declared))
    network = matching[0]
    if version == 4 and network.prefixlen < 31 and address in (network.network, network.broadcast):
        raise TopologyError('%s: %s is the network or broadcast address of %s' % (where, text, network))
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
            if self.owners[key].startswith('hosts.') and owner.startswith('instances.'):
                raise TopologyError('%s: %s is the boot address of %s: a service address must be its own'
                                    % (where, key, self.owners[key].split('.')[1]))
            raise TopologyError('%s: %s is already used by %s' % (where, key, self.owners[key]))
        self.owners[key] = owner


def build_host(name, spec, subnets: list, claims: AddressClaims) -> dict:
    """One machine: its variables (``ansible_host``, empty instance lists, its own ``vars``)."""
    where = 'hosts.%s' % name
    if not isinstance(name, str) or not HOST_NAME.fullmatch(name):
        raise TopologyError('%s: %r is not a valid inventory host name' % (where, name))
    spec = _mapping(spec, where, HOST_KEYS)
    if 'address' not in spec:
        raise TopologyError('%s: address (the host\'s own boot address) is required' % where)
    version = 4 if ':' not in str(spec['address']) else 6
    address, dummy = parse_address(spec['address'], where + '.address', version, subnets)
    claims.claim(address, where + '.address', where + '.address')
    hv = {'ansible_host': str(address), 'murder_instances': [], 'murder_standby_instances': []}
    if spec.get('address6') is not None:
        address6, dummy = parse_address(spec['address6'], where + '.address6', 6, subnets)
        claims.claim(address6, where + '.address6', where + '.address6')
        hv['murder_host_address6'] = str(address6)
    hv.update(_mapping(spec.get('vars'), where + '.vars', required=False))
    return hv


def build_hosts(raw, subnets: list, claims: AddressClaims) -> dict:
    """``hosts`` -> {host: variables}, in the file's order."""
    hosts = _mapping(raw, 'hosts')
    if not hosts:
        raise TopologyError('hosts: declare at least one host')
    return {name: build_host(name, spec, subnets, claims) for name, spec in hosts.items()}


def check_servername(where: str, servername) -> str:
    """A fully qualified name; returns its first label, lower case (Cyrus's <short>_password key)."""
    if not isinstance(servername, str) or not DNS_NAME.fullmatch(servername) or \
            re.fullmatch(r'[0-9.]+', servername) or '.' not in servername:
        raise TopologyError('%s.servername: %r must be a fully qualified host name (Cyrus derives '
                            '<short>_password keys from the label before the first dot)' % (where, servername))
    return servername.split('.', 1)[0].lower()


def build_instance(name, spec, hostvars: dict, subnets: list, claims: AddressClaims, short_names: dict) -> dict:
    """One Cyrus instance: role, host, service addresses with their prefix, servername; no spare yet.
    ``short_names`` maps the first label of each servername seen so far to its instance."""
    where = 'instances.%s' % name
    if not isinstance(name, str) or not INSTANCE_NAME.fullmatch(name):
        raise TopologyError('%s: instance names are a lower-case letter then up to 30 of a-z 0-9 _ -' % where)
    spec = _mapping(spec, where, INSTANCE_KEYS)
    for key in ('role', 'host', 'address', 'servername'):
        if spec.get(key) in (None, ''):
            raise TopologyError('%s: %s is required' % (where, key))
    if spec['role'] not in ROLES:
        raise TopologyError('%s.role: %r is not one of %s' % (where, spec['role'], ', '.join(ROLES)))
    if not isinstance(spec['host'], str) or spec['host'] not in hostvars:
        raise TopologyError('%s.host: %r is not declared under hosts' % (where, spec['host']))
    if ':' in str(spec['address']):
        raise TopologyError('%s.address: %s is IPv6: put it in address6 (address is the IPv4 service address)'
                            % (where, spec['address']))
    address, prefix = parse_address(spec['address'], where + '.address', 4, subnets)
    claims.claim(address, where + '.address', where + '.address')
    item = {'name': name, 'role': spec['role'], 'host': spec['host'], 'address': str(address),
            'address_prefix': prefix, 'servername': spec['servername'], 'spare': None, 'volume': None}
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
    item['vars'] = dict(_mapping(spec.get('vars'), where + '.vars', required=False))
    return item


def build_instances(raw, hostvars: dict, subnets: list, claims: AddressClaims) -> dict:
    """``instances`` -> {instance: description}, in the file's order; servernames differ before the first dot."""
    instances = _mapping(raw, 'instances')
    if not instances:
        raise TopologyError('instances: declare at least the mupdate master instance')
    described = {}
    short_names = {}
    for name, spec in instances.items():
        described[name] = build_instance(name, spec, hostvars, subnets, claims, short_names)
    return described


def check_master(described: dict) -> str:
    """The name of the one mupdate master instance."""
    masters = [n for n, i in described.items() if i['role'] == 'mupdate']
    if len(masters) != 1:
        raise TopologyError('instances: a Murder has exactly one mupdate master instance, found %d%s'
                            % (len(masters), (' (%s)' % ', '.join(masters)) if masters else ''))
    return masters[0]


def parse_volume(where: str, raw, owner: str, seen: dict) -> dict:
    """A pair's shared volume with its defaults; ``seen`` maps (uuid|label|device|mount, value) to the
    instance that has it already (one volume, one mount point per instance)."""
    volume = _mapping(raw, where + '.volume', VOLUME_KEYS)
    if not isinstance(volume.get('mount'), str) or not volume['mount'].startswith('/'):
        raise TopologyError('%s.volume.mount: an absolute path is required' % where)
    identity = [(k, volume[k]) for k in ('uuid', 'label', 'device') if volume.get(k) not in (None, '')]
    if not identity:
        raise TopologyError('%s.volume: name the shared volume by uuid, label or device' % where)
    if volume.get('device') is not None and not str(volume['device']).startswith('/'):
        raise TopologyError('%s.volume.device: an absolute path is required' % where)
    for key, value in identity:
        if isinstance(value, (dict, list)):
            raise TopologyError('%s.volume.%s: expected a string, got %s' % (where, key, type(value).__name__))
        if (key, value) in seen:
            raise TopologyError('%s.volume.%s: %s is already the volume of %s' % (where, key, value, seen[(key, value)]))
        seen[(key, value)] = owner
    if ('mount', volume['mount']) in seen:
        raise TopologyError('%s.volume.mount: %s is already the mount point of %s'
                            % (where, volume['mount'], seen[('mount', volume['mount'])]))
    seen[('mount', volume['mount'])] = owner
    return {'uuid': volume.get('uuid'), 'label': volume.get('label'), 'device': volume.get('device'),
            'mount': volume['mount'], 'fstype': volume.get('fstype', 'ext4'), 'options': volume.get('options', 'defaults')}


def attach_warm_spare(index: int, raw, described: dict, hostvars: dict, seen: dict) -> None:
    """One ``warm_spares`` entry: sets ``spare`` and ``volume`` of its backend instance."""
    where = 'warm_spares[%d]' % index
    spec = _mapping(raw, where, SPARE_KEYS)
    name = spec.get('instance')
    if not isinstance(name, str) or name not in described:
        raise TopologyError('%s.instance: %r is not declared under instances' % (where, name))
    where = 'warm_spares[%d] (%s)' % (index, name)
    item = described[name]
    if item['role'] != 'backend':
        raise TopologyError('%s: only backends have warm spares, and %s is a %s' % (where, name, item['role']))
    if item['spare'] is not None:
        raise TopologyError('%s: %s already has the warm spare %s' % (where, name, item['spare']))
    home = spec.get('home', item['host'])
    if home != item['host']:
        raise TopologyError('%s.home: %r is not the host of instance %s (%s)' % (where, home, name, item['host']))
    spare = spec.get('spare')
    if not isinstance(spare, str) or spare not in hostvars:
        raise TopologyError('%s.spare: %r is not declared under hosts' % (where, spare))
    if spare == home:
        raise TopologyError('%s.spare: the spare must be another host than the home host %s' % (where, home))
    item['volume'] = parse_volume(where, spec.get('volume'), name, seen)
    item['spare'] = spare


def attach_warm_spares(raw, described: dict, hostvars: dict) -> None:
    """``warm_spares`` -> each backend instance's ``spare`` and ``volume``."""
    spares = raw or []
    if not isinstance(spares, list):
        raise TopologyError('warm_spares: expected a list of {instance, home, spare, volume}')
    seen = {}
    for index, spec in enumerate(spares):
        attach_warm_spare(index, spec, described, hostvars, seen)


def place_instances(described: dict, hostvars: dict) -> None:
    """Each instance (without its ``vars``) into its host's ``murder_instances`` and its spare's
    ``murder_standby_instances``."""
    for item in described.values():
        public = {k: v for k, v in item.items() if k != 'vars'}
        hostvars[item['host']]['murder_instances'].append(public)
        if item['spare'] is not None:
            hostvars[item['spare']]['murder_standby_instances'].append(public)


def build_groups(described: dict, hostvars: dict) -> dict:
    """murder (every host), mupdate_master, backends, frontends (by the role of the instances a host
    is home to) and spares; hosts in the order of the file."""
    groups = {ALL_GROUP: list(hostvars), 'mupdate_master': [], 'backends': [], 'frontends': [], SPARE_GROUP: []}
    for item in described.values():
        group = ROLE_GROUPS[item['role']]
        if item['host'] not in groups[group]:
            groups[group].append(item['host'])
        if item['spare'] is not None and item['spare'] not in groups[SPARE_GROUP]:
            groups[SPARE_GROUP].append(item['spare'])
    return groups


def first_instance_vars(described: dict, hostvars: dict) -> None:
    """murder_role, murder_instance, murder_address(_prefix), murder_servername of each host's first
    instance, and that instance's ``vars`` unless the host sets them."""
    for host in hostvars.values():
        home = host['murder_instances']
        if home:
            first = home[0]
            host.update(murder_role=first['role'], murder_instance=first['name'], murder_address=first['address'],
                        murder_address_prefix=first['address_prefix'], murder_servername=first['servername'])
            for key, value in described[first['name']]['vars'].items():
                host.setdefault(key, value)


def global_vars(raw, master: dict) -> dict:
    """The variables of every host: ``vars``, and murder_mupdate_servername unless set there."""
    extra = dict(_mapping(raw, 'vars', required=False))
    extra.setdefault('murder_mupdate_servername', master['servername'])
    return extra


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
    place_instances(described, hostvars)
    groups = build_groups(described, hostvars)
    first_instance_vars(described, hostvars)
    return {'groups': groups, 'hostvars': hostvars, 'vars': global_vars(data.get('vars'), described[master])}
