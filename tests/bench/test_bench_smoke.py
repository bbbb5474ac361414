"""The benchmark suite end to end at a tiny size: it runs, reports, and checks outputs.

Only ferryman and the library-free baselines run here (no pandas, petl or dlt needed). These
tests assert correctness, never speed: speed on a shared machine is what ``bench/README.md``
reports, not something a unit test can decide.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the repo's bench/ package, not this tests/bench/ folder

from bench.baselines.engine_sql import line_totals_join
from bench.harness import Case, Dirs, measure
from bench.workloads import Job, workload
from bench.workloads.failures import expected_failures

SIZE = 2_000


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    cache = tmp_path_factory.mktemp("bench-data")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--size", str(SIZE), "--reps", "1", "--no-libs",
         "--scaling-sizes", f"1000,{SIZE}", "--out", str(out), "--cache", str(cache)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


def test_every_output_passes_its_check(report: tuple[dict, str]) -> None:
    document, _ = report
    measurements = document["measurements"]
    cases = {m["case"] for m in measurements}
    assert {f"W1/ferryman-durable@{SIZE:,}", f"W1/ferryman-memory@{SIZE:,}", f"W1/dict-loop@{SIZE:,}",
            f"W1/insert-select@{SIZE:,}", f"W2/ferryman@{SIZE:,}", f"W2/per-area-loop@{SIZE:,}",
            f"W2/group-by@{SIZE:,}", f"W3/ferryman-durable@{SIZE:,}", "W1/ferryman-durable@1,000",
            f"W4/ferryman@{SIZE:,}", f"W4/per-lookup-loop@{SIZE:,}", f"W4/dict-loop@{SIZE:,}",
            f"W4/join@{SIZE:,}"} <= cases
    assert not any(m["case"].split("/")[1].startswith(("petl", "pandas", "dlt")) for m in measurements)
    for m in measurements:
        assert m["ok"], m
        assert m["seconds"] > 0 and m["peak_mb"] > 0, m


def test_w3_ledger_holds_exactly_the_failed_ids(report: tuple[dict, str]) -> None:
    document, _ = report
    raised, duplicates = expected_failures(SIZE)
    (w3,) = [m for m in document["measurements"] if m["case"] == f"W3/ferryman-durable@{SIZE:,}"]
    assert w3["rows"] == SIZE - len(raised)
    assert w3["checksum"].endswith(f"failed={len(raised | duplicates)}")


def test_table_and_json_report_every_suite_and_target(report: tuple[dict, str]) -> None:
    document, stdout = report
    assert [s["key"] for s in document["suites"]] == ["W1", "W2", "W3", "W4", "scaling"]
    for suite in document["suites"]:
        assert suite["rows"], suite
        for row in suite["rows"]:
            assert row["rows_per_s"] > 0 and row["vs_baseline"] is not None, row
    assert "hand-written sqlite3 dict loop" in stdout and "Targets" in stdout
    names = [t["name"] for t in document["targets"]]
    assert "W1 vs hand-written dict loop" in names and "W3 time vs W1 time" in names
    assert "W4 vs per-lookup loop" in names and "W4 vs dict-join loop" in names
    assert "W4 read-only Matches vs per-lookup loop" in names and "W4 read-only Matches vs dict-join loop" in names
    by_name = {t["name"]: t for t in document["targets"]}
    assert by_name["W1 vs pandas"]["met"] is None  # libraries skipped: not measured, not failed
    assert document["meta"]["versions"]["ferryman"]


@pytest.mark.parametrize("variant", ["dict-loop", "ferryman-durable"])
def test_a_wrong_output_fails_the_check(tmp_path: Path, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A contestant that skips a row or the transform must not be reported as a result."""
    wl = workload("W1")
    real_verify = wl.verify

    def tamper_then_verify(job, output):  # type: ignore[no-untyped-def]
        conn = sqlite3.connect(job.dest)
        with conn:
            conn.execute("UPDATE stations SET name = lower(name) WHERE id = 5")
        conn.close()
        return real_verify(job, output)

    monkeypatch.setattr(wl, "verify", tamper_then_verify)
    m = measure(Case("W1", variant, 600), 0, Dirs(tmp_path / "cache", tmp_path / "scratch"))
    assert not m.ok
    assert "599 equal to the source" in m.check.detail


def test_a_wrong_lookup_fails_the_w4_check(tmp_path: Path) -> None:
    """A line written with another product's price, or a price change missed, is caught."""
    wl = workload("W4")
    job = Job("W4", "join", 500, str(wl.source(500, tmp_path / "cache")), str(tmp_path / "dest.db"), str(tmp_path))
    wl.prepare(job)
    line_totals_join(job)
    assert wl.verify(job, {}).ok
    conn = sqlite3.connect(job.dest)
    with conn:
        conn.execute("UPDATE line_totals SET price_changes = price_changes + 1 WHERE id = 7")
    conn.close()
    check = wl.verify(job, {})
    assert not check.ok and "wrong: [7]" in check.detail


def test_a_missing_row_fails_the_check(tmp_path: Path) -> None:
    wl = workload("W1")
    source = wl.source(500, tmp_path / "cache")
    job = Job("W1", "insert-select", 500, str(source), str(tmp_path / "dest.db"), str(tmp_path))
    wl.prepare(job)
    conn = sqlite3.connect(job.dest)
    with conn:
        conn.execute("ATTACH DATABASE ? AS src", (str(source),))
        conn.execute("INSERT INTO main.stations SELECT id, code, upper(name), type, lat, lon, created_at "
                     "FROM src.stations WHERE id != 42")
    conn.close()
    check = wl.verify(job, {})
    assert not check.ok and check.rows == 499


def test_the_postgres_benchmark_runs_both_scenarios_and_checks_the_tables(postgres_server_url):
    """``python -m bench.postgres`` at a tiny size: both implementations must write equal tables."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.postgres", "--rows", "3000", "--repeat", "1", "--url", postgres_server_url],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for scenario in ("sqlite-to-pg", "pg-to-pg"):
        assert f"{scenario:<12} ferryman / hand-written" in proc.stdout
    assert proc.stdout.count("CPU") >= 4  # every measurement reports its CPU time
