"""Where the status server gets its snapshots: a progress ledger on disk, or a run in this process.

:class:`LedgerStatusSource` backs ``ferryman serve --progress PATH``: a process of its own that
watches an SQLite ledger (or a PostgreSQL one, from any host) across restarts of the runs,
reading it through read-only connections (it never writes and never takes the lease). It also
reads mjg ``.json`` progress files, which keep no run history: for those it can only say
``pending``, ``failed`` or ``migrated``, and ``try_count`` is 0; live status across processes
needs a ledger.

:class:`LiveStatusSource` backs ``ferryman run --serve``: an observer of the one run in this
process, live to the record.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple, Protocol

from ..errors import FerrymanError
from ..events import RunObserver
from ..progress.files import is_ledger_file, is_postgres_location, load_json_progress, open_reader
from ..progress.ledger import Ledger
from ..progress.model import Action, FailedRecord, display_name
from ..progress.partitions import partition_status
from ..progress.reader import LedgerReader, search_failed
from ..report import MigrationReport, RunResult, last_error
from .failed import FailedQuery, page_body
from .status import (
    FAILED_RECORDS_SHOWN,
    RUNS_SHOWN,
    LedgerView,
    Status,
    StatusSnapshot,
    failed_record_dict,
    fix_dead_runs,
    ledger_migrations,
    ledger_status,
    newest_failures,
    not_completed,
    run_is_alive,
    snapshot_of_progress,
)


class StatusSource(Protocol):
    """Anything that can say, at any instant, how the migration stands.

    A source that can also search its failed records has ``failed_page(query: FailedQuery)``,
    which returns the body of ``GET /migrate/failed`` (:func:`~.failed.page_body`) and raises
    InputError for a migration the progress does not know.
    """

    def snapshot(self) -> StatusSnapshot: ...

    def version(self) -> Hashable:
        """Differs from every earlier value once the status changed in a way a snapshot taken
        before would hide (a run started or ended); cheap: the server asks at every request."""
        ...

    def events(self, after: int, limit: int) -> list[dict[str, Any]]:
        """The event log, oldest first: at most ``limit`` events whose ``seq`` is above ``after``."""
        ...

    def verification(self) -> dict[str, Any] | None:
        """The newest verification result, None when there is none."""
        ...


def reader_page(reader: LedgerReader, query: FailedQuery) -> dict[str, Any]:
    """:func:`~.failed.page_body` of a search through ``reader``, in one snapshot of it."""
    with reader.snapshot():
        page = reader.failed_page(migration=query.migration, text=query.text, offset=query.offset,
                                  limit=query.limit)
        return page_body(page, reader.names(), query)


# --- reading a durable ledger ---------------------------------------------------------------------


def read_view(reader: LedgerReader) -> LedgerView:
    """What the status needs of a ledger, read in one snapshot of it: the newest runs, the
    newest failed records and the counts, never all the records."""
    with reader.snapshot():
        runs = reader.runs(RUNS_SHOWN)
        view = LedgerView(runs=[run.to_dict() for run in runs], holder=reader.holder())
        if runs:
            view.reports = reader.run_reports(runs[0].id)
        migrations = reader.migrations()
        view.migrations = [{"identity": m.identity, "in_progress": m.in_progress, "completed": m.completed,
                            "report": m.report} for m in migrations]
        names = {m.identity: m.name for m in migrations}
        names.update((r["identity"], r["name"]) for r in view.reports)
        view.failed_counts = reader.failed_counts()
        view.failed_records = [_failure_dict(names.get(identity) or display_name(identity), record)
                               for identity, record in reader.newest_failed(FAILED_RECORDS_SHOWN)]
        view.fatal_count = reader.fatal_count()
        view.last_fatal = next(iter(reader.fatal_errors(1)), None)
    view.partitions = partition_status(reader, names)
    return view


def read_ledger(path: str) -> LedgerView:
    """:func:`read_view` of the ledger at ``path``, on a read-only connection of its own.

    Raises LedgerFileError for a file that is not a ferryman ledger or of a newer schema.
    """
    with open_reader(path) as reader:
        return read_view(reader)


# --- the sources ---------------------------------------------------------------------------------


DURABLE = ("sqlite", "postgres")
"""The kinds of progress that are ledgers with a reader (not mjg JSON)."""


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
        self._watcher: LedgerReader | None = None
        """A PostgreSQL ledger's reader kept for :meth:`version` (asked at every request)."""
        if self._kind() in DURABLE:
            view = self._view()
            if view.runs:
                self._baseline = view.runs[0]["id"]
                if run_is_alive(view):
                    self._seen_running.add(view.runs[0]["id"])

    def _kind(self) -> str:
        if is_postgres_location(self.path):
            return "postgres"
        if os.path.exists(self.path) and os.path.getsize(self.path) == 0:
            return "empty"  # an SQLite file being created: no header yet
        return "sqlite" if is_ledger_file(self.path) else "json"

    def version(self) -> Hashable:
        """The state of the file and of its write-ahead log: every commit changes one of them.
        Of a PostgreSQL ledger: its newest run, how it ended, and who holds the lease."""
        if self._kind() != "postgres":
            return _file_state(self.path), _file_state(self.path + "-wal")
        with self._lock:
            try:
                if self._watcher is None:
                    self._watcher = open_reader(self.path)
                runs = self._watcher.runs(1)
                holder = self._watcher.holder()
            except FerrymanError:
                if self._watcher is not None:
                    self._watcher.close()
                    self._watcher = None
                return None  # the snapshot says why
        run = runs[0] if runs else None
        return (run.id, run.outcome) if run else None, holder.owner if holder else None

    def _there(self) -> bool:
        """Whether there is progress to read (a PostgreSQL schema without a ledger reads as empty)."""
        return self._kind() == "postgres" or os.path.exists(self.path)

    def _view(self) -> LedgerView:
        return read_ledger(self.path) if self._there() else LedgerView()

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
            view.failed_total, view.partitions,
        )

    def failed_page(self, query: FailedQuery) -> dict[str, Any]:
        """The failed records a search chose: through the ledger's reader, or from an mjg JSON
        file read whole (it keeps no order of failure: newest first by timestamp)."""
        kind = self._kind()
        if kind in DURABLE and self._there():
            with open_reader(self.path) as reader:
                return reader_page(reader, query)
        if kind == "json" and os.path.exists(self.path):
            progress = load_json_progress(self.path)
            names = {identity: display_name(identity) for identity in progress.migrations}
            newest_first = sorted(progress.failed_records(), key=lambda pair: pair[1].timestamp, reverse=True)
            page = search_failed(newest_first, names, self.path, migration=query.migration,
                                 text=query.text, offset=query.offset, limit=query.limit)
            return page_body(page, names, query)
        return page_body(search_failed([], {}, self.path, migration=query.migration), {}, query)

    def events(self, after: int, limit: int) -> list[dict[str, Any]]:
        """From the ledger (mjg JSON progress keeps no events)."""
        if self._kind() not in DURABLE or not self._there():
            return []
        with open_reader(self.path) as reader:
            return reader.events(after, limit)

    def verification(self) -> dict[str, Any] | None:
        if self._kind() not in DURABLE or not self._there():
            return None
        with open_reader(self.path) as reader:
            return reader.verification()

    def _json_snapshot(self) -> StatusSnapshot:
        st = os.stat(self.path)
        key = (st.st_mtime_ns, st.st_size)
        cached = self._json_cache
        if cached is not None and cached[0] == key:
            snap = cached[1]
        else:
            snap = snapshot_of_progress(load_json_progress(self.path))
            self._json_cache = (key, snap)
        return StatusSnapshot(snap.status, snap.step, snap.last_err, snap.try_count, snap.migrations,
                              snap.runs, snap.failed_records, snap.failed_total)


class LiveStatusSource(RunObserver):
    """The status of the run in this process; add it as an observer of the MigrationService.

    With a durable ledger (a :class:`~ferryman.progress.reader.LedgerReader`: the SQLite
    ledger) as ``ledger``, the run history, the failed records and ``try_count`` come from the
    ledger (so a manual re-run of an unfinished job counts as a retry); otherwise from this
    process's runs alone, with ``try_count`` as told by :meth:`attempt_started`.
    """

    def __init__(self, ledger: Ledger | None = None) -> None:
        self._lock = threading.Lock()
        self._ledger = ledger
        self._durable = ledger if isinstance(ledger, LedgerReader) else None
        self._status = Status.PENDING
        self._step: str | None = None
        self._last_err: str | None = None
        self._attempt = 0
        self._ledger_attempt: int | None = None
        self._reports: Sequence[MigrationReport] = ()
        self._runs: list[dict[str, Any]] = []
        self._failed: dict[tuple[str, str], _KeptFailure] = {}
        self._failed_total = 0
        self._revision = 0
        """Counts the status changes: running, completed, failed."""

    # --- events (on the run's thread) -----------------------------------------------------------

    def attempt_started(self, attempt: int) -> None:
        with self._lock:
            self._revision += 1
            self._attempt = attempt
            if self._ledger_attempt is not None and self._status is Status.FAILED:
                self._ledger_attempt += 1  # what the ledger will count; run_started confirms it
            self._status = Status.RUNNING

    def run_started(self, reports: Sequence[MigrationReport]) -> None:
        ledger_attempt = None
        if self._durable is not None:
            try:  # the newest run is this one: it holds the lease
                with self._durable.new_reader() as reader:
                    ledger_attempt = next((run.attempt for run in reader.runs(1)), None)
            except FerrymanError:  # never fail the run for the status page; snapshots will tell
                pass
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
        if self._durable is not None:
            return  # snapshots read the failed records from the ledger
        with self._lock:  # the newest last, at most FAILED_RECORDS_SHOWN of them
            key = (report.identity, repr(failure.id))
            if self._failed.pop(key, None) is None:
                self._failed_total += 1
            self._failed[key] = _KeptFailure(report.identity, report.name, failure)
            if len(self._failed) > FAILED_RECORDS_SHOWN:
                del self._failed[next(iter(self._failed))]

    def run_finished(self, result: RunResult) -> None:
        failed, total = self._ledger_failures(result.reports)
        last_err = last_error(result.reports)
        unfinished = self._unfinished() if result.ok else []
        if unfinished:  # this run (--only) completed, the job has not
            last_err = not_completed(unfinished)
        if result.callback_errors:
            last_err = f"progress persistence failed: {result.callback_errors[-1]}"
        if not result.ok and last_err is None:
            last_err = (f"interrupted by {result.interrupted}; progress saved, run again to resume"
                        if result.interrupted else "the run did not complete")
        with self._lock:
            self._revision += 1
            self._status = Status.COMPLETED if result.ok and not unfinished else Status.FAILED
            self._last_err = last_err
            self._failed, self._failed_total = failed, total
            if self._runs:
                self._runs[0].update(ended_at=time.time(), last_error=last_err, outcome=(
                    "completed" if result.ok else "interrupted" if result.interrupted else "failed"))

    def retrying(self, result: RunResult, max_tries: int, delay: float) -> None:
        """Between two attempts the job is not over: ``running``, with the attempt's last error,
        so that a client that stops at ``failed`` does not take a pause for the end."""
        with self._lock:
            self._revision += 1
            self._status = Status.RUNNING

    def _unfinished(self) -> list[str]:
        """The names of the migrations the run's ledger holds and has not seen completed
        (read on the run's thread, where it is safe)."""
        if self._ledger is None:
            return []
        try:
            return [display_name(i) for i in self._ledger.identities() if not self._ledger.completed(i)]
        except FerrymanError:  # never fail the run for the status page
            return []

    def _ledger_failures(
        self, reports: Sequence[MigrationReport]
    ) -> tuple[dict[tuple[str, str], _KeptFailure], int]:
        """Failed records of a ledger without a reader (read on the run's thread, where it is safe)."""
        if self._ledger is None or self._durable is not None:
            return dict(self._failed), self._failed_total
        found: dict[tuple[str, str], _KeptFailure] = {}
        names = {r.identity: r.name for r in reports}
        pairs = self._ledger.progress().failed_records()
        for identity, record in reversed(newest_failures(pairs)):  # the newest last
            name = names.get(identity) or display_name(identity)
            found[(identity, repr(record.id))] = _KeptFailure(identity, name, record)
        return found, len(pairs)

    # --- the event log and verifications (on the server's thread) ----------------------------

    def events(self, after: int, limit: int) -> list[dict[str, Any]]:
        """The run's ledger's (a durable one read on a connection of the server's own)."""
        if self._durable is not None:
            with self._durable.new_reader() as reader:
                return reader.events(after, limit)
        return [] if self._ledger is None else self._ledger.events(after, limit)

    def verification(self) -> dict[str, Any] | None:
        if self._durable is not None:
            with self._durable.new_reader() as reader:
                return reader.verification()
        return None if self._ledger is None else self._ledger.verification()

    # --- the snapshot (on the server's thread) --------------------------------------------------

    def version(self) -> int:
        return self._revision

    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            status, step, last_err = self._status, self._step, self._last_err
            migrations = [r.to_dict() for r in self._reports]
            if status is Status.RUNNING:
                last_err = last_error(self._reports) or last_err
            try_count = self._ledger_attempt or self._attempt
            runs = [dict(r) for r in self._runs]
            failed = [_failure_dict(kept.name, kept.record) for kept in reversed(self._failed.values())]
            failed_total = self._failed_total
        partitions: list[dict[str, Any]] = []
        if self._durable is not None:
            with self._durable.new_reader() as reader:
                view = read_view(reader)
            alive = status is Status.RUNNING
            runs = fix_dead_runs(view, alive)
            failed, failed_total = view.failed_records, view.failed_total
            partitions = view.partitions
        return StatusSnapshot(status.value, step, last_err, try_count, migrations, runs, failed,
                              failed_total, partitions)


    def failed_page(self, query: FailedQuery) -> dict[str, Any]:
        """From the ledger when it is durable; else from the newest failed records this source
        keeps (FAILED_RECORDS_SHOWN of them: ``partial`` says when there are more)."""
        if self._durable is not None:
            with self._durable.new_reader() as reader:
                return reader_page(reader, query)
        with self._lock:
            kept = list(reversed(self._failed.values()))
            partial = self._failed_total > len(kept)
            names = {r.identity: r.name for r in self._reports}
        names.update((k.identity, k.name) for k in kept)
        page = search_failed([(k.identity, k.record) for k in kept], names, "this run",
                             migration=query.migration, text=query.text, offset=query.offset,
                             limit=query.limit)
        return page_body(page, names, query, partial=partial)


class _KeptFailure(NamedTuple):
    """A failed record a live source keeps, with its migration."""

    identity: str
    name: str
    record: FailedRecord


def _file_state(path: str) -> tuple[int, int, int] | None:
    """None for a file that is not there or cannot be seen (the snapshot then says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _failure_dict(migration: str, failure: FailedRecord) -> dict[str, Any]:
    return failed_record_dict(migration, failure.id, failure.description, failure.cause,
                              Action(failure.action).value, failure.timestamp.isoformat())
