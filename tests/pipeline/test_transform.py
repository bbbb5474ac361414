"""Transform: records with no matching (fresh aggregates made on the way) give the same as records
that keep their aggregates from start_reduction and matching (:class:`Batch`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ferryman import Cardinality, MemoryStore, MigrationProgress, MigrationService, Retry, migration

BEHAVIOURS = ("one", "two", "none", "empty", "tuple", "dict", "raise", "raise-once", "stop")


def outputs_for(behaviour: str, record: dict[str, Any], calls: Counter[int]) -> Any:
    rid = record["id"]
    calls[rid] += 1
    if behaviour == "raise" or (behaviour == "raise-once" and calls[rid] == 1):
        raise ValueError(f"bad record {rid}")
    if behaviour == "stop":
        raise StopIteration  # a next() on an empty iterator, say: it must not end the page
    return {
        "one": [{"id": rid}],
        "raise-once": [{"id": rid}],
        "two": [{"id": rid}, {"id": -rid - 1}],
        "none": None,
        "empty": [],
        "tuple": ({"id": rid},),
        "dict": {"id": rid},
    }[behaviour]


def run(behaviours: list[str], cardinality: Cardinality, batch: int, by_column: bool) -> tuple[Any, ...]:
    calls: Counter[int] = Counter()

    class Base:
        def transform(self, aggregates: Any, record: dict[str, Any]) -> Any:
            assert aggregates == {}
            aggregates["touched"] = True  # fresh for every record: never seen by the next one
            return outputs_for(behaviours[record["id"]], record, calls)

    class WithHook(Base):
        def start_reduction(self, record: Any, aggregates: Any) -> None:
            """Present, so the records keep their aggregates in a Batch."""

    cls = migration(source="src", dest="dst", cardinality=cardinality, batch_size=batch, save_batch_size=3,
                    save_retry=Retry(times=1, delay=0))(type("T", (Base if by_column else WithHook,), {}))
    src = MemoryStore("src", records=[{"id": i} for i in range(len(behaviours))])
    dst = MemoryStore("dst")
    progress = MigrationProgress()
    report = MigrationService([src, dst], [cls], checkpoint_interval=0).run(progress).reports[0]
    entry = progress.entry(report.identity)
    failed = {f.id: f.cause.splitlines()[-1] for f in entry.failed.values()}
    counters = (report.read, report.succeeded, report.failed, report.retried, report.written)
    return sorted(r["id"] for r in dst.records()), set(entry.succeeded), failed, counters, dict(calls)


@settings(max_examples=80, deadline=None)
@given(
    behaviours=st.lists(st.sampled_from(BEHAVIOURS), min_size=1, max_size=40),
    cardinality=st.sampled_from(list(Cardinality)),
    batch=st.integers(1, 12),
)
def test_records_without_matching_go_by_column_exactly_as_one_work_each(
    behaviours: list[str], cardinality: Cardinality, batch: int
) -> None:
    by_column = run(behaviours, cardinality, batch, by_column=True)
    one_by_one = run(behaviours, cardinality, batch, by_column=False)
    assert by_column == one_by_one
    saved, succeeded, failed, _, _ = by_column
    assert succeeded.isdisjoint(failed) and len(succeeded) + len(failed) == len(behaviours)
    assert {i for i in saved if i >= 0} == {i for i in succeeded if behaviours[i] not in ("none", "empty")}
    for i, behaviour in enumerate(behaviours):
        if behaviour in ("raise", "dict", "stop"):
            assert i in failed


def settled_by_every_output(spec: Any, outputs: list[Any], raised: dict[int, Exception]) -> dict[int, Any]:
    """What ``_settled`` did before it looked only at the suspects: every output, one by one."""
    from ferryman.pipeline.transform import _checked

    errors: dict[int, Any] = {}
    low, high = spec.cardinality.bounds
    for position, out in enumerate(outputs):
        error = raised.get(position)
        retry = spec.save_retry
        if error is None and (type(out) is not list or not low <= len(out) <= high):
            try:
                out = _checked(spec, out)
            except Exception as exc:  # noqa: BLE001 - what the engine catches: a generator that raised
                error = exc
            else:
                if isinstance(out, Exception):
                    error, retry = out, None
                else:
                    outputs[position] = out
        if error is not None:
            errors[position] = (error, retry)
    return errors


def failing_generator() -> Any:
    yield {"id": 1}
    raise KeyError("inside")


OUTPUTS = {
    "none": lambda: None, "empty": list, "one": lambda: [{"id": 1}], "two": lambda: [{"id": 1}, {"id": 2}],
    "tuple": lambda: ({"id": 1},), "dict": lambda: {"id": 1}, "text": lambda: "ab",
    "generator": lambda: (r for r in [{"id": 1}]), "failing": failing_generator, "number": lambda: 3,
}


@settings(max_examples=300, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(sorted(OUTPUTS)), max_size=30),
    raised=st.sets(st.integers(0, 29)),
    cardinality=st.sampled_from(list(Cardinality)),
)
def test_settling_looks_at_the_suspects_only_and_ends_as_looking_at_every_output(
    kinds: list[str], raised: set[int], cardinality: Cardinality
) -> None:
    from ferryman.declare import spec_of
    from ferryman.pipeline.transform import _settled

    @migration(source="src", dest="dst", cardinality=cardinality)
    class Any_:
        def transform(self, aggregates: Any, record: Any) -> Any:
            return []

    spec = spec_of(Any_)
    errors = {p: ValueError(f"raised {p}") for p in raised if p < len(kinds)}
    fast_outputs = [OUTPUTS[k]() for k in kinds]
    slow_outputs = [OUTPUTS[k]() for k in kinds]
    fast = _settled(spec, fast_outputs, errors)
    slow = settled_by_every_output(spec, slow_outputs, errors)
    shown = [(p, type(e).__name__, str(e), retry) for p, (e, retry) in sorted(fast.items())]
    assert shown == [(p, type(e).__name__, str(e), retry) for p, (e, retry) in sorted(slow.items())]
    assert [o if isinstance(o, list) else type(o) for o in fast_outputs] == \
        [o if isinstance(o, list) else type(o) for o in slow_outputs]
