"""Where a SQL store's data lives, as one string: the dataset a plan orders migrations by.

Two stores are the same data when they reach the same table of the same database, whatever
their names, drivers, credentials or spelling of the URL: ``postgresql+psycopg://u:pw@LocalHost/db``
and ``postgresql://other@127.0.0.1:5432/db`` are one server. What cannot be told from the URL
(a DNS alias, a replica) can be said with ``SqlStore(..., dataset="...")``.
"""

from __future__ import annotations

import os

from sqlalchemy import URL

_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433, "oracle": 1521}
_DEFAULT_SCHEMAS = {"postgresql": "public", "mssql": "dbo"}
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]", ""}


def sql_dataset(url: URL, schema: str | None, table: str) -> str:
    """``family://host:port/database/schema.table`` (``sqlite:///real/path#table`` for SQLite)."""
    family = url.get_backend_name()
    if family == "mariadb":
        family = "mysql"
    if family == "sqlite":
        path = sqlite_file(url)
        if path is None:
            return f"sqlite:memory:{id(url)}#{table}"
        return f"sqlite://{os.path.realpath(path)}#{schema + '.' if schema else ''}{table}"
    host = (url.host or "").lower()
    host = "127.0.0.1" if host in _LOOPBACK else host
    port = url.port or _DEFAULT_PORTS.get(family, 0)
    database = url.database or ""
    owner = schema or _DEFAULT_SCHEMAS.get(family, database)
    return f"{family}://{host}:{port}/{database}/{owner}.{table}"


def sqlite_file(url: URL) -> str | None:
    """The file a SQLite URL names (``sqlite:///x.db``, ``sqlite:///file:x.db?mode=ro&uri=true``);
    None for an in-memory database."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return None
    return database[len("file:"):].split("?", 1)[0] if database.startswith("file:") else database
