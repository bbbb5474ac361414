"""MariaDB and MySQL through PyMySQL: multi-row INSERTs, faithful types, UTC sessions.

Bulk writes: SQLAlchemy hands a batch to ``cursor.executemany``, and PyMySQL rewrites
``INSERT ... VALUES (...)`` (with or without ``ON DUPLICATE KEY UPDATE``) into multi-row
statements of up to ``max_stmt_length`` bytes (1 MB): a batch of 512 rows costs one or a few
round trips, not 512. ``tests/stores/test_sql_types.py`` checks this with the server's
``Com_insert`` counter.

Every connection of an engine built by ferryman runs ``SET time_zone = '+00:00'``, so
TIMESTAMP columns (instants) are read and written in UTC whatever the server's zone is.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection, Table, text
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TIMESTAMP, Uuid

from .batch import InsertBatch
from .types import NaiveUtcDateTime, TextAcceptingUuid, TinyIntBool, UtcTimestamp, UuidAsText, is_naive_timestamp, is_text

SESSION_SETUP = ("SET time_zone = '+00:00'",)
"""Run on every new connection of an engine that ferryman builds."""

_JSON_CHECK = re.compile(r"^\s*json_valid\(`((?:[^`]|``)+)`\)\s*$", re.IGNORECASE)


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


def on_connect(dbapi_connection: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for statement in SESSION_SETUP:
            cursor.execute(statement)
    finally:
        cursor.close()


def adapt_table(table: Table, conn: Connection) -> None:
    """Replace the reflected types that would lose information (see ``types.py``)."""
    json_columns = _mariadb_json_columns(table, conn) if getattr(conn.dialect, "is_mariadb", False) else set()
    for column in table.columns:
        kind = column.type
        if column.name in json_columns:
            column.type = mysql.JSON()
        elif isinstance(kind, mysql.TINYINT) and kind.display_width == 1:
            column.type = TinyIntBool()
        elif isinstance(kind, TIMESTAMP):
            column.type = UtcTimestamp()
        elif is_naive_timestamp(kind):
            column.type = NaiveUtcDateTime()
        elif isinstance(kind, Uuid):
            column.type = UuidAsText()
        elif is_text(kind):
            column.type = TextAcceptingUuid()


def _mariadb_json_columns(table: Table, conn: Connection) -> set[str]:
    """MariaDB's JSON is LONGTEXT with ``CHECK (json_valid(col))``; reflection sees only LONGTEXT."""
    query = text(
        "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
        " WHERE CONSTRAINT_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :table"
    )
    try:
        clauses = conn.execute(query, {"schema": table.schema, "table": table.name}).scalars().all()
    except DBAPIError:  # an old server without CHECK_CONSTRAINTS: no JSON columns to find
        conn.rollback()
        return set()
    found = (_JSON_CHECK.match(c or "") for c in clauses)
    return {m.group(1).replace("``", "`") for m in found if m}
