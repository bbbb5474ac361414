"""Failed records searched and paged through a ledger's reader: the SQL path of an SQLite ledger
against the path that reads every record, and pages against the whole list."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman import Action, FailedRecord, InputError, MigrationProgress
from ferryman.ids import format_id
from ferryman.progress.reader import LedgerReader
from ferryman.progress.sqlite import SqliteLedger, SqliteReader

MIGRATIONS = ("shop.Orders", "shop.Lines")
WORDS = st.sampled_from(["Quantity", "négative", "KeyError", "sku", "ẞtraße", "<b>", "17", ""])
IDS = st.one_of(st.integers(-50, 50), st.text("aB7é", max_size=3),
                st.tuples(st.integers(0, 9), st.text("xY", max_size=2)))


def ledger_with(path: Path, records: list[tuple[int, FailedRecord]]) -> None:
    progress = MigrationProgress()
    for which, record in records:
        progress.entry(MIGRATIONS[which]).mark_failed([record])
    ledger = SqliteLedger(path)
    try:
        ledger.import_progress(progress)
    finally:
        ledger.close()


failures = st.lists(
    st.tuples(st.integers(0, 1), IDS, st.lists(WORDS, max_size=3).map(" ".join),
              st.lists(WORDS, max_size=3).map(" ".join), st.sampled_from(list(Action))),
    max_size=40,
).map(lambda rows: [(which, FailedRecord(rid, desc, cause, action, datetime(2026, 1, 1) + timedelta(seconds=i)))
                    for i, (which, rid, desc, cause, action) in enumerate(rows)])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(failures, st.sampled_from([None, "", "quantity", "NÉGATIVE", "ss", "<B>", "7", "[1,", "x"]),
       st.sampled_from([None, "shop.Orders", "Lines"]), st.integers(1, 7))
def test_pages_put_together_are_the_search_and_sql_agrees_with_reading_every_record(
        records, text, migration, limit):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.db"
        ledger_with(path, records)
        with SqliteReader.open(str(path)) as reader:
            known = set(reader.identities())
            if migration is not None and not any(migration in (i, i.rsplit(".", 1)[1]) for i in known):
                with pytest.raises(InputError, match="no migration"):
                    reader.failed_page(migration=migration, text=text)
                return
            whole = LedgerReader.failed_page(reader, migration=migration, text=text, limit=10**6)
            pages, offset = [], 0
            while True:
                page = reader.failed_page(migration=migration, text=text, offset=offset, limit=limit)
                assert page.total == whole.total
                slow = LedgerReader.failed_page(reader, migration=migration, text=text, offset=offset, limit=limit)
                assert page == slow
                pages.extend(page.rows)
                if len(page.rows) < limit:
                    break
                offset += limit
            assert pages == whole.rows and len(pages) == whole.total

    # what the search should have chosen, worked out here from the records: the import writes
    # migration after migration (in the order first met), each id once where it first failed,
    # with its last contents; the newest written comes first
    by_migration: dict[str, dict[object, FailedRecord]] = {}
    for which, record in records:
        by_migration.setdefault(MIGRATIONS[which], {})[record.id] = record
    written = [(identity, record) for identity, kept in by_migration.items() for record in kept.values()]
    needle = text.casefold() if text else ""
    expected = [(identity, r.id) for identity, r in reversed(written)
                if (migration is None or migration in (identity, identity.rsplit(".", 1)[1]))
                and any(needle in t.casefold() for t in (format_id(r.id), r.description, r.cause))]
    assert [(identity, r.id) for identity, r in pages] == expected
    assert all(r == by_migration[identity][r.id] for identity, r in pages)


def test_a_search_of_thousands_of_failed_records_reads_one_page(tmp_path):
    records = [(i % 2, FailedRecord(i, f"orders(id={i})", f"Traceback...\nValueError: code {i % 100}\n" * 20,
                                    Action.RETRY, datetime(2026, 1, 1))) for i in range(5000)]
    ledger_with(tmp_path / "p.db", records)
    with SqliteReader.open(str(tmp_path / "p.db")) as reader:
        page = reader.failed_page(text="code 42\n", offset=10, limit=5)
        assert page.total == 50
        assert [r.id for _, r in page.rows] == [3942 - 100 * k for k in range(5)]  # Orders, even ids, newest first
        lines = reader.failed_page(migration="Lines", limit=3)
        assert lines.total == 2500 and [r.id for _, r in lines.rows] == [4999, 4997, 4995]
        assert reader.failed_page(offset=5000).rows == [] and reader.failed_page(offset=5000).total == 5000
