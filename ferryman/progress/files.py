"""Open the progress a path names: an SQLite ledger, or an mjg JSON file.

A ``.json`` path keeps mjg's model: the whole progress lives in memory and is rewritten to the
file atomically at checkpoints (at most once per ``save_interval`` seconds), at the end of each
migration and of the run. Crash safety is the SQLite ledger's (any other path). A run on a JSON
file holds a lease in ``<file>.lock`` beside it (:class:`~.lease.LeaseFile`): one run at a time,
as on a ledger.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

from ..errors import LedgerFileError, ProgressFormatError
from ..report import MigrationReport, RunResult
from ..stores.base import Store
from .lease import LeaseFile
from .ledger import Ledger, MemoryLedger
from .model import MigrationProgress
from .sqlite_ledger import SqliteLedger, checked_path, is_ledger_file


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

    def _load(self) -> MigrationProgress:
        return load_json_progress(self.path) if os.path.exists(self.path) else MigrationProgress()

    def save(self) -> None:
        """Write the file; during a run only while it holds the lease (else LeaseLostError)."""
        self._lease.assert_held()
        self._last_save = time.monotonic()
        self.progress().save(self.path)

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

    def forget(self, key: str, dest: Store | None = None) -> None:
        super().forget(key, dest)
        self.save()


def open_ledger(path: str | os.PathLike[str], *, read_only: bool = False) -> Ledger:
    """The ledger stored at ``path``: SQLite unless the path ends in ``.json``."""
    path = checked_path(path)
    if is_ledger_file(path):
        return SqliteLedger(path, read_only=read_only)
    if read_only and not os.path.exists(path):
        raise FileNotFoundError(f"no progress file at {path}")
    return JsonFileLedger(path)
