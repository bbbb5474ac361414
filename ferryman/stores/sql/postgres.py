"""PostgreSQL through psycopg 3: what differs from the other databases, besides COPY
(``postgres_copy.py``, which saves plain batches)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from sqlalchemy import URL, Connection, Table
from sqlalchemy.dialects import postgresql

from .batch import InsertBatch, on_conflict_statement
from .driver_errors import driver_error
from .types import NaiveUtcDateTime, is_naive_timestamp

CONNECT_TIMEOUT = 10
"""Seconds to wait for a connection unless the URL or ``create_engine_kwargs`` say otherwise."""


def insert_postgresql(conn: Connection, batch: InsertBatch) -> None:
    """INSERT (or upsert) inside the caller's transaction; plain batches mostly go by COPY."""
    conn.execute(on_conflict_statement(postgresql.insert, batch), batch.rows)


def journal_insert(conn: Connection, table: Table, values: dict[str, str]) -> bytes:
    """``INSERT INTO table (...) VALUES (...)`` with ``values`` as literals quoted by libpq, to
    send in one query with other statements."""
    raw: Any = conn.connection.driver_connection
    encoding = raw.info.encoding
    prefix = table.info.get("ferryman_journal_insert")
    if prefix is None:
        preparer = conn.dialect.identifier_preparer
        names = ", ".join(preparer.quote(name) for name in values)
        prefix = table.info["ferryman_journal_insert"] = f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES ("
    from psycopg.pq import Escaping

    escape = Escaping(raw.pgconn).escape_literal
    literals = b", ".join(escape(value.encode(encoding)) for value in values.values())
    return prefix.encode(encoding) + literals + b")"


def insert_and_commit(conn: Connection, table: Table, values: dict[str, str]) -> bool:
    """INSERT a row of text ``values`` into ``table`` and COMMIT, in one round trip (one simple
    query) instead of two; False when not on psycopg (nothing was done).

    For the journal entry that ends a batch saved by INSERT: a round trip fewer per batch.
    """
    raw: Any = conn.connection.driver_connection
    if not sends_sql_as_is(conn) or raw.autocommit:
        return False
    statement = journal_insert(conn, table, values) + b"; COMMIT"
    try:
        with raw.cursor() as cursor:
            cursor.execute(statement)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, exc, statement.decode(raw.info.encoding)) from exc
    return True


def sends_sql_as_is(conn: Connection) -> bool:
    """True when SQL written here can go to ``conn``'s driver as it is: psycopg, and no schema
    translation (SQLAlchemy applies that when it executes, not to raw SQL)."""
    return conn.dialect.driver == "psycopg" and not conn.get_execution_options().get("schema_translate_map")


def plain_session(raw: Any) -> bool:
    """True when the psycopg connection is idle and asks nothing of a BEGIN (an isolation level,
    read only, deferrable): then a statement's implicit transaction is what BEGIN would open."""
    return (
        raw.isolation_level is None and raw.read_only is None and raw.deferrable is None
        and raw.info.transaction_status.name == "IDLE"
    )


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
