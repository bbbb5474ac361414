"""Open the progress a path names: an SQLite ledger, or an mjg JSON file.

A ``.json`` path keeps mjg's model: the whole progress lives in memory and is rewritten to the
file atomically at checkpoints (at most once per ``save_interval`` seconds), at the end of each
migration and of the run. Crash safety is the SQLite ledger's (any other path).
"""

from __future__ import annotations

import os
import time
from typing import Sequence

from ..report import MigrationReport, RunResult
from ..stores.base import Store
from .ledger import Ledger, MemoryLedger
from .model import MigrationProgress
from .sqlite_ledger import SqliteLedger, is_ledger_file


class JsonFileLedger(MemoryLedger):
    """A MemoryLedger saved to an mjg JSON file."""

    def __init__(self, path: str | os.PathLike[str], save_interval: float = 1.0) -> None:
        self.path = os.fspath(path)
        progress = MigrationProgress.load(self.path) if os.path.exists(self.path) else MigrationProgress()
        super().__init__(progress)
        self.save_interval = save_interval
        self._last_save = time.monotonic()

    def save(self) -> None:
        self._last_save = time.monotonic()
        self.progress().save(self.path)

    def checkpoint(self, urgent: bool = True) -> None:
        if time.monotonic() - self._last_save >= self.save_interval:
            self.save()

    def begin_run(self, reports: Sequence[MigrationReport]) -> None:
        self.save()  # fail now, before any work, if the file cannot be written

    def finish_migration(self, identity: str, completed: bool) -> None:
        super().finish_migration(identity, completed)
        self.save()

    def end_run(self, result: RunResult) -> None:
        self.save()

    def forget(self, key: str, dest: Store | None = None) -> None:
        super().forget(key, dest)
        self.save()


def open_ledger(path: str | os.PathLike[str], *, read_only: bool = False) -> Ledger:
    """The ledger stored at ``path``: SQLite unless the path ends in ``.json``."""
    if is_ledger_file(path):
        return SqliteLedger(path, read_only=read_only)
    if read_only and not os.path.exists(path):
        raise FileNotFoundError(f"no progress file at {os.fspath(path)}")
    return JsonFileLedger(path)
