"""Verification on real databases: it finds a corrupted row, a deleted row, a duplicated row
(in a destination without a unique key) and type drift on SQLite, PostgreSQL and MariaDB, and
passes on a clean run; it never writes to a destination."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from ferryman import Cardinality, Match, MigrationService, SqlStore, migration
from ferryman.console import verification_lines
from ferryman.progress.sqlite import SqliteLedger

URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}
N = 60
AT = dt.datetime(2024, 3, 31, 22, 30, 15, 250000, tzinfo=dt.UTC)

DDL = {
    "items": {
        "postgresql": "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, weight double precision)",
        "mariadb": "CREATE TABLE items (id bigint PRIMARY KEY, name varchar(100) NOT NULL, weight double)",
        "sqlite": "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, weight REAL)",
    },
    "copies": {  # no unique key: a row saved twice stays twice
        "postgresql": "CREATE TABLE copies (id bigint NOT NULL, name text, weight double precision)",
        "mariadb": "CREATE TABLE copies (id bigint NOT NULL, name varchar(100), weight double)",
        "sqlite": "CREATE TABLE copies (id INTEGER NOT NULL, name TEXT, weight REAL)",
    },
    "people": {  # a unique column besides the key: what handle_duplicate settles
        "postgresql": "CREATE TABLE people (id bigint PRIMARY KEY, email varchar(100) NOT NULL UNIQUE)",
        "mariadb": "CREATE TABLE people (id bigint PRIMARY KEY, email varchar(100) NOT NULL UNIQUE)",
        "sqlite": "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE)",
    },
    "drifts": {  # columns that change what the transform made
        "postgresql": "CREATE TABLE drifts (id bigint PRIMARY KEY, price double precision, ratio real, at timestamp)",
        "mariadb": "CREATE TABLE drifts (id bigint PRIMARY KEY, price double, ratio float, at datetime(6))",
        "sqlite": "CREATE TABLE drifts (id INTEGER PRIMARY KEY, price REAL, ratio REAL, at DATETIME)",
    },
}


@migration(source="items", dest="copies", batch_size=16, name="copy")
class Copy:
    def transform(self, aggregates, record):
        return [{"id": record["id"], "name": record["name"].upper(), "weight": record["weight"] * 1.5}]


@migration(source="items", dest="drifts", batch_size=16, name="drift")
class Drift:
    def transform(self, aggregates, record):
        i = record["id"]
        return [{"id": i, "price": Decimal(f"{i}.25"), "ratio": i / 3, "at": AT + dt.timedelta(hours=i)}]


@migration(source="items", dest="people", batch_size=16, name="people")
class People:
    """Items 51-60 share their email with items 1-10 (the unique column): renamed; an id
    already stored (another system's row) is left as it is: skipped."""

    def transform(self, aggregates, record):
        return [{"id": record["id"], "email": f"{(record['id'] - 1) % 50 + 1}@example.com"}]

    def handle_duplicate(self, error, record, outputs, source, dest, registry):
        if error.columns == ("email",):
            return [{**out, "email": f"dup-{out['id']}-{out['email']}"} for out in outputs]
        if error.columns == ("id",) and record["id"] == 3:  # the row another system wrote
            return []
        return None


@pytest.fixture(params=list(URL_FIXTURES))
def database(request) -> Iterator[tuple[str, str]]:
    url = request.getfixturevalue(URL_FIXTURES[request.param])
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        for ddl in DDL.values():
            conn.execute(text(ddl[request.param]))
        conn.execute(text("INSERT INTO items VALUES (:id, :name, :weight)"),
                     [{"id": i, "name": f"item {i}", "weight": i * 0.1} for i in range(1, N + 1)])
    yield request.param, url
    engine.dispose()


def _execute(url: str, sql: str, **params: Any) -> None:
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(sql), params)
    engine.dispose()


def _rows(url: str, table: str) -> list[tuple]:
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
    engine.dispose()
    return rows


def _service(url: str, *migrations: type) -> MigrationService:
    stores = [SqlStore("items", url, "items"), SqlStore("copies", url, "copies", key="id"),
              SqlStore("drifts", url, "drifts"), SqlStore("people", url, "people")]
    return MigrationService(stores, list(migrations))


def test_a_clean_run_passes_sampled_and_whole(database, tmp_path, stores):
    _, url = database
    service = _service(url, Copy)
    with SqliteLedger(tmp_path / "p.db") as ledger:
        assert service.run(ledger).ok
        before = _rows(url, "copies")
        sampled = service.verify(ledger, sample=10, seed=3)
        whole = service.verify(ledger, sample=None)
        assert _rows(url, "copies") == before  # nothing written
        kept = ledger.verification()
    assert sampled.ok and whole.ok, whole.summary()
    copy = whole.migration("copy")
    assert (copy.source_total, copy.succeeded, copy.checked, copy.outputs_expected, copy.outputs_found) == (
        N, N, N, N, N)
    assert sampled.migration("copy").checked == 10 and sampled.migration("copy").succeeded == N
    assert kept is not None and kept["status"] == "passed" and kept["sample"] is None


def test_what_handle_duplicate_saved_instead_is_what_it_expects(database, tmp_path):
    _, url = database
    _execute(url, "INSERT INTO people VALUES (3, 'kept@elsewhere.example')")  # a row of another system
    service = _service(url, People)
    with SqliteLedger(tmp_path / "p.db") as ledger:
        assert service.run(ledger).ok
        assert ("dup-55-5@example.com",) in [row[1:] for row in _rows(url, "people")]
        clean = service.verify(ledger, sample=None)
        _execute(url, "UPDATE people SET email = 'changed@example.com' WHERE id = 57")
        changed = service.verify(ledger, sample=None)
    assert clean.ok, clean.summary()
    people = clean.migration("people")
    assert (people.succeeded, people.outputs_found, people.different) == (N, N - 1, 0)
    assert (people.settled, people.settled_skipped) == (9, 1)  # 51-60 but 53 (3 was not taken), and 3
    assert "9 as handle_duplicate settled them, 1 skipped by handle_duplicate" in clean.summary()
    assert not changed.ok
    problems = {(p.check, p.id): p.detail for p in changed.migration("people").problems}
    assert set(problems) == {("different", 57)} and "changed@example.com" in problems[("different", 57)]


def test_it_finds_a_corrupted_a_deleted_and_a_duplicated_row(database, tmp_path):
    _, url = database
    service = _service(url, Copy)
    with SqliteLedger(tmp_path / "p.db") as ledger:
        assert service.run(ledger).ok
        _execute(url, "UPDATE copies SET name = 'CORRUPTED' WHERE id = 5")
        _execute(url, "DELETE FROM copies WHERE id = 7")
        _execute(url, "INSERT INTO copies SELECT * FROM copies WHERE id = 9")
        before = _rows(url, "copies")
        result = service.verify(ledger, sample=None)
        assert _rows(url, "copies") == before
        events = ledger.events()
    copy = result.migration("copy")
    assert not result.ok and result.exit_code == 1
    assert (copy.different, copy.missing, copy.duplicated, copy.drifted) == (1, 1, 1, 0)
    assert copy.counts_ok and not copy.outputs_ok and not copy.replay_ok
    problems = {(p.check, p.id): p.detail for p in copy.problems}
    assert set(problems) == {("different", 5), ("missing", 7), ("duplicated", 9)}
    assert "name: different: expected 'ITEM 5' (str), found 'CORRUPTED' (str)" in problems[("different", 5)]
    assert "copies(id=9)" in problems[("duplicated", 9)] and "2 times" in problems[("duplicated", 9)]
    assert events[-1]["event"] == "verification.failed"


def test_a_sample_that_misses_nothing_finds_it_too(database, tmp_path):
    _, url = database
    service = _service(url, Copy)
    with SqliteLedger(tmp_path / "p.db") as ledger:
        assert service.run(ledger).ok
        _execute(url, "UPDATE copies SET weight = weight + 1")  # every row: any sample meets it
        result = service.verify(ledger, sample=5, seed=1)
    assert result.migration("copy").different == 5 and not result.ok


def test_it_reports_type_drift(database, tmp_path):
    backend, url = database
    service = _service(url, Drift)
    with SqliteLedger(tmp_path / "p.db") as ledger:
        assert service.run(ledger).ok
        result = service.verify(ledger, sample=None)
    drift = result.migration("drift")
    assert not result.ok and drift.drifted == N and drift.different == 0, drift.summary()
    expected = {"decimal_as_float", "lost_zone"} | ({"float4"} if backend != "sqlite" else set())
    assert set(drift.drift) == expected, drift.summary()
    assert all(n == N for n in drift.drift.values()) or backend != "sqlite"
    first = drift.problems[0].detail
    assert "price: Decimal came back as float: expected Decimal('1.25')" in first
    assert "at: timestamp lost its time zone" in first


def test_source_counts_must_add_up(database, tmp_path):
    _, url = database
    service = _service(url, Copy)
    with SqliteLedger(tmp_path / "p.db") as ledger:
        assert service.run(ledger).ok
        _execute(url, "INSERT INTO items VALUES (1000, 'late', 1.0)")
        result = service.verify(ledger, sample=5)
    copy = result.migration("copy")
    assert not copy.counts_ok and copy.unaccounted == 1 and copy.replay_ok and copy.outputs_ok
    assert copy.problems[0].check == "counts" and "1 record(s) of 'items' have no outcome" in copy.problems[0].detail


def totals(preload: bool | None) -> type:
    """A migration that matches each item's prices and reduces them to a total."""

    @migration(source="items", dest="totals", batch_size=7, name="totals",
               match=[Match("prices", cardinality=Cardinality.ZERO_OR_MORE, preload=preload)])
    class Totals:
        def start_reduction(self, record, aggregates):
            aggregates["total"] = 0.0

        def match_with_prices(self, record, aggregates, store):
            return {"item_id": record["id"]}

        def reduce_from_prices(self, aggregates, batch):
            aggregates["total"] += sum(p["amount"] for p in batch)

        def transform(self, aggregates, record):
            if record["name"] == "explodes":
                raise ValueError("cannot total an exploding item")
            return [{"id": record["id"], "total": aggregates["total"]}]

    return Totals


@pytest.mark.parametrize("preload", [None, False])
def test_replay_matches_and_reduces_again(sqlite_url, tmp_path, preload):
    engine = create_engine(sqlite_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(DDL["items"]["sqlite"]))
        conn.execute(text("CREATE TABLE prices (id INTEGER PRIMARY KEY, item_id INTEGER, amount REAL)"))
        conn.execute(text("CREATE TABLE totals (id INTEGER PRIMARY KEY, total REAL)"))
        conn.execute(text("INSERT INTO items VALUES (:id, :name, 0)"), [{"id": i, "name": f"i{i}"} for i in range(1, 31)])
        conn.execute(text("INSERT INTO prices VALUES (:id, :item, :amount)"),
                     [{"id": j, "item": j % 30 + 1, "amount": j * 0.5} for j in range(1, 91)])
    engine.dispose()
    stores = [SqlStore(n, sqlite_url, n) for n in ("items", "prices", "totals")]
    service = MigrationService(stores, [totals(preload)])
    with SqliteLedger(tmp_path / "p.db") as ledger:
        assert service.run(ledger).ok
        assert service.verify(ledger, sample=None).ok
        assert service.verify(ledger, sample=10, seed=2).ok
        _execute(sqlite_url, "UPDATE prices SET amount = amount + 100 WHERE item_id = 4")
        _execute(sqlite_url, "UPDATE items SET name = 'explodes' WHERE id = 9")
        result = service.verify(ledger, sample=None).migration("totals")
    assert (result.different, result.replay_failed, result.checked) == (1, 1, 30)
    problems = {(p.check, p.id): p.detail for p in result.problems}
    assert "total: different" in problems[("different", 4)]
    assert "cannot total an exploding item" in problems[("replay", 9)]


def test_a_verification_of_some_migrations_keeps_the_others_earlier_results(sqlite_url, tmp_path):
    _execute(sqlite_url, DDL["items"]["sqlite"])
    for table in ("copies", "people"):
        _execute(sqlite_url, DDL[table]["sqlite"])
    _execute(sqlite_url, "INSERT INTO items VALUES (1, 'one', 0.5), (2, 'two', 1.5)")
    service = _service(sqlite_url, Copy, People)
    with SqliteLedger(tmp_path / "p.db") as ledger:
        assert service.run(ledger).ok
        _execute(sqlite_url, "UPDATE copies SET name = 'CORRUPTED' WHERE id = 2")
        assert not service.verify(ledger, sample=None).ok
        people_only = service.verify(ledger, sample=None, only=["people"])
        kept = ledger.verification()
    assert people_only.ok and [m.name for m in people_only.migrations] == ["people"]
    assert kept is not None and kept["status"] == "failed" and not kept["ok"]
    by_name = {m["name"]: m for m in kept["migrations"]}
    assert set(by_name) == {"copy", "people"} and not by_name["copy"]["ok"] and by_name["people"]["ok"]
    assert by_name["copy"]["verified_at"] < by_name["people"]["verified_at"] == kept["finished_at"]
    lines = verification_lines(kept)
    assert lines[0].startswith("verification: failed") and "copy: failed in an earlier verification" in lines[1]
