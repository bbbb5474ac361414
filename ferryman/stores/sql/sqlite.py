"""SQLite (:class:`SQLiteDialect`): ``INSERT ... ON CONFLICT``, pragmas, the reflected types that
need help (see ``types.py``), sqlite3's error messages.

A batch saved with ``on_conflict="error"`` whose values are all of the driver's own types goes
straight to sqlite3's ``executemany``: SQLAlchemy's per-row parameter processing would cost more
than the insert itself. The values are still those SQLAlchemy would send: the bind processors of
the columns whose types change such values (JSON to its text, Numeric and REAL to float, Boolean
to int, ...) are applied first, column by column; a value they refuse sends the batch through
SQLAlchemy, which raises the same error as always. Other columns' values go as they are.

Every connection of an engine ferryman builds sets a busy timeout and turns foreign keys on; a
connection switches the file to WAL before its first write (``engines.prepare_to_write``), so a
store that is only read never changes its file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain, compress, repeat
from typing import Any

from sqlalchemy import URL, Connection, Table
from sqlalchemy.dialects import sqlite
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeEngine

from ...errors import StoreUnusableError
from ...types import Record
from .batch import InsertBatch, all_native, on_conflict_statement, value_tuples
from .dialect import SqlDialect
from .driver_errors import ConstraintDetails, Kind
from .identity import sqlite_file
from .types import NaiveUtcDateTime, TextAcceptingUuid, is_naive_timestamp, is_text, sends_natives_unchanged

BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another one's lock before "database is locked"."""

SESSION_PRAGMAS = (f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}", "PRAGMA foreign_keys = ON")
"""On every SQLite connection: settings of the connection alone, which change no file."""

WRITE_PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL")
"""Before a connection's first write to a SQLite file: WAL lets readers run beside the writer
(and stays on in the file), NORMAL sync is safe with WAL."""

_UNUSABLE = ("no such table", "no such column", "attempt to write a readonly database",
             "unable to open database file")
_COLUMNS = re.compile(r"^(?:UNIQUE|NOT NULL) constraint failed: (?P<columns>.+)$")
_CHECK = re.compile(r"^CHECK constraint failed: (?P<constraint>.+)$")


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


def is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


class SQLiteDialect(SqlDialect):
    """SQLite through the standard library's sqlite3."""

    names = ("sqlite",)
    upserts = True
    pings_pooled = False  # a file cannot go away while a connection sits in the pool

    def engine_kwargs(self, url: URL, options: Mapping[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if is_memory(url):
            # One connection for everyone: with a pool, each connection would get its own empty
            # database. Fine for tests and demos; use a file when several threads write.
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        return kwargs | dict(options)

    def connect_statements(self, url: URL) -> tuple[str, ...]:
        return SESSION_PRAGMAS

    def write_statements(self, url: URL) -> tuple[str, ...]:
        return () if is_memory(url) else WRITE_PRAGMAS

    def check_url(self, url: URL, label: str) -> None:
        """A SQLite file that does not exist holds no table: a mistyped path, which connecting
        would answer by creating an empty file (and "no such table")."""
        path = sqlite_file(url)
        if path is not None and not os.path.exists(path):
            raise StoreUnusableError(f"{label}: no SQLite database file at {path}")

    def adapt_table(self, table: Table, conn: Connection) -> None:
        adapt_table(table, conn)

    def stream_options(self, rows: int) -> dict[str, Any]:
        return {}  # a sqlite3 cursor steps through the result as it is read

    def compares_like_python(self, column_type: TypeEngine[Any]) -> bool:
        return not getattr(column_type, "collation", None)  # BINARY, SQLite's default

    def insert(self, conn: Connection, batch: InsertBatch) -> None:
        insert_sqlite(conn, batch)

    def unkept_value(self, rows: list[Record]) -> tuple[Record, str, str] | None:
        return unkept_value(rows)

    def driver_kind(self, orig: BaseException) -> Kind | None:
        """sqlite3 has no error codes worth the name, so its messages decide:

        * duplicate: "UNIQUE constraint failed", "PRIMARY KEY"
        * unusable: "no such table", "no such column", "has no column named", "attempt to write a
          readonly database", "unable to open database file"
        * transient: "database is locked", "database table is locked"
        """
        message = str(orig)
        if message.startswith(("UNIQUE constraint failed", "PRIMARY KEY")):
            return "duplicate"
        if message.startswith(("database is locked", "database table is locked")):
            return "transient"
        if message.startswith(_UNUSABLE) or " has no column named " in message:
            return "unusable"
        return None

    def constraint_details(self, orig: BaseException) -> ConstraintDetails:
        """``UNIQUE constraint failed: t.a, t.b``, ``NOT NULL constraint failed: t.a``, ``CHECK
        constraint failed: c``; SQLite names no unique constraint, no value and nothing of a
        foreign key."""
        message = str(orig)
        found = _COLUMNS.match(message)
        if found is not None:
            return ConstraintDetails(None, tuple(c.strip().rsplit(".", 1)[-1] for c in found["columns"].split(",")))
        found = _CHECK.match(message)
        return ConstraintDetails(found["constraint"]) if found is not None else ConstraintDetails()
