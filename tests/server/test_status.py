"""The status rules against real ledgers written by real runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import ledger_files
import pytest
from helpers import poll_until

from ferryman import (
    Action,
    FailedRecord,
    FerrymanError,
    MemoryLedger,
    MemoryStore,
    MigrationProgress,
    MigrationService,
    Retry,
    RunObserver,
    SqlStore,
    migration,
)
from ferryman.progress.sqlite import SqliteLedger
from ferryman.server import LedgerStatusSource, LiveStatusSource, StatusSnapshot

REPO = Path(__file__).resolve().parents[2]
NO_RETRY = Retry(times=0, delay=0)
BROKEN: set[int] = set()
"""Ids the ``Copy`` migration fails on; tests set it."""
DELAY = {"seconds": 0.0}


@migration(source="src", dest="dst", batch_size=5, save_retry=NO_RETRY, load_retry=NO_RETRY)
class Copy:
    def transform(self, aggregates, record):
        time.sleep(DELAY["seconds"])
        if record["id"] in BROKEN:
            raise ValueError(f"cannot copy record {record['id']}")
        return [{"id": record["id"], "name": record["name"]}]


@migration(source="other", dest="other_dst", batch_size=5, save_retry=NO_RETRY)
class CopyOther:
    def transform(self, aggregates, record):
        return [dict(record)]


@pytest.fixture(autouse=True)
def _reset():
    BROKEN.clear()
    DELAY["seconds"] = 0.0
    yield
    BROKEN.clear()



def dest(store):
    return store


def stores(n: int = 20) -> list[MemoryStore]:
    return [MemoryStore("src", records=[{"id": i, "name": f"n{i}"} for i in range(1, n + 1)]),
            dest(MemoryStore("dst"))]


def service(ledger: Path, migrations=(Copy,), extra=(), n: int = 20) -> MigrationService:
    return MigrationService([*stores(n), *extra], list(migrations), ledger=ledger,
                            checkpoint_interval=0)


def run_once(ledger: Path, **kw):
    svc = service(ledger, **kw)
    try:
        return svc.run()
    finally:
        svc.ledger.close()




# --- SQLite ledger ------------------------------------------------------------------------------


def test_no_run_ever_started_is_pending(tmp_path):
    missing = LedgerStatusSource(tmp_path / "not-yet.db")
    assert missing.snapshot().result() == {"status": "pending", "step": None, "last_err": None,
                                           "try_count": 0}
    SqliteLedger(tmp_path / "fresh.db").close()  # schema, no run
    snap = LedgerStatusSource(tmp_path / "fresh.db").snapshot()
    assert snap.result() == {"status": "pending", "step": None, "last_err": None, "try_count": 0}
    assert snap.migrations == [] and snap.runs == [] and snap.failed_records == []


def test_completed_for_the_server_that_watched_migrated_for_a_later_one(tmp_path):
    ledger = tmp_path / "run.db"
    watching = LedgerStatusSource(ledger)  # started before the run, like `ferryman serve`
    assert watching.snapshot().status == "pending"
    assert run_once(ledger).ok
    assert watching.snapshot().result() == {"status": "completed", "step": "Copy",
                                            "last_err": None, "try_count": 1}
    later = LedgerStatusSource(ledger)  # a second `serve` started after the run
    assert later.snapshot().result() == {"status": "migrated", "step": "Copy", "last_err": None,
                                         "try_count": 1}
    progress = later.snapshot().progress()
    (copy,) = progress["migrations"]
    assert copy["state"] == "completed" and copy["succeeded"] == 20 and copy["total"] == 20
    assert progress["totals"]["read"] == 20 and progress["totals"]["total"] == 20
    assert progress["runs"][0]["outcome"] == "completed"


def test_a_failed_run_shows_its_last_error_as_a_string_and_its_failed_records(tmp_path):
    BROKEN.update({3, 7})
    ledger = tmp_path / "run.db"
    assert not run_once(ledger).ok
    snap = LedgerStatusSource(ledger).snapshot()
    assert snap.status == "failed" and snap.step == "Copy" and snap.try_count == 1
    assert isinstance(snap.last_err, str)
    assert snap.last_err == "Copy: src(id=7): ValueError: cannot copy record 7"
    assert snap.failed_total == 2
    assert [(f["migration"], f["id"], f["action"]) for f in snap.failed_records] == [
        ("Copy", 7, "RETRY"), ("Copy", 3, "RETRY")]  # newest first
    cause = snap.failed_records[0]["cause"]
    assert cause.startswith("Traceback") and cause.endswith("ValueError: cannot copy record 7")
    assert snap.runs[0]["outcome"] == "failed" and snap.runs[0]["last_error"] == snap.last_err
    assert snap.migrations[0]["state"] == "failed" and snap.migrations[0]["failed"] == 2


def test_try_count_counts_the_runs_of_a_job_and_starts_again_after_a_completion(tmp_path):
    ledger = tmp_path / "run.db"
    source = LedgerStatusSource(ledger)
    BROKEN.add(5)
    seen = []
    for _ in range(3):
        run_once(ledger)
        seen.append((source.snapshot().status, source.snapshot().try_count))
    BROKEN.clear()
    run_once(ledger)
    seen.append((source.snapshot().status, source.snapshot().try_count))
    run_once(ledger)  # new work after the completion: a new job
    seen.append((source.snapshot().status, source.snapshot().try_count))
    assert seen == [("failed", 1), ("failed", 2), ("failed", 3), ("completed", 4), ("completed", 1)]
    snap = source.snapshot()
    assert [(r["job"], r["attempt"], r["outcome"]) for r in snap.runs] == [
        (2, 1, "completed"), (1, 4, "completed"), (1, 3, "failed"), (1, 2, "failed"),
        (1, 1, "failed")]
    assert snap.last_err is None and snap.failed_total == 0


def run_copy_then_copy_other_alone(ledger: Path, ignore_the_failure: bool) -> None:
    """Copy fails on record 2 (marked IGNORE if asked), then a run of CopyOther alone completes."""
    other = [MemoryStore("other", records=[{"id": 1}]), dest(MemoryStore("other_dst"))]
    BROKEN.add(2)
    svc = service(ledger, migrations=(Copy, CopyOther), extra=other)
    try:
        assert not svc.run().ok
        if ignore_the_failure:
            (copy,) = [i for i in svc.ledger.identities() if i.endswith(".Copy")]
            assert svc.ledger.set_action(copy, [2], Action.IGNORE) == 1
        assert svc.run(only=["CopyOther"]).ok
    finally:
        svc.ledger.close()


def test_failed_records_left_by_an_earlier_run_keep_the_status_failed(tmp_path):
    run_copy_then_copy_other_alone(tmp_path / "run.db", ignore_the_failure=False)
    snap = LedgerStatusSource(tmp_path / "run.db").snapshot()
    assert snap.status == "failed" and snap.step == "CopyOther"
    assert snap.last_err == "1 failed record(s) remain in Copy; run again to retry them"
    assert {m["name"] for m in snap.migrations} == {"Copy", "CopyOther"}


def test_a_completed_run_of_some_migrations_leaves_the_status_failed_while_others_have_not(tmp_path):
    run_copy_then_copy_other_alone(tmp_path / "run.db", ignore_the_failure=True)  # Copy never completed
    snap = LedgerStatusSource(tmp_path / "run.db").snapshot()
    assert snap.status == "failed"
    assert snap.last_err == ("not completed: Copy (the last run completed without them); "
                             "run again to finish them")


def test_running_while_the_run_is_alive_then_completed(tmp_path):
    ledger = tmp_path / "run.db"
    source = LedgerStatusSource(ledger)
    DELAY["seconds"] = 0.02
    svc = service(ledger, n=60)
    thread = threading.Thread(target=svc.run)
    thread.start()
    try:
        snap = poll_until(lambda: (s := source.snapshot()).status == "running" and s.migrations
                        and s.migrations[0]["read"] > 0 and s, what="running")
        assert snap.step == "Copy" and snap.try_count == 1 and snap.last_err is None
        assert snap.migrations[0]["state"] == "running" and snap.runs[0]["outcome"] is None
    finally:
        thread.join(60)
        svc.ledger.close()
    assert source.snapshot().status == "completed"


SLOW_JOB = """
import sys, time
from ferryman import MemoryStore, MigrationService, migration

@migration(source="src", dest="dst", batch_size=2)
class Slow:
    def transform(self, aggregates, record):
        time.sleep(0.05)
        return [dict(record)]

service = MigrationService(
    [MemoryStore("src", records=[{"id": i} for i in range(10_000)]), MemoryStore("dst")],
    [Slow], ledger=sys.argv[1], checkpoint_interval=0)
service.run()
"""


def test_a_run_whose_process_was_killed_is_failed_not_running(tmp_path):
    ledger = tmp_path / "run.db"
    source = LedgerStatusSource(ledger)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", SLOW_JOB, str(ledger)]
    job = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        snap = poll_until(lambda: (s := source.snapshot()).status == "running"
                        and s.migrations and s.migrations[0]["read"] > 0 and s, what="running")
        assert snap.step == "Slow" and snap.try_count == 1
        assert snap.runs[0]["pid"] == job.pid
    finally:
        job.send_signal(signal.SIGKILL)
        job.communicate(timeout=30)
    died = f"process {job.pid} on {socket.gethostname()} died without finishing"
    snap = source.snapshot()
    assert snap.result() == {"status": "failed", "step": "Slow", "last_err": died, "try_count": 1}
    assert snap.runs[0]["outcome"] == "died" and snap.runs[0]["last_error"] == died
    assert snap.migrations[0]["state"] == "interrupted" and snap.migrations[0]["eta"] is None
    # a later `serve` judges the same way; the next run takes over and counts as attempt 2
    assert LedgerStatusSource(ledger).snapshot().result()["status"] == "failed"
    assert run_once(ledger).ok
    snap = source.snapshot()
    assert (snap.try_count, snap.step) == (2, "Copy")
    assert [r["outcome"] for r in snap.runs] == ["completed", "died"]
    # that run completed Copy; the ledger still holds Slow, interrupted: nothing says "completed"
    assert snap.status == "failed" and snap.last_err.startswith("not completed: Slow")


def test_an_unreadable_ledger_raises(tmp_path):
    ledger = tmp_path / "run.db"
    assert run_once(ledger).ok
    source = LedgerStatusSource(ledger)
    data = ledger.read_bytes()
    ledger.write_bytes(data[:100] + b"\xff" * (len(data) - 100))  # header kept, pages garbage
    with pytest.raises(FerrymanError, match="cannot read progress ledger"):
        source.snapshot()
    (tmp_path / "junk.txt").write_text("not a ledger")
    with pytest.raises(FerrymanError):
        LedgerStatusSource(tmp_path / "junk.txt").snapshot()


def test_sql_stores_and_a_read_only_ledger_are_left_untouched(tmp_path):
    url = f"sqlite:///{tmp_path}/data.db"
    src = SqlStore("src", url, "src")
    import sqlalchemy as sa
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT)")
        conn.exec_driver_sql("CREATE TABLE dst (id INTEGER PRIMARY KEY, name TEXT)")
        conn.exec_driver_sql("INSERT INTO src VALUES (1, 'a'), (2, 'b')")
    engine.dispose()
    ledger = tmp_path / "run.db"
    svc = MigrationService([src, dest(SqlStore("dst", url, "dst"))], [Copy], ledger=ledger,
                           checkpoint_interval=0)
    assert svc.run().ok
    svc.ledger.close()
    before = ledger.read_bytes()
    source = LedgerStatusSource(ledger)
    for _ in range(3):
        assert source.snapshot().status == "migrated"
    assert ledger.read_bytes() == before
    assert ledger_files.holder(ledger) is None


# --- mjg JSON progress ----------------------------------------------------------------------------


def test_json_progress_files(tmp_path):
    path = tmp_path / "progress.json"
    assert LedgerStatusSource(path).snapshot().result() == {
        "status": "pending", "step": None, "last_err": None, "try_count": 0}
    progress = MigrationProgress()
    progress.start_migration("app.Areas")
    progress.entry("app.Areas").mark_succeeded([1, 2])
    progress.save(path)
    assert LedgerStatusSource(path).snapshot().result() == {
        "status": "pending", "step": "Areas", "last_err": None, "try_count": 0}
    progress.finish_migration("app.Areas")
    progress.save(path)
    source = LedgerStatusSource(path)
    assert source.snapshot().result() == {"status": "migrated", "step": "Areas", "last_err": None,
                                          "try_count": 0}
    progress.entry("app.Areas").mark_failed([
        FailedRecord(3, "areas(id=3)", "Traceback ...\nKeyError: 'code'", Action.RETRY)])
    progress.save(path)
    snap = source.snapshot()  # the file changed: read again
    assert snap.result() == {"status": "failed", "step": "Areas",
                             "last_err": "areas(id=3): KeyError: 'code'", "try_count": 0}
    assert snap.failed_records[0]["cause"] == "Traceback ...\nKeyError: 'code'"
    progress.set_action("app.Areas", [3], Action.IGNORE)
    progress.save(path)
    assert source.snapshot().status == "migrated"
    progress.record_fatal("Traceback ...\nOSError: source unreadable")
    progress.save(path)
    assert source.snapshot().result()["last_err"] == "OSError: source unreadable"
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FerrymanError):
        LedgerStatusSource(tmp_path / "bad.json").snapshot()


def test_a_json_progress_written_by_a_real_run(tmp_path):
    path = tmp_path / "progress.json"
    BROKEN.add(4)
    assert not run_once(path).ok
    snap = LedgerStatusSource(path).snapshot()
    assert snap.status == "failed" and snap.try_count == 0 and snap.runs == []
    assert snap.last_err == "src(id=4): ValueError: cannot copy record 4"
    BROKEN.clear()
    assert run_once(path).ok
    assert LedgerStatusSource(path).snapshot().result()["status"] == "migrated"
    json.loads(path.read_text())  # still mjg JSON


# --- live source -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_live_source_follows_one_run(tmp_path, kind):
    svc = service(tmp_path / "run.db") if kind == "sqlite" else MigrationService(
        stores(), [Copy], ledger=MemoryLedger(), checkpoint_interval=0)
    live = LiveStatusSource(svc.ledger)
    svc.add_observer(live)
    assert live.snapshot().result() == {"status": "pending", "step": None, "last_err": None,
                                        "try_count": 0}
    BROKEN.add(9)
    DELAY["seconds"] = 0.01

    class Watch(RunObserver):
        """What the source shows during the first attempt, after it, and as the second starts;
        between the two attempts, the record is fixed."""

        def __init__(self) -> None:
            self.attempt = 0
            self.seen: dict[str, StatusSnapshot] = {}

        def attempt_started(self, attempt: int) -> None:
            self.attempt = attempt
            if attempt == 2:
                self.seen["second"] = live.snapshot()

        def page_done(self, report) -> None:
            if self.attempt == 1 and report.read > 0:
                self.seen.setdefault("running", live.snapshot())

        def retrying(self, result, max_tries: int, delay: float) -> None:
            self.seen["failed"] = live.snapshot()
            BROKEN.clear()

    watch = Watch()
    svc.add_observer(watch)
    svc.run(max_tries=2, retry_delay=0)
    running, failed = watch.seen["running"], watch.seen["failed"]
    assert running.status == "running" and running.try_count == 1 and running.step == "Copy"
    # between two attempts the job goes on: running, with the failed attempt's error
    assert failed.result() == {"status": "running", "step": "Copy",
                               "last_err": "Copy: src(id=9): ValueError: cannot copy record 9",
                               "try_count": 1}
    assert [(f["id"], f["action"]) for f in failed.failed_records] == [(9, "RETRY")]
    assert failed.failed_total == 1 and failed.runs[0]["outcome"] == "failed"
    assert watch.seen["second"].status == "running"
    done = live.snapshot()
    assert done.result() == {"status": "completed", "step": "Copy", "last_err": None,
                             "try_count": 2}
    assert done.failed_records == [] and done.failed_total == 0
    assert [r["outcome"] for r in done.runs] == ["completed", "failed"]
    if kind == "sqlite":
        svc.ledger.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_live_source_says_failed_when_the_run_completed_but_the_ledger_holds_unfinished_migrations(tmp_path, kind):
    other = [MemoryStore("other", records=[{"id": 1}]), dest(MemoryStore("other_dst"))]
    ledger = tmp_path / "run.db" if kind == "sqlite" else MemoryLedger()
    svc = MigrationService([*stores(), *other], [Copy, CopyOther], ledger=ledger, checkpoint_interval=0)
    BROKEN.add(2)
    try:
        assert not svc.run().ok  # Copy fails on record 2
        (copy,) = [i for i in svc.ledger.identities() if i.endswith(".Copy")]
        assert svc.ledger.set_action(copy, [2], Action.IGNORE) == 1
        live = LiveStatusSource(svc.ledger)
        svc.add_observer(live)
        assert svc.run(only=["CopyOther"]).ok
    finally:
        svc.ledger.close()
    assert live.snapshot().result()["status"] == "failed"
    assert live.snapshot().result()["last_err"].startswith("not completed: Copy (the last run completed without them)")


def test_a_reset_migration_is_pending_in_every_view_not_completed(tmp_path):
    ledger = tmp_path / "run.db"
    svc = service(ledger)
    try:
        assert svc.run().ok
        svc.reset(["Copy"])
    finally:
        svc.ledger.close()
    snap = LedgerStatusSource(ledger).snapshot()
    assert snap.status == "failed" and snap.last_err.startswith("not completed: Copy")
    (copy,) = snap.progress()["migrations"]
    assert copy["state"] == "pending" and snap.progress()["totals"]["completed"] == 0
