# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The argument spec of cyrus.ha.storage_probe and the one call the module makes."""

from __future__ import annotations

import os

from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import inputs
from ansible_collections.cyrus.ha.plugins.module_utils.storage_probe import progress
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
        deep_files=dict(type='int', default=probe.DEFAULTS['deep_files']),
        deep_budget_mb=dict(type='int', default=probe.DEFAULTS['deep_budget_mb']),
        progress_file=dict(type='path'),
        progress_id=dict(type='str'),
        clean_leftovers=dict(type='bool', default=False),
    )


LIMITS = (('timeout', 1, 86400), ('stat_timeout', 0.1, 3600), ('fsx_ops', 1, 10 ** 7), ('scale_files', 8, 10 ** 7),
          ('scale_rounds', 1, 12), ('fsx_seed', 0, 2 ** 32 - 1), ('deep_files', 2048, 10 ** 8),
          ('deep_budget_mb', 16, 10 ** 8))


def validate(params: dict) -> list:
    """Check every input before anything is touched; returns the paths, normalised. Raises ProbeError."""
    try:
        for key, low, high in LIMITS:
            if params.get(key) is not None:
                inputs.number(key, params[key], low, high)
        paths = inputs.paths(params['path'])
    except inputs.InputError as exc:
        raise probe.ProbeError(str(exc))
    if params['stat_timeout'] > params['timeout']:
        raise probe.ProbeError('stat_timeout (%s) must not exceed timeout (%s)' % (params['stat_timeout'],
                                                                                   params['timeout']))
    probe.select_checks(params['checks'])
    progress = params.get('progress_file')
    if progress is not None:
        if not os.path.isabs(progress) or not os.path.isdir(os.path.dirname(progress)):
            raise probe.ProbeError('progress_file %s must be an absolute path in an existing directory' % progress)
        if os.path.islink(progress) or (os.path.exists(progress) and not os.path.isfile(progress)):
            raise probe.ProbeError('progress_file %s exists and is not a regular file' % progress)
    return paths


def run(params: dict, check_mode: bool) -> dict:
    """Probe every path; returns {'changed', 'ansible_facts'}. Raises ProbeError, probe.Interrupted."""
    reporter = progress.Reporter(params.get('progress_file'), params.get('progress_id'))
    outcome = 'stopped before the end'
    try:
        paths = validate(params)
        opts = {key: params[key] for key in probe.DEFAULTS}
        real = {}
        for path in paths:  # every path fit for the probe before the first is probed or cleaned
            facts = probe.preflight(path, dict(probe.DEFAULTS, **opts))
            if facts['real_path'] in real:
                raise probe.ProbeError('%s and %s are the same directory %s: name each directory once' % (
                    real[facts['real_path']], path, facts['real_path']))
            real[facts['real_path']] = path
        reporter.plan(paths, probe.select_checks(params['checks']))
        reports = {}
        removed = []
        for path in paths:
            report = probe.probe_path(path, params['checks'], opts, check_mode=check_mode,
                                      clean_leftovers=params['clean_leftovers'], reporter=reporter)
            reports[report['path']] = report
            removed.extend(report['leftovers_removed'])
        outcome = ''
    except probe.ProbeError as exc:
        outcome = str(exc)
        raise
    finally:
        reporter.done(not outcome, outcome)     # never raises: the progress file is only for watching
    return {'changed': bool(removed),
            'ansible_facts': {'storage_probe': reports,
                              'storage_probe_single_verdict': verdict.worst(r['verdict'] for r in reports.values())}}
