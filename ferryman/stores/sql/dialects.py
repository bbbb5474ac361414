"""What differs per database besides inserting (``inserts.py``): reflected types, sessions, options."""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import URL, Connection, Table

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
