"""Save outputs in batches that span many input records; find the culprits when one fails.

A batch (one ``save_all``, one transaction) holds the outputs of whole input records, up to
``save_batch_size`` outputs; a record with more outputs than that gets a batch of its own, so a
record is never half-saved (mjg split one record over several transactions). When a batch
fails it is split in halves, each saved on its own, until the failing records stand alone:
a bad record costs O(log n) extra saves and never blames its neighbours. A lone record's
duplicate goes to ``handle_duplicate``. Stores that are not atomic get one record per batch.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

from ..declare import MigrationSpec
from ..errors import DuplicateDataError, TerminalStoreError, TransientStoreError
from ..stores.base import JournalEntry, Store
from ..types import RecordId
from .work import Phase, Work, live

JournalFor = Callable[[list[RecordId]], "JournalEntry | None"]


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

    @property
    def journaled(self) -> bool:
        """True when every batch is committed with a journal entry of its input ids."""
        return self.journal_for is not None

    def save(self, works: list[Work]) -> None:
        """Save every live record's outputs; each ends saved or failed (or untouched on stop)."""
        for batch in self._batches(live(works)):
            if self.should_stop():
                return
            self._save_batch(batch)

    def _batches(self, works: list[Work]) -> Iterator[list[Work]]:
        limit = self.spec.save_batch_size if self.dest.atomic else 1
        batch: list[Work] = []
        size = 0
        for w in works:
            if not w.outputs:
                w.saved = True  # nothing to write: migrated
                continue
            if batch and size + len(w.outputs) > limit:
                yield batch
                batch, size = [], 0
            batch.append(w)
            size += len(w.outputs)
        if batch:
            yield batch

    def _write(self, works: list[Work], outputs: list[dict[str, Any]]) -> None:
        if self.journal_for is not None:
            self.dest.save_all(outputs, journal=self.journal_for([w.id for w in works]))
        else:
            self.dest.save_all(outputs)
        self.written += len(outputs)
        for w in works:
            w.saved = True

    def _save_batch(self, works: list[Work]) -> None:
        outputs = [o for w in works for o in w.outputs] if len(works) > 1 else works[0].outputs
        try:
            self._write(works, outputs)
            return
        except TransientStoreError as exc:  # not about any record: retry them all later
            for w in works:
                w.fail(Phase.SAVE, exc, self.spec.save_retry)
            return
        except Exception as exc:
            if len(works) == 1:
                self._save_alone(works[0], exc)
                return
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
