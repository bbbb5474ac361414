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
* ``fenced`` -> :class:`~ferryman.errors.FencedOffError`: the database's own check of a batch's
  fence refused it (``journal.py``): the run lost its lease, nothing of the batch was committed.
  Never about a record, never split, never taken for a commit that landed.
* ``terminal`` -> :class:`TerminalStoreError`: everything else, about the values of some record:
  NOT NULL, foreign key, CHECK, a bad value; also an error the driver raises before or while
  sending (psycopg refuses a str with a NUL byte; a str that cannot be encoded). The engine
  splits the batch so that only the records at fault fail.

DuplicateDataError is a unique or primary-key violation, and nothing else (mjg's adapter also
called NOT NULL and foreign-key violations duplicates).

Whatever the database: a table missing when reflected (NoSuchTableError) is ``unusable``; a
disconnect SQLAlchemy saw (``connection_invalidated``, DisconnectionError) is ``lost``; a pool
TimeoutError is ``transient``. Which of its driver's errors are which kind, and what they say
about the constraint a record broke (the error's ``constraint``, ``columns`` and, for a
duplicate, ``values``), each dialect class says (``driver_kind``, ``constraint_details`` in
``sqlite.py``, ``postgres.py``, ``mysql.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from ...errors import (
    ConnectionDroppedError,
    DuplicateDataError,
    StoreUnusableError,
    TerminalStoreError,
    TransientStoreError,
)

if TYPE_CHECKING:
    from .dialect import SqlDialect

Kind = Literal["duplicate", "unusable", "lost", "transient", "fenced", "terminal"]


def classify(error: BaseException, dialect: SqlDialect) -> Kind:
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
    return dialect.driver_kind(error.orig) or "terminal"


@dataclass(frozen=True)
class ConstraintDetails:
    """What the database said about the constraint a record broke (nothing: None and ``()``)."""

    constraint: str | None = None
    columns: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    """The duplicate values as the database printed them, one per column (duplicates only)."""


def constraint_details(orig: BaseException | None, dialect: SqlDialect,
                       constraint_columns: Callable[[str], tuple[str, ...]] | None = None) -> ConstraintDetails:
    """The constraint, columns and values the driver's error ``orig`` names on ``dialect``;
    ``constraint_columns`` gives a named constraint's columns where the error names none."""
    if orig is None:
        return ConstraintDetails()
    details = dialect.constraint_details(orig)
    if details.constraint and not details.columns and constraint_columns is not None:
        columns = constraint_columns(details.constraint)
        values = details.values
        if len(values) == 1 and len(columns) > 1:  # MySQL joins a composite entry with '-'
            parts = tuple(values[0].split("-"))
            values = parts if len(parts) == len(columns) else ()
        return ConstraintDetails(details.constraint, columns, values)
    return details


@contextmanager
def map_errors(
    label: str,
    dialect: SqlDialect,
    explain_duplicate: Callable[[], tuple[str, list[Any]]] | None = None,
    on_lost: Callable[[], str | None] | None = None,
    constraint_columns: Callable[[str], tuple[str, ...]] | None = None,
    fenced: Callable[[], Exception] | None = None,
) -> Iterator[None]:
    """Turn SQLAlchemy errors raised inside the block into ferryman store errors.

    Args:
        label: names the store in every message, e.g. ``store 'x' (sqlite:///x.db, table x)``.
        dialect: the store's dialect, which knows its driver's errors.
        explain_duplicate: called after a duplicate; returns the clashing key as text (e.g.
            ``(id)=(3)``, or ``""`` if unknown) and the records involved.
        on_lost: for a block that sends a batch, called after its connection was lost: asks
            the database something on a new connection, and returns None if it does not
            answer (an outage: TransientStoreError), else what may have made it drop the
            connection, possibly ``""`` (ConnectionDroppedError).
        constraint_columns: the columns of a constraint or index by name, for errors that name
            the constraint only (MySQL's duplicate entry).
        fenced: for a block that sends a batch with a fenced journal entry, the error to raise
            when the database refused it for its fence (the store knows the migration and epochs).

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
        if kind == "fenced" and fenced is not None:
            raise fenced() from cause
        if kind in ("terminal", "fenced"):
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
        statement, None, exc, conn.dialect.loaded_dbapi.Error,
        hide_parameters=True, connection_invalidated=invalidated, dialect=conn.dialect,
    )
