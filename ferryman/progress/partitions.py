"""The partitions of a migration that several workers run at once, whatever ledger keeps them.

While a run with workers runs a migration, its ledger keeps beside the migration's progress:

- the **split**: the key-range boundaries of this round, and a round id (a new one for every
  split, so that a worker of an earlier round never takes a partition of a later one);
- the **retried** ids: those the coordinator's retry pass ran in this round (the workers' main
  passes leave them out, as a single process's main pass does);
- one **partition ledger** per range: a ledger of the same kind with a lease and journal key
  of its own (:class:`PartitionLookups`). A worker claims a partition by taking that lease; the
  journal key and lease epoch fence its batches in the destination, so a worker taken over
  after a pause cannot commit a batch more.

When the workers are done or stopped (and, first thing, when a coordinator that died left
some), the coordinator takes each partition over, folds it into the main ledger
(:meth:`PartitionSet.merge_into`) and removes them all: every run starts with fresh
partitions, and what earlier runs did is in the main ledger.

:class:`PartitionSet` holds what does not depend on where this is kept; the SQLite ledger keeps
it in files beside its own (:mod:`.sqlite.parts`), the PostgreSQL ledger in schemas beside its
own (:mod:`.postgres.parts`), so that workers on other hosts reach it.
"""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from itertools import islice, pairwise
from typing import Any, Self

from ..report import RunResult
from ..stores.base import Store
from ..types import RecordId
from .codec import as_id, decode_id, encode_id, encode_ids
from .durable import DurableLedger
from .lease import Holder
from .model import Action
from .reader import LedgerReader, RunRecord

MERGE_CHUNK = 10_000
"""Ids a merge hands the main ledger at a time (memory stays bounded by it)."""

SETTLED = frozenset({"completed", "failed"})
"""Run outcomes after which a partition is done for this round (failures are merged as failed
records or fatal errors; the next run runs the range again, skipping what succeeded)."""

SHOWN_COUNTS = ("read", "succeeded", "failed", "skipped", "ignored", "written")
"""The counters the status shows per partition."""

ADDED_UP = ("written", "retried")
"""Counters each attempt at a partition counts for itself alone."""

KeyRange = tuple[RecordId | None, RecordId | None]


class PartitionLookups(LedgerReader, DurableLedger):
    """What a partition's ledger answers differently from a main ledger: what earlier runs did
    is looked up in the main ledger (``main``, where merges put it); what earlier attempts at
    this partition did, in its own. Mixed in before a ledger class (a reader and a durable
ledger), whose ``__init__`` then calls :meth:`_join`."""

    main: LedgerReader

    def _join(self, main: LedgerReader, main_uid: str) -> None:
        self.journal_owner = f"{main_uid}/{self.uid}"
        self.main = main
        self._main_succeeded: dict[str, int | None] = {}
        self._main_ignored: dict[str, set[RecordId]] = {}

    def succeeded_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        """Done by earlier runs: merged into the main ledger."""
        mid = self._main_done(identity)
        if mid is None:
            return set()
        return {decode_id(k) for k in self.main.present("succeeded", mid, list(map(encode_id, ids)))}

    def ignored_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        ignored = self._main_ignored.get(identity)
        if ignored is None:  # read once: the main ledger does not change while workers run
            ignored = self._main_ignored[identity] = {
                f.id for f in self.main.iter_failed(identity) if f.action is Action.IGNORE}
        return {i for i in ids if i in ignored} if ignored else set()

    def done_before(self, identity: str, ids: Sequence[RecordId]) -> tuple[set[RecordId], set[RecordId]]:
        """What earlier attempts at this partition in this run recorded (a worker that died),
        batches found in the destination's journal included."""
        mid = self._mid(identity)
        if mid not in self._maybe_done and mid not in self._has_failed:
            return set(), set()  # a first attempt
        keys = list(map(encode_id, ids))
        succeeded, failed = ({decode_id(k) for k in self.present(table, mid, keys)}
                             for table in ("succeeded", "failed"))
        return succeeded, failed

    def retry_ids(self, identity: str) -> list[RecordId]:
        """None: an earlier attempt's failures are the next run's to retry (the coordinator's,
        from the main ledger), not this attempt's."""
        return []

    def _main_done(self, identity: str) -> int | None:
        """The migration's row in the main ledger when it holds successes for it, else None
        (asked once: the main ledger does not change while workers run)."""
        if identity not in self._main_succeeded:
            mid = self.main.migration_id(identity)
            self._main_succeeded[identity] = mid if mid is not None and self.main.has_rows("succeeded", mid) else None
        return self._main_succeeded[identity]


@dataclass
class PartitionView:
    """One partition as one read of its ledger found it."""

    runs: list[RunRecord]
    """Newest first."""
    holder: Holder | None
    reports: list[dict[str, Any]]
    """Every attempt's report as of its last checkpoint."""

    @property
    def outcome(self) -> str | None:
        """How the newest attempt ended (None: none yet, or it is running, or it died)."""
        return self.runs[0].outcome if self.runs else None

    @property
    def settled(self) -> bool:
        """Whether the partition ended its range in this round (completed or failed)."""
        return self.outcome in SETTLED

    @property
    def held(self) -> bool:
        """Whether a live worker (of this run or of one before it) holds the partition."""
        return self.holder is not None and self.holder.alive()

    def report(self) -> dict[str, Any] | None:
        """The partition's report: the attempt that got furthest counts every record of the
        range it met (what earlier attempts did among them), so its counters are the
        partition's; the outputs written and records retried add up over the attempts."""
        if not self.reports:
            return None
        furthest = max(self.reports, key=_read).copy()
        for name in ADDED_UP:
            furthest[name] = sum(int(r.get(name) or 0) for r in self.reports)
        return furthest

    def state(self) -> dict[str, Any]:
        """What :func:`partition_status` shows of the partition."""
        held, report = self.held, self.report() or {}
        newest = self.runs[0] if self.runs else None
        rate = 0.0
        if newest is not None:
            elapsed = (newest.ended_at or time.time()) - newest.started_at
            rate = round(float(report.get("read") or 0) / elapsed, 3) if elapsed > 0 else 0.0
        return {
            "state": "running" if held else (newest.outcome or "died") if newest else "pending",
            "attempts": len(self.runs),
            "holder": f"pid {self.holder.pid} on {self.holder.host}" if held and self.holder else None,
            "rate": rate,
            **{name: int(report.get(name) or 0) for name in SHOWN_COUNTS},
        }


class PartitionSet(ABC):
    """The partitions of one migration of one ledger (see the module docstring); the subclass
    says where they are kept."""

    # --- where each ledger kind keeps them ------------------------------------------------------

    @abstractmethod
    def _read(self, name: str) -> Any:
        """The JSON document ``name`` (``split`` or ``retried``); None when there is none."""

    @abstractmethod
    def _write(self, name: str, data: Any) -> None:
        """Replace the JSON document ``name``, durably (making room for the partitions first)."""

    @abstractmethod
    def claiming(self, round_id: str) -> AbstractContextManager[bool]:
        """Hold the right to claim a partition of round ``round_id``; yields False when that
        round is over (closed, or another round opened since): then the worker stops."""

    @abstractmethod
    def close(self) -> None:
        """End the round: no worker claims a partition of it any more (one claiming now
        finishes its claim first, and then holds the partition's lease)."""

    @abstractmethod
    def ledger(self, index: int, main: Any) -> PartitionLookups:
        """Partition ``index``'s ledger, open for a run, reading earlier runs' progress in
        ``main`` (the main ledger)."""

    @abstractmethod
    def reading(self, index: int) -> AbstractContextManager[LedgerReader | None]:
        """A reader of partition ``index``'s ledger while inside; None when it has none yet."""

    @abstractmethod
    def existing(self) -> list[int]:
        """The partitions that have a ledger."""

    @abstractmethod
    def remove(self) -> None:
        """Remove the split and every partition's ledger."""

    def release(self) -> None:
        """Close what the set holds open (a connection; opened again when needed)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --- the split, kept on resume --------------------------------------------------------------

    def boundaries(self) -> list[RecordId] | None:
        """The boundaries of the open round; None when there is none (or it was closed)."""
        data = self._read("split")
        return None if data is None else [as_id(b) for b in data["boundaries"]]

    def round(self) -> str | None:
        """The open round's id."""
        data = self._read("split")
        return None if data is None else str(data["round"])

    def save_split(self, boundaries: Sequence[RecordId]) -> None:
        """Open a round with these boundaries."""
        self._write("split", {"round": uuid.uuid4().hex, "boundaries": json.loads(encode_ids(boundaries))})

    def ranges(self) -> list[KeyRange]:
        """The partitions' key ranges ``(after, upto]``, in key order."""
        bounds: list[RecordId | None] = [None, *(self.boundaries() or []), None]
        return list(pairwise(bounds))

    def save_retried(self, ids: Sequence[RecordId]) -> None:
        self._write("retried", {"ids": json.loads(encode_ids(list(ids)))})

    def retried(self) -> list[RecordId]:
        data = self._read("retried")
        return [] if data is None else [as_id(i) for i in data["ids"]]

    # --- the partitions' progress ----------------------------------------------------------------

    def view(self, index: int) -> PartitionView:
        """Partition ``index`` as its ledger says now, read once (its runs, holder, reports)."""
        with self.reading(index) as reader:
            if reader is None:
                return PartitionView([], None, [])
            runs = reader.runs()
            reports = [report for run in runs for report in reader.run_reports(run.id)]
            return PartitionView(runs, reader.holder(), reports)

    def settled(self, index: int) -> bool:
        return self.view(index).settled

    def take_over(self, index: int, main: Any, key: str, dest: Store) -> None:
        """Take partition ``index``'s lease from its dead worker (raising the fence, so that it
        cannot commit a batch more) and fold the batches in the destination's journal back."""
        ledger = self.ledger(index, main)
        try:
            ledger.begin_run([])
            ledger.recover(key, dest)
            ledger.end_run(RunResult([]))
        finally:
            ledger.close()

    def merge_into(self, main: DurableLedger, key: str, index: int) -> tuple[list[str], str | None]:
        """Hand partition ``index``'s succeeded ids, failed records and fatal errors to the
        main ledger (recorded, not yet checkpointed). Returns the fatal errors and the uid of
        the partition's ledger (its journal entries' owner, to clean once ``main`` is durable).

        Successes go over as the JSON arrays the partition logged them in, undecoded (when it
        has no failed record, which could be one of them). Merging twice records the same
        records again, which changes nothing (a fatal error is then listed twice): a
        coordinator that dies in the middle merges the whole partition again."""
        with self.reading(index) as reader:
            if reader is None:
                return [], None
            failed = list(reader.iter_failed(key))
            if failed:
                ids = reader.iter_succeeded(key)
                while chunk := list(islice(ids, MERGE_CHUNK)):
                    main.record(key, chunk, [])
                main.record(key, [], failed)
            else:
                for text in reader.logged_texts(key, MERGE_CHUNK):
                    main.record_encoded(key, text)
            fatal = reader.fatal_errors()
            for text in fatal:
                main.record_fatal(key, text)
            return fatal, reader.ledger_uid()


def partition_status(reader: LedgerReader, migrations: dict[str, str]) -> list[dict[str, Any]]:
    """The partitions a run with workers has at the moment beside the ledger ``reader`` reads,
    of the ``migrations`` given (key -> name): per partition its range, state (``running`` while
    a live worker holds it, else how its last attempt ended, ``pending`` before any), attempts,
    holder and counters as of its last checkpoint, and rate."""
    found = []
    for key, name in migrations.items():
        parts = reader.partitions(key)
        if parts is None:
            continue
        with parts:
            if parts.boundaries() is None:
                continue
            for index, (after, upto) in enumerate(parts.ranges()):
                found.append({"migration": name, "index": index, "after": _shown(after), "upto": _shown(upto),
                              **parts.view(index).state()})
    return found


def _shown(record_id: RecordId | None) -> Any:
    return list(record_id) if isinstance(record_id, tuple) else record_id


def _read(report: dict[str, Any]) -> int:
    return int(report.get("read") or 0)
