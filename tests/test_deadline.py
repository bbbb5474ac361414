"""``timeout=`` / ``ferryman run --timeout``: a run out of time stops at a batch boundary, ends
failed with last_err saying so, keeps its progress, and the next run resumes exactly once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferryman import (
    InputError,
    MigrationService,
    MigrationState,
    RunObserver,
    SqlStore,
    migration,
)
from ferryman.deadline import format_seconds, parse_duration
from ferryman.progress.sqlite import SqliteLedger

N = 400


def _tables(tmp_path) -> tuple[str, str]:
    src, dst = f"sqlite:///{tmp_path}/src.db", f"sqlite:///{tmp_path}/dst.db"
    with sqlite3.connect(tmp_path / "src.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"item {i}") for i in range(1, N + 1)])
    with sqlite3.connect(tmp_path / "dst.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    return src, dst


def _service(tmp_path, delay: float) -> MigrationService:
    src, dst = _tables(tmp_path) if not (tmp_path / "src.db").exists() else (
        f"sqlite:///{tmp_path}/src.db", f"sqlite:///{tmp_path}/dst.db")

    @migration(source="src", dest="dst", batch_size=20, name="copy")
    class Copy:
        def transform(self, aggregates, record):
            time.sleep(delay)
            return [{"id": record["id"], "name": record["name"].upper()}]

    return MigrationService([SqlStore("src", src, "items"), SqlStore("dst", dst, "items")], [Copy])


def _dst_ids(tmp_path) -> list[int]:
    with sqlite3.connect(tmp_path / "dst.db") as db:
        return [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("45", 45), ("1.5s", 1.5), (" 2H ", 7200),
])
def test_durations_people_write(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "5x", "-3s", "1h-2m", "ten minutes", "1e3", "s"])
def test_a_bad_duration_is_one_line_naming_it(text):
    with pytest.raises(InputError) as info:
        parse_duration(text, "--timeout")
    assert str(info.value).startswith(f"--timeout: {text!r} is not a duration")
    assert "\n" not in str(info.value)


@given(st.integers(min_value=1, max_value=10 * 86400))
def test_a_duration_written_back_reads_the_same(seconds):
    assert parse_duration(format_seconds(seconds)) == seconds


def test_a_run_out_of_time_ends_failed_and_the_next_resumes_exactly_once(tmp_path):
    service = _service(tmp_path, delay=0.005)  # 400 records: about 2 s without a timeout
    with SqliteLedger(tmp_path / "p.db") as ledger:
        started = time.monotonic()
        result = service.run(ledger, timeout=0.4)
        took = time.monotonic() - started
    assert took < 1.5, took  # stopped at a batch boundary, not at the end
    assert result.timed_out is not None and "timed out after 0.4s" in result.timed_out
    assert result.exit_code == 1 and not result.interrupted
    report = result.report("copy")
    assert report.state is MigrationState.FAILED
    assert report.fatal_error is not None and "timed out" in report.fatal_error
    done = _dst_ids(tmp_path)
    assert 0 < len(done) < N and report.succeeded == len(done)
    with SqliteLedger(tmp_path / "p.db") as ledger:
        run = ledger.runs(1)[0]
        assert run.outcome == "failed" and run.last_error is not None and "timed out" in run.last_error
        assert sorted(ledger.iter_succeeded(service.plan()[0])) == done  # the progress was saved
        events = ledger.events()
        assert [e["event"] for e in events] == ["run.started", "migration.started", "migration.failed", "run.failed"]
        assert events[-1]["timed_out"] is True and "timed out after 0.4s" in events[-1]["last_err"]
        again = _service(tmp_path, delay=0).run(ledger)
    assert again.ok and again.report("copy").skipped == len(done)
    assert _dst_ids(tmp_path) == list(range(1, N + 1))  # each once: the destination's key says so


def test_a_timeout_between_attempts_ends_the_retries(tmp_path):
    service = _service(tmp_path, delay=0)
    calls: list[int] = []

    class Attempts(RunObserver):
        def attempt_started(self, attempt: int) -> None:
            calls.append(attempt)

    service.add_observer(Attempts())
    with sqlite3.connect(tmp_path / "src.db") as db:
        db.execute("UPDATE items SET name = NULL WHERE id = 3")  # .upper() fails: every attempt fails
    started = time.monotonic()
    result = service.run(max_tries=5, retry_delay=30, timeout=0.5)
    assert time.monotonic() - started < 5
    assert calls == [1] and result.timed_out is not None and result.exit_code == 1


def test_timeout_must_be_above_zero():
    service = MigrationService([], [])
    with pytest.raises(InputError, match="timeout must be a number of seconds above zero"):
        service.run(timeout=0)


TARGET = """
import time
from ferryman import SqlStore, migration
stores = [SqlStore("src", "sqlite:///src.db", "items"), SqlStore("dst", "sqlite:///dst.db", "items")]

@migration(source="src", dest="dst", batch_size=20, name="copy")
class Copy:
    def transform(self, aggregates, record):
        time.sleep(0.005)
        return [record]

migrations = [Copy]
"""


def _ferryman(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-m", "ferryman", *args], check=False, cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


def test_cli_timeout_exits_1_and_a_bad_duration_exits_2(tmp_path):
    _tables(tmp_path)
    (tmp_path / "m.py").write_text(TARGET)
    bad = _ferryman("run", "m.py", "--timeout", "5x", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip().splitlines() == [
        ("ferryman: error: Invalid value for --timeout: '5x' is not a duration above zero; give e.g. 90s, "
         "10m, 2h or 1h30m (see 'ferryman run --help')")]
    assert not (tmp_path / "ferryman-progress.db").exists()  # nothing done
    out = _ferryman("run", "m.py", "--timeout", "0.4s", "--no-bar", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "timed out after 0.4s" in out.stdout
    status = _ferryman("status", "--progress", "ferryman-progress.db", cwd=tmp_path)
    assert "timed out after 0.4s" in status.stdout
    done = _ferryman("run", "m.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _dst_ids(tmp_path) == list(range(1, N + 1))
