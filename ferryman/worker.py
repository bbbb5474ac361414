"""A worker of a run with several workers: it claims partitions of migrations and runs them.

The coordinator (``ferryman run --workers N``, see :mod:`ferryman.partitioned`) starts workers
as ``python -m ferryman worker TARGET --progress LEDGER --migration KEY``. A worker imports the
TARGET itself, then takes the partitions of the migration one after the other: a partition
whose ledger's lease another live worker holds is left to it, one already settled is skipped.
It ends when no partition is left for it.

A worker started by something else with no migration named (:func:`serve_run`: a pod of a
Kubernetes Job, say, beside a run with ``--engine external``) serves the whole run: the
partitions of each migration the run splits, until the run is over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from .declare import MigrationSpec
from .errors import FerrymanError, LeaseLostError, LedgerBusyError, LedgerWriteError, PlanError, StopRequested
from .events import Observers
from .partitioned import partitions_of
from .pipeline.interpreter import tuned_for_pipeline
from .progress.durable import DurableLedger
from .progress.partitions import SETTLED, PartitionLookups
from .progress.reader import LedgerReader
from .report import MigrationReport, MigrationState, RunResult
from .runner import MigrationRunner
from .service import MigrationService
from .signals import StopFlag, critical

log = logging.getLogger("ferryman")


@dataclass
class WorkerResult:
    """What a worker did: the partitions it ran, and why it stopped early, if it did."""

    partitions: list[int]
    interrupted: str | None = None
    ledger_error: str | None = None

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 1 if self.ledger_error else 0


def run_partitions(service: MigrationService, main: DurableLedger, key: str, stop: StopFlag) -> WorkerResult:
    """Run the partitions of migration ``key`` (its key in ``main``, the main ledger, open read
    only, or its name) that no other worker holds, until none is left or ``stop`` is requested."""
    spec, instance = _migration_of(service, main, key)
    parts = partitions_of(main, spec.identity)
    assert parts is not None  # every durable ledger keeps partitions
    with parts:
        handled = parts.retried()
        round_id = parts.round()
        result = WorkerResult([])
        if round_id is None:
            return result  # no run with workers is at this migration
        for index, key_range in enumerate(parts.ranges()):
            if stop.requested or result.ledger_error:
                break
            if parts.settled(index):
                continue
            report = MigrationReport(spec.identity, spec.name, spec.source, spec.dest)
            with parts.claiming(round_id) as still_open:
                if not still_open:
                    break  # the coordinator that split it is gone, another one folded it
                ledger = parts.ledger(index, main)
                try:
                    claimed = _claim(ledger, report, index)
                except BaseException:
                    ledger.close()
                    raise
            try:
                if claimed:
                    result.partitions.append(index)
                    with _partition_stop(stop, lambda: parts.round() == round_id) as partition_stop:
                        runner = MigrationRunner(
                            spec, instance, service.stores, ledger, report, Observers(), partition_stop,
                            lambda force=False, urgent=True, ledger=ledger: ledger.checkpoint(urgent=urgent or force),
                            key_range=key_range, handled=handled)
                        _run_one(runner, ledger, partition_stop, result)
            finally:
                ledger.close()
        result.interrupted = stop.reason
        return result


ROUND_LOOKS = 2.0
"""Seconds between two looks, while a worker runs a partition, at whether its round is still open."""
STOP_LOOKS = 0.2
"""Seconds between two looks at the worker's own stop (a signal) while it runs a partition."""


@contextmanager
def _partition_stop(stop: StopFlag, round_open: Callable[[], bool]) -> Iterator[StopFlag]:
    """The stop of one partition's run: requested when ``stop`` is (a signal to this worker),
    or once its round is closed (the run that split it stopped, or ended: a worker that run did
    not start, and so cannot signal, then stops at a batch boundary too, saving its progress)."""
    partition = StopFlag()
    done = threading.Event()

    def watch() -> None:
        looked = time.monotonic()
        while not done.wait(STOP_LOOKS):
            if stop.requested:
                partition.request(stop.reason or "stop")
                return
            if time.monotonic() - looked >= ROUND_LOOKS:
                looked = time.monotonic()
                try:
                    closed = not round_open()
                except FerrymanError:  # the ledger cannot be read now: its writes will say so
                    continue
                if closed:
                    partition.request("the run with workers stopped")
                    return

    watcher = threading.Thread(target=watch, name="ferryman-round-watch", daemon=True)
    watcher.start()
    try:
        yield partition
    finally:
        done.set()
        watcher.join()


LOOK_AGAIN = 1.0
"""Seconds between two looks for partitions, for a worker that serves a whole run."""


def serve_run(service: MigrationService, main: DurableLedger, stop: StopFlag, wait: float) -> WorkerResult:
    """Run the partitions of every migration of the target that a run with workers splits,
    for as long as a live run holds ``main`` (the main ledger, open read only): the migrations
    one after the other, as the run splits them. Waits up to ``wait`` seconds for a run to
    hold the ledger (a worker started beside its run); ends once none does (or on ``stop``)."""
    assert isinstance(main, LedgerReader)  # every durable ledger reads too
    result = WorkerResult([])
    give_up = time.monotonic() + wait
    keys = [main.key_of(step.spec.identity, step.writes) for step in service.select(None)]
    while not stop.requested and not result.ledger_error:
        running = main.live_holder() is not None
        if running:  # once the run it waited for is over, it is done
            give_up = 0.0
        ran = False
        for key in keys:
            done = run_partitions(service, main, key, stop)
            ran = ran or bool(done.partitions)
            result.partitions += done.partitions
            result.ledger_error = result.ledger_error or done.ledger_error
        if not running and not ran and time.monotonic() >= give_up:
            break
        if not ran:
            stop.wait(LOOK_AGAIN)
    result.interrupted = stop.reason
    return result


def _migration_of(service: MigrationService, main: DurableLedger, key: str) -> tuple[MigrationSpec, Any]:
    """The migration the ledger keeps under ``key`` (its spec carrying that key), and its
    instance; ``key`` may also be the migration's name or identity, as other commands take."""
    instances = dict(zip(service.plan(), service.migrations))
    for step in service.select(None):
        kept_under = main.key_of(step.spec.identity, step.writes)
        if key in (kept_under, step.spec.identity, step.spec.name):
            return replace(step.spec, identity=kept_under), instances[step.spec.identity]
    raise PlanError(f"the target has no migration {key!r} (a name, an identity or its key in {main.path})", [key])


def _claim(ledger: PartitionLookups, report: MigrationReport, index: int) -> bool:
    """Take the partition's lease; False when a live worker holds it, or when the run before
    this one settled it meanwhile (then this run is recorded as settling it again, empty)."""
    try:
        ledger.begin_run([report])
    except LedgerBusyError:
        return False
    runs = ledger.runs(limit=2)
    if len(runs) == 2 and runs[1].outcome in SETTLED:
        report.state = MigrationState.COMPLETED if runs[1].outcome == "completed" else MigrationState.FAILED
        ledger.end_run(RunResult([report]))
        log.info("%s: partition %d was settled meanwhile", report.name, index)
        return False
    return True


def _run_one(runner: MigrationRunner, ledger: PartitionLookups, stop: StopFlag, result: WorkerResult) -> None:
    """Run the claimed partition to its end and record how it ended (a stop or a lost lease
    ends it early: the next worker or run resumes it)."""
    report = runner.report
    run = RunResult([report])
    try:
        with tuned_for_pipeline():  # as a run in one process is
            runner.run()
    except (StopRequested, KeyboardInterrupt) as exc:
        stop.request(str(exc) or type(exc).__name__)
    except (LeaseLostError, LedgerWriteError) as exc:
        run.ledger_error = result.ledger_error = str(exc)
    finally:
        if report.state is MigrationState.RUNNING:
            report.state = MigrationState.INTERRUPTED
        run.interrupted = stop.reason
        with critical():
            try:
                ledger.end_run(run)
            except (LeaseLostError, LedgerWriteError) as exc:
                result.ledger_error = result.ledger_error or str(exc)
