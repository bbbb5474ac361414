"""A dry run (:meth:`~ferryman.MigrationService.dry_run`): reads and transforms as a run does,
saves nothing and records no progress, and says what each migration would write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .report import MigrationState, RunResult
from .stores.base import JournalEntry, Store
from .types import Filter, Record, RecordId

DRY_RUN_FOOTER = ("dry run: nothing was saved and no progress was written; what a destination would refuse "
                  "(a duplicate key, NOT NULL, another constraint) shows only in a real run")
"""The last line of a dry run's summary: its counts cannot include the destinations' refusals."""


class DryRunStore(Store):
    """A destination that reads through to the real store and saves nothing, only counting."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner.name, inner.key)
        self.inner = inner
        self.saved = 0

    def id_of(self, record: Record) -> RecordId:
        return self.inner.id_of(record)

    def describe(self, record: Record) -> str:
        return self.inner.describe(record)

    def read_page(self, filter: Filter | None, after: RecordId | None, limit: int) -> list[Record]:
        return self.inner.read_page(filter, after, limit)

    def get_many(self, ids: Sequence[RecordId]) -> list[Record]:
        return self.inner.get_many(ids)

    def count(self, filter: Filter | None = None) -> int | None:
        return self.inner.count(filter)

    def save_all(self, records: list[Record], *, journal: JournalEntry | None = None) -> None:
        self.saved += len(records)


@dataclass
class DryRunResult(RunResult):
    """What a dry run did: a :class:`RunResult` where nothing was saved."""

    would_write: dict[str, int] = field(default_factory=dict)
    """Records each migration's destination would have received, by migration name."""

    def summary(self) -> str:
        lines = []
        for r in self.reports:
            if r.state is MigrationState.HELD_BACK:
                why = r.held_back_reason or f"{', '.join(r.held_back_by)} would fail"
                lines.append(f"{r.name}: not run: a run would hold it back ({why})")
                continue
            line = (f"{r.name}: would write {self.would_write.get(r.name, 0):,} record(s) to {r.dest} "
                    f"({r.read:,} read, {r.skipped:,} already done, {r.ignored:,} ignored, {r.failed:,} would fail)")
            if r.fatal_error:
                line += f"; fatal: {r.fatal_error}"
            lines.append(line)
        lines.append(DRY_RUN_FOOTER)
        return "\n".join(lines)
