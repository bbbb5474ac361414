"""``python -m bench.serve_overhead`` and its request-cost companion at a tiny size: they run,
check the copy, and report every mode and route. They never assert a speed (see the README)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def bench(*args: str, tmp_path: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", *args, "--work", str(tmp_path / "work")], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_overhead_benchmark_measures_both_modes_on_a_ledger_with_failures(tmp_path):
    out = bench("bench.serve_overhead", "--rows", "2000", "--reps", "2", "--failed", "300",
                "--cache", str(tmp_path / "data"), tmp_path=tmp_path)
    lines = out.splitlines()
    assert sum(line.startswith("rep ") for line in lines) == 4
    rows = [line.split()[:2] for line in lines
            if line.startswith(("quiet ", "polled ")) and line.split()[1].isdigit()]
    assert rows == [["quiet", "2"], ["polled", "2"]]  # mode, runs
    assert "polled / quiet within each repetition: run time" in out


def test_the_request_cost_benchmark_reports_every_status_route(tmp_path):
    out = bench("bench.serve_overhead.request_cost", "--failed", "300", "--burst", "5", "--spaced", "2",
                "--spacing", "0.6", tmp_path=tmp_path)
    routes = [line.split()[0] for line in out.splitlines() if line.startswith("/")]
    assert routes == ["/migrate/result", "/migrate/progress", "/metrics", "/migrate/history",
                      "/migrate/failed?limit=50", "/migrate/failed?offset=50000&limit=50",
                      "/migrate/failed?q=record+4242+has&limit=50"]
