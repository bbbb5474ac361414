"""Saving: batches across input records, bisection to the culprits, non-atomic stores."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from ferryman import (
    ConnectionDroppedError,
    Match,
    MemoryStore,
    MigrationProgress,
    MigrationService,
    PendingWrite,
    Retry,
    RunResult,
    SqlStore,
    StoreUnusableError,
    TerminalStoreError,
    TransientStoreError,
    migration,
)


class CountingStore(MemoryStore):
    def __init__(self, *args, atomic=True, **kwargs):
        self.calls: list[int] = []
        super().__init__(*args, **kwargs)
        self.atomic = atomic
        self.calls.clear()  # the seed records are not the migration's saves

    def save_all(self, records, **kwargs):
        self.calls.append(len(records))
        super().save_all(records, **kwargs)


@migration(source="src", dest="dst", save_batch_size=100, save_retry=Retry(times=0, delay=0))
class Copy:
    def transform(self, aggregates, record):
        return [{"id": record["id"]}]


def migrate(dst, n=512, taken=()):
    src = MemoryStore("src", records=[{"id": i} for i in range(n)])
    for i in taken:
        MemoryStore.save_all(dst, [{"id": i}])
    progress = MigrationProgress()
    result = MigrationService([src, dst], [Copy], checkpoint_interval=0).run(progress)
    return result, progress


def test_outputs_of_many_records_share_one_save():
    dst = CountingStore("dst")
    result, _ = migrate(dst)
    assert result.ok
    assert dst.calls == [100] * 5 + [12]


def test_a_failing_batch_is_bisected_to_its_culprits():
    dst = CountingStore("dst")
    result, progress = migrate(dst, taken=(37, 380))
    assert sorted(f.id for _, f in progress.failed_records()) == [37, 380]
    assert result.reports[0].succeeded == 510
    assert sorted(r["id"] for r in dst.records()) == list(range(512))
    extra = len(dst.calls) - 6
    assert extra <= 2 * 2 * math.ceil(math.log2(100)) + 2  # O(log n) per culprit, not O(n)


def test_non_atomic_stores_get_one_record_per_save():
    dst = CountingStore("dst", atomic=False)
    result, _ = migrate(dst, n=7)
    assert result.ok and dst.calls == [1] * 7


def test_a_record_with_many_outputs_is_never_split():
    @migration(source="src", dest="dst", save_batch_size=3)
    class Fan:
        def transform(self, aggregates, record):
            return [{"id": record["id"] * 10 + k} for k in range(record["id"] + 1)]

    dst = CountingStore("dst")
    src = MemoryStore("src", records=[{"id": i} for i in range(6)])
    assert MigrationService([src, dst], [Fan], checkpoint_interval=0).run().ok
    assert dst.calls == [3, 3, 4, 5, 6]  # (1+2), 3, 4, 5, 6 outputs: whole records per save


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    batch=st.integers(1, 64),
    taken=st.sets(st.integers(0, 299), max_size=12),
)
def test_bisection_fails_exactly_the_culprits_and_saves_everything_else_once(n, batch, taken):
    @migration(source="src", dest="dst", save_batch_size=batch, save_retry=Retry(times=0, delay=0))
    class CopyBatch:
        def transform(self, aggregates, record):
            return [{"id": record["id"], "copy": True}]

    taken = {t for t in taken if t < n}
    dst = CountingStore("dst", records=[{"id": t, "copy": False} for t in taken])
    src = MemoryStore("src", records=[{"id": i} for i in range(n)])
    progress = MigrationProgress()
    result = MigrationService([src, dst], [CopyBatch], checkpoint_interval=0).run(progress)
    assert {f.id for _, f in progress.failed_records()} == taken
    copies = [r["id"] for r in dst.records() if r["copy"]]
    assert copies == [i for i in range(n) if i not in taken]  # each good record exactly once
    assert result.reports[0].succeeded == n - len(taken)
    assert len(dst.calls) <= math.ceil(n / batch) + 2 * len(taken) * (math.ceil(math.log2(batch)) + 1)


def test_everything_runs_on_the_callers_thread():
    seen: dict[str, set[str]] = {"transform": set(), "save_all": set(), "handle_duplicate": set()}

    class WatchedStore(MemoryStore):
        def save_all(self, records, **kwargs):
            seen["save_all"].add(threading.current_thread().name)
            super().save_all(records, **kwargs)

    @migration(source="src", dest="dst", batch_size=10, save_batch_size=4, save_retry=Retry(times=0, delay=0))
    class Watched:
        def transform(self, aggregates, record):
            seen["transform"].add(threading.current_thread().name)
            return [{"id": record["id"]}]

        def handle_duplicate(self, error, record, outputs, source, dest, registry):
            seen["handle_duplicate"].add(threading.current_thread().name)
            return []

    dst = WatchedStore("dst", records=[{"id": 7}])
    src = MemoryStore("src", records=[{"id": i} for i in range(40)])
    result = MigrationService([src, dst], [Watched], checkpoint_interval=0).run()
    assert result.ok and result.reports[0].succeeded == 40
    main = threading.main_thread().name
    assert seen == {"transform": {main}, "save_all": {main}, "handle_duplicate": {main}}


DID_NOT_COMMIT = TerminalStoreError("the batch did not commit")


class AheadStore(MemoryStore):
    """Saves when a write is waited for, as a database committing on its own would; logs the order.

    A batch holding one of ``fail_ids`` fails with ``error`` (the first ``fail_times`` times)."""

    def __init__(self, *args, log, fail_ids=(), error=DID_NOT_COMMIT,
                 fail_times=math.inf, **kwargs):
        super().__init__(*args, **kwargs)
        self.log, self.fail_ids, self.in_flight = log, set(fail_ids), 0
        self.error, self.fail_times = error, fail_times

    def begin_save_all(self, records, *, journal=None):
        store = self
        assert self.in_flight == 0, "a store is given one write at a time"
        self.in_flight += 1
        self.log.append(("begin", [r["id"] for r in records]))

        class Write(PendingWrite):
            def wait(self):
                store.in_flight -= 1
                store.log.append(("wait", [r["id"] for r in records]))
                if store.fail_ids & {r["id"] for r in records} and store.fail_times > 0:
                    store.fail_times -= 1
                    raise store.error
                store.save_all(records)

        return Write()


def test_a_page_is_saved_while_the_next_is_transformed_and_one_write_at_a_time():
    log: list[tuple[str, list[int]]] = []

    @migration(source="src", dest="dst", batch_size=4, save_batch_size=2)
    class Ahead:
        def transform(self, aggregates, record):
            log.append(("transform", [record["id"]]))
            return [{"id": record["id"]}]

    dst = AheadStore("dst", log=log)
    src = MemoryStore("src", records=[{"id": i} for i in range(8)])
    result = MigrationService([src, dst], [Ahead], checkpoint_interval=0).run()
    assert result.ok and sorted(r["id"] for r in dst.records()) == list(range(8))
    assert log == [
        *[("transform", [i]) for i in range(4)],
        ("begin", [0, 1]), ("wait", [0, 1]), ("begin", [2, 3]),  # a page's batches one after the other
        *[("transform", [i]) for i in range(4, 8)],  # the next page while [2, 3] is on its way
        ("wait", [2, 3]),
        ("begin", [4, 5]), ("wait", [4, 5]), ("begin", [6, 7]), ("wait", [6, 7]),
    ]


def test_a_write_that_fails_when_waited_for_is_split_like_any_other():
    log: list[tuple[str, list[int]]] = []

    @migration(source="src", dest="dst", batch_size=4, save_batch_size=4,
               save_retry=Retry(times=1, delay=0))
    class Ahead:
        def transform(self, aggregates, record):
            return [{"id": record["id"]}]

    dst = AheadStore("dst", log=log, fail_ids={2})
    src = MemoryStore("src", records=[{"id": i} for i in range(8)])
    progress = MigrationProgress()
    result = MigrationService([src, dst], [Ahead], checkpoint_interval=0).run(progress)
    assert sorted(r["id"] for r in dst.records()) == [0, 1, 3, 4, 5, 6, 7]
    assert [f.id for _, f in progress.failed_records()] == [2]
    assert result.reports[0].failed == 1 and "did not commit" in result.reports[0].last_error
    assert [ids for step, ids in log if step == "begin"][:6] == [
        [0, 1, 2, 3], [0, 1], [2, 3], [2], [3], [4, 5, 6, 7],
    ]  # the failed batch is split down to its culprit before the next page's batch begins

@migration(source="src", dest="dst", batch_size=4, save_batch_size=4, save_retry=Retry(times=1, delay=0))
class CopyInFours:
    def transform(self, aggregates, record):
        return [{"id": record["id"]}]


def run_in_fours(dst, *others, migrations=(CopyInFours,)):
    src = MemoryStore("src", records=[{"id": i} for i in range(8)])
    progress = MigrationProgress()
    result = MigrationService([src, dst, *others], list(migrations), checkpoint_interval=0).run(progress)
    return result, progress


def begun(log):
    return [ids for step, ids in log if step == "begin"]


def test_an_unusable_store_ends_the_migration_without_blaming_or_splitting():
    log: list[tuple[str, list[int]]] = []
    dst = AheadStore("dst", log=log, fail_ids={5}, error=StoreUnusableError("store 'dst': no such table"))
    result, progress = run_in_fours(dst)
    report = result.reports[0]
    assert report.fatal_error is not None and "no such table" in report.fatal_error
    assert (report.succeeded, report.failed, report.retried) == (4, 0, 0)
    assert begun(log) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # neither split nor retried
    assert progress.failed_records() == [] and len(progress.fatal_errors) == 1
    assert sorted(r["id"] for r in dst.records()) == [0, 1, 2, 3]


def test_an_unusable_store_stops_a_page_before_its_next_batch():
    log: list[tuple[str, list[int]]] = []

    @migration(source="src", dest="dst", batch_size=8, save_batch_size=2)
    class Pairs:
        def transform(self, aggregates, record):
            return [{"id": record["id"]}]

    dst = AheadStore("dst", log=log, fail_ids={2}, error=StoreUnusableError("store 'dst': permission denied"))
    result, _ = run_in_fours(dst, migrations=(Pairs,))
    assert begun(log) == [[0, 1], [2, 3]] and result.reports[0].succeeded == 2


def test_an_unusable_matching_store_ends_the_migration_instead_of_failing_each_record():
    class GoneStore(MemoryStore):
        def read_pages(self, filter, after, limit):
            raise StoreUnusableError("store 'other': relation \"other\" does not exist")

    @migration(source="src", dest="dst", batch_size=4, match=[Match("other")])
    class Matched:
        def match_with_other(self, record, aggregates, store):
            return {"id": record["id"]}

        def reduce_from_other(self, aggregates, batch):
            pass

        def transform(self, aggregates, record):
            return [{"id": record["id"]}]

    dst = MemoryStore("dst")
    result, _progress = run_in_fours(dst, GoneStore("other"), migrations=(Matched,))
    report = result.reports[0]
    assert report.fatal_error is not None and "does not exist" in report.fatal_error
    assert (report.failed, report.retried) == (0, 0) and dst.records() == []


def test_an_unusable_source_is_fatal_at_once_without_load_retries():
    reads: list[int] = []

    class GoneSource(MemoryStore):
        def read_page(self, filter, after, limit):
            reads.append(1)
            raise StoreUnusableError("store 'src': no such table: src")

    @migration(source="src", dest="dst", load_retry=Retry(times=3, delay=0))
    class FromGone:
        def transform(self, aggregates, record):
            return [record]

    result = MigrationService([GoneSource("src"), MemoryStore("dst")], [FromGone], checkpoint_interval=0).run()
    assert "no such table" in result.reports[0].fatal_error and reads == [1]


def test_a_dropped_connection_splits_the_batch_and_retries_its_lone_record_later():
    log: list[tuple[str, list[int]]] = []
    dropped = ConnectionDroppedError("store 'dst': server has gone away; the database still answers")
    dst = AheadStore("dst", log=log, fail_ids={2}, error=dropped, fail_times=3)
    result, progress = run_in_fours(dst)
    assert begun(log)[:5] == [[0, 1, 2, 3], [0, 1], [2, 3], [2], [3]]  # split down to the suspect
    assert progress.failed_records() == [] and result.reports[0].retried == 1  # retried, not blamed
    assert sorted(r["id"] for r in dst.records()) == list(range(8))


def test_an_outage_fails_the_whole_batch_for_a_later_retry_without_splitting_it():
    log: list[tuple[str, list[int]]] = []
    down = TransientStoreError("store 'dst': connection refused")
    dst = AheadStore("dst", log=log, fail_ids={2}, error=down, fail_times=1)
    result, _ = run_in_fours(dst)
    assert result.ok and begun(log) == [[0, 1, 2, 3], [0, 1, 2, 3], [4, 5, 6, 7]]  # the page again, whole
    assert result.reports[0].retried == 4


def copy_over_stored_keys(url: str, stored: list[int], records: int, batch_size: int, repeat_after: int
                          ) -> tuple[list[int], MigrationProgress, RunResult, dict[int, int]]:
    """Copy ids ``0..records-1`` (as ``id % repeat_after``) into a table holding ``stored`` keys
    already, in batches of ``batch_size``: the sizes of the batches begun, the progress, the
    result and the table's rows (id -> copy)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE dst (id INTEGER PRIMARY KEY, copy INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO dst VALUES (:id, 0)"), [{"id": k} for k in stored])
    engine.dispose()
    sizes: list[int] = []

    class Counted(SqlStore):
        def begin_save_all(self, records, *, journal=None):
            sizes.append(len(records))
            return super().begin_save_all(records, journal=journal)

    @migration(source="src", dest="dst", batch_size=batch_size, save_batch_size=batch_size,
               save_retry=Retry(times=0, delay=0))
    class CopyAll:
        def transform(self, aggregates, record):
            return [{"id": record["id"] % repeat_after, "copy": record["id"]}]

    dst = Counted("dst", url, "dst")
    src = MemoryStore("src", records=[{"id": i} for i in range(records)])
    progress = MigrationProgress()
    try:
        result = MigrationService([src, dst], [CopyAll], checkpoint_interval=0).run(progress)
        rows = {r["id"]: r["copy"] for page in dst.scan(batch_size=1000) for r in page}
    finally:
        dst.close()
    return sizes, progress, result, rows


def test_a_duplicate_the_store_names_costs_two_saves_and_one_per_culprit(sqlite_url):
    """The others of the batch are saved together, each named record alone: no halving."""
    sizes, progress, result, stored = copy_over_stored_keys(sqlite_url, [5, 40], 100, 100, repeat_after=90)
    failed = sorted(f.id for _, f in progress.failed_records())
    assert failed == [5, 40, *range(90, 100)]  # stored keys, then the later copy of each repeat
    assert sizes == [100, 79, *[1] * 21]  # not 100, 50, 50, 25, ...: the rest at once, the 21 named alone
    assert stored[5] == 0 and stored[40] == 0 and all(stored[i] == i for i in range(10) if i != 5)  # first copies
    assert result.reports[0].succeeded == 88


def test_after_a_named_duplicate_the_next_batches_are_looked_up_and_their_clashes_saved_alone(sqlite_url):
    """No batch after the first one fails on a duplicate of its key: each is looked up first."""
    sizes, progress, result, _ = copy_over_stored_keys(sqlite_url, [5, 25, 26, 47], 50, 10, repeat_after=50)
    assert sorted(f.id for _, f in progress.failed_records()) == [5, 25, 26, 47]
    assert all("duplicate key" in f.cause for _, f in progress.failed_records())
    # the first batch fails, then its rest and its culprit; the others are split before saving
    assert sizes == [10, 9, 1, 10, 8, 1, 1, 10, 9, 1]
    assert result.reports[0].succeeded == 46


@pytest.fixture(params=["sqlite_url", "postgres_url", "mysql_url"])
def dst_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(request.param)
    return url


QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=25, deadline=None, suppress_health_check=QUIET)
@given(
    n=st.integers(1, 120),
    batch=st.integers(1, 40),
    save_batch=st.integers(2, 25),
    repeat_every=st.integers(30, 200),
    stored=st.sets(st.integers(0, 130), max_size=25),
    bad=st.sets(st.integers(0, 119), max_size=5),
)
def test_saving_a_batch_s_clashes_apart_ends_as_finding_them_by_a_failed_save(
    dst_url, n, batch, save_batch, repeat_every, stored, bad
):
    """Outputs whose keys repeat (ids past ``repeat_every``), keys already stored, NOT NULL
    violations (``bad``), and every answer of ``handle_duplicate``: the same records saved,
    failed (with the same error) and written, whether the store looks batches up or not."""

    @migration(source="src", dest="dst", batch_size=batch, save_batch_size=save_batch,
               save_retry=Retry(times=0, delay=0))
    class CopyAll:
        def transform(self, aggregates, record):
            i = record["id"]
            return [{"id": i % repeat_every, "copy": None if i in bad else i}]

        def handle_duplicate(self, error, record, outputs, source, dest, registry):
            i = record["id"]
            return [None, [], [{"id": 1000 + i, "copy": i}]][i % 3]

    def run(looks_up: bool):
        engine = create_engine(dst_url)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS dst"))
            conn.execute(text("CREATE TABLE dst (id INTEGER PRIMARY KEY, copy INTEGER NOT NULL)"))
            for i in sorted(stored):
                conn.execute(text("INSERT INTO dst VALUES (:i, -1)"), {"i": i})
        engine.dispose()

        class Store(SqlStore):
            def key_clashes(self, records):
                return super().key_clashes(records) if looks_up else None

        dst = Store("dst", dst_url, "dst")
        src = MemoryStore("src", records=[{"id": i} for i in range(n)])
        progress = MigrationProgress()
        try:
            report = MigrationService([src, dst], [CopyAll], checkpoint_interval=0).run(progress).reports[0]
            rows = sorted((r["id"], r["copy"]) for page in dst.scan(batch_size=1000) for r in page)
        finally:
            dst.close()
        entry = progress.entry(report.identity)
        failed = {f.id: f.cause.splitlines()[-1] for f in entry.failed.values()}
        return rows, sorted(entry.succeeded), failed, (report.succeeded, report.failed, report.written)

    assert run(looks_up=True) == run(looks_up=False)


def test_a_failure_found_by_splitting_is_stored_without_the_splits_chained_onto_it(sqlite_url):
    from sqlalchemy import create_engine, text

    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(text("CREATE TABLE dst (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"))
        conn.execute(text("INSERT INTO src VALUES (:id, :name)"),
                     [{"id": i, "name": None if i == 300 else f"n{i}"} for i in range(1, 513)])
    engine.dispose()

    @migration(source="src", dest="dst")
    class Copy:
        def transform(self, aggregates, record):
            return [dict(record)]

    progress = MigrationProgress()
    MigrationService([SqlStore("src", sqlite_url, "src"), SqlStore("dst", sqlite_url, "dst")], [Copy]).run(progress)
    (failure,) = next(iter(progress.migrations.values())).failed.values()
    assert failure.id == 300 and "NOT NULL constraint failed: dst.name" in failure.cause
    assert "During handling of the above exception" not in failure.cause
    assert len(failure.cause) < 4_000


def test_a_very_long_cause_keeps_its_start_and_its_end():
    from ferryman.pipeline.work import CAUSE_LIMIT, format_error

    try:
        raise ValueError("x" * 50_000 + " the end")
    except ValueError as exc:
        text = format_error(exc)
    assert len(text) < CAUSE_LIMIT + 100 and text.startswith("Traceback") and text.endswith(" the end")
    assert "characters cut" in text


def test_a_batch_fenced_off_stops_the_run_as_a_lost_lease_does_without_failing_or_splitting_it(tmp_path):
    """The second batch finds the fence raised above its epoch (a run that took the lease over):
    the run stops there, no record fails, the batch is neither split nor saved again."""
    from ferryman.progress.sqlite import SqliteLedger

    class TakenOverAtTheSecondBatch(CountingStore):
        def save_all(self, records, *, journal=None):
            if records[0]["id"] == 100:
                assert journal is not None and journal.fence is not None  # the ledger's epoch
                self.raise_fence(journal.migration, journal.fence + 1)
            super().save_all(records, journal=journal)

    dst = TakenOverAtTheSecondBatch("dst")
    src = MemoryStore("src", records=[{"id": i} for i in range(512)])
    ledger = SqliteLedger(tmp_path / "run.db")
    try:
        result = MigrationService([src, dst], [Copy], ledger=ledger, checkpoint_interval=0).run()
        identity = ledger.identities()[0]
        assert list(ledger.failed_records(identity)) == []
    finally:
        ledger.close()
    assert "is fenced off at epoch" in result.ledger_error and "lost its lease" in result.ledger_error
    assert dst.calls == [100, 100]  # the fenced batch once: not split, not retried; none after it
    assert sorted(r["id"] for r in dst.records()) == list(range(100))
    assert not result.ok
