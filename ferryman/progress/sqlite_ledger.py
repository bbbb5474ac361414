"""The durable ledger: progress in an SQLite file that survives ``kill -9``.

Cost per checkpoint grows with the batch, not the migration, and memory holds one batch of ids,
never the whole progress. A run appends each page's succeeded ids as ONE row of
``succeeded_log`` (the JSON array of their ids, the same text as the page's journal entry), not
one row per id: an INSERT per id (~1.3 µs) was the ledger's largest cost. The per-id table
``succeeded`` is the lookup index (is this id done?); lookups are only ever needed for what
earlier runs did, so :meth:`SqliteLedger.start_migration` first folds the migration's log into
it (one transaction, a chunk of ids in memory at a time). Only a resumed or re-run migration
pays for that fold, once, and less than per-id inserts did (SQLite inserts ints itself). An
id's success is in one of the two tables; every reader sees both.

This relies on what the runner guarantees anyway for exactly once: within a run an id is
recorded succeeded at most once (keyset paging reads each id once, ids earlier runs migrated
are skipped after :meth:`SqliteLedger.succeeded_among`). Should a run fail an id after logging
it succeeded, the failed entry wins, as it does in the per-id table.

Exactly once: when the destination store supports a journal (every SQL store), each batch of
outputs is committed together with a journal row naming the input ids it came from. A crash
between that commit and the ledger's own commit leaves the ids in the destination's journal,
and :meth:`SqliteLedger.recover` folds them back into the ledger before the migration resumes,
so a record is never written twice nor lost. Journal rows are deleted once the ledger has them.
"""

from __future__ import annotations

import json
import logging
import os
from json.encoder import encode_basestring as _json_string  # type: ignore[attr-defined]
import socket
import sqlite3
import time
import uuid
from contextlib import contextmanager
from datetime import datetime
from itertools import repeat
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..errors import LeaseLostError, LedgerFileError, LedgerWriteError, StoreError
from ..redact import mask_secrets
from ..report import MigrationReport, RunResult
from ..signals import critical
from ..stores.base import JournalEntry, Store
from ..types import RecordId
from .lease import SCHEMA as LEASE_SCHEMA, TABLES as LEASE_TABLES, Lease, busy_error, live_holder
from .lease import upgrade as upgrade_lease
from .ledger import Ledger
from .model import Action, FailedRecord, MigrationEntry, MigrationProgress, ProgressMetadata

log = logging.getLogger("ferryman")

SCHEMA_VERSION = "3"
"""2: succeeded ids may also be in ``succeeded_log`` (a version 1 file gets the table on open).
3: the lease records the holder's process start time and an epoch; each migration its
destination dataset, write count and inputs (both added to older files on open).
A file of a newer version is refused: this code cannot know what it would break in it."""
FLUSH_INTERVAL = 0.5
"""Seconds between ledger commits when the destination journals its batches."""
JOURNAL_CLEANUP_EVERY = 32
"""Ledger commits between two deletions of journal rows the ledger already holds."""
FOLD_CHUNK = 50_000
"""Ids held in memory at a time while folding a migration's log into ``succeeded``."""
LOOKUP_CHUNK = 500
"""Ids per ``rid IN (...)`` statement (SQLite allows 32766 parameters; 500 is plenty)."""
JOURNALED_KEPT = 64
"""Journal payloads kept for :meth:`SqliteLedger.record` to reuse (a page has a few batches)."""

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
"""

_COUNT_NEW = ("INSERT INTO failed_count VALUES (NEW.migration, NEW.action, 1) "
              "ON CONFLICT DO UPDATE SET n = n + 1")
_UNCOUNT_OLD = "UPDATE failed_count SET n = n - 1 WHERE migration = OLD.migration AND action = OLD.action"
FAILED_INDEX = (
    "CREATE INDEX failed_seq ON failed (seq)",
    "CREATE TABLE failed_count (migration INTEGER NOT NULL, action TEXT NOT NULL, "
    "n INTEGER NOT NULL, PRIMARY KEY (migration, action)) WITHOUT ROWID",
    f"CREATE TRIGGER failed_count_insert AFTER INSERT ON failed BEGIN {_COUNT_NEW}; END",
    f"CREATE TRIGGER failed_count_delete AFTER DELETE ON failed BEGIN {_UNCOUNT_OLD}; END",
    "CREATE TRIGGER failed_count_update AFTER UPDATE OF migration, action ON failed BEGIN "
    f"{_UNCOUNT_OLD}; {_COUNT_NEW}; END",
)
"""What lets a reader of a large ledger stay cheap: ``failed_count`` holds how many failed
records each migration has per action, kept by triggers (so every writer, whatever its version
of ferryman, keeps it right), and ``failed_seq`` finds the newest failures without a sort.
Created, and filled from ``failed``, the first time a ledger is opened for writing."""


def encode_id(record_id: RecordId) -> str:
    """Canonical text of an id; the JSON of it, so types survive (``1`` vs ``"1"``)."""
    kind = type(record_id)
    if kind is int:
        return int.__repr__(record_id)  # type: ignore[arg-type]
    if kind is str:
        return _json_string(record_id)
    return json.dumps(list(record_id), ensure_ascii=False, separators=(",", ":"))  # type: ignore[arg-type]


def decode_id(text: str) -> RecordId:
    return _as_id(json.loads(text))


_PLAIN_TYPES = {int, str, tuple}
_ARRAY_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_ids(ids: Sequence[RecordId]) -> str:
    """The JSON array of ``ids``: ``"[" + ",".join(map(encode_id, ids)) + "]"``, 2-9x faster.

    The text of a journal entry and of a ``succeeded_log`` row. For ints, strs and tuples the C
    JSON encoder writes exactly what :func:`encode_id` writes; anything else goes through it
    (an int subclass, which encode_id refuses, is written as its int).
    """
    if not isinstance(ids, (list, tuple)):
        ids = list(ids)
    try:
        return "[" + ",".join(map(int.__repr__, ids)) + "]"  # type: ignore[arg-type]  # all ints
    except TypeError:
        pass
    if {*map(type, ids)} <= _PLAIN_TYPES:
        return _ARRAY_ENCODER.encode(list(ids))
    return "[" + ",".join(map(encode_id, ids)) + "]"


def _array_keys(text: str) -> list[str]:
    """The canonical texts (:func:`encode_id`) of the ids in a JSON array of ids.

    For :func:`encode_ids`'s own text: the ints of an array without strings or arrays are
    already in int.__repr__'s form. Foreign text (a journal read back) goes through json.loads.
    """
    if '"' not in text and "[" not in text[1:]:
        body = text[1:-1]
        return body.split(",") if body else []
    return [encode_id(_as_id(v)) for v in json.loads(text)]


def _array_ids(text: str) -> list[RecordId]:
    """The ids of a JSON array of ids."""
    values = json.loads(text)
    return values if "[" not in text[1:] else [_as_id(v) for v in values]


def _as_id(value: Any) -> RecordId:
    """A JSON value back as an id: arrays are composite ids (tuples)."""
    return tuple(value) if isinstance(value, list) else value


def checked_path(path: str | os.PathLike[str]) -> str:
    """``path`` as text; an empty one (an unset shell variable) is refused, not a temporary
    database that vanishes with the run."""
    text = os.fspath(path)
    if not text:
        raise LedgerFileError("the progress ledger path is empty (an unset shell variable?): "
                              "name a file, e.g. progress.db")
    return text


def is_ledger_file(path: str | os.PathLike[str]) -> bool:
    """True for an SQLite file, or an empty or new one whose name does not end in ``.json``."""
    path = os.fspath(path)
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    return not path.lower().endswith(".json")


LEDGER_TABLES = frozenset({"meta", "migration", "succeeded", "succeeded_log", "failed", "failed_count", "fatal_error",
                           "run"}) | LEASE_TABLES


def inspect_ledger(conn: sqlite3.Connection, path: str) -> int | None:
    """The schema version of the ferryman ledger on ``conn``, None when the database is empty;
    read without writing anything. Anything else raises :class:`LedgerFileError`: another
    application's database, a ledger of a newer schema, an unreadable file."""
    try:
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!'")}
        if not tables:
            return None
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        except sqlite3.OperationalError:  # a table "meta" of another shape
            meta = {}
    except sqlite3.DatabaseError as exc:
        raise LedgerFileError(f"cannot read progress ledger {path}: {exc}") from exc
    if "uid" not in meta or "schema" not in meta:
        raise LedgerFileError(
            f"{path} is not a ferryman progress ledger (an SQLite database with tables "
            f"{', '.join(sorted(tables))}); give the progress a file of its own")
    try:
        version = int(meta["schema"])
    except ValueError:
        raise LedgerFileError(
            f"progress ledger {path} is damaged: schema version {meta['schema']!r}") from None
    if version > int(SCHEMA_VERSION):
        raise LedgerFileError(f"{path} was written by a newer ferryman (ledger schema {version}; "
                              f"this version reads up to {SCHEMA_VERSION})")
    foreign = tables - LEDGER_TABLES
    if foreign:
        raise LedgerFileError(
            f"{path} is a ferryman progress ledger holding tables of another application too "
            f"({', '.join(sorted(foreign))}); give the progress a file of its own")
    return version


def _check_integrity(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a damaged file (truncated, pages overwritten) before any work relies on it.

    ``PRAGMA quick_check`` reads every page once: a fraction of a second for millions of ids.
    """
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")
                    if not row[0].startswith("***")]  # "*** in database main ***": a heading
    except sqlite3.DatabaseError as exc:
        raise LedgerFileError(f"cannot read progress ledger {path}: {exc}") from exc
    if problems != ["ok"]:
        raise LedgerFileError(f"progress ledger {path} is damaged: {'; '.join(problems)}")


def _connect(path: str, read_only: bool) -> sqlite3.Connection:
    uri = Path(path).resolve().as_uri() + ("?mode=ro" if read_only else "?mode=rwc")
    return sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)


class SqliteLedger(Ledger):
    """Progress in an SQLite file; one run at a time holds its lease."""

    journals = True

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        """Open the ledger at ``path``, creating it unless ``read_only``.

        Raises:
            LedgerFileError: before anything is written, when ``path`` is empty, names another
                application's database, a ledger of a newer schema, or a damaged file.
            FileNotFoundError: ``read_only`` and there is no file.
        """
        self.path = checked_path(path)
        self.read_only = read_only
        if read_only and not os.path.exists(self.path):
            raise FileNotFoundError(f"no progress ledger at {self.path}")
        if not is_ledger_file(self.path):
            raise LedgerFileError(f"{self.path} is not a ferryman progress ledger (not an SQLite file)")
        self.lease: Lease | None = None
        try:
            self._open()
            try:
                self.uid = self._meta("uid")
                self._has_log = not read_only or self.conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = 'succeeded_log'").fetchone() is not None
                """False only for a version 1 file opened read-only (it has no log to read)."""
                self._seq = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM failed").fetchone()[0]
            except BaseException:
                self.conn.close()
                raise
        except sqlite3.DatabaseError as exc:
            raise LedgerFileError(f"cannot open progress ledger {self.path}: {exc}") from exc
        self.run_id: int | None = None
        self._ids: dict[str, int] = {}
        self._ops: list[tuple[str, int, Any]] = []
        self._maybe_done: set[int] = set()
        """Migrations whose earlier runs left succeeded ids (a fresh one needs no lookups)."""
        self._has_failed: set[int] = set()
        """Migrations that may have failed entries (only their successes delete failed rows)."""
        self._ignored: dict[int, set[RecordId]] = {}
        self._dests: dict[str, Store] = {}
        self._last_flush = time.monotonic()
        self._flushes = 0
        self._changed: set[int] = set()
        """Migrations whose write count this run already raised (once a run each)."""
        self._journaled: list[tuple[str, Sequence[RecordId], str]] = []
        """Recent journal payloads (identity, ids, text): record() reuses them, not re-encodes."""
        self._reports: Sequence[MigrationReport] = ()

    # --- schema and small helpers ---------------------------------------------------------

    def _open(self) -> None:
        """Connect, once the file proved to be a ledger this code may use (or empty).

        Nothing is written before that: not even the switch to WAL, which changes the file.
        Creating the tables and the meta rows is one transaction, so a reader never sees a
        ledger without its meta.
        """
        version = None
        if self.read_only or (os.path.exists(self.path) and os.path.getsize(self.path) > 0):
            conn = _connect(self.path, read_only=True)
            try:
                version = inspect_ledger(conn, self.path)
                if version is not None:
                    _check_integrity(conn, self.path)
                elif self.read_only:
                    raise LedgerFileError(f"{self.path} holds no progress yet (an empty SQLite file)")
            except BaseException:
                conn.close()
                raise
            if self.read_only:
                self.conn = conn
                return
            conn.close()
        self.conn = _connect(self.path, read_only=False)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            if version != int(SCHEMA_VERSION):  # else nothing to create: no write lock to wait
                with self._tx():                  # for (a stopped run may hold it)
                    inspect_ledger(self.conn, self.path)  # again, under the write lock
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            self.conn.execute(statement)
                    upgrade_lease(self.conn)
                    self._add_lineage_columns()
                    self._init_meta()
            self._index_failures()
        except BaseException:
            self.conn.close()
            raise

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One explicit transaction (the connection autocommits otherwise: one fsync a row).

        During a run it first checks the run still holds the lease: a run that lost it writes
        nothing more (:class:`~ferryman.errors.LeaseLostError`). A failed write or commit (a full
        disk, an I/O error) rolls back and raises :class:`LedgerWriteError` naming the file;
        nothing of the transaction is kept.
        """
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                if self.lease is not None:
                    self.lease.assert_held(self.conn)
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    try:
                        self.conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the error that made us roll back says more
                raise
        except sqlite3.OperationalError as exc:
            raise LedgerWriteError(f"cannot write progress ledger {self.path}: {exc}") from exc

    def _init_meta(self) -> None:
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('uid', ?)", (uuid.uuid4().hex,))
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        self.conn.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'schema' AND CAST(value AS INTEGER) < ?1",
            (SCHEMA_VERSION,))
        self.conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('timestamp', ?)", (datetime.now().isoformat(),)
        )

    def _add_lineage_columns(self) -> None:
        """A ledger written before schema 3 gets the lineage columns (none recorded yet)."""
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(migration)")}
        for column, kind in (("dest", "TEXT"), ("changes", "INTEGER NOT NULL DEFAULT 0"), ("inputs", "TEXT")):
            if column not in have:
                self.conn.execute(f"ALTER TABLE migration ADD COLUMN {column} {kind}")

    def _index_failures(self) -> None:
        """Add the failed records' counters and ``seq`` index to a ledger that lacks them."""
        exists = "SELECT 1 FROM sqlite_master WHERE name = 'failed_count'"
        if self.conn.execute(exists).fetchone():
            return
        with self._tx():
            if self.conn.execute(exists).fetchone():  # another process added them meanwhile
                return
            for statement in FAILED_INDEX:
                self.conn.execute(statement)
            self.conn.execute("INSERT INTO failed_count "
                              "SELECT migration, action, count(*) FROM failed GROUP BY migration, action")

    def _meta(self, key: str) -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise LedgerFileError(f"{self.path} is not a ferryman progress ledger (no {key})")
        return str(row[0])

    def _mid(self, identity: str) -> int:
        mid = self._ids.get(identity)
        if mid is None:
            row = self.conn.execute("SELECT id FROM migration WHERE identity = ?", (identity,)).fetchone()
            if row is None:
                with self._tx():
                    mid = self.conn.execute(
                        "INSERT INTO migration (identity) VALUES (?)", (identity,)
                    ).lastrowid
            else:
                mid = row[0]
                if self.conn.execute("SELECT 1 FROM failed WHERE migration = ? LIMIT 1", (mid,)).fetchone():
                    self._has_failed.add(mid)
            self._ids[identity] = mid
        return mid

    def _next_seq(self) -> int:
        """Order of failed records (first failure first); kept in memory, not MAX() per row."""
        self._seq += 1
        return self._seq

    def journal_key(self, identity: str) -> str:
        return f"{self.uid}:{identity}"

    # --- runs and the lease ------------------------------------------------------------------

    def begin_run(self, reports: Sequence[MigrationReport]) -> None:
        """Take the lease (or raise LedgerBusyError) and record a new run."""
        lease = Lease(self.path)
        lease.refuse_if_held(self.conn)
        now = time.time()
        with self._tx():
            lease.acquire(self.conn)
            dead = lease.previous
            if dead is not None:
                self.conn.execute(
                    "UPDATE run SET outcome = 'died', ended_at = ?, last_error = ? WHERE outcome IS NULL",
                    (now, f"process {dead.pid} on {dead.host} died without finishing"),
                )
            last = self.conn.execute(
                "SELECT job, attempt, outcome FROM run ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if last is None:
                job, attempt = 1, 1
            elif last[2] == "completed":
                job, attempt = last[0] + 1, 1
            else:
                job, attempt = last[0], last[1] + 1
            self.run_id = self.conn.execute(
                "INSERT INTO run (job, attempt, started_at, pid, host) VALUES (?, ?, ?, ?, ?)",
                (job, attempt, now, os.getpid(), socket.gethostname()),
            ).lastrowid
        self.lease = lease
        self._reports = reports
        self._changed.clear()
        lease.start_heartbeat()

    def end_run(self, result: RunResult) -> None:
        """Record how the run ended and release the lease. A run that lost the lease writes
        nothing (its outcome must not land over the new holder's) and raises LeaseLostError; a
        ledger that cannot be written releases the lease all the same (the next run then finds
        the outcome missing and says so)."""
        try:
            self._flush()
            if self.run_id is not None:
                outcome = "completed" if result.ok else ("interrupted" if result.interrupted else "failed")
                last_error = next((r.last_error for r in reversed(result.reports) if r.last_error), None)
                if result.callback_errors:
                    last_error = mask_secrets(result.callback_errors[-1])  # a user's callback, any text
                if result.ledger_error:
                    last_error = result.ledger_error
                with self._tx():
                    self.conn.execute(
                        "UPDATE run SET ended_at = ?, outcome = ?, last_error = ?, reports = ? WHERE id = ?",
                        (time.time(), outcome, last_error, _reports_json(result.reports), self.run_id),
                    )
        finally:
            self._release()

    def _release(self) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            try:
                lease.release(self.conn)
            except sqlite3.Error as exc:  # the heartbeat has stopped: the lease goes stale
                log.warning("could not release the lease of %s: %s", self.path, exc)

    def assert_held(self) -> None:
        """Raise LeaseLostError when this run's lease was taken over (one indexed SELECT)."""
        if self.lease is not None:
            self.lease.assert_held(self.conn)

    # --- the Ledger interface ---------------------------------------------------------------

    def start_migration(self, identity: str) -> None:
        """Mark it in progress and fold earlier runs' logged successes into the lookup index."""
        mid = self._mid(identity)
        with self._tx():
            self.conn.execute("UPDATE migration SET in_progress = 1, completed = 0 WHERE id = ?", (mid,))
            if self.run_id is not None:
                name = next((r.name for r in self._reports if r.identity == identity), identity)
                self.conn.execute("UPDATE run SET step = ? WHERE id = ?", (name, self.run_id))
            self._fold(mid)
        has_any = self.conn.execute("SELECT 1 FROM succeeded WHERE migration = ? LIMIT 1", (mid,)).fetchone()
        if has_any:
            self._maybe_done.add(mid)
        if self.conn.execute("SELECT 1 FROM failed WHERE migration = ? LIMIT 1", (mid,)).fetchone():
            self._has_failed.add(mid)
        self._ignored[mid] = {
            decode_id(r[0]) for r in self.conn.execute(
                "SELECT rid FROM failed WHERE migration = ? AND action = 'IGNORE'", (mid,))
        }

    def finish_migration(self, identity: str, completed: bool) -> None:
        self._flush()  # raises when it cannot commit: then the journal must stay as it is
        self._clean_journal(identity)
        if completed:
            with self._tx():
                self.conn.execute(
                    "UPDATE migration SET in_progress = 0, completed = 1 WHERE id = ?", (self._mid(identity),)
                )

    def succeeded_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        """Looks up ``succeeded`` only: what earlier runs did (folded by start_migration) and
        recovered journal entries. What this run logged is never asked for again."""
        mid = self._mid(identity)
        if mid not in self._maybe_done:
            return set()
        if any(kind == "f" and m == mid for kind, m, _ in self._ops):
            self._flush()  # a pending failure takes its id out of ``succeeded``
        return {decode_id(k) for k in self._present("succeeded", mid, list(map(encode_id, ids)))}

    def _present(self, table: str, mid: int, keys: list[str]) -> Iterator[str]:
        """Which of ``keys`` (encoded ids) ``table`` holds for the migration."""
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start:start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            for (rid,) in self.conn.execute(
                    f"SELECT rid FROM {table} WHERE migration = ? AND rid IN ({marks})", (mid, *chunk)):
                yield rid

    def ignored_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        ignored = self._ignored.get(self._mid(identity))
        return {i for i in ids if i in ignored} if ignored else set()

    def retry_ids(self, identity: str) -> list[RecordId]:
        self._flush()
        return [decode_id(r[0]) for r in self.conn.execute(
            "SELECT rid FROM failed WHERE migration = ? AND action = 'RETRY' ORDER BY seq",
            (self._mid(identity),))]

    def record(self, identity: str, succeeded: Sequence[RecordId], failed: Sequence[FailedRecord]) -> None:
        """Queue the page for the next commit: successes as one log row, failures per id."""
        mid = self._mid(identity)
        if succeeded:
            text = self._journaled_text(identity, succeeded) or encode_ids(succeeded)
            # Only a migration with failed entries pays for per-id keys (to delete those entries).
            keys = _array_keys(text) if mid in self._has_failed else None
            self._ops.append(("s", mid, (text, keys)))
        self._journaled.clear()
        if failed:
            self._ops.append(("f", mid, [_failed_row(mid, self._next_seq(), f) for f in failed]))
            self._has_failed.add(mid)

    def record_fatal(self, identity: str, text: str) -> None:
        self._flush()
        with self._tx():
            self.conn.execute("INSERT INTO fatal_error (migration, text) VALUES (?, ?)",
                              (identity, mask_secrets(text)))

    def journal_for(self, identity: str, ids: Sequence[RecordId]) -> JournalEntry | None:
        """The batch's input ids as a JSON array (ids keep their JSON types)."""
        text = encode_ids(ids)
        if len(self._journaled) >= JOURNALED_KEPT:
            del self._journaled[:JOURNALED_KEPT // 2]
        self._journaled.append((identity, list(ids), text))  # a copy: the caller may reuse its list
        return JournalEntry(self.journal_key(identity), text)

    def _journaled_text(self, identity: str, ids: Sequence[RecordId]) -> str | None:
        """The log text of ``ids`` joined from the journal entries of their batches, if the
        page's successes are exactly those batches in order (the usual case): no second
        encoding. None otherwise; the caller encodes then."""
        if not self._journaled:
            return None
        if not isinstance(ids, list):
            ids = list(ids)
        parts: list[str] = []
        pos, total = 0, len(ids)
        for owner, batch, text in self._journaled:
            end = pos + len(batch)
            if owner == identity and end <= total and ids[pos:end] == batch:
                parts.append(text[1:-1])
                pos = end
                if pos == total:
                    return "[" + ",".join(parts) + "]"
        return None

    def recover(self, identity: str, dest: Store) -> int:
        """Fold the journal's entries into ``succeeded`` directly, so lookups see them.

        The journal repeats ids the ledger may hold already (it is cleaned only now and then):
        per-id INSERT OR IGNORE keeps each once. Rare and small; not worth the log.
        """
        if not dest.supports_journal:
            return 0
        self._dests[identity] = dest
        key = self.journal_key(identity)
        entries = dest.read_journal(key)
        if not entries:
            return 0
        keys = [encode_id(_as_id(v)) for e in entries for v in json.loads(e.payload)]
        mid = self._mid(identity)
        self._flush()
        with self._tx():
            self._fold(mid)  # normally done by start_migration; so that no id is in both tables
            params = list(zip(repeat(mid), keys))
            if mid in self._has_failed:  # a success clears the record's failure
                self.conn.executemany("DELETE FROM failed WHERE migration = ? AND rid = ?", params)
            self.conn.executemany("INSERT OR IGNORE INTO succeeded VALUES (?, ?)", params)
            self._count_changes({mid})
        self._maybe_done.add(mid)
        self._delete_journal(dest, key)
        return len(keys)

    def checkpoint(self, urgent: bool = True) -> None:
        if urgent or time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self._flush()

    # --- writing -------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Commit everything recorded so far in one transaction."""
        if self.read_only:
            return
        ops = self._ops
        self._last_flush = time.monotonic()
        if not ops and self.lease is None:
            return  # no run holds the ledger: no run row nor reports to bring up to date
        # The pages stay queued until their commit succeeded (a full disk keeps them for the
        # next try); a second Ctrl-C waits for the commit and its bookkeeping, so they are
        # neither forgotten nor written twice.
        with critical():
            try:
                self._commit(ops)
            except LeaseLostError:
                self._ops = []  # never this run's to write: the run that took over folds their journal
                raise
            self._ops = []
        if ops:
            self._flushes += 1
            if self._flushes % JOURNAL_CLEANUP_EVERY == 0:
                for identity in list(self._dests):
                    self._clean_journal(identity)

    def _commit(self, ops: list[tuple[str, int, Any]]) -> None:
        """The queued pages and failures, the write counts and the reports, in one transaction."""
        with self._tx():
            changed = set()
            for kind, mid, rows in ops:
                if kind == "s":
                    text, keys = rows
                    if keys is not None:  # a success clears the record's failure
                        self._delete("failed", mid, keys)
                    self.conn.execute("INSERT INTO succeeded_log (migration, ids) VALUES (?, ?)",
                                      (mid, text))
                    changed.add(mid)
                else:
                    self.conn.executemany("DELETE FROM succeeded WHERE migration = ? AND rid = ?",
                                          [(mid, row[1]) for row in rows])
                    self.conn.executemany(_UPSERT_FAILED, rows)
            self._count_changes(changed)
            if self.lease is not None:
                self._write_reports()

    def _delete(self, table: str, mid: int, keys: list[str]) -> None:
        """Delete the rows of these encoded ids, LOOKUP_CHUNK ids a statement (fewer VM steps
        than one statement per id)."""
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start:start + LOOKUP_CHUNK]
            self.conn.execute(
                f"DELETE FROM {table} WHERE migration = ? AND rid IN ({','.join('?' * len(chunk))})",
                (mid, *chunk))

    def _fold(self, mid: int) -> int:
        """Move the migration's ``succeeded_log`` rows into ``succeeded``; how many ids.

        Runs inside the caller's transaction, FOLD_CHUNK ids in memory at a time. INSERT OR
        IGNORE keeps an id once whatever the log repeats; an id failed after it was logged
        (its failed entry is newer: a success deletes the entry) is left out, as per id.
        A row of 64-bit ints is inserted by SQLite itself (json_each), 1.5-4x faster than
        binding each id from Python; anything else is decoded and re-encoded here.
        """
        if not self._has_log:
            return 0
        last = None
        keys: list[str] = []
        folded = 0
        insert = "INSERT OR IGNORE INTO succeeded VALUES (?, ?)"
        for seq, text in self.conn.execute(
                "SELECT seq, ids FROM succeeded_log WHERE migration = ? ORDER BY seq", (mid,)):
            last = seq
            if ('"' not in text and "[" not in text[1:]
                    and not self.conn.execute(_NOT_INT64, (text,)).fetchone()):
                folded += self.conn.execute(_FOLD_INT64, (mid, text)).rowcount
                continue
            keys += _array_keys(text)
            if len(keys) >= FOLD_CHUNK:
                self.conn.executemany(insert, zip(repeat(mid), keys))
                folded += len(keys)
                keys = []
        if last is None:
            return 0
        self.conn.executemany(insert, zip(repeat(mid), keys))
        folded += len(keys)
        self.conn.execute("DELETE FROM succeeded_log WHERE migration = ? AND seq <= ?", (mid, last))
        if mid in self._has_failed:
            self.conn.execute("DELETE FROM succeeded WHERE migration = ?1 AND rid IN "
                              "(SELECT rid FROM failed WHERE migration = ?1)", (mid,))
        return folded

    def _write_reports(self) -> None:
        for report in self._reports:
            mid = self._ids.get(report.identity)
            if mid is not None:
                self.conn.execute("UPDATE migration SET report = ? WHERE id = ?",
                                  (json.dumps(report.to_dict()), mid))
        if self.run_id is not None:
            last_error = next((r.last_error for r in reversed(self._reports) if r.last_error), None)
            self.conn.execute("UPDATE run SET last_error = ?, reports = ? WHERE id = ?",
                              (last_error, _reports_json(self._reports), self.run_id))

    def _clean_journal(self, identity: str) -> None:
        """Drop journal rows the ledger now holds; if the store is down, try again later
        (the rows stay correct to fold back, only the journal grows meanwhile)."""
        dest = self._dests.get(identity)
        if dest is not None:
            try:
                self._delete_journal(dest, self.journal_key(identity))
            except StoreError as exc:
                log.warning("could not clean the journal of %s yet: %s", dest.name, exc)

    def _delete_journal(self, dest: Store, key: str) -> None:
        """Delete journal rows the ledger holds; never after the lease was lost: the run that
        took it over writes its own batches' rows under the same key and needs them."""
        self.assert_held()
        dest.delete_journal(key)

    # --- lineage: what each migration writes, how often it wrote, what it read ------------------

    def _count_changes(self, mids: set[int]) -> None:
        """Raise the write count of migrations that recorded successes, once a run, in the
        transaction that records them (a crash cannot separate the two)."""
        for mid in mids - self._changed:
            self.conn.execute("UPDATE migration SET changes = changes + 1 WHERE id = ?", (mid,))
        self._changed |= mids

    def bind(self, identity: str, dest: str) -> str:
        """The key a migration's progress is kept under (see :meth:`Ledger.bind`)."""
        current = self._dest_of(identity)
        key = identity if current in (None, dest) else derived_key(identity, dest)
        if self._dest_of(key) != dest:
            with self._tx():
                self.conn.execute("INSERT OR IGNORE INTO migration (identity) VALUES (?)", (key,))
                self.conn.execute("UPDATE migration SET dest = ? WHERE identity = ?", (dest, key))
        return key

    def _dest_of(self, key: str) -> str | None:
        row = self.conn.execute("SELECT dest FROM migration WHERE identity = ?", (key,)).fetchone()
        return None if row is None else row[0]  # type: ignore[no-any-return]

    def lineage(self) -> dict[str, tuple[str | None, int]]:
        """Every migration's destination dataset and write count, by key."""
        return {key: (dest, changes) for key, dest, changes in
                self.conn.execute("SELECT identity, dest, changes FROM migration ORDER BY id")}

    def inputs(self, key: str) -> dict[str, int] | None:
        """The write counts of its inputs when the migration last started (None: never)."""
        row = self.conn.execute("SELECT inputs FROM migration WHERE identity = ?", (key,)).fetchone()
        return None if row is None or row[0] is None else dict(json.loads(row[0]))

    def note_inputs(self, key: str, inputs: dict[str, int]) -> None:
        with self._tx():
            self.conn.execute("UPDATE migration SET inputs = ? WHERE id = ?",
                              (json.dumps(inputs, sort_keys=True), self._mid(key)))

    def forget(self, key: str, dest: Store | None = None) -> None:
        """Forget everything about a migration's progress (refused while a live run holds the
        ledger); its destination journal's entries too, so none is folded back later."""
        mid = self._mid(key)
        self._flush()
        with self._tx():
            holder = None if self.lease is not None else live_holder(self.conn)  # a run resets its own
            if holder is not None:
                raise busy_error(self.path, holder, "reset a migration")
            for table in ("succeeded", "succeeded_log", "failed"):
                self.conn.execute(f"DELETE FROM {table} WHERE migration = ?", (mid,))
            self.conn.execute("DELETE FROM fatal_error WHERE migration = ?", (key,))
            self.conn.execute("UPDATE migration SET in_progress = 0, completed = 0, report = NULL, "
                              "inputs = NULL WHERE id = ?", (mid,))
        for cache in (self._maybe_done, self._has_failed):
            cache.discard(mid)
        self._ignored.pop(mid, None)
        if dest is not None and dest.supports_journal:
            self._delete_journal(dest, self.journal_key(key))

    # --- reading the whole progress -------------------------------------------------------------

    def identities(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT identity FROM migration ORDER BY id")]

    def iter_succeeded(self, identity: str) -> Iterator[RecordId]:
        """Every succeeded id once: the per-id table, then the log (less ids failed since)."""
        mid = self._mid(identity)
        if not self._has_log:
            for (rid,) in self.conn.execute("SELECT rid FROM succeeded WHERE migration = ?", (mid,)):
                yield decode_id(rid)
            return
        has_failed = self.conn.execute(
            "SELECT 1 FROM failed WHERE migration = ? LIMIT 1", (mid,)).fetchone() is not None
        # One statement, one snapshot: a fold committed meanwhile cannot hide ids between the two.
        for logged, text in self.conn.execute(
                "SELECT 0, rid FROM succeeded WHERE migration = ?1 UNION ALL "
                "SELECT 1, ids FROM (SELECT ids FROM succeeded_log WHERE migration = ?1 ORDER BY seq)",
                (mid,)):
            if not logged:
                yield decode_id(text)
                continue
            if has_failed:
                keys = _array_keys(text)
                failed = set(self._present("failed", mid, keys))
                if failed:
                    yield from (decode_id(k) for k in keys if k not in failed)
                    continue
            yield from _array_ids(text)

    def iter_failed(self, identity: str) -> Iterator[FailedRecord]:
        mid = self._mid(identity)
        for rid, d, c, a, t in self.conn.execute(
            "SELECT rid, description, cause, action, timestamp FROM failed "
            "WHERE migration = ? ORDER BY seq", (mid,)
        ):
            yield FailedRecord(decode_id(rid), d, c, Action(a), datetime.fromisoformat(t))

    def failed_records(self, identity: str) -> list[FailedRecord]:
        return list(self.iter_failed(identity))

    def metadata(self) -> ProgressMetadata:
        rows = self.conn.execute("SELECT identity, in_progress, completed FROM migration ORDER BY id").fetchall()
        return ProgressMetadata(
            datetime.fromisoformat(self._meta("timestamp")),
            [i for i, _, c in rows if c], [i for i, p, c in rows if p and not c],
        )

    def fatal_errors(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT text FROM fatal_error ORDER BY seq")]

    def progress(self) -> MigrationProgress:
        """The whole progress as a MigrationProgress (memory grows with it: for export/callbacks)."""
        self._flush()
        migrations = {}
        for identity in self.identities():
            entry = MigrationEntry(identity)
            entry.succeeded = dict.fromkeys(self.iter_succeeded(identity))
            entry.failed = {f.id: f for f in self.iter_failed(identity)}
            migrations[identity] = entry
        return MigrationProgress(self.metadata(), migrations, self.fatal_errors())

    def set_action(self, identity: str, ids: Iterable[RecordId] | None, action: Action) -> int:
        """Set the action of failed records (all of the migration's when ``ids`` is None)."""
        mid = self._mid(identity)
        with self._tx():
            if ids is None:
                return self.conn.execute(
                    "UPDATE failed SET action = ? WHERE migration = ? AND action != ?",
                    (action.value, mid, action.value)).rowcount
            return sum(self.conn.execute(
                "UPDATE failed SET action = ? WHERE migration = ? AND rid = ? AND action != ?",
                (action.value, mid, encode_id(i), action.value)).rowcount for i in ids)

    @contextmanager
    def replacing(self) -> Iterator[LedgerImport]:
        """Replace the whole content in one transaction (refused while a run holds the lease)."""
        with self._tx():
            holder = live_holder(self.conn)
            if holder is not None:
                raise busy_error(self.path, holder)
            for table in ("succeeded", "succeeded_log", "failed", "fatal_error", "migration"):
                self.conn.execute(f"DELETE FROM {table}")
            for cache in (self._ids, self._maybe_done, self._has_failed, self._ignored):
                cache.clear()  # keyed by migration ids, which the new content may reuse
            load = LedgerImport(self)
            yield load
            load.finish()

    def import_progress(self, progress: MigrationProgress) -> None:
        """Replace this ledger's content with ``progress``."""
        with self.replacing() as load:
            load.metadata(progress.metadata)
            for identity, entry in progress.migrations.items():
                load.succeeded(identity, entry.succeeded)
                load.failed(identity, entry.failed.values())
            load.fatal_errors(progress.fatal_errors)

    def close(self) -> None:
        """Write what is pending (unless the lease was lost), release the lease, close."""
        try:
            if self.lease is None or self.lease.lost is None:
                self._flush()
        finally:
            try:
                self._release()
            finally:
                self.conn.close()


class LedgerImport:
    """Writes imported progress into a ledger inside :meth:`SqliteLedger.replacing`.

    Calls may come in any order and in pieces (a streaming reader sends ids in chunks); an id
    both succeeded and failed ends up succeeded, as when a run saves it.
    """

    def __init__(self, ledger: SqliteLedger) -> None:
        self.ledger = ledger
        self._metadata: ProgressMetadata | None = None

    def metadata(self, metadata: ProgressMetadata) -> None:
        self._metadata = metadata
        self.ledger.conn.execute("UPDATE meta SET value = ? WHERE key = 'timestamp'",
                                 (metadata.timestamp.isoformat(),))

    def succeeded(self, identity: str, ids: Iterable[RecordId]) -> None:
        mid = self._migration(identity)
        params = [(mid, encode_id(i)) for i in ids]
        self.ledger.conn.executemany("DELETE FROM failed WHERE migration = ? AND rid = ?", params)
        self.ledger.conn.executemany("INSERT OR IGNORE INTO succeeded VALUES (?, ?)", params)

    def failed(self, identity: str, records: Iterable[FailedRecord]) -> None:
        mid = self._migration(identity)
        self.ledger.conn.executemany(
            _IMPORT_FAILED, (_failed_row(mid, self.ledger._next_seq(), f) for f in records)
        )

    def fatal_errors(self, texts: Iterable[str]) -> None:
        self.ledger.conn.executemany("INSERT INTO fatal_error (migration, text) VALUES (NULL, ?)",
                                     ((t,) for t in texts))

    def _migration(self, identity: str) -> int:
        row = self.ledger.conn.execute("SELECT id FROM migration WHERE identity = ?", (identity,)).fetchone()
        if row:
            return int(row[0])
        return int(self.ledger.conn.execute(
            "INSERT INTO migration (identity) VALUES (?)", (identity,)).lastrowid)

    def finish(self) -> None:
        metadata = self._metadata
        if metadata is None:
            return
        for identity in dict.fromkeys([*metadata.in_progress, *metadata.completed]):
            self._migration(identity)
        conn = self.ledger.conn
        conn.executemany("UPDATE migration SET in_progress = 1 WHERE identity = ?",
                         ((i,) for i in metadata.in_progress))
        conn.executemany("UPDATE migration SET completed = 1, in_progress = 0 WHERE identity = ?",
                         ((i,) for i in metadata.completed))


_NOT_INT64 = "SELECT 1 FROM json_each(?) WHERE typeof(value) != 'integer' LIMIT 1"
"""Whether a JSON array has an element SQLite does not read as a 64-bit int (it reads a bigger
int as a float: its text would not be the id's)."""
_FOLD_INT64 = "INSERT OR IGNORE INTO succeeded SELECT ?1, CAST(value AS TEXT) FROM json_each(?2)"
"""A JSON array of 64-bit ints into ``succeeded``: SQLite writes an int's text as Python does."""

_FAILED_CONFLICT = (
    " ON CONFLICT (migration, rid) DO UPDATE SET description = excluded.description, "
    "cause = excluded.cause, action = excluded.action, timestamp = excluded.timestamp"
)
_UPSERT_FAILED = "INSERT INTO failed VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)" + _FAILED_CONFLICT
_IMPORT_FAILED = (  # a succeeded id wins over a failed entry for it
    "INSERT INTO failed SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE NOT EXISTS "
    "(SELECT 1 FROM succeeded WHERE migration = ?1 AND rid = ?2)" + _FAILED_CONFLICT
)


def derived_key(identity: str, dest: str) -> str:
    """The key of a migration class's progress for a second destination: ``identity@dest``."""
    return f"{identity}@{dest}"


def _failed_row(mid: int, seq: int, record: FailedRecord) -> tuple[Any, ...]:
    return (mid, encode_id(record.id), seq, record.description, record.cause,
            Action(record.action).value, record.timestamp.isoformat())


def _reports_json(reports: Sequence[MigrationReport]) -> str:
    return json.dumps([r.to_dict() for r in reports])
