"""Everyday cycles that once gave a wrong result with exit code 0: fix a record, IGNORE or
RETRY it, run again; read another migration's output through a second store; reuse a class
for a second destination; count what happened; stop a run where every record fails.

Each runs the real CLI on a SQLite source, into SQLite and into PostgreSQL, and checks the
destination in SQL and the exact exit codes.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from ferryman import SqlStore

HERE = Path(__file__).parent
TARGET = HERE / "shop_cycles.py"
INVOICES = [(i, "FR" if i % 2 else "DE", None if i == 7 else 10.0 + i) for i in range(1, 11)]


def make_source(directory: Path) -> str:
    conn = sqlite3.connect(directory / "src.db")
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, country TEXT NOT NULL, amount REAL)")
    conn.execute("CREATE TABLE countries (code TEXT PRIMARY KEY)")
    conn.executemany("INSERT INTO invoices VALUES (?, ?, ?)", INVOICES)
    conn.executemany("INSERT INTO countries VALUES (?)", [("DE",), ("FR",)])
    conn.commit()
    conn.close()
    return f"sqlite:///{directory}/src.db"


def make_destination(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE new_invoices (id INTEGER PRIMARY KEY, country VARCHAR(2) NOT NULL, "
                             "amount FLOAT NOT NULL)")
        conn.exec_driver_sql("CREATE TABLE revenue (country VARCHAR(2) PRIMARY KEY, total FLOAT NOT NULL)")
    engine.dispose()


def query(url: str, sql: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.exec_driver_sql(sql)]
    engine.dispose()
    return rows


def revenue(url: str) -> dict[str, float]:
    return {country: round(float(total), 2) for country, total in query(url, "SELECT country, total FROM revenue")}


def expected_revenue(skip: set[int] = frozenset()) -> dict[str, float]:  # type: ignore[assignment]
    totals: dict[str, float] = {}
    for i, country, amount in INVOICES:
        amount = 10.0 + i if i == 7 else amount  # as fixed
        if i not in skip:
            totals[country] = round(totals.get(country, 0.0) + amount, 2)
    return totals


@pytest.fixture(params=["sqlite", "postgres"])
def shop(request, tmp_path):
    """(cwd, env) for running the target: a fresh source and destination."""
    dst = f"sqlite:///{tmp_path}/dst.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    make_destination(dst)
    env = {**os.environ, "CYCLES_SRC": make_source(tmp_path), "CYCLES_DST": dst}
    return tmp_path, env


def ferryman(shop, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    cwd, env = shop
    return subprocess.run([sys.executable, "-m", "ferryman", *args], cwd=cwd, env={**env, **extra_env},
                          capture_output=True, text=True, timeout=300)


def run(shop, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return ferryman(shop, "run", str(TARGET), "--progress", "progress.db", *args, **extra_env)


def fix_invoice_7(cwd: Path) -> None:
    conn = sqlite3.connect(cwd / "src.db")
    conn.execute("UPDATE invoices SET amount = 17.0 WHERE id = 7")
    conn.commit()
    conn.close()


def test_the_plan_sees_one_table_through_two_store_names(shop):
    planned = ferryman(shop, "plan", str(TARGET))
    assert planned.returncode == 0, planned.stderr
    lines = planned.stdout.splitlines()
    assert lines[0].startswith("1. [order 0] CopyInvoices") and lines[1].startswith("2. [order 0] Revenue")
    assert "after CopyInvoices (reads 'copied_invoices', the same data as 'new_invoices'" in lines[1]


def test_a_fixed_and_retried_record_makes_a_reducing_dependant_out_of_date(shop):
    cwd, env = shop
    dst = env["CYCLES_DST"]
    first = run(shop)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Revenue: held back -" in first.stdout and revenue(dst) == {}

    assert ferryman(shop, "failed", "ignore", "--progress", "progress.db", "7").returncode == 0
    second = run(shop)
    assert second.returncode == 0, second.stdout + second.stderr
    assert revenue(dst) == expected_revenue(skip={7})

    fix_invoice_7(cwd)
    assert ferryman(shop, "failed", "retry", "--progress", "progress.db", "7").returncode == 0
    third = run(shop)
    assert third.returncode == 1, third.stdout + third.stderr  # never "completed" over stale totals
    assert "CopyInvoices: completed - 1 migrated, 0 failed, 9 already done, 0 ignored" in third.stdout
    assert "Revenue: held back -" in third.stdout and "CopyInvoices wrote records after Revenue last ran" in third.stdout
    assert f"ferryman reset {TARGET} --progress progress.db --migration Revenue" in third.stdout  # its ledger
    assert revenue(dst) == expected_revenue(skip={7})  # untouched until the user says

    reset = ferryman(shop, "reset", str(TARGET), "--migration", "Revenue", "--progress", "progress.db")
    assert reset.returncode == 0, reset.stderr
    assert "its destination 'revenue' still holds what it wrote" in reset.stdout
    query_engine = sa.create_engine(dst)
    with query_engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM revenue")
    query_engine.dispose()
    fourth = run(shop)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert revenue(dst) == expected_revenue()
    assert run(shop).returncode == 0 and revenue(dst) == expected_revenue()  # and it stays so


def test_only_a_reduction_over_an_unfinished_input_is_held_back_and_the_status_says_not_done(shop):
    cwd, env = shop
    dst = env["CYCLES_DST"]
    alone = run(shop, "--only", "Revenue")  # CopyInvoices never ran: nothing to reduce yet
    assert alone.returncode == 1, alone.stdout + alone.stderr
    assert "Revenue: held back -" in alone.stdout and "which this run leaves out" in alone.stdout
    assert "--only CopyInvoices --only Revenue" in alone.stdout and revenue(dst) == {}

    copied = run(shop, "--only", "CopyInvoices")  # invoice 7 fails: CopyInvoices is not complete
    assert copied.returncode == 1, copied.stdout + copied.stderr
    assert run(shop, "--only", "Revenue").returncode == 1 and revenue(dst) == {}

    fix_invoice_7(cwd)
    assert run(shop, "--only", "CopyInvoices").returncode == 0
    status = ferryman(shop, "status", "--progress", "progress.db", "--json")  # the job is not done
    assert json.loads(status.stdout)["result"]["status"] == "failed"
    assert "not completed: Revenue" in json.loads(status.stdout)["result"]["last_err"]
    reduced = run(shop, "--only", "Revenue")  # now complete: the reduction sees every invoice
    assert reduced.returncode == 0, reduced.stdout + reduced.stderr
    assert revenue(dst) == expected_revenue()
    status = ferryman(shop, "status", "--progress", "progress.db", "--json")
    assert json.loads(status.stdout)["result"]["status"] == "migrated"


def test_an_upserting_dependant_runs_again_by_itself(shop):
    cwd, env = shop
    dst = env["CYCLES_DST"]
    assert run(shop, CYCLES_UPSERT="1").returncode == 1
    assert ferryman(shop, "failed", "ignore", "--progress", "progress.db", "7").returncode == 0
    assert run(shop, CYCLES_UPSERT="1").returncode == 0
    fix_invoice_7(cwd)
    assert ferryman(shop, "failed", "retry", "--progress", "progress.db", "7").returncode == 0
    third = run(shop, CYCLES_UPSERT="1")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "Revenue runs again from the start" in third.stderr
    assert revenue(dst) == expected_revenue()


def test_a_class_reused_for_another_destination_is_not_taken_for_done(shop, tmp_path):
    _cwd, env = shop
    first = run(shop, "--only", "CopyInvoices")
    assert first.returncode == 1 and len(query(env["CYCLES_DST"], "SELECT id FROM new_invoices")) == 9
    archive = f"sqlite:///{tmp_path}/archive.db"
    make_destination(archive)
    second = run(shop, "--only", "CopyInvoices", CYCLES_DST=archive)
    assert second.returncode == 1, second.stdout + second.stderr
    archived = "CopyInvoices@" + SqlStore("archive", archive, "new_invoices").dataset  # named apart too
    assert f"{archived}: failed - 9 migrated, 1 failed, 0 already done" in second.stdout
    assert "is kept apart" in second.stderr
    assert sorted(i for (i,) in query(archive, "SELECT id FROM new_invoices")) == [i for i in range(1, 11) if i != 7]
    third = run(shop, "--only", "CopyInvoices")  # the first destination resumes as before
    assert "CopyInvoices: failed - 0 migrated, 1 failed, 9 already done" in third.stdout


def status_of(shop, name: str) -> dict:
    status = ferryman(shop, "status", "--progress", "progress.db", "--json")
    assert status.returncode == 0, status.stderr
    (found,) = [m for m in json.loads(status.stdout)["progress"]["migrations"] if m["name"] == name]
    return found  # type: ignore[no-any-return]


def test_counters_add_up_across_fix_and_retry(shop):
    cwd, _env = shop
    run(shop, "--only", "CopyInvoices")
    assert ferryman(shop, "failed", "ignore", "--progress", "progress.db", "7").returncode == 0
    ignored = status_of(shop, "CopyInvoices")  # the status says what the ledger says now
    assert (ignored["failed"], ignored["ignored"], ignored["read"]) == (0, 1, 10)
    ferryman(shop, "failed", "retry", "--progress", "progress.db", "7")
    retried = status_of(shop, "CopyInvoices")
    assert (retried["failed"], retried["ignored"]) == (1, 0)
    fix_invoice_7(cwd)
    ferryman(shop, "failed", "retry", "--progress", "progress.db", "7")
    again = run(shop, "--only", "CopyInvoices")
    assert again.returncode == 0
    assert "CopyInvoices: completed - 1 migrated, 0 failed, 9 already done, 0 ignored" in again.stdout
    copy = status_of(shop, "CopyInvoices")
    assert copy["read"] == copy["succeeded"] + copy["failed"] + copy["skipped"] + copy["ignored"] == 10


def test_a_run_where_every_record_fails_stops_early(shop, tmp_path):
    conn = sqlite3.connect(tmp_path / "src.db")
    conn.executemany("INSERT INTO invoices VALUES (?, 'FR', NULL)", [(i,) for i in range(100, 5_100)])
    conn.commit()
    conn.close()
    done = run(shop, "--only", "CopyInvoices", "--max-failures", "50")
    assert done.returncode == 1
    found = re.search(r"failure budget exceeded: (\d+) records failed, more than max_failures=50", done.stdout)
    assert found and 50 < int(found[1]) <= 512, done.stdout  # judged page by page: at the first page
