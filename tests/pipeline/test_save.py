"""Saving: batches across input records, bisection to the culprits, non-atomic stores."""

from __future__ import annotations

import math

from ferryman import MemoryStore, MigrationProgress, MigrationService, Retry, migration


class CountingStore(MemoryStore):
    def __init__(self, *args, atomic=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.atomic = atomic
        self.calls: list[int] = []

    def save_all(self, records, **kwargs):
        self.calls.append(len(records))
        super().save_all(records, **kwargs)


@migration(source="src", dest="dst", save_batch_size=100, save_retry=Retry(times=0, delay=0))
class Copy:
    def transform(self, aggregates, record):
        return [{"id": record["id"]}]


def migrate(dst, n=512, taken=()):
    src = MemoryStore("src", records=[{"id": i} for i in range(n)])
    for i in taken:
        MemoryStore.save_all(dst, [{"id": i}])
    progress = MigrationProgress()
    result = MigrationService([src, dst], [Copy], checkpoint_interval=0).run(progress)
    return result, progress


def test_outputs_of_many_records_share_one_save():
    dst = CountingStore("dst")
    result, _ = migrate(dst)
    assert result.ok
    assert dst.calls == [100] * 5 + [12]


def test_a_failing_batch_is_bisected_to_its_culprits():
    dst = CountingStore("dst")
    result, progress = migrate(dst, taken=(37, 380))
    assert sorted(f.id for _, f in progress.failed_records()) == [37, 380]
    assert result.reports[0].succeeded == 510
    assert sorted(r["id"] for r in dst.records()) == list(range(512))
    extra = len(dst.calls) - 6
    assert extra <= 2 * 2 * math.ceil(math.log2(100)) + 2  # O(log n) per culprit, not O(n)


def test_non_atomic_stores_get_one_record_per_save():
    dst = CountingStore("dst", atomic=False)
    result, _ = migrate(dst, n=7)
    assert result.ok and dst.calls == [1] * 7


def test_a_record_with_many_outputs_is_never_split():
    @migration(source="src", dest="dst", save_batch_size=3)
    class Fan:
        def transform(self, aggregates, record):
            return [{"id": record["id"] * 10 + k} for k in range(record["id"] + 1)]

    dst = CountingStore("dst")
    src = MemoryStore("src", records=[{"id": i} for i in range(6)])
    assert MigrationService([src, dst], [Fan], checkpoint_interval=0).run().ok
    assert dst.calls == [3, 3, 4, 5, 6]  # (1+2), 3, 4, 5, 6 outputs: whole records per save
