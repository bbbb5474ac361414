"""Faults around the lease of a progress ledger: paused runs, stolen leases, files not ours.

Real ``python -m ferryman`` processes and signals. The source is SQLite, the destination a
PostgreSQL table WITHOUT a unique key, so a record written twice shows as two rows; the
progress is an SQLite ledger (an mjg JSON file where said). ``FERRYMAN_LEASE_STALE_AFTER`` is
2 s, so that waiting past the stale limit takes seconds, not the default 20.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import ledger_files
import ledgers
import pytest
import sqlalchemy as sa
from helpers import poll_until

from ferryman import LedgerFileError, MigrationProgress, MigrationService, SqlStore
from ferryman.progress.lease import Holder, Process
from ferryman.progress.sqlite import SqliteLedger

REPO = Path(__file__).resolve().parents[2]
STALE_AFTER = 2.0
ROWS = 20_000
GATE_AT = 5_000
"""The record whose transform waits at the gate (``at-gate`` appears; ``open-gate`` lets it go)."""
HOST = socket.gethostname()

# --- the setting ------------------------------------------------------------------------------


@pytest.fixture
def setting(tmp_path, postgres_url, monkeypatch):
    """A target copying ROWS items from ``src.db`` into PostgreSQL: (its directory, the
    destination's engine, a list of the processes started, ended after the test)."""
    monkeypatch.setenv("FERRYMAN_LEASE_STALE_AFTER", str(STALE_AFTER))  # for this process too
    with sqlite3.connect(tmp_path / "src.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        db.executemany("INSERT INTO items VALUES (?, ?)", ((i, f"item {i}") for i in range(1, ROWS + 1)))
    db.close()
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id BIGINT NOT NULL, name TEXT NOT NULL)")  # no key
    (tmp_path / "lease_target.py").write_text(ledgers.gated_target(postgres_url, GATE_AT))
    MigrationProgress().save(tmp_path / "in.json")  # for `progress import`
    processes: list[subprocess.Popen[str]] = []
    yield tmp_path, engine, processes
    for proc in processes:  # a stopped process would keep its database session forever
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.communicate(timeout=30)
    engine.dispose()


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def start_run(directory: Path, progress: str,
              processes: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferryman", "run", "lease_target.py", "--progress", progress, "--no-bar"],
        cwd=directory, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    processes.append(proc)
    return proc


def ferryman(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ferryman", *args], cwd=directory, env=env(),
                          capture_output=True, text=True, timeout=120)


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ferryman: error: ") and "a bug?" not in lines[0], stderr
    return lines[0]


def dest_counts(engine: sa.Engine) -> tuple[int, int]:
    """(rows, distinct ids) in the destination."""
    with engine.connect() as conn:
        rows, distinct = conn.exec_driver_sql("SELECT count(*), count(DISTINCT id) FROM items").one()
    return rows, distinct


def assert_every_id_once(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        twice = conn.exec_driver_sql("SELECT id FROM items GROUP BY id HAVING count(*) > 1 LIMIT 5").all()
        rows, low, high = conn.exec_driver_sql("SELECT count(*), min(id), max(id) FROM items").one()
    assert twice == []
    assert (rows, low, high) == (ROWS, 1, ROWS)


def open_transactions(engine: sa.Engine) -> int:
    """Sessions of other clients in the destination database with a transaction open."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state <> 'idle'").scalar_one())


def holder_of(ledger: Path) -> Holder | None:
    try:
        return ledger_files.holder(ledger)
    except LedgerFileError:
        return None  # being created


def wait_until_stale(ledger: Path) -> None:
    """Until the lease's heartbeat is older than the stale limit (the holder is stopped)."""
    def stale() -> bool:
        holder = holder_of(ledger)
        return holder is not None and time.time() - holder.heartbeat > STALE_AFTER + 0.5

    poll_until(stale, timeout=30, what="the stopped run's heartbeat to go stale")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- (a) a paused run keeps its lease ------------------------------------------------------------


def test_a_stopped_run_keeps_its_lease_and_completes_alone(setting):
    directory, engine, processes = setting
    ledger = directory / "run.db"
    (directory / "open-gate").touch()  # no waiting at the gate here
    first = start_run(directory, "run.db", processes)
    poll_until(lambda: first.poll() is not None or dest_counts(engine)[0] >= 2_000, timeout=120,
               what="the first run to be under way")
    assert first.poll() is None, "the run finished before the test could stop it"
    first.send_signal(signal.SIGSTOP)
    wait_until_stale(ledger)
    holder = holder_of(ledger)
    runs = ledger_files.runs(ledger)
    written = dest_counts(engine)

    second = ferryman(directory, "run", "lease_target.py", "--progress", "run.db", "--no-bar")
    assert second.returncode == 2, second.stderr
    line = one_error_line(second.stderr)
    assert f"run.db is in use by pid {first.pid} on {HOST} since " in line
    assert f"kill -CONT {first.pid}" in line  # it says the holder looks stopped
    assert dest_counts(engine) == written  # the second run wrote nothing
    assert holder_of(ledger) == holder
    assert ledger_files.runs(ledger) == runs

    first.send_signal(signal.SIGCONT)
    _out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert_every_id_once(engine)
    reader = SqliteLedger(ledger, read_only=True)
    try:
        assert sum(1 for _ in reader.iter_succeeded(reader.identities()[0])) == ROWS
    finally:
        reader.close()


# --- (b) a lease taken over ------------------------------------------------------------------


def test_a_run_whose_lease_was_taken_over_stops_and_writes_nothing_more(setting):
    directory, engine, processes = setting
    ledger = directory / "run.db"
    first = start_run(directory, "run.db", processes)
    poll_until(lambda: (directory / "at-gate").exists() or first.poll() is not None, timeout=120,
               what="the run to reach the gate")
    assert first.poll() is None, first.communicate()
    # pause it where no destination transaction is open: what it wrote is committed
    poll_until(lambda: open_transactions(engine) == 0, timeout=30, what="no open transaction")
    first.send_signal(signal.SIGSTOP)
    wait_until_stale(ledger)

    # another host's run judges the stopped holder by its heartbeat, and takes the lease over
    other = ledger_files.take_lease(ledger, Process(4242, "elsewhere.example", None))
    assert other.previous is not None and other.previous.pid == first.pid and other.epoch >= 2
    written, content = dest_counts(engine), ledger_files.dump(ledger)
    assert 0 < written[0] < ROWS

    first.send_signal(signal.SIGCONT)
    (directory / "open-gate").touch()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1, err
    line = one_error_line(err)
    assert "this run lost the lease of progress ledger run.db: pid 4242 on elsewhere.example" in line
    assert dest_counts(engine) == written  # not one more row
    assert ledger_files.dump(ledger) == content  # not one more ledger row, nor a run outcome

    # the other host's run never beats: once it is stale, a run here takes over and finishes
    wait_until_stale(ledger)
    last = start_run(directory, "run.db", processes)
    _out, err = last.communicate(timeout=300)
    assert last.returncode == 0, err
    assert_every_id_once(engine)


HOLD_AT_GATE = f"""
CREATE FUNCTION hold_at_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = {GATE_AT} THEN
        PERFORM pg_advisory_xact_lock_shared(4242);  -- waits while the test holds the lock
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hold_at_gate BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION hold_at_gate();
"""
"""Holds the batch that writes record GATE_AT inside its destination transaction: after the
run's lease check, before its commit."""


def held_at_gate(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.exec_driver_sql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").scalar_one())


def journal_key(ledger: Path) -> str:
    reader = SqliteLedger(ledger, read_only=True)
    try:
        return reader.journal_key(reader.identities()[0])
    finally:
        reader.close()


def test_a_run_paused_inside_its_batch_whose_lease_was_taken_over_is_fenced_off(setting, postgres_url):
    directory, engine, processes = setting
    ledger = directory / "run.db"
    (directory / "open-gate").touch()  # the transform's gate stays open: the destination's holds
    with engine.begin() as conn:
        conn.exec_driver_sql(HOLD_AT_GATE)
    gate = engine.connect()
    gate.exec_driver_sql("SELECT pg_advisory_lock(4242)")
    gate.commit()
    first = start_run(directory, "run.db", processes)
    poll_until(lambda: held_at_gate(engine) or first.poll() is not None, timeout=120,
               what="the run's batch to be held inside its transaction")
    assert first.poll() is None, first.communicate()
    first.send_signal(signal.SIGSTOP)  # paused with its batch on its way
    wait_until_stale(ledger)

    # another host's run takes the lease over and, as its run's recovery does, raises the fence
    other = ledger_files.take_lease(ledger, Process(4242, "elsewhere.example", None))
    assert other.previous is not None and other.previous.pid == first.pid
    new_holder = SqlStore("dst", postgres_url, "items")
    new_holder.raise_fence(journal_key(ledger), other.epoch)  # the held batch has not read the fence yet
    new_holder.close()
    written, content = dest_counts(engine), ledger_files.dump(ledger)
    assert 0 < written[0] < GATE_AT

    # the batch goes on while its run is still paused: the destination ends it, not the run
    gate.exec_driver_sql("SELECT pg_advisory_unlock(4242)")
    gate.close()
    poll_until(lambda: open_transactions(engine) == 0, timeout=30, what="the held batch to end")
    assert dest_counts(engine) == written  # refused by the fence: without it, it would commit now

    first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1, err
    line = one_error_line(err)
    # whichever the run meets first: the destination's refusal or its ledger's lost lease
    assert "lost its lease and wrote nothing of this batch" in line or "this run lost the lease" in line
    assert dest_counts(engine) == written
    assert ledger_files.dump(ledger) == content

    wait_until_stale(ledger)  # the other host's run never beats: a run here takes over, finishes
    last = start_run(directory, "run.db", processes)
    _out, err = last.communicate(timeout=300)
    assert last.returncode == 0, err
    assert_every_id_once(engine)


# --- (c) files that are not ours ---------------------------------------------------------------


COMMANDS = [
    ("run", "lease_target.py", "--no-bar"),
    ("status",),
    ("failed", "list"),
    ("failed", "ignore", "--all"),
    ("progress", "export", "--out", "out.json"),
    ("progress", "import", "in.json"),
    ("serve", "--port", "0"),
]


def refused_everywhere(directory: Path, engine: sa.Engine, progress: str, expected: str) -> None:
    """Every command that takes a progress path refuses ``progress`` in one line containing
    ``expected``, exit 2, before the destination gets a row."""
    for args in COMMANDS:
        result = ferryman(directory, *args, "--progress", progress)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in one_error_line(result.stderr), (args, result.stderr)
    assert dest_counts(engine) == (0, 0)
    assert not (directory / "out.json").exists()


def test_an_empty_progress_path_is_refused(setting):
    directory, engine, _ = setting
    before = sorted(p.name for p in directory.iterdir())
    refused_everywhere(directory, engine, "", "the progress ledger path is empty")
    assert sorted(p.name for p in directory.iterdir()) == before  # no file made on the way
    with pytest.raises(LedgerFileError, match="path is empty"):
        MigrationService([SqlStore("src", f"sqlite:///{directory}/src.db", "items")], [], ledger="")


def test_a_foreign_sqlite_file_is_refused_and_left_unchanged(setting):
    directory, engine, _ = setting
    source = directory / "src.db"
    before = sha256(source)
    refused_everywhere(directory, engine, "src.db",
                       "src.db is not a ferryman progress ledger (an SQLite database with tables items)")
    assert sha256(source) == before
    assert not (directory / "src.db-wal").exists()


def test_a_ledger_of_a_newer_schema_is_refused_before_anything_is_written(setting):
    directory, engine, _ = setting
    ledger = directory / "new.db"
    SqliteLedger(ledger).close()
    ledger_files.set_schema(ledger, "99")
    before = sha256(ledger)
    refused_everywhere(directory, engine, "new.db",
                       "new.db was written by a newer ferryman (ledger schema 99; this version reads up to ")
    assert sha256(ledger) == before


@pytest.mark.parametrize("damage", ["truncated", "pages overwritten", "header overwritten"])
def test_a_damaged_ledger_is_named_in_one_line(setting, damage):
    directory, engine, _ = setting
    ledger = directory / "old.db"
    done = SqliteLedger(ledger)
    done.start_migration("lease_target.Other")
    for page in range(200):
        done.record("lease_target.Other", list(range(page * 500, page * 500 + 500)), [])
        done.checkpoint()
    done.close()
    data = ledger.read_bytes()
    if damage == "truncated":
        ledger.write_bytes(data[:len(data) // 2])
    elif damage == "pages overwritten":
        ledger.write_bytes(data[:len(data) // 2] + b"\x13" * (len(data) - len(data) // 2))
    else:
        ledger.write_bytes(b"\x00" * 100 + data[100:])
    expected = ("old.db is neither an SQLite progress ledger nor mjg JSON" if damage == "header overwritten"
                else "progress ledger old.db")
    for args in [("run", "lease_target.py", "--no-bar"), ("failed", "list"),
                 ("progress", "export", "--out", "out.json")]:
        result = ferryman(directory, *args, "--progress", "old.db")
        assert result.returncode == 2, (args, result.stderr)
        line = one_error_line(result.stderr)
        assert expected in line, (args, line)
        assert any(word in line for word in ("damaged", "malformed", "not UTF-8")), line
    assert dest_counts(engine) == (0, 0)


# --- (d) mjg JSON progress ---------------------------------------------------------------------


def test_two_runs_on_one_json_file_are_one_at_a_time(setting):
    directory, engine, processes = setting
    first = start_run(directory, "progress.json", processes)
    poll_until(lambda: (directory / "at-gate").exists() or first.poll() is not None, timeout=120,
               what="the run to reach the gate")
    assert first.poll() is None, first.communicate()
    poll_until(lambda: open_transactions(engine) == 0, timeout=30, what="no open transaction")
    written = dest_counts(engine)

    second = ferryman(directory, "run", "lease_target.py", "--progress", "progress.json", "--no-bar")
    assert second.returncode == 2, second.stderr
    assert f"progress.json is in use by pid {first.pid} on {HOST}" in one_error_line(second.stderr)
    ignore = ferryman(directory, "failed", "ignore", "--all", "--progress", "progress.json")
    assert ignore.returncode == 2  # nothing was done
    assert (f"cannot change failed records in progress.json: progress ledger progress.json is in use "
            f"by pid {first.pid}") in one_error_line(ignore.stderr)
    assert dest_counts(engine) == written

    (directory / "open-gate").touch()
    _out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert_every_id_once(engine)
    again = ferryman(directory, "run", "lease_target.py", "--progress", "progress.json", "--no-bar")
    assert again.returncode == 0, again.stderr  # released: the next run may go (nothing to do)
    assert_every_id_once(engine)
