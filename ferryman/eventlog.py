"""The event log: one event per status change of a run, kept in the ledger and, on request, in
a JSON Lines file (``ferryman run --events FILE``, ``MigrationService.run(events=...)``).

Events, each ``{"seq", "event", "time", ...}`` (``time`` in UTC, ISO 8601):

- ``run.started`` (``attempt``, ``migrations``); ``run.completed``, ``run.failed`` (also when
  the run timed out: ``timed_out``), ``run.stopped`` (a signal: ``interrupted``), each with
  ``attempt``, ``last_err`` and the run's ``counts``; ``run.retrying`` between two attempts
  (``attempt``, ``max_tries``, ``delay``);
- ``migration.started`` (``migration``, ``total``); ``migration.completed``,
  ``migration.failed``, ``migration.stopped``, each with ``counts`` and ``last_err``;
  ``migration.held_back`` (``held_back_by``, ``reason``);
- written by the ledger itself, outside runs: ``records.marked`` (failed records marked IGNORE
  or RETRY: ``migration``, ``action``, ``count``) and ``migration.reset``;
- ``verification.passed`` / ``verification.failed`` (:meth:`MigrationService.verify`).

:class:`EventLog` is a :class:`~ferryman.events.RunObserver`: the service adds one to every run.
An event that cannot be written (a full disk) is logged, never fatal to the run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import IO, Any

from .events import RunObserver
from .progress.ledger import Ledger, new_event
from .report import MigrationReport, MigrationState, RunResult, last_error

log = logging.getLogger("ferryman")

COUNTS = ("read", "succeeded", "failed", "skipped", "ignored", "written")
"""The counters an event of a migration or a run carries."""

_ENDS = {MigrationState.COMPLETED: "completed", MigrationState.FAILED: "failed",
         MigrationState.INTERRUPTED: "stopped"}


def counts_of(reports: Sequence[MigrationReport]) -> dict[str, int]:
    """The counters of ``reports``, added up."""
    return {name: sum(getattr(r, name) for r in reports) for name in COUNTS}


class EventLog(RunObserver):
    """Writes each status change of the runs it observes as an event: to ``ledger`` (which
    gives it its ``seq``) and, one JSON line each, to ``file`` (a path, appended to, or an open
    text stream, left open)."""

    def __init__(self, ledger: Ledger | None = None, file: str | os.PathLike[str] | IO[str] | None = None) -> None:
        self.ledger = ledger
        self._own = isinstance(file, (str, os.PathLike))
        self._file: IO[str] | None = (
            open(file, "a", encoding="utf-8") if isinstance(file, (str, os.PathLike)) else file)  # noqa: SIM115
        self._seq = 0
        self._attempt = 1
        self._ended: set[str] = set()
        self._problem: str | None = None

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one event (the fields that are None left out); the event as written."""
        event = new_event(kind, **fields)
        seq = None
        if self.ledger is not None:
            try:
                seq = self.ledger.record_event(event)
            except Exception as exc:  # noqa: BLE001 - the event log never stops a run
                self._warn(f"progress ledger: {exc}")
        self._seq = seq if seq is not None else self._seq + 1
        event = {"seq": self._seq, **event}
        if self._file is not None:
            try:
                self._file.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
                self._file.flush()
            except (OSError, ValueError) as exc:
                self._warn(f"event file: {exc}")
        return event

    def _warn(self, problem: str) -> None:
        if problem != self._problem:  # once, not at every event
            log.warning("could not write an event to the %s", problem)
            self._problem = problem

    def close(self) -> None:
        """Close the file, when this log opened it."""
        if self._own and self._file is not None:
            self._file.close()
            self._file = None

    # --- a run's events -------------------------------------------------------------------------

    def attempt_started(self, attempt: int) -> None:
        self._attempt = attempt

    def run_started(self, reports: Sequence[MigrationReport]) -> None:
        self._ended.clear()
        self.emit("run.started", attempt=self._attempt, migrations=[r.name for r in reports])

    def migration_started(self, report: MigrationReport) -> None:
        self.emit("migration.started", migration=report.name, total=report.total)

    def migration_finished(self, report: MigrationReport) -> None:
        end = _ENDS.get(report.state)
        if end is None or report.identity in self._ended:
            return
        self._ended.add(report.identity)
        self.emit(f"migration.{end}", migration=report.name, counts=counts_of([report]),
                  last_err=report.fatal_error or report.last_error)

    def migration_held_back(self, report: MigrationReport) -> None:
        self.emit("migration.held_back", migration=report.name, held_back_by=report.held_back_by or None,
                  reason=report.held_back_reason)

    def run_finished(self, result: RunResult) -> None:
        for report in result.reports:  # those a stop or a timeout ended before their own end
            self.migration_finished(report)
        kind = "run.completed" if result.ok else "run.stopped" if result.interrupted else "run.failed"
        self.emit(kind, attempt=self._attempt, counts=counts_of(result.reports),
                  last_err=result.timed_out or result.ledger_error or last_error(result.reports),
                  interrupted=result.interrupted, timed_out=bool(result.timed_out) or None)

    def retrying(self, result: RunResult, max_tries: int, delay: float) -> None:
        self.emit("run.retrying", attempt=result.attempts, max_tries=max_tries, delay=delay)
