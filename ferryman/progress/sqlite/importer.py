"""Imported progress into an SQLite ledger, in pieces, inside one transaction.

:meth:`~.writer.SqliteLedger.replacing` empties the ledger and hands a :class:`LedgerImport`
to whoever reads the progress (:mod:`ferryman.progress.exchange` streams an mjg JSON file into
it); the transaction commits once the whole progress is in, or nothing is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ...types import RecordId
from ..codec import encode_id, failed_row
from ..model import FailedRecord, ProgressMetadata
from .schema import IMPORT_FAILED, inserted

if TYPE_CHECKING:
    from .writer import SqliteLedger


class LedgerImport:
    """Writes imported progress into a ledger inside :meth:`SqliteLedger.replacing`.

    Calls may come in any order and in pieces (a streaming reader sends ids in chunks); an id
    both succeeded and failed ends up succeeded, as when a run saves it.
    """

    def __init__(self, ledger: SqliteLedger) -> None:
        self.ledger = ledger
        self._metadata: ProgressMetadata | None = None

    def metadata(self, metadata: ProgressMetadata) -> None:
        self._metadata = metadata
        self.ledger.conn.execute("UPDATE meta SET value = ? WHERE key = 'timestamp'",
                                 (metadata.timestamp.isoformat(),))

    def migration(self, identity: str) -> None:
        """A migration of the progress, kept even with no ids yet: the ledger has every
        migration the file has (an export counts them all, and writes them all back)."""
        self._migration(identity)

    def succeeded(self, identity: str, ids: Iterable[RecordId]) -> None:
        mid = self._migration(identity)
        params = [(mid, encode_id(i)) for i in ids]
        self.ledger.conn.executemany("DELETE FROM failed WHERE migration = ? AND rid = ?", params)
        self.ledger.conn.executemany("INSERT OR IGNORE INTO succeeded VALUES (?, ?)", params)

    def failed(self, identity: str, records: Iterable[FailedRecord]) -> None:
        mid = self._migration(identity)
        self.ledger.conn.executemany(
            IMPORT_FAILED, (failed_row(mid, self.ledger.next_seq(), f) for f in records)
        )

    def fatal_errors(self, texts: Iterable[str]) -> None:
        self.ledger.conn.executemany("INSERT INTO fatal_error (migration, text) VALUES (NULL, ?)",
                                     ((t,) for t in texts))

    def _migration(self, identity: str) -> int:
        found = self.ledger.migration_id(identity)
        if found is not None:
            return found
        return inserted(self.ledger.conn.execute("INSERT INTO migration (identity) VALUES (?)", (identity,)))

    def finish(self) -> None:
        metadata = self._metadata
        if metadata is None:
            return
        for identity in dict.fromkeys([*metadata.in_progress, *metadata.completed]):
            self._migration(identity)
        conn = self.ledger.conn
        conn.executemany("UPDATE migration SET in_progress = 1 WHERE identity = ?",
                         ((i,) for i in metadata.in_progress))
        conn.executemany("UPDATE migration SET completed = 1, in_progress = 0 WHERE identity = ?",
                         ((i,) for i in metadata.completed))
