"""SQLite: ``INSERT ... ON CONFLICT`` and the reflected types that need help (see ``types.py``).

The engine options (WAL, busy timeout, foreign keys) are set in ``engines.py``.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import sqlite

from .batch import InsertBatch, on_conflict_statement
from .types import NaiveUtcDateTime, TextAcceptingUuid, is_naive_timestamp, is_text


def insert_sqlite(conn: Connection, batch: InsertBatch) -> None:
    conn.execute(on_conflict_statement(sqlite.insert, batch), batch.rows)


def adapt_table(table: Table, conn: Connection) -> None:
    """Aware datetimes are stored as UTC; UUIDs go into text columns as their str."""
    for column in table.columns:
        if is_naive_timestamp(column.type):
            column.type = NaiveUtcDateTime()
        elif is_text(column.type):
            column.type = TextAcceptingUuid()
