"""The durable ledger: exactly once across hard kills, leases, runs, JSON round trips."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from ferryman import (
    Action, FailedRecord, LedgerBusyError, MemoryStore, MigrationProgress, MigrationService,
    Retry, RunResult, SqlStore, migration,
)
from ferryman.progress.sqlite_ledger import SqliteLedger

JOB = Path(__file__).with_name("chaos_job.py")


def make_source(directory: Path, n: int) -> None:
    """``src.db`` with ``n`` rows in table src, and an empty table dst in ``dst.db``."""
    for name in ("src", "dst"):
        engine = sa.create_engine(f"sqlite:///{directory}/{name}.db")
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n INTEGER)")
            if name == "src":
                conn.execute(sa.text("INSERT INTO src VALUES (:id, :name, :n)"),
                             [{"id": i, "name": f"row {i}", "n": i} for i in range(1, n + 1)])
        engine.dispose()


def dst_rows(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, name, n FROM dst ORDER BY id").fetchall()
    engine.dispose()
    return [tuple(r) for r in rows]


def succeeded_ids(ledger_path: Path) -> list[int]:
    ledger = SqliteLedger(ledger_path, read_only=True)
    try:
        (identity,) = ledger.identities()
        return sorted(ledger.iter_succeeded(identity))
    finally:
        ledger.close()


def start_job(tmp_path: Path, batch: int = 256) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(JOB), f"sqlite:///{tmp_path}/src.db", f"sqlite:///{tmp_path}/dst.db",
         str(tmp_path / "run.db"), str(batch)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_hard_kills_never_lose_or_duplicate_a_record(tmp_path, sig):
    n = 150_000
    make_source(tmp_path, n)
    rng = random.Random(20261127 + sig)
    kills = 0
    while kills < 12:
        job = start_job(tmp_path, batch=rng.choice([64, 256, 1000]))
        assert job.stdout.readline() == "running\n", job.communicate()[1]
        time.sleep(rng.uniform(0.02, 0.3))  # reading, saving, committing the ledger, folding the journal
        if job.poll() is not None:
            pytest.fail("the migration finished before the test could kill it 12 times")
        job.send_signal(sig)
        out, err = job.communicate(timeout=60)
        kills += 1
        if sig == signal.SIGTERM:  # once running, a SIGTERM stops gently
            assert job.returncode in (130, 0), err
    final = start_job(tmp_path)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    expected = [(i, f"ROW {i}", 2 * i) for i in range(1, n + 1)]
    assert dst_rows(f"sqlite:///{tmp_path}/dst.db") == expected
    assert succeeded_ids(tmp_path / "run.db") == list(range(1, n + 1))


@migration(source="src", dest="dst", batch_size=10)
class Copy:
    def transform(self, aggregates, record):
        return [{"id": record["id"], "name": record["name"].upper(), "n": record["n"]}]


def sql_service(tmp_path, n=50, ledger=None):
    make_source(tmp_path, n)
    stores = [SqlStore("src", f"sqlite:///{tmp_path}/src.db", "src"),
              SqlStore("dst", f"sqlite:///{tmp_path}/dst.db", "dst")]
    return MigrationService(stores, [Copy], ledger=ledger or tmp_path / "run.db", checkpoint_interval=0)


def test_a_batch_saved_but_not_recorded_is_folded_back_from_the_journal(tmp_path):
    service = sql_service(tmp_path)
    ledger = service.ledger
    identity = service.plan()[0]
    dst = service.stores["dst"]
    # what a crash leaves: outputs committed with their journal entry, the ledger never told
    dst.save_all([{"id": i, "name": f"ROW {i}", "n": i} for i in (1, 2, 3)],
                 journal=ledger.journal_for(identity, [1, 2, 3]))
    result = service.run()
    assert result.ok, result.summary()
    assert result.reports[0].skipped == 3 and result.reports[0].succeeded == 47
    assert len(dst_rows(f"sqlite:///{tmp_path}/dst.db")) == 50
    assert dst.read_journal(ledger.journal_key(identity)) == []
    ledger.close()
    assert succeeded_ids(tmp_path / "run.db") == list(range(1, 51))


def test_runs_and_attempts_are_recorded(tmp_path):
    service = sql_service(tmp_path, n=5)
    calls = {"fail": True}

    @migration(source="src", dest="dst", save_retry=Retry(times=0, delay=0))
    class Flaky:
        def transform(self, aggregates, record):
            if calls["fail"]:
                raise RuntimeError("not yet")
            return [{"id": record["id"], "name": record["name"], "n": 0}]

    service = MigrationService(list(service.stores.values()), [Flaky],
                               ledger=tmp_path / "runs.db", checkpoint_interval=0)
    assert not service.run().ok
    assert not service.run().ok
    calls["fail"] = False
    assert service.run().ok
    service.ledger.close()
    conn = sqlite3.connect(tmp_path / "runs.db")
    runs = conn.execute("SELECT job, attempt, outcome, last_error IS NOT NULL FROM run ORDER BY id").fetchall()
    assert runs == [(1, 1, "failed", 1), (1, 2, "failed", 1), (1, 3, "completed", 0)]


def test_a_second_run_is_refused_while_the_first_is_alive_and_recovers_after_a_kill(tmp_path):
    make_source(tmp_path, 20_000)
    holder = start_job(tmp_path, batch=16)
    deadline = time.time() + 30
    while time.time() < deadline:  # wait until the job holds the lease
        conn = sqlite3.connect(tmp_path / "run.db") if (tmp_path / "run.db").exists() else None
        try:
            if conn and conn.execute("SELECT count(*) FROM lease").fetchone()[0]:
                break
        except sqlite3.OperationalError:
            pass
        finally:
            if conn:
                conn.close()
        time.sleep(0.05)
    second = start_job(tmp_path)
    out, err = second.communicate(timeout=60)
    assert second.returncode != 0
    assert f"is in use by pid {holder.pid}" in err
    holder.kill()
    holder.communicate()
    third = start_job(tmp_path)
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    assert len(dst_rows(f"sqlite:///{tmp_path}/dst.db")) == 20_000
    conn = sqlite3.connect(tmp_path / "run.db")
    outcomes = [r[0] for r in conn.execute("SELECT outcome FROM run ORDER BY id")]
    assert outcomes[0] == "died" and outcomes[-1] == "completed"


def test_lease_is_exclusive_in_process(tmp_path):
    first = SqliteLedger(tmp_path / "l.db")
    first.begin_run([])
    second = SqliteLedger(tmp_path / "l.db")
    with pytest.raises(LedgerBusyError, match=f"in use by pid {os.getpid()}"):
        second.begin_run([])
    first.end_run(RunResult([]))
    second.begin_run([])  # released: now it is free
    second.end_run(RunResult([]))


def test_progress_round_trip_through_json(tmp_path):
    progress = MigrationProgress()
    entry = progress.entry("m.One")
    entry.mark_succeeded([1, 2**70, "x", ("a", 1)])
    entry.mark_failed([FailedRecord(5, "src(id=5)", "boom"), FailedRecord("k", "d", "c", Action.IGNORE)])
    progress.record_fatal("trace")
    progress.start_migration("m.One")
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.import_progress(progress)
    back = ledger.progress()
    assert back.migrations == progress.migrations or (
        set(back.migrations["m.One"].succeeded) == set(entry.succeeded)
        and back.migrations["m.One"].failed == entry.failed)
    assert back.fatal_errors == ["trace"]
    assert back.metadata.in_progress == ["m.One"]
    assert ledger.set_action("m.One", [5], Action.IGNORE) == 1
    assert ledger.progress().migrations["m.One"].failed[5].action is Action.IGNORE


def test_memory_store_destination_records_every_page(tmp_path):
    src = MemoryStore("src", records=[{"id": i, "name": str(i), "n": i} for i in range(30)])
    dst = MemoryStore("dst")
    service = MigrationService([src, dst], [Copy], ledger=tmp_path / "m.db", checkpoint_interval=0)
    assert service.run().ok
    assert len(dst.records()) == 30
    assert dst.read_journal(service.ledger.journal_key(service.plan()[0])) == []
    service.ledger.close()
    assert succeeded_ids(tmp_path / "m.db") == list(range(30))


def test_an_unreadable_journal_is_fatal_not_a_guess(tmp_path):
    from ferryman import MigrationState, TransientStoreError

    class Down(MemoryStore):
        def read_journal(self, migration=None):
            raise TransientStoreError("store 'dst': connection refused")

    @migration(source="src", dest="dst", load_retry=Retry(times=1, delay=0))
    class CopyAll:
        def transform(self, aggregates, record):
            return [dict(record)]

    src = MemoryStore("src", records=[{"id": i} for i in range(5)])
    dst = Down("dst")
    service = MigrationService([src, dst], [CopyAll], ledger=tmp_path / "l.db", checkpoint_interval=0)
    report = service.run().reports[0]
    assert report.state is MigrationState.FAILED
    assert report.fatal_error == (
        "destination 'dst' journal unreadable: TransientStoreError: store 'dst': connection refused")
    assert dst.records() == []
