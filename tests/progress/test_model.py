"""The in-memory ledger: mjg's mutation rules and the succeeded/failed invariant."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferryman.progress import Action, FailedRecord, MigrationEntry, MigrationProgress

M1, M2 = "app.migrations.M1", "app.migrations.M2"


def failed(record_id, action=Action.RETRY) -> FailedRecord:
    return FailedRecord(record_id, f"stations(id={record_id})", "Traceback ...", action,
                        datetime(2025, 8, 29, 0, 33, 52))


def test_mark_succeeded_drops_earlier_failures_and_keeps_order():
    entry = MigrationEntry(M1)
    entry.mark_failed([failed(2), failed(3)])
    entry.mark_succeeded([5, 2, "a", 5])
    assert list(entry.succeeded) == [5, 2, "a"]
    assert list(entry.failed) == [3]


def test_mark_failed_upserts_in_place_and_leaves_succeeded():
    entry = MigrationEntry(M1)
    entry.mark_succeeded([1, 2])
    entry.mark_failed([failed(7), failed(2)])
    newer = FailedRecord(7, "again", "other cause")
    entry.mark_failed([newer])
    assert list(entry.succeeded) == [1]
    assert list(entry.failed) == [7, 2]
    assert entry.failed[7] is newer


def test_ids_with_action():
    entry = MigrationEntry(M1)
    entry.mark_failed([failed(1), failed(2, Action.IGNORE), failed((3, "x"))])
    assert entry.ids_with_action(Action.RETRY) == [1, (3, "x")]
    assert entry.ids_with_action("IGNORE") == [2]


@pytest.mark.parametrize("bad", [3.0, True, None, [1, 2], (), (1, (2,)), (1, False), b"x"])
def test_ids_that_would_not_survive_json_are_rejected_on_entry(bad):
    with pytest.raises(TypeError, match="invalid record id"):
        MigrationEntry(M1).mark_succeeded([bad])
    with pytest.raises(TypeError, match="invalid record id"):
        FailedRecord(bad, "d", "c")


def test_failed_record_defaults_and_action_from_text():
    before = datetime.now()
    record = FailedRecord(1, "d", "c", "IGNORE")
    assert record.action is Action.IGNORE
    assert before <= record.timestamp <= datetime.now() and record.timestamp.tzinfo is None
    assert FailedRecord(2).action is Action.RETRY
    with pytest.raises(ValueError):
        FailedRecord(1, action="SKIP")


def test_start_and_finish_move_identities_without_duplicates():
    progress = MigrationProgress()
    progress.start_migration(M1)
    progress.start_migration(M1)
    assert progress.metadata.in_progress == [M1] and progress.metadata.completed == []
    progress.finish_migration(M1)
    progress.finish_migration(M1)
    assert progress.metadata.in_progress == [] and progress.metadata.completed == [M1]
    progress.start_migration(M1)  # a re-run of a completed migration
    assert progress.metadata.in_progress == [M1] and progress.metadata.completed == []
    assert progress.migrations == {}  # like mjg, entries appear with the first saved page


def test_entry_is_created_once():
    progress = MigrationProgress()
    assert progress.entry(M1) is progress.entry(M1)
    assert progress.entry(M1).fqcn == M1


def test_failed_records_set_action_and_summary():
    progress = MigrationProgress()
    progress.entry(M1).mark_failed([failed(1), failed(2)])
    progress.entry(M1).mark_succeeded([10, 11, 12])
    progress.entry(M2).mark_failed([failed("a")])
    assert [(m, r.id) for m, r in progress.failed_records()] == [(M1, 1), (M1, 2), (M2, "a")]
    assert [r.id for _, r in progress.failed_records(M2)] == ["a"]
    assert progress.failed_records("no.such.Migration") == []

    assert progress.set_action(M1, [1, 2, 99], Action.IGNORE) == 2  # 99 is unknown: skipped
    assert progress.set_action(M1, [1], "IGNORE") == 0  # already IGNORE: no change
    assert progress.set_action("no.such.Migration", [1], Action.IGNORE) == 0
    assert progress.set_action(M1, [2], Action.RETRY) == 1
    assert progress.summary() == {
        M1: {"succeeded": 3, "failed": 1, "ignored": 1},
        M2: {"succeeded": 0, "failed": 1, "ignored": 0},
    }


def test_record_fatal_appends():
    progress = MigrationProgress()
    progress.record_fatal("first")
    progress.record_fatal("second")
    assert progress.fatal_errors == ["first", "second"]


def test_copy_shares_no_mutable_state():
    original = MigrationProgress()
    original.start_migration(M1)
    original.entry(M1).mark_succeeded([1])
    original.entry(M1).mark_failed([failed(2)])
    original.record_fatal("boom")
    snapshot = original.copy()
    assert snapshot == original

    duplicate = original.copy()
    duplicate.finish_migration(M1)
    duplicate.entry(M1).mark_succeeded([2, 3])
    duplicate.entry(M2).mark_succeeded([1])
    duplicate.set_action(M1, [2], Action.IGNORE)
    duplicate.record_fatal("again")
    assert original == snapshot
    assert original.entry(M1).failed[2].action is Action.RETRY


def test_equality_is_by_content():
    stamp = datetime(2025, 1, 1)
    a, b = MigrationProgress(), MigrationProgress()
    a.metadata.timestamp = b.metadata.timestamp = stamp
    assert a == b
    a.entry(M1).mark_succeeded([1])
    assert a != b
    b.entry(M1).mark_succeeded(["1"])
    assert a != b  # 1 and "1" are different ids
    assert a != object()


def test_repr_stays_short_for_big_progress():
    progress = MigrationProgress()
    progress.entry(M1).mark_succeeded(range(100_000))
    assert len(repr(progress)) < 100 and len(repr(progress.entry(M1))) < 100


# Small pools of ids so that random sequences hit the same ids often.
_ids = st.sampled_from([1, 2, 3, "1", "2", (1, "a"), (1, 2), 2**70])
_operations = st.lists(
    st.tuples(st.sampled_from(["succeeded", "failed", "ignore"]), st.lists(_ids, max_size=4)),
    max_size=30,
)


@given(_operations)
def test_an_id_is_never_both_succeeded_and_failed(operations):
    progress = MigrationProgress()
    entry = progress.entry(M1)
    for kind, ids in operations:
        if kind == "succeeded":
            entry.mark_succeeded(ids)
        elif kind == "failed":
            entry.mark_failed(FailedRecord(i, "d", "c") for i in ids)
        else:
            progress.set_action(M1, ids, Action.IGNORE)
        assert not set(entry.succeeded) & set(entry.failed)
        assert all(record_id == record.id for record_id, record in entry.failed.items())
    if operations:
        kind, ids = operations[-1]
        if kind == "succeeded":
            assert set(ids) <= set(entry.succeeded)
        elif kind == "failed":
            assert set(ids) <= set(entry.failed)
