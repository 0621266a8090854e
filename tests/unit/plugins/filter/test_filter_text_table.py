# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.cyrus.ha.plugins.filter.text_table import FilterModule


def test_filter_is_registered_and_renders():
    text_table = FilterModule().filters()['text_table']
    assert text_table([{'a': 1}], ['a']) == 'a\n-\n1\n'


def test_filter_turns_table_errors_into_filter_errors():
    text_table = FilterModule().filters()['text_table']
    with pytest.raises(AnsibleFilterError) as caught:
        text_table([1], ['a'])
    assert str(caught.value).startswith('cyrus.ha.text_table: row 0 must be a mapping')
