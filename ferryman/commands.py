"""The verbs behind the ``ferryman`` CLI, as plain functions usable (and tested) from Python.

``cli.py`` parses arguments, calls one of these, and prints what it returns. Each verb is a thin
layer over the library (:class:`~ferryman.MigrationService`, :mod:`ferryman.progress`,
:mod:`ferryman.server`): it chooses the progress a command means (``--progress``, else the
service's own ledger, else ``ferryman-progress.db``), and either does its whole job or raises
before changing anything on disk: an :class:`~ferryman.errors.InputError` (nothing was done,
exit code 2) or another :class:`~ferryman.errors.FerrymanError` (each says its exit code).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from .console import RetryLines
from .deadline import check_timeout, parse_duration
from .defaults import DEFAULT_VERIFY_SAMPLE
from .dry_run import DryRunResult
from .errors import FerrymanError, InputError, PlanError, TargetError, nothing_done, one_line
from .events import RunObserver
from .launchers import WorkerLauncher
from .ledger_commands import Echo, quiet
from .notify import check_url
from .progress.durable import DurableLedger
from .progress.files import (
    DEFAULT_PROGRESS,
    checked_location,
    command_location,
    load_progress,
    location_exists,
    open_ledger,
    remove_ledger,
)
from .progress.ledger import Ledger
from .progress.reader import LedgerReader
from .progress.storage import checked_path
from .redact import mask_secrets
from .report import RunResult
from .server.address import check_port_free, parse_host_port
from .service import DEFAULT_RETRY_DELAY, MigrationService, check_attempts
from .signals import StopFlag, stop_on_signals, stops_interrupt
from .target import Target, load_target
from .verify import VerificationResult, check_sample
from .worker import WorkerResult, run_partitions, serve_run

log = logging.getLogger("ferryman")

DEFAULT_LINGER = 300.0
"""``ferryman run --serve``: seconds the server keeps serving the final status after the run."""

DEFAULT_MAX_TRIES = 1
"""``ferryman run --max-tries N``: attempts in all (``--retry-delay``: DEFAULT_RETRY_DELAY)."""


# --- plan and reset ---------------------------------------------------------------------------


def plan(target: str | Target | MigrationService) -> tuple[list[str], list[str]]:
    """The run order of the target's migrations, one line each, with why; and the problems that
    would stop a run before any work (stores whose keys cannot be known), one line each."""
    service = _service_of(target)
    return service.explain(), service.key_problems()


def reset(
    target: str | Target | MigrationService, migrations: Sequence[str], *,
    progress: str | os.PathLike[str] | None = None, with_dependants: bool = False,
    forget_other_ledgers: bool = False,
) -> list[str]:
    """Forget the progress of ``migrations`` (and their dependants) in the ledger a run of
    ``target`` would use; one line per migration reset, saying what its destination still holds.

    Only that ledger's journal entries are forgotten: another ledger's mark on a destination
    keeps refusing a run on a ledger that knows nothing of the migration, unless
    ``forget_other_ledgers``, which starts over with this ledger on purpose (and creates it
    when it does not exist yet).

    Raises:
        InputError: there is no such migration or ledger, or a live run holds the ledger;
            nothing is changed then.
    """
    service = _service_of(target)
    path = _ledger_path(service, progress)
    if path is not None and not _exists(path) and not forget_other_ledgers:
        raise InputError(f"no progress ledger at {path}: nothing to reset (give the ledger's --progress; "
                         "to start over with a new ledger on purpose, add --forget-other-ledgers)")
    ledger = service.ledger if path is None else _open_ledger(path)
    try:
        with nothing_done():
            done = service.reset(migrations, with_dependants=with_dependants, progress=ledger,
                                 every_ledger=forget_other_ledgers)
    finally:
        if path is not None and ledger is not None:
            ledger.close()
    lines = []
    for spec in done:
        dest = service.stores[spec.dest]
        kept = ("" if getattr(dest, "on_conflict", "error") == "update" else
                f"; its destination {spec.dest!r} still holds what it wrote: empty it, or make it upsert "
                "(on_conflict='update'), before running again")
        lines.append(f"reset {spec.name}: the next run migrates it from the start{kept}")
    return lines


def _service_of(target: str | Target | MigrationService) -> MigrationService:
    if isinstance(target, MigrationService):
        return target
    if isinstance(target, str):
        target = load_target(target)
    try:
        return target.build_service()
    except (TypeError, ValueError) as exc:  # what the TARGET defines is wrong, e.g. `migrations = [int]`
        raise TargetError(f"TARGET {target.spec}: {exc}") from exc


# --- run ----------------------------------------------------------------------------------------


def run(
    target: str | Target | MigrationService,
    *,
    progress: str | os.PathLike[str] | None = None,
    only: Sequence[str] | None = None,
    serve: str | tuple[str, int] | None = None,
    max_tries: int = DEFAULT_MAX_TRIES,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    dry_run: bool = False,
    max_failures: float | None = None,
    timeout: float | str | None = None,
    events: str | os.PathLike[str] | None = None,
    notify: Sequence[str] = (),
    verify_sample: int | None = None,
    workers: int = 1,
    launcher: WorkerLauncher | None = None,
    observers: Sequence[RunObserver] = (),
    echo: Echo = quiet,
    linger: float = 0.0,
    on_finished: Callable[[RunResult], None] | None = None,
) -> RunResult:
    """Run the target's migrations, resuming from the progress ledger at ``progress``.

    Args:
        target: a file path or module name (see :mod:`ferryman.target`), a loaded Target, or a
            service.
        progress: the ledger: ``*.json`` is an mjg JSON file, anything else an SQLite ledger.
            Default: the service's own ledger, else ``ferryman-progress.db`` in the cwd.
        only: run these migrations only (names or identities).
        serve: ``"HOST:PORT"`` to serve the status API and dashboard during the run.
        max_tries, retry_delay: see :meth:`MigrationService.run`.
        dry_run: :meth:`MigrationService.dry_run` instead: save nothing, write no progress; the
            result (a :class:`~ferryman.dry_run.DryRunResult`) says what would be written.
        max_failures: a failure budget for every migration, over their own (see
            ``@migration(max_failures=...)``).
        timeout: seconds, or a duration such as ``"90s"``, ``"10m"``, ``"2h"``: the run stops
            at the next batch once it is up, and ends failed (see :meth:`MigrationService.run`).
        events: a file the run appends its events to, one JSON line each (see
            :mod:`ferryman.eventlog`); the ledger keeps them either way.
        notify: URLs to POST the run's events to, as JSON (see :mod:`ferryman.notify`); a
            notification not delivered is said by ``echo``, never fatal.
        verify_sample: once the run completed, verify it with this sample (see :func:`verify`).
        workers: processes that run migrations in key-range partitions (see
            :meth:`MigrationService.run`); 1: this process alone.
        launcher: where the workers run (default: processes of this host; Ray tasks:
            :class:`ferryman.ray.RayLauncher`).
        observers: more RunObservers (the CLI adds its progress display here).
        echo: receives the lines a person watching the run wants to see.
        linger: with ``serve``, seconds to keep serving the final status once the run is over
            (Ctrl-C or SIGTERM ends it sooner; an interrupted run does not linger).
        on_finished: called with the result as soon as the run is over, before the linger.

    Raises:
        InputError: nothing was done: the progress is busy or unreadable, a store is
            unreachable, the port is taken, the target or an argument is unusable.
    """
    check_attempts(max_tries, retry_delay, ("--max-tries", "--retry-delay"))
    seconds = parse_duration(timeout, "--timeout") if isinstance(timeout, str) else check_timeout(timeout)
    for url in notify:
        check_url(url)
    if not 0 <= linger <= threading.TIMEOUT_MAX:  # also NaN
        raise InputError(f"--linger must be a number of seconds >= 0, not {linger:g}")
    if dry_run:
        _refuse_beside_dry_run({
            "--serve": serve is not None, "--max-tries": max_tries != DEFAULT_MAX_TRIES,
            "--retry-delay": retry_delay != DEFAULT_RETRY_DELAY, "--timeout": seconds is not None,
            "--events": events is not None, "--notify": bool(notify), "--verify-sample": verify_sample is not None,
            "--workers": workers != 1,
        })
    with stops_interrupt():  # until the run handles them itself
        service = _service_of(target)
        with closing_stores(service):
            service.select(only)
            address = parse_host_port(serve) if isinstance(serve, str) else serve
            with service.observed_by([*observers, RetryLines(echo)]):
                if not dry_run:
                    options = dict(max_tries=max_tries, retry_delay=retry_delay, max_failures=max_failures,
                                   timeout=seconds, events=events, notify=notify, verify_sample=verify_sample,
                                   workers=workers, launcher=launcher)
                    return _run(service, progress, only, address, options, echo, linger, on_finished)
                result = _dry_run(service, progress, only, max_failures, echo)
                if on_finished is not None:
                    on_finished(result)
                return result


@contextmanager
def closing_stores(service: MigrationService) -> Iterator[None]:
    """Close the stores of ``service`` once the block ends: the command loaded them, and a
    store's connections closed before the process exits leave its database as a program that
    closes them would (an SQLite destination's WAL folded back into its file), whatever order
    the interpreter's exit would tear them down in."""
    try:
        yield
    finally:
        for store in service.stores.values():
            try:
                store.close()
            except (FerrymanError, SQLAlchemyError, OSError) as exc:  # the run's own result or error stands
                log.warning("could not close store %s: %s", store.name, one_line(exc))


def _refuse_beside_dry_run(given: dict[str, bool]) -> None:
    """A dry run has no status to serve, no attempts, no events and nothing to verify: an option
    for those is refused rather than silently ignored."""
    options = [name for name, present in given.items() if present]
    if options:
        raise InputError(f"{', '.join(options)}: not for --dry-run, which saves nothing and keeps no "
                         "progress; drop the option or run for real")


def _dry_run(service: MigrationService, progress: str | os.PathLike[str] | None, only: Sequence[str] | None,
             max_failures: float | None, echo: Echo) -> DryRunResult:
    existing = None  # what the real run would resume from, read, not changed
    if progress is not None or service.ledger is None:
        with nothing_done():
            path = checked_path(progress if progress is not None else DEFAULT_PROGRESS)
            existing = load_progress(path) if location_exists(path) else None
    service.check_stores(only)
    echo("dry run: reading and transforming, saving nothing")
    return service.dry_run(existing, only=only, max_failures=max_failures)


def _run(
    service: MigrationService, progress: str | os.PathLike[str] | None, only: Sequence[str] | None,
    address: tuple[str, int] | None, options: dict[str, Any],
    echo: Echo, linger: float, on_finished: Callable[[RunResult], None] | None,
) -> RunResult:
    if address is not None:
        check_port_free(*address)
    # An existing progress is opened (and so checked) before the stores are touched; a new one
    # is created only once the stores answered, so a failed start leaves no file behind.
    path = _ledger_path(service, progress)
    ledger = service.ledger if path is None else (_open_ledger(path) if _exists(path) else None)
    created = ledger is None
    server = None
    try:
        service.check_stores(only)
        if ledger is None:
            assert path is not None
            ledger = _open_ledger(path)
        own = "" if path else " (the service's own)"
        shown = getattr(ledger, "path", None) or path or type(ledger).__name__
        echo(f"progress ledger: {shown}{own}")
        if address is not None:
            from .server.live import LiveServer

            server = LiveServer(ledger, *address)
            server.start()
            echo(f"status API and dashboard: {server.url}")
        try:
            with service.observed_by([server.source] if server is not None else []):
                result = _attempts(service, ledger, only, options)
        except InputError:  # nothing was done: a ledger this run created goes again
            if created and path is not None:
                ledger.close()
                ledger = None
                remove_ledger(path)
            raise
        if path is not None:
            ledger.close()
            ledger = None
        if on_finished is not None:
            on_finished(result)
        if server is not None and linger > 0 and not result.interrupted:
            server.linger(linger, echo)
        return result
    finally:
        if server is not None:
            server.stop()
        if ledger is not None and path is not None:
            ledger.close()


def _attempts(service: MigrationService, ledger: Ledger, only: Sequence[str] | None,
              options: dict[str, Any]) -> RunResult:
    """:meth:`MigrationService.run` with ``options``; an error before any migration started is
    "nothing was done" (InputError)."""
    tracker = _WorkTracker()
    try:
        with service.observed_by([tracker]):
            return service.run(ledger, only=only, **options)
    except (FerrymanError, OSError, sqlite3.Error, SQLAlchemyError) as exc:
        error: BaseException = exc
        if isinstance(exc, sqlite3.Error):  # only the ledger speaks to sqlite3 itself
            error = FerrymanError(f"progress ledger {getattr(ledger, 'path', ledger)}: {exc}")
        if not tracker.started:  # e.g. LedgerBusyError: nothing was done
            raise InputError(one_line(error)) from exc
        if error is not exc:
            raise error from exc
        raise


class _WorkTracker(RunObserver):
    """Notes whether any migration started, which tells "before any work" errors apart."""

    def __init__(self) -> None:
        self.started = False

    def migration_started(self, report: Any) -> None:
        self.started = True


def _ledger_path(service: MigrationService, progress: str | os.PathLike[str] | None) -> str | None:
    """The ledger path to open, or None to use the service's own ledger."""
    with nothing_done():
        return command_location(progress, own=service.ledger is not None)


def _open_ledger(path: str) -> Ledger:
    with nothing_done():
        return open_ledger(path)


def _exists(path: str) -> bool:
    """Whether there is progress at ``path`` (an unreachable database: nothing was done)."""
    with nothing_done():
        return location_exists(path)


# --- worker --------------------------------------------------------------------------------------


LEDGER_LOOK_AGAIN = 1.0
"""Seconds between two looks for the ledger of a run, for a worker started before it."""


def work(target: str | Target | MigrationService, *, progress: str | os.PathLike[str], migration: str | None = None,
         wait: float = 0.0) -> WorkerResult:
    """Run, as one worker, the partitions of ``migration`` (its key in the ledger) that a run
    with workers split and no other live worker holds (see :mod:`ferryman.worker`); the
    coordinator starts workers itself, more may be started by hand where the ledger is reached
    (every host for a PostgreSQL ledger). With no ``migration``: the partitions of each
    migration of the target a run with workers splits, while that run goes on (waiting up to
    ``wait`` seconds for it to start).

    Raises:
        InputError: nothing was done: no such ledger, or the target has no such migration.
    """
    service = _service_of(target)
    with nothing_done():
        path = checked_location(progress)
    give_up = time.monotonic() + wait
    while not (found := _exists(path)) and time.monotonic() < give_up:  # started before its run's ledger
        time.sleep(LEDGER_LOOK_AGAIN)
    with nothing_done():
        main = open_ledger(path, read_only=True) if found else None
    if not isinstance(main, DurableLedger):  # none, or an mjg JSON file
        if main is not None:
            main.close()
        raise InputError(f"no progress ledger at {mask_secrets(path)}: a worker runs the partitions of a run "
                         "with workers")
    stop = StopFlag()
    try:
        with stop_on_signals(stop), closing_stores(service):
            if migration is None:
                return serve_run(service, main, stop, wait)
            return run_partitions(service, main, migration, stop)
    except PlanError as exc:
        raise InputError(one_line(exc)) from exc
    finally:
        main.close()


# --- verify --------------------------------------------------------------------------------------


def verify(
    target: str | Target | MigrationService, *, progress: str | os.PathLike[str] | None = None,
    sample: int | None = DEFAULT_VERIFY_SAMPLE, only: Sequence[str] | None = None, seed: int | None = None,
) -> VerificationResult:
    """:meth:`MigrationService.verify` of the target's migrations against the ledger a run of
    ``target`` would use (``progress``, else the service's own, else ``ferryman-progress.db``);
    ``sample`` None replays every succeeded record.

    Raises:
        InputError: nothing was checked: no such ledger or migration, a live run holds the
            ledger, a store cannot be read.
    """
    service = _service_of(target)
    with nothing_done():
        check_sample(sample)
        service.select(only)
    path = _ledger_path(service, progress)
    if path is not None and not _exists(path):
        raise InputError(f"no progress ledger at {path}: nothing to verify (run the migrations first, "
                         "or give --progress)")
    ledger = service.ledger if path is None else _open_ledger(path)
    assert ledger is not None
    try:
        service.check_stores(only)
        with nothing_done():
            if isinstance(ledger, LedgerReader):
                ledger.refuse_if_live("verify the migrations")
        return service.verify(ledger, sample=sample, only=only, seed=seed)
    finally:
        if path is not None:
            ledger.close()
