"""Where the status server gets its snapshots: a progress ledger on disk, or a run in this process.

:class:`LedgerStatusSource` backs ``ferryman serve --progress PATH``: a process of its own that
watches an SQLite ledger across restarts of the runs, reading it through read-only connections
(it never writes and never takes the lease). It also reads mjg ``.json`` progress files, which
keep no run history: for those it can only say ``pending``, ``failed`` or ``migrated``, and
``try_count`` is 0; live status across processes needs the SQLite ledger.

:class:`LiveStatusSource` backs ``ferryman run --serve``: an observer of the one run in this
process, live to the record.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Hashable, Protocol, Sequence

from ..errors import FerrymanError, LedgerFileError
from ..events import RunObserver
from ..progress.lease import current_holder
from ..progress.ledger import Ledger
from ..progress.model import Action, FailedRecord, MigrationProgress
from ..progress.sqlite_ledger import SqliteLedger, decode_id, inspect_ledger, is_ledger_file
from ..report import MigrationReport, RunResult
from .status import (
    FAILED_RECORDS_SHOWN, RUNS_SHOWN, LedgerView, Status, StatusSnapshot, display_name,
    failed_record_dict, fix_dead_runs, ledger_migrations, ledger_status, newest_failures,
    run_is_alive, snapshot_of_progress,
)


class StatusSource(Protocol):
    """Anything that can say, at any instant, how the migration stands."""

    def snapshot(self) -> StatusSnapshot: ...

    def version(self) -> Hashable:
        """Differs from every earlier value once the status changed in a way a snapshot taken
        before would hide (a run started or ended); cheap: the server asks at every request."""
        ...


# --- reading an SQLite ledger --------------------------------------------------------------------


def read_ledger(path: str) -> LedgerView:
    """Read the ledger at ``path`` in one read-only transaction (an empty file: nothing yet).

    Raises LedgerFileError for a file that is not a ferryman ledger or of a newer schema.
    """
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, timeout=5,
                           isolation_level=None, check_same_thread=False)
    try:
        conn.execute("BEGIN")
        view = _read(conn) if inspect_ledger(conn, path) else LedgerView()
        conn.execute("COMMIT")
        return view
    finally:
        conn.close()


def _read(conn: sqlite3.Connection) -> LedgerView:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    view = LedgerView()
    if "run" in tables:
        rows = conn.execute(
            "SELECT id, job, attempt, started_at, ended_at, outcome, pid, host, step, last_error "
            "FROM run ORDER BY id DESC LIMIT ?", (RUNS_SHOWN,)).fetchall()
        keys = ("id", "job", "attempt", "started_at", "ended_at", "outcome", "pid", "host", "step",
                "last_error")
        view.runs = [dict(zip(keys, row)) for row in rows]
        if rows:
            (reports,) = conn.execute("SELECT reports FROM run WHERE id = ?", (rows[0][0],)).fetchone()
            view.reports = json.loads(reports) if reports else []
    if "lease" in tables:
        view.holder = current_holder(conn)
    if "migration" not in tables:
        return view
    view.migrations = [
        {"identity": i, "in_progress": bool(p), "completed": bool(c),
         "report": json.loads(r) if r else None}
        for i, p, c, r in conn.execute(
            "SELECT identity, in_progress, completed, report FROM migration ORDER BY id")
    ]
    names = {m["identity"]: m["report"]["name"] for m in view.migrations if m["report"]}
    names.update((r["identity"], r["name"]) for r in view.reports)
    if "failed" in tables:
        counts = _KEPT_COUNTS if "failed_count" in tables else _COUNTED
        for identity, action, count in conn.execute(counts):
            view.failed_counts.setdefault(identity, {})[action] = count
        view.failed_records = [
            failed_record_dict(names.get(identity) or display_name(identity), decode_id(rid), d, c, a, t)
            for identity, rid, d, c, a, t in conn.execute(
                "SELECT m.identity, f.rid, f.description, f.cause, f.action, f.timestamp "
                "FROM failed f JOIN migration m ON m.id = f.migration ORDER BY f.seq DESC LIMIT ?",
                (FAILED_RECORDS_SHOWN,))
        ]
    if "fatal_error" in tables:
        view.fatal_count = conn.execute("SELECT count(*) FROM fatal_error").fetchone()[0]
        row = conn.execute("SELECT text FROM fatal_error ORDER BY seq DESC LIMIT 1").fetchone()
        view.last_fatal = row[0] if row else None
    return view


_KEPT_COUNTS = ("SELECT m.identity, c.action, c.n FROM failed_count c JOIN migration m "
                "ON m.id = c.migration WHERE c.n > 0")
"""Failed records per migration and action, as the ledger's triggers keep them."""
_COUNTED = ("SELECT m.identity, f.action, count(*) FROM failed f JOIN migration m "
            "ON m.id = f.migration GROUP BY m.identity, f.action")
"""The same, counted: for a ledger no ferryman with those counters has written to yet."""


# --- the sources ---------------------------------------------------------------------------------


class LedgerStatusSource:
    """The status of the progress at ``path``, read afresh at every snapshot.

    ``path`` is an SQLite ledger (any path not ending in ``.json``) or an mjg ``.json`` file.
    A path with nothing there yet is ``pending``. A run that started after this source was
    created, or that it saw running, ends as ``completed``; a completion it did not watch is
    ``migrated``. An unreadable file raises :class:`~ferryman.errors.FerrymanError`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._seen_running: set[int] = set()
        self._json_cache: tuple[tuple[int, int], StatusSnapshot] | None = None
        self._lock = threading.Lock()
        self._baseline = 0
        if self._kind() == "sqlite":
            view = self._view()
            if view.runs:
                self._baseline = view.runs[0]["id"]
                if run_is_alive(view):
                    self._seen_running.add(view.runs[0]["id"])

    def _kind(self) -> str:
        if not os.path.exists(self.path):
            return "json" if self.path.lower().endswith(".json") else "sqlite"
        if os.path.getsize(self.path) == 0:
            return "empty"  # an SQLite file being created: no header yet
        return "sqlite" if is_ledger_file(self.path) else "json"

    def version(self) -> Hashable:
        """The state of the file and of its write-ahead log: every commit changes one of them."""
        return _file_state(self.path), _file_state(self.path + "-wal")

    def _view(self) -> LedgerView:
        try:
            return read_ledger(self.path) if os.path.exists(self.path) else LedgerView()
        except sqlite3.Error as exc:
            raise LedgerFileError(f"cannot read progress ledger {self.path}: {exc}") from exc

    def snapshot(self) -> StatusSnapshot:
        kind = self._kind()
        if kind == "empty" or (kind == "json" and not os.path.exists(self.path)):
            return StatusSnapshot(Status.PENDING.value)
        if kind == "json":
            return self._json_snapshot()
        view = self._view()
        alive = run_is_alive(view)
        with self._lock:
            run = view.last_run
            if run is not None and alive:
                self._seen_running.add(run["id"])
            watched = run is not None and (run["id"] > self._baseline or run["id"] in self._seen_running)
        status, last_err = ledger_status(view, alive, watched)
        return StatusSnapshot(
            status.value, run["step"] if run else None, last_err, run["attempt"] if run else 0,
            ledger_migrations(view, alive), fix_dead_runs(view, alive), view.failed_records,
            view.failed_total,
        )

    def _json_snapshot(self) -> StatusSnapshot:
        st = os.stat(self.path)
        key = (st.st_mtime_ns, st.st_size)
        cached = self._json_cache
        if cached is not None and cached[0] == key:
            snap = cached[1]
        else:
            snap = snapshot_of_progress(MigrationProgress.load(self.path))
            self._json_cache = (key, snap)
        return StatusSnapshot(snap.status, snap.step, snap.last_err, snap.try_count, snap.migrations,
                              snap.runs, snap.failed_records, snap.failed_total)


class LiveStatusSource(RunObserver):
    """The status of the run in this process; add it as an observer of the MigrationService.

    With the run's :class:`~ferryman.progress.sqlite_ledger.SqliteLedger` as ``ledger``, the run
    history, the failed records and ``try_count`` come from the ledger file (so a manual re-run
    of an unfinished job counts as a retry); otherwise from this process's runs alone, with
    ``try_count`` as told by :meth:`attempt_started`.
    """

    def __init__(self, ledger: Ledger | None = None) -> None:
        self._lock = threading.Lock()
        self._ledger = ledger
        self._path = ledger.path if isinstance(ledger, SqliteLedger) else None
        self._status = Status.PENDING
        self._step: str | None = None
        self._last_err: str | None = None
        self._attempt = 0
        self._ledger_attempt: int | None = None
        self._reports: Sequence[MigrationReport] = ()
        self._runs: list[dict[str, Any]] = []
        self._failed: dict[tuple[str, str], dict[str, Any]] = {}
        self._failed_total = 0
        self._revision = 0
        """Counts the status changes: running, completed, failed."""

    # --- events (on the run's thread) -----------------------------------------------------------

    def attempt_started(self, attempt: int) -> None:
        """The CLI's retry manager starts attempt ``attempt`` (1, 2, ...) of the job."""
        with self._lock:
            self._revision += 1
            self._attempt = attempt
            if self._ledger_attempt is not None and self._status is Status.FAILED:
                self._ledger_attempt += 1  # what the ledger will count; run_started confirms it
            self._status = Status.RUNNING

    def run_started(self, reports: Sequence[MigrationReport]) -> None:
        ledger_attempt = None
        if self._path is not None and isinstance(self._ledger, SqliteLedger):
            run_id = self._ledger.run_id
            try:
                view = read_ledger(self._path)
            except sqlite3.Error:  # never fail the run for the status page; snapshots will tell
                view = LedgerView()
            ledger_attempt = next((r["attempt"] for r in view.runs if r["id"] == run_id), None)
        failed, total = self._ledger_failures(reports)
        with self._lock:
            self._revision += 1
            self._status = Status.RUNNING
            self._reports = reports
            self._last_err = None
            self._attempt = max(self._attempt, 1)
            self._ledger_attempt = ledger_attempt
            self._failed, self._failed_total = failed, total
            self._runs.insert(0, {
                "id": len(self._runs) + 1, "job": 1, "attempt": self._attempt,
                "started_at": time.time(), "ended_at": None, "outcome": None,
                "pid": os.getpid(), "host": socket.gethostname(), "step": None, "last_error": None,
            })

    def migration_started(self, report: MigrationReport) -> None:
        with self._lock:
            self._step = report.name
            if self._runs:
                self._runs[0]["step"] = report.name

    def record_failed(self, report: MigrationReport, failure: FailedRecord) -> None:
        if self._path is not None:
            return  # snapshots read the failed records from the ledger file
        with self._lock:  # the newest last, at most FAILED_RECORDS_SHOWN of them
            key = (report.identity, repr(failure.id))
            if self._failed.pop(key, None) is None:
                self._failed_total += 1
            self._failed[key] = _failure_dict(report.name, failure)
            if len(self._failed) > FAILED_RECORDS_SHOWN:
                del self._failed[next(iter(self._failed))]

    def run_finished(self, result: RunResult) -> None:
        failed, total = self._ledger_failures(result.reports)
        last_err = _last_error(result.reports)
        if result.callback_errors:
            last_err = f"progress persistence failed: {result.callback_errors[-1]}"
        if not result.ok and last_err is None:
            last_err = (f"interrupted by {result.interrupted}; progress saved, run again to resume"
                        if result.interrupted else "the run did not complete")
        with self._lock:
            self._revision += 1
            self._status = Status.COMPLETED if result.ok else Status.FAILED
            self._last_err = last_err
            self._failed, self._failed_total = failed, total
            if self._runs:
                self._runs[0].update(ended_at=time.time(), last_error=last_err, outcome=(
                    "completed" if result.ok else "interrupted" if result.interrupted else "failed"))

    def _ledger_failures(
        self, reports: Sequence[MigrationReport]
    ) -> tuple[dict[tuple[str, str], dict[str, Any]], int]:
        """Failed records of a non-SQLite ledger (read on the run's thread, where it is safe)."""
        if self._ledger is None or self._path is not None:
            return dict(self._failed), self._failed_total
        found: dict[tuple[str, str], dict[str, Any]] = {}
        names = {r.identity: r.name for r in reports}
        pairs = self._ledger.progress().failed_records()
        for identity, record in reversed(newest_failures(pairs)):  # the newest last
            name = names.get(identity) or display_name(identity)
            found[(identity, repr(record.id))] = _failure_dict(name, record)
        return found, len(pairs)

    # --- the snapshot (on the server's thread) --------------------------------------------------

    def version(self) -> int:
        return self._revision

    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            status, step, last_err = self._status, self._step, self._last_err
            migrations = [r.to_dict() for r in self._reports]
            if status is Status.RUNNING:
                last_err = _last_error(self._reports) or last_err
            try_count = self._ledger_attempt or self._attempt
            runs = [dict(r) for r in self._runs]
            failed, failed_total = list(reversed(self._failed.values())), self._failed_total
        if self._path is not None and os.path.exists(self._path):
            try:
                view = read_ledger(self._path)
            except sqlite3.Error as exc:
                raise FerrymanError(f"cannot read progress ledger {self._path}: {exc}") from exc
            alive = status is Status.RUNNING
            runs = fix_dead_runs(view, alive)
            failed, failed_total = view.failed_records, view.failed_total
        return StatusSnapshot(status.value, step, last_err, try_count, migrations, runs, failed,
                              failed_total)


def _file_state(path: str) -> tuple[int, int, int] | None:
    """None for a file that is not there or cannot be seen (the snapshot then says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _last_error(reports: Sequence[MigrationReport]) -> str | None:
    for report in reversed(reports):
        if report.fatal_error or report.last_error:
            return report.fatal_error or report.last_error
    return None


def _failure_dict(migration: str, failure: FailedRecord) -> dict[str, Any]:
    return failed_record_dict(migration, failure.id, failure.description, failure.cause,
                              Action(failure.action).value, failure.timestamp.isoformat())
