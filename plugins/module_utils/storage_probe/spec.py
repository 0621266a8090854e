# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The argument spec of cyrus.ha.storage_probe and the one call the module makes."""

from __future__ import annotations

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import probe
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import verdict


def argument_spec() -> dict:
    """A fresh spec: cross-host probes extend it (a phase/role option) without touching these."""
    return dict(
        path=dict(type='list', elements='path', required=True),
        checks=dict(type='list', elements='str', default=['all'], choices=['all'] + list(probe.CHECK_NAMES)),
        timeout=dict(type='float', default=probe.DEFAULTS['timeout']),
        stat_timeout=dict(type='float', default=probe.DEFAULTS['stat_timeout']),
        fsx_ops=dict(type='int', default=probe.DEFAULTS['fsx_ops']),
        fsx_seed=dict(type='int'),
        scale_files=dict(type='int', default=probe.DEFAULTS['scale_files']),
        scale_rounds=dict(type='int', default=probe.DEFAULTS['scale_rounds']),
        clean_leftovers=dict(type='bool', default=False),
    )


LIMITS = (('timeout', 1, 86400), ('stat_timeout', 0.1, 3600), ('fsx_ops', 1, 10 ** 7), ('scale_files', 8, 10 ** 7),
          ('scale_rounds', 1, 12), ('fsx_seed', 0, 2 ** 32 - 1))


def validate(params: dict) -> None:
    for key, low, high in LIMITS:
        value = params.get(key)
        if value is not None and not low <= value <= high:
            raise probe.ProbeError('%s must be between %s and %s, got %s' % (key, low, high, value))
    if params['stat_timeout'] > params['timeout']:
        raise probe.ProbeError('stat_timeout (%s) must not exceed timeout (%s)' % (params['stat_timeout'],
                                                                                   params['timeout']))
    if not params['path']:
        raise probe.ProbeError('path must name at least one directory')


def run(params: dict, check_mode: bool) -> dict:
    """Probe every path; returns {'changed', 'ansible_facts'}. Raises ProbeError, probe.Interrupted."""
    validate(params)
    opts = {key: params[key] for key in probe.DEFAULTS}
    reports = {}
    removed = []
    for path in params['path']:
        report = probe.probe_path(path, params['checks'], opts, check_mode=check_mode,
                                  clean_leftovers=params['clean_leftovers'])
        reports[report['path']] = report
        removed.extend(report['leftovers_removed'])
    return {'changed': bool(removed),
            'ansible_facts': {'storage_probe': reports,
                              'storage_probe_single_verdict': verdict.worst(r['verdict'] for r in reports.values())}}
