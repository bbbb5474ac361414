"""Replay: records the ledger says succeeded go through match and transform again, read-only,
and their outputs are compared with what the destination holds under their keys.

Nothing is saved and no progress is recorded: only ``get_many`` (the source records by id, the
stored outputs by key) and the matched stores' reads. A sample is replayed without preloading
matched stores (a query per page costs less than reading a store whole for a few pages).

A record whose outputs the destination does not hold as replayed may have met a duplicate in
the run, which the migration's ``handle_duplicate`` settled: then the replay finds the clash the
destination shows (a stored row with the output's key, or another row with the same values of a
unique constraint), asks ``handle_duplicate`` again, and compares what it says would have been
saved instead (nothing, for a skip).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from itertools import islice
from typing import Any, Protocol

from ..declare import MigrationSpec
from ..errors import DuplicateDataError, describe_error
from ..pipeline.attempt import Transformer
from ..pipeline.work import Attempt
from ..stores.base import Store
from ..stores.common import describe_values
from ..types import Record, RecordId
from .compare import diff_record
from .result import MigrationVerification, Problem


class SucceededIds(Protocol):
    """A migration's succeeded ids in the ledger: all of them, streamed, or a random sample."""

    def all(self) -> Iterable[RecordId]: ...

    def sample(self, k: int, rng: random.Random) -> tuple[list[RecordId], int]:
        """``k`` ids chosen uniformly at random, and how many there are."""
        ...


def verify_migration(spec: MigrationSpec, key: str, instance: Any, stores: Mapping[str, Store],
                     succeeded: SucceededIds, failed: tuple[int, int], sample: int | None,
                     rng: random.Random) -> MigrationVerification:
    """Every check of one migration whose progress is kept under ``key``: ``succeeded`` gives
    its succeeded ids from the ledger, ``failed`` is its failed records (RETRY, IGNORE)."""
    source = stores[spec.source]
    result = MigrationVerification(spec.name, key, spec.source, spec.dest)
    result.failed, result.ignored = failed
    try:
        result.source_total = source.count()
    except Exception as exc:  # noqa: BLE001 - said as a problem; the other checks go on
        result.problem("counts", f"the source {source.name!r} could not be counted: {describe_error(exc)}")
    replay = _Replay(spec, instance, stores, result, sampled=sample is not None)
    if sample is None:
        counted = _Counted(succeeded.all())
        for chunk in _chunks(counted, spec.batch_size):
            replay.check(chunk)
        result.succeeded = counted.n
    else:
        chosen, result.succeeded = succeeded.sample(sample, rng)
        for chunk in _chunks(chosen, spec.batch_size):
            replay.check(chunk)
    if not result.counts_ok:
        n = result.unaccounted or 0
        result.problems.insert(0, _counts_problem(result, n))
    return result


def _counts_problem(result: MigrationVerification, n: int) -> Problem:
    if n > 0:
        return Problem("counts", f"{n:,} record(s) of {result.source!r} have no outcome in the progress "
                                 "(not migrated yet, or added to the source since): run the migration again")
    return Problem("counts", f"the progress holds {-n:,} outcome(s) more than {result.source!r} has records "
                             "(records deleted from the source since they were migrated)")


class _Counted:
    """An iterable that counts what was drawn from it."""

    def __init__(self, items: Iterable[RecordId]) -> None:
        self.items = items
        self.n = 0

    def __iter__(self) -> Iterator[RecordId]:
        for item in self.items:
            self.n += 1
            yield item


def _chunks(items: Iterable[RecordId], size: int) -> Iterator[list[RecordId]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class _Replay:
    """Replays chunks of ids of one migration into its result."""

    def __init__(self, spec: MigrationSpec, instance: Any, stores: Mapping[str, Store],
                 result: MigrationVerification, sampled: bool) -> None:
        if sampled:
            spec = replace(spec, matches=tuple(replace(m, preload=False) for m in spec.matches))
        self.result = result
        self.source, self.dest, self.stores = stores[spec.source], stores[spec.dest], stores
        self.transformer = Transformer(spec, instance, stores)
        self.handle_duplicate = getattr(instance, "handle_duplicate", None)
        self.unique_keys = self.dest.unique_keys() if self.handle_duplicate is not None else []
        """What an output may clash on besides its key (read once: it walks the schema)."""
        self.hook = getattr(instance, "verify", None)
        self.ignore = frozenset(getattr(instance, "verify_ignore", ()))

    def check(self, ids: Sequence[RecordId]) -> None:
        result, source = self.result, self.source
        got = source.get_many(ids)
        records = dict(zip(source.ids_of(got), got))
        found_ids, found = [], []
        for record_id in ids:
            record = records.get(record_id)
            if record is None:
                result.source_missing += 1
                result.problem("source", "the progress says it succeeded, but the source no longer has it",
                               record_id)
            else:
                found_ids.append(record_id)
                found.append(record)
        result.checked += len(found)
        attempt = self.transformer.attempt(found_ids, found)
        for w in attempt.failed:
            result.replay_failed += 1
            why = describe_error(w.error) if w.error is not None else "no error said why"
            result.problem("replay", f"cannot be matched and transformed again: {why}", w.id)
        if result.skipped is None:
            self._compare(attempt)

    def _compare(self, attempt: Attempt) -> None:
        result, dest = self.result, self.dest
        outputs = [out for outs in attempt.outputs for out in outs]
        try:
            keys = dest.ids_of(outputs)
        except KeyError as exc:
            result.skipped = f"the outputs carry no key of {dest.name!r} ({exc.args[0]})"
            return
        wanted = Counter(keys)
        stored: dict[RecordId, list[Record]] = {}
        rows = dest.get_many(list(wanted))
        for k, row in zip(dest.ids_of(rows), rows):
            stored.setdefault(k, []).append(row)
        reported: set[RecordId] = set()
        at = 0
        for position, outs in enumerate(attempt.outputs):
            record_id, record = attempt.ids[position], attempt.records[position]
            out_keys = keys[at:at + len(outs)]
            at += len(outs)
            if self.handle_duplicate is not None and not self._all_stored(outs, out_keys, stored):
                handled = self._as_handled(record, outs, out_keys, stored)
                if handled is not None:
                    wanted.subtract(out_keys)
                    outs, out_keys = handled
                    wanted.update(out_keys)
            found = [self._compare_one(record_id, out, k, stored.get(k, []), wanted[k], reported)
                     for out, k in zip(outs, out_keys)]
            if self.hook is not None:
                self._hook(record_id, record, outs, found)

    def _all_stored(self, outs: Sequence[Record], keys: Sequence[RecordId],
                    stored: Mapping[RecordId, list[Record]]) -> bool:
        return all(any(not diff_record(out, row, self.ignore) for row in stored.get(k, ()))
                   for out, k in zip(outs, keys))

    def _as_handled(self, record: Record, outs: Sequence[Record], keys: list[RecordId],
                    stored: dict[RecordId, list[Record]]) -> tuple[list[Record], list[RecordId]] | None:
        """What ``handle_duplicate`` says the run saved instead of ``outs``, with their keys, for
        a clash the destination shows; None when no clash it shows makes ``handle_duplicate``
        account for what is stored.

        Which clash the run met is not known (a row stored before the run, or one saved after
        this record by the run itself), so each is tried: the first whose settlement matches
        the destination is taken, else a skip (nothing saved: nothing to compare), counted."""
        assert self.handle_duplicate is not None
        skips = False
        for error in (e for out, k in zip(outs, keys) for e in self._clashes(out, k, stored)):
            try:
                replacement = self.handle_duplicate(error, record, list(outs), self.source, self.dest, self.stores)
            except Exception:  # noqa: BLE001 - the run failed the record then
                continue
            replaced = None if replacement is None else list(replacement)
            if not replaced:
                skips = skips or replaced is not None
                continue
            new_keys = self.dest.ids_of(replaced)
            unseen = [k for k in new_keys if k not in stored]
            if unseen:
                for k, row in zip(self.dest.ids_of(rows := self.dest.get_many(unseen)), rows):
                    stored.setdefault(k, []).append(row)
            if self._all_stored(replaced, new_keys, stored):
                self.result.settled += 1
                return replaced, new_keys
        if skips:
            self.result.settled_skipped += 1
            return [], []
        return None

    def _clashes(self, output: Record, key: RecordId,
                 stored: Mapping[RecordId, list[Record]]) -> Iterator[DuplicateDataError]:
        """The duplicates saving ``output`` may have met, as the store raises them: a stored row
        with its key, another row with the same values of a unique constraint."""
        dest = self.dest
        rows = stored.get(key)
        if rows:
            values = dest.key_filter_value(key)
            yield DuplicateDataError(f"{dest.name}: duplicate key {describe_values(dest.key_fields, values)}",
                                     [output], columns=dest.key_fields, values=tuple(map(str, values)))
        for name, fields in self.unique_keys:
            values = tuple(output.get(f) for f in fields)
            if any(v is None for v in values):
                continue  # NULLs clash with nothing
            others = [r for r in dest.read_page(dict(zip(fields, values)), None, 2) if dest.id_of(r) != key]
            if others:
                yield DuplicateDataError(f"{dest.name}: duplicate {describe_values(fields, values)}",
                                         [output], constraint=name, columns=fields, values=tuple(map(str, values)))

    def _compare_one(self, record_id: RecordId, output: Record, k: RecordId, rows: list[Record],
                     expected: int, reported: set[RecordId]) -> Record | None:
        result, dest = self.result, self.dest
        result.outputs_expected += 1
        if not rows:
            result.missing += 1
            result.problem("missing", f"its output {dest.describe(output)} is not in {dest.name!r}", record_id)
            return None
        result.outputs_found += 1
        if len(rows) > expected and k not in reported:
            reported.add(k)
            result.duplicated += 1
            result.problem("duplicated", f"its output {dest.describe(output)} is in {dest.name!r} "
                                         f"{len(rows)} times", record_id)
        best = min((diff_record(output, row, self.ignore) for row in rows), key=len)
        if not best:
            return rows[0]
        if all(d.drift for d in best):
            result.drifted += 1
            for kind in {d.drift for d in best if d.drift}:
                result.drift[kind] = result.drift.get(kind, 0) + 1
            check = "drift"
        else:
            result.different += 1
            check = "different"
        shown = "; ".join(d.describe() for d in best[:3]) + (f"; and {len(best) - 3} more" if len(best) > 3 else "")
        result.problem(check, f"{dest.describe(output)}: {shown}", record_id)
        return rows[0]

    def _hook(self, record_id: RecordId, record: Record, outputs: Sequence[Record],
              stored: list[Record | None]) -> None:
        assert self.hook is not None
        try:
            verdict = self.hook(record, list(outputs), stored)
        except Exception as exc:  # noqa: BLE001 - the user's check: a problem, not a crash
            verdict = f"verify raised {describe_error(exc)}"
        if verdict is None or verdict is True:
            return
        if verdict is False:
            lines = ["verify returned False"]
        elif isinstance(verdict, str):
            lines = [verdict]
        else:
            lines = [str(v) for v in verdict]
        if lines:
            self.result.hook_failed += 1
            self.result.problem("hook", "; ".join(lines), record_id)
