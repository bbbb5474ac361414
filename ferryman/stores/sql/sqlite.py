"""SQLite: ``INSERT ... ON CONFLICT`` and the reflected types that need help (see ``types.py``).

A batch saved with ``on_conflict="error"`` whose values are all of the driver's own types goes
straight to sqlite3's ``executemany``: SQLAlchemy's per-row parameter processing would cost more
than the insert itself. The values are still those SQLAlchemy would send: the bind processors of
the columns whose types change such values (JSON to its text, Numeric and REAL to float, Boolean
to int, ...) are applied first, column by column; a value they refuse sends the batch through
SQLAlchemy, which raises the same error as always. Other columns' values go as they are.

The engine options (busy timeout, foreign keys; WAL before a connection's first write) are set in
``engines.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain, compress, repeat
from typing import Any, Callable

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import sqlite

from ...types import Record
from .batch import InsertBatch, all_native, on_conflict_statement, value_tuples
from .types import NaiveUtcDateTime, TextAcceptingUuid, is_naive_timestamp, is_text, sends_natives_unchanged


@dataclass(frozen=True)
class _DriverInsert:
    """The INSERT of one column set as sqlite3 takes it; cached in ``table.info``."""

    sql: str
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    """(position, bind processor) of the columns whose types change native values."""

    def values(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """``rows`` as SQLAlchemy would send them (raises what a bind processor raises)."""
        if not self.processors:
            return rows
        columns: list[Any] = list(zip(*rows))
        for i, process in self.processors:
            columns[i] = map(process, columns[i])
        return list(zip(*columns))


def insert_sqlite(conn: Connection, batch: InsertBatch) -> None:
    if batch.fast and batch.on_conflict == "error" and not conn.get_execution_options().get("schema_translate_map"):
        plan = _driver_insert(conn, batch.table, batch.columns)
        if plan is not None:
            rows = value_tuples(batch)
            if all_native(rows):
                try:
                    rows = plan.values(rows)
                except Exception:  # noqa: BLE001 - SQLAlchemy's path raises it as a StatementError
                    pass
                else:
                    conn.exec_driver_sql(plan.sql, rows)
                    return
    conn.execute(on_conflict_statement(sqlite.insert, batch), batch.rows)


def _driver_insert(conn: Connection, table: Table, columns: list[str]) -> _DriverInsert | None:
    plans: dict[tuple[Any, ...], _DriverInsert | None] = table.info.setdefault("ferryman_sqlite_inserts", {})
    key = (tuple(columns), conn.dialect)
    if key not in plans:
        plans[key] = _make_driver_insert(conn, table, columns)
    return plans[key]


def _make_driver_insert(conn: Connection, table: Table, columns: list[str]) -> _DriverInsert | None:
    """None when SQLAlchemy's INSERT has other parameters than the batch's values (a client-side
    default fills an absent column) or renames them."""
    compiled = sqlite.insert(table).compile(dialect=conn.dialect, column_keys=columns, for_executemany=True)
    if list(compiled.positiontup or ()) != columns or compiled.escaped_bind_names:
        return None
    processors = tuple(
        (i, table.c[c].type._cached_bind_processor(conn.dialect))
        for i, c in enumerate(columns)
        if not sends_natives_unchanged(table.c[c].type, conn.dialect)
    )
    return _DriverInsert(compiled.string, processors)  # type: ignore[arg-type]


def unkept_value(rows: list[Record]) -> tuple[Record, str, str] | None:
    """The first record with a value SQLite would not keep, its field and why: a NaN (float or
    Decimal), which SQLite stores as NULL without a word. Infinities are kept.

    Looked for at C speed (no Python code per value); the record only when there is one."""
    values = list(chain.from_iterable(map(dict.values, rows)))
    if not any(issubclass(kind, (float, Decimal)) for kind in set(map(type, values))):
        return None
    floats = compress(values, map(isinstance, values, repeat(float)))
    decimals = compress(values, map(isinstance, values, repeat(Decimal)))
    if not (any(map(math.isnan, floats)) or any(map(Decimal.is_nan, decimals))):
        return None
    for row in rows:
        for field, value in row.items():
            if isinstance(value, (float, Decimal)) and _is_nan(value):
                return row, field, "SQLite stores NaN as NULL"
    return None  # not reached: a NaN was seen above


def _is_nan(value: float | Decimal) -> bool:
    return value.is_nan() if isinstance(value, Decimal) else math.isnan(value)


def adapt_table(table: Table, conn: Connection) -> None:
    """Aware datetimes are stored as UTC; UUIDs go into text columns as their str."""
    for column in table.columns:
        if is_naive_timestamp(column.type):
            column.type = NaiveUtcDateTime()
        elif is_text(column.type):
            column.type = TextAcceptingUuid()
