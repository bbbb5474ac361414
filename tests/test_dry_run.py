"""Dry runs from Python: read and transform, save nothing, record nothing, say what would be written."""

from __future__ import annotations

from ferryman import MemoryStore, MigrationProgress, MigrationService, Retry, migration
from ferryman.dry_run import DryRunResult, DryRunStore
from ferryman.types import Aggregates, Record


@migration(source="src", dest="dst", batch_size=4, save_retry=Retry(times=0, delay=0))
class Copy:
    def transform(self, aggregates: Aggregates, record: Record) -> list[Record]:
        if record["id"] == 3:
            raise ValueError("bad record 3")
        return [dict(record)]


def test_a_dry_run_resumes_where_the_progress_says_and_changes_nothing() -> None:
    src = MemoryStore("src", records=[{"id": i} for i in range(1, 11)])
    dst = MemoryStore("dst")
    service = MigrationService([src, dst], [Copy])
    progress = MigrationProgress()
    progress.entry(service.plan()[0]).mark_succeeded([1, 2])
    before = progress.copy()
    result = service.dry_run(progress)
    assert isinstance(result, DryRunResult) and result.exit_code == 1  # a record would fail
    report = result.report("Copy")
    assert (report.read, report.skipped, report.failed) == (10, 2, 1)
    assert result.would_write == {"Copy": 7}
    assert dst.records() == [] and progress == before
    assert "Copy: would write 7 record(s) to dst (10 read, 2 already done, 0 ignored, 1 would fail)" in (
        result.summary())


def test_dry_run_store_reads_through() -> None:
    inner = MemoryStore("s", records=[{"id": 1}, {"id": 2}])
    proxy = DryRunStore(inner)
    assert proxy.read_page(None, None, 10) == inner.read_page(None, None, 10)
    assert proxy.get_many([2]) == [{"id": 2}] and proxy.count() == 2
    proxy.save_all([{"id": 3}, {"id": 4}])
    assert proxy.saved == 2 and inner.count() == 2
    assert proxy.describe({"id": 1}) == "s(id=1)"
