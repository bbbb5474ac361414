"""transform(aggregates, record) -> outputs, with the migration's output cardinality."""

from __future__ import annotations

from itertools import compress
from typing import Any

from ..declare import MigrationSpec, Retry
from ..errors import CardinalityError
from ..types import Record, RecordId
from .work import Attempt, Phase, Work


def transform(spec: MigrationSpec, instance: Any, works: list[Work]) -> None:
    """Fill ``work.outputs`` for every live record (after matching); None counts as no outputs."""
    hook = instance.transform
    low, high = spec.cardinality.bounds
    for w in works:
        if w.error is not None or w.saved:
            continue
        try:
            outputs = hook(w.aggregates, w.record)
        except Exception as exc:
            w.fail(Phase.TRANSFORM, exc, spec.save_retry)
            continue
        if type(outputs) is not list or not low <= len(outputs) <= high:
            outputs = _checked(spec, outputs)
            if isinstance(outputs, Exception):
                w.fail(Phase.TRANSFORM, outputs, None)
                continue
        w.outputs = outputs


def transform_records(spec: MigrationSpec, instance: Any, ids: list[RecordId], records: list[Record]) -> Attempt:
    """Transform records that need no matching, by column: each with fresh, empty aggregates."""
    hook = instance.transform
    low, high = spec.cardinality.bounds
    outputs: list[Any] = []
    failed: list[Work] = []
    for position, record in enumerate(records):
        try:
            out = hook({}, record)
        except Exception as exc:
            failed.append(_failed(ids[position], record, exc, spec.save_retry))
            outputs.append(None)
            continue
        if type(out) is not list or not low <= len(out) <= high:
            out = _checked(spec, out)
            if isinstance(out, Exception):
                failed.append(_failed(ids[position], record, out, None))
                out = None
        outputs.append(out)
    size = len(records)
    if failed:
        kept = [out is not None for out in outputs]
        ids, records, outputs = list(compress(ids, kept)), list(compress(records, kept)), list(compress(outputs, kept))
    return Attempt(ids, records, outputs, failed, size)


def _failed(record_id: RecordId, record: Record, error: Exception, retry: Retry | None) -> Work:
    w = Work(record, record_id)
    w.fail(Phase.TRANSFORM, error, retry)
    return w


def _checked(spec: MigrationSpec, outputs: Any) -> list[Record] | Exception:
    """``outputs`` as a list within the cardinality, or the deterministic error saying why not."""
    if type(outputs) is not list:
        if outputs is None:
            outputs = []
        elif isinstance(outputs, dict) or not hasattr(outputs, "__iter__"):
            return TypeError(f"migration {spec.name}: transform must return a list of records, "
                             f"got {type(outputs).__name__}")
        else:
            outputs = list(outputs)
    low, high = spec.cardinality.bounds
    if not low <= len(outputs) <= high:
        return CardinalityError(f"migration {spec.name}: transform must return {spec.cardinality.value} "
                                f"record(s), returned {len(outputs)}")
    return outputs
