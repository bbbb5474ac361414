"""start_reduction -> match and reduce -> transform for a batch of records: everything before
the save. The runner saves what it gives; a verification's replay compares it with what the
destination holds instead (nothing saved).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..declare import MigrationSpec
from ..report import MigrationReport
from ..stores.base import Store
from ..types import Record, RecordId
from .match import Matcher, start_reduction
from .transform import transform_batch, transform_records
from .work import Attempt, Batch


class Transformer:
    """The stages before the save, for one migration over the length of a run (the matcher
    keeps the stores it preloaded)."""

    def __init__(self, spec: MigrationSpec, instance: Any, stores: Mapping[str, Store],
                 report: MigrationReport | None = None) -> None:
        self.spec = spec
        self.instance = instance
        self.matcher = Matcher(spec, instance, stores, report)
        self.by_column = getattr(instance, "start_reduction", None) is None and not spec.matches
        """No matching: records need no aggregates kept between the stages."""

    def attempt(self, ids: list[RecordId], records: list[Record]) -> Attempt:
        """One attempt: fresh aggregates, so nothing of an earlier one leaks."""
        if self.by_column:
            return transform_records(self.spec, self.instance, ids, records)
        batch = Batch(ids, records)
        if records:
            start_reduction(self.spec, self.instance, batch)
            self.matcher.match_and_reduce(batch)
        return transform_batch(self.spec, self.instance, batch)
