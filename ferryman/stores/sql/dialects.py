"""What differs per database besides inserting (``inserts.py``): reflected types, sessions, options,
and what may make a database drop a connection."""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import URL, Connection, Table

from ...types import Record
from . import mysql, postgres, sqlite

TableAdapter = Callable[[Table, Connection], None]

TABLE_ADAPTERS: dict[str, TableAdapter] = {
    "sqlite": sqlite.adapt_table,
    "postgresql": postgres.adapt_table,
    "mysql": mysql.adapt_table,
    "mariadb": mysql.adapt_table,
}
"""Per dialect: how a freshly reflected table's column types are made faithful (``types.py``)."""

SESSION_SETUP: dict[str, tuple[str, ...]] = {
    "mysql": mysql.SESSION_SETUP,
    "mariadb": mysql.SESSION_SETUP,
}
"""Per dialect: statements run on each new DBAPI connection of an engine ferryman builds."""

ENGINE_OPTIONS: dict[str, Callable[[URL, dict[str, Any]], dict[str, Any]]] = {
    "postgresql": postgres.engine_options,
}
"""Per dialect: ``create_engine`` defaults for a URL (the caller's options still win)."""


def adapt_reflected_table(table: Table, conn: Connection) -> None:
    adapter = TABLE_ADAPTERS.get(conn.dialect.name)
    if adapter is not None:
        adapter(table, conn)


UNKEPT_VALUES: dict[str, Callable[[list[Record]], tuple[Record, str, str] | None]] = {
    "sqlite": sqlite.unkept_value,
}
"""Per dialect: the first record with a value the database would change without a word instead
of keeping or refusing it (SQLite stores NaN as NULL), its field, and why."""


def unkept_value(dialect: str, rows: list[Record]) -> tuple[Record, str, str] | None:
    check = UNKEPT_VALUES.get(dialect)
    return None if check is None else check(rows)


DROP_EXPLAINERS: dict[str, Callable[[Connection, list[Record]], str]] = {
    "mysql": mysql.why_dropped,
    "mariadb": mysql.why_dropped,
}
"""Per dialect: asked on a new connection after a batch's connection was lost, what in the batch
may have made the database drop it ("" if nothing is known)."""


def why_dropped(conn: Connection, rows: list[Record]) -> str:
    """What in ``rows`` may have made the database drop a connection, or ""; asks the database
    (on ``conn``, a new connection), so it raises when the database does not answer."""
    explain = DROP_EXPLAINERS.get(conn.dialect.name)
    if explain is not None:
        return explain(conn, rows)
    conn.exec_driver_sql("SELECT 1")
    return ""
