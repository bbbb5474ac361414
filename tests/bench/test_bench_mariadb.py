"""``python -m bench.mariadb`` at a tiny size, on the real server: it runs, checks both outputs in
SQL, and reports the ratio; its check refuses a wrong copy. It never asserts a speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the repo's bench/ package, not this tests/bench/ folder

from bench import data
from bench.mariadb import DEST_TABLE, URL_VARIABLE, WORKLOAD, connect
from bench.workloads import Job

ROWS = 1_500


def test_both_contestants_copy_every_row_and_the_ratio_is_reported(mysql_server_url: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.mariadb", "--rows", str(ROWS), "--reps", "2", "--url", mysql_server_url,
         "--cache", str(tmp_path / "data")],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    runs = [line for line in lines if line.startswith("[")]
    assert len(runs) == 4 and all(line.endswith(" ok") for line in runs), runs
    assert any(line.startswith("  MariaDB copy vs executemany loop") for line in lines), proc.stdout


def test_the_check_refuses_a_copy_whose_names_kept_their_case(mysql_url: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_VARIABLE, mysql_url)
    source = data.stations_db(ROWS, tmp_path)
    job = Job(WORKLOAD.key, "executemany-loop", ROWS, str(source), str(tmp_path / "unused.db"), str(tmp_path))
    WORKLOAD.prepare(job)
    with connect(mysql_url) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO {DEST_TABLE} SELECT * FROM stations_source")
        conn.commit()
        wrong = WORKLOAD.verify(job, {})
        cur.execute(f"UPDATE {DEST_TABLE} SET name = upper(name)")
        conn.commit()
        right = WORKLOAD.verify(job, {})
    assert not wrong.ok and wrong.rows == ROWS and "0 equal to the source" in wrong.detail
    assert right.ok and right.checksum != wrong.checksum
