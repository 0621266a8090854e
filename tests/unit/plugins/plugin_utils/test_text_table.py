# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.cyrus.ha.plugins.plugin_utils.text_table import TableError, render

ROWS = [{'host': 'be1', 'free': 79.64, 'up': True}, {'host': 'spare', 'up': False}]


def test_text_table_aligns_columns_and_marks_missing_values():
    assert render(ROWS, ['host', {'key': 'free', 'title': 'free GiB'}, 'up']) == (
        'host   free GiB  up\n'
        '-----  --------  ---\n'
        'be1    79.6      yes\n'
        'spare  -         no\n')


def test_markdown_table_escapes_pipes():
    assert render([{'a': 'x|y'}], ['a'], 'markdown') == '| a |\n|---|\n| x\\|y |\n'


def test_large_floats_are_not_shown_in_exponent_form():
    assert render([{'rate': 123456.7}], ['rate']).splitlines()[2] == '123457'


@pytest.mark.parametrize('rows, columns, style, message', [
    ([{'a': 1}], [], 'text', 'columns must be a non-empty list'),
    ([{'a': 1}], 'a', 'text', 'columns must be a non-empty list'),
    ([{'a': 1}], [{'title': 'x'}], 'text', 'column 0 must be a key'),
    (['not-a-row'], ['a'], 'text', 'row 0 must be a mapping, not str'),
    ({'a': 1}, ['a'], 'text', 'rows must be a list of mappings'),
    ([{'a': 1}], ['a'], 'html', "style must be 'text' or 'markdown', not 'html'"),
])
def test_bad_input_names_the_problem(rows, columns, style, message):
    with pytest.raises(TableError) as caught:
        render(rows, columns, style)
    assert message in str(caught.value)
