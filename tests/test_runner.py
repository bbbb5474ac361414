"""The run of one migration: retries with fresh state, cardinality, duplicates, fatal errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferryman import (
    Action,
    Cardinality,
    Match,
    MemoryStore,
    MigrationProgress,
    MigrationService,
    MigrationState,
    Retry,
    migration,
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
    assert report.fatal_error == "source 'src' unreadable after id 2 (a page of up to 3 records): OSError: disk gone"
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
    # 5 is counted once (migrated, by the retry pass), not also "already done" by the main pass
    assert (report.read, report.skipped, report.ignored, report.succeeded, report.failed) == (6, 2, 1, 3, 0)


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


def test_a_migration_whose_records_all_fail_stops_after_a_thousand():
    @migration(source="src", dest="dst", batch_size=100, save_retry=Retry(times=0, delay=0))
    class Broken:
        def transform(self, aggregates, record):
            raise ValueError("the same mistake every time")

    @migration(source="src", dest="other")
    class Independent:
        def transform(self, aggregates, record):
            return [{"id": record["id"]}]

    dst, other = MemoryStore("dst"), MemoryStore("other")
    result = run([Broken, Independent], numbers(100_000), dst, other)
    broken, independent = result.reports
    assert broken.state is MigrationState.FAILED and broken.failed == 1_000
    assert "failure budget exceeded: the first 1000 records attempted all failed" in broken.fatal_error
    # stopped at once, not after 100,000: the page read ahead meanwhile is left for the next run
    assert broken.read == 1_100 and broken.unfinished == 100
    assert independent.state is MigrationState.COMPLETED and len(other.records()) == 100_000
    assert result.exit_code == 1


@pytest.mark.parametrize("budget, run_budget, failed", [(5, None, 6), (0.5, None, 751), (None, 5, 6), (50, 2, 3)])
def test_failure_budgets_count_and_ratio(budget, run_budget, failed):
    @migration(source="src", dest="dst", batch_size=1, max_failures=budget, save_retry=Retry(times=0, delay=0))
    class HalfBroken:
        def transform(self, aggregates, record):
            if record["id"] % 4 != 0:  # three in four fail
                raise ValueError("odd")
            return [{"id": record["id"]}]

    service = MigrationService([numbers(4_000), MemoryStore("dst")], [HalfBroken], checkpoint_interval=0)
    report = service.run(max_failures=run_budget).reports[0]
    assert report.state is MigrationState.FAILED
    assert report.failed == failed and "failure budget exceeded" in report.fatal_error
    assert report.read == report.succeeded + report.failed + report.unfinished and report.unfinished <= 1


def test_math_inf_means_no_budget():
    @migration(source="src", dest="dst", max_failures=math.inf, save_retry=Retry(times=0, delay=0))
    class Broken:
        def transform(self, aggregates, record):
            raise ValueError("always")

    report = run([Broken], numbers(1_500), MemoryStore("dst")).reports[0]
    assert report.failed == 1_500 and report.fatal_error is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["run", "fix", "ignore", "retry", "break"]), st.integers(1, 12)),
                min_size=1, max_size=12))
def test_counters_add_up_over_any_fail_fix_ignore_retry_sequence(tmp_path_factory, steps):
    """After every run, read = migrated + failed + already done + ignored; every source record
    is in the destination once or failed, never both."""
    bad: set[int] = {3, 8}

    @migration(source="src", dest="dst", batch_size=4, save_retry=Retry(times=0, delay=0))
    class Copy:
        def transform(self, aggregates, record):
            if record["id"] in bad:
                raise ValueError("bad data")
            return [{"id": record["id"]}]

    from ferryman.progress.sqlite import SqliteLedger

    path = tmp_path_factory.mktemp("ledger") / "progress.db"
    src, dst = numbers(12), MemoryStore("dst")
    identity = f"{Copy.__module__}.{Copy.__qualname__}"
    for action, record_id in [*steps, ("run", 0)]:
        ledger = SqliteLedger(path)
        failed = {f.id: f.action for f in ledger.failed_records(identity)} if identity in ledger.identities() else {}
        if action == "run":
            report = MigrationService([src, dst], [Copy], ledger=ledger, checkpoint_interval=0).run().reports[0]
            assert report.read == report.succeeded + report.failed + report.skipped + report.ignored
            assert report.read == 12  # each source record once, even the ones the retry pass ran
            written = [r["id"] for r in dst.records()]
            assert len(written) == len(set(written))
            now_failed = {f.id for f in ledger.failed_records(identity)}
            assert not set(written) & now_failed and set(written) | now_failed == set(range(1, 13))
        elif action == "fix":
            bad.discard(record_id)
        elif action == "break":
            if record_id not in {r["id"] for r in dst.records()}:
                bad.add(record_id)
        elif record_id in failed:
            ledger.set_action(identity, [record_id], Action.IGNORE if action == "ignore" else Action.RETRY)
        ledger.close()


def test_a_batch_level_error_says_it_need_not_be_about_each_record():
    from ferryman import TransientStoreError
    from ferryman.errors import cause_summary

    class Down(MemoryStore):
        def save_all(self, records, *, journal=None):
            raise TransientStoreError("connection refused")

    @migration(source="src", dest="dst", save_retry=Retry(times=0, delay=0), batch_size=4)
    class Copy:
        def transform(self, aggregates, record):
            return [{"id": record["id"]}]

    progress = MigrationProgress()
    run([Copy], numbers(4), Down("dst"), progress=progress)
    causes = [f.cause for f in next(iter(progress.migrations.values())).failed.values()]
    assert len(causes) == 4
    assert all(c.endswith("(this error failed a whole batch of 4 records at once: it need not be about "
                          "this record)") for c in causes)
    assert cause_summary(causes[0]) == ("TransientStoreError: connection refused "
                                        "(this error failed a whole batch of 4 records at once)")
