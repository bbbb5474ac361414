"""One run at a time per ledger: who holds a ledger's lease, and whether that run still lives.

A lease names its holder (owner, epoch, pid, process start time, host, heartbeat); where it is
kept is the ledger's business (:mod:`ferryman.progress.sqlite.lease` keeps it as a row of the
SQLite file). The rules live in :func:`holder_alive` and nowhere else:

- On the holder's own host, the holder is alive while its process is: the pid exists and
  started when the lease says (a reused pid is another process). The heartbeat does not count
  there: a process stopped by Ctrl-Z, SIGSTOP, a closed laptop lid or a paused VM is alive and
  goes on writing when it resumes, so its lease is never taken.
- A holder on another host cannot be asked; it is alive while its heartbeat is younger than the
  stale limit: ``FERRYMAN_LEASE_STALE_AFTER`` seconds in the environment, default 20.
- Every acquisition takes the next epoch (epochs never repeat in a ledger, releases included),
  and the holder keeps its owner token and epoch. A holder that no longer finds both in the
  lease has lost it and must write nothing more (:class:`~ferryman.errors.LeaseLostError`).
  The epoch is what a destination would compare to refuse the writes of an older holder.

A dead holder's lease is taken over by the next run by itself: no manual repair.

:class:`HeartbeatLease` is what a holder does the same on every ledger (its token and epoch, the
heartbeat thread, the note of a loss); each ledger's lease module keeps the row in its database.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ..errors import FerrymanError, LedgerBusyError

log = logging.getLogger("ferryman")


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)
"""The connection a lease's heartbeat keeps (sqlite3's, psycopg's)."""

STALE_AFTER = 20.0
"""Seconds without a heartbeat after which a holder on another host counts as dead."""
STALE_AFTER_ENV = "FERRYMAN_LEASE_STALE_AFTER"


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
    """Who holds a lease, since when, and the epoch it took."""

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


def busy_error(path: str, holder: Holder, doing: str | None = None) -> LedgerBusyError:
    """The refusal to use the ledger at ``path`` (for ``doing``) while ``holder`` is alive."""
    prefix = f"cannot {doing}: " if doing else ""
    advice = "wait for that run to end or stop it"
    if holder.host == socket.gethostname() and time.time() - holder.heartbeat > stale_limit():
        advice = (f"that process seems stopped (Ctrl-Z, SIGSTOP, a paused machine): resume it "
                  f"(fg, kill -CONT {holder.pid}) or end it")
    return LedgerBusyError(f"{prefix}progress ledger {path} is in use by {holder.describe()}; {advice}")


HEARTBEAT_INTERVAL = 2.0
"""Seconds between two heartbeats (shorter when the stale limit is short)."""


class HeartbeatLease(ABC, Generic[C]):
    """What a lease's holder does the same whatever database keeps the lease row: its token,
    epoch and state, the note of a loss, and the heartbeat thread on a connection of its own
    (``C``). Each ledger's lease supplies that connection and the row's statements."""

    beat_errors: tuple[type[BaseException], ...] = ()
    """What a failing beat raises: tried again at the next beat."""

    def __init__(self, name: str, me: Process | None = None) -> None:
        self.name = name
        """The progress the messages name."""
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

    @abstractmethod
    def _beat_connection(self, interval: float) -> C:
        """A connection for the heartbeat alone."""

    @abstractmethod
    def _beat_on(self, conn: C) -> bool:
        """Refresh the row's heartbeat if it still names this owner and epoch (False: it did not)."""

    @abstractmethod
    def _holder_on(self, conn: C) -> Holder | None:
        """Whoever the row names now (None: no row)."""

    @abstractmethod
    def release(self, conn: C) -> None:
        """Stop the heartbeat and give the lease back (a lost lease is not ours to touch)."""

    @staticmethod
    def _usable(conn: C) -> bool:
        """Whether the heartbeat's connection may serve the next beat after a failure."""
        return True

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
        """Refresh the heartbeat until released or lost. A failing beat (a locked file, a
        server away, a row locked by a long write) is tried again at the next one; a warning
        says so once the failures last long enough for another host to think this run dead."""
        conn: C | None = None
        failing_since: float | None = None
        warned = False
        while not self._stop.wait(interval):
            try:
                if conn is None:
                    conn = self._beat_connection(interval)
                if not self._beat_on(conn):
                    self._note_lost(self._holder_on(conn))
                failing_since, warned = None, False
            except self.beat_errors as exc:
                if conn is not None and not self._usable(conn):
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
