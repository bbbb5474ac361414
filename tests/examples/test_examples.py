"""examples/chinook.py as its docstring walks through it: through the real CLI, in a fresh folder,
checking the destination in SQL at each step; and against the same migration written without
SqlDatabase and Lookup (``chinook_long.py``): the same rows, in at most half the lines."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHINOOK = str(EXAMPLES / "chinook.py")
LONG = str(Path(__file__).with_name("chinook_long.py"))


def ferryman(*args: str, cwd: Path, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    env = None if columns is None else {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "ferryman", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def query(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def source_sql(cwd: Path, sql: str) -> None:
    with sqlite3.connect(cwd / "chinook-old.db") as db:
        db.execute(sql)


def expected_country_sales(new: Path) -> list[tuple]:
    return query(new, "SELECT country, COUNT(*), ROUND(SUM(amount), 2) FROM sales GROUP BY country ORDER BY country")


def test_the_chinook_walk_through(tmp_path):
    new, p = tmp_path / "chinook-new.db", "chinook-progress.db"
    plan = ferryman("plan", CHINOOK, cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "3. [order 0] CountrySales: countries, sales -> country_sales; after Sales (reads 'sales', which it " \
           "writes)" in plan.stdout
    assert "keys reflected from the tables' primary keys: albums AlbumId, artists ArtistId, countries Country, " \
           "country_sales country, customers CustomerId," in plan.stdout

    first = ferryman("run", CHINOOK, "--progress", p, cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "CountrySales: held back -" in first.stdout
    failed = json.loads(ferryman("failed", "list", "--progress", p, "--json", cwd=tmp_path).stdout)
    causes = {(f["migration"], f["id"]): f["full_cause"] for f in failed}
    assert set(causes) == {("Customers", 7), ("Sales", 1603)}
    assert "NOT NULL constraint failed: customers.email" in causes["Customers", 7]
    assert "filter {'TrackId': 9999} matched 0" in causes["Sales", 1603]
    listed = ferryman("failed", "list", "--progress", p, cwd=tmp_path, columns=100).stdout.splitlines()
    assert all(len(line) <= 100 for line in listed), listed  # the terminal's width, the SQLite message first
    assert listed[1].split()[:4] == ["7", "Customers", "RETRY", "customers(CustomerId=7)"]
    assert "NOT NULL constraint failed: customers.email" in listed[1]
    assert query(new, "SELECT COUNT(*) FROM customers") == [(59,)]
    assert query(new, "SELECT email FROM customers WHERE id IN (12, 30) ORDER BY id") == [
        ("c12@example.com",), ("duplicate-of-c12@example.com",)]  # handle_duplicate kept customer 30
    assert query(new, "SELECT track, album, artist, amount FROM sales WHERE id = 100") == [(None, None, None, 10.0)]
    assert query(new, "SELECT COUNT(*), COUNT(album), COUNT(artist) FROM sales")[0][0] == 1999
    assert query(new, "SELECT COUNT(*) FROM country_sales") == [(0,)]

    # IGNORE the line whose track is gone; fix customer 7 at the source; run: all done
    assert ferryman("failed", "ignore", "--progress", p, "--migration", "Sales", "1603", cwd=tmp_path).returncode == 0
    source_sql(tmp_path, "UPDATE customers SET Email = 'kim@example.com' WHERE CustomerId = 7")
    second = ferryman("run", CHINOOK, "--progress", p, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert query(new, "SELECT name, email FROM customers WHERE id = 7") == [("First7 Last7", "kim@example.com")]
    assert query(new, "SELECT country, lines, revenue FROM country_sales ORDER BY country") == \
        expected_country_sales(new)
    assert sum(n for _, n, _ in expected_country_sales(new)) == 1999

    # the track is back: RETRY the ignored line; CountrySales, which upserts, runs again with it
    source_sql(tmp_path, "INSERT INTO tracks VALUES (9999, 'Restored', 1, 0.99)")
    assert ferryman("failed", "retry", "--progress", p, "--all", cwd=tmp_path).returncode == 0
    third = ferryman("run", CHINOOK, "--progress", p, cwd=tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr
    assert query(new, "SELECT track FROM sales WHERE id = 1603") == [("Restored",)]
    assert query(new, "SELECT country, lines, revenue FROM country_sales ORDER BY country") == \
        expected_country_sales(new)
    assert sum(n for _, n, _ in expected_country_sales(new)) == 2000
    assert "no failed records" in ferryman("failed", "list", "--progress", p, cwd=tmp_path).stdout

    # and a verification agrees, customer 30 included: stored as handle_duplicate settled it
    verified = ferryman("verify", CHINOOK, "--progress", p, "--all", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Customers: passed" in verified.stdout and "1 as handle_duplicate settled them" in verified.stdout


def code_lines(path: str, start: str, end: str) -> int:
    """Lines of code between two marker comments: blank and comment lines are not counted."""
    text = Path(path).read_text(encoding="utf-8")
    section = text[text.index(start):text.index(end)]
    return sum(1 for line in section.splitlines() if line.strip() and not line.strip().startswith("#"))


@pytest.mark.parametrize("upto", ["# --- end of Sales", "migrations = ["])
def test_the_example_takes_at_most_half_the_lines_of_match_and_methods(upto):
    """Its stores, Customers (a lookup and a reduction) and Sales (five lookups) take at most half
    the lines they take with SqlStore, Match and methods; with CountrySales, a reduction written
    the same way in both, less than two thirds."""
    short = code_lines(CHINOOK, "# --- stores", upto)
    long = code_lines(LONG, "# --- stores", upto)
    if upto == "# --- end of Sales":
        assert short * 2 <= long, (short, long)
    else:
        assert short * 3 < long * 2, (short, long)


def test_the_long_form_migrates_the_same_rows(tmp_path):
    short, long = tmp_path / "short", tmp_path / "long"
    short.mkdir()
    long.mkdir()
    for cwd, target in ((short, CHINOOK), (long, LONG)):
        done = ferryman("run", target, "--progress", "p.db", cwd=cwd)
        assert done.returncode == 1, done.stdout + done.stderr  # the same two records fail in both
    for table in ("customers", "sales"):
        rows = query(short / "chinook-new.db", f"SELECT * FROM {table} ORDER BY id")
        assert rows == query(long / "chinook-new.db", f"SELECT * FROM {table} ORDER BY id")
        assert len(rows) == {"customers": 59, "sales": 1999}[table]
