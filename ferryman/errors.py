"""Every error ferryman raises on purpose, and the one way each becomes a line of text.

Every error derives from :class:`FerrymanError`, so callers can catch "any ferryman error" with
one clause. Each class says what the ``ferryman`` command exits with when it ends a command
(``exit_code``): 2 when nothing was done (:class:`InputError`: what was given cannot be used),
1 otherwise, 130 for a stop. Errors carry the data they are about (``PlanError.migrations``...).

:func:`one_line` is how any error is shown in one line (the CLI, the status server, a report's
``last_error``); :func:`cause_summary` is the one line a person wants of a stored cause (a
Python traceback, a Java stack trace).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .redact import mask_secrets


class FerrymanError(Exception):
    """Base of every error ferryman raises on purpose."""

    exit_code = 1
    """What the ``ferryman`` command exits with when this error ends it."""


class InputError(FerrymanError):
    """What was given cannot be used as it is (an argument, an unknown migration or record id,
    a file, a store that cannot be read before the run); nothing was done."""

    exit_code = 2


class TargetError(InputError):
    """A TARGET could not be loaded or does not define what ferryman needs."""


class MigrationDefinitionError(InputError):
    """A ``@migration`` class is malformed; ``problems`` lists every problem found."""

    def __init__(self, cls_name: str, problems: Sequence[str]) -> None:
        self.cls_name = cls_name
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"migration {cls_name} is invalid:\n{lines}")


class PlanError(InputError):
    """The migrations cannot be ordered (unknown store, self-read, two writers, cycle)."""

    def __init__(self, message: str, migrations: Sequence[str] = ()) -> None:
        self.migrations = list(migrations)
        super().__init__(message)


class StoreError(FerrymanError):
    """A store operation failed."""


class TransientStoreError(StoreError):
    """A store failure worth retrying (connection lost, timeout, deadlock)."""


class ConnectionDroppedError(TransientStoreError):
    """A batch's connection was lost, yet the database answers a new one: the batch itself may
    be the cause (MariaDB drops a connection over a statement larger than max_allowed_packet).

    The engine splits the batch until the record at fault stands alone; a lone record is
    retried later, as after any transient error (an innocent one may have met a killed
    connection).
    """


class TerminalStoreError(StoreError):
    """A store failure that retrying cannot fix (bad credentials, missing table).

    For a NOT NULL, foreign key or CHECK violation, ``constraint`` (its name) and ``columns``
    say what the database named, where it did (``docs/stores.md`` lists what each one says);
    None and ``()`` otherwise.
    """

    def __init__(self, message: str, *, constraint: str | None = None, columns: Sequence[str] = ()) -> None:
        self.constraint = constraint
        self.columns = tuple(columns)
        super().__init__(message)


class StoreUnusableError(TerminalStoreError):
    """The store itself cannot be used (missing table or column, no permission).

    No record could succeed, so the migration stops at once with one fatal error instead of
    failing every record on its own.
    """


class DuplicateDataError(StoreError):
    """``save_all`` hit a unique-key violation; ``__cause__`` is the driver's error.

    ``records``: the clashing records, when the store can tell. ``constraint`` (the unique
    constraint's or index's name), ``columns`` (its columns) and ``values`` (the duplicate
    values, as the text the database printed, one per column): what the database said, where it
    said it (``docs/stores.md``); None and ``()`` otherwise.
    """

    def __init__(self, message: str, records: Sequence[Any] = (), *, constraint: str | None = None,
                 columns: Sequence[str] = (), values: Sequence[str] = ()) -> None:
        self.records = list(records)
        self.constraint = constraint
        self.columns = tuple(columns)
        self.values = tuple(values)
        super().__init__(message)


class CardinalityError(FerrymanError):
    """A match or a transform produced a number of records its cardinality forbids."""


class ProgressFormatError(InputError):
    """A progress file or text is malformed; ``path`` is the JSON path of the problem."""

    def __init__(self, message: str, path: str = "$", source: str | None = None) -> None:
        self.path = path
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{message} at {path}")


class LedgerBusyError(FerrymanError):
    """Another live run holds the lease on this progress ledger; nothing was done."""

    exit_code = 2


class LedgerFileError(InputError):
    """The file named as progress ledger cannot be used, and nothing was written to it: no path
    at all, not a ferryman ledger, written by a newer ferryman, or damaged."""


class LedgerMismatchError(InputError):
    """The destination holds what a migration wrote under another progress ledger, and this one
    knows nothing of it: the run would write it all again (a forgotten or mistyped --progress)."""


class LedgerWriteError(FerrymanError):
    """The progress ledger could not be written (a full disk, an I/O error).

    The run stops; what the destination already holds is recorded by the next run from the
    destination's journal, so nothing is written twice.
    """


class LeaseLostError(LedgerBusyError):
    """This run's lease on the progress ledger was taken by another run.

    The run stops at once and writes nothing more: neither to the destination nor to the ledger.
    """

    exit_code = 1


class FencedOffError(LeaseLostError):
    """The destination refused a batch: a run holding a newer lease of the same ledger raised
    the migration's fence above this run's epoch (``Store.raise_fence``).

    This run lost its lease while the batch was on its way (it was paused between its lease
    check and its commit), and nothing of the batch was committed. It stops as for any lost
    lease: the new holder writes those records.
    """

    def __init__(self, destination: str, migration: str, epoch: int, fence: int | None) -> None:
        self.destination, self.migration, self.epoch, self.fence = destination, migration, epoch, fence
        newer = "a newer epoch" if fence is None else f"epoch {fence}"
        super().__init__(
            f"{destination}: migration {migration!r} is fenced off at {newer}, above this run's "
            f"epoch {epoch}: the run lost its lease and wrote nothing of this batch"
        )


class StopRequested(BaseException):
    """Raised at a record boundary after SIGINT/SIGTERM.

    A ``BaseException`` so that a user's ``except Exception`` cannot swallow the stop.
    """

    exit_code = 130


@contextmanager
def nothing_done() -> Iterator[None]:
    """Any error in the block means nothing was done: it is raised as an InputError (exit 2) in
    one line. What a command checks and opens before it changes anything runs in one."""
    try:
        yield
    except InputError:
        raise
    except (FerrymanError, OSError, sqlite3.Error) as exc:
        raise InputError(one_line(exc)) from exc


# --- errors as text --------------------------------------------------------------------------------


def one_line(exc: BaseException, *, typed: bool = False) -> str:
    """An error as one line of text, secrets masked: what ``ferryman: error:`` prints.

    ferryman's own errors and file errors say what is wrong in their own words; any other
    error is prefixed with its type (``KeyError: 'x'``), a database error says so. ``typed``
    prefixes every error with its type: how a run records an error (a report's
    ``last_error``), and how the status server says why it cannot answer.
    """
    text = _joined(exc)
    name = type(exc).__name__
    if typed and text != name and not text.startswith(f"{name}: "):
        text = f"{name}: {text}"
    return mask_secrets(text)


def describe_error(exc: BaseException) -> str:
    """``one_line(exc, typed=True)``: an error as a run records it."""
    return one_line(exc, typed=True)


def _joined(exc: BaseException) -> str:
    if isinstance(exc, MigrationDefinitionError):
        return f"migration {exc.cls_name} is invalid: " + "; ".join(exc.problems)
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"database error: {_join_lines(str(exc.orig))}"
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {_join_lines(str(exc).split('(Background on this error')[0])}"
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    text = _join_lines(str(exc))
    if not isinstance(exc, FerrymanError | OSError):
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text or type(exc).__name__


def _join_lines(text: str) -> str:
    lines = [line.strip().removeprefix("- ").strip() for line in text.strip().splitlines()]
    return "; ".join(line for line in lines if line).replace(":;", ":")


DRIVER_MODULES = frozenset({
    "psycopg", "psycopg2", "asyncpg", "pg8000", "pymysql", "MySQLdb", "mysql", "mariadb", "sqlite3",
    "oracledb", "cx_Oracle", "pyodbc", "pymssql", "pymongo", "bson",
})
"""Top-level modules of database drivers: their exception's message is the one that says what the
database refused (a column, a constraint), where the wrappers above it add context."""

_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s(?P<message>.*)|$)")
_MODULE_PATH = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*(?::|$))")


def cause_summary(cause: str) -> str:
    """The line of a stored cause a person wants, not "Traceback (most recent call last):".

    For a Python traceback: the database driver's message when a driver raised in the chain
    (``null value in column "email" ... violates not-null constraint (NotNullViolation, in
    TerminalStoreError)``), else the outermost ``Type: message`` line. For anything else (a Java
    stack trace, whose frames follow the exception), the first line. Module paths of exception
    types are left out.
    """
    lines = [line for line in cause.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[-1].startswith("(this error failed a whole batch"):
        return f"{cause_summary(chr(10).join(lines[:-1]))} {lines[-1].split(':')[0]})"
    if not lines[0].startswith("Traceback"):
        return _MODULE_PATH.sub("", lines[0].strip())
    found = [m for line in lines if not line.startswith(("Traceback", " ")) and (m := _EXCEPTION_LINE.match(line))]
    if not found:
        return lines[-1].strip()
    outer = found[-1]
    drivers = [m for m in found if m["message"] and m["type"].split(".")[0] in DRIVER_MODULES]
    if not drivers:
        return _MODULE_PATH.sub("", outer.group(0).strip())
    driver = drivers[-1]
    names = [_short(driver["type"])] + ([] if outer is driver else [f"in {_short(outer['type'])}"])
    return f"{driver['message'].strip()} ({', '.join(names)})"


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]
