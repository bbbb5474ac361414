"""Every error ferryman raises on purpose derives from :class:`FerrymanError`.

Callers can catch "any ferryman error" with one clause; the CLI turns these into one-line
messages. Errors carry the data they are about (``PlanError.migrations``, ...).
"""

from __future__ import annotations

from typing import Any, Sequence


class FerrymanError(Exception):
    """Base of every error ferryman raises on purpose."""


class MigrationDefinitionError(FerrymanError):
    """A ``@migration`` class is malformed; ``problems`` lists every problem found."""

    def __init__(self, cls_name: str, problems: Sequence[str]) -> None:
        self.cls_name = cls_name
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"migration {cls_name} is invalid:\n{lines}")


class PlanError(FerrymanError):
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


class ProgressFormatError(FerrymanError):
    """A progress file or text is malformed; ``path`` is the JSON path of the problem."""

    def __init__(self, message: str, path: str = "$", source: str | None = None) -> None:
        self.path = path
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{message} at {path}")


class LedgerBusyError(FerrymanError):
    """Another live run holds the lease on this progress ledger."""


class LedgerFileError(FerrymanError):
    """The file named as progress ledger cannot be used, and nothing was written to it: no path
    at all, not a ferryman ledger, written by a newer ferryman, or damaged.

    ``exit_code`` is the CLI's: 2, nothing was done.
    """

    exit_code = 2

class LedgerWriteError(FerrymanError):
    """The progress ledger could not be written (a full disk, an I/O error).

    The run stops; what the destination already holds is recorded by the next run from the
    destination's journal, so nothing is written twice.
    """


class LeaseLostError(LedgerBusyError):
    """This run's lease on the progress ledger was taken by another run.

    The run stops at once and writes nothing more: neither to the destination nor to the ledger.
    """


class StopRequested(BaseException):
    """Raised at a record boundary after SIGINT/SIGTERM.

    A ``BaseException`` so that a user's ``except Exception`` cannot swallow the stop.
    """
