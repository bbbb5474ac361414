"""Ledger files in tests: read through the package's read API, changed as only others change them.

:mod:`ferryman.progress.sqlite` owns the ledger's tables, and tests read them through its read
API (:class:`~ferryman.progress.sqlite.SqliteReader`), as the status server and the CLI do.
What no ferryman of this version writes (a file of an older schema, a heartbeat an hour old, a
holder whose process is gone) is made here, in SQL, and only here.

Importable from tests as ``import ledger_files`` (``pythonpath = ["tests"]``).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from ferryman.progress.lease import Holder, Process
from ferryman.progress.reader import RunRecord
from ferryman.progress.sqlite import Lease, SqliteReader


def reader(path: str | os.PathLike[str]) -> SqliteReader:
    """A read-only reader of the ledger at ``path`` (close it, or use it in ``with``)."""
    return SqliteReader.open(os.fspath(path))


def runs(path: str | os.PathLike[str]) -> list[RunRecord]:
    """The run history, oldest first."""
    with reader(path) as ledger:
        return ledger.runs()[::-1]


def row_counts(path: str | os.PathLike[str]) -> dict[str, int]:
    with reader(path) as ledger:
        return ledger.row_counts()


def holder(path: str | os.PathLike[str]) -> Holder | None:
    with reader(path) as ledger:
        return ledger.holder()


def take_lease(path: str | os.PathLike[str], me: Process, stale_after: float | None = None) -> Lease:
    """Take the lease of the ledger (or lock file) at ``path`` as ``me`` would, through the
    lease's own API; ``stale_after`` is ``me``'s stale limit."""
    lease = Lease(os.fspath(path), me=me)
    if stale_after is not None:
        lease.stale_after = stale_after
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            lease.acquire(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return lease


def dump(path: str | os.PathLike[str]) -> str:
    """The whole content as SQL text: equal dumps, equal content."""
    with closing(sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)) as conn:
        return "\n".join(conn.iterdump())


# --- what only another program, an older ferryman or time does ---------------------------------


def _change(path: str | os.PathLike[str], *statements: str, params: tuple[object, ...] = ()) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        for statement in statements:
            conn.execute(statement, params if "?" in statement else ())


def age_heartbeat(path: str | os.PathLike[str], seconds: float) -> None:
    """As if the holder had not beaten for ``seconds`` more (its process stopped meanwhile)."""
    _change(path, "UPDATE lease SET heartbeat = heartbeat - ?", params=(seconds,))


def hand_lease_to(path: str | os.PathLike[str], pid: int, owner: str | None = None) -> None:
    """As if the lease had been taken by process ``pid`` (``owner``: another owner token)."""
    _change(path, "UPDATE lease SET pid = ?", params=(pid,))
    if owner is not None:
        _change(path, "UPDATE lease SET owner = ?", params=(owner,))


def set_schema(path: str | os.PathLike[str], version: str) -> None:
    """As if a ferryman of ledger schema ``version`` had written the file."""
    _change(path, "UPDATE meta SET value = ? WHERE key = 'schema'", params=(version,))


def as_version_1(path: str | os.PathLike[str], *encoded_ids: str) -> None:
    """What version 1 wrote: succeeded ids one row each (``encoded_ids``, for every migration),
    no log table."""
    _change(path, "DROP TABLE succeeded_log")
    for encoded in encoded_ids:
        _change(path, "INSERT INTO succeeded SELECT id, ? FROM migration", params=(encoded,))
    set_schema(path, "1")


def as_version_3(path: str | os.PathLike[str]) -> None:
    """What version 3 wrote: no event log, no verification results."""
    _change(path, "DROP TABLE event", "DROP TABLE verification")
    set_schema(path, "3")


def as_version_2_held_by(path: str | os.PathLike[str], pid: int, host: str) -> None:
    """What version 2 wrote: a lease without epoch nor start time, held by ``pid`` on ``host``
    since the epoch of time."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript("""
            DROP TABLE lease; DROP TABLE lease_epoch;
            CREATE TABLE lease (singleton INTEGER PRIMARY KEY CHECK (singleton = 1), owner TEXT NOT NULL,
                pid INTEGER NOT NULL, host TEXT NOT NULL, acquired_at REAL NOT NULL, heartbeat REAL NOT NULL);
            UPDATE meta SET value = '2' WHERE key = 'schema';
        """)
        conn.execute("INSERT INTO lease VALUES (1, 'old', ?, ?, 0, 0)", (pid, host))


def without_failure_counters(path: str | os.PathLike[str], *deleted_failures: str) -> None:
    """As a ferryman before the failure counters left the file; then, as it could, delete the
    failed records of these encoded ids (no trigger counts it)."""
    _change(path, *(f"DROP TRIGGER {name}" for name in
                    ("failed_count_insert", "failed_count_delete", "failed_count_update")),
            "DROP TABLE failed_count", "DROP INDEX failed_seq")
    for encoded in deleted_failures:
        _change(path, "DELETE FROM failed WHERE rid = ?", params=(encoded,))
