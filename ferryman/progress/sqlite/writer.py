"""The durable ledger: progress in an SQLite file that survives ``kill -9``.

Cost per checkpoint grows with the batch, not the migration, and memory holds one batch of ids,
never the whole progress. A run appends each page's succeeded ids as ONE row of
``succeeded_log`` (the JSON array of their ids, the same text as the page's journal entry), not
one row per id: an INSERT per id was the ledger's largest cost. The per-id table ``succeeded``
is the lookup index (is this id done?); lookups are only ever needed for what earlier runs did,
so :meth:`SqliteLedger.start_migration` first folds the migration's log into it (one
transaction, a chunk of ids in memory at a time). Only a resumed or re-run migration pays for
that fold, once. An id's success is in one of the two tables; every reader sees both.

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
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import repeat

from ...errors import LedgerFileError, LedgerWriteError
from ...redact import mask_secrets
from ...report import last_error as run_last_error
from ...types import RecordId
from ..codec import array_keys, decode_id, encode_id, encode_ids, failed_row
from ..durable import DurableLedger, Op, dead_run_error, next_run, reports_json
from ..model import Action, FailedRecord, MigrationProgress
from ..storage import checked_path
from .importer import LedgerImport
from .lease import Lease
from .reader import LOOKUP_CHUNK, SqliteReader
from .schema import (
    SCHEMA_VERSION,
    UPSERT_FAILED,
    add_failure_counters,
    check_integrity,
    connect,
    has_failure_counters,
    inserted,
    inspect_ledger,
    is_ledger_file,
    upgrade,
)

log = logging.getLogger("ferryman")

FOLD_CHUNK = 50_000
"""Ids held in memory at a time while folding a migration's log into ``succeeded``."""
FAILED_KEYS_KEPT = 100_000
"""Failed ids of a migration a ledger keeps in memory so that a success deletes only those
entries (:attr:`SqliteLedger._failed_keys`); past that it deletes a success's ids whatever."""


class SqliteLedger(SqliteReader, DurableLedger):
    """Progress in an SQLite file; one run at a time holds its lease. It reads as a
    :class:`~.reader.SqliteReader` too (what is committed)."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False,
                 journal_owner: str | None = None) -> None:
        """Open the ledger at ``path``, creating it unless ``read_only``.

        ``journal_owner`` names this ledger in its journal keys (default: its uid); a partition's
        ledger gives ``<main ledger uid>/<its own uid>``, so that the destination knows its
        entries for the main ledger's.

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
        self.lost_lease: str | None = None
        """Why this ledger's run lost its lease, kept after the run: it then writes nothing more."""
        try:
            self._open()
            try:
                super().__init__(self.conn, self.path)
                self.uid = self._meta("uid")
                self.journal_owner = journal_owner or self.uid
                self._seq = int(self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM failed").fetchone()[0])
            except BaseException:
                self.conn.close()
                raise
        except sqlite3.DatabaseError as exc:
            raise LedgerFileError(f"cannot open progress ledger {self.path}: {exc}") from exc
        self.run_id: int | None = None
        self._ids: dict[str, int] = {}
        self._init_queue()
        self._failed_keys: dict[int, set[str]] = {}
        """Of migrations that had no failed entry when this ledger started them, the encoded
        ids of the entries it recorded since (up to :data:`FAILED_KEYS_KEPT`): their successes
        delete only those, not a statement of every id of every page. The lease keeps every
        other writer out meanwhile."""

    # --- schema and small helpers ---------------------------------------------------------

    def _open(self) -> None:
        """Connect, once the file proved to be a ledger this code may use (or empty).

        Nothing is written before that: not even the switch to WAL, which changes the file.
        Creating the tables and the meta rows is one transaction, so a reader never sees a
        ledger without its meta.
        """
        version = None
        if self.read_only or (os.path.exists(self.path) and os.path.getsize(self.path) > 0):
            conn = connect(self.path, read_only=True)
            try:
                version = inspect_ledger(conn, self.path)
                if version is not None:
                    check_integrity(conn, self.path)
                elif self.read_only:
                    raise LedgerFileError(f"{self.path} holds no progress yet (an empty SQLite file)")
            except BaseException:
                conn.close()
                raise
            if self.read_only:
                self.conn = conn
                return
            conn.close()
        self.conn = connect(self.path, read_only=False)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            if version != int(SCHEMA_VERSION):  # else nothing to create: no write lock to wait
                with self._tx():                  # for (a stopped run may hold it)
                    inspect_ledger(self.conn, self.path)  # again, under the write lock
                    upgrade(self.conn)
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

    def _index_failures(self) -> None:
        """Add the failed records' counters and ``seq`` index to a ledger that lacks them."""
        if has_failure_counters(self.conn):
            return
        with self._tx():
            if not has_failure_counters(self.conn):  # else another process added them meanwhile
                add_failure_counters(self.conn)

    def _mid(self, identity: str) -> int:
        """The migration's row id, made on first use."""
        mid = self._ids.get(identity)
        if mid is None:
            mid = self.migration_id(identity)
            if mid is None:
                with self._tx():
                    mid = inserted(self.conn.execute("INSERT INTO migration (identity) VALUES (?)", (identity,)))
            elif self.conn.execute("SELECT 1 FROM failed WHERE migration = ? LIMIT 1", (mid,)).fetchone():
                self._has_failed.add(mid)
            self._ids[identity] = mid
        return mid

    def next_seq(self) -> int:
        """Order of failed records (first failure first); kept in memory, not MAX() per row."""
        self._seq += 1
        return self._seq

    # --- runs and the lease ------------------------------------------------------------------

    lease_errors = (sqlite3.Error,)

    def _new_lease(self) -> Lease:
        lease = Lease(self.path)
        lease.refuse_if_held(self.conn)  # before the write transaction: a stopped holder may hold the file
        return lease

    def _record_run_start(self, lease: Lease) -> int:
        now = time.time()
        lease.acquire(self.conn)
        dead = lease.previous
        if dead is not None:
            self.conn.execute("UPDATE run SET outcome = 'died', ended_at = ?, last_error = ? WHERE outcome IS NULL",
                              (now, dead_run_error(dead.pid, dead.host)))
        job, attempt = next_run(self.conn.execute("SELECT job, attempt, outcome FROM run ORDER BY id DESC LIMIT 1")
                                .fetchone())
        return inserted(self.conn.execute(
            "INSERT INTO run (job, attempt, started_at, pid, host) VALUES (?, ?, ?, ?, ?)",
            (job, attempt, now, os.getpid(), socket.gethostname())))

    def _record_run_end(self, outcome: str, last_error: str | None, reports: str) -> None:
        self.conn.execute("UPDATE run SET ended_at = ?, outcome = ?, last_error = ?, reports = ? WHERE id = ?",
                          (time.time(), outcome, last_error, reports, self.run_id))

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
        elif mid not in self._has_failed:  # no entry stored nor queued: this ledger will know them all
            self._failed_keys[mid] = set()
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
        return {decode_id(k) for k in self.present("succeeded", mid, list(map(encode_id, ids)))}

    def retry_ids(self, identity: str) -> list[RecordId]:
        self._flush()
        return [decode_id(r[0]) for r in self.conn.execute(
            "SELECT rid FROM failed WHERE migration = ? AND action = 'RETRY' ORDER BY seq",
            (self._mid(identity),))]

    def record(self, identity: str, succeeded: Sequence[RecordId], failed: Sequence[FailedRecord]) -> None:
        """Queue the page for the next commit: successes as one log row, failures per id."""
        mid = self._mid(identity)
        if succeeded:
            self.record_encoded(identity, self._journaled_text(identity, succeeded) or encode_ids(succeeded))
        self._journaled.clear()
        if failed:
            rows = [failed_row(mid, self.next_seq(), f) for f in failed]
            self._ops.append(("f", mid, rows))
            self._has_failed.add(mid)
            known = self._failed_keys.get(mid)
            if known is not None:
                known.update(row[1] for row in rows)
                if len(known) > FAILED_KEYS_KEPT:
                    del self._failed_keys[mid]

    def record_encoded(self, identity: str, text: str) -> None:
        mid = self._mid(identity)
        self._ops.append(("s", mid, (text, self._failures_cleared(mid, text))))

    def _failures_cleared(self, mid: int, text: str) -> list[str] | None:
        """The encoded ids, of the successes ``text`` holds, whose failed entries they delete;
        None for none. Only a migration with failed entries pays for per-id keys."""
        if mid not in self._has_failed:
            return None
        keys = array_keys(text)
        known = self._failed_keys.get(mid)
        if known is None:
            return keys
        cleared = known.intersection(keys)
        known -= cleared
        return list(cleared) or None

    def record_fatal(self, identity: str, text: str) -> None:
        self._flush()
        with self._tx():
            self.conn.execute("INSERT INTO fatal_error (migration, text) VALUES (?, ?)",
                              (identity, mask_secrets(text)))

    def _fold_journal(self, mid: int, keys: list[str]) -> int:
        """Per-id INSERT OR IGNORE into ``succeeded`` (recovered ids are rare and few: not
        worth the log), after folding the log so that no id is in both tables."""
        with self._tx():
            self._fold(mid)  # normally done by start_migration; so that no id is in both tables
            params = list(zip(repeat(mid), keys))
            if mid in self._has_failed:  # a success clears the record's failure
                self.conn.executemany("DELETE FROM failed WHERE migration = ? AND rid = ?", params)
            added = self.conn.executemany("INSERT OR IGNORE INTO succeeded VALUES (?, ?)", params).rowcount
            if added > 0:  # a batch a crash left unrecorded, not the mark already recorded
                self._count_changes({mid})
        return added

    # --- writing -------------------------------------------------------------------------------

    def _commit(self, ops: list[Op]) -> None:
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
                    self.conn.executemany(UPSERT_FAILED, rows)
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
        A row of 64-bit ints is inserted by SQLite itself (json_each), which is faster than
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
            keys += array_keys(text)
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
            last_error = run_last_error(self._reports)
            self.conn.execute("UPDATE run SET last_error = ?, reports = ? WHERE id = ?",
                              (last_error, reports_json(self._reports), self.run_id))

    def _has_progress(self, key: str) -> bool:
        row = self.conn.execute("SELECT id FROM migration WHERE identity = ?", (key,)).fetchone()
        return row is not None and any(
            self.conn.execute(f"SELECT 1 FROM {table} WHERE migration = ? LIMIT 1", (row[0],)).fetchone()
            for table in ("succeeded", "succeeded_log", "failed"))

    # --- lineage: what each migration writes, how often it wrote, what it read ------------------

    def _count_changes(self, mids: set[int]) -> None:
        """Raise the write count of migrations that recorded successes, once a run, in the
        transaction that records them (a crash cannot separate the two)."""
        for mid in mids - self._changed:
            self.conn.execute("UPDATE migration SET changes = changes + 1 WHERE id = ?", (mid,))
        self._changed |= mids

    def completed(self, key: str) -> bool:
        row = self.conn.execute("SELECT completed FROM migration WHERE identity = ?", (key,)).fetchone()
        return bool(row and row[0])

    def _dest_of(self, key: str) -> str | None:
        row = self.conn.execute("SELECT dest FROM migration WHERE identity = ?", (key,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def _set_dest(self, key: str, dest: str) -> None:
        with self._tx():
            self.conn.execute("INSERT OR IGNORE INTO migration (identity) VALUES (?)", (key,))
            self.conn.execute("UPDATE migration SET dest = ? WHERE identity = ?", (dest, key))

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

    def _delete_progress(self, mid: int, key: str) -> None:
        for table in ("succeeded", "succeeded_log", "failed"):
            self.conn.execute(f"DELETE FROM {table} WHERE migration = ?", (mid,))
        self.conn.execute("DELETE FROM fatal_error WHERE migration = ?", (key,))
        self.conn.execute("UPDATE migration SET in_progress = 0, completed = 0, report = NULL, "
                          "inputs = NULL WHERE id = ?", (mid,))

    def _forgot(self, mid: int, key: str) -> None:
        self._failed_keys[mid] = set()  # the migration's entries are gone, none is queued
        self.partitions(key).remove()

    # --- the whole progress, failed records' actions, the whole content -----------------------

    def progress(self) -> MigrationProgress:
        """The whole progress, what is recorded but not committed yet included."""
        self._flush()
        return super().progress()

    def _set_actions(self, mid: int, ids: Iterable[RecordId] | None, action: Action) -> int:
        if ids is None:
            return int(self.conn.execute("UPDATE failed SET action = ? WHERE migration = ? AND action != ?",
                                         (action.value, mid, action.value)).rowcount)
        return sum(self.conn.execute("UPDATE failed SET action = ? WHERE migration = ? AND rid = ? AND action != ?",
                                     (action.value, mid, encode_id(i), action.value)).rowcount for i in ids)

    # --- the event log and verifications -------------------------------------------------------

    def _insert_event(self, body: str) -> int:
        return inserted(self.conn.execute("INSERT INTO event (body) VALUES (?)", (body,)))

    def _insert_verification(self, ok: bool, body: str) -> None:
        self.conn.execute("INSERT INTO verification (ok, body) VALUES (?, ?)", (int(ok), body))

    @contextmanager
    def replacing(self) -> Iterator[LedgerImport]:
        """Replace the whole content in one transaction (refused while a run holds the lease)."""
        with self._tx():
            self.refuse_if_live()
            for table in ("succeeded", "succeeded_log", "failed", "fatal_error", "migration"):
                self.conn.execute(f"DELETE FROM {table}")
            for cache in (self._ids, self._maybe_done, self._has_failed, self._ignored, self._failed_keys):
                cache.clear()  # keyed by migration ids, which the new content may reuse
            shutil.rmtree(self.path + PARTS_SUFFIX, ignore_errors=True)  # unmerged partitions' progress
            load = LedgerImport(self)
            yield load
            load.finish()

    close = DurableLedger.close  # not the reader's, which comes first


_NOT_INT64 = "SELECT 1 FROM json_each(?) WHERE typeof(value) != 'integer' LIMIT 1"
"""Whether a JSON array has an element SQLite does not read as a 64-bit int (it reads a bigger
int as a float: its text would not be the id's)."""
_FOLD_INT64 = "INSERT OR IGNORE INTO succeeded SELECT ?1, CAST(value AS TEXT) FROM json_each(?2)"
"""A JSON array of 64-bit ints into ``succeeded``: SQLite writes an int's text as Python does."""


PARTS_SUFFIX = ".parts"
"""Beside the ledger's file, the directory of the partitions of runs with workers (:mod:`.parts`)."""
