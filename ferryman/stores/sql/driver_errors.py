"""Driver errors become ferryman errors here, and only here (STYLE habit 10).

The kind of error decides what a migration does next: a duplicate goes to ``handle_duplicate``,
a transient error is retried, a terminal one fails the record. So the mapping is deliberately
narrow: only a unique/primary-key violation is a duplicate (mjg's adapter also called NOT NULL and
foreign-key violations duplicates), and only connection-level trouble, locks and deadlocks are
transient. Everything else is terminal.

DuplicateDataError (a unique or primary-key violation, and nothing else):

* SQLite: IntegrityError whose message starts "UNIQUE constraint failed" or "PRIMARY KEY"
* PostgreSQL: sqlstate 23505
* MySQL/MariaDB: errno 1062 or 1586

TransientStoreError:

* any dialect: SQLAlchemy saw a disconnect (``connection_invalidated``), DisconnectionError,
  a pool TimeoutError
* SQLite: "database is locked", "database table is locked"
* PostgreSQL: no sqlstate (the server never answered: refused, unreachable, timed out) unless
  the server turned us away (role or database missing, authentication); class 08; 40001,
  40P01, 55P03, 53300, 57P01-57P03
* MySQL/MariaDB: errno 1040 (too many connections), 1053 (server shutting down), 1158-1161
  (network read/write), 1205 (lock wait timeout), 1213 (deadlock), 1317 (query interrupted),
  1927 (connection killed), 2002, 2003 (cannot connect), 2006 (server gone), 2013 (connection
  lost), 2055, 4031 (disconnected by the server)

TerminalStoreError: everything else, e.g. NOT NULL / foreign-key / CHECK violations,
ProgrammingError, NoSuchTableError, access denied, unknown database.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from ...errors import DuplicateDataError, TerminalStoreError, TransientStoreError

Kind = Literal["duplicate", "transient", "terminal"]

_PG_TRANSIENT = {"40001", "40P01", "55P03", "53300", "57P01", "57P02", "57P03"}
_PG_REFUSED = ("does not exist", "authentication failed", "no pg_hba.conf entry", "permission denied")
_MYSQL_DUPLICATE = {1062, 1586}
_MYSQL_TRANSIENT = {1040, 1053, 1158, 1159, 1160, 1161, 1205, 1213, 1317, 1927, 2002, 2003, 2006, 2013, 2055, 4031}


def classify(error: BaseException, dialect: str) -> Kind:
    """What kind of failure ``error`` (raised by SQLAlchemy on ``dialect``) is."""
    if isinstance(error, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return "transient"
    if not isinstance(error, sa_exc.DBAPIError):
        return "terminal"
    if error.connection_invalidated:
        return "transient"
    by_dialect = _BY_DIALECT.get(dialect)
    if by_dialect is None or error.orig is None:
        return "terminal"
    return by_dialect(error.orig) or "terminal"


def _sqlite(orig: BaseException) -> Kind | None:
    message = str(orig)
    if message.startswith(("UNIQUE constraint failed", "PRIMARY KEY")):
        return "duplicate"
    if message.startswith(("database is locked", "database table is locked")):
        return "transient"
    return None


def _postgresql(orig: BaseException) -> Kind | None:
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate == "23505":
        return "duplicate"
    if sqlstate is None:
        refused = any(marker in str(orig) for marker in _PG_REFUSED)
        return None if refused else "transient"
    if sqlstate.startswith("08") or sqlstate in _PG_TRANSIENT:
        return "transient"
    return None


def _mysql(orig: BaseException) -> Kind | None:
    errno = orig.args[0] if orig.args else None
    if errno in _MYSQL_DUPLICATE:
        return "duplicate"
    if errno in _MYSQL_TRANSIENT:
        return "transient"
    return None


_BY_DIALECT: dict[str, Callable[[BaseException], Kind | None]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "mysql": _mysql,
    "mariadb": _mysql,
}


@contextmanager
def map_errors(
    label: str,
    dialect: str,
    explain_duplicate: Callable[[], tuple[str, list[Any]]] | None = None,
) -> Iterator[None]:
    """Turn SQLAlchemy errors raised inside the block into ferryman store errors.

    Args:
        label: names the store in every message, e.g. ``store 'x' (sqlite:///x.db, table x)``.
        dialect: the engine's dialect name, which selects the driver-specific tests.
        explain_duplicate: called after a duplicate; returns the clashing key as text (e.g.
            ``(id)=(3)``, or ``""`` if unknown) and the records involved.

    The driver's error (``sqlite3.IntegrityError``, ``psycopg.errors.UniqueViolation``, ...) is
    the ``__cause__``.
    """
    try:
        yield
    except sa_exc.SQLAlchemyError as error:
        kind = classify(error, dialect)
        detail = _detail(error)
        # The driver's own exception (CONTRACT §2); SQLAlchemy's wrapper stays as __context__.
        cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
        if kind == "duplicate":
            what, records = explain_duplicate() if explain_duplicate else ("", [])
            key = f"duplicate key {what}" if what else "duplicate key"
            raise DuplicateDataError(f"{label}: {key}: {detail}", records) from cause
        error_class = TransientStoreError if kind == "transient" else TerminalStoreError
        raise error_class(f"{label}: {detail}") from cause


def _detail(error: sa_exc.SQLAlchemyError) -> str:
    """The driver's own message on one line, without SQLAlchemy's SQL and parameters."""
    if isinstance(error, sa_exc.NoSuchTableError):
        text = f"table {str(error)!r} does not exist"
    elif isinstance(error, sa_exc.StatementError) and error.orig is not None:
        text = _driver_message(error.orig)
    else:
        text = str(error)
    return " ".join(text.split())


def _driver_message(orig: BaseException) -> str:
    # PyMySQL's str() is the repr of (errno, message); show it as "(1062) Duplicate entry ...".
    if len(orig.args) == 2 and isinstance(orig.args[0], int):
        return f"({orig.args[0]}) {orig.args[1]}"
    return str(orig)


def driver_error(conn: Connection, exc: BaseException, statement: str) -> sa_exc.DBAPIError:
    """A driver error from work done on ``conn``'s DBAPI connection, wrapped as SQLAlchemy wraps
    the errors of ``conn.execute`` (so :func:`map_errors` sees the same); a dead connection is
    invalidated first, so the pool replaces it."""
    invalidated = conn.dialect.is_disconnect(exc, conn.connection.driver_connection, None)  # type: ignore[arg-type]
    if invalidated:
        conn.invalidate(exc)
    return sa_exc.DBAPIError.instance(  # type: ignore[return-value]
        statement, None, exc, conn.dialect.loaded_dbapi.Error,  # type: ignore[arg-type]
        hide_parameters=True, connection_invalidated=invalidated, dialect=conn.dialect,
    )
