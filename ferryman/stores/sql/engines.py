"""Engines built from URLs: sensible options, and one engine per database in a process.

A migration often declares many stores on one database; sharing one engine gives them one
connection pool instead of one each. Engines are counted by their users and disposed when the
last store using them closes, so short-lived stores (tests) do not leak connections or files.
Engines passed in by the caller are never cached or disposed here, nor given what the dialect
object gives engines built here (``SqlDialect.engine_kwargs``, ``connect_statements``,
``write_statements``: a connect timeout on PostgreSQL, UTC sessions on MySQL, SQLite's pragmas).

A store that is only read is never changed: SQLite's WAL mode is written into the database file
(and a WAL database grows -wal and -shm files beside it whenever it is open), so it is switched
on by :func:`prepare_to_write`, before a connection's first write, and never by a connection
that only reads. Read-only URLs (``?mode=ro&uri=true``, ``?immutable=1&uri=true``) work as they
are.
"""

from __future__ import annotations

import logging
import select
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy import exc as sa_exc

from .dialects import dialect_for
from .driver_errors import driver_error

MAX_UNCHECKED_IDLE = 1.0
"""Seconds a pooled server connection may have been idle and be handed out without a ping,
when its socket shows no sign of the server having closed it (see ``_ping_when_in_doubt``)."""

_RETURNED_AT = "ferryman_returned_at"
_READY_TO_WRITE = "ferryman_ready_to_write"

_write_setup: weakref.WeakKeyDictionary[Engine, Sequence[str]] = weakref.WeakKeyDictionary()
"""Engines built here whose connections run statements before their first write."""


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
    dialect = dialect_for(url.get_backend_name())
    engine = create_engine(url, **dialect.engine_kwargs(url, options))
    _quiet_cleanup(engine)
    connect = dialect.connect_statements(url)
    if connect:
        event.listen(engine, "connect", _run_on_connect(connect))
    write = dialect.write_statements(url)
    if write:
        _write_setup[engine] = write
    if dialect.pings_pooled and "pool_pre_ping" not in options:
        _ping_when_in_doubt(engine)
    return engine


class _CleanupAfterAnError(logging.Filter):
    """Demotes to DEBUG what psycopg and SQLAlchemy's pool log when cleaning up after an error
    that is raised anyway, and that ferryman handles and reports itself (a failed record's
    batch split in halves, a connection lost and replaced): psycopg's "error ignored terminating
    <Pipeline>: pipeline aborted", once per failed ``executemany``; the pool's "Exception during
    reset or similar" with a traceback, when a connection the server killed is given back (the
    pool discards it). With no logging set up, Python prints either on stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "error ignored terminating %r: %s" or (
                record.msg == "Exception during reset or similar" and record.exc_info
                and type(record.exc_info[1]).__name__ in ("OperationalError", "InterfaceError")):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_CLEANUP_FILTER = _CleanupAfterAnError()


def _quiet_cleanup(engine: Engine) -> None:
    """:class:`_CleanupAfterAnError` on the loggers of psycopg and of the engine's pool (a
    logger's filter applies to what it logs itself, not to its children's records)."""
    pool_logger: Any = engine.pool.logger  # a Logger, or SQLAlchemy's InstanceLogger around one (echo_pool)
    for logger in (logging.getLogger("psycopg"), getattr(pool_logger, "logger", pool_logger)):
        logger.addFilter(_CLEANUP_FILTER)  # once: addFilter ignores a filter it has


def _ping_when_in_doubt(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, without its round trip where it cannot find anything.

    A migration hands each pooled connection out again within milliseconds, so most pings test a
    connection that worked a moment ago. A server that ends a connection meanwhile (a kill, a
    restart, an idle timeout) closes its socket, which shows at once as input on our end; only
    then, or when the connection has been idle for :data:`MAX_UNCHECKED_IDLE` seconds (a silently
    dropped connection shows nothing), is it pinged, and replaced if dead as pre-ping would.
    """
    dialect = engine.dialect

    def on_checkin(dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is None:
            return  # just connected: pre-ping skips it too
        if time.monotonic() - returned_at < MAX_UNCHECKED_IDLE and not _has_input(dbapi_connection):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise sa_exc.InvalidatePoolError() from exc  # the pool reconnects, as after pre-ping
            raise

    event.listen(engine, "checkin", on_checkin)
    event.listen(engine, "checkout", on_checkout)


def _has_input(dbapi_connection: Any) -> bool:
    """True when an idle connection's socket has something to read (or cannot be checked)."""
    try:
        sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL's socket; psycopg has fileno()
        fd = sock.fileno() if sock is not None else dbapi_connection.fileno()
        if fd < 0:
            return True
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLPRI)
            return bool(poller.poll(0))
        return bool(select.select([fd], [], [], 0)[0])
    except Exception:  # noqa: BLE001 - closed, or a driver without a socket we know: ping
        return True


def prepare_to_write(conn: Connection) -> None:
    """Run the engine's write setup (``SqlDialect.write_statements``: SQLite's WAL) on ``conn``'s
    DBAPI connection before its first write; once per DBAPI connection, and before any
    transaction is open on it (SQLite cannot switch to WAL inside one)."""
    statements = _write_setup.get(conn.engine)
    if statements is None:
        return
    info = conn.connection.info
    if info.get(_READY_TO_WRITE):
        return
    raw: Any = conn.connection.driver_connection
    cursor = raw.cursor()
    try:
        for statement in statements:
            try:
                cursor.execute(statement)
            except conn.dialect.loaded_dbapi.Error as exc:  # e.g. a read-only database
                raise driver_error(conn, exc, statement) from exc
    finally:
        cursor.close()
    info[_READY_TO_WRITE] = True


def _run_on_connect(statements: Sequence[str]) -> Any:
    """A connect listener running ``statements`` on each new DBAPI connection."""

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()

    return on_connect
