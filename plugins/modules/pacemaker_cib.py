#!/usr/bin/python
# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pacemaker_cib
short_description: Make a running Pacemaker cluster's configuration hold the given resources, constraints and fencing
version_added: 0.1.0
description:
  - Compares the desired cluster properties, resource defaults, resources (primitives and groups),
    constraints and fencing levels with the running cluster's CIB, object by object, and changes only
    what differs. Objects the data does not name are left alone.
  - All changes of one run are made at once. The new configuration section is first checked with
    C(crm_verify) against the whole CIB, then replaces the old one with C(cibadmin --replace). A
    configuration that does not verify changes nothing. When another tool writes the CIB between the
    query and the replace, the run plans again on the new CIB instead of overwriting it.
  - The meta attributes an operator toggles at run time (C(target-role), C(is-managed),
    C(maintenance), as set by C(crm_resource --meta) or C(pcs resource disable)) are left as the
    cluster has them, unless the resource's own O(resources[].meta) sets them. A routine run never
    starts a resource an operator stopped for maintenance.
  - The ids of nvpairs and operations are derived from the object id and the names
    (V(<id>-instance_attributes-<name>), V(<id>-<op>-interval-<interval>)), so the same data always gives
    the same XML.
  - Every input is checked before the first command, and a bad one fails the run naming the object and the
    cause. Ids are XML ids (ASCII letters, digits, V(_), V(.), V(-), not starting with a digit, V(.) or V(-));
    the names of parameters, meta attributes, properties and operation attributes follow the same rule. A value is text,
    a number or a boolean; empty text, V(null), NaN, infinities and characters XML cannot carry (control
    characters, lone surrogates) are refused, without repeating the value (it may be a password). Scores
    (C(score), C(resource-stickiness), C(priority)) are integers from -1000000 to 1000000 or
    V(INFINITY)/V(-INFINITY); C(migration-threshold) is 0 to 1000000 or V(INFINITY); durations (an operation's
    C(interval), C(timeout) and C(start-delay), C(failure-timeout), C(stonith-timeout) and the like) are a
    whole number with an optional unit (V(ms), V(s), V(min), V(h)), intervals also ISO 8601 (V(PT20S)), within
    what Pacemaker can hold; well-known booleans and choices (C(stonith-enabled), C(is-managed),
    C(target-role), C(no-quorum-policy), an operation's C(on-fail)) take only their values. Unknown keys of
    a group member, a constraint or a fencing level are refused, not ignored.
  - A resource that leaves the configuration (named in O(absent), or a member dropped from a group of
    O(resources)) is first stopped (C(target-role=Stopped), then C(crm_resource --wait)) and only then
    deleted. A run killed between the two steps leaves it stopped; the next run with the same data deletes it,
    a run whose data wants it again starts it again. Any other change is one C(cibadmin --replace), which the
    cluster applies whole or not at all. When that replace reports a failure (a timeout), the CIB is read back
    to tell whether the change was made.
  - The CIB that C(cibadmin --query) prints is parsed without expanding any entity; a document type
    declaration, elements nested deeper than 128, more than 64 MiB, or a root other than C(cib) with a
    C(configuration) fail the run before anything changes.
  - Run it on one node of the cluster (C(run_once)); the cluster must be running there.
author:
  - cyrus.ha contributors (@cyrus-ha)
options:
  properties:
    description: Cluster properties (the C(cib-bootstrap-options) set), for example C(stonith-enabled).
    type: dict
    default: {}
  resource_defaults:
    description: Resource defaults (the C(rsc-options) set), for example C(resource-stickiness).
    type: dict
    default: {}
  resources:
    description:
      - Primitives and groups. A primitive has O(resources[].id), O(resources[].agent) and optional
        O(resources[].params), O(resources[].meta), O(resources[].operations). A group has
        O(resources[].id), O(resources[].resources) (its primitives, started in this order and stopped
        in reverse) and optional O(resources[].meta).
    type: list
    elements: dict
    default: []
    suboptions:
      id:
        description: The object id.
        type: str
        required: true
      agent:
        description: C(CLASS:PROVIDER:TYPE) or C(CLASS:TYPE), for example V(ocf:heartbeat:IPaddr2), V(stonith:fence_ipmilan).
        type: str
      params:
        description: Instance attributes (the agent's parameters).
        type: dict
      meta:
        description: Meta attributes.
        type: dict
      operations:
        description: Operations, each with C(name), C(interval) and other op attributes such as C(timeout).
        type: list
        elements: dict
      resources:
        description: The members of a group (primitives).
        type: list
        elements: dict
  constraints:
    description:
      - Constraints with C(id) and C(type) (default V(location)). V(location) takes C(resource), C(node) and
        C(score) (default V(INFINITY)); V(order) takes C(first), C(then) and C(kind) (V(Mandatory), the
        default, V(Optional) or V(Serialize)); V(colocation) takes C(first), C(then) and C(score).
      - The resources a constraint names must be in the cluster or in O(resources).
    type: list
    elements: dict
    default: []
  fencing_levels:
    description:
      - Fencing levels, each with C(target) (node), C(index) (1-9) and C(devices) (tried together, in order),
        and optionally C(id) (default V(fl-<target>-<index>)).
      - Each device must be a fence device (a C(stonith) primitive) in the cluster or in O(resources).
    type: list
    elements: dict
    default: []
  absent:
    description:
      - Ids of resources, constraints or fencing levels to remove. The id of anything else (a property set,
        an nvpair, an operation, a node) is refused.
      - A resource is first stopped (C(target-role=Stopped), then C(crm_resource --wait)) and only then
        deleted, since a resource deleted while it runs is stopped without its parameters (a Filesystem
        resource then fails to stop and its node is fenced).
    type: list
    elements: str
    default: []
  wait:
    description:
      - Seconds to wait for the CIB to answer (a cluster that has just started), a number from 0 to 3600
        (not a boolean).
    type: raw
    default: 60
notes:
  - Needs C(cibadmin) and C(crm_verify) from Pacemaker on the node.
  - A run with nothing to manage (every option empty) is refused.
  - A failure after the cluster's configuration changed (a resource stopped, not deleted yet) reports C(changed).
  - In check mode, a node where the cluster is not running yet predicts that every object is created.
extends_documentation_fragment:
  - cyrus.ha.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reports every change it would make; the CIB is only read.
  diff_mode:
    support: full
    details:
      - Shows the managed objects before and after, as XML.
'''

EXAMPLES = r'''
- name: A Cyrus backend instance as a group that prefers its home node
  cyrus.ha.pacemaker_cib:
    properties:
      stonith-enabled: true
    resource_defaults:
      resource-stickiness: 200
    resources:
      - id: be1-group
        resources:
          - id: be1-fs
            agent: ocf:heartbeat:Filesystem
            params: {device: "-U 0e6d2f2c-1d77-4d5e-9a59-3c1f8a3a2b10", directory: /srv/cyrus-ha/be1, fstype: ext4}
            operations: [{name: monitor, interval: 20s, timeout: 40s}]
          - id: be1-ip
            agent: ocf:heartbeat:IPaddr2
            params: {ip: 198.51.100.121, cidr_netmask: 24}
          - id: be1-cyrus
            agent: ocf:cyrus:instance
            params: {instance: be1, address: 198.51.100.121}
    constraints:
      - {id: be1-group-prefers-home, type: location, resource: be1-group, node: be1, score: 100}
  run_once: true
'''

RETURN = r'''
changes:
  description: What changed (or would change), one entry per object or property.
  returned: always
  type: list
  elements: dict
  sample: [{"object": "be1-group", "action": "create", "section": "resources"}]
epoch:
  description: The CIB version (admin_epoch.epoch.num_updates) after the change.
  returned: changed and not check mode
  type: str
  sample: 0.12.0
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cyrus.ha.plugins.module_utils.pacemaker import TOOLS, CibError, converge, predict_fresh
from ansible_collections.cyrus.ha.plugins.module_utils.runner import ModuleRunner


def main():
    module = AnsibleModule(
        argument_spec=dict(
            properties=dict(type='dict', default={}),
            resource_defaults=dict(type='dict', default={}),
            resources=dict(type='list', elements='dict', default=[], options=dict(
                id=dict(type='str', required=True),
                agent=dict(type='str'),
                params=dict(type='dict'),
                meta=dict(type='dict'),
                operations=dict(type='list', elements='dict'),
                resources=dict(type='list', elements='dict'),
            )),
            constraints=dict(type='list', elements='dict', default=[]),
            fencing_levels=dict(type='list', elements='dict', default=[]),
            absent=dict(type='list', elements='str', default=[]),
            wait=dict(type='raw', default=60),
        ),
        supports_check_mode=True,
    )
    params = dict(module.params)
    # suboption defaults fill unused keys with None: a group is a spec that has members
    params['resources'] = [{k: v for k, v in spec.items() if v is not None} for spec in params['resources']]
    runner = ModuleRunner(module, hints={tool: 'install Pacemaker first' for tool in TOOLS})
    for tool in TOOLS:
        runner.binary(tool)
    try:
        result = converge(params, runner, check_mode=module.check_mode,
                          tmpdir=None if module.check_mode else module.tmpdir)
    except CibError as exc:
        if module.check_mode and 'not reachable' in str(exc):
            module.warn(f'{exc}; check mode predicts the whole configuration as new')
            try:
                changes = predict_fresh(params)
            except CibError as inner:
                module.fail_json(msg=str(inner))
            module.exit_json(changed=bool(changes), changes=changes)
        module.fail_json(msg=str(exc), changed=exc.changed)
    for warning in result.pop('warnings', []):
        module.warn(f'crm_verify: {warning}')
    for notice in result.pop('notices', []):
        module.warn(notice)
    diff = result.pop('diff')
    if module._diff:
        result['diff'] = diff
    module.exit_json(**result)


if __name__ == '__main__':
    main()
