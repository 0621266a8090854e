# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render rows (mappings) as fixed-width text or Markdown tables for reports on the controller."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class TableError(ValueError):
    """The rows or columns cannot be rendered; the message names the offending item."""


def _cell(value) -> str:
    if value is None:
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, float):
        return f'{value:.3g}' if abs(value) < 1000 else f'{value:.0f}'
    text = str(value)
    return text.replace('\n', ' ').replace('|', '\\|')


def normalise_columns(columns) -> list[tuple[str, str]]:
    """Accept ['key', ...] or [{'key': k, 'title': t}, ...]; return [(key, title), ...]."""
    if not isinstance(columns, Sequence) or isinstance(columns, (str, bytes)) or not columns:
        raise TableError('columns must be a non-empty list of keys or of {key, title} mappings')
    result = []
    for index, column in enumerate(columns):
        if isinstance(column, str):
            result.append((column, column))
        elif isinstance(column, Mapping) and isinstance(column.get('key'), str):
            result.append((column['key'], str(column.get('title', column['key']))))
        else:
            raise TableError(f'column {index} must be a key or a mapping with a string "key", not {column!r}')
    return result


def render(rows, columns, style: str = 'text') -> str:
    """Render rows as a table; missing keys show as '-'. style: 'text' or 'markdown'."""
    cols = normalise_columns(columns)
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
        raise TableError('rows must be a list of mappings')
    body = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TableError(f'row {index} must be a mapping, not {type(row).__name__}')
        body.append([_cell(row.get(key)) for key, dummy in cols])
    titles = [title for dummy, title in cols]
    if style == 'markdown':
        lines = ['| ' + ' | '.join(titles) + ' |', '|' + '---|' * len(titles)]
        lines += ['| ' + ' | '.join(cells) + ' |' for cells in body]
        return '\n'.join(lines) + '\n'
    if style != 'text':
        raise TableError(f"style must be 'text' or 'markdown', not {style!r}")
    widths = [max([len(t)] + [len(cells[i]) for cells in body]) for i, t in enumerate(titles)]
    lines = ['  '.join(t.ljust(w) for t, w in zip(titles, widths)).rstrip(),
             '  '.join('-' * w for w in widths)]
    lines += ['  '.join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in body]
    return '\n'.join(lines) + '\n'
