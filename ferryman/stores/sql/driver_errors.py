"""Driver errors become ferryman errors here, and only here.

The kind of error decides what a migration does next, so the mapping is narrow and each kind
has one answer:

* ``duplicate`` -> :class:`DuplicateDataError`: ``handle_duplicate``, or the record fails.
* ``unusable`` -> :class:`StoreUnusableError`: the store itself cannot be used (a missing table,
  column or schema, no permission, a read-only database, a refused login). No record could
  succeed, so the migration ends with one fatal error; no batch is split for it.
* ``lost`` -> the connection broke or could not be made. Mostly an outage (the server is down or
  restarting, a connection was killed): :class:`TransientStoreError`, the engine retries later.
  But a database may also drop a connection over what it was sent (MariaDB/MySQL close it on a
  statement larger than ``max_allowed_packet``). So when a *save* loses its connection, the
  store asks the database a cheap question on a new connection (``map_errors``' ``on_lost``):
  no answer means an outage (:class:`TransientStoreError`, the records are retried later, no
  split); an answer means the batch is the suspect (:class:`ConnectionDroppedError`): the engine
  splits it until the record that makes the database hang up stands alone. A batch whose commit
  outcome is unknown is never split: the store raises a plain TransientStoreError for it, and
  its retry asks the journal first (``SqlStore._committed_before``).
* ``transient`` -> :class:`TransientStoreError`: the database is busy (a deadlock, a lock
  timeout, too many connections); a retry can succeed.
* ``terminal`` -> :class:`TerminalStoreError`: everything else, about the values of some record:
  NOT NULL, foreign key, CHECK, a bad value; also an error the driver raises before or while
  sending (psycopg refuses a str with a NUL byte; a str that cannot be encoded). The engine
  splits the batch so that only the records at fault fail.

DuplicateDataError (a unique or primary-key violation, and nothing else; mjg's adapter also
called NOT NULL and foreign-key violations duplicates):

* SQLite: IntegrityError whose message starts "UNIQUE constraint failed" or "PRIMARY KEY"
* PostgreSQL: sqlstate 23505
* MySQL/MariaDB: errno 1062 or 1586

StoreUnusableError:

* any dialect: the table does not exist when reflected (NoSuchTableError)
* SQLite: "no such table", "no such column", "has no column named", "attempt to write a
  readonly database", "unable to open database file"
* PostgreSQL: sqlstate 42P01, 42703, 3F000 (no such table, column, schema), 42501 (permission
  denied), 25006 (read-only transaction); no sqlstate and turned away at login (no such role or
  database, authentication failed)
* MySQL/MariaDB: errno 1146, 1054 (no such table, column), 1142, 1143, 1044, 1045, 1698 (denied),
  1049 (no such database), 1290, 1036 (read only)

lost (TransientStoreError, or ConnectionDroppedError when a save's database still answers):

* any dialect: SQLAlchemy saw a disconnect (``connection_invalidated``), DisconnectionError
* PostgreSQL: no sqlstate and an OperationalError or InterfaceError (refused, unreachable,
  timed out, closed); class 08; 57P01-57P03 (shutting down, restarting)
* MySQL/MariaDB: errno 1053 (server shutting down), 1158-1161 (network read/write), 1927
  (connection killed), 2002, 2003 (cannot connect), 2006 (server gone), 2013 (connection lost),
  2055, 4031 (disconnected by the server)

What the database says about the constraint a record broke becomes the error's ``constraint``,
``columns`` (and, for a duplicate, ``values``), by :func:`constraint_details`:

* PostgreSQL: the error's ``diag`` (constraint name, column name) and its DETAIL,
  ``Key (a, b)=(1, x) already exists`` / ``... is not present in table ...``
* MySQL/MariaDB: ``Duplicate entry 'x' for key 'k'`` (1062; the key's columns from the reflected
  table), ``Column 'a' cannot be null`` (1048), ``Field 'a' doesn't have a default value``
  (1364), ``... CONSTRAINT `fk` FOREIGN KEY (`a`) ...`` (1452), ``CONSTRAINT `c` failed``
  (4025), ``Check constraint 'c' is violated`` (3819)
* SQLite: ``UNIQUE constraint failed: t.a, t.b``, ``NOT NULL constraint failed: t.a``, ``CHECK
  constraint failed: c`` (SQLite names no unique constraint, no value and nothing of a foreign key)

transient (TransientStoreError):

* any dialect: a pool TimeoutError
* SQLite: "database is locked", "database table is locked"
* PostgreSQL: 40001, 40P01, 55P03, 53300
* MySQL/MariaDB: errno 1040 (too many connections), 1205 (lock wait timeout), 1213 (deadlock),
  1317 (query interrupted)
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from ...errors import (
    ConnectionDroppedError, DuplicateDataError, StoreUnusableError, TerminalStoreError, TransientStoreError,
)

Kind = Literal["duplicate", "unusable", "lost", "transient", "terminal"]

_PG_UNUSABLE = {"42P01", "42703", "3F000", "42501", "25006"}
_PG_LOST = {"57P01", "57P02", "57P03"}
_PG_BUSY = {"40001", "40P01", "55P03", "53300"}
_PG_REFUSED = ("does not exist", "authentication failed", "no pg_hba.conf entry", "permission denied")
_CONNECTION_ERRORS = frozenset({"OperationalError", "InterfaceError"})
"""DBAPI error classes that mean the connection failed, not a value (psycopg raises DataError,
ProgrammingError, ... for a value it refuses before sending it)."""
_SQLITE_UNUSABLE = ("no such table", "no such column", "attempt to write a readonly database",
                    "unable to open database file")
_MYSQL_DUPLICATE = {1062, 1586}
_MYSQL_UNUSABLE = {1036, 1044, 1045, 1049, 1054, 1142, 1143, 1146, 1290, 1698}
_MYSQL_LOST = {1053, 1158, 1159, 1160, 1161, 1927, 2002, 2003, 2006, 2013, 2055, 4031}
_MYSQL_BUSY = {1040, 1205, 1213, 1317}


def classify(error: BaseException, dialect: str) -> Kind:
    """What kind of failure ``error`` (raised by SQLAlchemy on ``dialect``) is."""
    if isinstance(error, sa_exc.NoSuchTableError):
        return "unusable"
    if isinstance(error, sa_exc.DisconnectionError):
        return "lost"
    if isinstance(error, sa_exc.TimeoutError):
        return "transient"
    if not isinstance(error, sa_exc.DBAPIError):
        return "terminal"
    if error.connection_invalidated:
        return "lost"
    if error.orig is None:
        return "terminal"
    return driver_kind(error.orig, dialect)


def driver_kind(orig: BaseException, dialect: str) -> Kind:
    """What kind of failure the driver's own error ``orig`` is, on ``dialect``."""
    by_dialect = _BY_DIALECT.get(dialect)
    return (by_dialect(orig) if by_dialect is not None else None) or "terminal"


def _sqlite(orig: BaseException) -> Kind | None:
    message = str(orig)
    if message.startswith(("UNIQUE constraint failed", "PRIMARY KEY")):
        return "duplicate"
    if message.startswith(("database is locked", "database table is locked")):
        return "transient"
    if message.startswith(_SQLITE_UNUSABLE) or " has no column named " in message:
        return "unusable"
    return None


def _postgresql(orig: BaseException) -> Kind | None:
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate == "23505":
        return "duplicate"
    if sqlstate is None:
        if any(marker in str(orig) for marker in _PG_REFUSED):
            return "unusable"  # turned away at login
        return "lost" if _is_connection_error(orig) else None
    if sqlstate in _PG_UNUSABLE:
        return "unusable"
    if sqlstate.startswith("08") or sqlstate in _PG_LOST:
        return "lost"
    if sqlstate in _PG_BUSY:
        return "transient"
    return None


def _mysql(orig: BaseException) -> Kind | None:
    errno = orig.args[0] if orig.args else None
    if errno in _MYSQL_DUPLICATE:
        return "duplicate"
    if errno in _MYSQL_UNUSABLE:
        return "unusable"
    if errno in _MYSQL_LOST:
        return "lost"
    if errno in _MYSQL_BUSY:
        return "transient"
    return None


def _is_connection_error(orig: BaseException) -> bool:
    return any(cls.__name__ in _CONNECTION_ERRORS for cls in type(orig).__mro__)


_BY_DIALECT: dict[str, Callable[[BaseException], Kind | None]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "mysql": _mysql,
    "mariadb": _mysql,
}


@dataclass(frozen=True)
class ConstraintDetails:
    """What the database said about the constraint a record broke (nothing: None and ``()``)."""

    constraint: str | None = None
    columns: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    """The duplicate values as the database printed them, one per column (duplicates only)."""


_PG_KEY = re.compile(r'Key \((?P<columns>.*)\)=\((?P<values>.*)\) (?:already exists|is not present)', re.S)
_MYSQL_PATTERNS = {
    1062: re.compile(r"Duplicate entry '(?P<values>.*)' for key '(?P<constraint>[^']*)'", re.S),
    1048: re.compile(r"Column '(?P<columns>[^']*)' cannot be null"),
    1364: re.compile(r"Field '(?P<columns>[^']*)' doesn't have a default value"),
    1452: re.compile(r"CONSTRAINT `(?P<constraint>[^`]*)` FOREIGN KEY \((?P<columns>[^)]*)\)"),
    4025: re.compile(r"CONSTRAINT `(?P<constraint>[^`]*)` failed"),
    3819: re.compile(r"Check constraint '(?P<constraint>[^']*)' is violated"),
}
_SQLITE_COLUMNS = re.compile(r"^(?:UNIQUE|NOT NULL) constraint failed: (?P<columns>.+)$")
_SQLITE_CHECK = re.compile(r"^CHECK constraint failed: (?P<constraint>.+)$")


def constraint_details(orig: BaseException | None, dialect: str,
                       constraint_columns: Callable[[str], tuple[str, ...]] | None = None) -> ConstraintDetails:
    """The constraint, columns and values the driver's error ``orig`` names on ``dialect``;
    ``constraint_columns`` gives a named constraint's columns where the error names none."""
    if orig is None:
        return ConstraintDetails()
    if dialect == "postgresql":
        details = _postgresql_details(orig)
    elif dialect in ("mysql", "mariadb"):
        details = _mysql_details(orig)
    elif dialect == "sqlite":
        details = _sqlite_details(str(orig))
    else:
        return ConstraintDetails()
    if details.constraint and not details.columns and constraint_columns is not None:
        columns = constraint_columns(details.constraint)
        values = details.values
        if len(values) == 1 and len(columns) > 1:  # MySQL joins a composite entry with '-'
            parts = tuple(values[0].split("-"))
            values = parts if len(parts) == len(columns) else ()
        return ConstraintDetails(details.constraint, columns, values)
    return details


def _postgresql_details(orig: BaseException) -> ConstraintDetails:
    diag = getattr(orig, "diag", None)
    if diag is None:
        return ConstraintDetails()
    column = getattr(diag, "column_name", None)
    found = _PG_KEY.search(getattr(diag, "message_detail", None) or "")
    columns: tuple[str, ...] = (column,) if column else ()
    values: tuple[str, ...] = ()
    if found is not None:
        columns = tuple(c.strip().strip('"') for c in found["columns"].split(", "))
        parts = tuple(found["values"].split(", "))
        values = parts if len(parts) == len(columns) else ()  # a value with ", " in it: unknown
    return ConstraintDetails(getattr(diag, "constraint_name", None), columns, values)


def _mysql_details(orig: BaseException) -> ConstraintDetails:
    errno, message = (orig.args[0], str(orig.args[1])) if len(orig.args) == 2 else (None, "")
    pattern = _MYSQL_PATTERNS.get(errno) if isinstance(errno, int) else None
    found = pattern.search(message) if pattern is not None else None
    if found is None:
        return ConstraintDetails()
    named = found.groupdict()
    constraint = named.get("constraint")
    if errno == 1062 and constraint is not None:
        constraint = constraint.rsplit(".", 1)[-1]  # MySQL 8 says 'table.key'
    columns = tuple(c.strip().strip("`") for c in named["columns"].split(",")) if named.get("columns") else ()
    values = (named["values"],) if named.get("values") is not None else ()
    return ConstraintDetails(constraint, columns, values)


def _sqlite_details(message: str) -> ConstraintDetails:
    found = _SQLITE_COLUMNS.match(message)
    if found is not None:
        return ConstraintDetails(None, tuple(c.strip().rsplit(".", 1)[-1] for c in found["columns"].split(",")))
    found = _SQLITE_CHECK.match(message)
    return ConstraintDetails(found["constraint"]) if found is not None else ConstraintDetails()


@contextmanager
def map_errors(
    label: str,
    dialect: str,
    explain_duplicate: Callable[[], tuple[str, list[Any]]] | None = None,
    on_lost: Callable[[], str | None] | None = None,
    constraint_columns: Callable[[str], tuple[str, ...]] | None = None,
) -> Iterator[None]:
    """Turn SQLAlchemy errors raised inside the block into ferryman store errors.

    Args:
        label: names the store in every message, e.g. ``store 'x' (sqlite:///x.db, table x)``.
        dialect: the engine's dialect name, which selects the driver-specific tests.
        explain_duplicate: called after a duplicate; returns the clashing key as text (e.g.
            ``(id)=(3)``, or ``""`` if unknown) and the records involved.
        on_lost: for a block that sends a batch, called after its connection was lost: asks
            the database something on a new connection, and returns None if it does not
            answer (an outage: TransientStoreError), else what may have made it drop the
            connection, possibly ``""`` (ConnectionDroppedError).
        constraint_columns: the columns of a constraint or index by name, for errors that name
            the constraint only (MySQL's duplicate entry).

    The driver's error (``sqlite3.IntegrityError``, ``psycopg.errors.UniqueViolation``, ...) is
    the ``__cause__``. A str the driver cannot encode (or bytes it cannot decode), which the
    drivers raise as Python's own UnicodeError, is terminal too.
    """
    try:
        yield
    except UnicodeError as error:
        raise TerminalStoreError(f"{label}: {' '.join(str(error).split())}") from error
    except sa_exc.SQLAlchemyError as error:
        kind = classify(error, dialect)
        detail = error_detail(error)
        # The driver's own exception; SQLAlchemy's wrapper stays as __context__.
        cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
        if kind == "duplicate":
            what, records = explain_duplicate() if explain_duplicate else ("", [])
            key = f"duplicate key {what}" if what else "duplicate key"
            found = constraint_details(cause, dialect, constraint_columns)
            raise DuplicateDataError(f"{label}: {key}: {detail}", records, constraint=found.constraint,
                                     columns=found.columns, values=found.values) from cause
        if kind == "lost" and on_lost is not None:
            suspect = on_lost()
            if suspect is not None:
                because = f": {suspect}" if suspect else ", so what it was sent may be the cause"
                raise ConnectionDroppedError(
                    f"{label}: {detail}; the database still answers on a new connection{because}"
                ) from cause
        if kind == "terminal":
            found = constraint_details(cause, dialect, constraint_columns)
            raise TerminalStoreError(f"{label}: {detail}", constraint=found.constraint,
                                     columns=found.columns) from cause
        error_class = _ERROR_CLASSES[kind]
        raise error_class(f"{label}: {detail}") from cause


_ERROR_CLASSES: dict[Kind, type[Exception]] = {
    "unusable": StoreUnusableError,
    "lost": TransientStoreError,
    "transient": TransientStoreError,
}


def error_detail(error: sa_exc.SQLAlchemyError) -> str:
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
