"""pipeline/work.py: a Batch (records by column while matched) gives the same attempt as one
Work per record would; a failure's traceback text (``format_error``), its frames formatted once
per process, reads exactly as Python's own ``traceback.format_exception`` writes it."""

from __future__ import annotations

import traceback
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ferryman.declare import Retry
from ferryman.pipeline import work
from ferryman.pipeline.work import Batch, Phase, Work, format_error

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


def fail(depth: int, message: str, how: str) -> None:
    """Raise ``ValueError(message)`` ``depth`` calls down, chained as ``how`` says."""
    if depth > 0:
        fail(depth - 1, message, how)
        return
    if how == "cause":
        try:
            {}["missing"]
        except KeyError as exc:
            raise ValueError(message) from exc
    if how == "context":
        try:
            1 / 0  # noqa: B018 - the error is the point
        except ZeroDivisionError:
            raise ValueError(message)  # noqa: B904 - an implicit context on purpose
    if how == "group":
        raise ExceptionGroup(message, [ValueError(message), TypeError("t")])
    if how == "twin":  # the same text and columns as the line below, on another line
        raise ValueError(message)
    if how == "plain":
        raise ValueError(message)
    raise AssertionError(how)


def caught(depth: int, message: str, how: str) -> BaseException:
    try:
        fail(depth, message, how)
    except BaseException as exc:  # noqa: BLE001 - any kind, as the engine catches them
        return exc
    raise AssertionError("did not raise")


HOW = st.sampled_from(["plain", "twin", "cause", "context", "group"])


@settings(max_examples=150, deadline=None)
@given(depth=st.integers(0, 5), message=st.text(max_size=20), how=HOW, again=st.integers(0, 5), how_again=HOW)
def test_frames_formatted_once_read_as_python_formats_them(depth: int, message: str, how: str, again: int,
                                                           how_again: str) -> None:
    first, second = caught(depth, message, how), caught(again, message[::-1], how_again)
    for error in (first, second, first):  # the second time from the known frames
        assert work._traceback_text(error) == "".join(traceback.format_exception(error))


def test_the_known_frames_are_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(work, "FRAMES_KEPT", 3)
    work._formatted_frames.clear()
    for depth in range(6):
        format_error(caught(depth, "x", "plain"))
        assert len(work._formatted_frames) <= 3


def test_forgetting_a_failure_s_traceback_drops_those_of_its_cause_and_of_its_context() -> None:
    """A store's duplicate: raised from the driver's error, in the handler of SQLAlchemy's."""

    def store_save() -> None:
        try:
            try:
                raise KeyError("the driver's error")
            except KeyError as driver:
                raise RuntimeError("SQLAlchemy's wrapper") from driver
        except RuntimeError as wrapper:
            raise ValueError("the duplicate") from wrapper.__cause__

    w = Work({"id": 1}, 1)
    try:
        store_save()
    except ValueError as exc:
        w.fail(Phase.SAVE, exc, None)
    error = w.error
    assert error is not None and error.__cause__ is not None and error.__context__ is not None
    assert error.__cause__ is not error.__context__
    w.forget_traceback()
    chained = [error, error.__cause__, error.__context__, error.__context__.__cause__]
    assert [e.__traceback__ for e in chained if e is not None] == [None] * 4
