"""The lease of a PostgreSQL ledger: one row naming the run that may write it.

Who counts as alive is decided by the rules of :mod:`ferryman.progress.lease`. Times are taken
on the database's clock (:data:`~.schema.NOW`) and read back on this host's: a holder on another
host is judged by how long ago, on one clock, it last beat.

Every ledger transaction of the holder starts with :meth:`PgLease.assert_held`, which locks the
lease row ``FOR SHARE``: a run taking the lease over updates the row, so it waits for the
holder's transaction in flight, and once it committed the holder's next transaction finds
another owner and writes nothing (:class:`~ferryman.errors.LeaseLostError`).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from ...errors import LeaseLostError, LedgerFileError
from ..lease import HeartbeatLease, Holder, Process, busy_error, holder_alive
from .location import PgLocation
from .schema import NOW, connect


def current_holder(conn: psycopg.Connection[Any]) -> Holder | None:
    """The lease row, whatever holds it (alive or not), its times on this host's clock; None
    when nobody does."""
    row = conn.execute("SELECT owner, pid, host, acquired_at, heartbeat, epoch, started, "
                       f"{NOW} FROM lease WHERE singleton = 1").fetchone()
    if row is None:
        return None
    owner, pid, host, acquired_at, heartbeat, epoch, started, db_now = row
    shift = time.time() - float(db_now)  # this host's clock minus the database's
    return Holder(owner, pid, host, acquired_at + shift, heartbeat + shift, epoch, started)


class PgLease(HeartbeatLease["psycopg.Connection[Any]"]):
    """The lease of the ledger at ``location``, taken by ``me`` (this process unless told
    otherwise). :meth:`acquire` runs in the caller's transaction, so that the run's first rows
    go with it. The heartbeat's connection waits for a row lock at most one beat."""

    beat_errors = (psycopg.Error, LedgerFileError)

    def __init__(self, location: PgLocation, me: Process | None = None) -> None:
        super().__init__(location.shown, me)
        self.location = location

    def refuse_if_held(self, conn: psycopg.Connection[Any], doing: str | None = None) -> Holder | None:
        """Raise LedgerBusyError while a live run holds the lease; else the dead holder, if any."""
        holder = current_holder(conn)
        if holder is not None and holder_alive(holder, here=self.me.host, now=time.time(),
                                               stale_after=self.stale_after):
            raise busy_error(self.name, holder, doing)
        return holder

    def acquire(self, conn: psycopg.Connection[Any], doing: str | None = None) -> None:
        """Take the lease in ``conn``'s open transaction, or raise LedgerBusyError.

        Acquisitions are serialised by an advisory lock on the schema's name, and the holder's
        write in flight (its ``FOR SHARE`` lock) is waited for."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ferryman lease {self.location.schema}",))
        self.previous = self.refuse_if_held(conn, doing)
        row = conn.execute("INSERT INTO lease_epoch VALUES (1, 1) ON CONFLICT (singleton) "
                           "DO UPDATE SET epoch = lease_epoch.epoch + 1 RETURNING epoch").fetchone()
        assert row is not None
        self.epoch = int(row[0])
        conn.execute(
            "INSERT INTO lease (singleton, owner, pid, host, started, epoch, acquired_at, heartbeat) "
            f"VALUES (1, %s, %s, %s, %s, %s, {NOW}, {NOW}) ON CONFLICT (singleton) DO UPDATE SET "
            "owner = excluded.owner, pid = excluded.pid, host = excluded.host, started = excluded.started, "
            "epoch = excluded.epoch, acquired_at = excluded.acquired_at, heartbeat = excluded.heartbeat",
            (self.owner, self.me.pid, self.me.host, self.me.started, self.epoch))
        self.lost = None

    def assert_held(self, conn: psycopg.Connection[Any], *, lock: bool = False) -> None:
        """Raise :class:`LeaseLostError` unless the lease row still names this owner and epoch.

        ``lock``: inside a write transaction, lock the row ``FOR SHARE`` until it ends, so that
        no takeover commits in between. It asks the database even when the heartbeat found
        nothing wrong: a process that resumes after a pause may write before its heartbeat runs.
        """
        if self.lost is None and conn.execute(
                "SELECT 1 FROM lease WHERE singleton = 1 AND owner = %s AND epoch = %s"
                + (" FOR SHARE" if lock else ""), (self.owner, self.epoch)).fetchone() is None:
            self._note_lost(current_holder(conn))
        if self.lost is not None:
            raise LeaseLostError(self.lost)

    def _beat_connection(self, interval: float) -> psycopg.Connection[Any]:
        conn = connect(self.location, read_only=False)
        conn.execute(f"SET lock_timeout TO {max(1, int(interval * 1000))}")
        return conn

    def _beat_on(self, conn: psycopg.Connection[Any]) -> bool:
        beat = conn.execute(f"UPDATE lease SET heartbeat = {NOW} WHERE singleton = 1 AND owner = %s AND epoch = %s",
                            (self.owner, self.epoch))
        return beat.rowcount == 1

    def _holder_on(self, conn: psycopg.Connection[Any]) -> Holder | None:
        return current_holder(conn)

    @staticmethod
    def _usable(conn: psycopg.Connection[Any]) -> bool:
        return not conn.closed

    def release(self, conn: psycopg.Connection[Any]) -> None:
        """Stop the heartbeat and give the lease back (a lost lease is not ours to touch)."""
        self.stop_heartbeat()
        if self.lost is None:
            conn.execute("DELETE FROM lease WHERE singleton = 1 AND owner = %s AND epoch = %s",
                         (self.owner, self.epoch))
