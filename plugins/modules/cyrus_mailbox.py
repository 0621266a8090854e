#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cyrus_mailbox
short_description: Create, set the quota of, or delete a Cyrus mailbox as an IMAP administrator
version_added: 0.1.0
description:
  - Logs in to a Cyrus server as an administrator (one listed in its C(admins)) and makes the mailbox
    O(name) present or absent, idempotently, as C(cyradm)'s C(createmailbox), C(setquota) and
    C(deletemailbox) would.
  - In a Murder, create a user's mailbox on the backend that should hold it (its service address);
    the backend pushes it to the mupdate master at once, and the frontends' mupdate slaves show it
    to users within seconds.
  - Mailbox names use Cyrus's internal form with C(.) between levels (V(user.alice),
    V(user.alice.Archive), V(shared.support)), as when C(unixhierarchysep) is V(no).
author:
  - cyrus.ha contributors (@cyrus-ha)
extends_documentation_fragment:
  - cyrus.ha.imap_connection
  - cyrus.ha.attributes
  - cyrus.ha.attributes.platform
options:
  name:
    description:
      - The mailbox, for example V(user.alice).
      - Letters beyond ASCII (V(user.jürgen)) are sent in modified UTF-7, as Cyrus stores them; C(&) is refused.
    type: str
    required: true
  state:
    description: Whether the mailbox should exist. V(absent) deletes it with every message in it.
    type: str
    choices: [present, absent]
    default: present
  partition:
    description: The partition a new mailbox is created on (the server's default partition when omitted).
      An existing mailbox is never moved.
    type: str
  quota:
    description:
      - The storage quota of the mailbox in KiB. V(0) removes any limit. Omitted, the quota is left as it is.
      - At most 2^63-1 (IMAP's largest quota number); negative numbers are refused.
    type: int
  host:
    description: The server's address (a backend's service address in a Murder).
    type: str
    required: true
  user:
    description: The administrator to log in as.
    type: str
    default: cyrus
  password:
    description: The administrator's password.
    type: str
    required: true
  wait:
    description: Keep retrying the login for up to this many seconds (a server still starting).
    type: float
    default: 0
attributes:
  check_mode:
    support: full
    details:
      - Logs in and reads; creates, changes and deletes nothing, and predicts whether it would.
  diff_mode:
    support: full
    details:
      - RV(diff) shows whether the mailbox exists and its quota, before and after.
notes:
  - Uses only the Python standard library (imaplib). The password is never logged.
  - A user name or password beyond ASCII is sent with SASL PLAIN (UTF-8); the server must offer C(AUTH=PLAIN).
  - Every option is checked before the first command. The steps run as create, then quota; or, for
    V(absent), grant the administrator the C(x) right (only when C(MYRIGHTS) lacks it), delete, and put
    the ACL back when the delete fails. When a step fails after an earlier one changed the server, the
    task fails with C(changed=true) and RV(actions) listing what was done, and the next run finishes the job.
'''

EXAMPLES = r'''
- name: Alice's mailbox lives on backend be1, with a 2 GiB quota
  cyrus.ha.cyrus_mailbox:
    host: be1-svc.example.org
    password: "{{ cyrus_admin_password }}"
    name: user.alice
    quota: 2097152

- name: Remove a departed user's mailbox and everything in it
  cyrus.ha.cyrus_mailbox:
    host: be2-svc.example.org
    password: "{{ cyrus_admin_password }}"
    name: user.mallory
    state: absent
'''

RETURN = r'''
name:
  description: The mailbox.
  returned: always
  type: str
  sample: user.alice
exists_before:
  description: Whether the mailbox existed before the task.
  returned: always
  type: bool
quota_root:
  description: The quota root the mailbox belonged to before the task (none when it had no quota).
  returned: always
  type: str
quota_before:
  description: The storage limit in KiB before the task (none when unlimited or new).
  returned: always
  type: int
actions:
  description: What was done (or would be done in check mode).
  returned: always
  type: list
  elements: str
  sample: [create, quota 2097152 KiB]
imap_name:
  description: The name as sent to the server, in modified UTF-7 (RFC 3501), when O(name) is not ASCII.
  returned: when O(name) holds characters beyond ASCII
  type: str
  sample: user.j&APw-rgen
diff:
  description: Existence and quota before and after.
  returned: always
  type: dict
  sample: {before: {exists: false}, after: {exists: true, quota: 2097152}}
'''

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cyrus.ha.plugins.module_utils.imapadmin import manage, validate
from ansible_collections.cyrus.ha.plugins.module_utils.imapcheck import CONNECTION_ARGS, CheckError, resolve


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **CONNECTION_ARGS,
            name=dict(type='str', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            partition=dict(type='str'),
            quota=dict(type='int'),
            host=dict(type='str', required=True),
            user=dict(type='str', default='cyrus'),
            password=dict(type='str', required=True, no_log=True),
            wait=dict(type='float', default=0),
        ),
        mutually_exclusive=[('ssl', 'starttls')],
        supports_check_mode=True,
    )
    p = module.params
    if p['wait'] < 0 or p['timeout'] <= 0:
        module.fail_json(msg='wait must be >= 0 and timeout > 0')
    try:
        validate(p)
        resolve(p['host'])
        result = manage(p, check_mode=module.check_mode)
    except CheckError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    except Exception as exc:  # noqa: BLE001 - never a traceback for the user: say which mailbox
        module.fail_json(msg=f'managing mailbox {p["name"]} on {p["host"]} failed unexpectedly: {exc}',
                         exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
