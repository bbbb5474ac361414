"""PostgreSQL through psycopg 3: plain inserts go through ``COPY ... FROM STDIN``.

A batch saved with ``on_conflict="error"`` and at least :data:`COPY_MIN_ROWS` rows is streamed
with ``cursor.copy()`` on the transaction's own connection, so the journal entry written after it
commits or rolls back with it. COPY is only an accelerator, never a change in what is accepted:

* binary COPY first, when every column has a type whose binary form psycopg writes from plain
  Python values (numbers, text, bool, date/time, bytea, uuid). If a value does not fit (a str for
  a uuid column, a float for a numeric one), this column set switches to text COPY for good;
* text COPY then; if it refuses a batch for a value's format (SQLSTATE class 22, or psycopg
  cannot adapt a value), the whole transaction is sent again as ``INSERT``, which accepts what
  SQLAlchemy's types accept (``batch.FastPathRefused``);
* a unique violation is a unique violation (SQLSTATE 23505 -> DuplicateDataError), whichever path
  found it. The engine's bisection then saves halves, and a lone record uses INSERT.

Values go through the columns' SQLAlchemy bind processors first (JSON to text, the UTC rule for
naive timestamp columns, ...), exactly as an INSERT would send them.
"""

from __future__ import annotations

import struct
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy import URL, Connection, Table
from sqlalchemy.dialects import postgresql

from .batch import FastPathRefused, InsertBatch, on_conflict_statement
from .driver_errors import driver_error
from .types import NaiveUtcDateTime, is_naive_timestamp

COPY_MIN_ROWS = 8
"""Smaller batches use INSERT: starting a COPY costs more than a few single-row inserts."""

CONNECT_TIMEOUT = 10
"""Seconds to wait for a connection unless the URL or ``create_engine_kwargs`` say otherwise."""

BINARY_COPY_TYPES = frozenset({
    "int2", "int4", "int8", "float4", "float8", "numeric", "text", "varchar", "bool",
    "date", "time", "timestamp", "timestamptz", "bytea", "uuid",
})
"""Types whose binary COPY form psycopg writes from plain Python values (not json: it needs a
version byte; not bpchar: psycopg has no binary dumper for it)."""

_CLIENT_ERRORS = (TypeError, ValueError, AttributeError, OverflowError, ArithmeticError, struct.error)


@dataclass
class _CopyPlan:
    """How one column set of one table is copied; cached in ``table.info``."""

    statement: str
    binary_statement: str | None
    pg_types: list[str] | None
    row_values: Callable[[dict[str, Any]], Sequence[Any]]
    binary: bool = True


def insert_postgresql(conn: Connection, batch: InsertBatch) -> None:
    if batch.fast and batch.on_conflict == "error" and len(batch.rows) >= COPY_MIN_ROWS:
        copy_rows(conn, batch)
    else:
        conn.execute(on_conflict_statement(postgresql.insert, batch), batch.rows)


def copy_rows(conn: Connection, batch: InsertBatch) -> None:
    """COPY the batch into its table inside ``conn``'s transaction.

    Raises:
        FastPathRefused: the batch needs another path (see the module docstring).
        sqlalchemy.exc.DBAPIError: anything else the server or the connection said.
    """
    plan = _plan(conn, batch.table, batch.columns)
    binary = plan.binary and plan.binary_statement is not None
    statement = plan.binary_statement if binary else plan.statement
    raw: Any = conn.connection.driver_connection
    row_values = plan.row_values
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            if binary:
                copy.set_types(plan.pg_types)
            write = copy.write_row
            for row in batch.rows:
                write(row_values(row))
    except _CLIENT_ERRORS as exc:  # psycopg could not write a value in this format
        if binary:
            plan.binary = False
        raise FastPathRefused(f"COPY could not send a value: {exc}", retry_fast=binary) from exc
    except conn.dialect.loaded_dbapi.Error as exc:
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if _refused(exc, sqlstate, binary):
            if binary:
                plan.binary = False
            raise FastPathRefused(f"COPY refused the batch: {exc}", retry_fast=binary) from exc
        raise driver_error(conn, exc, statement) from exc


def _refused(exc: BaseException, sqlstate: str, binary: bool) -> bool:
    """True when plain INSERTs (or text COPY, after binary) might take what COPY did not."""
    if sqlstate.startswith("23") or sqlstate.startswith("08") or sqlstate.startswith("57"):
        return False  # integrity (same for INSERT), connection, shutdown: not about the format
    if not sqlstate:  # raised by psycopg itself: a value it cannot adapt, unless the link broke
        return type(exc).__name__ not in ("OperationalError", "InterfaceError")
    return binary or sqlstate.startswith("22") or sqlstate == "42804"


def _plan(conn: Connection, table: Table, columns: list[str]) -> _CopyPlan:
    plans: dict[tuple[str, ...], _CopyPlan] = table.info.setdefault("ferryman_copy_plans", {})
    plan = plans.get(tuple(columns))
    if plan is None:
        plan = plans[tuple(columns)] = _make_plan(conn, table, columns)
    return plan


def _make_plan(conn: Connection, table: Table, columns: list[str]) -> _CopyPlan:
    preparer = conn.dialect.identifier_preparer
    target = preparer.format_table(table)
    statement = f"COPY {target} ({', '.join(preparer.quote(c) for c in columns)}) FROM STDIN"
    pg_types = _column_types(conn, target, columns)
    binary = pg_types is not None and all(t in BINARY_COPY_TYPES for t in pg_types)
    processors = [table.c[c].type._cached_bind_processor(conn.dialect) for c in columns]
    return _CopyPlan(
        statement=statement,
        binary_statement=f"{statement} (FORMAT BINARY)" if binary else None,
        pg_types=pg_types,
        row_values=_row_values(columns, processors),
    )


def _column_types(conn: Connection, target: str, columns: list[str]) -> list[str] | None:
    """The server's type name of each column (``int8``, ``text``...), None if it cannot say."""
    query = (
        "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
    )
    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cursor:
        cursor.execute(query, (target,))
        types = dict(cursor.fetchall())
    if not all(c in types for c in columns):
        return None
    return [types[c] for c in columns]


def _row_values(columns: list[str], processors: list[Any]) -> Callable[[dict[str, Any]], Sequence[Any]]:
    """A fast function from a record to its COPY values, bind processors applied."""
    get: Callable[[dict[str, Any]], Any] = itemgetter(*columns)
    if len(columns) == 1:
        only = columns[0]
        get = lambda row: (row[only],)  # noqa: E731 - itemgetter of one key returns no tuple
    steps = [(i, p) for i, p in enumerate(processors) if p is not None]
    if not steps:
        return get

    def values(row: dict[str, Any]) -> Sequence[Any]:
        out = list(get(row))
        for i, process in steps:
            out[i] = process(out[i])
        return out

    return values


def insert_and_commit(conn: Connection, table: Table, values: dict[str, str]) -> bool:
    """INSERT a row of text ``values`` into ``table`` and COMMIT, in one round trip (one simple
    query with quoted literals) instead of two; False when not on psycopg (nothing was done).

    For the journal entry that ends every saved batch: a round trip fewer per batch.
    """
    raw: Any = conn.connection.driver_connection
    if conn.dialect.driver != "psycopg" or raw.autocommit or conn.get_execution_options().get("schema_translate_map"):
        return False
    from psycopg import sql

    template = table.info.get("ferryman_insert_and_commit")
    if template is None:
        preparer = conn.dialect.identifier_preparer
        names = ", ".join(preparer.quote(name) for name in values)
        slots = ", ".join("{}" for _ in values)
        template = table.info["ferryman_insert_and_commit"] = sql.SQL(
            f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES ({slots}); COMMIT")
    statement = template.format(*map(sql.Literal, values.values()))
    try:
        with raw.cursor() as cursor:
            cursor.execute(statement)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, exc, template.as_string(raw)) from exc
    return True


@contextmanager
def alone_in_autocommit(raw: Any, driver: str) -> Iterator[None]:
    """On psycopg, runs the block's one statement in autocommit, so with no BEGIN before it and
    no ROLLBACK after it: two round trips fewer. PostgreSQL gives a lone statement a transaction
    of its own, the same as BEGIN would, as long as the session asks for nothing that BEGIN would
    add (an isolation level, read only, deferrable): otherwise nothing changes.
    """
    switch = (
        driver == "psycopg"
        and not raw.autocommit
        and raw.isolation_level is None
        and raw.read_only is None
        and raw.deferrable is None
        and raw.info.transaction_status.name == "IDLE"
    )
    if switch:
        raw.autocommit = True
    try:
        yield
    finally:
        if switch and not raw.closed:
            raw.autocommit = False


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
