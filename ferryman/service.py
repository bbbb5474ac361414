"""MigrationService: plan the migrations, run them, keep the progress, report the outcome."""

from __future__ import annotations

import inspect
import logging
import os
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields, replace
from typing import IO, Any

from sqlalchemy.exc import SQLAlchemyError

from .deadline import check_timeout, deadline, timed_out_message
from .declare import MigrationSpec, check_max_failures, spec_of
from .defaults import DEFAULT_VERIFY_SAMPLE
from .dry_run import DryRunResult, DryRunStore
from .errors import (
    FerrymanError,
    InputError,
    LeaseLostError,
    LedgerMismatchError,
    LedgerWriteError,
    MigrationDefinitionError,
    PlanError,
    StopRequested,
    StoreError,
    one_line,
)
from .eventlog import EventLog
from .events import Observers, RunObserver
from .launchers import WorkerLauncher
from .notify import Notifier
from .partitioned import PartitionedRunner, partition_refusal
from .pipeline.interpreter import tuned_for_pipeline
from .pipeline.work import describe_error
from .plan import PlanStep, build_plan, dependants
from .progress.files import open_ledger
from .progress.ledger import Ledger, MemoryLedger
from .progress.model import MigrationProgress, keyed_name
from .progress.reader import LedgerReader
from .report import MigrationReport, MigrationState, RunResult
from .runner import MigrationRunner
from .signals import StopFlag, critical, stop_on_signals
from .stores.base import Store
from .types import ProgressCallback
from .verify import VerificationResult, check_sample, verify_steps

log = logging.getLogger("ferryman")

DEFAULT_RETRY_DELAY = 30.0
"""Seconds between two attempts of :meth:`MigrationService.run` with ``max_tries`` above 1."""


def check_workers(workers: int) -> None:
    """Refuse a number of workers below 1 (before anything runs)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number of processes, 1 or more, got {workers!r}")


def check_attempts(max_tries: int, retry_delay: float,
                   names: tuple[str, str] = ("max_tries", "retry_delay")) -> None:
    """Raise :class:`InputError` unless ``max_tries`` is at least 1 and ``retry_delay`` a
    number of seconds a pause can last (not negative, not NaN); the message calls them
    ``names`` (the CLI's are its options)."""
    if max_tries < 1:
        raise InputError(f"{names[0]} must be at least 1, not {max_tries}")
    if not 0 <= retry_delay <= threading.TIMEOUT_MAX:
        raise InputError(f"{names[1]} must be a number of seconds >= 0, not {retry_delay}")


class StoreRegistry(Mapping[str, Store]):
    """Stores by name; what ``handle_duplicate`` receives as ``registry``."""

    def __init__(self, stores: Iterable[Store]) -> None:
        self._stores: dict[str, Store] = {}
        for store in stores:
            if not isinstance(store, Store):
                raise TypeError(f"{store!r} is not a ferryman Store")
            if store.name in self._stores:
                name = store.name
                raise PlanError(
                    f"two stores are named {name!r} ({self._stores[name].dataset} and {store.dataset}); store "
                    f"names must be unique: name one otherwise, e.g. db.table({name!r}, 'new_{name}') "
                    f"or SqlStore('new_{name}', url, {name!r})")
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


_STORE_LABEL = re.compile(r"store '[^']*' \([^)]*\): ")


def reflected_keys(stores: Sequence[Store]) -> tuple[list[str], list[str]]:
    """What ``ferryman plan`` says of the keys it reflected: a line naming each store's primary
    key; and the problems: a line for each reason a store's key cannot be known, naming every
    store it stops (a database that refuses the login stops all its tables alike)."""
    found: list[str] = []
    problems: dict[str, list[str]] = {}
    for store in stores:
        if store.key_given:
            continue
        try:
            key = store.key
        except Exception as exc:  # noqa: BLE001 - said by the plan; the run refuses the store
            problems.setdefault(_STORE_LABEL.sub("", describe_error(exc)), []).append(repr(store.name))
            continue
        note = f" ({store.key_note})" if store.key_note else ""
        found.append(f"{store.name} {key if isinstance(key, str) else '(' + ', '.join(key) + ')'}{note}")
    lines = [f"keys reflected from the tables' primary keys: {', '.join(found)}"] if found else []
    return lines, [f"store{'s' if len(names) > 1 else ''} {', '.join(names)}: no key: {why}"
                   for why, names in problems.items()]


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
        self._dry_run = False
        """This service is :meth:`dry_run`'s copy: a failed migration only would fail."""
        self.observers = Observers(observers)
        self.target: str | None = None
        """The TARGET this service was loaded from, if any: the commands it suggests name it."""

    # --- plan ---------------------------------------------------------------------------------

    def plan(self) -> list[str]:
        """Migration identities in run order."""
        return [s.spec.identity for s in self._steps]

    def explain(self) -> list[str]:
        """One line per migration: where it runs and why; then the keys reflected from the
        databases (stores declared without ``key=``), which reflects them now, and a line for
        each reason a store's key cannot be known (see :meth:`key_problems`)."""
        lines, problems = self._keys()
        return [f"{i}. {s.explain()}" for i, s in enumerate(self._steps, 1)] + lines + problems

    def key_problems(self) -> list[str]:
        """Why the keys of some stores cannot be known (a table without one, a database that
        cannot be reached): one line per reason, naming the stores; empty when all are known."""
        return self._keys()[1]

    def _keys(self) -> tuple[list[str], list[str]]:
        used = sorted({name for s in self._steps for name in (*s.spec.reads, s.spec.dest)})
        return reflected_keys([self.stores[name] for name in used])

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

    @contextmanager
    def observed_by(self, observers: Sequence[RunObserver]) -> Iterator[None]:
        """``observers`` watch the runs started inside (and are removed at the end)."""
        for observer in observers:
            self.add_observer(observer)
        try:
            yield
        finally:
            for observer in observers:
                self.remove_observer(observer)

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
        max_failures: float | None = None,
        max_tries: int = 1,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        timeout: float | None = None,
        events: str | os.PathLike[str] | IO[str] | None = None,
        notify: Sequence[str | Notifier] = (),
        verify_sample: int | None = None,
        workers: int = 1,
        launcher: WorkerLauncher | None = None,
    ) -> RunResult:
        """Run the plan (or the ``only`` subset) and return what happened to each migration.

        ``progress`` is a :class:`MigrationProgress` (mutated in place, as mjg did), a
        :class:`Ledger`, or None: the service's ``ledger``, else a fresh start in memory.
        ``max_failures`` is a failure budget for every migration of this run, over their own
        (see ``@migration(max_failures=...)``).

        ``max_tries`` is attempts in all: a run that ends with failed records, held-back
        migrations or fatal errors (not a stopped one) starts again after ``retry_delay``
        seconds, on the same progress; a stop signal during the pause ends it, ``interrupted``.
        The result is the last attempt's (``result.attempts`` says which); observers hear
        :meth:`~RunObserver.attempt_started` and :meth:`~RunObserver.retrying`.

        ``timeout`` (seconds) bounds the whole run, attempts and pauses included: when it is
        up, the run stops at the next batch boundary and ends failed (``result.timed_out``
        says so, and so does ``last_err``); the progress is saved and the next run resumes.

        Every status change is an event (:mod:`ferryman.eventlog`) kept in the ledger; with
        ``events`` (a path, appended to, or an open text stream) also written there, one JSON
        line each.

        ``notify`` is URLs (or :class:`~ferryman.notify.Notifier` objects) to POST the run's
        start, each migration's end, the run's end and fatal errors to, as JSON; they never
        fail nor block the run (``result.notification_errors`` lists those not delivered).

        ``verify_sample``: once the run completed, :meth:`verify` with that sample
        (``result.verification``; the run is ``ok`` only when it passed too).

        ``workers`` above 1 runs each migration that allows it in key-range partitions, up to
        ``workers`` processes at once (``python -m ferryman worker``, importing :attr:`target`);
        this process coordinates. A migration that cannot (see
        :func:`~ferryman.partitioned.partition_refusal`) runs in this process, and the log says why.
        ``launcher`` starts the workers elsewhere (default: processes of this host, see
        :mod:`ferryman.launchers`; Ray tasks: :class:`ferryman.ray.RayLauncher`).
        """
        check_max_failures(max_failures)
        check_attempts(max_tries, retry_delay)
        check_timeout(timeout)
        check_sample(verify_sample)
        check_workers(workers)
        self.select(only)  # unknown names: refused before anything
        urls = [n for n in notify if isinstance(n, str)]
        notifiers = [n for n in notify if isinstance(n, Notifier)] + ([Notifier(urls)] if urls else [])
        ledger = self._ledger_for(progress)
        event_log = EventLog(ledger, events)
        for notifier in notifiers:
            notifier.ledger = ledger
        try:
            with self.observed_by([event_log, *notifiers]), _told_to(notifiers):
                result = self._attempts(ledger, only, max_failures, max_tries, retry_delay, timeout,
                                        (workers, launcher))
                if verify_sample is not None and result.ok:
                    self._verify_after(result, ledger, verify_sample, only, notifiers)
        finally:
            event_log.close()
            errors = [line for notifier in notifiers for line in notifier.close()]
        result.notification_errors = errors
        return result

    def _verify_after(self, result: RunResult, ledger: Ledger, sample: int, only: Sequence[str] | None,
                      notifiers: Sequence[Notifier]) -> None:
        """Verify a completed run; a verification that cannot run (a store gone meanwhile) is
        said in the result (it is then not ok), not raised: the run's own result stands."""
        try:
            result.verification = self.verify(ledger, sample=sample, only=only)
        except (FerrymanError, SQLAlchemyError, OSError) as exc:
            result.verification_error = f"the verification could not run: {one_line(exc)}"
            log.error("%s", result.verification_error)
            return
        for notifier in notifiers:
            notifier.verified(result.verification)

    def _attempts(self, ledger: Ledger, only: Sequence[str] | None, max_failures: float | None,
                  max_tries: int, retry_delay: float, timeout: float | None,
                  workers: tuple[int, WorkerLauncher | None] = (1, None)) -> RunResult:
        ends = None if timeout is None else time.monotonic() + timeout
        message = timed_out_message(timeout) if timeout is not None else ""
        attempt = 1
        while True:
            self.observers.attempt_started(attempt)
            left = None if ends is None else ends - time.monotonic()
            result = _Run(self, ledger, self.select(only), max_failures, (left, message), workers).execute()
            result.attempts = attempt
            if result.ok or result.interrupted or result.timed_out or attempt >= max_tries:
                return result
            self.observers.retrying(result, max_tries, retry_delay)
            pause = StopFlag()
            with stop_on_signals(pause), deadline(pause, None if ends is None else ends - time.monotonic(),
                                                  message):
                if pause.wait(retry_delay):
                    if pause.timeout is not None:
                        result.timed_out = pause.timeout
                    else:
                        result.interrupted = pause.reason
                    return result
            attempt += 1

    def _ledger_for(self, progress: MigrationProgress | Ledger | None) -> Ledger:
        if isinstance(progress, Ledger):
            return progress
        if progress is None and self.ledger is not None:
            return self.ledger
        return MemoryLedger(progress)

    def verify(
        self,
        progress: MigrationProgress | Ledger | None = None,
        *,
        sample: int | None = DEFAULT_VERIFY_SAMPLE,
        only: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> VerificationResult:
        """Check that the destinations hold what ``progress`` (as for :meth:`run`) says was
        migrated: counts that must add up, a replay of ``sample`` succeeded records per
        migration chosen at random (None: all of them) compared field by field with what the
        destination holds, and the migrations' ``verify`` hooks (see :mod:`ferryman.verify`).

        Nothing is written to a store. The result is kept in the ledger (and its event log);
        ``result.ok`` only when every check passed. Refused while a live run holds the ledger
        (:class:`~ferryman.errors.LedgerBusyError`).
        """
        check_sample(sample)
        steps = self.select(only)
        ledger = self._ledger_for(progress)
        if isinstance(ledger, LedgerReader):
            ledger.refuse_if_live("verify the migrations")
        result = verify_steps(steps, self._instances, self.stores, ledger, sample, seed)
        ledger.record_verification(result.kept_with(ledger.verification()))
        EventLog(ledger).emit(
            f"verification.{'passed' if result.ok else 'failed'}", sample=sample,
            migrations=[{"name": m.name, "ok": m.ok, "checked": m.checked, "problems": len(m.problems)}
                        for m in result.migrations])
        return result

    def dry_run(
        self,
        progress: MigrationProgress | Ledger | None = None,
        *,
        only: Sequence[str] | None = None,
        max_failures: float | None = None,
    ) -> DryRunResult:
        """Read and transform as :meth:`run` would, skipping what ``progress`` (as for
        :meth:`run`) says is done, but save nothing and record no progress: ``progress`` is
        only read. The result says how many records each migration would write."""
        steps = self.select(only)
        if isinstance(progress, MigrationProgress):
            start: MigrationProgress | None = progress.copy()
        else:
            ledger = progress if progress is not None else self.ledger
            start = ledger.progress().copy() if ledger is not None else None
        dests = {s.spec.dest for s in steps}
        stores = {name: DryRunStore(store) if name in dests else store for name, store in self.stores.items()}
        dry = MigrationService(list(stores.values()), self.migrations, observers=[self.observers])
        dry._dry_run = True
        result = dry.run(MemoryLedger(start), only=only, max_failures=max_failures)
        would = {s.spec.name: store.saved for s in steps if isinstance(store := stores[s.spec.dest], DryRunStore)}
        return DryRunResult(**{f.name: getattr(result, f.name) for f in fields(result)}, would_write=would)

    def check_stores(self, only: Sequence[str] | None = None) -> None:
        """Read one record of every store the migrations (of ``only``) read or write, so that an
        unreachable database or a missing table is told before any work: :class:`InputError`
        naming the store."""
        for name in sorted({n for s in self.select(only) for n in (*s.spec.reads, s.spec.dest)}):
            try:
                self.stores[name].read_page(None, None, 1)
            except (StoreError, SQLAlchemyError, OSError) as exc:
                raise InputError(f"store {name!r} cannot be read: {one_line(exc)}") from exc


    def reset(self, names: Sequence[str], *, with_dependants: bool = False,
              progress: Ledger | None = None, every_ledger: bool = False) -> list[MigrationSpec]:
        """Forget the progress of these migrations (names or identities), so that the next run
        migrates them from the start; the migrations reset, in plan order.

        Their destinations still hold what they wrote: the next run meets those records again
        (empty the destination first, or let it upsert with ``on_conflict="update"``).
        ``with_dependants`` resets every migration that reads, directly or not, what they
        write. Refused (:class:`LedgerBusyError`) while a live run holds the ledger.
        ``every_ledger`` also forgets other ledgers' marks on their destinations (see
        :meth:`Ledger.forget`), to start over on a new ledger on purpose.
        """
        ledger = progress if progress is not None else self.ledger
        if ledger is None:
            raise PlanError("no progress ledger to reset: give the service a ledger, or progress=")
        chosen = {s.spec.identity for s in self.select(names)}
        if with_dependants:
            chosen |= {d.identity for s in self._steps if s.spec.identity in chosen
                       for d in dependants(self._steps, s.spec)}
        steps = [s for s in self._steps if s.spec.identity in chosen]
        for step in steps:
            ledger.forget(ledger.bind(step.spec.identity, step.writes), self.stores[step.spec.dest],
                          every_ledger=every_ledger)
        return [s.spec for s in steps]


@contextmanager
def _told_to(notifiers: Sequence[Notifier]) -> Iterator[None]:
    """An error that escapes the run (the ledger refused it, a bug) is a fatal error the
    notifiers are told about, then raised on."""
    try:
        yield
    except Exception as exc:
        for notifier in notifiers:
            notifier.fatal(one_line(exc))
        raise


class _Run:
    """The state of one call to :meth:`MigrationService.run`."""

    def __init__(self, service: MigrationService, ledger: Ledger, steps: list[PlanStep],
                 max_failures: float | None = None,
                 time_left: tuple[float | None, str] = (None, ""),
                 workers: tuple[int, WorkerLauncher | None] = (1, None)) -> None:
        self.service = service
        self.workers, self.launcher = workers
        self.time_left = time_left
        """Seconds this attempt may take (None: no limit), and what ``last_err`` says then."""
        self.max_failures = max_failures
        self.ledger = ledger
        self.steps = steps
        self.stop = StopFlag()
        self.instances = {s.spec.identity: service._instances[s.spec.identity] for s in steps}
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
        with stop_on_signals(self.stop), deadline(self.stop, *self.time_left):
            self.ledger.begin_run(self.result.reports)  # refused (busy, unwritable): nothing done
            try:
                self._bind()
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
                if self.stop.timeout is not None:
                    self._timed_out(self.stop.timeout)
                else:
                    self.result.interrupted = self.stop.reason
                with critical():
                    self._end()
        if self.result.interrupted:
            log.warning("run interrupted by %s; progress saved", self.result.interrupted)
        if self.result.ledger_error:
            log.error("%s", self.result.ledger_error)
        observers.run_finished(self.result)
        return self.result

    def _timed_out(self, message: str) -> None:
        """The run ends failed because its time is up; a migration says so: the one the
        timeout stopped, else (it came between two) the next that would have run."""
        self.result.timed_out = message
        if any(r.fatal_error == message for r in self.result.reports):
            return
        waiting = next((r for r in self.result.reports if r.state is MigrationState.PENDING), None)
        if waiting is not None:
            waiting.state = MigrationState.FAILED
            waiting.fatal_error = waiting.last_error = message

    def _end(self) -> None:
        """The last checkpoint and the run's outcome in the ledger (which may refuse both; the
        lease is released all the same)."""
        steps: tuple[Callable[[], None], ...] = (lambda: self._persist(force=True),
                                                 lambda: self.ledger.end_run(self.result))
        for step in steps:
            try:
                step()
            except (LeaseLostError, LedgerWriteError) as exc:
                self.result.ledger_error = self.result.ledger_error or str(exc)

    def _bind(self) -> None:
        """Key each migration's progress by its identity and destination (see
        :meth:`Ledger.bind`), the target's migrations this run leaves out (``only``) included, so
        that the ledger knows the whole job (a run of some is not the job's completion); say so
        when the ledger knows none of this run's migrations, and refuse a destination another
        ledger wrote for a migration this one has not run (:meth:`Ledger.check_destination`)."""
        known = set(self.ledger.lineage())
        where = getattr(self.ledger, "path", "in use")
        if known and not known & {s.spec.identity for s in self.steps}:
            others = sorted({k.rsplit(".", 1)[-1].split("@")[0] for k in known})
            log.warning("progress ledger %s holds the progress of %d other migration(s) (%s%s) and none of "
                        "these: is it the right ledger for this target?", where, len(known),
                        ", ".join(others[:5]), ", ..." if len(others) > 5 else "")
        apart = []
        for i, step in enumerate(self.steps):
            identity = step.spec.identity
            key = self.ledger.bind(identity, step.writes)
            if key == identity:
                continue
            self.steps[i] = replace(step, spec=replace(step.spec, identity=key))
            self.instances[key] = self.instances.pop(identity)
            self.reports[key] = report = self.reports.pop(identity)
            report.identity, report.name = key, keyed_name(report.name, key)
            apart.append(step.spec.name)
        selected = {s.spec.name for s in self.steps}
        for step in self.service._steps:  # the target's others too: the ledger knows the whole job
            if step.spec.name not in selected:
                self.ledger.bind(step.spec.identity, step.writes)
        if apart:
            log.warning("progress ledger %s holds the progress of %s for other destinations; for these "
                        "destinations it is kept apart (key: module.Class@dataset)", where, ", ".join(apart))
        refused: list[tuple[str, LedgerMismatchError]] = []
        for step in self.steps:  # before any work: a forgotten --progress would write it all again
            try:
                self.ledger.check_destination(step.spec.identity, self.service.stores[step.spec.dest])
            except LedgerMismatchError as exc:
                refused.append((step.spec.name, exc))
        if refused:  # one command for them all, not one refusal per run
            names = [name for name, _ in refused]
            tail = f". So do the destinations of {', '.join(names[1:])}; to start all {len(names)} over" \
                if len(names) > 1 else ", or start over on purpose"
            raise LedgerMismatchError(
                f"{refused[0][1]}{tail} with this ledger: `{self._reset_command(names)} --forget-other-ledgers` "
                f"(after emptying {'their destinations' if len(names) > 1 else 'the destination'})"
            ) from refused[0][1]

    def _reset_command(self, names: Sequence[str]) -> str:
        """The ``ferryman reset`` command line that resets ``names`` in this run's ledger."""
        target = shlex.quote(self.service.target or "TARGET")
        path = getattr(self.ledger, "path", None)
        progress = "" if self.ledger is self.service.ledger or path is None else f" --progress {shlex.quote(path)}"
        return f"ferryman reset {target}{progress} " + " ".join(f"--migration {shlex.quote(n)}" for n in names)

    def _run_steps(self) -> None:
        for step in self.steps:
            spec = step.spec
            report = self.reports[spec.identity]
            if report.state is MigrationState.HELD_BACK:
                continue
            if self.stop.requested:
                return
            left_out = self._unfinished_inputs_left_out(step)
            if left_out:
                self._hold_back(step, report, left_out, _left_out_reason(step, left_out))
                self._hold_back_dependants(spec, f"reads what {spec.name} writes, which was held back")
                continue
            if not self._inputs_ready(step, report):
                self._hold_back_dependants(spec, f"reads what {spec.name} writes, which is out of date")
                continue
            self._runner(spec, report).run()
            self._persist(force=True)
            self.service.observers.migration_finished(report)
            if report.state is MigrationState.FAILED:
                failed = "would fail (dry run)" if self.service._dry_run else "failed"
                self._hold_back_dependants(spec, f"reads what {spec.name} writes, which {failed}")

    def _runner(self, spec: MigrationSpec, report: MigrationReport) -> MigrationRunner:
        """The migration's runner: partitioned over workers when the run has them and the
        migration allows it, else in this process."""
        args = (spec, self.instances[spec.identity], self.service.stores, self.ledger, report,
                self.service.observers, self.stop, self._persist, self.max_failures)
        if self.workers > 1:
            refusal = partition_refusal(spec, self.service.stores, self.ledger, self.service.target)
            if refusal is None:
                return PartitionedRunner(*args, workers=self.workers, target=self.service.target or "",
                                         launcher=self.launcher)
            log.warning("%s runs in one process: %s", spec.name, refusal)
        return MigrationRunner(*args)

    def _hold_back_dependants(self, upstream: MigrationSpec, why: str) -> None:
        for spec in dependants(self.steps, upstream):
            report = self.reports[spec.identity]
            first = report.state is not MigrationState.HELD_BACK
            report.state = MigrationState.HELD_BACK
            if upstream.name not in report.held_back_by:
                report.held_back_by.append(upstream.name)
            log.warning("%s held back: it %s", spec.name, why)
            if first:
                self.service.observers.migration_held_back(report)

    def _unfinished_inputs_left_out(self, step: PlanStep) -> list[str]:
        """The names of the migrations whose output ``step`` reads (or names in ``depends_on``)
        that this run leaves out (``only``) and that have not completed: what it would read
        is missing or partial."""
        selected = {s.spec.name for s in self.steps}
        return [
            upstream.spec.name for upstream in self.service._steps
            if upstream.spec.name not in selected
            and (upstream.writes in step.reads or upstream.spec.identity in step.depends_on)
            and not self.ledger.completed(self.ledger.key_of(upstream.spec.identity, upstream.writes))
        ]

    def _hold_back(self, step: PlanStep, report: MigrationReport, by: list[str], reason: str) -> None:
        """Hold ``step`` back before it runs, ``by`` the migrations named, for ``reason``."""
        report.state = MigrationState.HELD_BACK
        report.held_back_by = by
        report.held_back_reason = reason
        log.warning("%s held back: %s", step.spec.name, reason)
        self.service.observers.migration_held_back(report)

    def _inputs_ready(self, step: PlanStep, report: MigrationReport) -> bool:
        """Whether the migration may run on what its inputs hold now; True once it is known.

        A migration's inputs are the migrations whose destination it reads (or names in
        ``depends_on``). When one of them wrote records after this migration last started (a
        record fixed and retried, an IGNORE lifted), what it wrote then may be out of date:
        - read as its source only: the new records are new source records, which this run
          migrates like any other; nothing to do;
        - matched (reduced), or a ``depends_on``: any output may depend on them. A destination
          that upserts (``on_conflict="update"``) lets it run again from the start, which
          rewrites every output; any other destination holds it back (False), with the
          command that resets it.
        """
        key, ledger = step.spec.identity, self.ledger
        lineage = ledger.lineage()
        inputs = {k: changes for k, (dest, changes) in lineage.items()
                  if k != key and (dest in step.reads or k in step.depends_on)}
        seen = ledger.inputs(key)
        changed = sorted(k for k, n in inputs.items() if seen is not None and n > seen.get(k, 0))
        source = self.service.stores[step.spec.source].dataset
        reduced = [k for k in changed if lineage[k][0] != source or k in step.depends_on]
        if reduced:
            names = ", ".join(self._name_of(k) for k in reduced)
            dest = self.service.stores[step.spec.dest]
            if getattr(dest, "on_conflict", "error") == "update":
                log.warning("%s runs again from the start: %s wrote records since it last ran, and it "
                            "reduces them (its destination %r upserts, so every output is rewritten)",
                            step.spec.name, names, dest.name)
                ledger.forget(key, dest)
            else:
                self._hold_back(step, report, [self._name_of(k) for k in reduced], (
                    f"{names} wrote records after {step.spec.name} last ran, and {step.spec.name} reduces "
                    f"them: its results may be out of date. Reset it ({self._reset_command([step.spec.name])}), "
                    f"empty its destination {dest.name!r} or make it upsert "
                    "(on_conflict='update'), then run again"))
                return False
        ledger.note_inputs(key, inputs)
        return True

    def _name_of(self, key: str) -> str:
        step = next((s for s in self.service._steps if s.spec.identity == key), None)
        return step.spec.name if step is not None else key.rsplit(".", 1)[-1]

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
            except Exception as exc:  # noqa: BLE001  # a user's callback: recorded, the run goes on
                message = f"{getattr(callback, '__qualname__', callback)!s}: {exc!r}"
                log.error("progress persistence callback failed: %s", message)
                self.result.callback_errors.append(message)


def _left_out_reason(step: PlanStep, left_out: list[str]) -> str:
    """Why ``step`` is held back when it reads what ``left_out`` (left out by ``--only``, not
    completed) write."""
    one = len(left_out) == 1
    only = " ".join(f"--only {shlex.quote(n)}" for n in [*left_out, step.spec.name])
    return (f"it reads what {', '.join(left_out)} {'writes' if one else 'write'}, which this run leaves out "
            f"and which {'has' if one else 'have'} not completed: its results would be "
            f"wrong. Run {'it' if one else 'them'} too ({only}), or without --only")
