"""The partitions of a migration that several workers run at once: their ranges and progress.

While a run with workers runs a migration, the directory :func:`~.writer.parts_directory` beside
the ledger holds:

- ``split.json``: the key-range boundaries of this run;
- ``retried.json``: the ids the coordinator's retry pass ran in this run (the workers' main
  passes leave them out, as a single process's main pass does);
- ``<i>.db``: partition ``i``'s own ledger (:class:`PartitionLedger`). A worker claims a
  partition by taking that ledger's lease; the ledger's journal key and lease epoch fence its
  batches in the destination, so a worker taken over after a pause cannot commit a batch more.

When the workers are done or stopped (and, first thing, when a coordinator that died left
some), the coordinator takes each partition over, folds it into the main ledger
(:meth:`PartitionSet.merge_into`) and removes the directory: every run starts with fresh
partitions, and what earlier runs did is in the main ledger.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import islice, pairwise
from typing import Any

from ...report import RunResult
from ...stores.base import Store
from ...types import RecordId
from ..codec import as_id, decode_id, encode_id, encode_ids
from ..lease import Holder
from ..model import Action
from ..reader import RunRecord
from ..storage import save_text_atomically
from .reader import SqliteReader
from .writer import SqliteLedger, parts_directory

MERGE_CHUNK = 10_000
"""Ids a merge hands the main ledger at a time (memory stays bounded by it)."""

SETTLED = frozenset({"completed", "failed"})
"""Run outcomes after which a partition is done for this round (failures are merged as failed
records or fatal errors; the next run runs the range again, skipping what succeeded)."""

SHOWN_COUNTS = ("read", "succeeded", "failed", "skipped", "ignored", "written")
"""The counters the status shows per partition."""

CLAIMS_LOCK = "claims.lock"
"""The file whose lock a worker holds while it claims a partition, and the coordinator while it
closes the round."""

ADDED_UP = ("written", "retried")
"""Counters each attempt at a partition counts for itself alone."""

KeyRange = tuple[RecordId | None, RecordId | None]


class PartitionLedger(SqliteLedger):
    """Partition ``i``'s ledger: a file, a lease and journal key of its own; what earlier
    runs did is looked up in the main ledger (``main``, read only), where merges put it."""

    def __init__(self, path: str, main: SqliteReader, main_uid: str) -> None:
        super().__init__(path)
        self.journal_owner = f"{main_uid}/{self.uid}"
        self.main = main
        self._main_succeeded: dict[str, int | None] = {}
        self._main_ignored: dict[str, set[RecordId]] = {}

    def succeeded_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        """Done by earlier runs: merged into the main ledger."""
        mid = self._main_done(identity)
        if mid is None:
            return set()
        return {decode_id(k) for k in self.main._present("succeeded", mid, list(map(encode_id, ids)))}

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
        succeeded, failed = ({decode_id(k) for k in self._present(table, mid, keys)}
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
            has_any = mid is not None and self.main.conn.execute(
                "SELECT 1 FROM succeeded WHERE migration = ? LIMIT 1", (mid,)).fetchone() is not None
            self._main_succeeded[identity] = mid if has_any else None
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


class PartitionSet:
    """The partitions of one migration, kept in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    # --- the split, kept on resume --------------------------------------------------------------

    def boundaries(self) -> list[RecordId] | None:
        """The boundaries of the open round; None when there is none (or it was closed)."""
        data = self._read("split.json")
        return None if data is None else [as_id(b) for b in data["boundaries"]]

    def round(self) -> str | None:
        """The open round's id: a new one for every split, so that a worker of an earlier
        round never takes a partition of a later one for its own."""
        data = self._read("split.json")
        return None if data is None else str(data["round"])

    def save_split(self, boundaries: Sequence[RecordId]) -> None:
        """Open a round with these boundaries."""
        os.makedirs(self.directory, exist_ok=True)
        self._write("split.json", {"round": uuid.uuid4().hex, "boundaries": json.loads(encode_ids(boundaries))})

    @contextmanager
    def claiming(self, round_id: str) -> Iterator[bool]:
        """Hold the right to claim a partition of round ``round_id``; yields False when that
        round is over (closed, or another round opened since): then the worker stops."""
        with self._claims_locked() as present:
            yield present and self.round() == round_id

    def close(self) -> None:
        """End the round: no worker claims a partition of it any more (one claiming now
        finishes its claim first, and then holds the partition's lease)."""
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

    def ranges(self) -> list[KeyRange]:
        """The partitions' key ranges ``(after, upto]``, in key order."""
        bounds: list[RecordId | None] = [None, *(self.boundaries() or []), None]
        return list(pairwise(bounds))

    def save_retried(self, ids: Sequence[RecordId]) -> None:
        self._write("retried.json", {"ids": json.loads(encode_ids(list(ids)))})

    def retried(self) -> list[RecordId]:
        data = self._read("retried.json")
        return [] if data is None else [as_id(i) for i in data["ids"]]

    # --- the partitions' ledgers ------------------------------------------------------------------

    def ledger_path(self, index: int) -> str:
        return os.path.join(self.directory, f"{index}.db")

    def view(self, index: int) -> PartitionView:
        """Partition ``index`` as its ledger says now, read once (its runs, holder, reports)."""
        reader = self._reader(index)
        if reader is None:
            return PartitionView([], None, [])
        try:
            runs = reader.runs()
            reports = [report for run in runs for report in reader.run_reports(run.id)]
            return PartitionView(runs, reader.holder(), reports)
        finally:
            reader.close()

    def settled(self, index: int) -> bool:
        return self.view(index).settled

    def existing(self) -> list[int]:
        """The partitions that have a ledger."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(int(name[:-3]) for name in os.listdir(self.directory)
                      if name.endswith(".db") and name[:-3].isdigit())

    def take_over(self, index: int, main: SqliteLedger, key: str, dest: Store) -> None:
        """Take partition ``index``'s lease from its dead worker (raising the fence, so that it
        cannot commit a batch more) and fold the batches in the destination's journal back."""
        ledger = PartitionLedger(self.ledger_path(index), SqliteReader(main.conn, main.path), main.uid)
        try:
            ledger.begin_run([])
            ledger.recover(key, dest)
            ledger.end_run(RunResult([]))
        finally:
            ledger.close()

    def merge_into(self, main: SqliteLedger, key: str, index: int) -> tuple[list[str], str | None]:
        """Hand partition ``index``'s succeeded ids, failed records and fatal errors to the
        main ledger (recorded, not yet checkpointed). Returns the fatal errors and the uid of
        the partition's ledger (its journal entries' owner, to clean once ``main`` is durable).

        Successes go over as the JSON arrays the partition logged them in, undecoded (when it
        has no failed record, which could be one of them). Merging twice records the same
        records again, which changes nothing (a fatal error is then listed twice): a
        coordinator that dies in the middle merges the whole partition again."""
        reader = self._reader(index)
        if reader is None:
            return [], None
        try:
            failed = list(reader.iter_failed(key))
            if failed:
                ids = reader.iter_succeeded(key)
                while chunk := list(islice(ids, MERGE_CHUNK)):
                    main.record(key, chunk, [])
                main.record(key, [], failed)
            else:
                for text in _logged_texts(reader, key):
                    main.record_encoded(key, text)
            fatal = reader.fatal_errors()
            for text in fatal:
                main.record_fatal(key, text)
            owner = reader._meta("uid")
        finally:
            reader.close()
        return fatal, owner

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(self.directory))  # the ledger's partitions directory, once empty
        except OSError:
            pass

    def _reader(self, index: int) -> SqliteReader | None:
        path = self.ledger_path(index)
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            return None
        return SqliteReader.open(path)

    def _read(self, name: str) -> Any:
        try:
            with open(os.path.join(self.directory, name), encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None

    def _write(self, name: str, data: Any) -> None:
        save_text_atomically(os.path.join(self.directory, name), json.dumps(data))


def _logged_texts(reader: SqliteReader, key: str) -> Iterator[str]:
    """A partition's succeeded ids as JSON arrays: its per-id rows, MERGE_CHUNK at a time, then
    its log as logged (a migration without failed records: nothing to leave out of it)."""
    mid = reader.migration_id(key)
    if mid is None:
        return
    rows = (rid for (rid,) in reader.conn.execute("SELECT rid FROM succeeded WHERE migration = ?", (mid,)))
    while chunk := list(islice(rows, MERGE_CHUNK)):
        yield "[" + ",".join(chunk) + "]"
    for (text,) in reader.conn.execute("SELECT ids FROM succeeded_log WHERE migration = ? ORDER BY seq", (mid,)):
        yield text


def partition_status(path: str, migrations: dict[str, str]) -> list[dict[str, Any]]:
    """The partitions a run with workers has at the moment beside the ledger at ``path``, of
    the ``migrations`` given (key -> name): per partition its range, state (``running`` while a
    live worker holds it, else how its last attempt ended, ``pending`` before any), attempts,
    holder and counters as of its last checkpoint, and rate."""
    found = []
    for key, name in migrations.items():
        parts = PartitionSet(parts_directory(path, key))
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
