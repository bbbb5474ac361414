"""The ledger: the only thing a run writes its progress to.

The runner records each page's succeeded ids and failed records through :meth:`Ledger.record`
and asks :meth:`Ledger.checkpoint` to make them durable; nothing else in a run touches the
progress. :class:`MemoryLedger` keeps a :class:`MigrationProgress` in memory (mjg's model:
persistence is the callbacks' job); the durable ledger plugs in behind the same methods.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from ..report import MigrationReport, RunResult
from ..stores.base import JournalEntry, Store
from ..types import RecordId
from .model import Action, FailedRecord, MigrationProgress, display_name
from .reader import EVENTS_PAGE

MEMORY_EVENTS = 10_000
"""Events a ledger kept in memory holds, the newest (a run has a few per migration)."""


def new_event(kind: str, **fields: Any) -> dict[str, Any]:
    """An event of the event log: ``{"event": kind, "time": <UTC, ISO 8601>, **fields}``, the
    fields that are None left out. The ledger that keeps it adds its ``seq``."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"event": kind, "time": now, **{k: v for k, v in fields.items() if v is not None}}


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

    def completed(self, key: str) -> bool:
        """Whether the migration's last run completed it (and nothing reset it since)."""
        return key in self.progress().metadata.completed

    @abstractmethod
    def succeeded_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        """Which of ``ids`` an earlier page or run migrated already."""

    @abstractmethod
    def ignored_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        """Which of ``ids`` are failed records marked IGNORE."""

    def done_before(self, identity: str, ids: Sequence[RecordId]) -> tuple[set[RecordId], set[RecordId]]:
        """Which of ``ids`` an earlier attempt within this same run recorded (a partition whose
        worker died): those that succeeded, those that failed. The main pass counts them so,
        without running them again; their failures are the next run's to retry."""
        return set(), set()

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

    def key_of(self, identity: str, dest: str) -> str:
        """The key :meth:`bind` gives, without recording anything (for readers such as a
        verification)."""
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

    def forget(self, key: str, dest: Store | None = None, *, every_ledger: bool = False) -> None:
        """Forget a migration's progress, so that it runs again from the start, and this
        ledger's journal entries for it in ``dest``; ``every_ledger``: every other ledger's
        too (their marks, which refuse a run on a ledger that knows nothing of the migration)."""
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

    # --- the event log and verifications -------------------------------------------------------

    def record_event(self, event: dict[str, Any]) -> int | None:
        """Keep an event (:func:`new_event`) in the ledger's event log; its ``seq`` (rising),
        or None where the ledger keeps no events."""
        return None

    def events(self, after: int = 0, limit: int = EVENTS_PAGE) -> list[dict[str, Any]]:
        """The events kept, oldest first, ``seq`` above ``after``, at most ``limit``."""
        return []

    def record_verification(self, result: dict[str, Any]) -> None:
        """Keep a verification's result (``VerificationResult.to_dict()``)."""

    def verification(self) -> dict[str, Any] | None:
        """The newest verification result kept, if any."""
        return None


class MemoryLedger(Ledger):
    """Progress kept in a :class:`MigrationProgress`, mutated in place like mjg's; its event
    log (the newest MEMORY_EVENTS events) and its newest verification in memory too."""

    def __init__(self, progress: MigrationProgress | None = None) -> None:
        self._progress = progress if progress is not None else MigrationProgress()
        self._events: deque[dict[str, Any]] = deque(maxlen=MEMORY_EVENTS)
        self._events_lock = threading.Lock()  # the status server reads them from its thread
        self._verification: dict[str, Any] | None = None

    def record_event(self, event: dict[str, Any]) -> int:
        with self._events_lock:
            seq = self._events[-1]["seq"] + 1 if self._events else 1
            self._events.append({"seq": seq, **event})
            return int(seq)

    def events(self, after: int = 0, limit: int = EVENTS_PAGE) -> list[dict[str, Any]]:
        with self._events_lock:
            return [dict(e) for e in self._events if e["seq"] > after][:limit]

    def record_verification(self, result: dict[str, Any]) -> None:
        self._verification = result

    def verification(self) -> dict[str, Any] | None:
        return self._verification

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

    def forget(self, key: str, dest: Store | None = None, *, every_ledger: bool = False) -> None:
        self._progress.forget(key)

    def set_action(self, identity: str, ids: Iterable[RecordId] | None, action: Action) -> int:
        if ids is None:
            ids = [record.id for record in self.failed_records(identity)]
        changed = self._progress.set_action(identity, ids, action)
        if changed:
            self.record_event(marked_event(display_name(identity), action, changed))
        return changed

    def progress(self) -> MigrationProgress:
        return self._progress


def marked_event(name: str, action: Action, count: int) -> dict[str, Any]:
    """The event of failed records marked IGNORE or RETRY."""
    return new_event("records.marked", migration=name, action=Action(action).value, count=count)


