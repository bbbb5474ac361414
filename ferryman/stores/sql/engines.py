"""Engines built from URLs: sensible options, and one engine per database in a process.

A migration often declares many stores on one database; sharing one engine gives them one
connection pool instead of one each. Engines are counted by their users and disposed when the
last store using them closes, so short-lived stores (tests) do not leak connections or files.
Engines passed in by the caller are never cached or disposed here, nor given the per-dialect
session setup (``dialects.SESSION_SETUP``: UTC sessions on MySQL) and defaults (a connect timeout
on PostgreSQL) that engines built here get.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Mapping

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.pool import StaticPool

from .dialects import ENGINE_OPTIONS, SESSION_SETUP

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another one's lock before "database is locked"."""


@dataclass
class _Shared:
    engine: Engine
    users: int = 0


_lock = threading.Lock()
_shared: dict[str, _Shared] = {}


def acquire_engine(url: str | URL, options: Mapping[str, Any] | None = None) -> Engine:
    """The process's engine for ``url`` (and these ``create_engine`` options); creates it once.

    Every call must be paired with :func:`release_engine`. Creating an engine does not connect.
    """
    url = make_url(url)
    cache_key = url.render_as_string(hide_password=False) + repr(sorted((options or {}).items()))
    with _lock:
        shared = _shared.get(cache_key)
        if shared is None:
            shared = _shared[cache_key] = _Shared(_create(url, options or {}))
        shared.users += 1
        return shared.engine


def release_engine(engine: Engine) -> None:
    """Give back an engine from :func:`acquire_engine`; the last user disposes of it."""
    with _lock:
        for cache_key, shared in _shared.items():
            if shared.engine is engine:
                shared.users -= 1
                if shared.users == 0:
                    del _shared[cache_key]
                    engine.dispose()
                return


def _create(url: URL, options: Mapping[str, Any]) -> Engine:
    backend = url.get_backend_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "sqlite" and _is_sqlite_memory(url):
        # One connection for everyone: with a pool, each connection would get its own empty
        # database. Fine for tests and demos; use a file when several threads write.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    defaults = ENGINE_OPTIONS.get(backend)
    if defaults is not None:
        kwargs.update(defaults(url, dict(options)))  # merges the caller's connect_args
        options = {k: v for k, v in options.items() if k != "connect_args"}
    kwargs.update(options)
    engine = create_engine(url, **kwargs)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(file=not _is_sqlite_memory(url)))
    setup = SESSION_SETUP.get(backend)
    if setup is not None:
        event.listen(engine, "connect", lambda dbapi_connection, record: setup(dbapi_connection))
    return engine


def _is_sqlite_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _sqlite_pragmas(file: bool) -> Any:
    """A connect listener: WAL lets readers run beside a writer; NORMAL sync is safe with WAL."""
    pragmas = [f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}", "PRAGMA foreign_keys = ON"]
    if file:
        pragmas += ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL"]

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    return on_connect
