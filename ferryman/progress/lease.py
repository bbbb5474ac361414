"""One run at a time per ledger: a lease with owner, pid, host and heartbeat.

A second run on the same ledger is refused while the holder is alive. A holder is dead when its
process is gone (same host) or its heartbeat is older than ``stale_after`` seconds (any host),
and the next run then takes the lease over by itself: no manual repair.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass

from ..errors import LedgerBusyError

HEARTBEAT_INTERVAL = 2.0
STALE_AFTER = 20.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS lease (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    owner TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
    acquired_at REAL NOT NULL, heartbeat REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Holder:
    owner: str
    pid: int
    host: str
    acquired_at: float
    heartbeat: float

    def alive(self, now: float, stale_after: float = STALE_AFTER) -> bool:
        if now - self.heartbeat > stale_after:
            return False
        if self.host != socket.gethostname():
            return True
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (zombies count as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def current_holder(conn: sqlite3.Connection) -> Holder | None:
    row = conn.execute(
        "SELECT owner, pid, host, acquired_at, heartbeat FROM lease WHERE singleton = 1"
    ).fetchone()
    return Holder(*row) if row else None


class Lease:
    """Holds the lease of the ledger at ``path`` and keeps its heartbeat going."""

    def __init__(self, path: str, stale_after: float = STALE_AFTER) -> None:
        self.path = path
        self.owner = uuid.uuid4().hex
        self.stale_after = stale_after
        self.previous: Holder | None = None
        """The dead holder this lease was taken over from, if any."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, conn: sqlite3.Connection) -> None:
        """Take the lease in ``conn``'s open IMMEDIATE transaction, or raise LedgerBusyError."""
        now = time.time()
        holder = current_holder(conn)
        if holder is not None and holder.owner != self.owner and holder.alive(now, self.stale_after):
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.acquired_at))
            raise LedgerBusyError(
                f"progress ledger {self.path} is in use by pid {holder.pid} on {holder.host} "
                f"since {since} (heartbeat {now - holder.heartbeat:.0f}s ago); wait for that run "
                "to end or stop it"
            )
        self.previous = holder if holder is not None and holder.owner != self.owner else None
        conn.execute(
            "INSERT OR REPLACE INTO lease VALUES (1, ?, ?, ?, ?, ?)",
            (self.owner, os.getpid(), socket.gethostname(), now, now),
        )

    def start_heartbeat(self, interval: float = HEARTBEAT_INTERVAL) -> None:
        self._thread = threading.Thread(
            target=self._beat, args=(interval,), name="ferryman-lease", daemon=True
        )
        self._thread.start()

    def _beat(self, interval: float) -> None:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            while not self._stop.wait(interval):
                with conn:
                    conn.execute(
                        "UPDATE lease SET heartbeat = ? WHERE singleton = 1 AND owner = ?",
                        (time.time(), self.owner),
                    )
        except sqlite3.Error:
            pass  # the run notices a lost ledger on its own next write
        finally:
            conn.close()

    def release(self, conn: sqlite3.Connection) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with conn:
            conn.execute("DELETE FROM lease WHERE singleton = 1 AND owner = ?", (self.owner,))
