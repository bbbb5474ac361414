"""The progress: what each migration already did, so that the next run resumes.

- ``ledger``: :class:`~.ledger.Ledger`, what a run writes its progress to; ``reader``:
  :class:`~.reader.LedgerReader`, how everything else reads a durable ledger;
- ``sqlite``: the durable ledger, an SQLite file (the only code that knows its tables);
  ``postgres``: the same in a schema of a PostgreSQL database; ``durable``: the logic both
  share (journal, checkpoints, run outcomes); ``codec``: record ids as both store them;
- ``model``: mjg's progress in memory; ``jsonfmt``, ``jsonlimits``: its Java-compatible JSON;
  ``storage``: files replaced without ever being half-written;
- ``files``: a location opened as the progress it names (SQLite, PostgreSQL or mjg JSON);
- ``failed``: failed records listed and marked; ``exchange``: mjg JSON in and out of a ledger;
- ``lease``: the rules of one run at a time.
"""

from .model import (
    Action,
    FailedRecord,
    MigrationEntry,
    MigrationProgress,
    ProgressMetadata,
)

__all__ = ["Action", "FailedRecord", "MigrationEntry", "MigrationProgress", "ProgressMetadata"]
