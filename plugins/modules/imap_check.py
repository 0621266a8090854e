#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: imap_check
short_description: IMAP and LMTP evidence for failover drills (canaries in, canaries verified)
version_added: 0.1.0
description:
  - Logs in to an IMAP server (retrying up to O(wait) seconds, which measures how long a failover
    keeps users out), appends or delivers canary messages, and finds them again by Message-ID,
    comparing each byte for byte by SHA-256.
  - V(append) stores O(count) canaries in O(mailbox) by IMAP APPEND; V(deliver) sends them by LMTP
    to O(recipients) (through a Murder frontend, LMTP reaches the backend that holds the mailbox);
    both return the canaries (Message-ID, SHA-256, size) for a later V(verify).
  - V(verify) searches every canary and reports how many were found, which are missing, which came
    back changed and which are stored twice; it fails when any is missing or changed unless
    O(fail_on_loss=false). A delivered canary matches when the stored copy ends with its exact bytes
    (LMTP adds Return-Path and Received headers in front).
  - V(login) only logs in and selects O(mailbox), reporting the time to the first successful login.
author:
  - cyrus.ha contributors (@cyrus-ha)
extends_documentation_fragment:
  - cyrus.ha.imap_connection
  - cyrus.ha.attributes
  - cyrus.ha.attributes.platform
options:
  action:
    description: What to do.
    type: str
    choices: [login, append, deliver, verify]
    default: login
  host:
    description: The IMAP server (a Murder frontend's service address for drills).
    type: str
    required: true
  user:
    description: The IMAP user. Needed for every action but V(deliver).
    type: str
  password:
    description: The IMAP user's password.
    type: str
  mailbox:
    description: The mailbox to select, append to or verify in.
    type: str
    default: INBOX
  count:
    description: How many canaries V(append) or V(deliver) makes.
    type: int
    default: 3
  size:
    description: Approximate size in bytes of each canary's body.
    type: int
    default: 512
  tag:
    description: A word put in each canary's Message-ID and X-Cyrus-HA-Canary header (the drill's name).
    type: str
    default: drill
  canaries:
    description: The canaries to look for, as returned by V(append) or V(deliver). Required by V(verify).
    type: list
    elements: dict
  fail_on_loss:
    description: Fail V(verify) when a canary is missing or changed.
    type: bool
    default: true
  wait:
    description:
      - Keep retrying the login for up to this many seconds (a failover in progress). V(0) tries once.
    type: float
    default: 0
  lmtp_host:
    description: The LMTP server for V(deliver) (a frontend's service address); defaults to O(host).
      An absolute path is a unix socket.
    type: str
  lmtp_port:
    description: The LMTP port for V(deliver); ignored for a unix socket.
    type: int
    default: 24
  recipients:
    description: The recipients of V(deliver), for example V(alice@be1-svc.example.org) or V(alice). Required by V(deliver).
    type: list
    elements: str
  sender:
    description: The envelope sender of V(deliver).
    type: str
    default: drill@canary.invalid
  retry_for:
    description:
      - V(deliver) as a queueing MTA does it. A temporary refusal (a 4xx answer such as a Murder
        frontend's C(451 Server(s) unavailable) while a backend fails over, or no answer at all) keeps
        the same message and tries it again every O(retry_interval) seconds for up to this many seconds.
        A permanent refusal (5xx) fails at once. V(0) tries once.
      - Each canary then tells how many attempts it took, how long it stayed queued and the first refusal.
    type: float
    default: 0
  retry_interval:
    description: Seconds between two attempts of a queued delivery.
    type: float
    default: 1
attributes:
  check_mode:
    support: full
    details:
      - V(login) and V(verify) run as usual; V(append) logs in but stores nothing; V(deliver) sends nothing.
  diff_mode:
    support: none
notes:
  - Uses only the Python standard library (imaplib, smtplib).
  - Every option is checked before the first packet; numbers that reach sockets and sleeps must be finite
    (O(timeout) up to 3600 s, O(wait) up to 86400 s), ports 1-65535, and text that goes on a protocol
    line holds no control characters. A O(mailbox) beyond ASCII is sent in modified UTF-7; a user name
    or password beyond ASCII with SASL PLAIN (the server must offer C(AUTH=PLAIN)). Mail addresses are ASCII.
'''

EXAMPLES = r'''
- name: Put three canaries in alice's INBOX through a frontend
  cyrus.ha.imap_check:
    host: fe1-svc.example.org
    user: alice
    password: "{{ alice_password }}"
    action: append
    count: 3
    tag: drill-1
  register: canaries

- name: Deliver canaries by LMTP through the frontend (queued when the backend is away)
  cyrus.ha.imap_check:
    host: fe1-svc.example.org
    action: deliver
    recipients: [alice]

- name: Time the first successful login after a failover, waiting up to a minute
  cyrus.ha.imap_check:
    host: fe2-svc.example.org
    user: alice
    password: "{{ alice_password }}"
    wait: 60
  register: first_login

- name: Every canary must be there, byte for byte
  cyrus.ha.imap_check:
    host: fe2-svc.example.org
    user: alice
    password: "{{ alice_password }}"
    action: verify
    canaries: "{{ canaries.canaries }}"
'''

RETURN = r'''
action:
  description: The action done.
  returned: always
  type: str
canaries:
  description:
    - The canaries stored or delivered (Message-ID, SHA-256 of the exact bytes, size, mailbox or recipients).
    - Delivered ones also carry C(attempts), C(queued_seconds) and C(first_refusal) (see O(retry_for)).
  returned: always
  type: list
  elements: dict
  sample: [{message_id: "<cyrus-ha-drill-0-1a2b3c4d5e6f7a8b@canary.invalid>", sha256: 9f86d08..., size: 742, mailbox: INBOX}]
greeting:
  description: The server's IMAP greeting.
  returned: when the action logs in
  type: str
login_seconds:
  description: Seconds from the first attempt to a successful LOGIN.
  returned: when the action logs in
  type: float
attempts:
  description: Login attempts made.
  returned: when the action logs in
  type: int
messages:
  description: Messages in O(mailbox).
  returned: when action is login
  type: int
expected:
  description: Canaries looked for.
  returned: when action is verify
  type: int
found:
  description: Canaries found intact.
  returned: when action is verify
  type: int
missing:
  description: Message-IDs not found.
  returned: when action is verify
  type: list
  elements: str
mismatched:
  description: Canaries found whose bytes differ (expected and found hashes).
  returned: when action is verify
  type: list
  elements: dict
duplicated:
  description: Message-IDs stored more than once (a delivery replayed).
  returned: when action is verify
  type: list
  elements: str
elapsed:
  description: Seconds the whole action took.
  returned: always
  type: float
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cyrus.ha.plugins.module_utils.imapcheck import (
    CONNECTION_ARGS, CheckError, canaries_valid, check_params, resolve, run_check)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **CONNECTION_ARGS,
            action=dict(type='str', default='login', choices=['login', 'append', 'deliver', 'verify']),
            host=dict(type='str', required=True),
            user=dict(type='str'),
            password=dict(type='str', no_log=True),
            mailbox=dict(type='str', default='INBOX'),
            count=dict(type='int', default=3),
            size=dict(type='int', default=512),
            tag=dict(type='str', default='drill'),
            canaries=dict(type='list', elements='dict'),
            fail_on_loss=dict(type='bool', default=True),
            wait=dict(type='float', default=0),
            lmtp_host=dict(type='str'),
            lmtp_port=dict(type='int', default=24),
            recipients=dict(type='list', elements='str'),
            sender=dict(type='str', default='drill@canary.invalid'),
            retry_for=dict(type='float', default=0),
            retry_interval=dict(type='float', default=1),
        ),
        required_if=[('action', 'login', ('user', 'password')), ('action', 'append', ('user', 'password')),
                     ('action', 'verify', ('user', 'password', 'canaries')), ('action', 'deliver', ('recipients',))],
        mutually_exclusive=[('ssl', 'starttls')],
        supports_check_mode=True,
    )
    p = dict(module.params)
    if not 1 <= p['count'] <= 1000:
        module.fail_json(msg=f"count must be between 1 and 1000, not {p['count']}")
    if not 16 <= p['size'] <= 10 * 1024 * 1024:
        module.fail_json(msg=f"size must be between 16 bytes and 10 MiB, not {p['size']}")
    if not p['tag'].replace('-', '').replace('_', '').isalnum():
        module.fail_json(msg=f"tag '{p['tag']}' may hold only letters, digits, - and _")
    if p['wait'] < 0 or p['timeout'] <= 0:
        module.fail_json(msg='wait must be >= 0 and timeout > 0')
    if not 0 <= p['retry_for'] <= 86400 or not 0.05 <= p['retry_interval'] <= 3600:
        module.fail_json(msg='retry_for must be between 0 and 86400 s and retry_interval between 0.05 and 3600 s')
    for option in ('canaries', 'recipients'):
        if p[option] is not None and not p[option]:
            module.fail_json(msg=f'{option} must not be empty')
        p[option] = p[option] or []
    problem = canaries_valid(p['canaries'])
    if problem:
        module.fail_json(msg=problem)
    if p['action'] == 'deliver' and p['lmtp_host'] and p['lmtp_host'].startswith('/'):
        p['lmtp_port'] = 0
    try:
        check_params(p)
        if p['action'] != 'deliver' or not p['lmtp_host'] or p['lmtp_port']:
            resolve(p['lmtp_host'] if p['action'] == 'deliver' and p['lmtp_host'] else p['host'])
        result = run_check(p, check_mode=module.check_mode)
    except CheckError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
