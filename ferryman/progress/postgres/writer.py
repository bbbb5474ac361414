"""The durable ledger in PostgreSQL: progress in a schema of a database server, that survives
``kill -9`` of the run and is readable from any host that reaches the server.

A checkpoint is one transaction. As in the SQLite ledger, a run appends each page's succeeded
ids as ONE row of ``succeeded_log`` (the JSON array of their ids, the page's journal entry's
text): an indexed row per id made the ledger's commits most of a run's time. The per-id table
``succeeded`` is the lookup index (is this id done?), needed only for what earlier runs did:
:meth:`PostgresLedger.start_migration` first folds the migration's log into it, in one
transaction, a chunk of ids in memory at a time. An id's success is in one of the two tables;
every reader sees both. The commit waits for the server's disk (``synchronous_commit``): once a
checkpoint returned, its pages survive a crash of the run and of the server.

Every transaction a run writes starts by locking the lease row (:mod:`.lease`): a run that lost
the lease writes nothing more. Exactly once is the journal's, as for the SQLite ledger
(:class:`~ferryman.progress.durable.DurableLedger`): a batch committed to the destination with
its journal entry but not recorded here is folded back by :meth:`recover` when the migration
resumes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import psycopg

from ...errors import LedgerFileError, LedgerWriteError
from ...redact import mask_secrets
from ...report import last_error as run_last_error
from ...types import RecordId
from ..codec import array_keys, decode_id, encode_id, encode_ids, failed_fields
from ..durable import DurableLedger, Op, dead_run_error, next_run, reports_json
from ..model import Action, FailedRecord, MigrationProgress
from ..storage import read_errors_named
from .importer import LedgerImport
from .lease import PgLease
from .location import PgLocation
from .reader import LOG_PAGE, PostgresReader
from .schema import (
    NOW,
    SCHEMA_VERSION,
    UPSERT_FAILED,
    connect,
    create,
    drop,
    failed_columns,
    inspect_ledger,
    migration_row,
)

log = logging.getLogger("ferryman")

LOST = (psycopg.OperationalError, psycopg.InternalError)
"""What a write meets when the server or its session is gone (shut down, restarted, the
connection cut, the session ended for idling in a transaction): the ledger cannot be written."""
FOLD_CHUNK = 50_000
"""Ids held in memory at a time while folding a migration's log into ``succeeded``."""


class PostgresLedger(PostgresReader, DurableLedger):
    """Progress in a PostgreSQL schema; one run at a time holds its lease. It reads as a
    :class:`~.reader.PostgresReader` too (what is committed)."""

    def __init__(self, location: str | PgLocation, *, read_only: bool = False) -> None:
        """Open the ledger at ``location`` (a ``postgresql://`` URL), creating its schema and
        tables unless ``read_only``.

        Raises:
            LedgerFileError: before anything is written, when the server cannot be reached, or
                the schema holds another application's tables or a ledger of a newer version.
            FileNotFoundError: ``read_only`` and there is no ledger in the schema.
        """
        location = PgLocation.parse(location) if isinstance(location, str) else location
        self.read_only = read_only
        self.lease: PgLease | None = None
        self.lost_lease: str | None = None
        """Why this ledger's run lost its lease, kept after the run: it then writes nothing more."""
        conn = connect(location, read_only=read_only)
        try:
            with read_errors_named(location.shown, psycopg.Error):
                version = inspect_ledger(conn, location)
            if version is None and read_only:
                raise FileNotFoundError(2, "no progress ledger in schema " + location.schema, location.shown)
            if version != SCHEMA_VERSION and not read_only:
                try:
                    with conn.transaction():
                        create(conn, location)
                except psycopg.Error as exc:  # no right to create the schema, say
                    raise LedgerFileError(f"cannot create progress ledger {location.shown} "
                                          f"(schema {location.schema}): {exc}") from exc
            super().__init__(conn, location, exists=True)
            self.uid = self._meta("uid")
        except BaseException:
            conn.close()
            raise
        self.journal_owner = self.uid
        self.run_id: int | None = None
        self._ids: dict[str, int] = {}
        self._init_queue()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One transaction; during a run it first locks the lease row and checks the run still
        holds it (:class:`~ferryman.errors.LeaseLostError` otherwise: nothing is written). A
        failed write or commit (server gone, disk full) rolls back and raises
        :class:`LedgerWriteError`; nothing of the transaction is kept."""
        try:
            with self.conn.transaction():
                if self.lease is not None:
                    self.lease.assert_held(self.conn, lock=True)
                yield
        except LOST as exc:
            raise LedgerWriteError(f"cannot write progress ledger {self.path}: {exc}") from exc

    def _mid(self, identity: str) -> int:
        mid = self._ids.get(identity)
        if mid is None:
            mid = self.migration_id(identity)
            if mid is None:
                with self._tx():
                    mid = migration_row(self.conn, identity)
            elif self.has_rows("failed", mid):
                self._has_failed.add(mid)
            self._ids[identity] = mid
        return mid

    # --- runs and the lease ------------------------------------------------------------------

    lease_errors = (psycopg.Error,)

    def _new_lease(self) -> PgLease:
        lease = PgLease(self.location)
        with self._reading():
            lease.refuse_if_held(self.conn)
        return lease

    def _record_run_start(self, lease: PgLease) -> int:
        lease.acquire(self.conn)
        dead = lease.previous
        if dead is not None:
            self.conn.execute(f"UPDATE run SET outcome = 'died', ended_at = {NOW}, last_error = %s "
                              "WHERE outcome IS NULL", (dead_run_error(dead.pid, dead.host),))
        job, attempt = next_run(self.conn.execute("SELECT job, attempt, outcome FROM run ORDER BY id DESC LIMIT 1")
                                .fetchone())
        row = self.conn.execute(
            f"INSERT INTO run (job, attempt, started_at, pid, host) VALUES (%s, %s, {NOW}, %s, %s) RETURNING id",
            (job, attempt, os.getpid(), socket.gethostname())).fetchone()
        assert row is not None
        return int(row[0])

    def _record_run_end(self, outcome: str, last_error: str | None, reports: str) -> None:
        self.conn.execute(f"UPDATE run SET ended_at = {NOW}, outcome = %s, last_error = %s, reports = %s WHERE id = %s",
                          (outcome, last_error, reports, self.run_id))

    def _connection_lost(self) -> bool:
        return bool(self.conn.closed)

    def assert_held(self) -> None:
        """Raise LeaseLostError when this run's lease was taken over (one primary-key SELECT)."""
        if self.lease is not None:
            try:
                self.lease.assert_held(self.conn)
            except LOST as exc:
                raise LedgerWriteError(f"cannot read progress ledger {self.path}: {exc}") from exc

    # --- the Ledger interface ---------------------------------------------------------------

    def start_migration(self, identity: str) -> None:
        mid = self._mid(identity)
        with self._tx():
            self.conn.execute("UPDATE migration SET in_progress = true, completed = false WHERE id = %s", (mid,))
            if self.run_id is not None:
                name = next((r.name for r in self._reports if r.identity == identity), identity)
                self.conn.execute("UPDATE run SET step = %s WHERE id = %s", (name, self.run_id))
            self._fold(mid)
        if self.has_rows("succeeded", mid):
            self._maybe_done.add(mid)
        if self.has_rows("failed", mid):
            self._has_failed.add(mid)
        self._ignored[mid] = {decode_id(r[0]) for r in self._rows(
            "SELECT rid FROM failed WHERE migration = %s AND action = 'IGNORE'", (mid,))}

    def finish_migration(self, identity: str, completed: bool) -> None:
        self._flush()  # raises when it cannot commit: then the journal must stay as it is
        self._clean_journal(identity)
        if completed:
            with self._tx():
                self.conn.execute("UPDATE migration SET in_progress = false, completed = true WHERE id = %s",
                                  (self._mid(identity),))

    def succeeded_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        mid = self._mid(identity)
        if mid not in self._maybe_done:
            return set()
        if any(kind == "f" and m == mid for kind, m, _ in self._ops):
            self._flush()  # a pending failure takes its id out of ``succeeded``
        return {decode_id(k) for k in self.present("succeeded", mid, list(map(encode_id, ids)))}

    def retry_ids(self, identity: str) -> list[RecordId]:
        self._flush()
        return [decode_id(r[0]) for r in self._rows(
            "SELECT rid FROM failed WHERE migration = %s AND action = 'RETRY' ORDER BY seq", (self._mid(identity),))]

    def record(self, identity: str, succeeded: Sequence[RecordId], failed: Sequence[FailedRecord]) -> None:
        """Queue the page for the next commit."""
        mid = self._mid(identity)
        if succeeded:
            self.record_encoded(identity, self._journaled_text(identity, succeeded) or encode_ids(succeeded))
        self._journaled.clear()
        if failed:
            self._ops.append(("f", mid, [failed_fields(f) for f in failed]))
            self._has_failed.add(mid)

    def record_encoded(self, identity: str, text: str) -> None:
        mid = self._mid(identity)
        # Only a migration with failed entries pays for per-id keys (to delete those entries).
        self._ops.append(("s", mid, (text, array_keys(text) if mid in self._has_failed else None)))

    def record_fatal(self, identity: str, text: str) -> None:
        self._flush()
        with self._tx():
            self.conn.execute("INSERT INTO fatal_error (migration, text) VALUES (%s, %s)",
                              (identity, mask_secrets(text)))

    # --- writing -------------------------------------------------------------------------------

    def _commit(self, ops: list[Op]) -> None:
        with self._tx():
            changed = set()
            for kind, mid, rows in ops:
                if kind == "s":
                    text, keys = rows
                    if keys is not None:  # a success clears the record's failure
                        self.conn.execute("DELETE FROM failed WHERE migration = %s AND rid = ANY(%s)", (mid, keys))
                    self.conn.execute("INSERT INTO succeeded_log (migration, ids) VALUES (%s, %s)", (mid, text))
                    changed.add(mid)
                else:
                    columns = failed_columns(rows)
                    self.conn.execute("DELETE FROM succeeded WHERE migration = %s AND rid = ANY(%s)",
                                      (mid, columns[0]))
                    self.conn.execute(UPSERT_FAILED, (mid, *columns))
            self._count_changes(changed)
            if self.lease is not None:
                self._write_reports()

    def _fold(self, mid: int) -> int:
        """Move the migration's ``succeeded_log`` rows into ``succeeded``; how many ids.

        Runs inside the caller's transaction, FOLD_CHUNK ids in memory at a time. ON CONFLICT
        DO NOTHING keeps an id once whatever the log repeats; an id failed after it was logged
        (its failed entry is newer: a success deletes the entry) is left out, as per id.
        """
        last, folded = 0, 0
        keys: list[str] = []
        while True:
            logged = self.conn.execute("SELECT seq, ids FROM succeeded_log WHERE migration = %s AND seq > %s "
                                       "ORDER BY seq LIMIT %s", (mid, last, LOG_PAGE)).fetchall()
            for _, text in logged:
                keys += array_keys(text)
            if logged:
                last = logged[-1][0]
            if len(keys) >= FOLD_CHUNK or (keys and len(logged) < LOG_PAGE):
                self.conn.execute("INSERT INTO succeeded SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING",
                                  (mid, keys))
                folded += len(keys)
                keys = []
            if len(logged) < LOG_PAGE:
                break
        if last:
            self.conn.execute("DELETE FROM succeeded_log WHERE migration = %s AND seq <= %s", (mid, last))
            if mid in self._has_failed:
                self.conn.execute("DELETE FROM succeeded s USING failed f WHERE s.migration = %s "
                                  "AND f.migration = s.migration AND f.rid = s.rid", (mid,))
        return folded

    def _fold_journal(self, mid: int, keys: list[str]) -> int:
        with self._tx():
            self._fold(mid)  # normally done by start_migration; so that no id is in both tables
            if mid in self._has_failed:
                self.conn.execute("DELETE FROM failed WHERE migration = %s AND rid = ANY(%s)", (mid, keys))
            added = self.conn.execute("INSERT INTO succeeded SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING",
                                      (mid, keys)).rowcount
            if added > 0:  # a batch a crash left unrecorded, not the mark already recorded
                self._count_changes({mid})
        return added

    def _write_reports(self) -> None:
        for report in self._reports:
            mid = self._ids.get(report.identity)
            if mid is not None:
                self.conn.execute("UPDATE migration SET report = %s WHERE id = %s",
                                  (json.dumps(report.to_dict()), mid))
        if self.run_id is not None:
            self.conn.execute("UPDATE run SET last_error = %s, reports = %s WHERE id = %s",
                              (run_last_error(self._reports), reports_json(self._reports), self.run_id))

    def _has_progress(self, key: str) -> bool:
        mid = self.migration_id(key)
        return mid is not None and any(self.has_rows(table, mid) for table in ("succeeded", "succeeded_log", "failed"))

    # --- lineage ------------------------------------------------------------------------------

    def _count_changes(self, mids: set[int]) -> None:
        """Raise the write count of migrations that recorded successes, once a run, in the
        transaction that records them."""
        for mid in mids - self._changed:
            self.conn.execute("UPDATE migration SET changes = changes + 1 WHERE id = %s", (mid,))
        self._changed |= mids

    def _dest_of(self, key: str) -> str | None:
        rows = self._rows("SELECT dest FROM migration WHERE identity = %s", (key,))
        return None if not rows or rows[0][0] is None else str(rows[0][0])

    def _set_dest(self, key: str, dest: str) -> None:
        with self._tx():
            migration_row(self.conn, key)
            self.conn.execute("UPDATE migration SET dest = %s WHERE identity = %s", (dest, key))

    def completed(self, key: str) -> bool:
        rows = self._rows("SELECT completed FROM migration WHERE identity = %s", (key,))
        return bool(rows and rows[0][0])

    def lineage(self) -> dict[str, tuple[str | None, int]]:
        return {key: (dest, changes) for key, dest, changes in
                self._rows("SELECT identity, dest, changes FROM migration ORDER BY id")}

    def inputs(self, key: str) -> dict[str, int] | None:
        rows = self._rows("SELECT inputs FROM migration WHERE identity = %s", (key,))
        return None if not rows or rows[0][0] is None else dict(json.loads(rows[0][0]))

    def note_inputs(self, key: str, inputs: dict[str, int]) -> None:
        with self._tx():
            self.conn.execute("UPDATE migration SET inputs = %s WHERE id = %s",
                              (json.dumps(inputs, sort_keys=True), self._mid(key)))

    def _delete_progress(self, mid: int, key: str) -> None:
        for table in ("succeeded", "succeeded_log", "failed"):
            self.conn.execute(f"DELETE FROM {table} WHERE migration = %s", (mid,))
        self.conn.execute("DELETE FROM fatal_error WHERE migration = %s", (key,))
        self.conn.execute("UPDATE migration SET in_progress = false, completed = false, report = NULL, "
                          "inputs = NULL WHERE id = %s", (mid,))

    def _forgot(self, mid: int, key: str) -> None:
        with self.partitions(key) as parts:
            parts.remove()

    # --- the whole progress, failed records' actions, the whole content -----------------------

    def progress(self) -> MigrationProgress:
        """The whole progress, what is recorded but not committed yet included."""
        self._flush()
        return super().progress()

    def _set_actions(self, mid: int, ids: Iterable[RecordId] | None, action: Action) -> int:
        if ids is None:
            return self.conn.execute("UPDATE failed SET action = %s WHERE migration = %s AND action != %s",
                                     (action.value, mid, action.value)).rowcount
        return self.conn.execute(
            "UPDATE failed SET action = %s WHERE migration = %s AND rid = ANY(%s) AND action != %s",
            (action.value, mid, list({encode_id(i): None for i in ids}), action.value)).rowcount

    # --- the event log and verifications -------------------------------------------------------

    def _insert_event(self, body: str) -> int:
        row = self.conn.execute("INSERT INTO event (body) VALUES (%s) RETURNING seq", (body,)).fetchone()
        assert row is not None
        return int(row[0])

    def _insert_verification(self, ok: bool, body: str) -> None:
        self.conn.execute("INSERT INTO verification (ok, body) VALUES (%s, %s)", (ok, body))

    @contextmanager
    def replacing(self) -> Iterator[LedgerImport]:
        """Replace the whole content in one transaction (refused while a run holds the lease)."""
        with self._tx():
            self.refuse_if_live()
            self.conn.execute("TRUNCATE succeeded, succeeded_log, failed, fatal_error, migration")
            from .parts import drop_every_partition  # which builds on this module

            drop_every_partition(self.conn, self.location.schema)  # unmerged partitions' progress
            for cache in (self._ids, self._maybe_done, self._has_failed, self._ignored):
                cache.clear()  # keyed by migration ids, which the new content may reuse
            load = LedgerImport(self)
            yield load
            load.finish()

    close = DurableLedger.close  # not the reader's, which comes first


def drop_ledger(location: str | PgLocation) -> None:
    """Remove a ledger a command created and gave up before any work (see :func:`~.schema.drop`)."""
    location = PgLocation.parse(location) if isinstance(location, str) else location
    conn = connect(location, read_only=False)
    try:
        with conn.transaction():
            drop(conn, location)
    except psycopg.Error as exc:
        raise LedgerFileError(f"cannot remove progress ledger {location.shown}: {exc}") from exc
    finally:
        conn.close()
