"""The read API of an SQLite ledger: what the status server, the CLI and tests read, and how."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import ledger_files
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman import (
    Action,
    FailedRecord,
    LedgerBusyError,
    LedgerFileError,
    MigrationProgress,
)
from ferryman.progress.reader import LedgerReader
from ferryman.progress.sqlite import SqliteLedger, SqliteReader
from ferryman.report import MigrationReport, MigrationState, RunResult

WHEN = datetime(2024, 6, 1, 3, 0)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def failures(ids: range | list[int], start: datetime = WHEN) -> list[FailedRecord]:
    return [FailedRecord(i, f"items(id={i})", f"ValueError: bad {i}", Action.RETRY, start + timedelta(seconds=i))
            for i in ids]


def a_run(path: Path, identity: str, *, ok: bool, fatal: str | None = None) -> None:
    """One run as the service records it: its report, its failures, its outcome."""
    ledger = SqliteLedger(path)
    report = MigrationReport(identity, identity.rsplit(".", 1)[-1].lower(), "src", "dst")
    report.state = MigrationState.COMPLETED if ok else MigrationState.FAILED
    ledger.begin_run([report])
    ledger.start_migration(identity)
    ids = [1, 2, 3] if ok else [1, 2]  # 3 fails, until a run migrates it
    done = ledger.succeeded_among(identity, ids)  # as the runner does: each id once
    ledger.record(identity, [i for i in ids if i not in done], [] if ok else failures([3]))
    if fatal:
        ledger.record_fatal(identity, fatal)
    ledger.finish_migration(identity, completed=ok)
    ledger.end_run(RunResult([report]))
    ledger.close()


def test_it_reads_runs_migrations_records_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    a_run(path, "shop.CopyOrders", ok=False, fatal="Traceback...\nOSError: disk gone")
    a_run(path, "shop.CopyOrders", ok=True)
    with SqliteReader.open(str(path)) as reader:
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


def test_the_newest_failures_and_the_counts_without_reading_every_record(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = SqliteLedger(path)
    ledger.record("m.A", [], failures(range(1, 31)))
    ledger.record("m.B", [], failures([100, 101]))
    ledger.checkpoint()
    ledger.set_action("m.A", range(1, 6), Action.IGNORE)
    ledger.close()
    with ledger_files.reader(path) as reader:
        newest = reader.newest_failed(3)
        assert [(identity, record.id) for identity, record in newest] == [("m.B", 101), ("m.B", 100), ("m.A", 30)]
        assert newest[0][1] == failures([101])[0]  # the record whole: description, cause, time
        assert reader.failed_counts() == reader.count_failed() == {
            "m.A": {"RETRY": 25, "IGNORE": 5}, "m.B": {"RETRY": 2}}


OPS = st.lists(st.tuples(st.sampled_from(["fail", "succeed", "ignore"]), st.sampled_from(["m.A", "m.B"]),
                         st.lists(st.integers(1, 12), max_size=5)), max_size=15)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_what_it_reads_is_what_was_recorded(tmp_path_factory: pytest.TempPathFactory,
                                            ops: list[tuple[str, str, list[int]]]) -> None:
    path = tmp_path_factory.mktemp("read") / "l.db"
    ledger = SqliteLedger(path)
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
            ledger.checkpoint()
            ledger.set_action(identity, unique, Action.IGNORE)
            expected.set_action(identity, unique, Action.IGNORE)
        ledger.checkpoint()
    ledger.close()
    with ledger_files.reader(path) as reader:
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


def test_a_snapshot_is_one_state_of_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    a_run(path, "m.A", ok=False)
    with ledger_files.reader(path) as reader:
        with reader.snapshot():
            before = reader.runs()
            a_run(path, "m.A", ok=True)  # another process's run, committed meanwhile
            assert reader.runs() == before
        assert len(reader.runs()) == len(before) + 1


def test_reading_never_writes_and_takes_no_lease(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    a_run(path, "m.A", ok=False)
    before = digest(path)
    with ledger_files.reader(path) as reader:
        reader.progress()
        reader.failed_counts()
        other = reader.new_reader()
        assert other.runs() == reader.runs() and other.conn is not reader.conn
        other.close()
    assert digest(path) == before


def test_it_refuses_to_change_what_a_live_run_holds(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    run = SqliteLedger(path)
    run.begin_run([])
    try:
        with ledger_files.reader(path) as reader:
            holder = reader.live_holder()
            assert holder is not None and holder.pid == os.getpid()
            with pytest.raises(LedgerBusyError, match=r"^cannot export: progress ledger .*l\.db is in use by pid"):
                reader.refuse_if_live("export")
    finally:
        run.end_run(RunResult([]))
        run.close()
    with ledger_files.reader(path) as reader:
        reader.refuse_if_live("export")  # released: nothing to refuse


def test_an_older_file_reads_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    ledger = SqliteLedger(path)
    ledger.start_migration("m.A")
    ledger.close()
    ledger_files.as_version_2_held_by(path, 1, "elsewhere.example")
    with sqlite3.connect(path) as conn:  # a schema 2 file had no lineage columns yet
        for column in ("dest", "changes", "inputs"):
            conn.execute(f"ALTER TABLE migration DROP COLUMN {column}")
    conn.close()
    before = digest(path)
    with ledger_files.reader(path) as reader:
        assert reader.schema_version == 2
        ((identity, dest, changes),) = [(m.identity, m.dest, m.changes) for m in reader.migrations()]
        assert (identity, dest, changes) == ("m.A", None, 0)
        holder = reader.holder()
        assert holder is not None and (holder.epoch, holder.host) == (0, "elsewhere.example")
    assert digest(path) == before


def test_an_empty_database_reads_as_nothing_yet(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 1")  # a header, no table
    conn.close()
    with ledger_files.reader(path) as reader:
        assert reader.runs() == [] and reader.migrations() == [] and reader.failed_counts() == {}
        assert reader.newest_failed(5) == [] and reader.fatal_count() == 0 and reader.holder() is None


def test_what_is_not_a_ledger_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(LedgerFileError, match="cannot read progress ledger .*missing.db"):
        SqliteReader.open(str(tmp_path / "missing.db"))
    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE items (id INTEGER)")
    conn.close()
    with pytest.raises(LedgerFileError, match="app.db is not a ferryman progress ledger"):
        SqliteReader.open(str(foreign))
    newer = tmp_path / "newer.db"
    SqliteLedger(newer).close()
    ledger_files.set_schema(newer, "99")
    with pytest.raises(LedgerFileError, match="written by a newer ferryman"):
        SqliteReader.open(str(newer))
