"""The contract of a durable ledger, on every kind (an SQLite file, a PostgreSQL schema): what a
run writes and a reader reads, the lease, the journal folded back, exactly once across kills.

The SQLite ledger's own ways (its file, its log of successes folded on resume, older files) are
tested in tests/progress/sqlite; the PostgreSQL ledger's in tests/progress/test_postgres_ledger.py.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ledger_files
import pytest
import sqlalchemy as sa
from helpers import poll_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledgers import Backend, a_run, failures, make_source

from ferryman import (
    Action,
    FailedRecord,
    FencedOffError,
    LeaseLostError,
    LedgerBusyError,
    MemoryStore,
    MigrationProgress,
    MigrationService,
    Retry,
    RunResult,
    SqlStore,
    migration,
)
from ferryman.progress.codec import encode_id
from ferryman.progress.durable import DurableLedger
from ferryman.progress.lease import Process
from ferryman.progress.reader import LedgerReader
from ferryman.server import LedgerStatusSource
from ferryman.stores.base import JournalEntry
from ferryman.types import Aggregates, Record, RecordId

MIGRATION = "m.Copy"


def keys(ids: Iterable[RecordId]) -> list[str]:
    return sorted(map(encode_id, ids))


# --- what a reader reads ------------------------------------------------------------------------


def test_it_reads_runs_migrations_records_and_errors(ledger_backend: Backend) -> None:
    a_run(ledger_backend.open, "shop.CopyOrders", ok=False, fatal="Traceback...\nOSError: disk gone")
    a_run(ledger_backend.open, "shop.CopyOrders", ok=True)
    with ledger_backend.reader() as reader:
        assert isinstance(reader, LedgerReader)
        runs = reader.runs()
        assert [(r.job, r.attempt, r.outcome) for r in runs] == [(1, 2, "completed"), (1, 1, "failed")]
        assert reader.runs(1) == runs[:1] and runs[0].step == "copyorders"
        assert [r["state"] for r in reader.run_reports(runs[0].id)] == ["completed"]
        (migration,) = reader.migrations()
        assert (migration.identity, migration.name, migration.completed, migration.dest) == (
            "shop.CopyOrders", "copyorders", True, None)
        assert reader.names() == {"shop.CopyOrders": "copyorders"}
        assert sorted(reader.iter_succeeded("shop.CopyOrders")) == [1, 2, 3]
        assert reader.failed_records("shop.CopyOrders") == []  # the second run migrated them
        assert reader.fatal_count() == 1 and reader.fatal_errors(1) == ["Traceback...\nOSError: disk gone"]
        assert reader.holder() is None and reader.live_holder() is None
        assert list(reader.iter_succeeded("shop.Unknown")) == [] and reader.failed_records("shop.Unknown") == []
        assert [e["event"] for e in reader.events()] == []  # the service records events, not the ledger


def test_the_newest_failures_and_the_counts_without_reading_every_record(ledger_backend: Backend) -> None:
    ledger = ledger_backend.open()
    ledger.record("m.A", [], failures(range(1, 31)))
    ledger.record("m.B", [], failures([100, 101]))
    ledger.checkpoint()
    assert ledger.set_action("m.A", range(1, 6), Action.IGNORE) == 5
    assert ledger.set_action("m.A", range(1, 6), Action.IGNORE) == 0  # already so
    ledger.close()
    with ledger_backend.reader() as reader:
        newest = reader.newest_failed(3)
        assert [(identity, record.id) for identity, record in newest] == [("m.B", 101), ("m.B", 100), ("m.A", 30)]
        assert newest[0][1] == failures([101])[0]  # the record whole: description, cause, time
        assert reader.failed_counts() == {"m.A": {"RETRY": 25, "IGNORE": 5}, "m.B": {"RETRY": 2}}
        page = reader.failed_page(migration="m.A", offset=1, limit=2)
        assert page.total == 30 and [r.id for _, r in page.rows] == [29, 28]
        found = reader.failed_page(text="BAD 10", limit=2)  # 101, 100, 10
        assert found.total == 3 and [r.id for _, r in found.rows] == [101, 100]
        assert [(e["event"], e["count"]) for e in reader.events()] == [("records.marked", 5)]


OPS = st.lists(st.tuples(st.sampled_from(["fail", "succeed", "ignore", "retry"]), st.sampled_from(["m.A", "m.B"]),
                         st.lists(st.integers(1, 12), max_size=5)), max_size=15)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_what_it_reads_is_what_was_recorded(ledger_factory: Callable[[], Backend],
                                            ops: list[tuple[str, str, list[int]]]) -> None:
    backend = ledger_factory()
    ledger = backend.open()
    expected = MigrationProgress()
    logged: set[tuple[str, int]] = set()  # a run records an id succeeded once, as the runner does
    for kind, identity, ids in ops:
        unique = list(dict.fromkeys(ids))
        if kind == "succeed":
            unique = [i for i in unique if (identity, i) not in logged]
            logged.update((identity, i) for i in unique)
        if kind == "fail":
            records = failures(unique)
            ledger.record(identity, [], records)
            expected.entry(identity).mark_failed(records)
        elif kind == "succeed":
            ledger.record(identity, unique, [])
            expected.entry(identity).mark_succeeded(unique)
        else:
            action = Action.IGNORE if kind == "ignore" else Action.RETRY
            ledger.checkpoint()
            assert ledger.set_action(identity, unique, action) == expected.set_action(identity, unique, action)
        ledger.checkpoint()
    ledger.close()
    with backend.reader() as reader:
        for identity, entry in expected.migrations.items():
            assert sorted(reader.iter_succeeded(identity)) == sorted(entry.succeeded)
            assert {f.id: f.action for f in reader.failed_records(identity)} == {
                i: f.action for i, f in entry.failed.items()}
        counted = {i: {a.value: n for a in Action if (n := sum(f.action is a for f in e.failed.values()))}
                   for i, e in expected.migrations.items() if e.failed}
        assert reader.failed_counts() == counted
        everything = reader.progress().migrations
        assert {i: set(e.succeeded) for i, e in everything.items() if e.succeeded} == {
            i: set(e.succeeded) for i, e in expected.migrations.items() if e.succeeded}


def test_a_snapshot_is_one_state_of_the_ledger(ledger_backend: Backend) -> None:
    a_run(ledger_backend.open, "m.A", ok=False)
    with ledger_backend.reader() as reader:
        with reader.snapshot():
            before = reader.runs()
            a_run(ledger_backend.open, "m.A", ok=True)  # another process's run, committed meanwhile
            assert reader.runs() == before
        assert len(reader.runs()) == len(before) + 1


def test_reading_never_writes_and_takes_no_lease(ledger_backend: Backend) -> None:
    a_run(ledger_backend.open, "m.A", ok=False)
    before = ledger_backend.dump()
    with ledger_backend.reader() as reader:
        reader.progress()
        reader.failed_counts()
        other = reader.new_reader()
        assert other.runs() == reader.runs()
        other.close()
    assert ledger_backend.dump() == before


def test_it_refuses_to_change_what_a_live_run_holds(ledger_backend: Backend) -> None:
    run = ledger_backend.open()
    run.begin_run([])
    try:
        with ledger_backend.reader() as reader:
            holder = reader.live_holder()
            assert holder is not None and holder.pid == os.getpid()
            with pytest.raises(LedgerBusyError, match=r"^cannot export: progress ledger .* is in use by pid"):
                reader.refuse_if_live("export")
    finally:
        run.end_run(RunResult([]))
        run.close()
    with ledger_backend.reader() as reader:
        reader.refuse_if_live("export")  # released: nothing to refuse


# --- what a run writes ----------------------------------------------------------------------------


def dst_count(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = int(conn.exec_driver_sql("SELECT count(*) FROM dst").scalar_one())
    engine.dispose()
    return count


@migration(source="src", dest="dst", batch_size=10)
class Copy:
    def transform(self, aggregates: Aggregates, record: Record) -> list[Record]:
        return [{"id": record["id"], "name": record["name"].upper(), "n": record["n"]}]


def sql_service(tmp_path: Path, backend: Backend, n: int = 50) -> MigrationService:
    make_source(tmp_path, n)
    stores = [SqlStore("src", f"sqlite:///{tmp_path}/src.db", "src"),
              SqlStore("dst", f"sqlite:///{tmp_path}/dst.db", "dst")]
    return MigrationService(stores, [Copy], ledger=backend.open(), checkpoint_interval=0)


def test_a_batch_saved_but_not_recorded_is_folded_back_from_the_journal(tmp_path: Path,
                                                                        ledger_backend: Backend) -> None:
    service = sql_service(tmp_path, ledger_backend)
    ledger = service.ledger
    assert isinstance(ledger, DurableLedger)
    identity = service.plan()[0]
    dst = service.stores["dst"]
    # what a crash leaves: outputs committed with their journal entry, the ledger never told
    dst.save_all([{"id": i, "name": f"ROW {i}", "n": i} for i in (1, 2, 3)],
                 journal=ledger.journal_for(identity, [1, 2, 3]))
    result = service.run()
    assert result.ok, result.summary()
    assert result.reports[0].skipped == 3 and result.reports[0].succeeded == 47
    assert dst_count(f"sqlite:///{tmp_path}/dst.db") == 50
    # cleaned, but for the newest entry: the ledger's mark on the destination
    assert [e.payload for e in dst.read_journal(ledger.journal_key(identity))] == ["[41,42,43,44,45,46,47,48,49,50]"]
    ledger.close()
    assert ledger_backend.succeeded(identity) == sorted(range(1, 51), key=repr)
    with ledger_backend.reader() as reader:
        (record,) = reader.migrations()
        assert record.dest is not None and record.dest.endswith("dst.db#dst") and record.changes == 1  # once a run


def test_runs_and_attempts_are_recorded(tmp_path: Path, ledger_backend: Backend) -> None:
    calls = {"fail": True}

    @migration(source="src", dest="dst", save_retry=Retry(times=0, delay=0))
    class Flaky:
        def transform(self, aggregates: Aggregates, record: Record) -> list[Record]:
            if calls["fail"]:
                raise RuntimeError("not yet")
            return [{"id": record["id"], "name": record["name"], "n": 0}]

    make_source(tmp_path, 5)
    stores = [SqlStore("src", f"sqlite:///{tmp_path}/src.db", "src"),
              SqlStore("dst", f"sqlite:///{tmp_path}/dst.db", "dst")]
    service = MigrationService(stores, [Flaky], ledger=ledger_backend.open(), checkpoint_interval=0)
    assert not service.run().ok
    assert not service.run().ok
    calls["fail"] = False
    assert service.run().ok
    assert service.ledger is not None
    service.ledger.close()
    with ledger_backend.reader() as reader:
        runs = [(r.job, r.attempt, r.outcome, r.last_error is not None) for r in reader.runs()[::-1]]
        events = [e["event"] for e in reader.events()]
    assert runs == [(1, 1, "failed", True), (1, 2, "failed", True), (1, 3, "completed", False)]
    assert events.count("run.started") == 3 and events[-1] == "run.completed"


def test_progress_round_trip_through_import(ledger_backend: Backend) -> None:
    progress = MigrationProgress()
    entry = progress.entry("m.One")
    entry.mark_succeeded([1, 2**70, "x", ("a", 1)])
    entry.mark_failed([FailedRecord(5, "src(id=5)", "boom"), FailedRecord("k", "d", "c", Action.IGNORE)])
    progress.record_fatal("trace")
    progress.start_migration("m.One")
    ledger = ledger_backend.open()
    ledger.import_progress(progress)  # type: ignore[attr-defined]
    back = ledger.progress()
    assert set(back.migrations["m.One"].succeeded) == set(entry.succeeded)
    assert back.migrations["m.One"].failed == entry.failed
    assert back.fatal_errors == ["trace"]
    assert back.metadata.in_progress == ["m.One"]
    assert ledger.set_action("m.One", [5], Action.IGNORE) == 1
    assert ledger.progress().migrations["m.One"].failed[5].action is Action.IGNORE
    ledger.close()


def test_memory_store_destination_records_every_page(ledger_backend: Backend) -> None:
    src = MemoryStore("src", records=[{"id": i, "name": str(i), "n": i} for i in range(30)])
    dst = MemoryStore("dst")
    service = MigrationService([src, dst], [Copy], ledger=ledger_backend.open(), checkpoint_interval=0)
    assert service.run().ok
    assert len(dst.records()) == 30
    ledger = service.ledger
    assert isinstance(ledger, DurableLedger)
    assert [e.payload for e in dst.read_journal(ledger.journal_key(service.plan()[0]))] == [
        "[20,21,22,23,24,25,26,27,28,29]"]  # cleaned, but for the ledger's mark on the destination
    ledger.close()
    assert ledger_backend.succeeded(service.plan()[0]) == sorted(range(30), key=repr)


def test_journal_entries_carry_the_lease_epoch_and_the_next_holder_fences_the_older_ones_off(
        ledger_backend: Backend) -> None:
    """A run's entries carry its lease's epoch; a run that takes the lease raises the fence to
    its own epoch before it reads the journal: what the old holder committed is folded back,
    and a batch of the old holder still on its way is refused."""
    calls: list[str] = []

    class Recording(MemoryStore):
        def raise_fence(self, migration: str, epoch: int) -> None:
            calls.append(f"raise {epoch}")
            super().raise_fence(migration, epoch)

        def read_journal(self, migration: str | None = None) -> list[JournalEntry]:
            calls.append("read")
            return super().read_journal(migration)

    dest = Recording("dst", key="n")
    old = ledger_backend.open()
    entry = old.journal_for(MIGRATION, [1])
    assert entry is not None and entry.fence is None  # no lease held: nothing to fence
    old.begin_run([])
    old.start_migration(MIGRATION)
    assert old.lease is not None
    committed, late = old.journal_for(MIGRATION, [1]), old.journal_for(MIGRATION, [2])
    assert committed is not None and late is not None and committed.fence == late.fence == old.lease.epoch
    dest.save_all([{"n": 1}], journal=committed)
    old.close()

    new = ledger_backend.open()
    new.begin_run([])
    new.start_migration(MIGRATION)
    assert new.lease is not None and committed.fence is not None and new.lease.epoch > committed.fence
    assert new.recover(MIGRATION, dest) == 1  # the old holder's committed batch
    assert calls[:2] == [f"raise {new.lease.epoch}", "read"]
    with pytest.raises(FencedOffError):
        dest.save_all([{"n": 2}], journal=late)
    assert dest.records() == [{"n": 1}]
    new.close()


_key_part = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=6),  # quotes, \, controls, unicode
)
_record_id = st.one_of(_key_part, st.tuples(_key_part), st.tuples(_key_part, _key_part))
_page = st.lists(st.tuples(st.integers(0, 24), st.booleans()), max_size=8)  # (id index, migrated?)
_run = st.tuples(st.lists(st.tuples(_page, st.booleans()), max_size=6), st.booleans())  # (pages, killed?)
Pending = list[tuple[list[RecordId], list[RecordId]]]
"""Pages recorded and not committed yet: (succeeded ids, failed ids)."""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(universe=st.lists(_record_id, min_size=25, max_size=25, unique_by=encode_id), runs=st.lists(_run, max_size=5))
def test_runs_kills_and_resumes_never_lose_nor_repeat_a_success(
        ledger_factory: Callable[[], Backend], universe: list[RecordId],
        runs: list[tuple[list[tuple[list[tuple[int, bool]], bool]], bool]]) -> None:
    """Runs as the runner does them: each id once per run, what the ledger says is done
    skipped, successes journaled; a killed run loses what it did not commit, but its journal."""
    backend = ledger_factory()
    dest = MemoryStore("dst")
    succeeded: dict[str, RecordId] = {}  # what the ledger must hold, by canonical text
    failed: set[str] = set()

    def check(ledger: DurableLedger | LedgerReader) -> None:
        assert isinstance(ledger, LedgerReader)
        got = list(ledger.iter_succeeded(MIGRATION))
        assert keys(got) == sorted(succeeded)  # each id once, types intact
        assert keys(f.id for f in ledger.iter_failed(MIGRATION)) == sorted(failed)
        assert keys(ledger.progress().migrations[MIGRATION].succeeded) == sorted(succeeded)

    for pages, killed in [*runs, ([], False)]:  # a last run that only resumes
        ledger = backend.open()
        ledger.start_migration(MIGRATION)
        ledger.recover(MIGRATION, dest)
        done_before = set(succeeded)
        seen: set[str] = set()
        pending: Pending = []
        for page, commit in pages:
            ids = list({encode_id(universe[i]): universe[i] for i, _ in page
                        if encode_id(universe[i]) not in seen}.values())
            seen.update(map(encode_id, ids))
            done = ledger.succeeded_among(MIGRATION, ids)
            assert keys(done) == sorted(k for k in map(encode_id, ids) if k in done_before)
            commit_if_flushed(ledger, pending, succeeded, failed)  # a lookup commits failures first
            outcome = {encode_id(universe[i]): ok for i, ok in page}
            todo = [i for i in ids if i not in done]
            ok = [i for i in todo if outcome[encode_id(i)]]
            bad = [FailedRecord(i, "d", "c") for i in todo if not outcome[encode_id(i)]]
            if ok:
                dest.save_all([], journal=ledger.journal_for(MIGRATION, ok))
            ledger.record(MIGRATION, ok, bad)
            pending.append((ok, [f.id for f in bad]))
            if commit:
                ledger.checkpoint()
                commit_if_flushed(ledger, pending, succeeded, failed)
        if killed:  # what was not committed is lost; the journal keeps the saved batches
            ledger._ops.clear()
            ledger.conn.close()  # type: ignore[attr-defined]
            for ok_ids, _ in pending:
                apply(succeeded, failed, ok_ids, [])
        else:
            ledger.finish_migration(MIGRATION, completed=False)
            for ok_ids, bad_ids in pending:
                apply(succeeded, failed, ok_ids, bad_ids)
            check(ledger)
            ledger.close()
            reader = backend.open(read_only=True)
            check(reader)
            reader.close()
    if backend.kind == "sqlite":  # the last start folded the log of successes into the per-id table
        assert ledger_files.row_counts(backend.location)["succeeded_log"] == 0


def commit_if_flushed(ledger: DurableLedger, pending: Pending, succeeded: dict[str, RecordId],
                      failed: set[str]) -> None:
    if not ledger._ops:
        for ok_ids, bad_ids in pending:
            apply(succeeded, failed, ok_ids, bad_ids)
        pending.clear()


def apply(succeeded: dict[str, RecordId], failed: set[str], ok_ids: list[RecordId],
          bad_ids: list[RecordId]) -> None:
    for i in ok_ids:
        succeeded[encode_id(i)] = i
        failed.discard(encode_id(i))
    for i in bad_ids:
        succeeded.pop(encode_id(i), None)
        failed.add(encode_id(i))


# --- the lease ----------------------------------------------------------------------------------


def test_epochs_grow_with_every_acquisition_releases_included(ledger_backend: Backend) -> None:
    epochs = []
    for _ in range(3):
        ledger = ledger_backend.open()
        ledger.begin_run([])
        assert ledger.lease is not None
        epochs.append(ledger.lease.epoch)
        ledger.end_run(RunResult([]))
        ledger.close()
    assert epochs == [1, 2, 3]


def test_lease_is_exclusive_in_process(ledger_backend: Backend) -> None:
    first = ledger_backend.open()
    first.begin_run([])
    second = ledger_backend.open()
    with pytest.raises(LedgerBusyError, match=f"in use by pid {os.getpid()}"):
        second.begin_run([])
    first.end_run(RunResult([]))
    second.begin_run([])  # released: now it is free
    second.end_run(RunResult([]))
    first.close()
    second.close()


def test_a_live_process_on_this_host_keeps_its_lease_however_old_its_heartbeat(ledger_backend: Backend) -> None:
    ledger_backend.open().close()
    ledger_backend.take_lease(Process.current())
    ledger_backend.age_heartbeat(3600)  # as if this process had been stopped for an hour
    second = ledger_backend.open()
    with pytest.raises(LedgerBusyError, match=f"in use by pid {os.getpid()} on {socket.gethostname()} "
                                              f"since .* seems stopped .* kill -CONT {os.getpid()}"):
        second.begin_run([])
    with pytest.raises(LedgerBusyError):  # importing is refused as well
        second.import_progress(MigrationProgress())  # type: ignore[attr-defined]
    second.close()


def dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("who", ["dead pid", "reused pid"])
def test_a_dead_holder_on_this_host_is_taken_over(ledger_backend: Backend, who: str) -> None:
    ledger_backend.open().close()
    me = Process.current()
    gone = Process(dead_pid(), me.host, "boot:1") if who == "dead pid" else Process(me.pid, me.host, "boot:1")
    ledger_backend.take_lease(gone)
    ledger = ledger_backend.open()
    ledger.begin_run([])
    assert ledger.lease is not None and ledger.lease.previous is not None  # type: ignore[attr-defined]
    assert ledger.lease.previous.pid == gone.pid and ledger.lease.epoch == 2  # type: ignore[attr-defined]
    ledger.end_run(RunResult([]))
    ledger.close()


def test_a_run_that_lost_its_lease_writes_nothing_more(ledger_backend: Backend,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRYMAN_LEASE_STALE_AFTER", "0.4")  # a heartbeat every 0.1 s
    ledger = ledger_backend.open()
    ledger.begin_run([])
    ledger.start_migration(MIGRATION)
    ledger.record(MIGRATION, [1, 2], [])
    ledger.checkpoint()
    ledger.assert_held()
    # another host that finds this run's heartbeat stale (its own limit) takes the lease over
    other = ledger_backend.take_lease(Process(4242, "elsewhere.example", None), stale_after=0.0)
    before = ledger_backend.dump()
    lease: Any = ledger.lease
    assert lease is not None
    poll_until(lambda: lease.lost, what="the heartbeat to notice")
    with pytest.raises(LeaseLostError, match=r"lost the lease of progress ledger .*: pid 4242 on "
                                             r"elsewhere\.example since .* took it over"):
        ledger.assert_held()
    ledger.record(MIGRATION, [3], [FailedRecord(4, "d", "c", Action.RETRY)])
    with pytest.raises(LeaseLostError):
        ledger.checkpoint()
    with pytest.raises(LeaseLostError):
        ledger.record_fatal(MIGRATION, "boom")
    with pytest.raises(LeaseLostError):
        ledger.end_run(RunResult([]))
    assert ledger.record_event({"event": "x"}) is None
    ledger.close()
    assert ledger_backend.dump() == before  # neither progress nor a run outcome
    holder = ledger_backend.holder()
    assert holder is not None and holder.owner == other.owner


def test_assert_held_asks_the_ledger_even_when_the_heartbeat_saw_nothing(ledger_backend: Backend) -> None:
    ledger = ledger_backend.open()
    ledger.begin_run([])
    lease: Any = ledger.lease
    lease.stop_heartbeat()  # a process resuming from a pause: its heartbeat has not run
    ledger_backend.take_lease(Process(4242, "elsewhere.example", None), stale_after=0.0)
    assert lease.lost is None
    with pytest.raises(LeaseLostError):
        ledger.assert_held()
    ledger.close()


def test_the_status_server_calls_a_stopped_run_running(ledger_backend: Backend) -> None:
    ledger = ledger_backend.open()
    ledger.begin_run([])
    lease: Any = ledger.lease
    lease.stop_heartbeat()
    ledger_backend.age_heartbeat(3600)
    assert LedgerStatusSource(ledger_backend.location).snapshot().status == "running"
    ledger.end_run(RunResult([]))
    ledger.close()


# --- lineage, reset, verifications -----------------------------------------------------------------


def test_a_second_destination_gets_a_key_of_its_own_and_inputs_are_kept(ledger_backend: Backend) -> None:
    ledger = ledger_backend.open()
    assert ledger.bind(MIGRATION, "db#orders") == MIGRATION
    assert ledger.bind(MIGRATION, "db#orders") == MIGRATION  # the same destination: the same key
    assert ledger.key_of(MIGRATION, "db#archive") == f"{MIGRATION}@db#archive"
    assert ledger.bind(MIGRATION, "db#archive") == f"{MIGRATION}@db#archive"
    ledger.begin_run([])
    ledger.start_migration(MIGRATION)
    ledger.record(MIGRATION, [1], [])
    ledger.checkpoint()
    ledger.record(MIGRATION, [2], [])  # the write count rises once a run
    ledger.checkpoint()
    assert ledger.inputs(MIGRATION) is None
    ledger.note_inputs(MIGRATION, {"m.Other": 3})
    ledger.end_run(RunResult([]))
    ledger.close()
    ledger = ledger_backend.open()
    assert ledger.inputs(MIGRATION) == {"m.Other": 3}
    assert ledger.lineage() == {MIGRATION: ("db#orders", 1), f"{MIGRATION}@db#archive": ("db#archive", 0)}
    ledger.close()


def test_forget_resets_a_migration_and_its_journal_entries(ledger_backend: Backend) -> None:
    dest = MemoryStore("dst", key="n")
    ledger = ledger_backend.open()
    ledger.begin_run([])
    ledger.start_migration(MIGRATION)
    ledger.recover(MIGRATION, dest)
    dest.save_all([{"n": 1}], journal=ledger.journal_for(MIGRATION, [1]))
    ledger.record(MIGRATION, [1], failures([2]))
    ledger.record_fatal(MIGRATION, "boom")
    ledger.finish_migration(MIGRATION, completed=True)
    ledger.end_run(RunResult([]))
    assert ledger.completed(MIGRATION)
    other = JournalEntry(f"another-ledger:{MIGRATION}", "[9]")
    dest.save_all([{"n": 9}], journal=other)
    ledger.forget(MIGRATION, dest)
    assert [e.migration for e in dest.read_journal()] == [other.migration]  # another ledger's mark stays
    ledger.forget(MIGRATION, dest, every_ledger=True)
    assert dest.read_journal() == []
    ledger.close()
    with ledger_backend.reader() as reader:
        assert list(reader.iter_succeeded(MIGRATION)) == [] and reader.failed_records(MIGRATION) == []
        assert reader.fatal_errors() == [] and not reader.metadata().completed
        assert [e["event"] for e in reader.events()][-2:] == ["migration.reset", "migration.reset"]


def test_a_verification_is_kept_and_the_newest_read(ledger_backend: Backend) -> None:
    ledger = ledger_backend.open()
    ledger.record_verification({"ok": False, "checked": 3})
    ledger.record_verification({"ok": True, "checked": 5})
    ledger.close()
    with ledger_backend.reader() as reader:
        assert reader.verification() == {"ok": True, "checked": 5}
