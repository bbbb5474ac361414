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
import traceback
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from .declare import MigrationSpec
from .events import RunObserver
from .pipeline.match import match_and_reduce, start_reduction
from .pipeline.pages import SourceUnreadable, pages_by_id, source_pages, with_retry
from .pipeline.save import Saver
from .pipeline.transform import transform
from .pipeline.work import Phase, Work, describe_error
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
    ) -> None:
        self.spec = spec
        self.instance = instance
        self.stores = stores
        self.source = stores[spec.source]
        self.ledger = ledger
        self.report = report
        self.observer = observer
        self.stop = stop
        self.checkpoint = checkpoint
        self.saver = Saver(
            spec, instance, self.source, stores[spec.dest], stores,
            journal_for=(lambda ids: ledger.journal_for(spec.identity, ids)) if ledger.journals else None,
            should_stop=lambda: stop.requested,
        )
        self._attempts: dict[tuple[RecordId, Phase], int] = {}
        self._deferred: dict[RecordId, float] = {}
        """Ids to run again after the main pass, with the pause their failure asks for."""
        self._retried: dict[RecordId, bool] = {}
        """Ids the retry pass handled (True: migrated); the main pass skips them, so the ledger
        never needs to look up ids this run recorded itself (keyset paging reads each id once)."""

    def run(self) -> MigrationReport:
        spec, report = self.spec, self.report
        report.state = MigrationState.RUNNING
        report.started_at = time.time()
        self.ledger.start_migration(spec.identity)
        report.total = self._count_source()
        self.observer.migration_started(report)
        try:
            self._recover_journal()
            self._retry_previous_failures()
            for page in source_pages(self.source, spec.batch_size, spec.load_retry, self.stop.wait):
                if self.stop.requested:
                    break
                self._run_page(page, main_pass=True)
            self._retry_deferred()
        except SourceUnreadable as exc:
            cause = exc.__cause__ or exc
            report.fatal_error = report.last_error = f"{exc.args[0]}: {describe_error(cause)}"
            self.ledger.record_fatal(
                spec.identity, "".join(traceback.format_exception(cause)).rstrip()
            )
        finally:
            report.finished_at = time.time()
            report.state = self._final_state()
            self.ledger.finish_migration(spec.identity, report.state is MigrationState.COMPLETED)
        return report

    def _final_state(self) -> MigrationState:
        if self.report.fatal_error or self.report.failed:
            return MigrationState.FAILED
        if self.stop.requested:
            return MigrationState.INTERRUPTED
        return MigrationState.COMPLETED

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
        for page in pages_by_id(self.source, ids, self.spec.batch_size, self.spec.load_retry, self.stop.wait):
            if self.stop.requested:
                return
            found += len(page)
            self._run_page(page, main_pass=False)
        if found < len(ids):
            log.warning(
                "%s: %d failed record(s) marked RETRY are no longer in %s; their entries are kept",
                self.spec.name, len(ids) - found, self.spec.source,
            )

    def _run_page(self, records: list[Record], main_pass: bool) -> None:
        identity, report = self.spec.identity, self.report
        id_of = self.source.id_of
        ids = [id_of(r) for r in records]
        done = self.ledger.succeeded_among(identity, ids)
        ignored = self.ledger.ignored_among(identity, ids)
        retried = self._retried
        if main_pass:
            if retried:
                done |= {i for i in ids if retried.get(i)}
            report.read += len(records)
            report.skipped += len(done)
            report.ignored += len(ignored)
        skip = done | ignored
        if main_pass and (retried or self._deferred):
            skip |= retried.keys() | self._deferred.keys()
        todo = [(i, r) for i, r in zip(ids, records) if i not in skip] if skip else list(zip(ids, records))
        succeeded: list[RecordId] = []
        failures: list[FailedRecord] = []
        try:
            if todo:
                self._migrate(todo, succeeded, failures)
        finally:  # even when stopped at once: what was saved is recorded
            self.ledger.record(identity, succeeded, failures)
            report.succeeded += len(succeeded)
            report.failed += len(failures)
            report.written = self.saver.written
            if not main_pass:
                retried.update(dict.fromkeys(succeeded, True))
                retried.update((f.id, False) for f in failures)
            for failure in failures:
                self.observer.record_failed(report, failure)
            self.checkpoint(urgent=not self.saver.journaled)
            self.observer.page_done(report)

    def _migrate(
        self, todo: list[tuple[RecordId, Record]], succeeded: list[RecordId], failures: list[FailedRecord]
    ) -> None:
        pending: Iterable[tuple[RecordId, Record]] = todo
        while True:
            works = [Work(record, record_id) for record_id, record in pending]
            try:
                start_reduction(self.spec, self.instance, works)
                match_and_reduce(self.spec, self.instance, works, self.stores)
                transform(self.spec, self.instance, works)
                self.saver.save(works)
            finally:
                succeeded.extend(w.id for w in works if w.saved)
            again, delay = self._sort_failures(works, self._attempts, failures)
            if not again:
                return
            if len(again) < len(works):  # some records failed, not everything: retry them later
                for record_id, _ in again:
                    self._deferred[record_id] = max(delay, self._deferred.get(record_id, 0.0))
                return
            if self.stop.wait(delay):  # everything failed (an outage): pause, then this page again
                return  # records not retried because of a stop stay unrecorded: re-run next time
            pending = again

    def _retry_deferred(self) -> None:
        """Run the records whose failure a retry may fix, after one pause for all of them.

        Retrying them inside the main pass would pause every page that has one failing record:
        with 1% of records failing, a 1M-row migration would sleep for half an hour.
        """
        while self._deferred and not self.stop.requested:
            delay = max(self._deferred.values())
            ids = list(self._deferred)
            self._deferred.clear()
            if self.stop.wait(delay):
                return  # unrecorded: re-run next time
            for page in pages_by_id(self.source, ids, self.spec.batch_size, self.spec.load_retry, self.stop.wait):
                if self.stop.requested:
                    return
                self._run_page(page, main_pass=False)

    def _sort_failures(
        self, works: list[Work], attempts: dict[tuple[RecordId, Phase], int], failures: list[FailedRecord]
    ) -> tuple[list[tuple[RecordId, Record]], float]:
        """Split failed works into those to run again (with the pause) and final failures."""
        again: list[tuple[RecordId, Record]] = []
        delay = 0.0
        for w in works:
            if w.error is None or w.phase is None:
                continue
            self.report.last_error = f"{self._describe(w.record)}: {describe_error(w.error)}"
            key = (w.id, w.phase)
            attempts[key] = attempts.get(key, 0) + 1
            if w.retry is not None and attempts[key] <= w.retry.times:
                again.append((w.id, w.record))
                delay = max(delay, w.retry.delay)
                self.report.retried += 1
            else:
                failures.append(FailedRecord(
                    id=w.id, description=self._describe(w.record), cause=w.cause(),
                    action=Action.RETRY, timestamp=datetime.now(),
                ))
        return again, delay

    def _describe(self, record: Record) -> str:
        try:
            return self.source.describe(record)
        except Exception as exc:
            return f"{self.spec.source}(<describe failed: {describe_error(exc)}>)"
