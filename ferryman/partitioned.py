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
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .declare import MigrationSpec
from .progress.ledger import Ledger
from .progress.sqlite.parts import PartitionSet
from .progress.sqlite.writer import SqliteLedger, parts_directory
from .runner import MigrationRunner
from .stores.base import Store

log = logging.getLogger("ferryman")

POLL_INTERVAL = 0.5
"""Seconds between two looks at the workers and their partitions' counters."""

COUNTERS = ("read", "skipped", "ignored", "succeeded", "failed", "written", "retried")
"""The report's counters that a partitioned pass adds up over its partitions."""


def partition_refusal(spec: MigrationSpec, stores: dict[str, Store] | Any, ledger: Ledger,
                      target: str | None) -> str | None:
    """Why ``spec`` cannot run in partitions with this ledger and these stores (None: it can).

    Workers are other processes: they must reach the same data (``Store.shared``), write the
    destination at once (``Store.concurrent_writes``) with a journal (what makes a re-run
    partition exactly once), share the ledger's directory and import the same TARGET."""
    if not spec.partition:
        return "it is declared with partition=False"
    if target is None:
        return "workers need a TARGET to import (run it from the command line, or set service.target)"
    if not isinstance(ledger, SqliteLedger):
        return "workers need an SQLite progress ledger"
    unshared = sorted(name for name in {*spec.reads, spec.dest} if not stores[name].shared)
    if unshared:
        return f"store(s) {', '.join(unshared)} cannot be opened by another process"
    dest = stores[spec.dest]
    if not dest.concurrent_writes:
        return f"its destination {dest.name!r} takes one writer at a time"
    if not dest.supports_journal:
        return f"its destination {dest.name!r} keeps no journal"
    return None


class PartitionedRunner(MigrationRunner):
    """A migration whose main pass ``workers`` processes run, one key range each at a time."""

    def __init__(self, *args: Any, workers: int, target: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workers = workers
        self.target = target
        ledger = self.ledger
        assert isinstance(ledger, SqliteLedger)  # partition_refusal said so
        self.main = ledger
        self.parts = PartitionSet(parts_directory(ledger.path, self.spec.identity))

    def _main_pass(self) -> None:
        """Split (or take the kept split), run the partitions in workers, merge them."""
        self._retry_deferred()  # before any worker can meet these records in its range
        self.checkpoint(force=True)  # what the retry pass did, for the workers to read
        parts = self.parts
        if parts.boundaries() is None:
            parts.save_split(self.source.split(self.workers))
        ranges = parts.ranges()
        if len(ranges) == 1:
            parts.remove()
            log.info("%s: the source gives one key range; it runs in this process", self.spec.name)
            super()._main_pass()
            return
        parts.save_retried(sorted(self._retried, key=repr))
        base = {name: getattr(self.report, name) for name in COUNTERS}
        since = time.time()
        unsettled = self._supervise(len(ranges), lambda: self._add_up(len(ranges), base, since))
        self._add_up(len(ranges), base, since)
        if unsettled and not self.stop.requested:
            self._fatal(f"partition(s) {', '.join(map(str, unsettled))} of {len(ranges)} did not finish: their "
                        "workers failed (see the messages above); run again to resume them")
        if not unsettled:
            self._merge(len(ranges))

    def _supervise(self, count: int, refresh: Callable[[], None]) -> list[int]:
        """Keep up to ``workers`` workers running while partitions are left, a new one in the
        place of one that failed, as long as the partitions move on between two failures (at
        most RESTARTS_WITHOUT_PROGRESS per worker in a row without a record read); the
        partitions not settled at the end (a stop, or workers failing over and over)."""
        procs = [self._spawn() for _ in range(min(self.workers, count))]
        in_a_row, done_at_failure = 0, -1
        forwarded = False
        while procs:
            time.sleep(POLL_INTERVAL)
            refresh()
            if self.stop.requested and not forwarded:
                for proc in procs:  # a signal the terminal sent them too is harmless: one stop
                    proc.send_signal(signal.SIGINT)
                forwarded = True
            ended = [p for p in procs if p.poll() is not None]
            procs = [p for p in procs if p not in ended]
            failed = [p.returncode for p in ended if p.returncode != 0]
            # a failed worker is replaced; so is the last one when a partition is still open
            # (held by a worker that died meanwhile)
            wanted = len(failed) + (1 if ended and not procs else 0)
            left = self._unsettled(count) if wanted and not self.stop.requested else []
            if failed:
                done = self.report.read
                in_a_row = 1 if done > done_at_failure else in_a_row + 1
                done_at_failure = done
            for _ in range(min(wanted, len(left)) if in_a_row <= RESTARTS_WITHOUT_PROGRESS * self.workers else 0):
                log.warning("%s: %s; starting a worker for partition(s) %s", self.spec.name,
                            f"a worker ended with exit code {failed[0]}" if failed else "partitions are left",
                            ", ".join(map(str, left)))
                procs.append(self._spawn())
            self.observer.page_done(self.report)
            self.checkpoint(urgent=False)
        return self._unsettled(count)

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(worker_command(self.target, self.main.path, self.spec.identity))

    def _unsettled(self, count: int) -> list[int]:
        return [i for i in range(count) if not self.parts.settled(i)]

    def _add_up(self, count: int, base: dict[str, int], since: float) -> None:
        """The report's counters: this process's, plus every partition's in this round."""
        totals = dict(base)
        last_error = None
        for i in range(count):
            report = self.parts.report(i, since)
            if report is not None:
                for name in COUNTERS:
                    totals[name] += int(report.get(name) or 0)
                last_error = report.get("last_error") or last_error
        for name, value in totals.items():
            setattr(self.report, name, value)
        if last_error:
            self.report.last_error = last_error

    def _merge(self, count: int) -> None:
        """Fold every partition into the main ledger, make it durable, then clean the
        partitions' journal entries and files (in that order: a crash in between merges
        again, which changes nothing)."""
        key, dest = self.spec.identity, self.stores[self.spec.dest]
        owners = []
        for i in range(count):
            fatal, owner = self.parts.merge_into(self.main, key, i)
            if fatal and not self.report.fatal_error:
                self.report.fatal_error = self.report.last_error = fatal[0].splitlines()[0]
            if owner is not None:
                owners.append(owner)
        self.checkpoint(force=True)
        for owner in owners:  # the newest entry stays: this ledger's mark on the destination
            dest.delete_journal(f"{self.main.uid}/{owner}:{key}", keep_last=True)
        self.parts.remove()


RESTARTS_WITHOUT_PROGRESS = 3
"""Workers (per worker allowed) that may fail in a row, no record read in between, before the
migration fails: a worker that cannot start is not started for ever."""


def worker_command(target: str, progress: str, key: str) -> Sequence[str]:
    """The command line of a worker: a new interpreter importing the target itself."""
    return [sys.executable, "-m", "ferryman", "worker", target, "--progress", progress, "--migration", key]
