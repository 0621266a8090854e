#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cyrus_config
short_description: Validate and edit Cyrus IMAP configuration files of one instance
version_added: 0.1.0
description:
  - Checks an C(imapd.conf) or a C(cyrus.conf) the way Cyrus reads it, and fails naming the file,
    the line and the cause of every error.
  - For a C(cyrus.conf) it also checks what an instance sharing a host needs, every C(listen=)
    bound to an explicit address and port (no wildcard), and every C(cmd=) passing the
    instance's C(-C) O(imapd_conf), since master's C(-C) is not inherited by its children.
  - With O(settings) it sets options of an C(imapd.conf) in place, keeping every comment and
    every other line byte for byte, and writes the file only when the result is valid.
  - With O(check_host) it also checks the file against every other instance of the host
    (C(<config_root>/*/imapd.conf) and C(cyrus.conf), and the distribution's default pair), and
    fails when two instances would claim the same address and port, unix socket or lock,
    proc, configuration or partition directory.
  - For templates, the same checks run without Ansible on the managed node as
    C(python3 /usr/local/lib/cyrus-ha/cyrusconf_cli.py lint --kind imapd|cyrus [--imapd-conf PATH] FILE),
    which the P(cyrus.ha.cyrus_instance#role) role installs; use that as C(validate:).
author:
  - cyrus.ha contributors (@cyrus-ha)
options:
  path:
    description: The C(imapd.conf) or C(cyrus.conf) to check (and, with O(settings), to edit).
    type: path
    required: true
  kind:
    description:
      - Which file O(path) is.
      - By default taken from its name (C(imapd*) or C(cyrus*)).
    type: str
    choices: [imapd, cyrus]
  imapd_conf:
    description:
      - For a C(cyrus.conf), the C(imapd.conf) path every C(cmd=) must pass with C(-C).
      - Defaults to C(imapd.conf) next to O(path).
    type: path
  settings:
    description:
      - C(imapd.conf) options to set, option name to value; V(null) removes the option.
      - Booleans are written as C(yes)/C(no), lists space-separated.
    type: dict
  secret_settings:
    description:
      - Like O(settings), for secrets (such as C(mupdate_password)); never logged, and masked in the diff.
    type: dict
  check_host:
    description: Also check the file against the other instances of the host.
    type: bool
    default: false
  config_root:
    description: Directory holding one sub-directory per instance (for O(check_host)).
    type: path
    default: /etc/cyrus-ha
  include_default:
    description:
      - With O(check_host), also check against the distribution's C(/etc/imapd.conf) + C(/etc/cyrus.conf).
      - Debian's binds every address (C(listen="imap")), so it conflicts with every instance on port 143;
        a host that runs single-address instances must not run it.
    type: bool
    default: false
  bindir:
    description:
      - Where C(cmd=) programs without a slash are looked up; a missing program is an error.
      - By default C(/usr/lib/cyrus/bin) (Debian) or C(/usr/libexec/cyrus-imapd) (RHEL family) when
        present; V("") skips the check.
    type: path
  backup:
    description: Keep a timestamped copy of O(path) before changing it.
    type: bool
    default: false
extends_documentation_fragment:
  - cyrus.ha.attributes
  - cyrus.ha.attributes.platform
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - The file keeps its owner, group and mode when edited.
  - A symlinked O(path) is read and written through the link, never replaced; the link's target is
    rewritten atomically (a temporary file in the target's own directory, then a rename), and RV(target)
    names it.
  - Only a regular UTF-8 text file of at most 4 MiB is read; a directory, FIFO, socket, device, a larger
    file or one with NUL bytes is refused before it is read, without blocking.
  - With O(settings), an existing file is edited (and shown in the diff) only when it already is a valid
    C(imapd.conf) on its own, or holds no option yet; anything else (say a link to a system file) is
    refused naming only lines and causes, never its content.
  - Every option that holds a secret in Cyrus terms (a name with C(password), C(passwd), C(secret) or
    C(_pass), such as C(mupdate_password), C(proxy_password), C(ldap_password)), and every option of
    O(secret_settings), is masked in the diff, and its value is removed from every message, whatever its spacing.
'''

EXAMPLES = r'''
- name: Check a backend's cyrus.conf
  cyrus.ha.cyrus_config:
    path: /etc/cyrus-ha/be1/cyrus.conf
    imapd_conf: /etc/cyrus-ha/be1/imapd.conf
    check_host: true

- name: Point a frontend at the mupdate master
  cyrus.ha.cyrus_config:
    path: /etc/cyrus-ha/fe1/imapd.conf
    settings:
      mupdate_server: mupdate-svc.example.org:3905
      mupdate_authname: fe1
    secret_settings:
      mupdate_password: "{{ vault_fe1_mupdate_password }}"
'''

RETURN = r'''
path:
  description: The file checked.
  returned: always
  type: str
  sample: /etc/cyrus-ha/be1/cyrus.conf
kind:
  description: C(imapd) or C(cyrus).
  returned: always
  type: str
  sample: cyrus
imapd_conf:
  description: The C(imapd.conf) of the instance (the C(-C) every C(cmd=) passes).
  returned: always
  type: str
  sample: /etc/cyrus-ha/be1/imapd.conf
murder_role:
  description: C(mupdate), C(backend), C(frontend) or C(standalone), as Cyrus derives it from the pair.
  returned: always
  type: str
  sample: backend
problems:
  description: Warnings, each as C(FILE:LINE) followed by C(warning) and the message (errors fail the task).
  returned: always
  type: list
  elements: str
  sample: ["/etc/cyrus-ha/fe1/imapd.conf:4: warning: mupdate_server m has no port: mupdate_port is read by
    nothing, write m:3905"]
conflicts:
  description: Conflicts with other instances of the host (empty on success; listed in the failure otherwise).
  returned: always
  type: list
  elements: str
  sample: []
target:
  description: The file actually written when O(path) is a symlink (the link itself is kept).
  returned: when O(path) is a symlink and the file changed
  type: str
  sample: /srv/cyrus/be1/imapd.conf
diff:
  description: The file before and after the edit, secrets masked.
  returned: when the file changes and diff mode is on
  type: dict
backup_file:
  description: The copy made before the change.
  returned: when O(backup) is set and the file changed
  type: str
  sample: /etc/cyrus-ha/be1/imapd.conf.12345.2026-01-01@00:00:00~
'''

import errno
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cyrus.ha.plugins.module_utils import cyrusconf, cyrusconf_lint
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusfacts import PlanError, guess_kind, plan_config
from ansible_collections.cyrus.ha.plugins.module_utils.cyrusinstance import CONFIG_ROOT


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            kind=dict(type='str', choices=['imapd', 'cyrus']),
            imapd_conf=dict(type='path'),
            settings=dict(type='dict'),
            secret_settings=dict(type='dict', no_log=True),
            check_host=dict(type='bool', default=False),
            config_root=dict(type='path', default=CONFIG_ROOT),
            include_default=dict(type='bool', default=False),
            bindir=dict(type='path'),
            backup=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    settings = dict(params['settings'] or {})
    secrets = dict(params['secret_settings'] or {})
    settings.update(secrets)
    path = params['path']
    try:
        text = cyrusconf.read_config(path)   # a FIFO, directory, device or huge file: refused, never read
    except cyrusconf.FileRefused as exc:
        module.fail_json(msg=str(exc), path=path)
    except OSError as exc:
        module.fail_json(msg='%s does not exist or cannot be read%s' % (path, '' if exc.errno == errno.ENOENT else
                                                                        ': %s' % (exc.strerror or exc)), path=path)
    hidden = cyrusconf.secret_values([text], secrets.values())
    if settings and (params['kind'] or guess_kind(path)) == 'imapd':
        refused = cyrusconf_lint.editable_imapd(text, path)
        if refused:
            module.fail_json(msg=cyrusconf.scrub('%s is not an imapd.conf on its own, so it is neither edited nor shown: %s'
                                                 % (path, '; '.join(map(str, refused))), hidden),
                             problems=cyrusconf.scrub([str(p) for p in refused], hidden), path=path)
    try:
        plan = plan_config(path, params['kind'], params['imapd_conf'], settings, params['check_host'],
                           params['config_root'], params['include_default'], params['bindir'])
    except PlanError as exc:
        module.fail_json(msg=cyrusconf.scrub(str(exc), hidden), problems=cyrusconf.scrub(exc.problems, hidden), path=path)
    hidden = cyrusconf.secret_values([plan['before'], plan['after']], secrets.values())
    result = dict(changed=plan['before'] != plan['after'], path=path, kind=plan['kind'],
                  imapd_conf=plan['imapd_conf'], murder_role=plan['murder_role'],
                  problems=cyrusconf.scrub(plan['problems'], hidden), conflicts=cyrusconf.scrub(plan['conflicts'], hidden))
    if result['changed'] and module._diff:
        # the config as edited (a file that is not one was refused above, unshown); secrets masked by key
        result['diff'] = {'before': cyrusconf.masked(plan['before'], secrets, hidden),
                          'after': cyrusconf.masked(plan['after'], secrets, hidden),
                          'before_header': path, 'after_header': path}
    if result['changed'] and not module.check_mode:
        # through a symlink to its target: the link stays, the target is replaced atomically in its own
        # directory and keeps its owner, group and mode
        target = os.path.realpath(path)
        if target != os.path.abspath(path):
            result['target'] = target
        if params['backup']:
            result['backup_file'] = module.backup_local(target)
        fd, tmp = tempfile.mkstemp(prefix='.cyrus_config.', dir=os.path.dirname(target))
        try:
            with os.fdopen(fd, 'w', encoding='utf-8', newline='') as handle:
                handle.write(plan['after'])
            module.atomic_move(tmp, target, unsafe_writes=False)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
