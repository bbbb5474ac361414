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
from sqlalchemy.types import TIMESTAMP, Float, Uuid

from ...types import Record
from .batch import InsertBatch, all_native, value_tuples
from .types import (
    NaiveUtcDateTime, TextAcceptingUuid, TinyIntBool, UtcTimestamp, UuidAsText, is_naive_timestamp, is_text,
    sends_natives_unchanged,
)

SESSION_SETUP = ("SET time_zone = '+00:00'",)
"""Run on every new connection of an engine that ferryman builds."""

_JSON_CHECK = re.compile(r"^\s*json_valid\(`((?:[^`]|``)+)`\)\s*$", re.IGNORECASE)


def insert_mysql(conn: Connection, batch: InsertBatch) -> None:
    """``ON DUPLICATE KEY UPDATE``; note that MySQL applies it to a clash on *any* unique key.

    When SQLAlchemy would send every value unchanged (no column type processes driver-native
    values, and all values are native), the rows go to PyMySQL with the statement's cached SQL:
    SQLAlchemy's per-row parameter processing cost about as much as PyMySQL's own escaping.
    """
    plain = _driver_sql(conn, batch)
    if plain is not None:
        sql, positional = plain
        rows = value_tuples(batch)
        if all_native(rows):
            conn.exec_driver_sql(sql, rows if positional else batch.rows)  # type: ignore[arg-type]
            return
    conn.execute(_statement(batch), batch.rows)


def _statement(batch: InsertBatch) -> Any:
    statement = mysql.insert(batch.table)
    if batch.on_conflict != "error":
        updates: dict[str, Any] = {c: statement.inserted[c] for c in batch.updated_columns}
        if batch.on_conflict == "ignore" or not updates:
            # "key = key" changes nothing; INSERT IGNORE would also hide NOT NULL and range errors.
            updates = {batch.key[0]: batch.table.c[batch.key[0]]}
        statement = statement.on_duplicate_key_update(updates)
    return statement


def _driver_sql(conn: Connection, batch: InsertBatch) -> tuple[str, bool] | None:
    """The batch's statement as the driver's SQL, and whether it takes tuples (else the records
    themselves); None when the columns' types process native values. Compiled once per table,
    column list and ``on_conflict``."""
    columns = batch.columns
    cache: dict[tuple[Any, ...], tuple[str, bool] | None] = batch.table.info.setdefault("ferryman_mysql_inserts", {})
    key = (tuple(columns), batch.on_conflict, conn.dialect.name, conn.dialect.server_version_info)
    if key not in cache:
        compiled = _statement(batch).compile(dialect=conn.dialect, column_keys=columns, for_executemany=True)
        names = list(compiled.positiontup or ()) if compiled.positional else sorted(compiled.bind_names.values())
        plain = (
            names == (columns if compiled.positional else sorted(columns))
            and not compiled.escaped_bind_names
            and not conn.get_execution_options().get("schema_translate_map")
            and all(sends_natives_unchanged(batch.table.c[c].type, conn.dialect) for c in columns)
        )
        cache[key] = (compiled.string, compiled.positional) if plain else None
    return cache[key]


def adapt_table(table: Table, conn: Connection) -> None:
    """Replace the reflected types that would lose information (see ``types.py``)."""
    json_columns = _mariadb_json_columns(table, conn) if getattr(conn.dialect, "is_mariadb", False) else set()
    for column in table.columns:
        kind = column.type
        if column.name in json_columns:
            column.type = mysql.JSON()
        elif isinstance(kind, mysql.TINYINT) and kind.display_width == 1:
            column.type = TinyIntBool()
        elif isinstance(kind, Float) and kind.asdecimal:
            kind.asdecimal = False  # this reflected table's own type: DOUBLE and REAL give float
        elif isinstance(kind, TIMESTAMP):
            column.type = UtcTimestamp()
        elif is_naive_timestamp(kind):
            column.type = NaiveUtcDateTime()
        elif isinstance(kind, Uuid):
            column.type = UuidAsText()
        elif is_text(kind):
            column.type = TextAcceptingUuid()


def why_dropped(conn: Connection, rows: list[Record]) -> str:
    """The server closes the connection on a statement larger than its ``max_allowed_packet``
    (the client sees "server has gone away" or "lost connection"): say so when a record of
    ``rows`` cannot fit in one."""
    limit = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
    size = max(map(_value_bytes, rows), default=0)
    if size < limit:
        return ""
    return f"a record's values take at least {size} bytes, more than the server's max_allowed_packet ({limit} bytes)"


def _value_bytes(row: Record) -> int:
    """At least the bytes a record's text and binary values take in a statement."""
    return sum(len(v) for v in row.values() if isinstance(v, (str, bytes, bytearray)))


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
