"""Where an SQLite ledger keeps the partitions of a run with workers: files beside its own.

The directory :func:`parts_directory` beside the ledger holds, per migration run in partitions
(see :mod:`ferryman.progress.partitions` for what they are):

- ``split.json`` and ``retried.json``: the round's split and the ids its retry pass ran;
- ``<i>.db``: partition ``i``'s own ledger (:class:`PartitionLedger`);
- ``claims.lock``: the file whose lock a worker holds while it claims a partition, and the
  coordinator while it closes the round.

Every process that runs them must see these files: the workers of one host.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from ..partitions import PartitionLookups, PartitionSet
from ..storage import save_text_atomically
from .reader import SqliteReader
from .writer import PARTS_SUFFIX, SqliteLedger

CLAIMS_LOCK = "claims.lock"


def parts_directory(path: str, key: str) -> str:
    """Where the partitions of migration ``key`` keep their progress while a run with several
    workers runs it (beside the ledger at ``path``; merged into it, then removed)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(path + PARTS_SUFFIX, digest)


class PartitionLedger(PartitionLookups, SqliteLedger):
    """Partition ``i``'s ledger: a file, a lease and journal key of its own."""

    def __init__(self, path: str, main: SqliteReader, main_uid: str) -> None:
        super().__init__(path)
        self._join(main, main_uid)


class SqlitePartitionSet(PartitionSet):
    """The partitions of one migration, kept in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _read(self, name: str) -> Any:
        try:
            with open(os.path.join(self.directory, f"{name}.json"), encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None

    def _write(self, name: str, data: Any) -> None:
        os.makedirs(self.directory, exist_ok=True)
        save_text_atomically(os.path.join(self.directory, f"{name}.json"), json.dumps(data))

    @contextmanager
    def claiming(self, round_id: str) -> Iterator[bool]:
        with self._claims_locked() as present:
            yield present and self.round() == round_id

    def close(self) -> None:
        with self._claims_locked() as present:
            if present:
                with suppress(FileNotFoundError):
                    os.remove(os.path.join(self.directory, "split.json"))

    @contextmanager
    def _claims_locked(self) -> Iterator[bool]:
        """The claims lock held (False: no partitions directory, nothing to claim)."""
        try:
            fd = os.open(os.path.join(self.directory, CLAIMS_LOCK), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        except FileNotFoundError:  # the partitions were folded and removed
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
        finally:
            os.close(fd)

    def ledger_path(self, index: int) -> str:
        return os.path.join(self.directory, f"{index}.db")

    def ledger(self, index: int, main: Any) -> PartitionLedger:
        """``main``: the main :class:`SqliteLedger`, read through a reader on its connection."""
        return PartitionLedger(self.ledger_path(index), SqliteReader(main.conn, main.path), main.uid)

    @contextmanager
    def reading(self, index: int) -> Iterator[SqliteReader | None]:
        path = self.ledger_path(index)
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            yield None
            return
        reader = SqliteReader.open(path)
        try:
            yield reader
        finally:
            reader.close()

    def existing(self) -> list[int]:
        if not os.path.isdir(self.directory):
            return []
        return sorted(int(name[:-3]) for name in os.listdir(self.directory)
                      if name.endswith(".db") and name[:-3].isdigit())

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(self.directory))  # the ledger's partitions directory, once empty
        except OSError:
            pass
