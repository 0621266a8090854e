#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cyrus_facts
short_description: Gather facts about the Cyrus IMAP instances of a host
version_added: 0.1.0
description:
  - Finds every Cyrus instance of the host, that is every configuration pair
    C(<config_root>/<instance>/imapd.conf) and C(cyrus.conf), plus the distribution's
    C(/etc/imapd.conf) and C(/etc/cyrus.conf) as instance C(default) when present.
  - For each instance it reports the configuration files, C(servername), the C(listen=)
    addresses, the murder role as Cyrus derives it from the configuration, the partitions with
    their filesystem, size and file count, the C(mupdate_server), and whether its master runs
    (from the pidfile C(<run_root>/<instance>/master.pid)) with its PID.
  - Also reports the Cyrus version and paths, and the addresses, unix sockets and directories
    that two instances of the host both claim.
  - Configuration files that do not parse are reported in each instance's RV(ansible_facts.cyrus.instances)
    C(problems), not as a failure.
author:
  - cyrus.ha contributors (@cyrus-ha)
options:
  config_root:
    description: Directory holding one sub-directory per instance.
    type: path
    default: /etc/cyrus-ha
  run_root:
    description: Directory holding one run directory per instance (with C(master.pid)).
    type: path
    default: /run/cyrus-ha
  include_default:
    description: Report the distribution's C(/etc/imapd.conf) + C(/etc/cyrus.conf) as instance C(default).
    type: bool
    default: true
  partition_usage:
    description:
      - Count the files and bytes under each partition.
      - This walks the whole partition; set V(false) on large mail stores.
    type: bool
    default: true
  mailbox_lists:
    description:
      - Also report the mailbox list of each instance whose master runs, as its C(mailboxes.db) holds it
        (C(ctl_mboxlist -d), which reads the database in place).
      - On a Murder this is what the mupdate master, each frontend and each backend believe; the
        M(cyrus.ha.cyrus_facts) results of every host go to the P(cyrus.ha.mupdate_list_check#filter) filter.
      - A stopped instance has no list reported (a warm spare's configdirectory is on a volume mounted on the
        other node).
    type: bool
    default: false
    version_added: 0.3.0
extends_documentation_fragment:
  - cyrus.ha.attributes
  - cyrus.ha.attributes.facts
  - cyrus.ha.attributes.platform
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Reads files under O(config_root), C(/proc) and the partitions; changes nothing.
seealso:
  - plugin: cyrus.ha.mupdate_list_check
    plugin_type: filter
'''

EXAMPLES = r'''
- name: Gather Cyrus facts
  cyrus.ha.cyrus_facts:

- name: Show which instances run
  ansible.builtin.debug:
    msg: "{{ ansible_facts.cyrus.instances | dict2items | selectattr('value.running') | map(attribute='key') }}"

- name: Gather facts without walking large partitions
  cyrus.ha.cyrus_facts:
    partition_usage: false

- name: Read every running instance's mailbox list (a Murder's mupdate list check)
  cyrus.ha.cyrus_facts:
    partition_usage: false
    mailbox_lists: true
'''

RETURN = r'''
ansible_facts:
  description: Facts to add to C(ansible_facts).
  returned: always
  type: complex
  contains:
    cyrus:
      description: The Cyrus installation and instances of the host.
      returned: always
      type: complex
      contains:
        version:
          description: Cyrus version (from C(cyr_info version)), or null when Cyrus is not installed.
          type: str
          sample: 3.6.1
        version_full:
          description: The full version line of C(cyr_info version).
          type: str
          sample: cyrus-imapd 3.6.1-Debian-3.6.1-4+deb12u5
        paths:
          description: C(bindir) (Cyrus programs), C(master), C(config_root), C(run_root),
            C(default_imapd_conf), C(default_cyrus_conf) (null when absent).
          type: dict
          sample: {bindir: /usr/lib/cyrus/bin, master: /usr/lib/cyrus/bin/master, config_root: /etc/cyrus-ha}
        instances:
          description:
            - One entry per instance name, with C(name), C(imapd_conf), C(cyrus_conf), C(servername),
              C(configdirectory), C(syslog_prefix), C(murder_role) (C(mupdate), C(backend), C(frontend) or
              C(standalone)), C(mupdate_server), C(listen) (list of C(service), C(listen), C(proto),
              C(kind) C(inet)/C(unix), C(host), C(port) or C(path)), C(services) (every cyrus.conf entry),
              C(partitions) (name to C(path), C(exists), C(filesystem) with C(mount), C(fstype),
              C(source), C(size_bytes), C(free_bytes), and C(used_bytes), C(files)), C(pidfile),
              C(running), C(master_pid), C(problems) (syntax errors, each starting with C(FILE:LINE)).
            - With O(mailbox_lists), a running instance also has C(mailboxes) (mailbox name to its C(server),
              C(partition), C(mbtype) and C(uniqueid), each present when the entry has it), or
              C(mailboxes_error) when the list could not be read.
          type: dict
          sample:
            be1:
              servername: be1-svc.example.org
              murder_role: backend
              running: true
              master_pid: 4242
        conflicts:
          description: Addresses, unix sockets or directories claimed by two instances of this host.
          type: list
          elements: str
          sample: ["be1: imap listen=198.51.100.121:143 and spare: imap listen=198.51.100.121:143 claim the
            same tcp 198.51.100.121:143"]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cyrus.ha.plugins.module_utils.cyrusfacts import gather
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusinstance import CONFIG_ROOT, RUN_ROOT


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config_root=dict(type='path', default=CONFIG_ROOT),
            run_root=dict(type='path', default=RUN_ROOT),
            include_default=dict(type='bool', default=True),
            partition_usage=dict(type='bool', default=True),
            mailbox_lists=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    facts = gather(config_root=params['config_root'], run_root=params['run_root'],
                   include_default=params['include_default'], with_usage=params['partition_usage'],
                   with_mailboxes=params['mailbox_lists'])
    module.exit_json(changed=False, ansible_facts={'cyrus': facts})


if __name__ == '__main__':
    main()
