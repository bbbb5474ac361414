"""PostgreSQL through psycopg 3 (:class:`PostgreSQLDialect`): upserts, row-value keysets,
pipelined page reads, a batch's journal entry sent with its COMMIT, sqlstates; and COPY
(``postgres_copy.py``), which saves plain batches."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import CHAR, NCHAR, URL, ColumnElement, Connection, Engine, Table, tuple_
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

from ...types import Record, RecordId
from ..base import JournalEntry
from ..common import OnConflict
from .batch import InsertBatch, WriteInFlight, on_conflict_statement
from .clauses import BOUND_COMPARISONS, Bound
from .dialect import SqlDialect
from .driver import DriverStatement
from .driver_errors import ConstraintDetails, Kind, driver_error
from .journal import FENCE_MESSAGE, JournalTables, journal_values
from .postgres_copy import COPY_MIN_ROWS, can_stream, start_copy
from .postgres_link import plain_session, sends_sql_as_is
from .types import NaiveUtcDateTime, is_naive_timestamp

CONNECT_TIMEOUT = 10
"""Seconds to wait for a connection unless the URL or ``create_engine_kwargs`` say otherwise."""

_UNUSABLE = {"42P01", "42703", "3F000", "42501", "25006"}
_LOST = {"57P01", "57P02", "57P03"}
_BUSY = {"40001", "40P01", "55P03", "53300"}
FENCED = "FM001"
"""The SQLSTATE of a batch refused by its fence (:func:`fence_check`); a class PostgreSQL leaves free."""
_REFUSED = ("does not exist", "authentication failed", "no pg_hba.conf entry", "permission denied")
_CONNECTION_ERRORS = frozenset({"OperationalError", "InterfaceError"})
"""DBAPI error classes that mean the connection failed, not a value (psycopg raises DataError,
ProgrammingError, ... for a value it refuses before sending it)."""
_KEY = re.compile(r'Key \((?P<columns>.*)\)=\((?P<values>.*)\) (?:already exists|is not present)', re.S)


def insert_postgresql(conn: Connection, batch: InsertBatch) -> None:
    """INSERT (or upsert) inside the caller's transaction; plain batches mostly go by COPY."""
    conn.execute(on_conflict_statement(postgresql.insert, batch), batch.rows)


def journal_insert(conn: Connection, tables: JournalTables, entry: JournalEntry) -> bytes:
    """``INSERT INTO ferryman_journal (...) VALUES (...)`` with the entry's values as literals
    quoted by libpq, after the entry's :func:`fence_check` if it has a fence, to send in one
    query with other statements."""
    raw: Any = conn.connection.driver_connection
    encoding = raw.info.encoding
    table = tables.entries
    values = journal_values(entry)
    prefix = table.info.get("ferryman_journal_insert")
    if prefix is None:
        preparer = conn.dialect.identifier_preparer
        names = ", ".join(preparer.quote(name) for name in values)
        prefix = f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES ("
        table.info["ferryman_journal_insert"] = prefix
    from psycopg.pq import Escaping

    escape = Escaping(raw.pgconn).escape_literal
    literals = {name: escape(value.encode(encoding)) for name, value in values.items()}
    insert = prefix.encode(encoding) + b", ".join(literals.values()) + b")"
    if entry.fence is None:
        return insert
    return fence_check(conn, tables.fences, literals["migration"], entry.fence) + b"; " + insert


def fence_check(conn: Connection, table: Table, migration: bytes, fence: int) -> bytes:
    """A ``DO`` block that raises SQLSTATE :data:`FENCED` when the fence row of ``migration`` (a
    quoted literal), read ``FOR SHARE`` and so locked until the transaction ends, is above
    ``fence``. One statement more in the batch's query, not one round trip more.

    ``FOR SHARE`` finds no row to lock when the fence was never raised: :meth:`PostgreSQLDialect.
    raise_fence` locks the whole table, which waits for every batch that read it."""
    encoding = conn.connection.driver_connection.info.encoding  # type: ignore[union-attr]
    target = conn.dialect.identifier_preparer.format_table(table).encode(encoding)
    tag = b"$ferryman$"
    while tag in migration:  # the body's quotes must not end inside the literal
        tag = tag[:-1] + b"_$"
    return (b"DO " + tag + b"BEGIN IF (SELECT epoch FROM " + target + b" WHERE migration = " + migration
            + b" FOR SHARE) > " + str(fence).encode() + b" THEN RAISE EXCEPTION USING ERRCODE = '"
            + FENCED.encode() + b"', MESSAGE = '" + FENCE_MESSAGE.encode() + b"'; END IF; END" + tag)


def insert_and_commit(conn: Connection, tables: JournalTables, entry: JournalEntry) -> bool:
    """INSERT the journal entry (its fence checked first) and COMMIT, in one round trip (one
    simple query) instead of two; False when not on psycopg (nothing was done).

    For the journal entry that ends a batch saved by INSERT: a round trip fewer per batch.
    """
    raw: Any = conn.connection.driver_connection
    if not sends_sql_as_is(conn) or raw.autocommit:
        return False
    statement = journal_insert(conn, tables, entry) + b"; COMMIT"
    try:
        with raw.cursor() as cursor:
            cursor.execute(statement)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, exc, statement.decode(raw.info.encoding)) from exc
    return True


@contextmanager
def alone_in_autocommit(raw: Any, driver: str) -> Iterator[None]:
    """On psycopg, runs the block's one statement in autocommit, so with no BEGIN before it and
    no ROLLBACK after it: two round trips fewer. PostgreSQL gives a lone statement a transaction
    of its own, the same as BEGIN would, as long as the session asks for nothing that BEGIN would
    add (an isolation level, read only, deferrable): otherwise nothing changes.
    """
    switch = driver == "psycopg" and not raw.autocommit and plain_session(raw)
    if switch:
        raw.autocommit = True
    try:
        yield
    finally:
        if switch and not raw.closed:
            raw.autocommit = False


@contextmanager
def quiet_pipeline(raw: Any) -> Iterator[None]:
    """psycopg's pipeline mode for the block. When the block raises (a query failed, the
    connection was lost, the reader left early), the pipeline is still ended, but what ending it
    meets ("pipeline aborted", a closed connection) is dropped: the block's own error says what
    happened, where psycopg's context manager would log the second one to stderr."""
    pipeline = raw.pipeline()
    pipeline.__enter__()
    try:
        yield
    except BaseException:
        try:
            pipeline.__exit__(None, None, None)
        except Exception:  # noqa: BLE001 - a consequence of the error being raised
            pass
        raise
    pipeline.__exit__(None, None, None)


def adapt_table(table: Table, conn: Connection) -> None:
    """Aware datetimes for ``timestamp without time zone`` columns are stored as UTC."""
    for column in table.columns:
        if is_naive_timestamp(column.type):
            column.type = NaiveUtcDateTime()


def engine_options(url: URL, options: dict[str, Any]) -> dict[str, Any]:
    """Defaults for engines built from URLs: a connect timeout, so a dead host fails in time."""
    connect_args = dict(options.get("connect_args", {}))
    if "connect_timeout" not in url.query and "connect_timeout" not in connect_args:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    return {"connect_args": connect_args}


_CONNECTION_COUNTS = (
    "SELECT current_setting('max_connections')::int"
    " - current_setting('superuser_reserved_connections')::int"
    " - COALESCE(NULLIF(current_setting('reserved_connections', true), '')::int, 0),"
    " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')")


class PostgreSQLDialect(SqlDialect):
    """PostgreSQL; the fast paths (COPY, pipelined pages, COMMIT sent with the journal entry) need
    psycopg 3, other drivers get plain SQLAlchemy."""

    names = ("postgresql",)
    upserts = True

    def engine_kwargs(self, url: URL, options: Mapping[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in options.items() if k != "connect_args"}
        return engine_options(url, dict(options)) | rest

    def adapt_table(self, table: Table, conn: Connection) -> None:
        adapt_table(table, conn)

    def connection_counts(self, conn: Connection) -> tuple[int, int] | None:
        """``max_connections`` less the slots kept for superusers (and, from PostgreSQL 16, for
        ``pg_use_reserved_connections``), and the client backends open now."""
        row = conn.exec_driver_sql(_CONNECTION_COUNTS).one()
        return int(row[0]), int(row[1])

    def key_bound(self, columns: Sequence[ColumnElement[Any]], values: Sequence[ColumnElement[Any]],
                  bound: Bound) -> ColumnElement[bool]:
        """``(a, b) > (x, y)``, ``(a, b) <= (x, y)``: PostgreSQL compares row values, as an index range."""
        row_value: ColumnElement[bool] = BOUND_COMPARISONS[bound].whole(tuple_(*columns), tuple_(*values))
        return row_value

    def lone_statement(self, conn: Connection) -> AbstractContextManager[None]:
        return alone_in_autocommit(conn.connection.driver_connection, conn.dialect.driver)

    def compares_like_python(self, column_type: TypeEngine[Any]) -> bool:
        """The default collation compares bytes; CHAR is blank-padded ('a' = 'a  ')."""
        return not getattr(column_type, "collation", None) and not isinstance(column_type, (CHAR, NCHAR))

    def pipelines(self, engine: Engine) -> bool:
        return engine.dialect.driver == "psycopg"

    def pipelined_pages(self, conn: Connection, statement: DriverStatement, keys: list[str],
                        params: Callable[[RecordId], Any], id_of: Callable[[Record], RecordId],
                        after: RecordId, limit: int) -> Iterator[list[Record]] | None:
        """psycopg's pipeline mode, each query still a transaction of its own; None unless the
        session is plain (else the pipeline would run in one long transaction)."""
        raw: Any = conn.connection.driver_connection
        if not plain_session(raw):
            return None
        return _pipelined(conn, raw, statement, keys, params, id_of, after, limit)

    def insert(self, conn: Connection, batch: InsertBatch) -> None:
        insert_postgresql(conn, batch)

    def start_copy(self, engine: Engine, table: Table, groups: list[list[Record]], on_conflict: OnConflict,
                   journal_tables: JournalTables, journal: JournalEntry | None) -> WriteInFlight | None:
        """COPY for a plain batch (``on_conflict="error"``) of :data:`~.postgres_copy.COPY_MIN_ROWS`
        rows or more, on a connection of its own; None when the session cannot stream."""
        if on_conflict != "error" or sum(map(len, groups)) < COPY_MIN_ROWS:
            return None
        conn = engine.connect()
        try:
            if not can_stream(conn):
                conn.close()
                return None
            statement = None if journal is None else journal_insert(conn, journal_tables, journal)
        except BaseException:
            conn.close()
            raise
        return start_copy(conn, table, groups, statement, self)

    def append_journal(self, conn: Connection, tables: JournalTables, entry: JournalEntry, *,
                       commit: bool) -> None:
        """With ``commit`` on psycopg, the fence check, the INSERT and the COMMIT go to the server
        together."""
        if commit and insert_and_commit(conn, tables, entry):
            return
        super().append_journal(conn, tables, entry, commit=commit)

    def raise_fence(self, conn: Connection, table: Table, migration: str, epoch: int) -> None:
        """The table locked first, ``EXCLUSIVE``: that waits for every batch that read a fence
        ``FOR SHARE``, also those that found no row to lock (the fence never raised)."""
        conn.exec_driver_sql(f"LOCK TABLE {conn.dialect.identifier_preparer.format_table(table)} IN EXCLUSIVE MODE")
        super().raise_fence(conn, table, migration, epoch)

    def driver_kind(self, orig: BaseException) -> Kind | None:
        """By sqlstate:

        * duplicate: 23505
        * unusable: 42P01, 42703, 3F000 (no such table, column, schema), 42501 (permission
          denied), 25006 (read-only transaction); no sqlstate and turned away at login (no such
          role or database, authentication failed)
        * lost: no sqlstate and an OperationalError or InterfaceError (refused, unreachable,
          timed out, closed); class 08; 57P01-57P03 (shutting down, restarting)
        * transient: 40001, 40P01, 55P03, 53300
        * fenced: FM001, raised by :func:`fence_check`
        """
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate == "23505":
            return "duplicate"
        if sqlstate == FENCED:
            return "fenced"
        if sqlstate is None:
            if any(marker in str(orig) for marker in _REFUSED):
                return "unusable"  # turned away at login
            return "lost" if _is_connection_error(orig) else None
        if sqlstate in _UNUSABLE:
            return "unusable"
        if sqlstate.startswith("08") or sqlstate in _LOST:
            return "lost"
        if sqlstate in _BUSY:
            return "transient"
        return None

    def constraint_details(self, orig: BaseException) -> ConstraintDetails:
        """The error's ``diag`` (constraint name, column name) and its DETAIL, ``Key (a, b)=(1, x)
        already exists`` / ``... is not present in table ...``."""
        diag = getattr(orig, "diag", None)
        if diag is None:
            return ConstraintDetails()
        column = getattr(diag, "column_name", None)
        found = _KEY.search(getattr(diag, "message_detail", None) or "")
        columns: tuple[str, ...] = (column,) if column else ()
        values: tuple[str, ...] = ()
        if found is not None:
            columns = tuple(c.strip().strip('"') for c in found["columns"].split(", "))
            parts = tuple(found["values"].split(", "))
            values = parts if len(parts) == len(columns) else ()  # a value with ", " in it: unknown
        return ConstraintDetails(getattr(diag, "constraint_name", None), columns, values)


def _pipelined(conn: Connection, raw: Any, statement: DriverStatement, keys: list[str],
               params: Callable[[RecordId], Any], id_of: Callable[[Record], RecordId],
               after: RecordId, limit: int) -> Iterator[list[Record]]:
    def send(last: RecordId) -> Any:
        cursor = raw.cursor()
        cursor.execute(statement.sql, params(last))
        return cursor

    try:
        with alone_in_autocommit(raw, "psycopg"), quiet_pipeline(raw):
            pending = send(after)
            while pending is not None:
                page = [dict(zip(keys, row)) for row in pending.fetchall()]
                pending = send(id_of(page[-1])) if len(page) == limit else None
                if page:
                    yield page
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, exc, statement.sql) from exc


def _is_connection_error(orig: BaseException) -> bool:
    return any(cls.__name__ in _CONNECTION_ERRORS for cls in type(orig).__mro__)

