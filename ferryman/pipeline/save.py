"""Save outputs in batches that span many input records; find the culprits when one fails.

A batch (one ``save_all``, one transaction) holds the outputs of whole input records, up to
``save_batch_size`` outputs; a record with more outputs than that gets a batch of its own, so a
record is never half-saved (mjg split one record over several transactions). When a batch
fails it is split in halves, each saved on its own, until the failing records stand alone:
a bad record costs O(log n) extra saves and never blames its neighbours. A lone record's
duplicate goes to ``handle_duplicate``. Stores that are not atomic get one record per batch.

Saving overlaps with the next page: :meth:`Saver.start` hands an attempt's batches (see
:class:`~.work.Attempt`) to one writer thread and returns at once, so the runner reads, matches
and transforms the next page while the database works (a COPY and a commit are mostly waiting on
the server); :meth:`Saver.finish` waits for them and does everything else in the caller's thread:
noting what was saved, bisecting a failed batch, ``handle_duplicate``. User code never runs on the
writer thread.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from operator import itemgetter
from typing import Any, Callable, Mapping, Union

from ..declare import MigrationSpec
from ..errors import DuplicateDataError, TerminalStoreError, TransientStoreError
from ..stores.base import JournalEntry, Store
from ..types import Record, RecordId
from .work import Attempt, Phase, Work

_FIRST = itemgetter(0)

Positions = Union[range, list[int]]
"""Where a batch's records are in its attempt: a run of positions, or a list of them."""
Batch = tuple[Positions, list[Record]]
"""One ``save_all``: its records' positions and their outputs."""

JournalFor = Callable[[list[RecordId]], Union[JournalEntry, None]]


class Saver:
    """Saves the outputs of a page's records into the destination store."""

    def __init__(
        self,
        spec: MigrationSpec,
        instance: Any,
        source: Store,
        dest: Store,
        registry: Mapping[str, Store],
        journal_for: JournalFor | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.spec = spec
        self.source = source
        self.dest = dest
        self.registry = registry
        self.handle_duplicate = getattr(instance, "handle_duplicate", None)
        self.journal_for = journal_for if dest.supports_journal else None
        self.should_stop = should_stop
        self.written = 0
        self._writer: ThreadPoolExecutor | None = None

    @property
    def journaled(self) -> bool:
        """True when every batch is committed with a journal entry of its input ids."""
        return self.journal_for is not None

    def start(self, attempt: Attempt) -> PendingSave:
        """Begin saving in the writer thread; :meth:`finish` must follow (before the next start)."""
        batches, nothing_to_write = self._batches(attempt)
        pending = PendingSave(attempt, batches)
        pending.succeeded += nothing_to_write  # no outputs: migrated as it is
        if batches:
            journals = [self._journal(_picked(attempt.ids, positions)) for positions, _ in batches]
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferryman-writer")
            pending.future = self._writer.submit(self._first_attempts, batches, journals)
        return pending

    def finish(self, pending: PendingSave) -> None:
        """Wait for the writer, then settle each batch: saved, or split to find its culprits.

        ``pending.succeeded`` and ``pending.failed`` grow batch by batch as they are settled."""
        if pending.future is None:
            return
        ids = pending.attempt.ids
        # Batches the writer did not try (a stop was requested) have no outcome: left untouched.
        for (positions, outputs), error in zip(pending.batches, pending.future.result()):
            if error is None:
                self.written += len(outputs)
                pending.succeeded += _picked(ids, positions)
                continue
            works = [pending.attempt.work(p) for p in positions]
            self._settle_failure(works, error)
            pending.succeeded += [w.id for w in works if w.saved]
            pending.failed += [w for w in works if w.error is not None]

    def close(self) -> None:
        """Stop the writer thread (after the batch it is saving, if any)."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def _first_attempts(self, batches: list[Batch], journals: list[JournalEntry | None]) -> list[Exception | None]:
        """Runs on the writer thread: one ``save_all`` per batch until a stop; only store code
        runs here. The outcome of each batch tried: None (saved) or the error."""
        outcomes: list[Exception | None] = []
        for (_, outputs), journal in zip(batches, journals):
            if self.should_stop():
                break
            outcomes.append(self._attempt(outputs, journal))
        return outcomes

    def _attempt(self, outputs: list[Record], journal: JournalEntry | None) -> Exception | None:
        # A function of its own: the error's traceback then holds this frame, not the outcomes
        # list holding the error (a cycle that would keep the page alive until a collection).
        try:
            self._save_all(outputs, journal)
            return None
        except Exception as exc:
            return exc

    def _batches(self, attempt: Attempt) -> tuple[list[Batch], list[RecordId]]:
        """The records' outputs in batches of whole records, and the ids of records with none."""
        limit = self.spec.save_batch_size if self.dest.atomic else 1
        outputs_of = attempt.outputs
        if set(map(len, outputs_of)) == {1}:  # one output each (the usual case): slices will do
            firsts = list(map(_FIRST, outputs_of))
            count = len(firsts)
            return [(range(start, min(start + limit, count)), firsts[start:start + limit])
                    for start in range(0, count, limit)], []
        batches: list[Batch] = []
        nothing: list[RecordId] = []
        positions: list[int] = []
        outputs: list[Record] = []
        for position, outs in enumerate(outputs_of):
            if not outs:
                nothing.append(attempt.ids[position])
                continue
            if positions and len(outputs) + len(outs) > limit:
                batches.append((positions, outputs))
                positions, outputs = [], []
            positions.append(position)
            outputs += outs
        if positions:
            batches.append((positions, outputs))
        return batches, nothing

    @staticmethod
    def _outputs(works: list[Work]) -> list[Record]:
        return [o for w in works for o in w.outputs] if len(works) > 1 else list(works[0].outputs)

    def _journal(self, ids: list[RecordId]) -> JournalEntry | None:
        return None if self.journal_for is None else self.journal_for(ids)

    def _save_all(self, outputs: list[Record], journal: JournalEntry | None) -> None:
        if journal is not None:
            self.dest.save_all(outputs, journal=journal)
        else:
            self.dest.save_all(outputs)

    def _saved(self, works: list[Work], outputs: list[Record]) -> None:
        self.written += len(outputs)
        for w in works:
            w.saved = True

    def _write(self, works: list[Work], outputs: list[Record]) -> None:
        self._save_all(outputs, self._journal([w.id for w in works]))
        self._saved(works, outputs)

    def _save_batch(self, works: list[Work]) -> None:
        try:
            self._write(works, self._outputs(works))
        except Exception as exc:
            self._settle_failure(works, exc)

    def _settle_failure(self, works: list[Work], error: Exception) -> None:
        if isinstance(error, TransientStoreError):  # not about any record: retry them all later
            for w in works:
                w.fail(Phase.SAVE, error, self.spec.save_retry)
            return
        if len(works) == 1:
            self._save_alone(works[0], error)
            return
        # The halves find the culprits and keep their own errors; this one's traceback would only
        # keep the writer's frames, and through them the page, alive in a reference cycle.
        error.__traceback__ = None
        half = len(works) // 2
        for part in (works[:half], works[half:]):
            if self.should_stop():
                return
            self._save_batch(part)

    def _save_alone(self, work: Work, error: Exception) -> None:
        if not isinstance(error, DuplicateDataError) or self.handle_duplicate is None:
            self._fail(work, error)
            return
        try:
            replacement = self.handle_duplicate(
                error, work.record, list(work.outputs), self.source, self.dest, self.registry
            )
        except Exception as exc:
            work.fail(Phase.SAVE, exc, self.spec.save_retry)
            return
        if replacement is None:  # not handled: the duplicate stands
            self._fail(work, error)
            return
        replacement = list(replacement)
        if not replacement:  # skip: counts as migrated
            work.saved = True
            return
        try:  # save these instead, once
            self._write([work], replacement)
        except Exception as exc:
            self._fail(work, exc)

    def _fail(self, work: Work, error: Exception) -> None:
        deterministic = isinstance(error, (DuplicateDataError, TerminalStoreError))
        work.fail(Phase.SAVE, error, None if deterministic else self.spec.save_retry)


class PendingSave:
    """An attempt's batches handed to the writer thread, and what became of its records so far."""

    __slots__ = ("attempt", "batches", "future", "succeeded", "failed")

    def __init__(self, attempt: Attempt, batches: list[Batch]) -> None:
        self.attempt = attempt
        self.batches = batches
        self.future: Future[list[Exception | None]] | None = None
        self.succeeded: list[RecordId] = []
        self.failed: list[Work] = []
        """Records the save failed, each a Work of its own (the attempt's earlier failures are
        in ``attempt.failed``)."""


def _picked(items: list[RecordId], positions: Positions) -> list[RecordId]:
    if type(positions) is range:
        return items[positions.start:positions.stop]
    return [items[p] for p in positions]
