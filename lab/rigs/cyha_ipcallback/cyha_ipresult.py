# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only stdout callback: writes each task's full result (diff included) as JSON to the
file named by CYHA_IP_RESULT, so the IP takeover tests read exactly what the module returned."""

from __future__ import annotations

DOCUMENTATION = '''
name: cyha_ipresult
type: stdout
short_description: write task results as JSON to the file named by CYHA_IP_RESULT
description: Test helper for the service_ip integration tests.
'''

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'cyha_ipresult'

    def _write(self, result, status):
        data = {k: v for k, v in result.result.items() if not k.startswith('_ansible_')}
        data['cyha_status'] = status
        with open(os.environ['CYHA_IP_RESULT'], 'w', encoding='utf-8') as handle:
            json.dump(data, handle, default=str)

    def v2_runner_on_ok(self, result, **kwargs):
        self._write(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, 'failed')

    def v2_runner_on_unreachable(self, result):
        self._write(result, 'unreachable')
