"""One run at a time per ledger: a lease naming its holder, and the rules for taking it.

The lease is one row (owner, epoch, pid, process start time, host, heartbeat) in an SQLite
file: the ledger itself, or ``<file>.json.lock`` beside an mjg JSON progress file. The rules
live in :func:`holder_alive` and nowhere else:

- On the holder's own host, the holder is alive while its process is: the pid exists and
  started when the lease says (a reused pid is another process). The heartbeat does not count
  there: a process stopped by Ctrl-Z, SIGSTOP, a closed laptop lid or a paused VM is alive and
  goes on writing when it resumes, so its lease is never taken.
- A holder on another host cannot be asked; it is alive while its heartbeat is younger than the
  stale limit: ``FERRYMAN_LEASE_STALE_AFTER`` seconds in the environment, default 20.
- Every acquisition takes the next epoch (epochs never repeat in a file, releases included),
  and the holder keeps its owner token and epoch. A holder that no longer finds both in the
  lease row has lost the lease and must write nothing more (:class:`LeaseLostError`). The
  epoch is what a destination would compare to refuse the writes of an older holder.

A dead holder's lease is taken over by the next run by itself: no manual repair.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import FerrymanError, LeaseLostError, LedgerBusyError, LedgerFileError

log = logging.getLogger("ferryman")

HEARTBEAT_INTERVAL = 2.0
"""Seconds between two heartbeats (shorter when the stale limit is short)."""
STALE_AFTER = 20.0
"""Seconds without a heartbeat after which a holder on another host counts as dead."""
STALE_AFTER_ENV = "FERRYMAN_LEASE_STALE_AFTER"

SCHEMA = """
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
TABLES = frozenset({"lease", "lease_epoch"})
_LATER_COLUMNS = {"epoch": "INTEGER NOT NULL DEFAULT 0", "started": "TEXT"}
"""Columns files made before epochs lack; :func:`upgrade` adds them."""


def upgrade(conn: sqlite3.Connection) -> None:
    """Add the columns a lease table made by an older ferryman lacks (in the caller's transaction)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(lease)")}
    for name, declaration in _LATER_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE lease ADD COLUMN {name} {declaration}")


def stale_limit() -> float:
    """The stale limit: ``FERRYMAN_LEASE_STALE_AFTER`` seconds, else :data:`STALE_AFTER`."""
    text = os.environ.get(STALE_AFTER_ENV, "").strip()
    if not text:
        return STALE_AFTER
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise FerrymanError(f"{STALE_AFTER_ENV}={text!r} is not a number of seconds above 0")
    return value


# --- processes ------------------------------------------------------------------------------


def process_start(pid: int) -> str | None:
    """When the live process ``pid`` started, as ``<boot id>:<clock ticks since boot>``
    (``/proc/<pid>/stat`` field 22): another process that reuses the pid has another start.

    None when no such process runs (a zombie has ended); "" when it runs but ``/proc`` cannot
    say when it started (not Linux).
    """
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return None
    except PermissionError:
        pass  # it exists, under another user
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else ""  # gone meanwhile, or no /proc at all
    except (OSError, IndexError):
        return ""
    if fields[0] in ("Z", "X"):  # fields[0] is field 3, the state
        return None
    return f"{_boot_id()}:{fields[19]}"


@functools.cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Process:
    """A process as a lease names it."""

    pid: int
    host: str
    started: str | None
    """:func:`process_start` of the pid when the lease was taken; None when unknown."""

    @classmethod
    def current(cls) -> Process:
        pid = os.getpid()
        return cls(pid, socket.gethostname(), process_start(pid) or None)


@dataclass(frozen=True)
class Holder:
    """The lease row: who holds the lease, since when, and the epoch it took."""

    owner: str
    pid: int
    host: str
    acquired_at: float
    heartbeat: float
    epoch: int = 0
    started: str | None = None

    def alive(self, now: float | None = None, stale_after: float | None = None,
              here: str | None = None) -> bool:
        """:func:`holder_alive` as seen from this process's host, now."""
        return holder_alive(
            self, here=socket.gethostname() if here is None else here,
            now=time.time() if now is None else now,
            stale_after=stale_limit() if stale_after is None else stale_after,
        )

    def describe(self, now: float | None = None) -> str:
        """``pid 12 on db1 since 2026-12-07 03:00:00 (last heartbeat 3 s ago)``."""
        now = time.time() if now is None else now
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.acquired_at))
        return (f"pid {self.pid} on {self.host} since {since} "
                f"(last heartbeat {max(0.0, now - self.heartbeat):.0f} s ago)")


def holder_alive(holder: Holder, *, here: str, now: float, stale_after: float,
                 start_of: Callable[[int], str | None] = process_start) -> bool:
    """Whether the lease ``holder`` still belongs to a live run, judged on host ``here``.

    The rules of the module docstring; ``start_of`` is :func:`process_start`.
    """
    if holder.host != here:
        return now - holder.heartbeat <= stale_after
    started = start_of(holder.pid)
    if started is None:
        return False
    return not holder.started or not started or started == holder.started


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


def live_holder(conn: sqlite3.Connection) -> Holder | None:
    """The holder of the lease when a live run holds it; None when the file is free to use.

    The one answer to "is this ledger in use by a live run?".
    """
    holder = current_holder(conn)
    return holder if holder is not None and holder.alive() else None


def busy_error(path: str, holder: Holder, doing: str | None = None) -> LedgerBusyError:
    """The refusal to use the ledger at ``path`` (for ``doing``) while ``holder`` is alive."""
    prefix = f"cannot {doing}: " if doing else ""
    advice = "wait for that run to end or stop it"
    if holder.host == socket.gethostname() and time.time() - holder.heartbeat > stale_limit():
        advice = (f"that process seems stopped (Ctrl-Z, SIGSTOP, a paused machine): resume it "
                  f"(fg, kill -CONT {holder.pid}) or end it")
    return LedgerBusyError(f"{prefix}progress ledger {path} is in use by {holder.describe()}; {advice}")


# --- holding the lease ----------------------------------------------------------------------


class Lease:
    """The lease of the file at ``path``, taken by ``me`` (this process unless told otherwise).

    :meth:`acquire` runs in the caller's ``BEGIN IMMEDIATE`` transaction, so that the ledger's
    own writes go with it; :meth:`assert_held` is the check before each write.
    """

    def __init__(self, path: str, me: Process | None = None, name: str | None = None) -> None:
        self.path = path
        self.name = path if name is None else name
        """The progress file the messages name (a JSON file's lease is in a file beside it)."""
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
        """Refresh the heartbeat until released or lost.

        A locked or busy file is tried again at the next beat; a warning says so once the
        failures last long enough for another host to think this run dead.
        """
        conn: sqlite3.Connection | None = None
        failing_since: float | None = None
        warned = False
        while not self._stop.wait(interval):
            try:
                if conn is None:
                    conn = sqlite3.connect(self.path, timeout=interval, isolation_level=None)
                beat = conn.execute(
                    "UPDATE lease SET heartbeat = ? WHERE singleton = 1 AND owner = ? AND epoch = ?",
                    (time.time(), self.owner, self.epoch))
                if beat.rowcount == 0:
                    self._note_lost(current_holder(conn))
                failing_since, warned = None, False
            except sqlite3.Error as exc:
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
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
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
