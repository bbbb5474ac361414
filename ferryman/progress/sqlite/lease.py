"""The lease of an SQLite file: one row naming the run that may write the ledger.

The row lives in the ledger itself, or in ``<file>.json.lock`` beside an mjg JSON progress
file (:class:`LeaseFile`). Who counts as alive is decided by the rules of
:mod:`ferryman.progress.lease`; this module reads and writes the row under them.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ...errors import LeaseLostError, LedgerFileError
from ..lease import HeartbeatLease, Holder, Process, busy_error, holder_alive
from .schema import LEASE_SCHEMA, create, upgrade_lease


def current_holder(conn: sqlite3.Connection) -> Holder | None:
    """The lease row, whatever holds it (alive or not); None when nobody does.

    Reads files of older ferryman versions too (no epoch, no start time).
    """
    cursor = conn.execute("SELECT * FROM lease WHERE singleton = 1")
    row = cursor.fetchone()
    if row is None:
        return None
    values: dict[str, Any] = dict(zip((c[0] for c in cursor.description), row))
    return Holder(values["owner"], values["pid"], values["host"], values["acquired_at"],
                  values["heartbeat"], values.get("epoch") or 0, values.get("started"))


class Lease(HeartbeatLease[sqlite3.Connection]):
    """The lease of the file at ``path``, taken by ``me`` (this process unless told otherwise).

    :meth:`acquire` runs in the caller's ``BEGIN IMMEDIATE`` transaction, so that the ledger's
    own writes go with it; :meth:`assert_held` is the check before each write. The name the
    messages give is ``path`` unless told (a JSON file's lease is in a file beside it).
    """

    beat_errors = (sqlite3.Error,)

    def __init__(self, path: str, me: Process | None = None, name: str | None = None) -> None:
        super().__init__(path if name is None else name, me)
        self.path = path

    def refuse_if_held(self, conn: sqlite3.Connection, doing: str | None = None) -> Holder | None:
        """Raise LedgerBusyError (saying what could not be done: ``doing``, or start a run)
        while a live run holds the lease; else the dead holder, if any.

        Also worth asking before the write transaction of :meth:`acquire`: a holder stopped
        in the middle of a transaction keeps the file's write lock, and reading needs none.
        """
        holder = current_holder(conn)
        if holder is not None and holder_alive(holder, here=self.me.host, now=time.time(),
                                               stale_after=self.stale_after):
            raise busy_error(self.name, holder, doing)
        return holder

    def acquire(self, conn: sqlite3.Connection, doing: str | None = None) -> None:
        """Take the lease in ``conn``'s open IMMEDIATE transaction, or raise LedgerBusyError."""
        self.previous = self.refuse_if_held(conn, doing)
        now = time.time()
        (self.epoch,) = conn.execute(
            "INSERT INTO lease_epoch VALUES (1, 1) ON CONFLICT (singleton) "
            "DO UPDATE SET epoch = epoch + 1 RETURNING epoch").fetchone()
        conn.execute(
            "INSERT OR REPLACE INTO lease (singleton, owner, pid, host, started, epoch, acquired_at, "
            "heartbeat) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
            (self.owner, self.me.pid, self.me.host, self.me.started, self.epoch, now, now),
        )
        self.lost = None

    def assert_held(self, conn: sqlite3.Connection) -> None:
        """Raise :class:`LeaseLostError` unless the lease row still names this owner and epoch.

        One primary-key SELECT: cheap enough before every write. It asks the file even when the
        heartbeat found nothing wrong, because a process that resumes after a pause may write
        before its heartbeat thread runs again.
        """
        if self.lost is None and conn.execute(
                "SELECT 1 FROM lease WHERE singleton = 1 AND owner = ? AND epoch = ?",
                (self.owner, self.epoch)).fetchone() is None:
            self._note_lost(current_holder(conn))
        if self.lost is not None:
            raise LeaseLostError(self.lost)

    def _beat_connection(self, interval: float) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=interval, isolation_level=None)

    def _beat_on(self, conn: sqlite3.Connection) -> bool:
        beat = conn.execute("UPDATE lease SET heartbeat = ? WHERE singleton = 1 AND owner = ? AND epoch = ?",
                            (time.time(), self.owner, self.epoch))
        return beat.rowcount == 1

    def _holder_on(self, conn: sqlite3.Connection) -> Holder | None:
        return current_holder(conn)

    def release(self, conn: sqlite3.Connection) -> None:
        """Stop the heartbeat and give the lease back (a lost lease is not ours to touch)."""
        self.stop_heartbeat()
        if self.lost is None:
            with conn:
                conn.execute("DELETE FROM lease WHERE singleton = 1 AND owner = ? AND epoch = ?",
                             (self.owner, self.epoch))


class LeaseFile:
    """The lease of progress kept where no lease row fits (an mjg JSON file): an SQLite file of
    its own beside it, ``<file>.lock``, kept after release (deleting it could let two runs hold
    two different files). The same rules as a ledger's lease."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = name
        self.lease: Lease | None = None
        self._conn: sqlite3.Connection | None = None

    def acquire(self, doing: str | None = None, heartbeat: bool = True) -> None:
        """Take the lease, or raise LedgerBusyError naming the live holder."""
        lease = Lease(self.path, name=self.name)
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                create(conn, LEASE_SCHEMA)
                upgrade_lease(conn)
                lease.acquire(conn, doing)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self.lease, self._conn = lease, conn
        if heartbeat:
            lease.start_heartbeat()

    def assert_held(self) -> None:
        """Raise LeaseLostError when the lease is held no more; nothing while not taken."""
        if self.lease is not None and self._conn is not None:
            self.lease.assert_held(self._conn)

    def release(self) -> None:
        if self.lease is not None and self._conn is not None:
            try:
                self.lease.release(self._conn)
            finally:
                self._conn.close()
                self.lease, self._conn = None, None

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from exc
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._unusable(exc) from exc
        return conn

    def _unusable(self, exc: sqlite3.DatabaseError) -> LedgerFileError:
        return LedgerFileError(f"cannot use the lock file {self.path} of {self.name}: {exc}")
