"""The tables of an SQLite ledger, their version, and how a file is told apart and opened.

Everything that knows the shape of the file lives here: the statements that create it, the
upgrades that bring an older file up to :data:`SCHEMA_VERSION`, and the checks that refuse a
file this code must not touch (another application's database, a ledger of a newer schema, a
damaged file) before anything is written to it.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from datetime import datetime
from pathlib import Path

from ...errors import LedgerFileError

SCHEMA_VERSION = "4"
"""2: succeeded ids may also be in ``succeeded_log`` (a version 1 file gets the table on open).
3: the lease records the holder's process start time and an epoch; each migration its
destination dataset, write count and inputs (both added to older files on open).
4: ``event`` keeps every status change (the event log) and ``verification`` the results of
verifications (both tables added, empty, to older files on open; a reader of an older file
reads them as empty).
A file of a newer version is refused: this code cannot know what it would break in it."""

LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS lease (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    owner TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
    acquired_at REAL NOT NULL, heartbeat REAL NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0, started TEXT
);
CREATE TABLE IF NOT EXISTS lease_epoch (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1), epoch INTEGER NOT NULL
);
"""
"""The lease: in a ledger, and alone in the lock file beside an mjg JSON progress file."""

SCHEMA = LEASE_SCHEMA + """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS migration (
    id INTEGER PRIMARY KEY, identity TEXT NOT NULL UNIQUE,
    in_progress INTEGER NOT NULL DEFAULT 0, completed INTEGER NOT NULL DEFAULT 0,
    report TEXT, dest TEXT, changes INTEGER NOT NULL DEFAULT 0, inputs TEXT
);
CREATE TABLE IF NOT EXISTS succeeded (
    migration INTEGER NOT NULL, rid TEXT NOT NULL, PRIMARY KEY (migration, rid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS succeeded_log (
    seq INTEGER PRIMARY KEY, migration INTEGER NOT NULL, ids TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS succeeded_log_migration ON succeeded_log (migration);
CREATE TABLE IF NOT EXISTS failed (
    migration INTEGER NOT NULL, rid TEXT NOT NULL, seq INTEGER NOT NULL,
    description TEXT NOT NULL, cause TEXT NOT NULL, action TEXT NOT NULL, timestamp TEXT NOT NULL,
    PRIMARY KEY (migration, rid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fatal_error (seq INTEGER PRIMARY KEY, migration TEXT, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run (
    id INTEGER PRIMARY KEY, job INTEGER NOT NULL, attempt INTEGER NOT NULL,
    started_at REAL NOT NULL, ended_at REAL, outcome TEXT, pid INTEGER, host TEXT,
    step TEXT, last_error TEXT, reports TEXT
);
CREATE TABLE IF NOT EXISTS event (seq INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS verification (id INTEGER PRIMARY KEY, ok INTEGER NOT NULL, body TEXT NOT NULL);
"""

_COUNT_NEW = ("INSERT INTO failed_count VALUES (NEW.migration, NEW.action, 1) "
              "ON CONFLICT DO UPDATE SET n = n + 1")
_UNCOUNT_OLD = "UPDATE failed_count SET n = n - 1 WHERE migration = OLD.migration AND action = OLD.action"
FAILED_INDEX = (
    "CREATE INDEX failed_seq ON failed (seq)",
    ("CREATE TABLE failed_count (migration INTEGER NOT NULL, action TEXT NOT NULL, "
     "n INTEGER NOT NULL, PRIMARY KEY (migration, action)) WITHOUT ROWID"),
    f"CREATE TRIGGER failed_count_insert AFTER INSERT ON failed BEGIN {_COUNT_NEW}; END",
    f"CREATE TRIGGER failed_count_delete AFTER DELETE ON failed BEGIN {_UNCOUNT_OLD}; END",
    ("CREATE TRIGGER failed_count_update AFTER UPDATE OF migration, action ON failed BEGIN "
     f"{_UNCOUNT_OLD}; {_COUNT_NEW}; END"),
)
"""What lets a reader of a large ledger stay cheap: ``failed_count`` holds how many failed
records each migration has per action, kept by triggers (so every writer, whatever its version
of ferryman, keeps it right), and ``failed_seq`` finds the newest failures without a sort.
Created, and filled from ``failed``, the first time a ledger is opened for writing."""

LEASE_TABLES = frozenset({"lease", "lease_epoch"})
LEDGER_TABLES = frozenset({"meta", "migration", "succeeded", "succeeded_log", "failed", "failed_count",
                           "fatal_error", "run", "event", "verification"}) | LEASE_TABLES

_LATER_COLUMNS = {
    "lease": {"epoch": "INTEGER NOT NULL DEFAULT 0", "started": "TEXT"},
    "migration": {"dest": "TEXT", "changes": "INTEGER NOT NULL DEFAULT 0", "inputs": "TEXT"},
}
"""Columns that files made before schema 3 lack; :func:`upgrade` adds them (none recorded yet)."""

_FAILED_CONFLICT = (
    " ON CONFLICT (migration, rid) DO UPDATE SET description = excluded.description, "
    "cause = excluded.cause, action = excluded.action, timestamp = excluded.timestamp"
)
UPSERT_FAILED = "INSERT INTO failed VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)" + _FAILED_CONFLICT
"""A failed record (:func:`~.codec.failed_row`), replacing the migration's entry for its id."""
IMPORT_FAILED = (  # a succeeded id wins over a failed entry for it
    "INSERT INTO failed SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE NOT EXISTS "
    "(SELECT 1 FROM succeeded WHERE migration = ?1 AND rid = ?2)" + _FAILED_CONFLICT
)
"""The same for imported progress, unless the id is recorded as succeeded."""


def is_ledger_file(path: str | os.PathLike[str]) -> bool:
    """True for an SQLite file, or an empty or new one whose name does not end in ``.json``."""
    path = os.fspath(path)
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    return not path.lower().endswith(".json")


def connect(path: str, *, read_only: bool, timeout: float = 30) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are always explicit); ``read_only`` opens
    ``mode=ro``: it never creates nor changes the file."""
    uri = Path(path).resolve().as_uri() + ("?mode=ro" if read_only else "?mode=rwc")
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)


def inserted(cursor: sqlite3.Cursor) -> int:
    """The row id of the row an INSERT made."""
    if cursor.lastrowid is None:
        raise sqlite3.OperationalError("an INSERT made no row")
    return cursor.lastrowid


def tables(conn: sqlite3.Connection) -> set[str]:
    """The tables of the database, SQLite's own left out."""
    return {name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!'")}


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def objects(conn: sqlite3.Connection) -> set[str]:
    """The names of every table, index and trigger in the database."""
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def inspect_ledger(conn: sqlite3.Connection, path: str) -> int | None:
    """The schema version of the ferryman ledger on ``conn``, None when the database is empty;
    read without writing anything. Anything else raises :class:`LedgerFileError`: another
    application's database, a ledger of a newer schema, an unreadable file."""
    try:
        found = tables(conn)
        if not found:
            return None
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in found else {}
        except sqlite3.OperationalError:  # a table "meta" of another shape
            meta = {}
    except sqlite3.DatabaseError as exc:
        raise LedgerFileError(f"cannot read progress ledger {path}: {exc}") from exc
    if "uid" not in meta or "schema" not in meta:
        raise LedgerFileError(
            f"{path} is not a ferryman progress ledger (an SQLite database with tables "
            f"{', '.join(sorted(found))}); give the progress a file of its own")
    try:
        version = int(meta["schema"])
    except ValueError:
        raise LedgerFileError(
            f"progress ledger {path} is damaged: schema version {meta['schema']!r}") from None
    if version > int(SCHEMA_VERSION):
        raise LedgerFileError(f"{path} was written by a newer ferryman (ledger schema {version}; "
                              f"this version reads up to {SCHEMA_VERSION})")
    foreign = found - LEDGER_TABLES
    if foreign:
        raise LedgerFileError(
            f"{path} is a ferryman progress ledger holding tables of another application too "
            f"({', '.join(sorted(foreign))}); give the progress a file of its own")
    return version


def check_integrity(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a damaged file (truncated, pages overwritten) before any work relies on it.

    ``PRAGMA quick_check`` reads every page once, so only an open for a run or a command pays
    for it, never the status server's frequent reads.
    """
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")
                    if not row[0].startswith("***")]  # "*** in database main ***": a heading
    except sqlite3.DatabaseError as exc:
        raise LedgerFileError(f"cannot read progress ledger {path}: {exc}") from exc
    if problems != ["ok"]:
        raise LedgerFileError(f"progress ledger {path} is damaged: {'; '.join(problems)}")


def create(conn: sqlite3.Connection, statements: str = SCHEMA) -> None:
    """Create what is missing of ``statements`` (in the caller's transaction)."""
    for statement in statements.split(";"):
        if statement.strip():
            conn.execute(statement)


def upgrade(conn: sqlite3.Connection) -> None:
    """Create what a ledger lacks and bring an older one up to :data:`SCHEMA_VERSION`, with its
    meta rows (in the caller's transaction, so a reader never sees a ledger without its meta)."""
    create(conn)
    upgrade_lease(conn)
    _add_columns(conn, "migration")
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('uid', ?)", (uuid.uuid4().hex,))
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
    conn.execute("UPDATE meta SET value = ?1 WHERE key = 'schema' AND CAST(value AS INTEGER) < ?1",
                 (SCHEMA_VERSION,))
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('timestamp', ?)", (datetime.now().isoformat(),))


def upgrade_lease(conn: sqlite3.Connection) -> None:
    """Add the columns a lease table made by an older ferryman lacks (in the caller's transaction)."""
    _add_columns(conn, "lease")


def _add_columns(conn: sqlite3.Connection, table: str) -> None:
    have = columns(conn, table)
    for name, declaration in _LATER_COLUMNS[table].items():
        if name not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")


def has_failure_counters(conn: sqlite3.Connection) -> bool:
    return "failed_count" in objects(conn)


def add_failure_counters(conn: sqlite3.Connection) -> None:
    """Create :data:`FAILED_INDEX` and count what ``failed`` holds (in the caller's transaction)."""
    for statement in FAILED_INDEX:
        conn.execute(statement)
    conn.execute("INSERT INTO failed_count SELECT migration, action, count(*) FROM failed GROUP BY migration, action")
