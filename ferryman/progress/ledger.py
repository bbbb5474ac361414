"""The ledger: the only thing a run writes its progress to.

The runner records each page's succeeded ids and failed records through :meth:`Ledger.record`
and asks :meth:`Ledger.checkpoint` to make them durable; nothing else in a run touches the
progress. :class:`MemoryLedger` keeps a :class:`MigrationProgress` in memory (mjg's model:
persistence is the callbacks' job); the durable ledger plugs in behind the same methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

from ..report import MigrationReport, RunResult
from ..stores.base import JournalEntry, Store
from ..types import RecordId
from .model import Action, FailedRecord, MigrationProgress, display_name


class Ledger(ABC):
    """Where a run records what became of each input record."""

    journals: bool = False
    """True when the ledger wants journal entries committed with each batch (exactly once)."""

    @abstractmethod
    def start_migration(self, identity: str) -> None:
        """Mark the migration in progress."""

    @abstractmethod
    def finish_migration(self, identity: str, completed: bool) -> None:
        """Mark the migration completed, or leave it in progress when it is not."""

    @abstractmethod
    def succeeded_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        """Which of ``ids`` an earlier page or run migrated already."""

    @abstractmethod
    def ignored_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        """Which of ``ids`` are failed records marked IGNORE."""

    @abstractmethod
    def retry_ids(self, identity: str) -> list[RecordId]:
        """Ids of the failed records marked RETRY, to re-run before the main pass."""

    @abstractmethod
    def record(self, identity: str, succeeded: Sequence[RecordId], failed: Sequence[FailedRecord]) -> None:
        """Record a page's outcome; a success removes the id's failed entry."""

    @abstractmethod
    def record_fatal(self, identity: str, text: str) -> None:
        """Record a fatal error (the source could not be read)."""

    @abstractmethod
    def progress(self) -> MigrationProgress:
        """The progress as mjg's model, for callbacks and export."""

    def begin_run(self, reports: Sequence[MigrationReport]) -> None:
        """A run starts with these migrations (a durable ledger takes its lease here)."""

    def end_run(self, result: RunResult) -> None:
        """The run ended (a durable ledger records the outcome and releases its lease)."""

    def bind(self, identity: str, dest: str) -> str:
        """The key this migration's progress is kept under, for a run that writes ``dest`` (a
        dataset): its identity; but when the ledger holds that identity's progress for another
        destination, ``identity@dest``, so the same class writing elsewhere starts afresh there
        instead of being taken for done. A ledger that cannot tell keeps the identity."""
        return identity

    def lineage(self) -> dict[str, tuple[str | None, int]]:
        """Each migration's destination dataset and how many runs wrote records to it, by key
        (empty where the ledger does not keep them: mjg JSON)."""
        return {}

    def inputs(self, key: str) -> dict[str, int] | None:
        """The write counts of the migrations it reads from, as they were when it last started
        (None: never started, or not kept)."""
        return None

    def note_inputs(self, key: str, inputs: dict[str, int]) -> None:
        """Record the write counts of its inputs as the migration starts."""

    def check_destination(self, key: str, dest: Store) -> None:
        """Raise :class:`~ferryman.errors.LedgerMismatchError` when ``dest`` holds what this
        migration wrote under another ledger while this one has no progress for it (a ledger
        that cannot tell lets it pass)."""

    def forget(self, key: str, dest: Store | None = None) -> None:
        """Forget a migration's progress, so that it runs again from the start."""
        raise NotImplementedError(f"{type(self).__name__} cannot forget a migration's progress")

    # --- failed records, for those who list and mark them (outside a run) ---------------------

    def identities(self) -> list[str]:
        """The migrations the ledger holds progress of."""
        return list(self.progress().migrations)

    def names(self) -> dict[str, str]:
        """Each migration's name, by identity (its class name where nothing better is known)."""
        return {identity: display_name(identity) for identity in self.identities()}

    def failed_records(self, identity: str) -> list[FailedRecord]:
        """The migration's failed records, the first failure first."""
        return [record for _, record in self.progress().failed_records(identity)]

    def set_action(self, identity: str, ids: Iterable[RecordId] | None, action: Action) -> int:
        """Set the action of failed records (all of the migration's when ``ids`` is None); how
        many changed."""
        raise NotImplementedError(f"{type(self).__name__} cannot change failed records")

    def assert_held(self) -> None:
        """Raise :class:`~ferryman.errors.LeaseLostError` when this run no longer holds the
        ledger (another run took it over); called before every write to a destination."""

    def checkpoint(self, urgent: bool = True) -> None:
        """Make everything recorded so far durable.

        ``urgent`` is False when every saved batch went with a journal entry, so a durable
        ledger may wait a little and commit several pages at once.
        """

    def journal_for(self, identity: str, ids: Sequence[RecordId]) -> JournalEntry | None:
        """A journal entry to commit with the batch that saves ``ids``; None: no journal."""
        return None

    def recover(self, identity: str, dest: Store) -> int:
        """Fold journal entries left by an interrupted run into the ledger; how many ids."""
        return 0

    def close(self) -> None:
        """Release files and leases."""


class MemoryLedger(Ledger):
    """Progress kept in a :class:`MigrationProgress`, mutated in place like mjg's."""

    def __init__(self, progress: MigrationProgress | None = None) -> None:
        self._progress = progress if progress is not None else MigrationProgress()

    def start_migration(self, identity: str) -> None:
        self._progress.start_migration(identity)

    def finish_migration(self, identity: str, completed: bool) -> None:
        if completed:
            self._progress.finish_migration(identity)

    def succeeded_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        entry = self._progress.migrations.get(identity)
        if entry is None or not entry.succeeded:
            return set()
        done = entry.succeeded
        return {i for i in ids if i in done}

    def ignored_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        entry = self._progress.migrations.get(identity)
        if entry is None or not entry.failed:
            return set()
        failed = entry.failed
        return {i for i in ids if i in failed and failed[i].action is Action.IGNORE}

    def retry_ids(self, identity: str) -> list[RecordId]:
        entry = self._progress.migrations.get(identity)
        return [] if entry is None else entry.ids_with_action(Action.RETRY)

    def record(self, identity: str, succeeded: Sequence[RecordId], failed: Sequence[FailedRecord]) -> None:
        entry = self._progress.entry(identity)
        if succeeded:
            entry.mark_succeeded(succeeded)
        if failed:
            entry.mark_failed(failed)

    def record_fatal(self, identity: str, text: str) -> None:
        self._progress.record_fatal(text)

    def forget(self, key: str, dest: Store | None = None) -> None:
        self._progress.forget(key)

    def set_action(self, identity: str, ids: Iterable[RecordId] | None, action: Action) -> int:
        if ids is None:
            ids = [record.id for record in self.failed_records(identity)]
        return self._progress.set_action(identity, ids, action)

    def progress(self) -> MigrationProgress:
        return self._progress


