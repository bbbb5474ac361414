"""transform(aggregates, record) -> outputs, with the migration's output cardinality."""

from __future__ import annotations

from itertools import compress, islice, repeat
from operator import is_, not_
from typing import Any, cast

from ..declare import MigrationSpec, Retry
from ..errors import CardinalityError
from ..types import Aggregates, Record, RecordId
from .work import Attempt, Batch, Phase, Work


def transform_records(spec: MigrationSpec, instance: Any, ids: list[RecordId], records: list[Record]) -> Attempt:
    """Transform records that need no matching, by column: each with fresh, empty aggregates."""
    outputs, errors = _transformed(spec, instance, records, None)
    if not errors:
        return Attempt(ids, records, outputs, [], len(records))
    failed = [_failed(ids[k], records[k], error, retry) for k, (error, retry) in sorted(errors.items())]
    kept = [k not in errors for k in range(len(records))]
    return Attempt(list(compress(ids, kept)), list(compress(records, kept)), list(compress(outputs, kept)),
                   failed, len(records))


def transform_batch(spec: MigrationSpec, instance: Any, batch: Batch) -> Attempt:
    """Transform the records of ``batch`` that are still alive (after matching), each with its
    aggregates; those whose transform fails join the batch's failures."""
    alive = batch.alive()
    if len(alive) == len(batch.records):
        records, aggregates = batch.records, batch.aggregates
    else:
        records = [batch.records[p] for p in alive]
        aggregates = [batch.aggregates[p] for p in alive]
    outputs, errors = _transformed(spec, instance, records, aggregates)
    for k, (error, retry) in sorted(errors.items()):
        batch.fail(alive[k], Phase.TRANSFORM, error, retry)
    return batch.attempt(alive, outputs)


def _transformed(spec: MigrationSpec, instance: Any, records: list[Record],
                 aggregates: list[Aggregates] | None) -> tuple[list[Any], dict[int, tuple[Exception, Retry | None]]]:
    """Each record's outputs (by position; None counts as no outputs) and, by position, the
    errors of those that failed with the retry that applies (None: deterministic).

    The hook is mapped over the records at C speed (a third of the time of a Python loop), with
    ``aggregates``, or fresh, empty ones. A record whose transform raises ends that map; its
    error is kept and the map goes on from the next record, so each record is transformed
    exactly once, in order.
    """
    hook = instance.transform
    outputs: list[Any] = []
    raised: dict[int, Exception] = {}
    count = len(records)
    while len(outputs) < count:
        done = len(outputs)
        given = map(dict, repeat((), count - done)) if aggregates is None else islice(aggregates, done, None)
        try:  # list.extend keeps what the map gave before an error
            outputs.extend(map(hook, given, islice(records, done, None)))
        except Exception as exc:
            raised[len(outputs)] = exc
            outputs.append(None)
            continue
        if len(outputs) < count:  # a StopIteration from the hook ends a map as if it were done
            raised[len(outputs)] = StopIteration()  # (its message and traceback are lost with it)
            outputs.append(None)
    if raised or not _within_cardinality(spec, outputs):
        return outputs, _settled(spec, outputs, raised)
    return outputs, {}


def _within_cardinality(spec: MigrationSpec, outputs: list[Any]) -> bool:
    """True when every output is a list of an allowed length (checked at C speed)."""
    if not outputs:
        return True
    low, high = spec.cardinality.bounds
    lengths = list(map(len, outputs)) if set(map(type, outputs)) == {list} else None
    return lengths is not None and low <= min(lengths) and max(lengths) <= high


def _settled(spec: MigrationSpec, outputs: list[Any],
             raised: dict[int, Exception]) -> dict[int, tuple[Exception, Retry | None]]:
    """When some transforms raised or returned something else than allowed: their errors by
    position (a raised error is retried, a wrong result is not); the outputs that are another
    iterable within the cardinality become lists in place."""
    errors: dict[int, tuple[Exception, Retry | None]] = {}
    low, high = spec.cardinality.bounds
    for position in _suspects(outputs, raised, low, high):
        out = outputs[position]
        error = raised.get(position)
        retry: Retry | None = spec.save_retry
        if error is None and (type(out) is not list or not low <= len(out) <= high):
            try:
                out = _checked(spec, out)
            except Exception as exc:  # a generator the transform returned raised
                error = exc
            else:
                if isinstance(out, Exception):
                    error, retry = out, None
                else:
                    outputs[position] = out
        if error is not None:
            errors[position] = (error, retry)
    return errors


def _suspects(outputs: list[Any], raised: dict[int, Exception], low: int, high: float) -> list[int]:
    """The positions, ascending, of the records that raised and of the outputs that are not a
    list of ``low`` to ``high`` records: all that :func:`_settled` has to look at, found at C speed
    (a page where a few records raised is otherwise a Python loop over every output)."""
    count = len(outputs)
    is_list = list(map(is_, map(type, outputs), repeat(list)))
    suspects = set(raised)
    suspects.update(compress(range(count), map(not_, is_list)))
    lists = list(compress(range(count), is_list))
    lengths = list(map(len, compress(outputs, is_list)))
    if lengths and not (low <= min(lengths) and max(lengths) <= high):
        suspects.update(p for p, n in zip(lists, lengths) if not low <= n <= high)
    return sorted(suspects)


def _failed(record_id: RecordId, record: Record, error: Exception, retry: Retry | None) -> Work:
    w = Work(record, record_id)
    w.fail(Phase.TRANSFORM, error, retry)
    return w


def _checked(spec: MigrationSpec, outputs: Any) -> list[Record] | Exception:
    """``outputs`` as a list within the cardinality, or the deterministic error saying why not.

    Any other iterable is read into a list here: what a generator raises meanwhile is raised
    on, an error of the transform's own (retried like one it raised itself). A string, bytes
    or a single dict is not a list of records, however iterable.
    """
    if type(outputs) is not list:
        if outputs is None:
            outputs = []
        elif isinstance(outputs, (dict, str, bytes, bytearray)) or not hasattr(outputs, "__iter__"):
            return TypeError(f"migration {spec.name}: transform must return a list of records, "
                             f"got {type(outputs).__name__}")
        else:
            outputs = list(outputs)
    low, high = spec.cardinality.bounds
    if not low <= len(outputs) <= high:
        return CardinalityError(f"migration {spec.name}: transform must return {spec.cardinality.value} "
                                f"record(s), returned {len(outputs)}")
    return cast(list[Record], outputs)
