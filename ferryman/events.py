"""Hooks for watching a run live: progress bars, the status server, metrics.

Observers are called on the run's thread; they must be quick and must not raise (an exception
from an observer is logged and the observer is dropped, the run goes on).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .progress.model import FailedRecord
from .report import MigrationReport, RunResult

log = logging.getLogger("ferryman")


class RunObserver:
    """Override the events you care about; every method does nothing by default.

    A run with retries (``MigrationService.run(max_tries=...)``) is several attempts: each
    begins with :meth:`attempt_started`, then the events of one run; between two attempts,
    :meth:`retrying`.
    """

    def attempt_started(self, attempt: int) -> None: ...

    def run_started(self, reports: Sequence[MigrationReport]) -> None: ...

    def migration_started(self, report: MigrationReport) -> None: ...

    def page_done(self, report: MigrationReport) -> None: ...

    def record_failed(self, report: MigrationReport, failure: FailedRecord) -> None: ...

    def migration_finished(self, report: MigrationReport) -> None: ...

    def migration_held_back(self, report: MigrationReport) -> None:
        """The migration will not run in this run: it reads what a migration that failed
        writes, or what changed since it last ran (``report.held_back_by`` and
        ``report.held_back_reason`` say which)."""

    def run_finished(self, result: RunResult) -> None: ...

    def retrying(self, result: RunResult, max_tries: int, delay: float) -> None:
        """Attempt ``result.attempts`` of ``max_tries`` did not complete; the next starts in
        ``delay`` seconds."""


class Observers(RunObserver):
    """Fans each event out to many observers, dropping one that raises."""

    def __init__(self, observers: Sequence[RunObserver] = ()) -> None:
        self._observers = list(observers)

    def add(self, observer: RunObserver) -> None:
        self._observers.append(observer)

    def remove(self, observer: RunObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def _emit(self, event: str, *args: object) -> None:
        for observer in list(self._observers):
            try:
                getattr(observer, event)(*args)
            except Exception:
                log.exception("observer %r failed on %s; it is switched off", observer, event)
                self._observers.remove(observer)

    def attempt_started(self, attempt: int) -> None:
        self._emit("attempt_started", attempt)

    def run_started(self, reports: Sequence[MigrationReport]) -> None:
        self._emit("run_started", reports)

    def migration_started(self, report: MigrationReport) -> None:
        self._emit("migration_started", report)

    def page_done(self, report: MigrationReport) -> None:
        self._emit("page_done", report)

    def record_failed(self, report: MigrationReport, failure: FailedRecord) -> None:
        self._emit("record_failed", report, failure)

    def migration_finished(self, report: MigrationReport) -> None:
        self._emit("migration_finished", report)

    def migration_held_back(self, report: MigrationReport) -> None:
        self._emit("migration_held_back", report)

    def run_finished(self, result: RunResult) -> None:
        self._emit("run_finished", result)

    def retrying(self, result: RunResult, max_tries: int, delay: float) -> None:
        self._emit("retrying", result, max_tries, delay)
