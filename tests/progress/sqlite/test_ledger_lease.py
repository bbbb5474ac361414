"""The lease of an SQLite ledger and of a JSON file's lock: taking it over from the dead,
epochs, a lost lease, the heartbeat, one run at a time."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import sqlite3
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
    LeaseLostError,
    LedgerBusyError,
    MigrationProgress,
    RunResult,
    ledger_commands,
)
from ferryman.progress.files import JsonFileLedger
from ferryman.progress.lease import Holder, Process
from ferryman.progress.sqlite import LeaseFile, SqliteLedger

MIGRATION = "m.Copy"


# --- taking and losing the lease of a ledger ----------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_heartbeat_survives_a_locked_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FERRYMAN_LEASE_STALE_AFTER", "0.4")
    path = tmp_path / "l.db"
    ledger = SqliteLedger(path)
    ledger.begin_run([])
    blocker = sqlite3.connect(path, isolation_level=None)  # a lock, no SQL on the ledger's tables
    with caplog.at_level(logging.WARNING, logger="ferryman"):
        blocker.execute("BEGIN IMMEDIATE")  # the heartbeat's updates fail: "database is locked"
        # several heartbeats fail meanwhile, for half the stale limit: that is what is tested
        poll_until(lambda: any("heartbeat" in r.getMessage() and "has failed for" in r.getMessage()
                               for r in caplog.records), what="the warning of a failing heartbeat")
        blocker.execute("COMMIT")
    unlocked_at = time.time()
    blocker.close()
    poll_until(lambda: (holder := ledger.holder()) is not None and holder.heartbeat > unlocked_at,
               what="a heartbeat after the lock")
    ledger.assert_held()
    ledger.end_run(RunResult([]))
    ledger.close()


def test_a_ledger_from_before_epochs_is_upgraded_and_its_holder_judged_by_pid(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    SqliteLedger(path).close()
    ledger_files.as_version_2_held_by(path, os.getpid(), socket.gethostname())  # no epoch, no start time
    reader = SqliteLedger(path, read_only=True)  # read as it is
    assert reader.holder() == Holder("old", os.getpid(), socket.gethostname(), 0, 0)
    reader.close()
    ledger = SqliteLedger(path)
    with pytest.raises(LedgerBusyError):  # this process is alive
        ledger.begin_run([])
    ledger_files.hand_lease_to(path, dead_pid())
    ledger.begin_run([])
    assert ledger.lease is not None and ledger.lease.epoch == 1
    ledger.end_run(RunResult([]))
    ledger.close()


# --- mjg JSON progress files -------------------------------------------------------------------


def test_one_run_at_a_time_on_a_json_file(tmp_path: Path) -> None:
    path = str(tmp_path / "p.json")
    progress = MigrationProgress()
    progress.entry(MIGRATION).mark_failed([FailedRecord(5, "src(id=5)", "boom")])
    progress.save(path)
    first, second = JsonFileLedger(path), JsonFileLedger(path)
    first.begin_run([])
    with pytest.raises(LedgerBusyError, match=f"p.json is in use by pid {os.getpid()} on "):
        second.begin_run([])
    with pytest.raises(LedgerBusyError, match="cannot change failed records in .*p.json"):
        ledger_commands.failed_set_action(path, "IGNORE", all=True)
    first.end_run(RunResult([]))
    first.close()
    assert ledger_commands.failed_set_action(path, "IGNORE", all=True) == {"Copy": 1}  # released
    second.begin_run([])  # it reads the file as the last holder left it
    assert second.progress().migrations[MIGRATION].failed[5].action is Action.IGNORE
    second.end_run(RunResult([]))
    second.close()


def test_a_json_lock_left_by_a_dead_run_is_taken_over(tmp_path: Path) -> None:
    path = str(tmp_path / "p.json")
    dead = LeaseFile(path + ".lock", name=path)
    dead.acquire(heartbeat=False)
    ledger_files.hand_lease_to(path + ".lock", dead_pid(), owner="gone")  # its process ends, the lock file stays
    dead.release()  # only closes its connection: the lease row is not its own any more
    ledger = JsonFileLedger(path)
    ledger.begin_run([])
    ledger.record(MIGRATION, [1], [])
    ledger.end_run(RunResult([]))
    ledger.close()
    assert list(MigrationProgress.load(path).migrations[MIGRATION].succeeded) == [1]


def test_the_lease_of_a_json_file_is_lost_like_a_ledgers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "p.json")
    ledger = JsonFileLedger(path)
    ledger.begin_run([])
    before = Path(path).read_text(encoding="utf-8")
    ledger_files.take_lease(path + ".lock", Process(4242, "elsewhere.example", None), stale_after=0.0)
    with pytest.raises(LeaseLostError):
        ledger.assert_held()
    ledger.record(MIGRATION, [1], [])
    with pytest.raises(LeaseLostError):
        ledger.end_run(RunResult([]))
    ledger.close()
    assert Path(path).read_text(encoding="utf-8") == before


def test_concurrent_runs_never_hold_one_ledger_at_the_same_time(tmp_path: Path) -> None:
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

    def together() -> None:
        barrier.wait()
        attempt()

    threads = [threading.Thread(target=together) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert held and len(held) + len(refused) == 6
    spans = sorted(held)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # one at a time
