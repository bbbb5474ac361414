"""Open the progress a location names: an SQLite ledger, an mjg JSON file, or a PostgreSQL
ledger (a ``postgresql://`` URL). The one place that tells them apart (:func:`is_ledger_file`,
:func:`is_postgres_location`) and opens any of them.

A ``.json`` path keeps mjg's model: the whole progress lives in memory and is rewritten to the
file atomically at checkpoints (at most once per ``save_interval`` seconds), at the end of each
migration and of the run. Crash safety is the SQLite ledger's (any other path). A run on a JSON
file holds a lease in ``<file>.lock`` beside it (:class:`~.sqlite.lease.LeaseFile`): one run at
a time, as on a ledger; so does a change made outside a run (:func:`changing`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import LedgerFileError, ProgressFormatError
from ..report import MigrationReport, RunResult
from ..stores.base import Store
from ..types import RecordId
from .ledger import Ledger, MemoryLedger
from .model import Action, MigrationProgress
from .reader import LedgerReader
from .sqlite import LeaseFile, SqliteLedger, SqliteReader, is_ledger_file
from .storage import checked_path, is_postgres_location, read_errors_named

if TYPE_CHECKING:
    from .postgres import PostgresLedger

log = logging.getLogger("ferryman")

__all__ = [
    "JsonFileLedger", "changing", "checked_location", "existing", "is_ledger_file", "is_postgres_location",
    "load_json_progress", "load_progress", "location_exists", "open_ledger", "open_reader", "reading",
]


def load_json_progress(path: str) -> MigrationProgress:
    """The mjg JSON progress at ``path``; a file that is neither JSON nor named ``.json`` is
    said to be neither kind of progress (a ledger whose header was overwritten looks so)."""
    try:
        return MigrationProgress.load(path)
    except ProgressFormatError as exc:
        if path.lower().endswith(".json"):
            raise
        detail = str(exc).removeprefix(f"{exc.source}: ")
        raise LedgerFileError(
            f"{path} is neither an SQLite progress ledger nor mjg JSON progress: {detail}") from exc


def json_lease(path: str) -> LeaseFile:
    """The lease of the JSON progress file at ``path``."""
    return LeaseFile(path + ".lock", name=path)


class JsonFileLedger(MemoryLedger):
    """A MemoryLedger saved to an mjg JSON file."""

    def __init__(self, path: str | os.PathLike[str], save_interval: float = 1.0) -> None:
        self.path = checked_path(path)
        super().__init__(self._load())
        self.save_interval = save_interval
        self._last_save = time.monotonic()
        self._lease = json_lease(self.path)
        self.unsaved = 0
        """Failed records whose action changed since the last save."""

    def _load(self) -> MigrationProgress:
        return load_json_progress(self.path) if os.path.exists(self.path) else MigrationProgress()

    def save(self) -> None:
        """Write the file; during a run only while it holds the lease (else LeaseLostError)."""
        self._lease.assert_held()
        self._last_save = time.monotonic()
        self.progress().save(self.path)
        self.unsaved = 0
        log.info("checkpoint: progress saved to %s", self.path)

    def checkpoint(self, urgent: bool = True) -> None:
        if time.monotonic() - self._last_save >= self.save_interval:
            self.save()

    def begin_run(self, reports: Sequence[MigrationReport]) -> None:
        self._lease.acquire()
        try:
            self._progress = self._load()  # what the run that held the lease last left
            self.save()  # fail now, before any work, if the file cannot be written
        except BaseException:
            self._lease.release()
            raise

    def hold(self, doing: str) -> None:
        """Take the lease outside a run, to change the file (``doing``: what, for the refusal
        while a live run holds it), and read the file as the last holder left it; until
        :meth:`close`."""
        self._lease.acquire(doing, heartbeat=False)
        try:
            self._progress = self._load()
        except BaseException:
            self._lease.release()
            raise

    def assert_held(self) -> None:
        self._lease.assert_held()

    def finish_migration(self, identity: str, completed: bool) -> None:
        super().finish_migration(identity, completed)
        self.save()

    def end_run(self, result: RunResult) -> None:
        try:
            self.save()
        finally:
            self._lease.release()

    def close(self) -> None:
        self._lease.release()

    def forget(self, key: str, dest: Store | None = None, *, every_ledger: bool = False) -> None:
        super().forget(key, dest, every_ledger=every_ledger)
        self.save()

    def set_action(self, identity: str, ids: Iterable[RecordId] | None, action: Action) -> int:
        """Change the actions in memory; :meth:`save` writes them (:func:`changing` does)."""
        changed = super().set_action(identity, ids, action)
        self.unsaved += changed
        return changed


def open_ledger(path: str | os.PathLike[str], *, read_only: bool = False) -> Ledger:
    """The ledger stored at ``path``: PostgreSQL for a ``postgresql://`` URL, else SQLite unless
    the path ends in ``.json``."""
    path = checked_path(path)
    if is_postgres_location(path):
        from .postgres import PostgresLedger

        return PostgresLedger(path, read_only=read_only)
    if is_ledger_file(path):
        return SqliteLedger(path, read_only=read_only)
    if read_only and not os.path.exists(path):
        raise FileNotFoundError(f"no progress file at {path}")
    return JsonFileLedger(path)


def open_durable(path: str) -> SqliteLedger | PostgresLedger:
    """The durable ledger at ``path`` (a PostgreSQL URL or an SQLite file), to write."""
    if is_postgres_location(path):
        from .postgres import PostgresLedger

        return PostgresLedger(path)
    return SqliteLedger(path)


def open_reader(path: str | os.PathLike[str]) -> LedgerReader:
    """A read-only reader of the SQLite or PostgreSQL ledger at ``path``, cheap to open (no page
    is checked: what the status server opens at every snapshot)."""
    path = checked_path(path)
    if is_postgres_location(path):
        from .postgres import PostgresReader

        return PostgresReader.open(path)
    return SqliteReader.open(path)


def location_exists(path: str | os.PathLike[str]) -> bool:
    """Whether there is progress at ``path``: a file, or a ledger in the PostgreSQL schema."""
    path = checked_path(path)
    if not is_postgres_location(path):
        return os.path.exists(path)
    from .postgres.reader import ledger_exists

    return ledger_exists(path)


def load_progress(path: str | os.PathLike[str]) -> MigrationProgress:
    """The whole progress at ``path`` (SQLite ledger or mjg JSON), read without changing it."""
    with reading(path) as ledger:
        return ledger.progress()


def remove_ledger(path: str | os.PathLike[str]) -> None:
    """Remove a ledger a command created and gave up before any work, and the files SQLite keeps
    beside it (a PostgreSQL ledger: its schema): a failed start leaves nothing behind."""
    path = os.fspath(path)
    if is_postgres_location(path):
        from .postgres import drop_ledger

        drop_ledger(path)
        return
    for leftover in (path, path + "-wal", path + "-shm", path + "-journal"):
        if os.path.exists(leftover):
            os.remove(leftover)


DEFAULT_PROGRESS = "ferryman-progress.db"
"""The progress ledger a command uses when given no ``--progress`` and the service has no
ledger of its own (in the cwd)."""


def command_location(progress: str | os.PathLike[str] | None, *, own: bool) -> str | None:
    """The ledger path a command means: ``progress``, else None when the service has its ``own``
    ledger, else DEFAULT_PROGRESS; checked by :func:`checked_location`."""
    if progress is None and own:
        return None
    return checked_location(progress if progress is not None else DEFAULT_PROGRESS)


def checked_location(path: str | os.PathLike[str]) -> str:
    """``path`` as a place where a progress file may be: not empty, in a directory that
    exists, and not a directory itself; or a well-formed PostgreSQL ledger URL (LedgerFileError
    otherwise)."""
    path = checked_path(path)
    if is_postgres_location(path):
        from .postgres import PgLocation

        PgLocation.parse(path)
        return path
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise LedgerFileError(f"cannot create progress ledger {path}: directory {parent} does not exist")
    if os.path.isdir(path):
        raise LedgerFileError(f"{path} is a directory, not a progress file")
    return path


@contextmanager
def reading(path: str | os.PathLike[str]) -> Iterator[Ledger]:
    """The existing progress file at ``path``, opened read-only, closed at the end."""
    path = existing(path)
    ledger = open_ledger(path, read_only=True)
    try:
        with read_errors_named(path, sqlite3.DatabaseError):  # a damaged ledger found on the way
            yield ledger
    finally:
        ledger.close()


@contextmanager
def changing(path: str | os.PathLike[str], doing: str) -> Iterator[Ledger]:
    """The existing progress file at ``path``, to change outside a run: refused while a live
    run holds it (LedgerBusyError naming ``doing``). A JSON file's lease is held to the end,
    so that no run starts meanwhile, and what changed is saved then."""
    path = existing(path)
    ledger: Ledger
    if is_postgres_location(path) or is_ledger_file(path):
        durable = open_durable(path)
        ledger = durable
        try:
            durable.refuse_if_live(doing)
        except BaseException:
            ledger.close()
            raise
    else:
        ledger = JsonFileLedger(path)  # a malformed file is refused before any lock is made
        ledger.hold(doing)
    try:
        with read_errors_named(path, sqlite3.DatabaseError):  # a damaged ledger found on the way
            yield ledger
        if isinstance(ledger, JsonFileLedger) and ledger.unsaved:
            ledger.save()
    finally:
        ledger.close()


def existing(path: str | os.PathLike[str]) -> str:
    """``path`` when a progress file (or a PostgreSQL ledger) is there (FileNotFoundError,
    LedgerFileError otherwise)."""
    path = checked_path(path)
    if is_postgres_location(path):
        from .postgres import PgLocation

        if not location_exists(path):
            location = PgLocation.parse(path)
            raise FileNotFoundError(2, f"no progress ledger in schema {location.schema}", location.shown)
        return path
    if os.path.isdir(path):
        raise LedgerFileError(f"{path} is a directory, not a progress file")
    if not os.path.exists(path):
        raise FileNotFoundError(2, "no progress file", path)
    return path
