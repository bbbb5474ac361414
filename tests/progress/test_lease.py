"""The lease: who may take a ledger over, epochs, a lost lease, the heartbeat, JSON locks."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from typing import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import poll_until

from ferryman import (
    Action, FailedRecord, FerrymanError, LeaseLostError, LedgerBusyError, MigrationProgress, RunResult,
    commands,
)
from ferryman.progress.files import JsonFileLedger
from ferryman.progress.lease import (
    Holder, Lease, LeaseFile, Process, current_holder, holder_alive, live_holder, process_start,
)
from ferryman.progress.sqlite_ledger import SqliteLedger
from ferryman.server import LedgerStatusSource

HERE = "db1"
NOW = 1_000_000.0
STALE = 20.0
MIGRATION = "m.Copy"


def holder(host: str, heartbeat_age: float, started: str | None = "boot:100", pid: int = 77) -> Holder:
    return Holder("owner", pid, host, NOW - 3600, NOW - heartbeat_age, 1, started)


def probe(answer: str | None) -> Callable[[int], str | None]:
    """A stand-in for :func:`process_start` that gives this answer for any pid."""
    return lambda pid: answer


# --- the rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("case, lease, process, alive", [
    ("same host, running, beating", holder(HERE, 1), "boot:100", True),
    ("same host, running, stopped for an hour", holder(HERE, 3600), "boot:100", True),
    ("same host, gone", holder(HERE, 1), None, False),
    ("same host, pid reused by another process", holder(HERE, 1), "boot:999", False),
    ("same host, pid reused after a reboot", holder(HERE, 1), "boot2:100", False),
    ("same host, start unknown to the lease (older ferryman)", holder(HERE, 3600, None), "boot:5", True),
    ("same host, start unknown here (no /proc)", holder(HERE, 3600), "", True),
    ("other host, fresh heartbeat", holder("db2", 5), None, True),
    ("other host, heartbeat at the limit", holder("db2", STALE), None, True),
    ("other host, stale heartbeat", holder("db2", STALE + 0.1), "boot:100", False),
])
def test_who_is_alive(case, lease, process, alive):
    assert holder_alive(lease, here=HERE, now=NOW, stale_after=STALE, start_of=probe(process)) is alive, case


@given(st.floats(0, 10**7), st.sampled_from([None, "", "boot:100", "boot:101"]))
def test_on_its_own_host_a_holder_is_judged_by_its_process_never_its_heartbeat(age, process):
    alive = holder_alive(holder(HERE, age), here=HERE, now=NOW, stale_after=STALE, start_of=probe(process))
    assert alive is (process in ("", "boot:100"))


@given(st.floats(0, 10**7), st.sampled_from([None, "", "boot:100", "boot:101"]))
def test_on_another_host_a_holder_is_judged_by_its_heartbeat_never_a_local_pid(age, process):
    alive = holder_alive(holder("db2", age), here=HERE, now=NOW, stale_after=STALE, start_of=probe(process))
    assert alive is (age <= STALE)


def test_process_start_tells_a_live_process_from_a_dead_one_or_a_zombie():
    me = process_start(os.getpid())
    assert me and me == process_start(os.getpid()) and me.count(":") == 1
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    poll_until(lambda: process_start(child.pid) is None, what="the child to end (a zombie)")
    child.wait()
    assert process_start(child.pid) is None
    assert process_start(0) is None and process_start(-1) is None


def test_the_stale_limit_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FERRYMAN_LEASE_STALE_AFTER", "2.5")
    assert Lease(str(tmp_path / "l.db")).stale_after == 2.5
    monkeypatch.setenv("FERRYMAN_LEASE_STALE_AFTER", "soon")
    with pytest.raises(FerrymanError, match="FERRYMAN_LEASE_STALE_AFTER='soon' is not a number of seconds"):
        Lease(str(tmp_path / "l.db"))


# --- taking and losing the lease of a ledger ----------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def take(path, me: Process, stale_after: float | None = None) -> Lease:
    """Take the lease of the ledger at ``path`` as ``me`` would (through the lease's own API)."""
    lease = Lease(str(path), me=me)
    if stale_after is not None:
        lease.stale_after = stale_after
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            lease.acquire(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()
    return lease


def content(path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def test_epochs_grow_with_every_acquisition_releases_included(tmp_path):
    epochs = []
    for _ in range(3):
        ledger = SqliteLedger(tmp_path / "l.db")
        ledger.begin_run([])
        assert ledger.lease is not None
        epochs.append(ledger.lease.epoch)
        ledger.end_run(RunResult([]))
        ledger.close()
    assert epochs == [1, 2, 3]


def test_a_live_process_on_this_host_keeps_its_lease_however_old_its_heartbeat(tmp_path):
    path = tmp_path / "l.db"
    SqliteLedger(path).close()
    take(path, Process.current())
    with sqlite3.connect(path) as conn:  # as if this process had been stopped for an hour
        conn.execute("UPDATE lease SET heartbeat = heartbeat - 3600")
    conn.close()
    second = SqliteLedger(path)
    with pytest.raises(LedgerBusyError, match=f"in use by pid {os.getpid()} on {socket.gethostname()} "
                                              f"since .* seems stopped .* kill -CONT {os.getpid()}"):
        second.begin_run([])
    with pytest.raises(LedgerBusyError):  # importing is refused as well
        second.import_progress(MigrationProgress())
    second.close()


@pytest.mark.parametrize("who", ["dead pid", "reused pid"])
def test_a_dead_holder_on_this_host_is_taken_over(tmp_path, who):
    path = tmp_path / "l.db"
    SqliteLedger(path).close()
    me = Process.current()
    gone = Process(dead_pid(), me.host, "boot:1") if who == "dead pid" else Process(me.pid, me.host, "boot:1")
    take(path, gone)
    ledger = SqliteLedger(path)
    ledger.begin_run([])
    assert ledger.lease is not None and ledger.lease.previous is not None
    assert ledger.lease.previous.pid == gone.pid and ledger.lease.epoch == 2
    ledger.end_run(RunResult([]))
    ledger.close()


def test_a_run_that_lost_its_lease_writes_nothing_more(tmp_path, monkeypatch):
    monkeypatch.setenv("FERRYMAN_LEASE_STALE_AFTER", "0.4")  # a heartbeat every 0.1 s
    path = tmp_path / "l.db"
    ledger = SqliteLedger(path)
    ledger.begin_run([])
    ledger.start_migration(MIGRATION)
    ledger.record(MIGRATION, [1, 2], [])
    ledger.checkpoint()
    ledger.assert_held()
    # another host that finds this run's heartbeat stale (its own limit) takes the lease over
    other = take(path, Process(4242, "elsewhere.example", None), stale_after=0.0)
    before = content(path)
    assert ledger.lease is not None
    poll_until(lambda: ledger.lease.lost, what="the heartbeat to notice")
    with pytest.raises(LeaseLostError, match=r"lost the lease of progress ledger .*l\.db: pid 4242 on "
                                             r"elsewhere\.example since .* took it over"):
        ledger.assert_held()
    ledger.record(MIGRATION, [3], [FailedRecord(4, "d", "c", Action.RETRY)])
    with pytest.raises(LeaseLostError):
        ledger.checkpoint()
    with pytest.raises(LeaseLostError):
        ledger.record_fatal(MIGRATION, "boom")
    with pytest.raises(LeaseLostError):
        ledger.end_run(RunResult([]))
    ledger.close()
    assert content(path) == before  # neither progress nor a run outcome
    conn = sqlite3.connect(path)
    assert current_holder(conn).owner == other.owner
    conn.close()


def test_assert_held_asks_the_file_even_when_the_heartbeat_saw_nothing(tmp_path):
    path = tmp_path / "l.db"
    ledger = SqliteLedger(path)
    ledger.begin_run([])
    assert ledger.lease is not None
    ledger.lease.stop_heartbeat()  # a process resuming from a pause: its heartbeat has not run
    take(path, Process(4242, "elsewhere.example", None), stale_after=0.0)
    assert ledger.lease.lost is None
    with pytest.raises(LeaseLostError):
        ledger.assert_held()
    ledger.close()


def test_the_heartbeat_survives_a_locked_ledger(tmp_path, monkeypatch):
    monkeypatch.setenv("FERRYMAN_LEASE_STALE_AFTER", "0.4")
    path = tmp_path / "l.db"
    ledger = SqliteLedger(path)
    ledger.begin_run([])
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the heartbeat's updates fail: "database is locked"
    locked_at = time.time()
    time.sleep(0.5)  # several heartbeats fail meanwhile: that is what is tested
    blocker.execute("COMMIT")
    blocker.close()
    poll_until(lambda: current_holder(ledger.conn).heartbeat > locked_at + 0.5,
               what="a heartbeat after the lock")
    ledger.assert_held()
    ledger.end_run(RunResult([]))
    ledger.close()


def test_the_status_server_calls_a_stopped_run_running(tmp_path):
    path = tmp_path / "l.db"
    ledger = SqliteLedger(path)
    ledger.begin_run([])
    assert ledger.lease is not None
    ledger.lease.stop_heartbeat()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE lease SET heartbeat = heartbeat - 3600")
    conn.close()
    assert LedgerStatusSource(path).snapshot().status == "running"
    assert live_holder(ledger.conn) is not None
    ledger.end_run(RunResult([]))
    ledger.close()


def test_a_ledger_from_before_epochs_is_upgraded_and_its_holder_judged_by_pid(tmp_path):
    path = tmp_path / "v2.db"
    SqliteLedger(path).close()
    conn = sqlite3.connect(path)  # what version 2 wrote: no epoch, no start time
    conn.executescript("""
        DROP TABLE lease; DROP TABLE lease_epoch;
        CREATE TABLE lease (singleton INTEGER PRIMARY KEY CHECK (singleton = 1), owner TEXT NOT NULL,
            pid INTEGER NOT NULL, host TEXT NOT NULL, acquired_at REAL NOT NULL, heartbeat REAL NOT NULL);
        UPDATE meta SET value = '2' WHERE key = 'schema';
    """)
    conn.execute("INSERT INTO lease VALUES (1, 'old', ?, ?, 0, 0)", (os.getpid(), socket.gethostname()))
    conn.commit()
    conn.close()
    reader = SqliteLedger(path, read_only=True)  # read as it is
    assert current_holder(reader.conn) == Holder("old", os.getpid(), socket.gethostname(), 0, 0)
    reader.close()
    ledger = SqliteLedger(path)
    with pytest.raises(LedgerBusyError):  # this process is alive
        ledger.begin_run([])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE lease SET pid = ?", (dead_pid(),))
    conn.close()
    ledger.begin_run([])
    assert ledger.lease is not None and ledger.lease.epoch == 1
    ledger.end_run(RunResult([]))
    ledger.close()


# --- mjg JSON progress files -------------------------------------------------------------------


def test_one_run_at_a_time_on_a_json_file(tmp_path):
    path = str(tmp_path / "p.json")
    progress = MigrationProgress()
    progress.entry(MIGRATION).mark_failed([FailedRecord(5, "src(id=5)", "boom")])
    progress.save(path)
    first, second = JsonFileLedger(path), JsonFileLedger(path)
    first.begin_run([])
    with pytest.raises(LedgerBusyError, match=f"p.json is in use by pid {os.getpid()} on "):
        second.begin_run([])
    with pytest.raises(LedgerBusyError, match="cannot change failed records in .*p.json"):
        commands.failed_set_action(path, "IGNORE", all=True)
    first.end_run(RunResult([]))
    first.close()
    assert commands.failed_set_action(path, "IGNORE", all=True) == {"Copy": 1}  # released
    second.begin_run([])  # it reads the file as the last holder left it
    assert second.progress().migrations[MIGRATION].failed[5].action is Action.IGNORE
    second.end_run(RunResult([]))
    second.close()


def test_a_json_lock_left_by_a_dead_run_is_taken_over(tmp_path):
    path = str(tmp_path / "p.json")
    dead = LeaseFile(path + ".lock", name=path)
    dead.acquire(heartbeat=False)
    with sqlite3.connect(path + ".lock") as conn:  # its process ends, the lock file stays
        conn.execute("UPDATE lease SET pid = ?, owner = 'gone'", (dead_pid(),))
    conn.close()
    dead.release()  # only closes its connection: the lease row is not its own any more
    ledger = JsonFileLedger(path)
    ledger.begin_run([])
    ledger.record(MIGRATION, [1], [])
    ledger.end_run(RunResult([]))
    ledger.close()
    assert list(MigrationProgress.load(path).migrations[MIGRATION].succeeded) == [1]


def test_the_lease_of_a_json_file_is_lost_like_a_ledgers(tmp_path, monkeypatch):
    path = str(tmp_path / "p.json")
    ledger = JsonFileLedger(path)
    ledger.begin_run([])
    before = open(path, encoding="utf-8").read()
    take(path + ".lock", Process(4242, "elsewhere.example", None), stale_after=0.0)
    with pytest.raises(LeaseLostError):
        ledger.assert_held()
    ledger.record(MIGRATION, [1], [])
    with pytest.raises(LeaseLostError):
        ledger.end_run(RunResult([]))
    ledger.close()
    assert open(path, encoding="utf-8").read() == before


def test_concurrent_runs_never_hold_one_ledger_at_the_same_time(tmp_path):
    path = tmp_path / "l.db"
    SqliteLedger(path).close()
    held: list[tuple[float, float]] = []
    refused: list[str] = []

    def attempt() -> None:
        ledger = SqliteLedger(path)
        try:
            ledger.begin_run([])
        except LedgerBusyError as exc:
            refused.append(str(exc))
            ledger.close()
            return
        start = time.monotonic()
        time.sleep(0.05)
        held.append((start, time.monotonic()))
        ledger.end_run(RunResult([]))
        ledger.close()

    barrier = threading.Barrier(6)
    threads = [threading.Thread(target=lambda: (barrier.wait(), attempt())) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert held and len(held) + len(refused) == 6
    spans = sorted(held)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # one at a time
