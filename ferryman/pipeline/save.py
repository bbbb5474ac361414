"""Save outputs in batches that span many input records; find the culprits when one fails.

A batch (one ``save_all``, one transaction) holds the outputs of whole input records, up to
``save_batch_size`` outputs; a record with more outputs than that gets a batch of its own, so a
record is never half-saved (mjg split one record over several transactions). Stores that are
not atomic get one record per batch.

What a failed batch's error says decides who is blamed (``stores/sql/driver_errors.py`` maps
the drivers' errors to these classes):

* :class:`~ferryman.errors.StoreUnusableError` (the table or a column is missing, no
  permission): no record could be saved, so none is blamed. It is raised to the runner, which
  ends the migration with one fatal error; no further batch is begun, none is split.
* :class:`~ferryman.errors.FencedOffError` (the destination's fence refused the batch: another
  run took this run's lease over while the batch was on its way): a lost lease. It is raised to
  the runner at once, as the ledger's own LeaseLostError is: nothing more is written, no record
  fails, nothing is split.
* :class:`~ferryman.errors.TransientStoreError` (an outage, a busy database, a commit whose
  outcome is unknown): not about any record. The batch's records all fail with ``save_retry``
  and are run again later; the batch is not split, so an outage costs one failed save per
  batch, not one per record (and a batch in doubt is retried whole, under its journal entry).
* :class:`~ferryman.errors.ConnectionDroppedError` (the connection was lost, but the database
  answers a new one) and any other error (a duplicate, NOT NULL, a value the driver refuses):
  about some record of the batch. The batch is split in halves, each saved on its own, until
  the failing records stand alone: a bad record costs O(log n) extra saves and never blames
  its neighbours. A duplicate whose records the store names costs less: the others are saved
  together, the named ones alone. A lone record's duplicate goes to ``handle_duplicate``; a
  lone record whose connection was dropped fails with ``save_retry`` (a connection killed by
  an operator is not its fault); any other error fails it for good.

After a duplicate the store named, the engine asks the store which records of each next batch
clash on the key (``Store.key_clashes``, one lookup) before saving it, and saves those alone
and the others together at once: a destination where duplicates are common (a re-run after its
ledger was lost) then costs a lookup per batch, not a failed save, a rollback and a second save.
It stops asking after :data:`CLASH_CHECKS` batches in a row without a clash.

Saving overlaps with the next page: :meth:`Saver.start` begins an attempt's batches (see
:class:`~.work.Attempt`) with ``Store.begin_save_all``, one after the other, and returns while
the last may still be on its way (PostgreSQL commits a COPY on its own), so the runner reads,
matches and transforms the next page while the database works; :meth:`Saver.finish` waits for it
and settles every batch: noting what was saved, bisecting a failed batch, ``handle_duplicate``.
All of it runs on the caller's thread: a writer thread would fight the reading thread for the
GIL at every row a driver hands over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, TypeVar

from ..declare import MigrationSpec
from ..errors import (
    ConnectionDroppedError,
    DuplicateDataError,
    LeaseLostError,
    StoreUnusableError,
    TerminalStoreError,
    TransientStoreError,
    describe_error,
)
from ..stores.base import JournalEntry, PendingWrite, Store
from ..types import Record, RecordId
from .work import Attempt, Phase, Work

_FIRST = itemgetter(0)
log = logging.getLogger("ferryman")

Positions = range | list[int]
"""Where a batch's records are in its attempt: a run of positions, or a list of them."""
Batch = tuple[Positions, list[Record]]
"""One ``save_all``: its records' positions and their outputs."""

JournalFor = Callable[[list[RecordId]], JournalEntry | None]

T = TypeVar("T")

CLASH_CHECKS = 8
"""Batches looked up before they are saved after a duplicate the store named, or after a lookup
that found a clash: enough to bridge the batches between scattered duplicates, few enough that
a migration whose duplicates ended soon stops paying for lookups."""


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
        before_write: Callable[[], None] = lambda: None,
    ) -> None:
        self.spec = spec
        self.source = source
        self.dest = dest
        self.registry = registry
        self.handle_duplicate = getattr(instance, "handle_duplicate", None)
        self.journal_for = journal_for if dest.supports_journal else None
        self.should_stop = should_stop
        self.before_write = before_write
        """Called before every write; raises to stop all writing (the ledger's lease was lost)."""
        self.written = 0
        self.saves = 0
        """Batches saved one at a time (the parts of a failed batch, replacements): counted for
        the log."""
        self._clash_checks = 0
        """How many more batches to look up before saving them (see :data:`CLASH_CHECKS`)."""

    @property
    def journaled(self) -> bool:
        """True when every batch is committed with a journal entry of its input ids."""
        return self.journal_for is not None

    def start(self, attempt: Attempt) -> PendingSave:
        """Begin saving the attempt's batches; :meth:`finish` must follow (before the next start).

        Each batch waits for the one before (a store takes one write at a time); the last one may
        still be on its way when this returns."""
        batches, nothing_to_write = self._batches(attempt)
        pending = PendingSave(attempt)
        pending.succeeded += nothing_to_write  # no outputs: migrated as it is
        for batch in batches:
            if self._clash_checks:
                pending.settle_write()  # the batch before is in the store when this one's keys are looked up
                parts = self._clashes_apart(attempt, batch)
            else:
                parts = [batch]
            for positions, outputs in parts:
                if self.should_stop():
                    return pending  # the batches not begun have no outcome: left untouched
                pending.settle_write()
                if pending.unusable:
                    return pending  # no batch can be saved: :meth:`finish` raises the error
                self.before_write()
                pending.batches.append((positions, outputs))
                pending.write = self._begin_batch(outputs, self._journal(_picked(attempt.ids, positions)))
        return pending

    def finish(self, pending: PendingSave) -> None:
        """Wait for the last batch, then settle each: saved, or split to find its culprits.

        ``pending.succeeded`` and ``pending.failed`` grow batch by batch as they are settled.

        Raises:
            StoreUnusableError: a batch found the destination unusable; the batches settled
                before it are in ``pending.succeeded``, the others have no outcome.
        """
        pending.settle_write()
        ids = pending.attempt.ids
        for (positions, outputs), error in zip(pending.batches, pending.outcomes):
            if error is None:
                self.written += len(outputs)
                pending.succeeded += _picked(ids, positions)
                continue
            if isinstance(error, DuplicateDataError) and error.records:
                self._clash_checks = CLASH_CHECKS
            works = [pending.attempt.work(p) for p in positions]
            splits = _splits(works, error)
            if splits:
                log.info("%s: a batch of %d record(s) failed (%s); saving it in parts to find the "
                         "failing records", self.spec.name, len(works), describe_error(error))
            saves = self.saves
            self._settle_failure(works, error)
            pending.succeeded += [w.id for w in works if w.saved]
            pending.failed += [w for w in works if w.error is not None]
            if splits:
                log.info("%s: %d of the batch's %d record(s) failed on their own, found in %d more save(s)",
                         self.spec.name, sum(w.error is not None for w in works), len(works), self.saves - saves)

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

    def _clashes_apart(self, attempt: Attempt, batch: Batch) -> list[Batch]:
        """The batch as it is, or, when the store names records of it that clash on the key,
        the others together and each named one alone, as :func:`_parts` splits a batch that
        failed on them (so each named record meets its duplicate, and ``handle_duplicate``,
        alone)."""
        positions, outputs = batch
        if len(positions) < 2:
            return [batch]
        try:
            named = self.dest.key_clashes(outputs)
        except Exception:  # a shortcut only: the save meets what the lookup could not do
            named = None
        culprit = _culprits([attempt.outputs[p] for p in positions], named) if named else []
        if not any(culprit):
            self._clash_checks = 0 if named is None else self._clash_checks - 1
            return [batch]
        self._clash_checks = CLASH_CHECKS
        return [(part, [o for p in part for o in attempt.outputs[p]]) for part in _apart(positions, culprit)]

    @staticmethod
    def _outputs(works: list[Work]) -> list[Record]:
        return [o for w in works for o in w.outputs] if len(works) > 1 else list(works[0].outputs)

    def _journal(self, ids: list[RecordId]) -> JournalEntry | None:
        return None if self.journal_for is None else self.journal_for(ids)

    def _begin_batch(self, outputs: list[Record], journal: JournalEntry | None) -> PendingWrite | Exception:
        """The batch begun, or the error that stopped it (a lost lease is raised: the run stops)."""
        try:
            return self._begin(outputs, journal)
        except LeaseLostError:
            raise
        except Exception as exc:
            return exc

    def _begin(self, outputs: list[Record], journal: JournalEntry | None) -> PendingWrite:
        return self.dest.begin_save_all(outputs, journal=journal)

    def _saved(self, works: list[Work], outputs: list[Record]) -> None:
        self.written += len(outputs)
        for w in works:
            w.saved = True

    def _write(self, works: list[Work], outputs: list[Record]) -> None:
        self.saves += 1
        self._begin(outputs, self._journal([w.id for w in works])).wait()
        self._saved(works, outputs)

    def _save_batch(self, works: list[Work]) -> None:
        self.before_write()
        try:
            self._write(works, self._outputs(works))
            return
        except LeaseLostError:
            raise
        except Exception as exc:
            error = exc
        # Settled outside the except block: the parts' own errors would otherwise chain onto
        # this one ("During handling of the above exception..."), once per halving.
        self._settle_failure(works, error)

    def _settle_failure(self, works: list[Work], error: Exception) -> None:
        if isinstance(error, StoreUnusableError):
            raise error  # about the store, not a record: the runner ends the migration
        if not _about_records(error):
            for w in works:  # not about any record: retry them all later
                w.fail(Phase.SAVE, error, self.spec.save_retry, shared=len(works))
            return
        if len(works) == 1:
            self._save_alone(works[0], error)
            return
        # The parts find the culprits and keep their own errors; this one's traceback would only
        # keep the store's frames, and through them the page, alive in a reference cycle.
        error.__traceback__ = None
        for part in _parts(works, error):
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
        except StoreUnusableError:
            raise
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
        self.before_write()
        try:  # save these instead, once
            self._write([work], replacement)
        except (StoreUnusableError, LeaseLostError):
            raise
        except Exception as exc:
            self._fail(work, exc)

    def _fail(self, work: Work, error: Exception) -> None:
        deterministic = isinstance(error, (DuplicateDataError, TerminalStoreError))
        work.fail(Phase.SAVE, error, None if deterministic else self.spec.save_retry)


class PendingSave:
    """An attempt's batches as begun by :meth:`Saver.start`, and what became of its records so far."""

    __slots__ = ("attempt", "batches", "failed", "outcomes", "succeeded", "write")

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.batches: list[Batch] = []
        """The batches begun, in order."""
        self.outcomes: list[Exception | None] = []
        """Of each batch begun, in order: None (saved) or its error."""
        self.write: PendingWrite | Exception | None = None
        """The last batch begun (or the error that stopped it), until its outcome is noted."""
        self.succeeded: list[RecordId] = []
        self.failed: list[Work] = []
        """Records the save failed, each a Work of its own (the attempt's earlier failures are
        in ``attempt.failed``)."""

    def settle_write(self) -> None:
        """Wait for the batch in flight, if any, and note its outcome."""
        write, self.write = self.write, None
        if write is not None:
            self.outcomes.append(write if isinstance(write, Exception) else _outcome(write))

    @property
    def unusable(self) -> bool:
        """True when the last batch settled found the store unusable."""
        return bool(self.outcomes) and isinstance(self.outcomes[-1], StoreUnusableError)


def _about_records(error: Exception) -> bool:
    """Whether a failed save's error is about some of its records (not an outage)."""
    return not isinstance(error, TransientStoreError) or isinstance(error, ConnectionDroppedError)


def _splits(works: list[Work], error: Exception) -> bool:
    """Whether :meth:`Saver._settle_failure` splits this failed batch to find its culprits."""
    return len(works) > 1 and _about_records(error) and not isinstance(error, StoreUnusableError)


def _parts(works: list[Work], error: Exception) -> list[list[Work]]:
    """How a failed batch is split: when the store named the records of a duplicate (by the very
    objects it was given), the others together and each named one alone (two saves, and one per
    culprit, instead of halving ~log2(n) times); otherwise in halves."""
    if isinstance(error, DuplicateDataError) and error.records:
        culprit = _culprits([w.outputs for w in works], error.records)
        if any(culprit):
            return _apart(works, culprit)
    half = len(works) // 2
    return [works[:half], works[half:]]


def _apart(items: Sequence[T], culprit: list[bool]) -> list[list[T]]:
    """The items not marked culprit together (when there are any), then each culprit alone."""
    rest = [item for item, c in zip(items, culprit) if not c]
    return ([rest] if rest else []) + [[item] for item, c in zip(items, culprit) if c]


def _culprits(outputs_of: list[Sequence[Record]], named: Sequence[Record]) -> list[bool]:
    """For each record (given by its outputs), whether the store named one of its outputs (by
    the very object it was given)."""
    ids = {id(record) for record in named}
    if set(map(len, outputs_of)) == {1}:  # one output each (the usual case): at C speed
        return list(map(ids.__contains__, map(id, map(_FIRST, outputs_of))))
    return [any(id(o) in ids for o in outputs) for outputs in outputs_of]


def _outcome(write: PendingWrite) -> Exception | None:
    # A function of its own: the error's traceback then holds this frame, not one holding the
    # page (a cycle that would keep the page alive until a collection).
    try:
        write.wait()
        return None
    except LeaseLostError:
        raise
    except Exception as exc:
        return exc


def _picked(items: list[RecordId], positions: Positions) -> list[RecordId]:
    if type(positions) is range:
        return items[positions.start:positions.stop]
    return [items[p] for p in positions]
