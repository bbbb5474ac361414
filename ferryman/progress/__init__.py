"""The progress ledger: what each migration already did, kept in mjg's JSON format.

``model`` holds it in memory, ``jsonfmt`` reads and writes the Java-compatible JSON, ``storage``
puts it on disk without ever leaving a half-written file.
"""

from .model import Action, FailedRecord, MigrationEntry, MigrationProgress, ProgressMetadata

__all__ = ["Action", "FailedRecord", "MigrationEntry", "MigrationProgress", "ProgressMetadata"]
