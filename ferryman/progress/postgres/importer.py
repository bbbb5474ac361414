"""Imported progress into a PostgreSQL ledger, in pieces, inside one transaction.

:meth:`~.writer.PostgresLedger.replacing` empties the ledger and hands a :class:`LedgerImport`
to whoever reads the progress (:mod:`ferryman.progress.exchange` streams an mjg JSON file into
it); the transaction commits once the whole progress is in, or nothing is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ...types import RecordId
from ..codec import encode_id, failed_fields
from ..model import FailedRecord, ProgressMetadata
from .schema import failed_columns, migration_row

if TYPE_CHECKING:
    from .writer import PostgresLedger

IMPORT_FAILED = (
    "INSERT INTO failed (migration, rid, description, cause, action, timestamp) "
    "SELECT %s, f.* FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) "
    "AS f (rid, description, cause, action, timestamp) "
    "WHERE NOT EXISTS (SELECT 1 FROM succeeded s WHERE s.migration = %s AND s.rid = f.rid) "
    "ON CONFLICT (migration, rid) DO UPDATE SET description = excluded.description, "
    "cause = excluded.cause, action = excluded.action, timestamp = excluded.timestamp"
)
"""Failed records of imported progress, unless the id is recorded as succeeded."""


class LedgerImport:
    """Writes imported progress into a ledger inside :meth:`PostgresLedger.replacing`.

    Calls may come in any order and in pieces (a streaming reader sends ids in chunks); an id
    both succeeded and failed ends up succeeded, as when a run saves it.
    """

    def __init__(self, ledger: PostgresLedger) -> None:
        self.conn = ledger.conn
        self._metadata: ProgressMetadata | None = None

    def metadata(self, metadata: ProgressMetadata) -> None:
        self._metadata = metadata
        self.conn.execute("UPDATE meta SET value = %s WHERE key = 'timestamp'", (metadata.timestamp.isoformat(),))

    def migration(self, identity: str) -> None:
        """A migration of the progress, kept even with no ids yet."""
        self._migration(identity)

    def succeeded(self, identity: str, ids: Iterable[RecordId]) -> None:
        mid = self._migration(identity)
        keys = [encode_id(i) for i in ids]
        self.conn.execute("DELETE FROM failed WHERE migration = %s AND rid = ANY(%s)", (mid, keys))
        self.conn.execute("INSERT INTO succeeded SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING", (mid, keys))

    def failed(self, identity: str, records: Iterable[FailedRecord]) -> None:
        mid = self._migration(identity)
        rows = [failed_fields(f) for f in records]
        self.conn.execute(IMPORT_FAILED, (mid, *failed_columns(rows), mid))

    def fatal_errors(self, texts: Iterable[str]) -> None:
        self.conn.execute("INSERT INTO fatal_error (migration, text) SELECT NULL, unnest(%s::text[])", (list(texts),))

    def _migration(self, identity: str) -> int:
        return migration_row(self.conn, identity)

    def finish(self) -> None:
        metadata = self._metadata
        if metadata is None:
            return
        for identity in dict.fromkeys([*metadata.in_progress, *metadata.completed]):
            self._migration(identity)
        self.conn.execute("UPDATE migration SET in_progress = true WHERE identity = ANY(%s)",
                          (list(metadata.in_progress),))
        self.conn.execute("UPDATE migration SET completed = true, in_progress = false WHERE identity = ANY(%s)",
                          (list(metadata.completed),))
