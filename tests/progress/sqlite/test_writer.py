"""The SQLite ledger as a run writes it: exactly once across hard kills, leases, runs, JSON
round trips, successes logged one row per page and folded on resume."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ledger_files
import pytest
import sqlalchemy as sa
from helpers import poll_until
from ledgers import make_source

from ferryman import (
    FailedRecord,
    LedgerFileError,
    MemoryStore,
    MigrationProgress,
    MigrationService,
    Retry,
    SqlStore,
    migration,
)
from ferryman.progress.sqlite import SCHEMA_VERSION, SqliteLedger
from ferryman.stores.base import JournalEntry
from ferryman.types import Aggregates, Record, RecordId

JOB = Path(__file__).with_name("chaos_job.py")


def dst_rows(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, name, n FROM dst ORDER BY id").fetchall()
    engine.dispose()
    return [tuple(r) for r in rows]


def succeeded_ids(ledger_path: Path) -> list[RecordId]:
    ledger = SqliteLedger(ledger_path, read_only=True)
    try:
        (identity,) = ledger.identities()
        return sorted(ledger.iter_succeeded(identity))
    finally:
        ledger.close()


def start_job(tmp_path: Path, batch: int = 256, delay: float = 0) -> subprocess.Popen[str]:
    """The chaos job as a process; ``delay`` seconds per record keep it running for a while."""
    return subprocess.Popen(
        [sys.executable, str(JOB), f"sqlite:///{tmp_path}/src.db", f"sqlite:///{tmp_path}/dst.db",
         str(tmp_path / "run.db"), str(batch)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CHAOS_JOB_DELAY": str(delay)},
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_hard_kills_never_lose_or_duplicate_a_record(tmp_path: Path, sig: signal.Signals) -> None:
    n = 150_000
    make_source(tmp_path, n)
    rng = random.Random(20261127 + sig)
    kills = 0
    while kills < 12:
        job = start_job(tmp_path, batch=rng.choice([64, 256, 1000]))
        assert job.stdout is not None and job.stdout.readline() == "running\n", job.communicate()[1]
        time.sleep(rng.uniform(0.02, 0.3))  # reading, saving, committing the ledger, folding the journal
        if job.poll() is not None:
            pytest.fail("the migration finished before the test could kill it 12 times")
        job.send_signal(sig)
        _, err = job.communicate(timeout=60)
        kills += 1
        if sig == signal.SIGTERM:  # once running, a SIGTERM stops gently
            assert job.returncode in (130, 0), err
    final = start_job(tmp_path)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    expected = [(i, f"ROW {i}", 2 * i) for i in range(1, n + 1)]
    assert dst_rows(f"sqlite:///{tmp_path}/dst.db") == expected
    assert succeeded_ids(tmp_path / "run.db") == list(range(1, n + 1))


@migration(source="src", dest="dst", batch_size=10)
class Copy:
    def transform(self, aggregates: Aggregates, record: Record) -> list[Record]:
        return [{"id": record["id"], "name": record["name"].upper(), "n": record["n"]}]


def sql_service(tmp_path: Path, n: int = 50) -> MigrationService:
    make_source(tmp_path, n)
    stores = [SqlStore("src", f"sqlite:///{tmp_path}/src.db", "src"),
              SqlStore("dst", f"sqlite:///{tmp_path}/dst.db", "dst")]
    return MigrationService(stores, [Copy], ledger=tmp_path / "run.db", checkpoint_interval=0)


def test_a_second_run_is_refused_while_the_first_is_alive_and_recovers_after_a_kill(tmp_path: Path) -> None:
    make_source(tmp_path, 20_000)
    holder = start_job(tmp_path, batch=16, delay=0.005)  # 100 s: the second job finds it alive

    def holds_the_lease() -> bool:
        try:
            return ledger_files.holder(tmp_path / "run.db") is not None
        except LedgerFileError:  # not there yet, or being created
            return False

    poll_until(holds_the_lease, timeout=30, what="the job to hold the lease")
    second = start_job(tmp_path)
    _, err = second.communicate(timeout=60)
    assert second.returncode != 0
    assert f"is in use by pid {holder.pid}" in err
    holder.kill()
    holder.communicate()
    third = start_job(tmp_path)
    _, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    assert len(dst_rows(f"sqlite:///{tmp_path}/dst.db")) == 20_000
    outcomes = [r.outcome for r in ledger_files.runs(tmp_path / "run.db")]
    assert outcomes[0] == "died" and outcomes[-1] == "completed"


def test_an_unreadable_journal_is_fatal_not_a_guess(tmp_path: Path) -> None:
    from ferryman import MigrationState, TransientStoreError

    class Down(MemoryStore):
        def read_journal(self, migration: str | None = None) -> list[JournalEntry]:
            raise TransientStoreError("store 'dst': connection refused")

    @migration(source="src", dest="dst", load_retry=Retry(times=1, delay=0))
    class CopyAll:
        def transform(self, aggregates: Aggregates, record: Record) -> list[Record]:
            return [dict(record)]

    src = MemoryStore("src", records=[{"id": i} for i in range(5)])
    dst = Down("dst")
    service = MigrationService([src, dst], [CopyAll], ledger=tmp_path / "l.db", checkpoint_interval=0)
    report = service.run().reports[0]
    assert report.state is MigrationState.FAILED
    assert report.fatal_error == (
        "destination 'dst' journal unreadable: TransientStoreError: store 'dst': connection refused")
    assert dst.records() == []


# --- successes logged one row per page, folded into the per-id table on resume ----------------

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman.progress.exchange import export_json
from ferryman.progress.sqlite import encode_id, encode_ids

MIGRATION = "m.Copy"


def rows(path: Path, table: str) -> int:
    """How many rows ``table`` holds: where the ledger keeps the successes."""
    return ledger_files.row_counts(path)[table]


def keys(ids: Iterable[RecordId]) -> list[str]:
    """Ids as their canonical texts, sorted: equal lists mean the same ids, each as often."""
    return sorted(map(encode_id, ids))


def test_a_run_logs_one_row_per_page_and_the_next_start_folds_them(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.start_migration(MIGRATION)
    for start in range(0, 1000, 100):
        ledger.record(MIGRATION, list(range(start, start + 100)), [])
    ledger.checkpoint()
    assert rows(tmp_path / "l.db", "succeeded_log") == 10
    assert rows(tmp_path / "l.db", "succeeded") == 0
    assert ledger.succeeded_among(MIGRATION, [1, 2]) == set()  # a fresh migration looks nothing up
    ledger.finish_migration(MIGRATION, completed=False)
    ledger.close()
    assert succeeded_ids(tmp_path / "l.db") == list(range(1000))

    again = SqliteLedger(tmp_path / "l.db")
    again.start_migration(MIGRATION)
    assert rows(tmp_path / "l.db", "succeeded_log") == 0
    assert rows(tmp_path / "l.db", "succeeded") == 1000
    assert again.succeeded_among(MIGRATION, [5, 999, 1000, "5"]) == {5, 999}
    again.record(MIGRATION, [1000, 1001], [])
    again.close()
    assert succeeded_ids(tmp_path / "l.db") == list(range(1002))


def test_export_lists_the_folded_and_the_logged_ids_once_each(tmp_path: Path) -> None:
    ids: list[RecordId] = [1, -7, 2**64 + 3, "x", 'q"\\uote', "é\x00\n\u2028", ("a", 1), (2**70, "b")]
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.start_migration(MIGRATION)
    ledger.record(MIGRATION, ids[:4], [FailedRecord("bad", "d", "c")])
    ledger.close()
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.start_migration(MIGRATION)  # folds the first run's page
    ledger.record(MIGRATION, ids[4:], [])
    ledger.close()
    assert rows(tmp_path / "l.db", "succeeded") == 4
    assert rows(tmp_path / "l.db", "succeeded_log") == 1

    reader = SqliteLedger(tmp_path / "l.db", read_only=True)
    assert keys(reader.iter_succeeded(MIGRATION)) == keys(ids)
    assert set(reader.progress().migrations[MIGRATION].succeeded) == set(ids)
    export_json(reader, tmp_path / "out.json")
    reader.close()
    back = MigrationProgress.load(tmp_path / "out.json").migrations[MIGRATION]
    assert keys(back.succeeded) == keys(ids) and list(back.failed) == ["bad"]


def test_a_failure_after_a_logged_success_wins_as_it_does_per_id(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.start_migration(MIGRATION)
    ledger.record(MIGRATION, [1, 2, 3], [])
    ledger.checkpoint()
    ledger.record(MIGRATION, [], [FailedRecord(2, "d", "c")])
    ledger.checkpoint()
    assert sorted(ledger.iter_succeeded(MIGRATION)) == [1, 3]
    ledger.close()
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.start_migration(MIGRATION)
    assert ledger.succeeded_among(MIGRATION, [1, 2, 3]) == {1, 3}
    assert [f.id for f in ledger.iter_failed(MIGRATION)] == [2]
    ledger.record(MIGRATION, [2], [])  # retried, and migrated now: the failure goes
    ledger.close()
    assert succeeded_ids(tmp_path / "l.db") == [1, 2, 3]
    assert rows(tmp_path / "l.db", "failed") == 0


def test_replacing_the_content_clears_the_log(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.start_migration(MIGRATION)
    ledger.record(MIGRATION, [1, 2, 3], [])
    ledger.checkpoint()
    progress = MigrationProgress()
    progress.entry(MIGRATION).mark_succeeded([7])
    ledger.import_progress(progress)
    assert rows(tmp_path / "l.db", "succeeded_log") == 0
    assert list(ledger.iter_succeeded(MIGRATION)) == [7]
    ledger.start_migration(MIGRATION)
    assert ledger.succeeded_among(MIGRATION, [1, 7]) == {7}
    ledger.close()


def test_a_ledger_file_from_before_the_log_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    ledger = SqliteLedger(path)
    ledger.start_migration(MIGRATION)
    ledger.close()
    ledger_files.as_version_1(path, "1", '"two"')  # ids one row each, no log table
    reader = SqliteLedger(path, read_only=True)
    assert sorted(map(str, reader.iter_succeeded(MIGRATION))) == ["1", "two"]
    reader.close()
    assert "succeeded_log" not in ledger_files.row_counts(path)  # read as it is

    ledger = SqliteLedger(path)
    ledger.start_migration(MIGRATION)
    assert ledger.succeeded_among(MIGRATION, [1, "two", 3]) == {1, "two"}
    ledger.record(MIGRATION, [3], [])
    ledger.close()
    with ledger_files.reader(path) as upgraded:
        assert upgraded.schema_version == int(SCHEMA_VERSION)
    reader = SqliteLedger(path, read_only=True)
    assert keys(reader.iter_succeeded(MIGRATION)) == keys([1, "two", 3])
    assert reader.lineage() == {MIGRATION: (None, 1)}  # schema 3's columns, added on open
    reader.close()


def test_record_reuses_the_journal_text_only_when_it_is_the_same_ids(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.db")
    ledger.start_migration(MIGRATION)
    first = ledger.journal_for(MIGRATION, [1, 2])
    batch: list[RecordId] = [3, "4"]
    second = ledger.journal_for(MIGRATION, batch)
    batch[0] = 99  # the caller's list changing afterwards changes nothing
    ledger.record(MIGRATION, [1, 2, 3, "4"], [])  # both batches saved
    ledger.journal_for(MIGRATION, [5, 6, 7])
    ledger.record(MIGRATION, [5, 7], [])  # one record of the batch failed
    ledger.checkpoint()
    assert first is not None and second is not None
    assert first.payload == "[1,2]" and second.payload == '[3,"4"]'
    assert rows(tmp_path / "l.db", "succeeded_log") == 2  # a row per page, reused text or not
    assert list(ledger.iter_succeeded(MIGRATION)) == [1, 2, 3, "4", 5, 7]
    ledger.close()


_key_part = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=6),  # quotes, \, controls, unicode
)
_record_id = st.one_of(_key_part, st.tuples(_key_part), st.tuples(_key_part, _key_part))


@given(st.lists(_record_id, max_size=20))
def test_encode_ids_writes_what_encode_id_writes(ids: list[RecordId]) -> None:
    assert encode_ids(ids) == "[" + ",".join(map(encode_id, ids)) + "]"
    assert encode_ids(tuple(ids)) == encode_ids(iter(ids)) == encode_ids(ids)


_outcomes = st.lists(st.lists(st.tuples(st.integers(0, 15), st.booleans()), max_size=6), max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sessions=st.lists(_outcomes, min_size=1, max_size=3), cap=st.integers(0, 6))
def test_a_success_deletes_the_failed_entries_it_must_whether_the_ledger_knows_them_or_not(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        sessions: list[list[list[tuple[int, bool]]]], cap: int) -> None:
    """A ledger that knows the failed entries of a migration it started without any deletes
    only those when a page succeeds; the same pages, recorded by a ledger that deletes every
    succeeded id (as it does after ``FAILED_KEYS_KEPT`` entries), leave the same content."""
    from ferryman.progress.sqlite import writer

    directory = tmp_path_factory.mktemp("ledgers")
    contents: dict[str, list[tuple[list[str], list[str]]]] = {}
    for variant in ("knows", "capped", "deletes every id"):
        path = directory / f"{variant}.db"
        monkeypatch.setattr(writer, "FAILED_KEYS_KEPT", cap if variant == "capped" else 100_000)
        contents[variant] = []
        for pages in sessions:
            ledger = SqliteLedger(path)
            ledger.start_migration(MIGRATION)
            if variant == "deletes every id":
                ledger._failed_keys.clear()
            for page in pages:
                outcome = dict(page)  # one outcome per id and page
                ledger.record(MIGRATION, [i for i, ok in outcome.items() if ok],
                              [FailedRecord(i, "d", "c") for i, ok in outcome.items() if not ok])
                if len(page) % 2:
                    ledger.checkpoint()
            ledger.close()
            reader = SqliteLedger(path, read_only=True)
            contents[variant].append((keys(reader.iter_succeeded(MIGRATION)),
                                      keys(f.id for f in reader.iter_failed(MIGRATION))))
            reader.close()
    assert contents["knows"] == contents["capped"] == contents["deletes every id"]
    last: dict[int, bool] = {}
    for pages, (_, failed) in zip(sessions, contents["knows"]):
        for page in pages:
            last.update(dict(page))
        assert failed == keys(i for i, ok in last.items() if not ok)  # failed last, and only those
