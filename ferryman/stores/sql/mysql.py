"""MariaDB and MySQL through PyMySQL (:class:`MySQLDialect`): multi-row INSERTs, faithful types,
UTC sessions, the servers' error numbers.

Bulk writes: a batch goes as the multi-row statements that PyMySQL's ``executemany`` makes of
``INSERT ... VALUES (...)`` (with or without ``ON DUPLICATE KEY UPDATE``), of up to
``max_stmt_length`` bytes (1 MB) each: a batch of 512 rows costs one or a few round trips, not
512 (``mysql_values.py`` writes them, escaping a column at a time). ``tests/stores/sql/test_types.py``
checks this with the server's ``Com_insert`` counter. A plain batch is saved ahead: its
transaction is sent as one query, its outcome read while the caller goes on (``mysql_ahead.py``).

Every connection of an engine built by ferryman runs ``SET time_zone = '+00:00'``, so
TIMESTAMP columns (instants) are read and written in UTC whatever the server's zone is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import URL, Connection, Engine, Table, text
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TIMESTAMP, Float, Uuid

from ...types import Record
from ..base import JournalEntry
from ..common import OnConflict
from .batch import InsertBatch, WriteInFlight
from .dialect import SqlDialect
from .driver_errors import ConstraintDetails, Kind
from .journal import FENCE_MESSAGE, JournalTables
from .mysql_ahead import AHEAD_MIN_ROWS, can_send_ahead, execute_text, start_inserts
from .mysql_upsert import needs_key_only_upsert, upsert_by_key
from .mysql_values import InsertText, statements_for
from .types import (
    NaiveUtcDateTime,
    TextAcceptingUuid,
    TinyIntBool,
    UtcTimestamp,
    UuidAsText,
    is_naive_timestamp,
    is_text,
    sends_natives_unchanged,
)

SESSION_SETUP = ("SET time_zone = '+00:00'",)
"""Run on every new connection of an engine that ferryman builds."""

_JSON_CHECK = re.compile(r"^\s*json_valid\(`((?:[^`]|``)+)`\)\s*$", re.IGNORECASE)

_DUPLICATE = {1062, 1586}
_SIGNALLED = 1644
_UNUSABLE = {1036, 1044, 1045, 1049, 1054, 1142, 1143, 1146, 1290, 1698}
_LOST = {1053, 1158, 1159, 1160, 1161, 1927, 2002, 2003, 2006, 2013, 2055, 4031}
_BUSY = {1040, 1205, 1213, 1317}
_DETAILS = {
    1062: re.compile(r"Duplicate entry '(?P<values>.*)' for key '(?P<constraint>[^']*)'", re.S),
    1048: re.compile(r"Column '(?P<columns>[^']*)' cannot be null"),
    1364: re.compile(r"Field '(?P<columns>[^']*)' doesn't have a default value"),
    1452: re.compile(r"CONSTRAINT `(?P<constraint>[^`]*)` FOREIGN KEY \((?P<columns>[^)]*)\)"),
    4025: re.compile(r"CONSTRAINT `(?P<constraint>[^`]*)` failed"),
    3819: re.compile(r"Check constraint '(?P<constraint>[^']*)' is violated"),
}


def insert_mysql(conn: Connection, batch: InsertBatch) -> None:
    """``ON DUPLICATE KEY UPDATE``; note that MySQL applies it to a clash on *any* unique key.

    When SQLAlchemy would send every value unchanged (no column type processes driver-native
    values, and all values are native), the batch goes to PyMySQL as the multi-row statements its
    ``executemany`` would make, but escaped a column at a time instead of a value at a time
    (``mysql_values.py``); SQLAlchemy's per-row parameter processing is skipped too. An upsert
    into a table with another unique key goes by the key alone (:mod:`.mysql_upsert`).
    """
    if needs_key_only_upsert(batch):
        upsert_by_key(conn, batch)
        return
    statements = _statements(conn, batch)
    if statements is None:
        conn.execute(_statement(batch), batch.rows)
        return
    for statement in statements:
        execute_text(conn, statement)


def _statements(conn: Connection, batch: InsertBatch) -> list[str] | None:
    """The batch as complete multi-row statements, or None when SQLAlchemy must send it."""
    text = _insert_text(conn, batch)
    columns = text.columns(batch.rows) if text is not None else None
    return None if text is None or columns is None else statements_for(conn, text, columns)


def _all_statements(conn: Connection, table: Table, groups: list[list[Record]]) -> list[str] | None:
    """:func:`_statements` of plain INSERTs of every group, or None if one needs SQLAlchemy."""
    statements: list[str] = []
    for rows in groups:
        made = _statements(conn, InsertBatch(table, rows, (), "error"))
        if made is None:
            return None
        statements += made
    return statements


def _statement(batch: InsertBatch) -> Any:
    statement = mysql.insert(batch.table)
    if batch.on_conflict != "error":
        updates: dict[str, Any] = {c: statement.inserted[c] for c in batch.updated_columns}
        if batch.on_conflict == "ignore" or not updates:
            # "key = key" changes nothing; INSERT IGNORE would also hide NOT NULL and range errors.
            updates = {batch.key[0]: batch.table.c[batch.key[0]]}
        statement = statement.on_duplicate_key_update(updates)
    return statement


def _insert_text(conn: Connection, batch: InsertBatch) -> InsertText | None:
    """The batch's statement taken apart for :class:`InsertText`; None for a driver other than
    PyMySQL, or when the columns' types process native values (SQLAlchemy must see every value).
    Compiled once per table, column list and ``on_conflict``."""
    columns = batch.columns
    cache: dict[tuple[Any, ...], InsertText | None] = batch.table.info.setdefault("ferryman_mysql_inserts", {})
    key = (tuple(columns), batch.on_conflict, conn.dialect.name, conn.dialect.server_version_info)
    if key not in cache:
        compiled = _statement(batch).compile(dialect=conn.dialect, column_keys=columns, for_executemany=True)
        plain = (
            conn.dialect.driver == "pymysql"
            and not compiled.positional
            and sorted(compiled.bind_names.values()) == sorted(columns)
            and not compiled.escaped_bind_names
            and not conn.get_execution_options().get("schema_translate_map")
            and all(sends_natives_unchanged(batch.table.c[c].type, conn.dialect) for c in columns)
        )
        text = InsertText.of(compiled.string) if plain else None
        cache[key] = text if text is not None and sorted(text.names) == sorted(columns) else None
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


class MySQLDialect(SqlDialect):
    """MariaDB and MySQL through PyMySQL."""

    names = ("mysql", "mariadb")
    upserts = True

    def connect_statements(self, url: URL) -> tuple[str, ...]:
        return SESSION_SETUP

    def adapt_table(self, table: Table, conn: Connection) -> None:
        adapt_table(table, conn)

    def connection_counts(self, conn: Connection) -> tuple[int, int] | None:
        """``max_connections`` and ``Threads_connected`` (a global status any user may read;
        the process list shows others' sessions only to those with the PROCESS privilege)."""
        limit = conn.exec_driver_sql("SELECT @@GLOBAL.max_connections").scalar_one()
        connected = conn.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Threads_connected'").one()[1]
        return int(limit), int(connected)

    def insert(self, conn: Connection, batch: InsertBatch) -> None:
        insert_mysql(conn, batch)

    def engine_kwargs(self, url: URL, options: Mapping[str, Any]) -> dict[str, Any]:
        """PyMySQL sessions that take several statements in one query (``CLIENT.MULTI_STATEMENTS``),
        for :meth:`start_copy`; SQLAlchemy's own flag (``FOUND_ROWS``) and a ``client_flag`` of
        the URL kept. A ``client_flag`` given in ``connect_args`` is used as it is."""
        connect_args = dict(options.get("connect_args") or {})
        if url.get_driver_name() == "pymysql" and "client_flag" not in connect_args:
            from pymysql.constants import CLIENT  # type: ignore[import-untyped]

            given = int(url.query.get("client_flag", 0))  # type: ignore[arg-type]
            connect_args["client_flag"] = given | CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS
        return {**options, "connect_args": connect_args}

    def start_copy(self, engine: Engine, table: Table, groups: list[list[Record]], on_conflict: OnConflict,
                   journal_tables: JournalTables, journal: JournalEntry | None) -> WriteInFlight | None:
        """A plain batch (``on_conflict="error"``) of :data:`~.mysql_ahead.AHEAD_MIN_ROWS` rows or
        more that :func:`insert_mysql` would send as multi-row text in one statement: sent with its
        journal row and COMMIT as one query, its outcome read later (``mysql_ahead.py``); None for
        any other, or when the session cannot. Rows that need several statements (more than
        ``max_stmt_length`` bytes) are saved at once, statement by statement: one query holding
        them all could pass the server's ``max_allowed_packet``. So is a batch with a fenced entry
        on MySQL, which has no ``IF`` statement outside stored programs to check it in the query."""
        if on_conflict != "error" or sum(map(len, groups)) < AHEAD_MIN_ROWS:
            return None
        if journal is not None and journal.fence is not None and not engine.dialect.is_mariadb:  # type: ignore[attr-defined]
            return None
        conn = engine.connect()
        try:
            statements = _all_statements(conn, table, groups) if can_send_ahead(conn) else None
        except BaseException:
            conn.close()
            raise
        if statements is None or len(statements) > 1:
            conn.close()
            return None
        return start_inserts(conn, statements, journal_tables, journal)

    def why_dropped(self, conn: Connection, rows: list[Record]) -> str:
        return why_dropped(conn, rows)

    def driver_kind(self, orig: BaseException) -> Kind | None:
        """By the server's error number:

        * duplicate: 1062, 1586
        * unusable: 1146, 1054 (no such table, column), 1142, 1143, 1044, 1045, 1698 (denied),
          1049 (no such database), 1290, 1036 (read only)
        * lost: 1053 (server shutting down), 1158-1161 (network read/write), 1927 (connection
          killed), 2002, 2003 (cannot connect), 2006 (server gone), 2013 (connection lost), 2055,
          4031 (disconnected by the server)
        * transient: 1040 (too many connections), 1205 (lock wait timeout), 1213 (deadlock), 1317
          (query interrupted)
        * fenced: 1644 (signalled) saying :data:`~.journal.FENCE_MESSAGE` (``mysql_ahead``)
        """
        errno = orig.args[0] if orig.args else None
        if errno in _DUPLICATE:
            return "duplicate"
        if errno in _UNUSABLE:
            return "unusable"
        if errno in _LOST:
            return "lost"
        if errno in _BUSY:
            return "transient"
        if errno == _SIGNALLED and orig.args[1:] == (FENCE_MESSAGE,):
            return "fenced"
        return None

    def constraint_details(self, orig: BaseException) -> ConstraintDetails:
        """``Duplicate entry 'x' for key 'k'`` (1062; the key's columns come from the reflected
        table), ``Column 'a' cannot be null`` (1048), ``Field 'a' doesn't have a default value``
        (1364), ``... CONSTRAINT `fk` FOREIGN KEY (`a`) ...`` (1452), ``CONSTRAINT `c` failed``
        (4025), ``Check constraint 'c' is violated`` (3819)."""
        errno, message = (orig.args[0], str(orig.args[1])) if len(orig.args) == 2 else (None, "")
        pattern = _DETAILS.get(errno) if isinstance(errno, int) else None
        found = pattern.search(message) if pattern is not None else None
        if found is None:
            return ConstraintDetails()
        named = found.groupdict()
        constraint = named.get("constraint")
        if errno == 1062 and constraint is not None:
            constraint = constraint.rsplit(".", 1)[-1]  # MySQL 8 says 'table.key'
        columns = tuple(c.strip().strip("`") for c in named["columns"].split(",")) if named.get("columns") else ()
        values = (named["values"],) if named.get("values") is not None else ()
        return ConstraintDetails(constraint, columns, values)
