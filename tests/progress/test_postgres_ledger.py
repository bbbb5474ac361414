"""The PostgreSQL ledger's own ways: its URL and schema, what it refuses, its clock, and that it
keeps the same progress as the SQLite ledger for the same calls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import ledgers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman import Action, FailedRecord, LedgerFileError, RunResult
from ferryman.progress.codec import encode_id
from ferryman.progress.files import open_ledger, open_reader
from ferryman.progress.postgres import DEFAULT_SCHEMA, PgLocation, PostgresLedger, PostgresReader
from ferryman.progress.sqlite import SqliteLedger

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_server_url: str) -> Iterator[ledgers.PostgresBackend]:
    backend = ledgers.PostgresBackend(postgres_server_url)
    yield backend
    backend.drop()


def test_the_url_names_the_schema_and_hides_the_password() -> None:
    located = PgLocation.parse("postgresql://me:s3cret@db.example:5433/app?schema=orders_run&sslmode=require")
    assert located.schema == "orders_run"
    assert located.conninfo == "postgresql://me:s3cret@db.example:5433/app?sslmode=require"
    assert "s3cret" not in located.shown and "db.example:5433/app" in located.shown
    assert PgLocation.parse("postgres://me@db/app").schema == DEFAULT_SCHEMA
    with pytest.raises(LedgerFileError, match="names no database"):
        PgLocation.parse("postgresql://me@db")
    with pytest.raises(LedgerFileError, match="is not a plain lower-case SQL name"):
        PgLocation.parse('postgresql://me@db/app?schema=a"; DROP TABLE x')


def test_two_schemas_are_two_ledgers_on_one_server(postgres_server_url: str) -> None:
    one, two = ledgers.PostgresBackend(postgres_server_url), ledgers.PostgresBackend(postgres_server_url)
    try:
        first, second = one.open(), two.open()
        first.begin_run([])
        second.begin_run([])  # not the same lease
        first.record("m.A", [1, 2], [])
        second.record("m.A", [3], [])
        first.end_run(RunResult([]))
        second.end_run(RunResult([]))
        assert first.uid != second.uid
        first.close()
        second.close()
        assert one.succeeded("m.A") == [1, 2] and two.succeeded("m.A") == [3]
    finally:
        one.drop()
        two.drop()


def test_a_schema_without_a_ledger_reads_as_empty_and_is_not_created_by_reading(
        pg: ledgers.PostgresBackend) -> None:
    with open_reader(pg.location) as reader:
        assert isinstance(reader, PostgresReader)
        assert reader.runs() == [] and reader.migrations() == [] and reader.holder() is None
        assert reader.failed_counts() == {} and reader.fatal_count() == 0 and reader.events() == []
    with pytest.raises(FileNotFoundError, match="no progress ledger in schema"):
        open_ledger(pg.location, read_only=True)
    assert pg.dump() == ""  # no table was made


def test_a_foreign_schema_and_a_newer_ledger_are_refused_in_one_line(pg: ledgers.PostgresBackend) -> None:
    pg.execute(f"CREATE SCHEMA {pg.schema}")
    pg.execute("CREATE TABLE items (id int)")
    for opening in (lambda: PostgresLedger(pg.location), lambda: PostgresReader.open(pg.location)):
        with pytest.raises(LedgerFileError, match=r"is not a ferryman progress ledger \(a schema with tables "
                                                  r"items\); give the progress a schema of its own") as caught:
            opening()
        assert "\n" not in str(caught.value)
    pg.execute("DROP TABLE items")
    PostgresLedger(pg.location).close()
    pg.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(LedgerFileError, match=r"was written by a newer ferryman \(ledger schema 99; this "
                                              r"version reads up to 1\)"):
        PostgresLedger(pg.location)
    pg.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    pg.execute("CREATE TABLE extra (id int)")
    with pytest.raises(LedgerFileError, match=r"holding tables of another application too \(extra\)"):
        PostgresReader.open(pg.location)


def test_an_unreachable_server_is_said_in_one_line() -> None:
    with pytest.raises(LedgerFileError, match=r"^cannot reach progress ledger postgresql://me:\*\*\*@127\.0\.0\.1:1/db: ") \
            as caught:
        PostgresLedger("postgresql://me:pw@127.0.0.1:1/db")
    assert "pw@" not in str(caught.value) and "\n" not in str(caught.value)


def test_lease_times_are_the_databases_read_on_this_hosts_clock(pg: ledgers.PostgresBackend) -> None:
    ledger = pg.open()
    before = time.time()
    ledger.begin_run([])
    holder = pg.holder()
    assert holder is not None
    assert before - 1 <= holder.acquired_at <= time.time() + 1  # the test's server is on this host
    pg.age_heartbeat(100)
    aged = pg.holder()
    assert aged is not None and 99 <= aged.acquired_at - aged.heartbeat <= 101
    ledger.end_run(RunResult([]))
    ledger.close()


def test_a_write_in_flight_holds_off_a_takeover_until_it_commits(pg: ledgers.PostgresBackend,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease row is locked by every write transaction: a run taking the lease over waits
    for the holder's transaction, and the holder's next one finds the lease lost."""
    import threading

    from ferryman import LeaseLostError
    from ferryman.progress.lease import Process

    ledger = pg.open()
    ledger.begin_run([])
    taken = threading.Event()
    with ledger._tx():  # type: ignore[attr-defined]  # a checkpoint in flight
        thief = threading.Thread(target=lambda: (pg.take_lease(Process(7, "elsewhere.example", None),
                                                               stale_after=0.0), taken.set()))
        thief.start()
        assert not taken.wait(0.5)  # it waits for the holder's transaction
        ledger.conn.execute("INSERT INTO fatal_error (text) VALUES ('written while held')")  # type: ignore[attr-defined]
    thief.join(10)
    assert taken.is_set()
    with pytest.raises(LeaseLostError):
        ledger.record_fatal("m.A", "too late")
    ledger.close()
    with pg.reader() as reader:
        assert reader.fatal_errors() == ["written while held"]


WHEN = datetime(2024, 6, 1)
CALLS = st.lists(st.one_of(
    st.tuples(st.just("record"), st.sampled_from(["m.A", "m.B"]), st.lists(st.integers(1, 9), max_size=4),
              st.lists(st.integers(1, 9), max_size=4)),
    st.tuples(st.just("mark"), st.sampled_from(["m.A", "m.B"]), st.sampled_from(list(Action)),
              st.one_of(st.none(), st.lists(st.integers(1, 9), max_size=4))),
    st.tuples(st.just("checkpoint")),
), max_size=20)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=CALLS)
def test_the_same_calls_keep_the_same_progress_as_the_sqlite_ledger(
        postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory, calls: list[tuple[object, ...]]) -> None:
    pg = ledgers.PostgresBackend(postgres_server_url)
    try:
        both = [SqliteLedger(tmp_path_factory.mktemp("same") / "l.db"), pg.open()]
        for call in calls:
            counts = set()
            for ledger in both:
                if call[0] == "record":
                    _, identity, ok, bad = call
                    assert isinstance(identity, str) and isinstance(ok, list) and isinstance(bad, list)
                    ledger.record(identity, list(dict.fromkeys(ok)),
                                  [FailedRecord(i, f"d{i}", "c", Action.RETRY, WHEN + timedelta(seconds=i))
                                   for i in dict.fromkeys(bad)])
                elif call[0] == "mark":
                    _, identity, action, ids = call
                    assert isinstance(identity, str) and isinstance(action, Action)
                    counts.add(ledger.set_action(identity, ids, action))  # type: ignore[arg-type]
                else:
                    ledger.checkpoint()
            assert len(counts) <= 1  # both changed as many records
        progress = [ledger.progress() for ledger in both]
        for ledger in both:
            ledger.close()
        sqlite, postgres = progress
        assert set(sqlite.migrations) == set(postgres.migrations)
        for identity, entry in sqlite.migrations.items():
            other = postgres.migrations[identity]
            assert sorted(map(encode_id, entry.succeeded)) == sorted(map(encode_id, other.succeeded))
            assert list(entry.failed.values()) == list(other.failed.values())  # the same order too
    finally:
        pg.drop()


def test_a_ledger_path_or_url_opens_the_right_kind(pg: ledgers.PostgresBackend, tmp_path: Path) -> None:
    ledger = open_ledger(pg.location)
    assert isinstance(ledger, PostgresLedger) and ledger.path == PgLocation.parse(pg.location).shown
    ledger.close()
    ledger = open_ledger(pg.location.replace("postgresql://", "postgres://", 1))
    assert isinstance(ledger, PostgresLedger)
    ledger.close()
    assert isinstance(open_ledger(tmp_path / "l.db"), SqliteLedger)


def test_removing_a_ledger_a_command_gave_up_keeps_a_schema_made_beforehand(pg: ledgers.PostgresBackend) -> None:
    from ferryman.progress.files import location_exists, remove_ledger

    PostgresLedger(pg.location).close()
    assert location_exists(pg.location)
    remove_ledger(pg.location)
    assert not location_exists(pg.location)
    with closing(pg._conn()) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (pg.schema,)).fetchone() is None
    pg.execute(f"CREATE SCHEMA {pg.schema}")  # made for the ledger, with its grants
    PostgresLedger(pg.location).close()
    remove_ledger(pg.location)
    assert not location_exists(pg.location) and pg.dump() == ""
    with closing(pg._conn()) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (pg.schema,)).fetchone() == (1,)


def test_a_run_logs_one_row_per_page_and_the_next_start_folds_them(pg: ledgers.PostgresBackend) -> None:
    def rows(table: str) -> int:
        with closing(pg._conn()) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]

    ledger = pg.open()
    ledger.start_migration("m.A")
    ledger.record("m.A", [1, 2, 3], [])
    ledger.record("m.A", ["x", (4, "y")], [FailedRecord(9, "d", "c")])
    ledger.checkpoint()
    ledger.record("m.A", [], [FailedRecord(2, "d", "c")])  # a failure after its logged success wins
    ledger.checkpoint()
    assert (rows("succeeded_log"), rows("succeeded")) == (2, 0)
    assert ledger.succeeded_among("m.A", [1, 2]) == set()  # this run's own are never asked for
    ledger.close()
    assert sorted(pg.succeeded("m.A"), key=repr) == sorted([1, 3, "x", (4, "y")], key=repr)
    ledger = pg.open()
    ledger.start_migration("m.A")  # folds the log
    assert (rows("succeeded_log"), rows("succeeded")) == (0, 4)
    assert ledger.succeeded_among("m.A", [1, 2, 3, (4, "y")]) == {1, 3, (4, "y")}
    ledger.close()
    assert sorted(pg.succeeded("m.A"), key=repr) == sorted([1, 3, "x", (4, "y")], key=repr)


def test_a_holder_paused_inside_a_transaction_is_cut_off_by_the_server(pg: ledgers.PostgresBackend,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Its lock on the lease row would otherwise keep any other run from taking the lease."""
    from ferryman import LedgerWriteError
    from ferryman.progress.lease import Process
    from ferryman.progress.postgres import schema

    monkeypatch.setattr(schema, "IDLE_IN_TRANSACTION", "1s")
    ledger = pg.open()
    ledger.begin_run([])
    with pytest.raises(LedgerWriteError, match="cannot write progress ledger"), \
            ledger._tx():  # type: ignore[attr-defined]
        time.sleep(1.5)  # paused inside a ledger transaction, the lease row locked
        started = time.monotonic()
        thief = pg.take_lease(Process(7, "elsewhere.example", None), stale_after=0.0)
        assert time.monotonic() - started < 5  # not held off by the paused transaction
        ledger.conn.execute("INSERT INTO fatal_error (text) VALUES ('late')")  # type: ignore[attr-defined]
    ledger.close()  # its session is gone: nothing more is written, and the failed write said so
    holder = pg.holder()
    assert holder is not None and holder.owner == thief.owner
    with pg.reader() as reader:
        assert reader.fatal_errors() == []


def test_a_role_that_may_only_read_reads_and_one_that_may_not_create_is_told(pg: ledgers.PostgresBackend) -> None:
    role = f"r_{pg.schema}"
    pg.execute(f"CREATE ROLE {role} LOGIN")
    try:
        as_role = pg.location.replace("://postgres@", f"://{role}@", 1)
        with pytest.raises(LedgerFileError, match=rf"^cannot create progress ledger .*{role}@.* \(schema {pg.schema}\): "
                                                  "permission denied"):
            PostgresLedger(as_role)
        a_ledger = pg.open()
        a_ledger.record("m.A", [1, 2], [FailedRecord(3, "d", "c")])
        a_ledger.close()
        pg.execute(f"GRANT USAGE ON SCHEMA {pg.schema} TO {role}")
        pg.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {pg.schema} TO {role}")
        with open_reader(as_role) as reader:  # ferryman status, serve, failed list, export
            assert sorted(reader.iter_succeeded("m.A")) == [1, 2]
            assert reader.failed_counts() == {"m.A": {"RETRY": 1}} and reader.holder() is None
    finally:
        pg.execute(f"DROP OWNED BY {role}")
        pg.execute(f"DROP ROLE {role}")
