"""The run of one migration: retries with fresh state, cardinality, duplicates, fatal errors."""

from __future__ import annotations

import pytest

from ferryman import (
    Action, Cardinality, Match, MemoryStore, MigrationProgress, MigrationService, MigrationState,
    Retry, migration,
)

FAST = Retry(times=2, delay=0)


def numbers(n=10, name="src"):
    return MemoryStore(name, "id", records=[{"id": i, "group": i % 3} for i in range(1, n + 1)])


def run(migrations, *stores, progress=None):
    service = MigrationService(list(stores), migrations, checkpoint_interval=0)
    return service.run(progress)


def test_transient_transform_errors_are_retried_with_fresh_aggregates():
    calls: dict[int, int] = {}

    @migration(source="src", dest="dst", save_retry=FAST)
    class Flaky:
        def start_reduction(self, record, aggregates):
            aggregates["seen"] = aggregates.get("seen", 0) + 1

        def transform(self, aggregates, record):
            assert aggregates["seen"] == 1, "aggregates leaked from a failed attempt"
            calls[record["id"]] = calls.get(record["id"], 0) + 1
            if record["id"] in (3, 7) and calls[record["id"]] < 3:
                raise ConnectionError("flaky")
            return [{"id": record["id"]}]

    dst = MemoryStore("dst")
    result = run([Flaky], numbers(), dst)
    assert result.ok, result.summary()
    assert [r["id"] for r in dst.records()] == list(range(1, 11))
    assert calls[3] == calls[7] == 3 and calls[1] == 1
    assert result.reports[0].retried == 4


def test_retries_run_out_and_only_the_culprit_fails():
    @migration(source="src", dest="dst", save_retry=Retry(times=1, delay=0))
    class AlwaysBadFive:
        def transform(self, aggregates, record):
            if record["id"] == 5:
                raise ValueError("bad five")
            return [{"id": record["id"]}]

    dst = MemoryStore("dst")
    progress = MigrationProgress()
    result = run([AlwaysBadFive], numbers(), dst, progress=progress)
    report = result.reports[0]
    assert report.state is MigrationState.FAILED
    assert (report.succeeded, report.failed, report.retried) == (9, 1, 1)
    (identity, failed), = progress.failed_records()
    assert failed.id == 5 and failed.description == "src(id=5)"
    assert "ValueError: bad five" in failed.cause and failed.action is Action.RETRY
    assert 5 not in progress.migrations[identity].succeeded
    assert len(dst.records()) == 9


def test_match_cardinality_violation_fails_the_group_without_retry():
    attempts = []

    @migration(source="src", dest="dst", match=[
        Match("groups", cardinality=Cardinality.EXACTLY_ONE, retry=FAST)])
    class OneGroupEach:
        def match_with_groups(self, record, aggregates, store):
            attempts.append(record["id"])
            return {"g": record["group"]}

        def reduce_from_groups(self, aggregates, batch):
            aggregates["label"] = batch[0]["label"]

        def transform(self, aggregates, record):
            return [{"id": record["id"], "label": aggregates["label"]}]

    groups = MemoryStore("groups", "id", records=[
        {"id": 1, "g": 0, "label": "zero"}, {"id": 2, "g": 1, "label": "one"},
        {"id": 3, "g": 1, "label": "one again"},  # group 1 matches twice: EXACTLY_ONE violated
    ])  # group 2 matches nothing: violated too
    dst = MemoryStore("dst")
    progress = MigrationProgress()
    result = run([OneGroupEach], numbers(9), groups, dst, progress=progress)
    assert sorted(r["id"] for r in dst.records()) == [3, 6, 9]
    assert result.reports[0].failed == 6
    causes = [f.cause for _, f in progress.failed_records()]
    assert any("matched at least 2" in c for c in causes) and any("matched 0" in c for c in causes)
    assert len(attempts) == 9  # never retried


def test_equal_filters_share_one_query_and_reduce_once_per_page():
    reads = []

    class CountingStore(MemoryStore):
        def read_page(self, filter, after, limit):
            reads.append((dict(filter or {}), after))
            return super().read_page(filter, after, limit)

    @migration(source="src", dest="dst", match=[Match("groups", batch_size=2, preload=False)])
    class SumGroup:
        def start_reduction(self, record, aggregates):
            aggregates["pages"] = 0

        def match_with_groups(self, record, aggregates, store):
            return {"g": [record["group"], 99]}  # "in" filters group by value, order-free

        def reduce_from_groups(self, aggregates, batch):
            aggregates["pages"] += 1

        def transform(self, aggregates, record):
            return [{"id": record["id"], "pages": aggregates["pages"]}]

    groups = CountingStore("groups", "id", records=[{"id": i, "g": i % 3} for i in range(30)])
    dst = MemoryStore("dst")
    assert run([SumGroup], numbers(12), groups, dst).ok
    assert len({str(f) for f, _ in reads}) == 3  # three distinct filters
    assert len(reads) == 3 * 6  # 10 matches per group: 5 full pages of 2, then the empty end
    assert {r["pages"] for r in dst.records()} == {5}


def test_transform_cardinality_and_none_output():
    @migration(source="src", dest="dst", cardinality=Cardinality.ZERO_OR_ONE)
    class AtMostOne:
        def transform(self, aggregates, record):
            if record["id"] == 2:
                return None  # no output: migrated
            if record["id"] == 4:
                return [{"id": 40}, {"id": 41}]
            return [{"id": record["id"]}]

    dst = MemoryStore("dst")
    progress = MigrationProgress()
    result = run([AtMostOne], numbers(5), dst, progress=progress)
    assert [r["id"] for r in dst.records()] == [1, 3, 5]
    (_, failed), = progress.failed_records()
    assert failed.id == 4 and "must return ZERO_OR_ONE record(s), returned 2" in failed.cause
    assert result.reports[0].succeeded == 4


@pytest.mark.parametrize("answer, saved_ids, failed", [
    (None, [], [1]),                     # not handled: the record fails
    ([], [], []),                        # skip: counts as migrated
    ([{"id": 100}], [100], []),          # save these instead
    ([{"id": 1}], [], [1]),              # the replacement fails too: no third try
])
def test_handle_duplicate(answer, saved_ids, failed):
    calls = []

    @migration(source="src", dest="dst", save_retry=FAST)
    class Dup:
        def transform(self, aggregates, record):
            return [{"id": record["id"]}]

        def handle_duplicate(self, error, record, outputs, source, dest, registry):
            calls.append((type(error).__name__, record["id"], outputs, registry["dst"] is dest))
            return answer

    dst = MemoryStore("dst", records=[{"id": 1}])
    progress = MigrationProgress()
    result = run([Dup], numbers(2), dst, progress=progress)
    assert calls == [("DuplicateDataError", 1, [{"id": 1}], True)]
    assert sorted(r["id"] for r in dst.records()) == sorted([1, 2, *saved_ids])
    assert [f.id for _, f in progress.failed_records()] == failed
    assert result.reports[0].state is (MigrationState.FAILED if failed else MigrationState.COMPLETED)


def test_unreadable_source_is_a_fatal_error():
    class BrokenSource(MemoryStore):
        def read_page(self, filter, after, limit):
            if after is not None:
                raise OSError("disk gone")
            return super().read_page(filter, after, limit)

    @migration(source="src", dest="dst", batch_size=3, load_retry=Retry(times=2, delay=0))
    class Copy:
        def transform(self, aggregates, record):
            return [{"id": record["id"]}]

    dst = MemoryStore("dst")
    progress = MigrationProgress()
    src = BrokenSource("src", records=[{"id": i} for i in range(10)])
    result = run([Copy], src, dst, progress=progress)
    report = result.reports[0]
    assert report.state is MigrationState.FAILED
    assert report.fatal_error == "source 'src' unreadable: OSError: disk gone"
    assert len(progress.fatal_errors) == 1 and "OSError: disk gone" in progress.fatal_errors[0]
    assert len(dst.records()) == 3  # the first page made it and is recorded
    assert len(progress.migrations[report.identity].succeeded) == 3


def test_retry_records_are_rerun_by_id_first_and_removed_when_they_succeed():
    order = []

    @migration(source="src", dest="dst")
    class Copy:
        def transform(self, aggregates, record):
            order.append(record["id"])
            return [{"id": record["id"]}]

    src, dst = numbers(6), MemoryStore("dst")
    identity = f"{Copy.__module__}.{Copy.__qualname__}"
    progress = MigrationProgress()
    from ferryman import FailedRecord
    progress.entry(identity).mark_succeeded([1, 2])
    progress.entry(identity).mark_failed([
        FailedRecord(5, "src(id=5)", "boom"), FailedRecord(6, "src(id=6)", "x", Action.IGNORE),
        FailedRecord(99, "src(id=99)", "vanished"),
    ])
    result = run([Copy], src, dst, progress=progress)
    assert order == [5, 3, 4]
    assert result.ok
    entry = progress.migrations[identity]
    assert set(entry.succeeded) == {1, 2, 3, 4, 5}
    assert list(entry.failed) == [6, 99]  # IGNORE kept, vanished RETRY kept
    report = result.reports[0]
    assert (report.skipped, report.ignored, report.succeeded) == (3, 1, 3)  # 5: done in the retry pass


def test_equality_filters_on_one_field_are_answered_by_one_query():
    reads = []

    class CountingStore(MemoryStore):
        def match_pages_in(self, fields, values, batch_size, columns=None):
            reads.append((fields, values))
            return super().match_pages_in(fields, values, batch_size, columns)

    @migration(source="src", dest="dst",
               match=[Match("products", cardinality=Cardinality.EXACTLY_ONE, batch_size=3, preload=False)])
    class Price:
        def match_with_products(self, record, aggregates, store):
            return {"sku": f"p{record['id'] % 5}"}

        def reduce_from_products(self, aggregates, batch):
            aggregates.setdefault("prices", []).extend(p["price"] for p in batch)

        def transform(self, aggregates, record):
            return [{"id": record["id"], "price": aggregates["prices"]}]

    products = CountingStore("products", "id", records=[
        {"id": i, "sku": f"p{i}", "price": i * 10} for i in range(4)  # p4 has no product
    ] + [{"id": 9, "sku": "p3", "price": 99}])  # p3 has two: EXACTLY_ONE violated
    dst = MemoryStore("dst")
    progress = MigrationProgress()
    result = run([Price], numbers(10), products, dst, progress=progress)
    assert reads == [(("sku",), [("p1",), ("p2",), ("p3",), ("p4",), ("p0",)])]  # ten records, one query
    assert {r["id"]: r["price"] for r in dst.records()} == {
        1: [10], 2: [20], 5: [0], 6: [10], 7: [20], 10: [0]}
    failed = {f.id: f.cause for _, f in progress.failed_records()}
    assert sorted(failed) == [3, 4, 8, 9]
    assert "filter {'sku': 'p3'} matched at least 2" in failed[3]
    assert "filter {'sku': 'p4'} matched 0" in failed[4]
    assert result.reports[0].failed == 4


def test_no_match_fails_a_strict_cardinality_instead_of_bypassing_it():
    @migration(source="src", dest="dst", match=[
        Match("groups", cardinality=Cardinality.EXACTLY_ONE), Match("extra")])
    class Strict:
        def match_with_groups(self, record, aggregates, store):
            return None if record["id"] == 2 else {"id": 1}

        def reduce_from_groups(self, aggregates, batch):
            pass

        def match_with_extra(self, record, aggregates, store):
            return None  # ZERO_OR_MORE: no match is fine, and no query is made

        def reduce_from_extra(self, aggregates, batch):
            raise AssertionError("no reduce without a match")

        def transform(self, aggregates, record):
            return [{"id": record["id"]}]

    progress = MigrationProgress()
    dst = MemoryStore("dst")
    run([Strict], numbers(3), MemoryStore("groups", records=[{"id": 1}]), MemoryStore("extra"), dst,
        progress=progress)
    assert [r["id"] for r in dst.records()] == [1, 3]
    (_, failed), = progress.failed_records()
    assert failed.id == 2 and "match_with_groups returned None (no match)" in failed.cause


def test_a_few_failing_records_are_retried_after_the_main_pass_not_page_by_page():
    calls = []

    @migration(source="src", dest="dst", batch_size=5, save_retry=Retry(times=1, delay=0.01))
    class SometimesFlaky:
        def transform(self, aggregates, record):
            calls.append(record["id"])
            if record["id"] % 10 == 3 and calls.count(record["id"]) == 1:
                raise TimeoutError("flaky")
            return [{"id": record["id"]}]

    dst = MemoryStore("dst")
    result = run([SometimesFlaky], numbers(50), dst)
    assert result.ok and len(dst.records()) == 50
    assert calls[:50] == list(range(1, 51))  # every first attempt before any retry
    assert sorted(calls[50:]) == [3, 13, 23, 33, 43]  # then the five retries together


def test_failures_leave_no_reference_cycles_behind():
    """Collections are rare during a run (pipeline/interpreter.py), so a failure's traceback must
    not hold its page in a cycle: memory would grow with the failures until the next one."""
    import gc

    n = 5_000
    src = MemoryStore("src", records=[{"id": i, "v": i} for i in range(n)])
    dst = MemoryStore("dst", records=[{"id": i, "v": -1} for i in range(0, n, 500)])  # duplicates

    @migration(source="src", dest="dst", save_retry=Retry(times=1, delay=0))
    class Flaky:
        def transform(self, aggregates, record):
            if record["id"] % 100 == 7:
                raise ValueError("bad record")
            return [dict(record)]

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        report = MigrationService([src, dst], [Flaky]).run().reports[0]
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert report.failed == n // 100 + n // 500 and report.succeeded == n - report.failed
    assert left == []
