"""SQLite: ``INSERT ... ON CONFLICT`` and the reflected types that need help (see ``types.py``).

The engine options (WAL, busy timeout, foreign keys) are set in ``engines.py``.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import sqlite

from .batch import InsertBatch, on_conflict_statement
from .types import NaiveUtcDateTime, TextAcceptingUuid, is_naive_timestamp, is_text


_DRIVER_NATIVE = frozenset({int, str, float, bytes, bool, type(None)})
"""Values sqlite3 stores as they are, with no type processing by SQLAlchemy."""


def insert_sqlite(conn: Connection, batch: InsertBatch) -> None:
    if batch.fast and batch.on_conflict == "error":
        columns = batch.columns
        rows = [tuple(row[c] for c in columns) for row in batch.rows]
        if all(type(v) in _DRIVER_NATIVE for row in rows for v in row):
            # Straight to sqlite3's executemany: SQLAlchemy's per-row parameter processing
            # would cost more than the insert itself, and these values need none.
            conn.exec_driver_sql(_plain_insert(conn, batch.table, columns), rows)
            return
    conn.execute(on_conflict_statement(sqlite.insert, batch), batch.rows)


def _plain_insert(conn: Connection, table: Table, columns: list[str]) -> str:
    quote = conn.dialect.identifier_preparer
    names = ", ".join(quote.quote(table.c[c].name) for c in columns)
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {quote.format_table(table)} ({names}) VALUES ({marks})"


def adapt_table(table: Table, conn: Connection) -> None:
    """Aware datetimes are stored as UTC; UUIDs go into text columns as their str."""
    for column in table.columns:
        if is_naive_timestamp(column.type):
            column.type = NaiveUtcDateTime()
        elif is_text(column.type):
            column.type = TextAcceptingUuid()
