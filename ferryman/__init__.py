"""ferryman: move records between datastores without losing or duplicating any.

Declare migrations with :func:`migration`, run them with :class:`MigrationService`, keep the
progress in a :class:`MigrationProgress` (mjg's JSON) so the next run resumes where this one
stopped. Every name below is the public API; everything else may move.
"""

from .declare import Cardinality, Match, MigrationSpec, Retry, migration
from .errors import (
    CardinalityError,
    ConnectionDroppedError,
    DuplicateDataError,
    FencedOffError,
    FerrymanError,
    InputError,
    LeaseLostError,
    LedgerBusyError,
    LedgerFileError,
    LedgerMismatchError,
    LedgerWriteError,
    MigrationDefinitionError,
    PlanError,
    ProgressFormatError,
    StopRequested,
    StoreError,
    StoreUnusableError,
    TargetError,
    TerminalStoreError,
    TransientStoreError,
)
from .eventlog import EventLog
from .events import RunObserver
from .lookup import Lookup
from .notify import Notifier
from .progress.failed import FailedRecords
from .progress.ledger import Ledger, MemoryLedger
from .progress.model import Action, FailedRecord, MigrationEntry, MigrationProgress
from .report import MigrationReport, MigrationState, RunResult
from .service import MigrationService, StoreRegistry
from .stores import JournalEntry, MemoryStore, PendingWrite, ServerConnections, SqlDatabase, SqlStore, Store, key_ranges
from .verify import MigrationVerification, VerificationResult

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``ferryman.MongoStore`` on first use, so pymongo is needed only by those who use it."""
    if name == "MongoStore":
        from .stores import MongoStore

        return MongoStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Action",
    "Cardinality",
    "CardinalityError",
    "ConnectionDroppedError",
    "DuplicateDataError",
    "EventLog",
    "FailedRecord",
    "FailedRecords",
    "FencedOffError",
    "FerrymanError",
    "InputError",
    "JournalEntry",
    "LeaseLostError",
    "Ledger",
    "LedgerBusyError",
    "LedgerFileError",
    "LedgerMismatchError",
    "LedgerWriteError",
    "Lookup",
    "Match",
    "MemoryLedger",
    "MemoryStore",
    "MigrationDefinitionError",
    "MigrationEntry",
    "MigrationProgress",
    "MigrationReport",
    "MigrationService",
    "MigrationSpec",
    "MigrationState",
    "MigrationVerification",
    "MongoStore",
    "Notifier",
    "PendingWrite",
    "PlanError",
    "ProgressFormatError",
    "Retry",
    "RunObserver",
    "RunResult",
    "ServerConnections",
    "SqlDatabase",
    "SqlStore",
    "StopRequested",
    "Store",
    "StoreError",
    "StoreRegistry",
    "StoreUnusableError",
    "TargetError",
    "TerminalStoreError",
    "TransientStoreError",
    "VerificationResult",
    "key_ranges",
    "migration",
]
