"""The partitions of a run with workers, on both durable ledgers: their split, their ledgers,
their status, the fold."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import pairwise

import ledgers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman import Action, FailedRecord, MigrationReport, MigrationState, RunResult, ledger_commands
from ferryman.console import format_status
from ferryman.progress.durable import DurableLedger
from ferryman.progress.partitions import PartitionLookups, PartitionSet, partition_status
from ferryman.progress.reader import LedgerReader

KEY = "shop.CopyItems"

ids = st.one_of(st.integers(-2**63, 2**63 - 1), st.text(max_size=8),
                st.tuples(st.integers(0, 9), st.text(max_size=3)))
FIXTURE_IN_GIVEN = [HealthCheck.function_scoped_fixture]


def parts_of(ledger: DurableLedger) -> PartitionSet:
    assert isinstance(ledger, LedgerReader)
    parts = ledger.partitions(KEY)
    assert parts is not None
    return parts


@pytest.fixture
def main(ledger_backend: ledgers.Backend) -> Iterator[DurableLedger]:
    ledger = ledger_backend.open()
    ledger.begin_run([])
    ledger.start_migration(KEY)
    with parts_of(ledger) as parts:
        parts.save_split([1_000_000])
    yield ledger
    with parts_of(ledger) as parts:
        parts.remove()
    ledger.close()


def partition(main: DurableLedger, index: int) -> PartitionLookups:
    with parts_of(main) as parts:
        return parts.ledger(index, main)


def report() -> MigrationReport:
    return MigrationReport(KEY, "copy_items", "src", "dst")


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURE_IN_GIVEN)
@given(st.lists(ids, max_size=6))
def test_a_split_reads_back_as_the_ranges_it_cuts(main, boundaries):
    kind = {type(b) for b in boundaries}
    boundaries = sorted(set(boundaries)) if len(kind) <= 1 else sorted({repr(b) for b in boundaries})
    with parts_of(main) as parts:
        parts.save_split(boundaries)
        bounds = [None, *boundaries, None]
        assert parts.boundaries() == boundaries
        assert parts.ranges() == list(pairwise(bounds))


def test_a_round_is_claimed_only_while_it_is_open(main):
    with parts_of(main) as parts:
        round_id = parts.round()
        assert round_id is not None
        with parts.claiming(round_id) as open_:
            assert open_
        with parts.claiming("another round") as open_:
            assert not open_
        parts.close()
        with parts.claiming(round_id) as open_:
            assert not open_
        assert parts.boundaries() is None


def test_a_partition_sees_what_earlier_runs_did_in_the_main_ledger_and_what_its_own_attempts_did(main):
    main.record(KEY, [1, 2], [FailedRecord(3, action=Action.IGNORE), FailedRecord(4)])
    main.checkpoint()
    main.index_succeeded(KEY)
    first = partition(main, 0)
    first.begin_run([report()])
    first.start_migration(KEY)
    assert first.succeeded_among(KEY, [1, 2, 3, 4, 5]) == {1, 2}
    assert first.ignored_among(KEY, [1, 2, 3, 4, 5]) == {3}
    assert first.done_before(KEY, [5, 6, 7]) == (set(), set())  # a first attempt
    first.record(KEY, [5], [FailedRecord(6)])
    first.checkpoint()
    first.close()  # a worker that died: nothing more

    second = partition(main, 0)
    second.begin_run([report()])
    second.start_migration(KEY)
    assert second.done_before(KEY, [5, 6, 7]) == ({5}, {6})
    assert second.retry_ids(KEY) == []  # the next run's, from the main ledger
    second.close()
    assert partition(main, 0).journal_owner.startswith(f"{main.uid}/")


def test_a_fold_hands_everything_to_the_main_ledger_and_twice_the_same_records(main):
    ledger = partition(main, 0)
    ledger.begin_run([report()])
    ledger.start_migration(KEY)
    ledger.record(KEY, list(range(1, 25_001)), [FailedRecord("x", "item x", "boom")])
    ledger.record_fatal(KEY, "source unreadable")
    ledger.end_run(RunResult([report()]))
    ledger.close()
    with parts_of(main) as parts:
        assert parts.existing() == [0]
        for _ in range(2):
            fatal, owner = parts.merge_into(main, KEY, 0)
            main.checkpoint()
            assert fatal == ["source unreadable"]
            assert owner is not None and len(owner) == 32
        parts.remove()
        assert parts.existing() == [] and parts.boundaries() is None
    entry = main.progress().migrations[KEY]
    assert set(entry.succeeded) == set(range(1, 25_001))
    assert [(f.id, f.description) for f in entry.failed.values()] == [("x", "item x")]


def test_the_status_shows_each_partition_pending_running_or_how_it_ended(main, ledger_backend):
    with parts_of(main) as parts:
        parts.save_split([100, 200])
    done = partition(main, 0)
    finished = report()
    finished.read = finished.succeeded = finished.written = 100
    finished.state = MigrationState.COMPLETED
    done.begin_run([finished])
    done.start_migration(KEY)
    done.end_run(RunResult([finished]))
    done.close()
    running = partition(main, 1)
    running.begin_run([report()])
    try:
        with ledger_backend.reader() as reader:
            rows = partition_status(reader, {KEY: "copy_items", "other.Migration": "other"})
        table = format_status(ledger_commands.status(progress=ledger_backend.location)).splitlines()
    finally:
        running.close()
    header = table.index(next(line for line in table if line.startswith("MIGRATION  PART")))
    assert table[header].split()[:6] == ["MIGRATION", "PART", "AFTER", "UPTO", "STATE", "TRIES"]
    assert [line.split()[1:6] for line in table[header + 1:header + 4]] == [
        ["0", "-", "100", "completed", "1"], ["1", "100", "200", "running", "1"], ["2", "200", "-", "pending", "0"]]
    assert [(r["index"], r["after"], r["upto"], r["state"], r["attempts"], r["read"]) for r in rows] == [
        (0, None, 100, "completed", 1, 100), (1, 100, 200, "running", 1, 0), (2, 200, None, "pending", 0, 0)]
    assert rows[1]["holder"].startswith("pid ") and rows[0]["holder"] is None
    assert {r["migration"] for r in rows} == {"copy_items"}


def test_forgetting_a_migration_or_importing_progress_removes_its_partitions(main):
    partition(main, 0).close()
    main.end_run(RunResult([]))
    main.forget(KEY)
    with parts_of(main) as parts:
        assert parts.existing() == [] and parts.boundaries() is None
        parts.save_split([5])
        partition(main, 1).close()
        assert parts.existing() == [1]
        main.import_progress(main.progress())
        assert parts.existing() == [] and parts.boundaries() is None


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURE_IN_GIVEN)
@given(st.lists(st.lists(ids, max_size=30, unique_by=repr), min_size=1, max_size=4))
def test_a_fold_without_decoding_gives_the_ids_the_partition_reads_back(ledger_factory: Callable[[], ledgers.Backend],
                                                                        attempts):
    """The fast path (JSON arrays copied as logged) against the slow one (every id decoded)."""
    backend = ledger_factory()
    main = backend.open()
    try:
        main.begin_run([])
        main.start_migration(KEY)
        parts = parts_of(main)
        with parts:
            parts.save_split([])
            seen: set[str] = set()
            for page in attempts:  # each attempt folds the earlier ones' log into per-id rows
                ledger = partition(main, 0)
                ledger.begin_run([report()])
                ledger.start_migration(KEY)
                fresh = [i for i in page if repr(i) not in seen]
                seen.update(map(repr, fresh))
                ledger.record(KEY, fresh, [])
                ledger.close()
            with parts.reading(0) as reader:
                assert reader is not None
                expected = list(reader.iter_succeeded(KEY))
            parts.merge_into(main, KEY, 0)
            main.checkpoint()
            parts.remove()
        got = list(main.progress().migrations[KEY].succeeded)
        assert sorted(map(repr, got)) == sorted(map(repr, expected)) == sorted(seen)
    finally:
        main.close()
