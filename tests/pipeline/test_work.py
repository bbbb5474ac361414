"""Batch: records by column while matched, the same attempt as one Work per record would give."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ferryman.declare import Retry
from ferryman.pipeline.work import Batch, Phase, Work

PHASES = (Phase.START, Phase.MATCH, Phase.TRANSFORM)


@given(st.integers(0, 12), st.data())
def test_a_batch_gives_the_attempt_of_one_work_per_record(n: int, data: st.DataObject) -> None:
    """Records fail in any order, in the stages before the transform and in it; the attempt
    keeps the others (with their outputs and aggregates) in record order and the failed ones
    as Works in record order, as a list of Works, one per record, would."""
    ids: list[Any] = [f"r{i}" for i in range(n)]
    records = [{"id": i} for i in ids]
    batch = Batch(ids, records)
    works = [Work(r, i) for i, r in zip(ids, records)]
    for aggregates in batch.aggregates:
        assert aggregates == {}
    for position, phase in data.draw(st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.sampled_from(PHASES[:2])),
                                              max_size=n)):
        if n and position not in batch.failed:  # the stages fail a record once
            error = ValueError(f"{phase.value} {position}")
            batch.aggregates[position]["seen"] = phase.value
            batch.fail(position, phase, error, None)
            works[position].fail(phase, error, None)
    alive = batch.alive()
    assert alive == [p for p, w in enumerate(works) if w.error is None]
    outputs = [[{"out": records[p]["id"]}] for p in alive]
    for k in data.draw(st.sets(st.integers(0, max(len(alive) - 1, 0)), max_size=len(alive))):
        if alive:
            error = RuntimeError(f"transform {alive[k]}")
            batch.fail(alive[k], Phase.TRANSFORM, error, Retry())
            works[alive[k]].fail(Phase.TRANSFORM, error, Retry())
    for k, p in enumerate(alive):
        works[p].outputs = outputs[k]

    attempt = batch.attempt(alive, outputs)

    ok = [w for w in works if w.error is None]
    assert attempt.size == n
    assert attempt.ids == [w.id for w in ok]
    assert attempt.records == [w.record for w in ok]
    assert attempt.outputs == [w.outputs for w in ok]
    failed = [w for w in works if w.error is not None]
    assert [(w.id, w.phase, w.error, w.retry) for w in attempt.failed] == [
        (w.id, w.phase, w.error, w.retry) for w in failed]
    assert [w.aggregates for w in attempt.failed] == [batch.aggregates[ids.index(w.id)] for w in failed]
