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
