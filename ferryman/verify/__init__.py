"""Verification: does the destination hold what the ledger says was migrated?

For each migration (:func:`verify_steps`, behind :meth:`MigrationService.verify` and
``ferryman verify``):

1. **counts** — the source's count equals succeeded + failed + ignored in the progress;
2. **outputs** — the records replayed give outputs that are each found, once, under their
   destination key (``get_many``): a deleted row is *missing*, a row saved twice into a
   destination without a unique key is *duplicated*;
3. **replay** — a random sample (or all) of the succeeded records is read by id from the source
   and goes through match and transform again, read-only (:mod:`.replay`), and each output is
   compared field by field with the stored row (:mod:`.compare`: a tolerance for floats, type
   drift told apart from different values);
4. **hook** — the migration's optional ``verify(self, record, outputs, stored)``: None or True
   is fine; False, a message or a list of messages is a problem (``stored`` holds the stored
   row of each output, None where missing).

Nothing is written to any store. Memory holds one batch of records and the sample's ids; the
ids are streamed from the ledger once (:mod:`ferryman.sampling`). A migration may list fields not to
compare (values made at write time, such as a ``loaded_at``) in a class attribute
``verify_ignore = ("loaded_at",)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..errors import InputError
from ..plan import PlanStep
from ..progress.ledger import Ledger
from ..progress.model import Action
from ..progress.reader import LedgerReader
from ..sampling import reservoir
from ..stores.base import Store
from ..types import RecordId
from .replay import verify_migration
from .result import MigrationVerification, Problem, VerificationResult

__all__ = ["MigrationVerification", "Problem", "VerificationResult", "check_sample", "verify_steps"]


def check_sample(sample: int | None) -> int | None:
    """``sample`` when it is None (all) or an int >= 1; InputError otherwise."""
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise InputError(f"sample must be a number of records >= 1 (or None: all), not {sample!r}")
    return sample


def verify_steps(steps: Sequence[PlanStep], instances: Mapping[str, Any], stores: Mapping[str, Store],
                 ledger: Ledger, sample: int | None, seed: int | None = None) -> VerificationResult:
    """Verify each step's migration against the progress in ``ledger`` (read only)."""
    check_sample(sample)
    rng = random.Random(seed)
    started = datetime.now().astimezone()
    results = []
    for step in steps:
        key = ledger.key_of(step.spec.identity, step.writes)
        results.append(verify_migration(step.spec, key, instances[step.spec.identity], stores,
                                        _Succeeded(ledger, key), _failed(ledger, key), sample, rng))
    return VerificationResult(results, sample, seed, started, datetime.now().astimezone())


class _Succeeded:
    """A migration's succeeded ids, from a durable ledger's read API or a ledger in memory."""

    def __init__(self, ledger: Ledger, key: str) -> None:
        self.ledger, self.key = ledger, key

    def all(self) -> Iterator[RecordId]:
        if isinstance(self.ledger, LedgerReader):
            return self.ledger.iter_succeeded(self.key)
        entry = self.ledger.progress().migrations.get(self.key)
        return iter(list(entry.succeeded) if entry is not None else [])

    def sample(self, k: int, rng: random.Random) -> tuple[list[RecordId], int]:
        if isinstance(self.ledger, LedgerReader):
            return self.ledger.sample_succeeded(self.key, k, rng)
        return reservoir(self.all(), k, rng)


def _failed(ledger: Ledger, key: str) -> tuple[int, int]:
    """The migration's failed records: (marked RETRY, marked IGNORE)."""
    if isinstance(ledger, LedgerReader):
        counts = ledger.failed_counts().get(key, {})
        return counts.get(Action.RETRY.value, 0), counts.get(Action.IGNORE.value, 0)
    entry = ledger.progress().migrations.get(key)
    actions = [f.action for f in entry.failed.values()] if entry is not None else []
    return actions.count(Action.RETRY), actions.count(Action.IGNORE)
