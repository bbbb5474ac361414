"""One migration, start to end: the only place the pipeline stages are called in order.

For each page of input records: drop those already migrated or marked IGNORE, then
start_reduction -> match and reduce -> transform -> save, then record the page's successes and
failures in the ledger and checkpoint. Records that fail in a phase with retries left are run
again through the whole pipeline with fresh aggregates after the phase's delay: after the main
pass, all together, when only some records of a page failed (so a few bad records cost one pause
per migration, not one per page); at once, after the pause, when the whole page failed (an
outage, which the next pages would meet too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from itertools import compress
from typing import Any

from .declare import MigrationSpec
from .defaults import DEFAULT_ALL_FAILED_LIMIT, FAILURE_RATIO_MIN_RECORDS
from .errors import LeaseLostError, LedgerWriteError, StopRequested, StoreUnusableError
from .events import RunObserver
from .pipeline.attempt import Transformer
from .pipeline.pages import SourceUnreadable, pages_by_id, source_pages, with_retry
from .pipeline.save import PendingSave, Saver
from .pipeline.work import Attempt, Phase, Work, describe_error, format_error
from .progress.ledger import Ledger
from .progress.model import Action, FailedRecord
from .report import MigrationReport, MigrationState
from .signals import StopFlag
from .stores.base import Store
from .types import Record, RecordId

log = logging.getLogger("ferryman")


class MigrationRunner:
    """Runs one migration against its stores, recording everything in the ledger."""

    def __init__(
        self,
        spec: MigrationSpec,
        instance: Any,
        stores: Mapping[str, Store],
        ledger: Ledger,
        report: MigrationReport,
        observer: RunObserver,
        stop: StopFlag,
        checkpoint: Callable[..., None],
        max_failures: int | float | None = None,
        key_range: tuple[RecordId | None, RecordId | None] = (None, None),
        handled: Iterable[RecordId] = (),
    ) -> None:
        """``key_range`` ``(after, upto]`` bounds the main pass to one partition of the source
        (None: unbounded); ``handled`` are ids this run's retry pass already ran (in another
        process), which the main pass leaves out as its own retry pass's."""
        self.spec = spec
        self.instance = instance
        self.stores = stores
        self.source = stores[spec.source]
        self.ledger = ledger
        self.report = report
        self.observer = observer
        self.stop = stop
        self.checkpoint = checkpoint
        self.max_failures = spec.max_failures if max_failures is None else max_failures
        """The failure budget: the run's (``--max-failures``) over the migration's own."""
        self.saver = Saver(
            spec, instance, self.source, stores[spec.dest], stores,
            journal_for=(lambda ids: ledger.journal_for(spec.identity, ids)) if ledger.journals else None,
            should_stop=lambda: stop.requested, before_write=ledger.assert_held,
        )
        self.transformer = Transformer(spec, instance, stores, report)
        self._attempts: dict[tuple[RecordId, Phase], int] = {}
        self._deferred: dict[RecordId, float] = {}
        """Ids to run again after the main pass, with the pause their failure asks for."""
        self.key_range = key_range
        self._retried: set[RecordId] = set(handled)
        """Ids the retry passes handled; the main pass skips them, so the ledger
        never needs to look up ids this run recorded itself (keyset paging reads each id once)."""

    def run(self) -> MigrationReport:
        """Run the migration to its end, or until it must stop.

        Whatever escapes the migration's own code (an exception, ``SystemExit``, any
        ``BaseException``) ends it ``failed`` with the cause as its fatal error, never
        ``completed``; the run goes on with independent migrations. A stop (a second signal,
        ``KeyboardInterrupt``) and a ledger that cannot take more (lease lost, disk full) end
        it too and are raised on: the run stops.
        """
        spec, report = self.spec, self.report
        report.state = MigrationState.RUNNING
        report.started_at = time.time()
        self.ledger.start_migration(spec.identity)
        report.total = self._count_source() if self.key_range == (None, None) else None
        self.observer.migration_started(report)
        finished = False
        try:
            self._recover_journal()
            self._retry_previous_failures()
            self._main_pass()
            self._retry_deferred()
            finished = True
        except SourceUnreadable as exc:
            self._fatal(exc.args[0], exc.__cause__ or exc)
        except _BudgetExceeded as exc:
            self._fatal(str(exc))
        except StoreUnusableError as exc:
            self._fatal("a store the migration writes or reads is unusable", exc)
        except (StopRequested, KeyboardInterrupt):
            raise
        except (LeaseLostError, LedgerWriteError) as exc:
            report.fatal_error = report.last_error = describe_error(exc)
            raise
        except BaseException as exc:
            self._fatal(f"migration {spec.name} stopped by an error its code raised", exc)
        finally:
            report.finished_at = time.time()
            report.state = self._final_state(finished)
            self._finish()
        return report

    def _main_pass(self) -> None:
        """Every record of the source (of its key range), page by page."""
        after, upto = self.key_range
        self._run_pages(source_pages(self.source, self.spec.batch_size, self.spec.load_retry, self.stop.wait,
                                     after=after, upto=upto), main_pass=True)

    def _fatal(self, what: str, cause: BaseException | None = None) -> None:
        """End the migration with one fatal error: ``what`` happened, because of ``cause``."""
        if cause is None:
            self.report.fatal_error = self.report.last_error = what
            self.ledger.record_fatal(self.spec.identity, what)
            return
        self.report.fatal_error = self.report.last_error = f"{what}: {describe_error(cause)}"
        self.ledger.record_fatal(self.spec.identity, format_error(cause))

    def _final_state(self, finished: bool) -> MigrationState:
        if self.stop.timeout is not None:  # out of time: failed, resumed by the next run
            self.report.fatal_error = self.report.fatal_error or self.stop.timeout
            self.report.last_error = self.report.fatal_error
            return MigrationState.FAILED
        if self.report.fatal_error or self.report.failed:
            return MigrationState.FAILED
        if not finished or self.stop.requested:
            return MigrationState.INTERRUPTED
        return MigrationState.COMPLETED

    def _finish(self) -> None:
        """Tell the ledger how the migration ended; one that cannot record it fails it."""
        try:
            self.ledger.finish_migration(self.spec.identity, self.report.state is MigrationState.COMPLETED)
        except (LeaseLostError, LedgerWriteError) as exc:
            self.report.state = MigrationState.FAILED
            self.report.fatal_error = self.report.fatal_error or describe_error(exc)
            raise

    def _recover_journal(self) -> None:
        """Fold back batches a crash left saved but unrecorded; without it, no safe resume."""
        dest = self.stores[self.spec.dest]
        with_retry(lambda: self.ledger.recover(self.spec.identity, dest), self.spec.load_retry,
                   self.stop.wait, f"destination {dest.name!r} journal unreadable")

    def _count_source(self) -> int | None:
        try:
            return self.source.count()
        except Exception as exc:  # a total is nice to have, never worth failing for
            log.warning("could not count %s: %s", self.spec.source, describe_error(exc))
            return None

    def _retry_previous_failures(self) -> None:
        ids = self.ledger.retry_ids(self.spec.identity)
        if not ids:
            return
        log.info("%s: retrying %d failed record(s) first", self.spec.name, len(ids))
        found = 0

        def counted(pages: Iterable[list[Record]]) -> Iterator[list[Record]]:
            nonlocal found
            for page in pages:
                found += len(page)
                self.report.read += len(page)  # the main pass will not meet them again
                yield page

        self._run_pages(counted(self._pages_by_id(ids)), main_pass=False)
        if self.stop.requested:
            return
        if found < len(ids):
            log.warning(
                "%s: %d failed record(s) marked RETRY are no longer in %s; their entries are kept",
                self.spec.name, len(ids) - found, self.spec.source,
            )

    def _run_pages(self, pages: Iterable[list[Record]], main_pass: bool) -> None:
        """Pages through the pipeline, two at a time: while the database saves page n, page n+1
        is read, matched and transformed; then page n is settled and recorded.

        Page n+1's save starts only after page n is recorded, so no batch is in flight while
        the ledger checkpoints (and clears the destination's journal of what it holds)."""
        in_flight: _Page | None = None
        try:
            for records in pages:
                if self.stop.requested:
                    break
                page = self._prepare(records, main_pass)
                if in_flight is not None:
                    done, in_flight = in_flight, None
                    self._complete(done)
                    del done  # freed now, while its memory is in cache, not after the next read
                page.pending = self.saver.start(page.attempt)
                in_flight = page
        finally:  # even when stopped at once: what was saved is recorded
            if in_flight is not None:
                self._complete(in_flight)

    def _prepare(self, records: list[Record], main_pass: bool) -> _Page:
        """Drop what is done or ignored, then run the page through match and transform.

        Every source record this run meets is counted once in ``read``, and ends counted once
        more: migrated, failed, already done (an earlier run), ignored, or unfinished (a stop).
        A record the retry pass at the start handled is not met again by the main pass.
        """
        report = self.report
        ids = self.source.ids_of(records)
        done = self.ledger.succeeded_among(self.spec.identity, ids)
        ignored = self.ledger.ignored_among(self.spec.identity, ids)
        retried, deferred = self._retried, self._deferred
        again = retried.intersection(ids) | (deferred.keys() & ids) if main_pass and (retried or deferred) else set()
        if main_pass:
            report.read += len(records) - len(again)
            report.skipped += len(done - again)
            report.ignored += len(ignored - again)
            succeeded, failed = self.ledger.done_before(self.spec.identity, ids)
            report.succeeded += len(succeeded)
            report.failed += len(failed)
            again |= succeeded | failed
        skip = done | ignored | again
        if skip:
            kept = [i not in skip for i in ids]
            ids, records = list(compress(ids, kept)), list(compress(records, kept))
        return _Page(main_pass, self._attempt(ids, records))

    def _attempt(self, ids: list[RecordId], records: list[Record]) -> Attempt:
        """One attempt, up to the save: fresh aggregates, so nothing of an earlier one leaks."""
        return self.transformer.attempt(ids, records)

    def _complete(self, page: _Page) -> None:
        """Settle the page's save, run what a retry may fix, record it all in the ledger."""
        attempt, pending = page.attempt, page.pending
        try:
            while True:
                failed = attempt.failed
                if pending is not None:
                    try:
                        self.saver.finish(pending)
                    finally:
                        page.succeeded += pending.succeeded
                    failed = failed + pending.failed
                again = self._next_attempt(failed, attempt.size, page.failures)
                if not again:
                    break
                attempt = self._attempt([w.id for w in again], [w.record for w in again])
                pending = self.saver.start(attempt)
        finally:
            self._record(page)

    def _record(self, page: _Page) -> None:
        report, succeeded, failures = self.report, page.succeeded, page.failures
        self.ledger.record(self.spec.identity, succeeded, failures)
        report.succeeded += len(succeeded)
        report.failed += len(failures)
        if log.isEnabledFor(logging.INFO):
            later = f", {len(self._deferred):,} to try again" if self._deferred else ""
            total = f" of {report.total:,}" if report.total is not None else ""
            log.info("%s: %s: %d migrated, %d failed%s (so far: %s migrated, %s failed%s)", self.spec.name,
                     "page" if page.main_pass else "records tried again", len(succeeded), len(failures), later,
                     f"{report.succeeded:,}", f"{report.failed:,}", total)
        report.written = self.saver.written
        if not page.main_pass:
            self._retried.update(succeeded)
            self._retried.update(f.id for f in failures)
        for failure in failures:
            self.observer.record_failed(report, failure)
        self.checkpoint(urgent=not self.saver.journaled)
        self.observer.page_done(report)
        if failures:
            self._check_budget()

    def _check_budget(self) -> None:
        """Stop the migration once its failures exceed the budget (see ``max_failures``)."""
        report, budget = self.report, self.max_failures
        failed, attempted = report.failed, report.failed + report.succeeded
        if budget is None:
            exceeded = report.succeeded == 0 and failed >= DEFAULT_ALL_FAILED_LIMIT
            rule = f"the first {failed} records attempted all failed"
        elif isinstance(budget, float):
            exceeded = attempted >= FAILURE_RATIO_MIN_RECORDS and failed > budget * attempted
            rule = f"{failed} of {attempted} records attempted failed, more than max_failures={budget:g}"
        else:
            exceeded = failed > budget
            rule = f"{failed} records failed, more than max_failures={budget}"
        if exceeded:
            raise _BudgetExceeded(f"failure budget exceeded: {rule}; the migration stopped (records "
                                  "not reached are left for the next run): fix the cause, then run again")

    def _next_attempt(self, failed: list[Work], size: int, failures: list[FailedRecord]) -> list[Work]:
        """The failed records to run again at once (after the pause), if the whole attempt of
        ``size`` records failed; when only some failed, they are deferred until after the main pass."""
        again, delay = self._sort_failures(failed, self._attempts, failures)
        if not again:
            return []
        if len(again) < size:  # some records failed, not everything: retry them later
            for w in again:
                self._deferred[w.id] = max(delay, self._deferred.get(w.id, 0.0))
            log.info("%s: %d record(s) failed with tries left (first: %s); tried again after this pass",
                     self.spec.name, len(again), self._first_error(again))
            return []
        log.info("%s: all %d record(s) of the attempt failed (first: %s); trying them again in %g s",
                 self.spec.name, len(again), self._first_error(again), delay)
        if self.stop.wait(delay):  # everything failed (an outage): pause, then this page again
            return []  # records not retried because of a stop stay unrecorded: re-run next time
        return again

    def _first_error(self, works: list[Work]) -> str:
        """The first of these failed records and its error, for a log line."""
        w = works[0]
        return f"{self._describe(w.record)}: {describe_error(w.error) if w.error else '-'}"

    def _retry_deferred(self) -> None:
        """Run the records whose failure a retry may fix, after one pause for all of them.

        Retrying them inside the main pass would pause every page that has one failing record:
        with 1% of records failing, a 1M-row migration would sleep for half an hour.
        """
        while self._deferred and not self.stop.requested:
            delay = max(self._deferred.values())
            ids = list(self._deferred)
            self._deferred.clear()
            log.info("%s: trying %d failed record(s) again in %g s", self.spec.name, len(ids), delay)
            if self.stop.wait(delay):
                return  # unrecorded: re-run next time
            self._run_pages(self._pages_by_id(ids), main_pass=False)

    def _pages_by_id(self, ids: list[RecordId]) -> Iterator[list[Record]]:
        return pages_by_id(self.source, ids, self.spec.batch_size, self.spec.load_retry, self.stop.wait)

    def _sort_failures(
        self, failed: list[Work], attempts: dict[tuple[RecordId, Phase], int], failures: list[FailedRecord]
    ) -> tuple[list[Work], float]:
        """Split failed records into those to run again (with the pause) and final failures."""
        again: list[Work] = []
        delay = 0.0
        for w in failed:
            assert w.error is not None and w.phase is not None  # a failed Work has both
            self.report.last_error = f"{self._describe(w.record)}: {describe_error(w.error)}"
            key = (w.id, w.phase)
            attempts[key] = attempts.get(key, 0) + 1
            if w.retry is not None and attempts[key] <= w.retry.times:
                again.append(w)
                delay = max(delay, w.retry.delay)
                self.report.retried += 1
            else:
                failures.append(FailedRecord(
                    id=w.id, description=self._describe(w.record), cause=w.cause(),
                    action=Action.RETRY, timestamp=datetime.now(),
                ))
        for w in failed:  # the causes are text now
            w.forget_traceback()
        return again, delay

    def _describe(self, record: Record) -> str:
        try:
            return self.source.describe(record)
        except Exception as exc:
            return f"{self.spec.source}(<describe failed: {describe_error(exc)}>)"


class _BudgetExceeded(Exception):
    """The migration's failures exceeded its failure budget."""


class _Page:
    """One page on its way: its first attempt, that attempt's save, and what to record."""

    __slots__ = ("attempt", "failures", "main_pass", "pending", "succeeded")

    def __init__(self, main_pass: bool, attempt: Attempt) -> None:
        self.main_pass = main_pass
        self.attempt = attempt
        self.pending: PendingSave | None = None
        self.succeeded: list[RecordId] = []
        self.failures: list[FailedRecord] = []
