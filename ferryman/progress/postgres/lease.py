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

import logging
import threading
import time
import uuid
from typing import Any

import psycopg

from ...errors import LeaseLostError, LedgerFileError
from ..lease import Holder, Process, busy_error, holder_alive, stale_limit
from .location import PgLocation
from .schema import NOW, connect

log = logging.getLogger("ferryman")

HEARTBEAT_INTERVAL = 2.0
"""Seconds between two heartbeats (shorter when the stale limit is short)."""


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


class PgLease:
    """The lease of the ledger at ``location``, taken by ``me`` (this process unless told
    otherwise). :meth:`acquire` runs in the caller's transaction, so that the run's first rows
    go with it."""

    def __init__(self, location: PgLocation, me: Process | None = None) -> None:
        self.location = location
        self.name = location.shown
        self.me = me if me is not None else Process.current()
        self.owner = uuid.uuid4().hex
        self.epoch = 0
        self.stale_after = stale_limit()
        self.previous: Holder | None = None
        """The dead holder this lease was taken over from, if any."""
        self.lost: str | None = None
        """Why this lease was lost (noted by the heartbeat or a check); None while held."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

    def _note_lost(self, holder: Holder | None) -> None:
        by = f"{holder.describe()} took it over" if holder is not None else "its lease row was removed"
        self.lost = (f"this run lost the lease of progress ledger {self.name}: {by}; it stopped and "
                     "wrote nothing more (was this process paused for long?)")
        self._stop.set()

    def start_heartbeat(self) -> None:
        interval = min(HEARTBEAT_INTERVAL, self.stale_after / 4)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, args=(interval,), name="ferryman-lease",
                                        daemon=True)
        self._thread.start()

    def _beat(self, interval: float) -> None:
        """Refresh the heartbeat until released or lost, on a connection of its own; a failing
        beat (server away, row locked by a long write) is tried again at the next one, and a
        warning says so once the failures last long enough for another host to think this
        run dead."""
        conn: psycopg.Connection[Any] | None = None
        failing_since: float | None = None
        warned = False
        while not self._stop.wait(interval):
            try:
                if conn is None:
                    conn = connect(self.location, read_only=False)
                    conn.execute(f"SET lock_timeout TO {max(1, int(interval * 1000))}")
                beat = conn.execute(f"UPDATE lease SET heartbeat = {NOW} "
                                    "WHERE singleton = 1 AND owner = %s AND epoch = %s", (self.owner, self.epoch))
                if beat.rowcount == 0:
                    self._note_lost(current_holder(conn))
                failing_since, warned = None, False
            except (psycopg.Error, LedgerFileError) as exc:
                if conn is not None and conn.closed:
                    conn = None
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if not warned and now - failing_since >= self.stale_after / 2:
                    log.warning("the lease heartbeat on %s has failed for %.0f s, still trying: %s",
                                self.name, now - failing_since, exc)
                    warned = True
        if conn is not None:
            conn.close()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def release(self, conn: psycopg.Connection[Any]) -> None:
        """Stop the heartbeat and give the lease back (a lost lease is not ours to touch)."""
        self.stop_heartbeat()
        if self.lost is None:
            conn.execute("DELETE FROM lease WHERE singleton = 1 AND owner = %s AND epoch = %s",
                         (self.owner, self.epoch))
