"""The read API of an SQLite ledger: what the status server, the CLI and tests read, and how."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import ledger_files
import pytest
from ledgers import a_run

from ferryman import (
    LedgerFileError,
)
from ferryman.progress.sqlite import SqliteLedger, SqliteReader


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reading_never_writes_and_takes_no_lease(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    a_run(lambda: SqliteLedger(path), "m.A", ok=False)
    before = digest(path)
    with ledger_files.reader(path) as reader:
        reader.progress()
        reader.failed_counts()
        other = reader.new_reader()
        assert other.runs() == reader.runs() and other.conn is not reader.conn
        other.close()
    assert digest(path) == before


def test_an_older_file_reads_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    ledger = SqliteLedger(path)
    ledger.start_migration("m.A")
    ledger.close()
    ledger_files.as_version_2_held_by(path, 1, "elsewhere.example")
    with sqlite3.connect(path) as conn:  # a schema 2 file had no lineage columns yet
        for column in ("dest", "changes", "inputs"):
            conn.execute(f"ALTER TABLE migration DROP COLUMN {column}")
    conn.close()
    before = digest(path)
    with ledger_files.reader(path) as reader:
        assert reader.schema_version == 2
        ((identity, dest, changes),) = [(m.identity, m.dest, m.changes) for m in reader.migrations()]
        assert (identity, dest, changes) == ("m.A", None, 0)
        holder = reader.holder()
        assert holder is not None and (holder.epoch, holder.host) == (0, "elsewhere.example")
    assert digest(path) == before


def test_an_empty_database_reads_as_nothing_yet(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 1")  # a header, no table
    conn.close()
    with ledger_files.reader(path) as reader:
        assert reader.runs() == [] and reader.migrations() == [] and reader.failed_counts() == {}
        assert reader.newest_failed(5) == [] and reader.fatal_count() == 0 and reader.holder() is None


def test_what_is_not_a_ledger_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(LedgerFileError, match="cannot read progress ledger .*missing.db"):
        SqliteReader.open(str(tmp_path / "missing.db"))
    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE items (id INTEGER)")
    conn.close()
    with pytest.raises(LedgerFileError, match="app.db is not a ferryman progress ledger"):
        SqliteReader.open(str(foreign))
    newer = tmp_path / "newer.db"
    SqliteLedger(newer).close()
    ledger_files.set_schema(newer, "99")
    with pytest.raises(LedgerFileError, match="written by a newer ferryman"):
        SqliteReader.open(str(newer))
