"""PostgreSQL's fast path: a batch's ``COPY ... FROM STDIN`` and its journal entry as one query,
whose outcome is read later.

:func:`start_copy` sends ``COPY t (...) FROM STDIN; INSERT INTO ferryman_journal ...`` as one
simple query (one implicit transaction: both commit or neither does), streams the rows, ends the
COPY and returns without waiting: the server inserts and commits while the caller reads and
transforms the next page, on the same thread. :meth:`CopyInFlight.finish` then reads the outcome.
A batch costs one round trip (for the server's go-ahead to stream) and no thread: a writer thread
waiting on the server would fight the reading thread for the GIL at every row SQLite hands over.

COPY is only an accelerator, never a change in what is accepted:

* binary COPY first, when every column has a type whose binary form psycopg writes from plain
  Python values (numbers, text, bool, date/time, bytea, uuid). If a value does not fit (a str for
  a uuid column, a float for a numeric one), this column set switches to text COPY for good;
* text COPY then; if it refuses a batch for a value's format (SQLSTATE class 22, or psycopg
  cannot adapt a value), the whole batch is sent again as ``INSERT``, which accepts what
  SQLAlchemy's types accept (``batch.FastPathRefused``);
* a unique violation is a unique violation (SQLSTATE 23505 -> DuplicateDataError), whichever path
  found it. The engine then saves the batch in parts, and a lone record uses INSERT.

Values go through the columns' SQLAlchemy bind processors first (JSON to text, the UTC rule for
naive timestamp columns, ...), exactly as an INSERT would send them.

Only the documented low-level API of psycopg is used (``psycopg.pq``, ``psycopg.copy.Copy`` with
a custom ``Writer``), on a connection checked out for the batch: nothing else touches it until
:meth:`CopyInFlight.finish` has read every result.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table

from ...types import Record
from .batch import FastPathRefused
from .driver_errors import driver_error
from .postgres_link import COPY_IN, FATAL_ERROR, Link, plain_session, sends_sql_as_is

if TYPE_CHECKING:
    from .dialect import SqlDialect

COPY_MIN_ROWS = 8
"""Smaller batches use INSERT: starting a COPY costs more than a few single-row inserts."""

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

    @property
    def use_binary(self) -> bool:
        return self.binary and self.binary_statement is not None

    @property
    def copy_statement(self) -> str:
        """The COPY to send now: binary, unless this column set cannot (or no longer may)."""
        return self.binary_statement if self.binary and self.binary_statement is not None else self.statement


def can_stream(conn: Connection) -> bool:
    """True when ``conn`` can take :func:`start_copy`: psycopg, in a :func:`~.postgres_link.plain_session`."""
    return sends_sql_as_is(conn) and plain_session(conn.connection.driver_connection)


class CopyInFlight:
    """A batch sent by :func:`start_copy`; :meth:`finish` reads its outcome (once)."""

    def __init__(self, conn: Connection, plans: list[_CopyPlan], query: bytes, dialect: SqlDialect) -> None:
        self.conn = conn
        self._dialect = dialect
        self._plans = plans
        self._query = query
        raw: Any = conn.connection.driver_connection
        self._raw = raw
        self._link = Link(raw.pgconn)

    def finish(self) -> None:
        """Read the batch's outcome; the connection goes back to the pool.

        Raises:
            FastPathRefused: the batch must be sent again, in text COPY or as INSERTs.
            sqlalchemy.exc.DBAPIError: what the server or the connection said; nothing was
                committed unless the connection was lost (then the journal knows).
        """
        self._guarded(self._read_outcome)

    def _read_outcome(self) -> None:
        if self._link.lost is not None:
            raise self._link.lost
        self._check(self._link.results())

    def _send(self, groups: list[list[Record]]) -> None:
        link = self._link
        link.send(self._query)
        for plan, rows in zip(self._plans, groups):
            results = link.results(until_copy=True)
            if not results or results[-1].status != COPY_IN:
                self._check(results)  # the server refused the COPY
                from psycopg import InterfaceError

                raise InterfaceError(f"COPY did not start: {self._statement}")
            send_rows(self._raw, link, plan, rows)

    def _guarded(self, step: Callable[[], None], keep: bool = False) -> None:
        """Run ``step``, mapping driver errors; then release the connection unless ``keep``, and
        always on an error (invalidated unless the server is waiting for the next query)."""
        done = False
        try:
            try:
                step()
                done = True
            except _CLIENT_ERRORS as exc:  # psycopg could not write a value in this format
                raise self._refusal("could not send a value", exc) from exc
            except self.conn.dialect.loaded_dbapi.Error as exc:
                if _refused(exc, any(p.use_binary for p in self._plans), self._dialect):
                    raise self._refusal("refused the batch", exc) from exc
                raise driver_error(self.conn, exc, self._statement) from exc
        finally:
            if not (done and keep):
                if not done and self.conn.connection.dbapi_connection is not None and not self._link.idle:
                    self.conn.invalidate()  # left half-way: no one else may use it
                self.conn.close()

    @property
    def _statement(self) -> str:
        """The query as text, for error reports."""
        return self._query.decode(self._raw.info.encoding, "replace")

    def _check(self, results: list[Any]) -> None:
        """Raise the server's error, if one of the results is one."""
        from psycopg.errors import error_from_result

        for result in results:
            if result.status == FATAL_ERROR:
                raise error_from_result(result, encoding=self._raw.info.encoding)

    def _refusal(self, what: str, exc: BaseException) -> FastPathRefused:
        """Binary COPY is given up for these column sets; text COPY is tried next if it was binary."""
        binary = any(p.use_binary for p in self._plans)
        for plan in self._plans:
            plan.binary = False
        return FastPathRefused(f"COPY {what}: {exc}", retry_fast=binary)


def start_copy(conn: Connection, table: Table, groups: list[list[Record]],
               journal: bytes | None, dialect: SqlDialect) -> CopyInFlight:
    """Send ``groups`` (rows of one field set each) with a COPY each, then the ``journal``
    statement if any, all as one query. ``conn`` is the batch's own: it is closed by
    :meth:`CopyInFlight.finish`, or here when this raises. ``dialect`` tells the server's errors
    apart.

    Raises:
        FastPathRefused: the batch must be sent again, in text COPY or as INSERTs.
        sqlalchemy.exc.DBAPIError: the server or the connection failed; nothing was committed
            unless the connection was lost after the rows were sent.
    """
    raw: Any = conn.connection.driver_connection
    try:
        plans = [_plan(conn, table, list(rows[0])) for rows in groups]
    except conn.dialect.loaded_dbapi.Error as exc:  # the table is gone, the connection lost...
        error = driver_error(conn, exc, "COPY")
        conn.close()
        raise error from exc
    except BaseException:
        conn.close()
        raise
    statements = [p.copy_statement.encode(raw.info.encoding) for p in plans]
    flight = CopyInFlight(conn, plans, b"; ".join([*statements, journal] if journal else statements), dialect)
    flight._guarded(lambda: flight._send(groups), keep=True)
    return flight


def send_rows(raw: Any, link: Link, plan: _CopyPlan, rows: list[Record]) -> None:
    """Stream one COPY's rows and end it (with an error, which the server reports, if a row
    could not be written)."""
    from psycopg import Copy

    with raw.cursor() as cursor, Copy(cursor, binary=plan.use_binary, writer=link.copy_writer()) as copy:
        if plan.use_binary and plan.pg_types is not None:
            copy.set_types(plan.pg_types)
        write, row_values = copy.write_row, plan.row_values
        for row in rows:
            write(row_values(row))


def _refused(exc: BaseException, binary: bool, dialect: SqlDialect) -> bool:
    """True when plain INSERTs (or text COPY, after binary) might take what COPY did not."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate.startswith(("23", "57")) or dialect.driver_kind(exc) not in (None, "terminal"):
        return False  # integrity (same for INSERT), cancelled, the connection, the table: not the format
    if not sqlstate:  # raised by psycopg itself: a value it cannot adapt
        return True
    return binary or sqlstate.startswith("22") or sqlstate == "42804"


# --- plans ------------------------------------------------------------------------------------


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
    if raw.info.transaction_status.name != "IDLE":
        raw.rollback()  # a read; the batch's query must start with no transaction open
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
