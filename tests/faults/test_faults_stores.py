"""Stores under faults: every failure blames only the records at fault, sources stay untouched,
numbers keep their types. Real migrations on real SQLite, PostgreSQL and MariaDB.

* A value the database refuses (a NUL byte in PostgreSQL text, a value larger than MariaDB's
  max_allowed_packet, which makes the server drop the connection, a NaN SQLite would store as
  NULL) fails that record alone, with a cause that names the problem; every other record is
  written once.
* A destination table dropped mid-run ends that migration with one fatal error, no failed
  records and few save attempts; an independent migration of the same run completes.
* A SQLite source is byte-identical after a run, with no -wal/-shm files beside it, also read
  through a read-only URL.
* MariaDB DOUBLE and FLOAT columns come back as float, so a reduce can add them up.
* A PostgreSQL scan whose connection is killed, and a COPY that fails, print nothing on stderr.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from ferryman import Cardinality, Match, MemoryStore, MigrationService, Retry, migration
from ferryman.progress.files import open_ledger
from ferryman.stores import JournalEntry, PendingWrite, SqlStore
from ferryman.types import Record

WORKTREE = Path(__file__).resolve().parents[2]
NO_RETRY = Retry(times=0, delay=0)


class CountingStore(SqlStore):
    """A SqlStore that notes the size of every batch the engine asks it to save."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def begin_save_all(self, records: list[Record], *, journal: JournalEntry | None = None) -> PendingWrite:
        self.batches.append(len(records))
        return super().begin_save_all(records, journal=journal)


def run_ddl(url: str, *statements: str, rows: list[Record] | None = None, insert: str = "") -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
            if rows:
                conn.execute(text(insert), rows)
    finally:
        engine.dispose()


def sqlite_people(path: Path, count: int, name: Callable[[int], str] = lambda i: f"name {i}") -> str:
    """A legacy (rollback-journal) SQLite file with ``count`` people, made without ferryman."""
    url = f"sqlite:///{path}"
    run_ddl(url, "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
            rows=[{"id": i, "name": name(i)} for i in range(1, count + 1)],
            insert="INSERT INTO people VALUES (:id, :name)")
    return url


def identity(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def dest_ids(url: str, table: str) -> list[int]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [int(i) for i in conn.execute(text(f"SELECT id FROM {table} ORDER BY id")).scalars()]
    finally:
        engine.dispose()


def failed_causes(ledger: Path, cls: type) -> dict[Any, str]:
    entry = open_ledger(ledger, read_only=True).progress().migrations[identity(cls)]
    return {record_id: failure.cause for record_id, failure in entry.failed.items()}


# --- a value the database refuses fails its record alone ---------------------------------


def test_a_nul_byte_fails_only_its_record_on_postgres(tmp_path: Path, postgres_url: str, stores: list[SqlStore]) -> None:
    count, bad = 2000, 1234
    source_url = sqlite_people(tmp_path / "source.db", count, lambda i: f"name {i}\x00!" if i == bad else f"name {i}")
    run_ddl(postgres_url, "CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL)")
    source, dest = SqlStore("source", source_url, "people"), CountingStore("people", postgres_url, "people")
    stores.extend([source, dest])

    @migration(source="source", dest="people", cardinality=Cardinality.EXACTLY_ONE)
    class CopyPeople:
        def transform(self, aggregates: Any, record: Record) -> list[Record]:
            return [dict(record)]

    result = MigrationService([source, dest], [CopyPeople], ledger=tmp_path / "run.db").run()
    report = result.report("CopyPeople")
    assert (report.succeeded, report.failed, report.retried) == (count - 1, 1, 0), result.summary()
    causes = failed_causes(tmp_path / "run.db", CopyPeople)
    assert list(causes) == [bad]
    assert "cannot contain NUL (0x00) bytes" in causes[bad] and "TransientStoreError" not in causes[bad]
    assert dest_ids(postgres_url, "people") == [i for i in range(1, count + 1) if i != bad]
    # The batch of 512 holding it was split down to it: a few saves, not one per record.
    assert len(dest.batches) <= 4 + 2 * 10, dest.batches


def test_a_value_over_max_allowed_packet_fails_only_its_record_on_mariadb(
    tmp_path: Path, mysql_url: str, stores: list[SqlStore]
) -> None:
    """MariaDB drops the connection over it; it still answers a new one, so the batch is split."""
    engine = create_engine(mysql_url, poolclass=NullPool)
    with engine.connect() as conn:
        limit = int(conn.execute(text("SELECT @@max_allowed_packet")).scalar_one())
    engine.dispose()
    assert limit <= 128 * 2**20, f"max_allowed_packet is {limit} bytes: too big a value to build in a test"
    count, bad = 600, 345
    source_url = sqlite_people(tmp_path / "source.db", count)
    run_ddl(mysql_url, "CREATE TABLE people (id bigint PRIMARY KEY, name varchar(100) NOT NULL, blob_text longtext)")
    source, dest = SqlStore("source", source_url, "people"), CountingStore("people", mysql_url, "people")
    stores.extend([source, dest])

    @migration(source="source", dest="people", batch_size=100, save_batch_size=100,
               cardinality=Cardinality.EXACTLY_ONE, save_retry=Retry(times=1, delay=0))
    class CopyPeople:
        def transform(self, aggregates: Any, record: Record) -> list[Record]:
            big = "x" * (limit + 1024) if record["id"] == bad else "small"
            return [{**record, "blob_text": big}]

    result = MigrationService([source, dest], [CopyPeople], ledger=tmp_path / "run.db").run()
    report = result.report("CopyPeople")
    assert (report.succeeded, report.failed) == (count - 1, 1), result.summary()
    causes = failed_causes(tmp_path / "run.db", CopyPeople)
    assert list(causes) == [bad]
    assert "ConnectionDroppedError" in causes[bad] and "max_allowed_packet" in causes[bad]
    assert dest_ids(mysql_url, "people") == [i for i in range(1, count + 1) if i != bad]
    assert len(dest.batches) <= count // 100 + 2 * 7 + 2, dest.batches  # one split batch, one retry


def test_nan_into_sqlite_fails_its_record_with_a_clear_cause(tmp_path: Path, stores: list[SqlStore]) -> None:
    count = 50
    source_url = sqlite_people(tmp_path / "source.db", count)
    dest_url = f"sqlite:///{tmp_path}/dest.db"
    run_ddl(dest_url, "CREATE TABLE scores (id INTEGER PRIMARY KEY, score DOUBLE)")
    source, dest = SqlStore("source", source_url, "people"), SqlStore("scores", dest_url, "scores")
    stores.extend([source, dest])
    special = {17: math.nan, 18: math.inf, 19: -math.inf}

    @migration(source="source", dest="scores", cardinality=Cardinality.EXACTLY_ONE)
    class Scores:
        def transform(self, aggregates: Any, record: Record) -> list[Record]:
            return [{"id": record["id"], "score": special.get(record["id"], record["id"] / 2)}]

    result = MigrationService([source, dest], [Scores], ledger=tmp_path / "run.db").run()
    assert (result.report("Scores").succeeded, result.report("Scores").failed) == (count - 1, 1)
    causes = failed_causes(tmp_path / "run.db", Scores)
    assert list(causes) == [17]
    assert "scores(id=17): field 'score' is nan" in causes[17] and "SQLite stores NaN as NULL" in causes[17]
    saved = {r["id"]: r["score"] for page in dest.scan() for r in page}
    assert sorted(saved) == [i for i in range(1, count + 1) if i != 17]
    assert (saved[18], saved[19], saved[20]) == (math.inf, -math.inf, 10.0)  # infinities are kept


# --- a destination table dropped mid-run ---------------------------------------------------

DEST_URLS = {"postgresql": "postgres_url", "mariadb": "mysql_url", "sqlite": "sqlite_url"}


@pytest.fixture(params=list(DEST_URLS))
def dest_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(DEST_URLS[request.param]))


def test_a_dropped_destination_table_ends_its_migration_with_one_fatal_error(
    tmp_path: Path, dest_url: str, stores: list[SqlStore]
) -> None:
    count, drop_at, batch = 3000, 1000, 100
    source_url = sqlite_people(tmp_path / "source.db", count)
    run_ddl(dest_url, "CREATE TABLE people (id bigint PRIMARY KEY, name varchar(100) NOT NULL)",
            "CREATE TABLE others (id bigint PRIMARY KEY, name varchar(100) NOT NULL)")
    source = SqlStore("source", source_url, "people")
    dest = CountingStore("people", dest_url, "people")
    others = SqlStore("others", dest_url, "others")
    stores.extend([source, dest, others])
    dropper = create_engine(dest_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")

    @migration(source="source", dest="people", batch_size=batch, save_batch_size=batch,
               cardinality=Cardinality.EXACTLY_ONE, save_retry=Retry(times=3, delay=0.5))
    class CopyPeople:
        def transform(self, aggregates: Any, record: Record) -> list[Record]:
            if record["id"] == drop_at:
                with dropper.connect() as conn:
                    conn.execute(text("DROP TABLE people"))
            return [dict(record)]

    @migration(source="source", dest="others", batch_size=batch, cardinality=Cardinality.EXACTLY_ONE)
    class CopyOthers:
        def transform(self, aggregates: Any, record: Record) -> list[Record]:
            return [dict(record)]

    try:
        result = MigrationService([source, dest, others], [CopyPeople, CopyOthers], ledger=tmp_path / "run.db").run()
    finally:
        dropper.dispose()
    people, copied = result.report("CopyPeople"), result.report("CopyOthers")
    assert people.fatal_error is not None and people.failed == 0 and people.retried == 0, result.summary()
    assert "unusable" in people.fatal_error and "StoreUnusableError" in people.fatal_error
    assert drop_at - batch <= people.succeeded < drop_at + batch
    # No batch was split or retried: the pages before the drop, then the one that met it.
    assert dest.batches == [batch] * len(dest.batches) and len(dest.batches) <= drop_at // batch + 2
    progress = open_ledger(tmp_path / "run.db", read_only=True).progress()
    assert len(progress.fatal_errors) == 1 and progress.migrations[identity(CopyPeople)].failed == {}
    assert copied.fatal_error is None and copied.succeeded == count  # the independent one went on
    assert dest_ids(dest_url, "others") == list(range(1, count + 1))


# --- a SQLite source is only read -----------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?mode=ro&uri=true", "?immutable=1&uri=true"])
def test_a_sqlite_source_is_left_byte_identical(tmp_path: Path, query: str, stores: list[SqlStore]) -> None:
    folder = tmp_path / "source"
    folder.mkdir()
    path = folder / "legacy.db"
    sqlite_people(path, 1500)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    source_url = f"sqlite:///file:{path}{query}" if query else f"sqlite:///{path}"
    dest_url = f"sqlite:///{tmp_path}/dest.db"
    run_ddl(dest_url, "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n INTEGER)")
    source, dest = SqlStore("source", source_url, "people"), SqlStore("people", dest_url, "people")
    names = SqlStore("names", source_url, "people")  # the source again, as a matching store
    stores.extend([source, dest, names])

    @migration(source="source", dest="people", cardinality=Cardinality.EXACTLY_ONE,
               match=[Match("names", cardinality=Cardinality.EXACTLY_ONE)])
    class CopyPeople:
        def start_reduction(self, record: Record, aggregates: dict[str, Any]) -> None:
            aggregates["n"] = 0

        def match_with_names(self, record: Record, aggregates: dict[str, Any], store: Any) -> dict[str, Any]:
            return {"id": record["id"]}

        def reduce_from_names(self, aggregates: dict[str, Any], batch: list[Record]) -> None:
            aggregates["n"] += len(batch)

        def transform(self, aggregates: dict[str, Any], record: Record) -> list[Record]:
            return [{**record, "n": aggregates["n"]}]

    result = MigrationService([source, dest, names], [CopyPeople], ledger=tmp_path / "run.db").run()
    assert result.ok, result.summary()
    assert dest.count() == 1500
    for store in (source, names):
        store.close()
    assert sorted(os.listdir(folder)) == ["legacy.db"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert path.read_bytes()[18:20] == b"\x01\x01"  # still a rollback-journal file, not WAL


# --- numbers keep their types ----------------------------------------------------------------


def test_mariadb_double_and_float_are_floats_a_reduce_can_add(tmp_path: Path, mysql_url: str, stores: list[SqlStore]) -> None:
    source_url = sqlite_people(tmp_path / "source.db", 30)
    run_ddl(mysql_url, "CREATE TABLE orders (id bigint PRIMARY KEY, person_id bigint NOT NULL,"
            " amount double NOT NULL, weight float NOT NULL, price decimal(10, 2) NOT NULL)",
            rows=[{"id": i, "person_id": i % 30 + 1, "amount": i / 3, "weight": 0.25 * (i % 8),
                   "price": f"{i}.25"} for i in range(300)],
            insert="INSERT INTO orders VALUES (:id, :person_id, :amount, :weight, :price)")
    source, orders, out = SqlStore("source", source_url, "people"), SqlStore("orders", mysql_url, "orders"), MemoryStore("out")
    stores.extend([source, orders])

    @migration(source="source", dest="out", cardinality=Cardinality.EXACTLY_ONE, load_retry=NO_RETRY,
               match=[Match("orders")])
    class Totals:
        def start_reduction(self, record: Record, aggregates: dict[str, Any]) -> None:
            aggregates.update(amount=0.0, weight=0.0, types=set())

        def match_with_orders(self, record: Record, aggregates: dict[str, Any], store: Any) -> dict[str, Any]:
            return {"person_id": record["id"]}

        def reduce_from_orders(self, aggregates: dict[str, Any], batch: list[Record]) -> None:
            for order in batch:
                aggregates["amount"] += order["amount"]
                aggregates["weight"] += order["weight"]
                aggregates["types"].add((type(order["amount"]), type(order["weight"]), type(order["price"]).__name__))

        def transform(self, aggregates: dict[str, Any], record: Record) -> list[Record]:
            return [{"id": record["id"], "amount": aggregates["amount"], "weight": aggregates["weight"],
                     "types": aggregates["types"]}]

    result = MigrationService([source, orders, out], [Totals], ledger=tmp_path / "run.db").run()
    assert result.ok, result.summary()
    totals = {r["id"]: r for r in out.records()}
    assert len(totals) == 30
    for person, row in totals.items():
        mine = [i for i in range(300) if i % 30 + 1 == person]
        assert row["amount"] == pytest.approx(sum(i / 3 for i in mine))
        assert row["weight"] == sum(0.25 * (i % 8) for i in mine)
        assert row["types"] == {(float, float, "Decimal")}


# --- nothing on stderr ------------------------------------------------------------------------

STDERR_SCRIPT = """
import json, sys, time
import psycopg
from ferryman import Cardinality, MigrationService, Retry, migration
from ferryman.stores import SqlStore

url, raw_url, bad, kill_at, ledger = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]


def end_backends(verb, like):
    with psycopg.connect(raw_url, autocommit=True) as admin:
        return admin.execute(
            f"SELECT count(pg_{verb}_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state = 'active' AND query LIKE %s", (like,)).fetchone()[0]


# 1. A migration whose scan's connection is killed while its next page is on the way, and one
#    of whose COPY batches psycopg refuses (a NUL byte).
source, dest = SqlStore("source", url, "people"), SqlStore("copies", url, "copies")

@migration(source="source", dest="copies", batch_size=100, save_batch_size=100,
           cardinality=Cardinality.EXACTLY_ONE, load_retry=Retry(times=3, delay=0))
class Copy:
    def transform(self, aggregates, record):
        if record["id"] == kill_at:
            print("killed", end_backends("terminate", "SELECT people.%"))
        name = record["name"] + ("\\x00" if record["id"] == bad else "")
        return [{"id": record["id"], "name": name}]

report = MigrationService([source, dest], [Copy], ledger=ledger).run().report("Copy")
print(json.dumps({"succeeded": report.succeeded, "failed": report.failed, "fatal": report.fatal_error}))

# 2. A scan left early while the query of its next page fails (cancelled).
slow = SqlStore("slow", url, "slow_people", key="id")  # a view has no primary key
pages = slow.read_pages(None, None, 50)
for _ in range(3):
    next(pages)
print("cancelled", end_backends("cancel", "SELECT slow_people.%"))
time.sleep(0.1)
pages.close()
"""


def test_failing_postgres_pipeline_and_copy_paths_print_nothing_on_stderr(tmp_path: Path, postgres_url: str) -> None:
    count, bad, kill_at = 3000, 2000, 1050
    run_ddl(postgres_url, "CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL)",
            "CREATE TABLE copies (id bigint PRIMARY KEY, name text NOT NULL)",
            "CREATE VIEW slow_people AS SELECT id, name FROM people WHERE pg_sleep(0.005) IS NOT NULL",
            rows=[{"id": i, "name": f"name {i}"} for i in range(1, count + 1)],
            insert="INSERT INTO people VALUES (:id, :name)")
    raw_url = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(STDERR_SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script), postgres_url, raw_url, str(bad), str(kill_at), str(tmp_path / "run.db")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(WORKTREE)},
    )
    assert done.returncode == 0, done.stderr
    killed, summary, cancelled = done.stdout.splitlines()
    assert int(killed.split()[1]) >= 1 and int(cancelled.split()[1]) >= 1  # both paths failed
    assert json.loads(summary) == {"succeeded": count - 1, "failed": 1, "fatal": None}
    assert done.stderr == ""
    assert dest_ids(postgres_url, "copies") == [i for i in range(1, count + 1) if i != bad]


def test_a_lookup_on_a_column_the_table_lacks_ends_its_migration_with_one_fatal_error(
    tmp_path: Path, stores: list[SqlStore]
) -> None:
    from ferryman import Lookup

    url = sqlite_people(tmp_path / "src.db", 300)
    run_ddl(url, "CREATE TABLE teams (team_id INTEGER PRIMARY KEY, title TEXT)",
            "CREATE TABLE out (id INTEGER PRIMARY KEY, team TEXT)",
            rows=[{"t": i, "title": f"team {i}"} for i in range(1, 4)],  # small: preloaded
            insert="INSERT INTO teams VALUES (:t, :title)")

    @migration(source="people", dest="out", match=[Lookup("teams", on={"TeamId": "id"}, into="team")])
    class WithTeam:  # the column is team_id: a typo every record would share
        def transform(self, aggregates: dict[str, Any], record: Record) -> list[Record]:
            return [{"id": record["id"], "team": None}]

    stores += [SqlStore("people", url, "people"), SqlStore("teams", url, "teams"), SqlStore("out", url, "out")]
    report = MigrationService(stores, [WithTeam], ledger=tmp_path / "p.db").run().reports[0]
    assert report.state.value == "failed" and report.failed == 0
    assert "filter names unknown column 'TeamId'; the table has team_id, title" in (report.fatal_error or "")
    assert dest_ids(url, "out") == []
