"""One migration run by several worker processes, each over a key range of its source.

:class:`PartitionedRunner` is a :class:`~ferryman.runner.MigrationRunner` whose main pass is
run by workers (``python -m ferryman worker``, see :mod:`ferryman.worker`) rather than in this
process. Everything else stays the coordinator's, in the main ledger under its lease: the
journal recovery, the retry pass over the records marked RETRY (before the workers start, so a
record is never run by two processes), the migration's start and end.

The source's split is computed once and kept until the partitions are merged; a worker claims
a partition by taking the lease of the partition's own ledger, so a partition runs in one
process at a time. A worker that dies (``kill -9``) leaves its partition's lease to a dead
process: the supervisor starts another worker, which takes it over, folds the destination's
journal back and goes on. Workers never fork from the coordinator: each is a new interpreter
that imports the TARGET itself, so stores and connections are never shared across processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from .declare import MigrationSpec
from .errors import StoreError, one_line
from .launchers import INTERRUPTED, ProcessLauncher, WorkerHandle, WorkerLauncher, how_it_ended
from .progress.durable import DurableLedger
from .progress.ledger import Ledger
from .progress.partitions import PartitionSet, PartitionView
from .progress.reader import LedgerReader
from .runner import MigrationRunner
from .stores.base import ServerConnections, Store

log = logging.getLogger("ferryman")

POLL_INTERVAL = 0.5
"""Seconds between two looks at the workers and their partitions' counters."""

PARTITIONS_PER_WORKER = 4
"""Key ranges per worker: a worker that is done takes the next range left, so a slow range (or
a dead worker's) holds the others up less than with one range per worker."""

COUNTERS = ("read", "skipped", "ignored", "succeeded", "failed", "written", "retried")
"""The report's counters that a partitioned pass adds up over its partitions."""


def partition_refusal(spec: MigrationSpec, stores: dict[str, Store] | Any, ledger: Ledger,
                      target: str | None) -> str | None:
    """Why ``spec`` cannot run in partitions with this ledger and these stores (None: it can).

    Workers are other processes: they must reach the same data (``Store.shared``), write the
    destination at once (``Store.concurrent_writes``) with a journal (what makes a re-run
    partition exactly once), reach the ledger (an SQLite file of this host, or a PostgreSQL
    ledger from any host) and import the same TARGET."""
    if not spec.partition:
        return "it is declared with partition=False"
    if target is None:
        return "workers need a TARGET to import (run it from the command line, or set service.target)"
    if partitions_of(ledger, spec.identity) is None:
        return "workers need an SQLite or PostgreSQL progress ledger"
    unshared = sorted(name for name in {*spec.reads, spec.dest} if not stores[name].shared)
    if unshared:
        return f"store(s) {', '.join(unshared)} cannot be opened by another process"
    dest = stores[spec.dest]
    if not dest.concurrent_writes:
        return f"its destination {dest.name!r} takes one writer at a time"
    if not dest.supports_journal:
        return f"its destination {dest.name!r} keeps no journal"
    return None


def workers_the_servers_take(spec: MigrationSpec, stores: Mapping[str, Store], workers: int) -> int:
    """``workers``, or fewer (at least one) when a database server of the migration's stores has
    not the free connections they would open: each worker may hold one connection per store of
    the migration on that server at once (its source's read, its lookups', its destination's
    write). Says why in a warning when it gives fewer; a server that cannot be asked is skipped,
    with a warning too."""
    servers: dict[str, tuple[ServerConnections, int]] = {}  # what each server has, and its stores here
    for name in sorted({*spec.reads, spec.dest}):
        try:
            found = stores[name].server_connections()
        except StoreError as exc:
            log.warning("%s: could not count the connections of store %s's server (%s); its workers start "
                        "unchecked", spec.name, name, one_line(exc))
            continue
        if found is not None:
            servers[found.server] = (found, servers.get(found.server, (found, 0))[1] + 1)
    allowed = workers
    for server, (found, need) in servers.items():
        fits = found.free // need
        if fits < allowed:
            allowed = max(fits, 1)
            log.warning("%s: %d worker(s) instead of %d: %s has %d free connection(s) (%d in use of the %d it "
                        "takes) and each worker may open %d; raise its max_connections for more",
                        spec.name, allowed, workers, server, found.free, found.in_use, found.limit, need)
    return allowed


def partitions_of(ledger: Ledger, key: str) -> PartitionSet | None:
    """Where ``ledger`` keeps the partitions of migration ``key`` (None: it keeps none)."""
    if isinstance(ledger, DurableLedger) and isinstance(ledger, LedgerReader):
        return ledger.partitions(key)
    return None


class PartitionedRunner(MigrationRunner):
    """A migration whose main pass ``workers`` processes run, one key range each at a time."""

    def __init__(self, *args: Any, workers: int, target: str, launcher: WorkerLauncher | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workers = workers
        self.target = target
        self.launcher = launcher if launcher is not None else ProcessLauncher()
        ledger, parts = self.ledger, partitions_of(self.ledger, self.spec.identity)
        assert isinstance(ledger, DurableLedger) and isinstance(ledger, LedgerReader) and parts is not None
        self.main, self.address = ledger, ledger.address  # partition_refusal said so
        self.parts = parts

    def _main_pass(self) -> None:
        """Split the source, run the partitions in workers, fold them into the main ledger."""
        with self.parts:  # its connection, if any, closed at the end
            self._partitioned_pass()

    def _partitioned_pass(self) -> None:
        self._retry_deferred()  # before any worker can meet these records in its range
        self._fold_partitions()  # left by a coordinator that died: this round starts afresh
        self.main.index_succeeded(self.spec.identity)  # what the workers look up
        self.workers = workers_the_servers_take(self.spec, self.stores, self.workers)
        parts = self.parts
        parts.save_split(self.source.split(self.workers * PARTITIONS_PER_WORKER))
        ranges = parts.ranges()
        if len(ranges) == 1:
            parts.remove()
            log.info("%s: the source gives one key range; it runs in this process", self.spec.name)
            super()._main_pass()
            return
        parts.save_retried(sorted(self._retried, key=repr))
        base = {name: getattr(self.report, name) for name in COUNTERS}
        try:
            unsettled = self._supervise(len(ranges), lambda views: self._add_up(views, base))
        finally:  # a forced stop too: the workers stop at a batch boundary, then all is folded
            self._fold_partitions(base)
        if unsettled and not self.stop.requested:
            self._fatal(f"partition(s) {', '.join(map(str, unsettled))} of {len(ranges)} did not finish: their "
                        "workers failed (see the messages above); run again to go on")

    def _supervise(self, count: int, refresh: Callable[[list[PartitionView]], None]) -> list[int]:
        """Keep up to ``workers`` workers running while partitions are left that no live worker
        holds: a worker killed is replaced, one of an earlier coordinator still at work is waited
        for. Workers failing over and over are not: at most RESTARTS_WITHOUT_PROGRESS per worker
        in a row with no record read in between. Returns the partitions not settled at the end
        (a stop, or workers failing over and over)."""
        starting = min(self.workers, count) if self.launcher.starts_workers else 0
        procs = [self._spawn() for _ in range(starting)]
        if not starting:
            log.warning("%s: waiting for workers to run its %d partitions: ferryman worker %s --progress '%s'",
                        self.spec.name, count, self.target, self.main.path)
        try:
            return self._keep_running(procs, count, refresh)
        except BaseException:  # a second signal, say: the workers stop too, at a batch boundary
            for proc in procs:
                proc.interrupt()
            raise

    def _keep_running(self, procs: list[WorkerHandle], count: int,
                      refresh: Callable[[list[PartitionView]], None]) -> list[int]:
        """:meth:`_supervise`'s loop over ``procs``, the live workers (kept up to date in place,
        so that whoever started them can stop them)."""
        in_a_row, read_at_failure = 0, -1
        forwarded = False
        idle_since, read_before = time.monotonic(), self.report.read
        while True:
            time.sleep(POLL_INTERVAL)
            views = [self.parts.view(i) for i in range(count)]
            refresh(views)
            if any(view.held for view in views) or self.report.read != read_before:
                idle_since, read_before = time.monotonic(), self.report.read
            elif not self.launcher.starts_workers and time.monotonic() - idle_since >= REMIND_AFTER:
                log.warning("%s: still waiting: no worker holds any of its partitions (ferryman worker %s "
                            "--progress '%s')", self.spec.name, self.target, self.main.path)
                idle_since = time.monotonic()
            self.observer.page_done(self.report)
            self.checkpoint(urgent=False)
            if self.stop.requested and not forwarded:
                for proc in procs:  # in sessions of their own, they hear of a Ctrl-C from here alone
                    proc.interrupt()
                forwarded = True
            codes = [(p, p.poll()) for p in procs]
            stopped = (None, 0, INTERRUPTED) if self.stop.requested else (None, 0)
            failed = [code for _, code in codes if code is not None and code not in stopped]
            procs[:] = [p for p, code in codes if code is None]
            if failed:
                log.warning("%s: a worker %s", self.spec.name, how_it_ended(failed[0]))
                in_a_row = 1 if self.report.read > read_at_failure else in_a_row + 1
                read_at_failure = self.report.read
            left = [i for i, view in enumerate(views) if not view.settled]
            if self.stop.requested or not left or in_a_row > RESTARTS_WITHOUT_PROGRESS * self.workers:
                if not procs:
                    return [i for i in range(count) if not self.parts.view(i).settled]
                continue
            free = [i for i in left if not views[i].held] if self.launcher.starts_workers else []
            for _ in range(min(len(free), self.workers - len(procs))):
                log.info("%s: starting a worker for partition(s) %s", self.spec.name, ", ".join(map(str, free)))
                procs.append(self._spawn())

    def _spawn(self) -> WorkerHandle:
        return self.launcher.start(self.target, self.address, self.spec.identity)

    def _add_up(self, views: list[PartitionView], base: dict[str, int]) -> None:
        """The report's counters: this process's, plus every partition's."""
        totals = dict(base)
        last_error = None
        for view in views:
            report = view.report()
            if report is not None:
                for name in COUNTERS:
                    totals[name] += int(report.get(name) or 0)
                last_error = report.get("last_error") or last_error
        for name, value in totals.items():
            setattr(self.report, name, value)
        if last_error:
            self.report.last_error = last_error

    def _fold_partitions(self, base: dict[str, int] | None = None) -> None:
        """Fold every partition's progress into the main ledger and remove the partitions;
        with ``base`` (this process's counters), the report's counters add theirs up first.

        Each partition's ledger is taken over first (after waiting for a live worker still at
        it, e.g. one of a coordinator killed before), which raises its fence in the destination
        and folds back the batches its last worker committed after its last checkpoint. The main
        ledger is made durable before the partitions' journal entries and files go: a crash in
        between folds them again, which records the same records again."""
        self.parts.close()
        indexes = self.parts.existing()
        if not indexes:
            self.parts.remove()
            return
        self._wait_for_holders(indexes)
        views = {i: self.parts.view(i) for i in indexes}  # no worker holds one any more: they stay so
        if base is not None:
            self._add_up(list(views.values()), base)
        key, dest = self.spec.identity, self.stores[self.spec.dest]
        owners = []
        for i in indexes:
            if views[i].outcome is None:  # its worker died: fence it off, fold its journal
                self.parts.take_over(i, self.main, key, dest)
            fatal, owner = self.parts.merge_into(self.main, key, i)
            if fatal and not self.report.fatal_error:
                self.report.fatal_error = self.report.last_error = fatal[0].splitlines()[0]
            if owner is not None:
                owners.append(owner)
        self.checkpoint(force=True)
        for owner in owners:  # the newest entry stays: this ledger's mark on the destination
            dest.delete_journal(f"{self.main.uid}/{owner}:{key}", keep_last=True)
        self.parts.remove()

    def _wait_for_holders(self, indexes: list[int]) -> None:
        """Wait while live workers hold some of the partitions (they end their range, then exit)."""
        said = False
        while any(self.parts.view(i).held for i in indexes):
            if not said:
                log.warning("%s: waiting for the workers still at its partitions to stop", self.spec.name)
                said = True
            time.sleep(POLL_INTERVAL)


REMIND_AFTER = 60.0
"""Seconds a run whose workers are started elsewhere waits with none at work before it says so again."""

RESTARTS_WITHOUT_PROGRESS = 3
"""Workers (per worker allowed) that may fail in a row, no record read in between, before the
migration fails: a worker that cannot start is not started for ever."""
