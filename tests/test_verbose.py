"""``ferryman -v run``: each page, retry, bisection and checkpoint is logged at INFO on stderr,
and none of it without ``-v``; on SQLite and PostgreSQL destinations."""

from __future__ import annotations

import sqlite3
import textwrap
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from ferryman.cli import cli

TARGET = '''\
import os
from ferryman import Retry, SqlStore, migration

HERE = os.path.dirname(os.path.abspath(__file__))
FLAKY = os.path.join(HERE, "flaky")
stores = [SqlStore("src", "sqlite:///" + os.path.join(HERE, "src.db"), "items"),
          SqlStore("dst", {dest!r}, "items")]


@migration(source="src", dest="dst", batch_size=8, save_retry=Retry(times=1, delay=0))
class Copy:
    def transform(self, aggregates, record):
        if record["id"] == 5 and not os.path.exists(FLAKY):  # fails once, then works
            open(FLAKY, "w").close()
            raise ConnectionError("the service behind item 5 did not answer")
        return [{{"id": record["id"], "name": record["name"]}}]


migrations = [Copy]
'''


def make_target(tmp_path: Path, dest_url: str) -> str:
    with closing(sqlite3.connect(tmp_path / "src.db")) as db, db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?)",  # item 13 has no name: NOT NULL refuses it
                       [(i, None if i == 13 else f"item {i}") for i in range(1, 21)])
    engine = sa.create_engine(dest_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"))
    engine.dispose()
    path = tmp_path / "migrations.py"
    path.write_text(textwrap.dedent(TARGET.format(dest=dest_url)), encoding="utf-8")
    return str(path)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def dest_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dst.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_verbose_logs_pages_retries_bisection_and_checkpoints(tmp_path: Path, dest_url: str) -> None:
    target = make_target(tmp_path, dest_url)
    progress = str(tmp_path / "p.db")
    result = run("-v", "run", target, "--progress", progress, "--no-bar")
    assert result.exit_code == 1, result.output
    log = [line for line in result.stderr.splitlines() if line.startswith("ferryman: info: ")]
    text = "\n".join(log)
    assert "Copy: page: 7 migrated, 0 failed, 1 to try again (so far: 7 migrated, 0 failed of 20)" in text
    assert ("Copy: 1 record(s) failed with tries left (first: src(id=5): ConnectionError: the service behind "
            "item 5 did not answer); tried again after this pass") in text
    assert "Copy: trying 1 failed record(s) again in 0 s" in text
    assert "Copy: records tried again: 1 migrated, 0 failed (so far: 19 migrated, 1 failed of 20)" in text
    assert "Copy: a batch of 8 record(s) failed (TerminalStoreError: " in text
    assert "saving it in parts to find the failing records" in text
    assert "Copy: 1 of the batch's 8 record(s) failed on their own, found in 6 more save(s)" in text
    assert f"failed record(s) committed to {progress}" in text
    pages = [line for line in log if ": page: " in line]
    assert len(pages) == 3  # 20 records, 8 a page


def test_without_verbose_nothing_of_it(tmp_path: Path, dest_url: str) -> None:
    target = make_target(tmp_path, dest_url)
    result = run("run", target, "--progress", str(tmp_path / "p.db"), "--no-bar")
    assert result.exit_code == 1, result.output
    assert "ferryman: info:" not in result.stderr
    assert "page:" not in result.output + result.stderr and "checkpoint" not in result.output + result.stderr


def test_a_json_progress_logs_its_checkpoints(tmp_path: Path) -> None:
    target = make_target(tmp_path, f"sqlite:///{tmp_path / 'dst.db'}")
    progress = str(tmp_path / "p.json")
    result = run("-v", "run", target, "--progress", progress, "--no-bar")
    assert result.exit_code == 1, result.output
    assert f"ferryman: info: checkpoint: progress saved to {progress}" in result.stderr


def test_verbose_after_the_command_too(tmp_path: Path) -> None:
    target = make_target(tmp_path, f"sqlite:///{tmp_path / 'dst.db'}")
    result = run("run", target, "--progress", str(tmp_path / "p.db"), "--no-bar", "-v")
    assert result.exit_code == 1, result.output
    assert "ferryman: info: Copy: page: 7 migrated, 0 failed, 1 to try again" in result.stderr
