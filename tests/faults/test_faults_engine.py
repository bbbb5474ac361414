"""Faults the engine itself must survive: a full ledger disk, signals at any moment (inside a
ledger commit, at the end of a run, SIGHUP), and whatever a migration's code lets escape.

Each test ends with the check that matters: every source id in the destination exactly once
(the destination has no unique key, so a record written twice would show), and no migration
recorded ``completed`` that did not complete.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import poll_until

from ferryman import MigrationService, RunObserver, SqlStore, migration
from ferryman.errors import FerrymanError, LedgerWriteError
from ferryman.progress.sqlite import SqliteLedger
from ferryman.server import LedgerStatusSource

TARGET = Path(__file__).with_name("faulty_target.py")


# --- data ---------------------------------------------------------------------------------------


def make_source(directory: Path, n: int) -> str:
    """``src.db`` with ids 1..n and empty ``side.db``; returns the source URL."""
    conn = sqlite3.connect(directory / "src.db")
    conn.execute("CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    conn.executemany("INSERT INTO src VALUES (?, ?)", ((i, f"row {i}") for i in range(1, n + 1)))
    conn.commit()
    conn.close()
    side = sqlite3.connect(directory / "side.db")
    side.execute("CREATE TABLE side (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    side.commit()
    side.close()
    return f"sqlite:///{directory}/src.db"


def make_destination(url: str) -> None:
    """Table ``dst`` without any unique key: a record written twice shows as two rows."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE dst (id INTEGER NOT NULL, name TEXT NOT NULL)")
    engine.dispose()


def destination_ids(url: str, table: str = "dst") -> list[int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ids = [row[0] for row in conn.exec_driver_sql(f"SELECT id FROM {table} ORDER BY id")]
    engine.dispose()
    return ids


def assert_exactly_once(url: str, n: int, table: str = "dst") -> None:
    ids = destination_ids(url, table)
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} record(s) written twice"
    assert ids == list(range(1, n + 1)), f"{n - len(set(ids))} record(s) missing"


# --- running the target ---------------------------------------------------------------------------


def env(src: str, dst: str, **extra: Any) -> dict[str, str]:
    return {**os.environ, "FAULT_SRC": src, "FAULT_DST": dst, **{k: str(v) for k, v in extra.items()}}


def ferryman(*args: str, cwd: Path, environ: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ferryman", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)


def start(*args: str, cwd: Path, environ: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ferryman", *args], cwd=cwd, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ledger_rows(path: Path) -> int:
    """Succeeded ids the ledger holds (read-only; 0 before the ledger has any)."""
    if not path.exists():
        return 0
    ledger = SqliteLedger(path, read_only=True)
    try:
        return sum(sum(1 for _ in ledger.iter_succeeded(i)) for i in ledger.identities())
    finally:
        ledger.close()


def completed_migrations(path: Path) -> list[str]:
    ledger = SqliteLedger(path, read_only=True)
    try:
        return [i.rsplit(".", 1)[-1] for i in ledger.metadata().completed]
    finally:
        ledger.close()


# --- a full disk under the ledger -------------------------------------------------------------------


def _can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and Path("/proc/filesystems").read_text().count("tmpfs") > 0


@pytest.fixture
def small_disk(tmp_path):
    """A directory on a 320 KiB tmpfs (root), unmounted afterwards; ``grow()`` gives it room."""
    if not _can_mount():
        pytest.fail("this test mounts a tmpfs and must run as root (the test command runs as root)",
                    pytrace=False)
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mount)], check=True)

    class Disk:
        path = mount

        @staticmethod
        def grow() -> None:
            subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)

    try:
        yield Disk
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_ledger_disk_stops_the_run_and_the_next_run_writes_nothing_twice(tmp_path, small_disk,
                                                                                postgres_url):
    n = 120_000
    src = make_source(tmp_path, n)
    make_destination(postgres_url)
    ledger = small_disk.path / "progress.db"
    environ = env(src, postgres_url, FAULT_BATCH=512, FAULT_DELAY=0.02)  # ledger commits every 0.5 s

    first = ferryman("run", str(TARGET), "--progress", str(ledger), "--only", "Copy", cwd=tmp_path,
                     environ=environ)
    assert first.returncode == 1, first.stderr
    assert "disk is full" in first.stdout + first.stderr
    assert "Traceback" not in first.stderr
    written = len(destination_ids(postgres_url))
    assert 0 < written < n, f"the disk must fill up mid-run for this test to mean anything: {first.stdout}"
    assert completed_migrations(ledger) == []

    small_disk.grow()
    second = ferryman("run", str(TARGET), "--progress", str(ledger), "--only", "Copy", cwd=tmp_path,
                      environ=environ)
    assert second.returncode == 0, second.stdout + second.stderr
    assert_exactly_once(postgres_url, n)
    assert completed_migrations(ledger) == ["Copy"]


class _Connection:
    """An SQLite connection as the ledger uses it, with ``execute`` to override."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __enter__(self) -> Any:
        return self._conn.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._conn.__exit__(*exc)


class _FailingCommits(_Connection):
    """An SQLite connection whose commits fail with a full disk while ``full`` is set."""

    full = False

    def execute(self, sql: str, *args: Any) -> Any:
        if self.full and sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)


def _copy_service(tmp_path: Path, n: int, dst_url: str, ledger: SqliteLedger,
                  observers: tuple[RunObserver, ...] = ()) -> MigrationService:
    @migration(source="src", dest="dst", batch_size=100, save_batch_size=100)
    class Copy:
        def transform(self, aggregates, record):
            return [{"id": record["id"], "name": record["name"]}]

    src = make_source(tmp_path, n) if not (tmp_path / "src.db").exists() else f"sqlite:///{tmp_path}/src.db"
    return MigrationService([SqlStore("src", src, "src"), SqlStore("dst", dst_url, "dst")], [Copy],
                            ledger=ledger, checkpoint_interval=0, observers=observers)


def _fault_then_resume(tmp_path: Path, n: int, fault: type[_Connection], arm: Any) -> tuple[Any, Any, list[str]]:
    """A run whose ledger talks to SQLite through ``fault``, ``arm(fault, pages)`` called after
    every page; then a run on the plain connection, which must complete with every record in the
    destination exactly once. For the caller's checks: the first run's result, the fault, and
    the migrations the ledger held completed between the two runs."""
    dst = f"sqlite:///{tmp_path}/dst.db"
    make_destination(dst)
    ledger = SqliteLedger(tmp_path / "progress.db")
    conn = fault(ledger.conn)
    ledger.conn = conn  # type: ignore[assignment]

    class Arm(RunObserver):
        pages = 0

        def page_done(self, report):
            self.pages += 1
            arm(conn, self.pages)

    result = _copy_service(tmp_path, n, dst, ledger, (Arm(),)).run()
    ledger.conn = conn._conn
    ledger.close()

    again = SqliteLedger(tmp_path / "progress.db")
    completed = again.metadata().completed
    resumed = _copy_service(tmp_path, n, dst, again).run()
    assert resumed.ok, resumed.summary()
    again.close()
    assert_exactly_once(dst, n)
    return result, conn, completed


def test_a_commit_that_fails_keeps_its_pages_and_the_journal(tmp_path):
    """The same fault without root: the ledger's commits fail from the 5th page on."""
    result, _, completed = _fault_then_resume(tmp_path, 2_000, _FailingCommits,
                                              lambda conn, pages: setattr(conn, "full", pages >= 5))
    assert not result.ok and result.exit_code == 1
    assert "disk is full" in (result.ledger_error or "")
    assert result.reports[0].state.value == "failed" and completed == []


def test_a_ledger_that_cannot_be_written_at_the_start_changes_nothing(tmp_path):
    dst = f"sqlite:///{tmp_path}/dst.db"
    make_destination(dst)
    ledger = SqliteLedger(tmp_path / "progress.db")
    conn = _FailingCommits(ledger.conn)
    conn.full = True
    ledger.conn = conn  # type: ignore[assignment]
    with pytest.raises(LedgerWriteError, match="disk is full"):
        _copy_service(tmp_path, 10, dst, ledger).run()
    assert destination_ids(dst) == []


# --- a second signal inside a ledger commit -------------------------------------------------------------


class _SignalInsideCommit(_Connection):
    """An SQLite connection that raises SIGINT twice while a ledger transaction is writing its
    log (between BEGIN and COMMIT), once ``armed``: a second Ctrl-C at the worst moment."""

    armed = False
    fired = 0

    def execute(self, sql: str, *args: Any) -> Any:
        result = self._conn.execute(sql, *args)
        if self.armed and sql.startswith("INSERT INTO succeeded_log"):
            self.armed = False
            self.fired += 1
            signal.raise_signal(signal.SIGINT)  # stop gently
            signal.raise_signal(signal.SIGINT)  # stop now
        return result


def test_a_second_ctrl_c_inside_a_ledger_commit_loses_and_doubles_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("ferryman.progress.durable.FLUSH_INTERVAL", 0)  # a commit per page
    result, fault, _ = _fault_then_resume(tmp_path, 3_000, _SignalInsideCommit,  # in the 4th page's commit
                                          lambda conn, pages: setattr(conn, "armed", pages == 3))
    assert fault.fired == 1
    assert result.interrupted == "SIGINT" and result.exit_code == 130


# --- signals at any moment ---------------------------------------------------------------------------------


def _wait_for_progress(ledger: Path, proc: subprocess.Popen[str], before: int = 0) -> None:
    """Until the run started (its first line) and recorded pages beyond the ``before`` ids of
    earlier runs, or ended."""
    assert proc.stdout is not None
    proc.stdout.readline()  # "progress ledger: ...", printed once the CLI handles signals

    def recorded_more() -> bool:
        try:
            return ledger_rows(ledger) > before
        except FerrymanError:  # the run is creating the ledger's tables
            return False

    poll_until(lambda: proc.poll() is not None or recorded_more(), timeout=60,
               what="the run to record its first pages")


@pytest.mark.parametrize("first,second", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGTERM),
                                          (signal.SIGHUP, signal.SIGTERM)])
def test_two_signals_at_random_moments_exit_130_in_one_line_and_lose_nothing(tmp_path, first, second):
    n = 20_000
    src = make_source(tmp_path, n)
    dst = f"sqlite:///{tmp_path}/dst.db"
    make_destination(dst)
    ledger = tmp_path / "progress.db"
    environ = env(src, dst, FAULT_BATCH=200, FAULT_DELAY=0.01)
    rng = random.Random(f"{first}{second}")
    for _ in range(4):
        before = ledger_rows(ledger)
        proc = start("run", str(TARGET), "--progress", str(ledger), "--only", "Copy", cwd=tmp_path, environ=environ)
        _wait_for_progress(ledger, proc, before)
        time.sleep(rng.uniform(0, 0.3))
        if proc.poll() is None:
            proc.send_signal(first)
            time.sleep(rng.uniform(0, 0.05))
            if proc.poll() is None:
                proc.send_signal(second)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, 130), err
        assert "Traceback" not in err, err
        if proc.returncode == 130:
            assert "ferryman: interrupted" in err or "interrupted by" in out, out + err
    final = ferryman("run", str(TARGET), "--progress", str(ledger), "--only", "Copy", cwd=tmp_path, environ=environ)
    assert final.returncode == 0, final.stdout + final.stderr
    assert_exactly_once(dst, n)


def test_sighup_stops_like_sigterm_with_the_progress_saved(tmp_path):
    n = 20_000
    src = make_source(tmp_path, n)
    dst = f"sqlite:///{tmp_path}/dst.db"
    make_destination(dst)
    ledger = tmp_path / "progress.db"
    environ = env(src, dst, FAULT_BATCH=200, FAULT_DELAY=0.01)
    proc = start("run", str(TARGET), "--progress", str(ledger), "--only", "Copy", cwd=tmp_path, environ=environ)
    _wait_for_progress(ledger, proc)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted by SIGHUP" in out
    saved = ledger_rows(ledger)
    assert 0 < saved < n and len(destination_ids(dst)) == saved  # checkpointed before exiting
    final = ferryman("run", str(TARGET), "--progress", str(ledger), "--only", "Copy", cwd=tmp_path, environ=environ)
    assert final.returncode == 0, final.stdout + final.stderr
    assert_exactly_once(dst, n)


# --- what a migration's code lets escape -------------------------------------------------------------------


def _export(tmp_path: Path, ledger: Path) -> dict[str, Any]:
    out = tmp_path / "export.json"
    done = ferryman("progress", "export", "--progress", str(ledger), "--out", str(out), cwd=tmp_path,
                    environ=dict(os.environ))
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("escape,code", [("system-exit", 1), ("base", 1), ("interrupt", 130)])
def test_an_escaping_base_exception_never_ends_completed(tmp_path, escape, code):
    n = 1_000
    src = make_source(tmp_path, n)
    dst = f"sqlite:///{tmp_path}/dst.db"
    make_destination(dst)
    ledger = tmp_path / "progress.db"
    done = ferryman("run", str(TARGET), "--progress", str(ledger), cwd=tmp_path,
                    environ=env(src, dst, FAULT_RAISE=escape, FAULT_AT=300))
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "Copy" not in completed_migrations(ledger)
    exported = _export(tmp_path, ledger)
    assert not any(i.endswith(".Copy") for i in exported["metadata"]["completedMigrationFQCNs"])
    status = LedgerStatusSource(str(ledger)).snapshot().result()["status"]
    assert status == "failed"
    if escape != "interrupt":  # the migration failed on its own; the independent one went on
        raised = "SystemExit" if escape == "system-exit" else "Escaped"
        assert "Copy: failed" in done.stdout and raised in done.stdout, done.stdout
        assert completed_migrations(ledger) == ["Side"]
        assert exported["fatalErrors"], "the escape is recorded as the migration's fatal error"


def test_a_generator_that_raises_fails_its_record_only(tmp_path):
    n = 1_000
    src = make_source(tmp_path, n)
    dst = f"sqlite:///{tmp_path}/dst.db"
    make_destination(dst)
    ledger = tmp_path / "progress.db"
    done = ferryman("run", str(TARGET), "--progress", str(ledger), cwd=tmp_path,
                    environ=env(src, dst, FAULT_RAISE="generator", FAULT_AT=300))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Copy: failed - 999 migrated, 1 failed" in done.stdout
    exported = _export(tmp_path, ledger)
    (copy,) = [e for i, e in exported["migrationProgress"].items() if i.endswith(".Copy")]
    assert [f["id"] for f in copy["failedRecords"]] == [300]
    assert "generator of record 300 broke" in copy["failedRecords"][0]["cause"]
    assert destination_ids(dst) == [i for i in range(1, n + 1) if i != 300]


# --- a forgotten or mistyped --progress ---------------------------------------------------------------------


def _copied(request, tmp_path: Path, database: str, n: int, ledger: str) -> tuple[str, dict[str, str]]:
    """A source of ``n`` records copied by Copy with ``ledger``: the destination's URL, the environment."""
    src = make_source(tmp_path, n)
    dst = f"sqlite:///{tmp_path}/dst.db" if database == "sqlite" else request.getfixturevalue(database)
    make_destination(dst)
    environ = env(src, dst)
    first = ferryman("run", str(TARGET), "--progress", ledger, "--only", "Copy", cwd=tmp_path, environ=environ)
    assert first.returncode == 0, first.stdout + first.stderr
    return dst, environ


@pytest.mark.parametrize("database", ["sqlite", "postgres_url"])
def test_a_second_ledger_on_a_written_destination_is_refused_until_reset(request, tmp_path, database):
    n = 3_000
    dst, environ = _copied(request, tmp_path, database, n, "scratch.db")

    forgot = ferryman("run", str(TARGET), "--only", "Copy", cwd=tmp_path, environ=environ)  # no --progress
    assert forgot.returncode == 2, forgot.stdout + forgot.stderr
    assert "destination 'dst' holds what migration Copy wrote under another progress ledger" in forgot.stderr
    assert (f"or start over on purpose with this ledger: `ferryman reset {TARGET} --progress ferryman-progress.db "
            "--migration Copy --forget-other-ledgers` (after emptying the destination)"
            in forgot.stderr.replace("\n", " "))  # the command as it is to be typed
    assert_exactly_once(dst, n)  # nothing written twice

    again = ferryman("run", str(TARGET), "--progress", "scratch.db", "--only", "Copy", cwd=tmp_path, environ=environ)
    assert again.returncode == 0 and "3,000 already done" in again.stdout  # the right ledger still works

    assert not (tmp_path / "ferryman-progress.db").exists()  # the refused run left nothing behind
    missing = ferryman("reset", str(TARGET), "--migration", "Copy", cwd=tmp_path, environ=environ)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert missing.stderr == ("ferryman: error: no progress ledger at ferryman-progress.db: nothing to reset (give "
                              "the ledger's --progress; to start over with a new ledger on purpose, add "
                              "--forget-other-ledgers)\n")
    assert not (tmp_path / "ferryman-progress.db").exists()  # nor did the refused reset
    still = ferryman("run", str(TARGET), "--only", "Copy", cwd=tmp_path, environ=environ)
    assert still.returncode == 2 and "under another progress ledger" in still.stderr  # the mark is still there
    assert_exactly_once(dst, n)

    engine = sa.create_engine(dst)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM dst")  # starting over on purpose: the destination emptied
    engine.dispose()
    over = ferryman("reset", str(TARGET), "--progress", "ferryman-progress.db", "--migration", "Copy",
                    "--forget-other-ledgers", cwd=tmp_path, environ=environ)
    assert over.returncode == 0, over.stdout + over.stderr
    fresh = ferryman("run", str(TARGET), "--only", "Copy", cwd=tmp_path, environ=environ)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert_exactly_once(dst, n)


@pytest.mark.parametrize("database", ["sqlite", "postgres_url"])
def test_a_reset_forgets_its_own_ledgers_journal_entries_only(request, tmp_path, database):
    n = 600
    dst, environ = _copied(request, tmp_path, database, n, "a.db")
    other = ferryman("run", str(TARGET), "--progress", "b.db", "--only", "Side", cwd=tmp_path, environ=environ)
    assert other.returncode == 0, other.stdout + other.stderr  # b.db exists and knows nothing of Copy

    reset = ferryman("reset", str(TARGET), "--progress", "b.db", "--migration", "Copy", cwd=tmp_path, environ=environ)
    assert reset.returncode == 0, reset.stdout + reset.stderr
    refused = ferryman("run", str(TARGET), "--progress", "b.db", "--only", "Copy", cwd=tmp_path, environ=environ)
    assert refused.returncode == 2, refused.stdout + refused.stderr  # a.db's mark survived b.db's reset
    assert "under another progress ledger" in refused.stderr
    assert_exactly_once(dst, n)

    own = ferryman("reset", str(TARGET), "--progress", "a.db", "--migration", "Copy", cwd=tmp_path, environ=environ)
    assert own.returncode == 0, own.stdout + own.stderr
    engine = sa.create_engine(dst)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM dst")
    engine.dispose()
    rerun = ferryman("run", str(TARGET), "--progress", "b.db", "--only", "Copy", cwd=tmp_path, environ=environ)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr  # a.db reset itself: its mark went with it
    assert_exactly_once(dst, n)
