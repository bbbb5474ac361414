"""What a durable ledger tells those who read it: the status server, the CLI, tests.

A run writes its progress through :class:`~ferryman.progress.ledger.Ledger`; everything else
reads it through a :class:`LedgerReader`, never through the storage behind it. The SQLite
ledger (:mod:`ferryman.progress.sqlite`) implements both; a ledger kept in a database server
implements the same two interfaces, and the status server, ``ferryman failed`` and
``ferryman progress export`` work on it unchanged.

A reader never writes: not the progress, not the lease. Reads fail with
:class:`~ferryman.errors.LedgerFileError` when the ledger cannot be read.
"""

from __future__ import annotations

import json
import random
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Self

from ..errors import InputError
from ..sampling import reservoir
from ..types import RecordId
from .codec import array_ids, array_keys, decode_id
from .lease import Holder, busy_error
from .model import (
    FailedRecord,
    MigrationEntry,
    MigrationProgress,
    ProgressMetadata,
    display_name,
    keyed_name,
)

if TYPE_CHECKING:
    from .partitions import PartitionSet

EVENTS_PAGE = 500
"""Events a read of the event log returns at most (``GET /migrate/events`` pages with ``after``)."""


@dataclass(frozen=True)
class RunRecord:
    """One run in the ledger's history."""

    id: int
    job: int
    """A job is the runs up to one that completes; the next run starts the next job."""
    attempt: int
    """1 for the first run of a job, 2 for the run after it, and so on."""
    started_at: float
    ended_at: float | None
    outcome: str | None
    """``completed``, ``failed``, ``interrupted`` or ``died``; None while the run lives (or
    when its process died and no run has taken the ledger over since)."""
    pid: int | None
    host: str | None
    step: str | None
    """The name of the migration it started last."""
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MigrationRecord:
    """What the ledger knows of one migration's progress."""

    identity: str
    """The key its progress is kept under (:meth:`~ferryman.progress.ledger.Ledger.bind`)."""
    in_progress: bool
    completed: bool
    report: dict[str, Any] | None
    """Its report in the last run that ran it (``MigrationReport.to_dict()``), if any."""
    dest: str | None
    """The dataset it writes, once a run bound it."""
    changes: int
    """How many runs wrote records to ``dest``."""

    @property
    def name(self) -> str:
        """Its name as its last report gave it, else the class name in its identity."""
        name = self.report.get("name") if self.report else None
        return keyed_name(name, self.identity) if isinstance(name, str) and name else display_name(self.identity)


@dataclass(frozen=True)
class FailedPage:
    """One page of the failed records that a search chose, newest first."""

    total: int
    """How many failed records the search chose, on every page."""
    rows: list[tuple[str, FailedRecord]] = field(default_factory=list)
    """``(identity, record)`` of this page."""


def select_migrations(names: dict[str, str], migration: str | None, where: str) -> list[str]:
    """The identities ``migration`` names (an identity, a name, or the class name in an
    identity), in the ledger's order; all of them for None. ``names``: name by identity, in
    the ledger's order; ``where`` names the progress in the error for a name it does not know."""
    if migration is None:
        return list(names)
    chosen = [i for i, name in names.items() if migration in (i, name, display_name(i))]
    if not chosen:
        known = ", ".join(names.values()) or "(none)"
        raise InputError(f"no migration {migration!r} in {where}; it has: {known}")
    return chosen


def search_failed(pairs: Iterable[tuple[str, FailedRecord]], names: dict[str, str], where: str, *,
                  migration: str | None = None, text: str | None = None, offset: int = 0,
                  limit: int = 50) -> FailedPage:
    """:meth:`LedgerReader.failed_page` of failed records in hand, ``(identity, record)``
    newest first (``names``, ``where``: as for :func:`select_migrations`)."""
    chosen = set(select_migrations(names, migration, where))
    needle = text.casefold() if text else None
    rows = [(identity, record) for identity, record in pairs
            if identity in chosen and (needle is None or record.mentions(needle))]
    return FailedPage(len(rows), rows[offset:offset + limit])


def stored_report(text: str | None) -> dict[str, Any] | None:
    """A report as a ledger stores it (JSON); None when there is none (or it is not a report)."""
    if not text:
        return None
    try:
        report = json.loads(text)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def stored_reports(text: str | None) -> list[dict[str, Any]]:
    """A run's reports as a ledger stores them (a JSON array), each named as it is shown (a run
    before second destinations were named apart named them alike)."""
    reports: list[dict[str, Any]] = json.loads(text) if text else []
    for report in reports:
        name, identity = report.get("name"), report.get("identity")
        if isinstance(name, str) and isinstance(identity, str):
            report["name"] = keyed_name(name, identity)
    return reports


def counts_by_identity(rows: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """``(identity, action, count)`` rows as :meth:`LedgerReader.failed_counts` gives them."""
    counts: dict[str, dict[str, int]] = {}
    for identity, action, n in rows:
        counts.setdefault(identity, {})[action] = int(n)
    return counts


class LedgerReader(ABC):
    """Read access to a durable ledger: its run history, lease, migrations and records."""

    path: str
    """Where the ledger is, as messages name it."""
    address: str
    """Where the ledger is, as another process opens it (``path`` may hide a password)."""

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[None]:
        """Reads made inside see one state of the ledger (one read transaction)."""

    # --- runs and the lease ---------------------------------------------------------------------

    @abstractmethod
    def runs(self, limit: int | None = None) -> list[RunRecord]:
        """The run history, newest first; the ``limit`` newest runs when given."""

    @abstractmethod
    def run_reports(self, run_id: int) -> list[dict[str, Any]]:
        """The reports a run last wrote, one per migration (``MigrationReport.to_dict()``)."""

    @abstractmethod
    def holder(self) -> Holder | None:
        """Who holds the lease, alive or not; None when nobody does."""

    def live_holder(self) -> Holder | None:
        """The holder of the lease when a live run holds it; None when the ledger is free.

        The one answer to "is this ledger in use by a live run?".
        """
        holder = self.holder()
        return holder if holder is not None and holder.alive() else None

    def refuse_if_live(self, doing: str | None = None) -> None:
        """Raise :class:`~ferryman.errors.LedgerBusyError`, saying what cannot be done
        (``doing``), while a live run holds the ledger."""
        holder = self.live_holder()
        if holder is not None:
            raise busy_error(self.path, holder, doing)

    # --- migrations -----------------------------------------------------------------------------

    @abstractmethod
    def migrations(self) -> list[MigrationRecord]:
        """Every migration the ledger holds progress of, in the order it first met them."""

    def identities(self) -> list[str]:
        return [m.identity for m in self.migrations()]

    def names(self) -> dict[str, str]:
        """Each migration's name (:attr:`MigrationRecord.name`), by identity."""
        return {m.identity: m.name for m in self.migrations()}

    @abstractmethod
    def metadata(self) -> ProgressMetadata:
        """The progress metadata as mjg keeps it: which migrations completed, which did not."""

    # --- records --------------------------------------------------------------------------------

    @abstractmethod
    def iter_succeeded(self, identity: str) -> Iterator[RecordId]:
        """Every id the migration migrated, each once (none for an unknown migration)."""

    def sample_succeeded(self, identity: str, k: int, rng: random.Random) -> tuple[list[RecordId], int]:
        """``k`` of the migration's succeeded ids chosen uniformly at random (all of them when
        it has fewer), and how many it has: one pass, memory for ``k`` ids."""
        return reservoir(self.iter_succeeded(identity), k, rng)

    @abstractmethod
    def iter_failed(self, identity: str) -> Iterator[FailedRecord]:
        """The migration's failed records, the first failure first."""

    def failed_records(self, identity: str) -> list[FailedRecord]:
        return list(self.iter_failed(identity))

    @abstractmethod
    def newest_failed(self, limit: int) -> list[tuple[str, FailedRecord]]:
        """The ``limit`` newest failed records of every migration, ``(identity, record)``,
        the newest first; without reading the others."""

    def failed_page(self, *, migration: str | None = None, text: str | None = None,
                    offset: int = 0, limit: int = 50) -> FailedPage:
        """The failed records of ``migration`` (all when None) that mention ``text``
        (:meth:`FailedRecord.mentions`; all when None or empty), newest first: the ``limit``
        of them after the first ``offset``, and how many there are, from one snapshot.

        This reads every failed record; a ledger overrides it with a search that reads only
        the page (the result is the same). InputError for a migration the ledger does not know.
        """
        with self.snapshot():
            return search_failed(self.newest_failed(sys.maxsize), self.names(), self.path,
                                 migration=migration, text=text, offset=offset, limit=limit)

    @abstractmethod
    def failed_counts(self) -> dict[str, dict[str, int]]:
        """How many failed records each migration has, by action: ``{identity: {"RETRY": n}}``
        (without reading the records)."""

    @abstractmethod
    def fatal_errors(self, limit: int | None = None) -> list[str]:
        """The fatal errors recorded (source unreadable...), oldest first; the ``limit``
        newest when given."""

    @abstractmethod
    def fatal_count(self) -> int:
        """How many fatal errors are recorded."""

    # --- events and verifications -----------------------------------------------------------------

    def events(self, after: int = 0, limit: int = EVENTS_PAGE) -> list[dict[str, Any]]:
        """The event log (:func:`~ferryman.progress.ledger.new_event`), oldest first: at most
        ``limit`` events whose ``seq`` is above ``after`` (a ledger that keeps none: empty)."""
        return []

    def verification(self) -> dict[str, Any] | None:
        """The newest verification result (``VerificationResult.to_dict()``), None when the
        ledger holds none."""
        return None

    # --- the whole progress ---------------------------------------------------------------------

    def progress(self) -> MigrationProgress:
        """The whole progress as mjg's model (memory grows with it: for export and callbacks)."""
        with self.snapshot():
            migrations = {}
            for identity in self.identities():
                entry = MigrationEntry(identity)
                entry.succeeded = dict.fromkeys(self.iter_succeeded(identity))
                entry.failed = {f.id: f for f in self.iter_failed(identity)}
                migrations[identity] = entry
            return MigrationProgress(self.metadata(), migrations, self.fatal_errors())

    # --- what partitions of a run with workers read of it ------------------------------------

    @abstractmethod
    def ledger_uid(self) -> str:
        """The ledger's own id (in the journal keys of its runs' batches)."""

    @abstractmethod
    def migration_id(self, identity: str) -> int | None:
        """The row id of a migration, None when the ledger does not know it."""

    @abstractmethod
    def present(self, table: str, mid: int, keys: list[str]) -> Iterable[str]:
        """Which of ``keys`` (encoded ids) ``table`` (``succeeded`` or ``failed``) holds for
        the migration of row id ``mid``."""

    def logged_ids(self, mid: int, text: str, has_failed: bool) -> Iterable[RecordId]:
        """The ids of one logged page of successes (its JSON array ``text``) less those failed
        since; ``has_failed``: whether the migration has failed records at all (else no lookup)."""
        if has_failed:
            keys = array_keys(text)
            failed = set(self.present("failed", mid, keys))
            if failed:
                return (decode_id(k) for k in keys if k not in failed)
        return array_ids(text)

    @abstractmethod
    def has_rows(self, table: str, mid: int) -> bool:
        """Whether ``table`` holds anything of the migration of row id ``mid``."""

    @abstractmethod
    def logged_texts(self, identity: str, chunk: int) -> Iterator[str]:
        """The migration's succeeded ids as JSON arrays (of at most ``chunk`` ids for those
        stored one per row; the log's as logged), undecoded: for a migration without failed
        records, which nothing then needs to leave out."""

    def partitions(self, key: str) -> PartitionSet | None:
        """The partitions of migration ``key`` a run with workers keeps beside this ledger
        (None: this kind of ledger keeps none)."""
        return None

    # --- connections ----------------------------------------------------------------------------

    @abstractmethod
    def new_reader(self) -> LedgerReader:
        """Another reader of the same ledger, on a connection of its own (for another thread)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
