"""``ferryman demo`` end to end: sample data, a run with planted failures, then the fix."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import helpers

from ferryman.demo.data import duplicate_emails, ensure_data, negative_qty_orders, sizes


def ferryman(*args: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ferryman", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def count(path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_sample_data_is_deterministic_and_reused(tmp_path):
    data = ensure_data(str(tmp_path / "d"), 3000)
    assert data.created and (data.orders, data.customers, data.products) == sizes(3000) == (3000, 200, 20)
    assert count(data.source, "orders") == 3000 and count(data.source, "customers") == 200
    with sqlite3.connect(data.source) as db:
        negative = [r[0] for r in db.execute("SELECT id FROM orders WHERE qty < 0 ORDER BY id")]
        emails = dict(db.execute("SELECT id, email FROM customers"))
    assert negative == negative_qty_orders(3000) and 17 in negative and len(negative) == 5
    for customer, earlier in duplicate_emails(200):
        assert emails[customer] == emails[earlier]
    assert len(set(emails.values())) == 198
    before = os.stat(data.source).st_mtime_ns
    again = ensure_data(str(tmp_path / "d"), 99999)  # reused as it is, whatever --rows says
    assert not again.created and again.orders == 3000 and os.stat(data.source).st_mtime_ns == before
    assert Path(again.target).read_text().count("from ferryman.demo.migrations import") == 1


def test_demo_end_to_end(tmp_path):
    result = ferryman("demo", "--no-serve", "--rows", "20000", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "created sample data in ferryman-demo: 1,333 customers, 133 products, 20,000 orders" in out
    assert "\nplan: 1. [order 0] customer_summaries: customers, orders -> customer_summaries; no dependency\n" in out
    assert "plan: [" not in out  # each line of the plan, not a Python list
    assert "customer_summaries: failed - 1,331 migrated, 2 failed" in out
    assert "order_lines: failed - 19,995 migrated, 5 failed" in out
    assert "country_totals: held back -" in out
    assert "ferryman failed list --progress ferryman-demo/progress.db" in out
    progress = "ferryman-demo/progress.db"

    listed = ferryman("failed", "list", "--progress", progress, "--json", cwd=tmp_path)
    rows = json.loads(listed.stdout)
    by_migration = {}
    for row in rows:
        by_migration.setdefault(row["migration"], []).append(row["id"])
    assert by_migration == {"customer_summaries": [c for c, _ in duplicate_emails(1333)],
                            "order_lines": negative_qty_orders(20000)}
    assert all("negative quantity" in r["cause"] for r in rows if r["migration"] == "order_lines")
    assert all("UNIQUE constraint failed: customer_summaries.email" in r["cause"]
               for r in rows if r["migration"] == "customer_summaries")

    # what the demo suggests, step by step
    ignored = ferryman("failed", "ignore", "--progress", progress, "--migration", "order_lines", "17", cwd=tmp_path)
    assert ignored.returncode == 0 and "ignored 1 failed record(s)" in ignored.stdout
    ignored = ferryman("failed", "ignore", "--progress", progress, "--grep", "UNIQUE constraint", cwd=tmp_path)
    assert "ignored 2 failed record(s) (customer_summaries 2)" in ignored.stdout
    rerun = ferryman("run", "ferryman-demo/migrations.py", "--progress", progress, cwd=tmp_path)
    assert rerun.returncode == 1  # four negative orders are still RETRY
    assert "order_lines: failed - 0 migrated, 4 failed, 19,995 already done, 1 ignored" in rerun.stdout
    assert "country_totals: completed - 20 migrated" in rerun.stdout
    ignored = ferryman("failed", "ignore", "--progress", progress, "--all", cwd=tmp_path)
    assert "ignored 4 failed record(s) (order_lines 4)" in ignored.stdout
    rerun = ferryman("run", "ferryman-demo/migrations.py", "--progress", progress, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    dest = tmp_path / "ferryman-demo" / "dest.db"
    assert count(dest, "customer_summaries") == 1331
    assert count(dest, "order_lines") == 19995
    assert count(dest, "country_totals") == 20
    with sqlite3.connect(dest) as db:
        revenue = db.execute("SELECT round(sum(revenue), 2) FROM country_totals").fetchone()[0]
        spent = db.execute("SELECT round(sum(total_spent), 2) FROM customer_summaries").fetchone()[0]
    assert abs(revenue - spent) < 0.05
    status = ferryman("status", "--progress", progress, cwd=tmp_path)
    assert status.stdout.startswith("status: "), status.stderr

    again = ferryman("demo", "--no-serve", cwd=tmp_path)  # idempotent: reuses the data, resumes
    assert again.returncode == 0
    assert "using the sample data in ferryman-demo (20,000 orders)" in again.stdout
    assert "order_lines: completed - 0 migrated, 0 failed, 19,995 already done, 5 ignored" in again.stdout


def test_demo_serves_the_dashboard_until_ctrl_c(tmp_path):
    port = helpers.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ferryman", "demo", "--rows", "600", "--dir", "d",
                             "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        body = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/migrate/result", timeout=5) as r:
                    body = json.loads(r.read())
            except (urllib.error.URLError, ConnectionError):
                body = None
            if body and body["status"] == "failed":  # the run ended with its planted failures
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert body is not None and body["status"] == "failed"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
        time.sleep(0.5)
        assert proc.poll() is None  # still serving
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"dashboard: http://127.0.0.1:{port}" in out
    assert "Try next, in another terminal:" in out
