"""A MariaDB/MySQL batch as the multi-row INSERT text PyMySQL would send, escaped column by column.

PyMySQL's ``executemany`` formats one row at a time, escaping each value through a chain of
Python calls. :class:`InsertText` writes the very same statements (same text, same split into
statements of at most ``max_stmt_length`` bytes) but escapes a column at a time: a column whose
values are all ``str``, all ``int`` or all plain ``float`` is escaped by ``map`` over C methods,
with no Python code run per value; any other column goes value by value through the
connection's own ``escape``. ``tests/stores/sql/test_mysql_values.py`` checks, for random batches,
that the bytes are the ones PyMySQL's ``executemany`` sends.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from operator import itemgetter, methodcaller
from typing import Any, NamedTuple

from sqlalchemy import Connection

from ...types import Record
from .batch import DRIVER_NATIVE
from .driver_errors import driver_error

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")

_ESCAPED = {"\0": "\\0", "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\032": "\\Z", '"': '\\"', "'": "\\'"}
"""What ``pymysql.converters.escape_string`` escapes, and how (a session without
``NO_BACKSLASH_ESCAPES``)."""
_BACKSLASH_ESCAPES = [_ESCAPED.get(chr(code), chr(code)) for code in range(128)]
"""The same as a table for ``str.translate`` (a list: faster than a dict there)."""
_ROW = "({})".format
_JOIN_VALUES = ", ".join


@dataclass(frozen=True)
class InsertText:
    """An ``INSERT ... VALUES (%(a)s, %(b)s) [ON DUPLICATE KEY UPDATE ...]`` statement taken apart."""

    head: str
    """Everything before the row values: ``INSERT INTO t (a, b) VALUES ``."""
    names: tuple[str, ...]
    """The fields whose values make a row, in the statement's order."""
    tail: str
    """Everything after them: ``""`` or `` ON DUPLICATE KEY UPDATE ...``."""

    @classmethod
    def of(cls, sql: str) -> InsertText | None:
        """``sql`` (a pyformat INSERT of one row of named values) taken apart as PyMySQL's
        ``executemany`` does; None when executemany would not fold it into multi-row statements,
        or when its text holds a ``%`` of its own (PyMySQL would format it)."""
        from pymysql.cursors import RE_INSERT_VALUES  # type: ignore[import-untyped]

        found = RE_INSERT_VALUES.match(sql)
        if found is None:
            return None
        head, values, tail = found.group(1), found.group(2).rstrip(), found.group(3) or ""
        names = tuple(_PLACEHOLDER.findall(values))
        if values != _ROW(_JOIN_VALUES(f"%({n})s" for n in names)) or "%" in head + tail:
            return None
        return cls(head, names, tail)

    def columns(self, rows: Sequence[Record]) -> list[Column] | None:
        """The rows' values by column, in :attr:`names` order; None when a value is not of a
        type the driver takes as it is (:data:`~.batch.DRIVER_NATIVE`)."""
        columns = [Column(values, set(map(type, values))) for values in map(list, zip(*map(self._values, rows)))]
        return columns if DRIVER_NATIVE.issuperset(chain.from_iterable(c.kinds for c in columns)) else None

    @cached_property
    def _values(self) -> Callable[[Record], tuple[Any, ...]]:
        """A record's values in :attr:`names` order, as a tuple."""
        if len(self.names) == 1:
            only = self.names[0]
            return lambda record: (record[only],)
        return itemgetter(*self.names)

    def statements(self, columns: Sequence[Column], escape: Callable[[Any], str], backslashes: bool,
                   encoding: str, max_length: int) -> list[str]:
        """The statements that send the rows of ``columns``, as PyMySQL's ``executemany`` splits
        them: a row joins the current statement unless that would make it longer than
        ``max_length`` bytes in ``encoding``. ``escape`` is the connection's; ``backslashes`` is
        False in a session with ``NO_BACKSLASH_ESCAPES``.

        A row's text is one ``str.format`` of a template made per batch, whose slots add what
        PyMySQL adds around a value (quotes, a float's ``e0``): so a column of plain values goes
        into it as it is, with no call per value."""
        slots, values = zip(*(_column_text(column, escape, backslashes) for column in columns))
        row = _ROW(_JOIN_VALUES(slots)).format
        rows = list(map(row, *values))
        whole = f"{self.head}{','.join(rows)}{self.tail}"
        if len(whole) <= max_length and (whole.isascii() or len(whole.encode(encoding)) <= max_length):
            return [whole]  # the usual case: one statement

        def size(text: str) -> int:
            return len(text.encode(encoding))

        head, tail = size(self.head), size(self.tail)
        statements: list[str] = []
        current, length = [rows[0]], head + size(rows[0])
        for text in rows[1:]:
            text_length = size(text)
            if length + text_length + tail + 1 > max_length:
                statements.append(f"{self.head}{','.join(current)}{self.tail}")
                current, length = [], head
            else:
                length += 1
            current.append(text)
            length += text_length
        statements.append(f"{self.head}{','.join(current)}{self.tail}")
        return statements


class Column(NamedTuple):
    """One field's values in a batch, and their types."""

    values: list[Any]
    kinds: set[type]


def statements_for(conn: Connection, text: InsertText, columns: Sequence[Column]) -> list[str]:
    """:meth:`InsertText.statements` for ``conn``'s PyMySQL session; a value PyMySQL refuses to
    write (NaN) raised as SQLAlchemy raises the driver's errors."""
    from pymysql.constants import SERVER_STATUS  # type: ignore[import-untyped]

    raw: Any = conn.connection.driver_connection
    backslashes = not raw.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES
    try:
        return text.statements(columns, raw.escape, backslashes, raw.encoding, raw.cursorclass.max_stmt_length)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, exc, f"{text.head}(...){text.tail}") from exc


def _column_text(column: Column, escape: Callable[[Any], str], backslashes: bool) -> tuple[str, Iterable[Any]]:
    """A row template's slot for the column, and what fills it row by row: together, each value
    as the connection's ``escape`` writes it."""
    values, kinds = column
    if kinds == {str}:
        joined = "".join(values)
        if not any(map(joined.__contains__, _ESCAPED if backslashes else "'")):
            return "'{}'", values  # nothing to escape: the usual case, found in one pass
        quote = methodcaller("translate", _BACKSLASH_ESCAPES) if backslashes else methodcaller("replace", "'", "''")
        return "'{}'", map(quote, values)
    if kinds == {int}:
        return "{}", values  # format() writes an int as str() does
    if kinds == {float}:
        texts = list(map(float.__repr__, values))
        joined = "".join(texts)
        if "e" not in joined and "n" not in joined:  # no exponent, no inf or nan
            return "{}e0", texts
    return "{}", map(escape, values)
