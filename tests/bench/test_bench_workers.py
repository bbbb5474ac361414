"""``python -m bench.workers`` at a tiny size, on the real server: both worker counts run, each
run's table is checked in SQL, the table and the ratio are printed; the check refuses a wrong
table. It never asserts a speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the repo's bench/ package, not this tests/bench/ folder

from bench.postgres import build_sqlite, libpq_url
from bench.workers import busy_transform, check, expected_fingerprint, fingerprint, spin

ROWS = 1_500

pytestmark = pytest.mark.postgres


def test_both_worker_counts_copy_every_row_and_the_ratio_is_reported(postgres_server_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.workers", "--rows", str(ROWS), "--reps", "1", "--work-us", "2",
         "--url", postgres_server_url],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("calibration: "), lines[0]
    runs = [line for line in lines if line.startswith("  run ")]
    assert len(runs) == 4 and all(line.endswith("  ok") for line in runs), runs
    assert sum("workers' CPU" in line for line in runs) == 2, runs  # the two --workers 2 runs
    ratios = [line for line in lines if "workers 2 (process, sqlite ledger) / workers 1:" in line]
    assert [line.split()[0] for line in ratios] == ["sqlite-to-pg", "pg-to-pg"], proc.stdout


def test_the_workers_may_keep_their_progress_in_a_postgresql_ledger(postgres_server_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.workers", "--rows", str(ROWS), "--reps", "1", "--work-us", "2",
         "--only", "pg-to-pg", "--ledger", "postgresql", "--url", postgres_server_url],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [line for line in proc.stdout.splitlines() if line.startswith("  run ")]
    assert len(runs) == 2 and all(line.endswith("  ok") for line in runs), runs
    assert "pg-to-pg     workers 2 (process, postgresql ledger) / workers 1:" in proc.stdout, proc.stdout


def test_the_check_refuses_a_duplicate_and_a_changed_row(postgres_url: str, tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    build_sqlite(source, ROWS)
    expected = expected_fingerprint(postgres_url, source, tmp_path)
    assert check(expected, expected, ROWS) == "ok"
    with psycopg.connect(libpq_url(postgres_url), autocommit=True) as conn:
        conn.execute("UPDATE stations_out SET name = lower(name) WHERE id = 7")
        changed = check(fingerprint(postgres_url), expected, ROWS)
        conn.execute("ALTER TABLE stations_out DROP CONSTRAINT stations_out_pkey")
        conn.execute("INSERT INTO stations_out SELECT * FROM stations_out WHERE id = 8")
        doubled = check(fingerprint(postgres_url), expected, ROWS)
    assert changed.startswith("WRONG: md5 ") and "count" not in changed
    assert "count 1501" in doubled and "distinct_ids" not in doubled


def test_the_loop_changes_no_output() -> None:
    record = {"id": 1, "code": "S1", "name": "Kalo Ridge", "type": "air", "lat": -1.23456, "lon": 2.5,
              "created_at": "2020-01-01T00:01:00"}
    assert busy_transform(record, 1_000) == busy_transform(record, 0)
    assert spin(4) == 6
