"""What the drivers and SQLAlchemy's pool log while cleaning up after an error that ferryman
raises and handles anyway is demoted to DEBUG: a failed record's batch split in halves, or a
connection the server killed, must not print a line (or a traceback) on stderr per batch."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from ferryman import SqlStore

TARGET = """
import os
from ferryman import MemoryStore, SqlStore, migration

stores = [MemoryStore("src", records=[{"id": i, "name": None if i in (7, 300) else f"n{i}"} for i in range(1, 1001)]),
          SqlStore("dst", os.environ["DST"], "dst")]

@migration(source="src", dest="dst")
class Copy:
    def transform(self, aggregates, record):
        return [dict(record)]

migrations = [Copy]
"""


def _make_table(url: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE dst (id INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL)"))
    engine.dispose()


def test_a_run_whose_records_fail_on_postgres_prints_no_driver_cleanup_lines(tmp_path: Path, postgres_url: str) -> None:
    _make_table(postgres_url)
    (tmp_path / "t.py").write_text(TARGET)
    done = subprocess.run([sys.executable, "-m", "ferryman", "run", "t.py", "--progress", "p.db", "--no-bar"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DST": postgres_url, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Copy: failed - 998 migrated, 2 failed" in done.stdout  # split down to the two bad records
    assert done.stderr == ""  # psycopg logged "error ignored terminating <Pipeline>" once per split batch


def test_a_killed_connection_given_back_to_the_pool_logs_at_debug_only(
    mysql_url: str, stores: list[SqlStore], caplog: pytest.LogCaptureFixture
) -> None:
    _make_table(mysql_url)
    store = SqlStore("dst", mysql_url, "dst")
    stores.append(store)
    conn = store.engine.connect()
    conn.execute(text("SELECT 1"))
    conn.commit()  # giving the connection back still rolls back, in the pool: the step that meets the kill
    killed = conn.connection.driver_connection.thread_id()
    admin = create_engine(mysql_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as other:
        other.execute(text(f"KILL {int(killed)}"))
    admin.dispose()
    conn.close()
    resets = [r for r in caplog.records if r.getMessage() == "Exception during reset or similar"]
    assert resets and all(r.levelno == logging.DEBUG for r in resets)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert store.count() == 0  # the pool discarded the dead connection
