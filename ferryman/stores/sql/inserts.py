"""Writing rows: one function per dialect, so a faster path (COPY, LOAD DATA) can replace one.

Every function runs inside the caller's transaction and sends all rows with executemany; the
``on_conflict`` rule becomes the dialect's upsert construct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import Connection, Table, insert
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ...types import Record
from ..common import OnConflict


@dataclass(frozen=True)
class InsertBatch:
    """Rows for one table, all with the same fields (so one statement fits them all)."""

    table: Table
    rows: list[Record]
    key: tuple[str, ...]
    on_conflict: OnConflict

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0])

    @property
    def updated_columns(self) -> list[str]:
        return [c for c in self.columns if c not in self.key]


Inserter = Callable[[Connection, InsertBatch], None]


def insert_generic(conn: Connection, batch: InsertBatch) -> None:
    """Plain INSERT, for dialects without an upsert we know (``on_conflict="error"`` only)."""
    conn.execute(insert(batch.table), batch.rows)


def insert_sqlite(conn: Connection, batch: InsertBatch) -> None:
    conn.execute(_on_conflict_statement(sqlite.insert, batch), batch.rows)


def insert_postgresql(conn: Connection, batch: InsertBatch) -> None:
    conn.execute(_on_conflict_statement(postgresql.insert, batch), batch.rows)


def insert_mysql(conn: Connection, batch: InsertBatch) -> None:
    """``ON DUPLICATE KEY UPDATE``; note that MySQL applies it to a clash on *any* unique key."""
    statement = mysql.insert(batch.table)
    if batch.on_conflict != "error":
        updates: dict[str, Any] = {c: statement.inserted[c] for c in batch.updated_columns}
        if batch.on_conflict == "ignore" or not updates:
            # "key = key" changes nothing; INSERT IGNORE would also hide NOT NULL and range errors.
            updates = {batch.key[0]: batch.table.c[batch.key[0]]}
        statement = statement.on_duplicate_key_update(updates)
    conn.execute(statement, batch.rows)


def _on_conflict_statement(make_insert: Callable[[Table], Any], batch: InsertBatch) -> Any:
    """SQLite's and PostgreSQL's shared ``INSERT ... ON CONFLICT (key) DO ...``."""
    statement = make_insert(batch.table)
    if batch.on_conflict == "error":
        return statement
    updates = {c: statement.excluded[c] for c in batch.updated_columns}
    if batch.on_conflict == "ignore" or not updates:
        return statement.on_conflict_do_nothing(index_elements=list(batch.key))
    return statement.on_conflict_do_update(index_elements=list(batch.key), set_=updates)


INSERTERS: dict[str, Inserter] = {
    "sqlite": insert_sqlite,
    "postgresql": insert_postgresql,
    "mysql": insert_mysql,
    "mariadb": insert_mysql,
}
"""The insert path of each dialect, by SQLAlchemy dialect name."""


def inserter_for(dialect: str, on_conflict: OnConflict) -> Inserter:
    """The insert function for ``dialect``.

    Raises:
        ValueError: ``on_conflict`` needs an upsert that ferryman does not know for ``dialect``.
    """
    if dialect in INSERTERS:
        return INSERTERS[dialect]
    if on_conflict != "error":
        raise ValueError(f"on_conflict={on_conflict!r} is not supported on {dialect}; supported: {', '.join(INSERTERS)}")
    return insert_generic
