# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cyrus.ha.mupdate_list_check: its input refusals (the comparison itself is test_mailinvariants.py's)."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.filter.mupdate_list_check import FilterModule, mupdate_list_check


def test_the_filter_is_registered_and_passes_the_lists_through():
    assert FilterModule().filters() == {'mupdate_list_check': mupdate_list_check}
    result = mupdate_list_check({'mupdate': {'instances': {'mupdate': {
        'murder_role': 'mupdate', 'servername': 'm', 'running': True, 'mailboxes': {}}}}})
    assert result['ok'] is True and result['checked']['mupdate_master'] == 'mupdate@mupdate'


@pytest.mark.parametrize('hosts, limit, message', [
    ([], 20, 'cyrus.ha.mupdate_list_check: the input must be a mapping of host names to their ansible_facts.cyrus, '
             'not list'),
    ({}, 0, 'cyrus.ha.mupdate_list_check: limit must be a positive integer, not 0'),
    ({}, True, 'cyrus.ha.mupdate_list_check: limit must be a positive integer, not True'),
    ({}, '5', "cyrus.ha.mupdate_list_check: limit must be a positive integer, not '5'"),
])
def test_bad_input_is_named(hosts, limit, message):
    with pytest.raises(AnsibleFilterError) as info:
        mupdate_list_check(hosts, limit)
    assert str(info.value) == message
