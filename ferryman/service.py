"""MigrationService: plan the migrations, run them, keep the progress, report the outcome."""

from __future__ import annotations

import inspect
import logging
import os
import time
from typing import Any, Iterable, Mapping, Sequence

from .declare import MigrationSpec, check_max_failures, spec_of
from .errors import (
    LeaseLostError,
    LedgerWriteError,
    MigrationDefinitionError,
    PlanError,
    StopRequested,
)
from .events import Observers, RunObserver
from .pipeline.interpreter import tuned_for_pipeline
from .plan import PlanStep, build_plan, dependants
from .progress.files import open_ledger
from .progress.ledger import Ledger, MemoryLedger
from .progress.model import MigrationProgress
from .report import MigrationReport, MigrationState, RunResult
from .runner import MigrationRunner
from .signals import StopFlag, critical, stop_on_signals
from .stores.base import Store
from .types import ProgressCallback

log = logging.getLogger("ferryman")


class StoreRegistry(Mapping[str, Store]):
    """Stores by name; what ``handle_duplicate`` receives as ``registry``."""

    def __init__(self, stores: Iterable[Store]) -> None:
        self._stores: dict[str, Store] = {}
        for store in stores:
            if not isinstance(store, Store):
                raise TypeError(f"{store!r} is not a ferryman Store")
            if store.name in self._stores:
                raise PlanError(f"two stores are named {store.name!r}; store names must be unique")
            self._stores[store.name] = store

    def __getitem__(self, name: str) -> Store:
        return self._stores[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._stores)

    def __len__(self) -> int:
        return len(self._stores)


def _instantiate(migration: Any) -> tuple[MigrationSpec, Any]:
    spec = spec_of(migration)
    if not inspect.isclass(migration):
        return spec, migration
    try:
        return spec, migration()
    except Exception as exc:
        raise MigrationDefinitionError(
            spec.identity, [f"could not be created with {spec.cls.__name__}(): {type(exc).__name__}: {exc}"]
        ) from exc


class MigrationService:
    """Runs ``@migration`` classes over stores, in dependency order, resumably.

    Building the service checks the plan (:class:`PlanError` for unknown stores, self-reads, two
    writers of one store in one order group, cycles). ``ledger`` is where runs keep their
    progress by default: a :class:`Ledger`, or a path (an SQLite ledger, or mjg JSON for
    ``*.json``). ``checkpoint_interval`` bounds how often
    the persistence callbacks run during a migration (seconds; 0 = after every page); they
    always run at the end of each migration, on a fatal error, at the end, and on a stop.
    """

    def __init__(
        self,
        stores: Sequence[Store],
        migrations: Sequence[Any],
        *,
        ledger: Ledger | str | os.PathLike[str] | None = None,
        checkpoint_interval: float = 1.0,
        observers: Sequence[RunObserver] = (),
    ) -> None:
        self.stores = StoreRegistry(stores)
        self.ledger = open_ledger(ledger) if isinstance(ledger, (str, os.PathLike)) else ledger
        pairs = [_instantiate(m) for m in migrations]
        self._instances = {spec.identity: instance for spec, instance in pairs}
        self._steps: list[PlanStep] = build_plan([spec for spec, _ in pairs], self.stores)
        self.checkpoint_interval = checkpoint_interval
        self._callbacks: list[ProgressCallback] = []
        self.observers = Observers(observers)

    # --- plan ---------------------------------------------------------------------------------

    def plan(self) -> list[str]:
        """Migration identities in run order."""
        return [s.spec.identity for s in self._steps]

    def explain(self) -> list[str]:
        """One line per migration: where it runs and why."""
        return [f"{i}. {s.explain()}" for i, s in enumerate(self._steps, 1)]

    @property
    def specs(self) -> list[MigrationSpec]:
        return [s.spec for s in self._steps]

    def select(self, only: Sequence[str] | None) -> list[PlanStep]:
        """The plan's steps named in ``only`` (names or identities), in plan order."""
        if not only:
            return list(self._steps)
        wanted = set(only)
        known = {k for s in self._steps for k in (s.spec.name, s.spec.identity)}
        unknown = sorted(wanted - known)
        if unknown:
            names = ", ".join(s.spec.name for s in self._steps)
            raise PlanError(f"unknown migration(s) {', '.join(unknown)}; known: {names}", unknown)
        return [s for s in self._steps if {s.spec.name, s.spec.identity} & wanted]

    # --- callbacks ------------------------------------------------------------------------------

    def add_progress_persistence_callback(self, callback: ProgressCallback) -> None:
        """Call ``callback(progress)`` at every checkpoint; several callbacks are allowed."""
        self._callbacks.append(callback)

    def remove_all_progress_persistence_callbacks(self) -> None:
        self._callbacks.clear()

    def add_observer(self, observer: RunObserver) -> None:
        self.observers.add(observer)

    def remove_observer(self, observer: RunObserver) -> None:
        self.observers.remove(observer)

    @property
    def migrations(self) -> list[Any]:
        """The migration instances, in plan order."""
        return [self._instances[s.spec.identity] for s in self._steps]

    # --- run ----------------------------------------------------------------------------------

    def run(
        self,
        progress: MigrationProgress | Ledger | None = None,
        *,
        only: Sequence[str] | None = None,
        max_failures: int | float | None = None,
    ) -> RunResult:
        """Run the plan (or the ``only`` subset) and return what happened to each migration.

        ``progress`` is a :class:`MigrationProgress` (mutated in place, as mjg did), a
        :class:`Ledger`, or None: the service's ``ledger``, else a fresh start in memory.
        ``max_failures`` is a failure budget for every migration of this run, over their own
        (see ``@migration(max_failures=...)``).
        """
        check_max_failures(max_failures)
        steps = self.select(only)
        if isinstance(progress, Ledger):
            ledger = progress
        elif progress is None and self.ledger is not None:
            ledger = self.ledger
        else:
            ledger = MemoryLedger(progress)
        run = _Run(self, ledger, steps, max_failures)
        return run.execute()


class _Run:
    """The state of one call to :meth:`MigrationService.run`."""

    def __init__(self, service: MigrationService, ledger: Ledger, steps: list[PlanStep],
                 max_failures: int | float | None = None) -> None:
        self.service = service
        self.max_failures = max_failures
        self.ledger = ledger
        self.steps = steps
        self.stop = StopFlag()
        self.reports = {
            s.spec.identity: MigrationReport(s.spec.identity, s.spec.name, s.spec.source, s.spec.dest)
            for s in steps
        }
        self.result = RunResult(list(self.reports.values()))
        self._last_persist = time.monotonic()

    def execute(self) -> RunResult:
        """Run the steps; whatever happens, save the progress and record how the run ended.

        A stop (signal, ``KeyboardInterrupt``) ends the run ``interrupted``; a ledger that can
        take no more (its lease taken by another run, a full disk) ends it with
        ``result.ledger_error``. The saving at the end holds a second signal until it is done.
        """
        observers = self.service.observers
        with stop_on_signals(self.stop):  # first: a signal from here on stops the run gently
            self.ledger.begin_run(self.result.reports)  # refused (busy, unwritable): nothing done
            try:
                observers.run_started(self.result.reports)
                with tuned_for_pipeline():
                    self._run_steps()
            except (StopRequested, KeyboardInterrupt) as exc:
                self.stop.request(str(exc) or type(exc).__name__)
            except (LeaseLostError, LedgerWriteError) as exc:
                self.result.ledger_error = str(exc)
            finally:
                for report in self.result.reports:
                    if report.state is MigrationState.RUNNING:
                        report.state = MigrationState.INTERRUPTED
                self.result.interrupted = self.stop.reason
                with critical():
                    self._end()
        if self.result.interrupted:
            log.warning("run interrupted by %s; progress saved", self.result.interrupted)
        if self.result.ledger_error:
            log.error("%s", self.result.ledger_error)
        observers.run_finished(self.result)
        return self.result

    def _end(self) -> None:
        """The last checkpoint and the run's outcome in the ledger (which may refuse both; the
        lease is released all the same)."""
        for step in (lambda: self._persist(force=True), lambda: self.ledger.end_run(self.result)):
            try:
                step()
            except (LeaseLostError, LedgerWriteError) as exc:
                self.result.ledger_error = self.result.ledger_error or str(exc)

    def _run_steps(self) -> None:
        for step in self.steps:
            spec = step.spec
            report = self.reports[spec.identity]
            if report.state is MigrationState.HELD_BACK:
                continue
            if self.stop.requested:
                return
            MigrationRunner(
                spec, self.service._instances[spec.identity], self.service.stores, self.ledger,
                report, self.service.observers, self.stop, self._persist, self.max_failures,
            ).run()
            self._persist(force=True)
            self.service.observers.migration_finished(report)
            if report.state is MigrationState.FAILED:
                self._hold_back_dependants(spec)

    def _hold_back_dependants(self, failed: MigrationSpec) -> None:
        for spec in dependants(self.steps, failed):
            report = self.reports[spec.identity]
            report.state = MigrationState.HELD_BACK
            if failed.name not in report.held_back_by:
                report.held_back_by.append(failed.name)
            log.warning("%s held back: it reads what %s writes, which failed", spec.name, failed.name)

    def _persist(self, force: bool = False, urgent: bool = True) -> None:
        """Checkpoint the ledger, then call the persistence callbacks (throttled mid-migration)."""
        self.ledger.checkpoint(urgent=urgent or force)
        now = time.monotonic()
        if not force and now - self._last_persist < self.service.checkpoint_interval:
            return
        self._last_persist = now
        callbacks = self.service._callbacks
        if not callbacks:
            return
        progress = self.ledger.progress()
        for callback in callbacks:
            try:
                callback(progress)
            except Exception as exc:
                message = f"{getattr(callback, '__qualname__', callback)!s}: {exc!r}"
                log.error("progress persistence callback failed: %s", message)
                self.result.callback_errors.append(message)
