"""Migrations between databases: SQLite -> PostgreSQL, PostgreSQL -> MariaDB, MariaDB -> SQLite.

For each pair, two migrations run in one service with the durable ledger:

* a copy with a transform: ``stations`` (source database) -> ``station_cards`` (destination),
  with decimals, timestamps, JSON, booleans and UUIDs crossing over;
* a match across databases: each station (source database) is matched with its ``readings``
  (destination database) and reduced to ``station_totals`` (destination database).

The destination must then hold exactly the expected rows, with the destination's types (the
type matrix in ``docs/stores.md``), and a second run must skip everything.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from ferryman import Cardinality, Match, MigrationService, migration
from ferryman.stores import SqlStore
from ferryman.types import Record

URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}

DDL = {
    "stations": {
        "postgresql": """CREATE TABLE stations (id bigint PRIMARY KEY, code varchar(20) NOT NULL UNIQUE,
            name text NOT NULL, amount numeric(12, 2), seen_at timestamptz, tags jsonb, active boolean, uid uuid)""",
        "mariadb": """CREATE TABLE stations (id bigint PRIMARY KEY, code varchar(20) NOT NULL UNIQUE,
            name varchar(100) NOT NULL, amount decimal(12, 2), seen_at timestamp(6) NULL, tags json,
            active boolean, uid uuid)""",
        "sqlite": """CREATE TABLE stations (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL, amount TEXT, seen_at DATETIME, tags JSON, active BOOLEAN, uid TEXT)""",
    },
    "station_cards": {
        "postgresql": """CREATE TABLE station_cards (id bigint PRIMARY KEY, label text NOT NULL,
            amount_cents bigint, seen_at timestamptz, tags jsonb, active boolean, uid uuid)""",
        "mariadb": """CREATE TABLE station_cards (id bigint PRIMARY KEY, label varchar(200) NOT NULL,
            amount_cents bigint, seen_at timestamp(6) NULL, tags json, active boolean, uid uuid)""",
        "sqlite": """CREATE TABLE station_cards (id INTEGER PRIMARY KEY, label TEXT NOT NULL,
            amount_cents BIGINT, seen_at DATETIME, tags JSON, active BOOLEAN, uid TEXT)""",
    },
    "readings": {
        "postgresql": "CREATE TABLE readings (id bigint PRIMARY KEY, station_code varchar(20) NOT NULL, value integer NOT NULL)",
        "mariadb": "CREATE TABLE readings (id bigint PRIMARY KEY, station_code varchar(20) NOT NULL, value integer NOT NULL)",
        "sqlite": "CREATE TABLE readings (id INTEGER PRIMARY KEY, station_code TEXT NOT NULL, value INTEGER NOT NULL)",
    },
    "station_totals": {
        "postgresql": "CREATE TABLE station_totals (code varchar(20) PRIMARY KEY, readings integer NOT NULL, total bigint NOT NULL)",
        "mariadb": "CREATE TABLE station_totals (code varchar(20) PRIMARY KEY, readings integer NOT NULL, total bigint NOT NULL)",
        "sqlite": "CREATE TABLE station_totals (code TEXT PRIMARY KEY, readings INTEGER NOT NULL, total BIGINT NOT NULL)",
    },
}

STATIONS = 40
EPOCH = datetime(2024, 3, 31, 22, 30, 0, 250000, tzinfo=UTC)


def station(i: int) -> Record:
    return {
        "id": i,
        "code": f"ST{i:03d}",
        "name": f"Station {i} – Ålesund" if i % 5 == 0 else f"Station {i}",
        "amount": Decimal(f"{i * 37}.{i % 100:02d}"),
        "seen_at": EPOCH + timedelta(hours=i, microseconds=i),
        "tags": {"kind": ["river", "air"][i % 2], "levels": [i, i * 2], "ok": i % 3 != 0},
        "active": i % 4 != 0,
        "uid": uuid.UUID(int=i * 2**64 + 42),
    }


def seed_value(database: str, row: Record) -> Record:
    """A station as written into ``database`` (SQLite has no decimal: the amount is text)."""
    return {**row, "amount": str(row["amount"])} if database == "sqlite" else row


def readings() -> list[Record]:
    """Station ST007 gets most, every third station none."""
    out, n = [], 0
    for i in range(1, STATIONS + 1):
        if i % 3 == 0:
            continue
        for k in range(25 if i == 7 else i % 4 + 1):
            n += 1
            out.append({"id": n, "station_code": f"ST{i:03d}", "value": (i * 10 + k) * (-1) ** k})
    return out


@migration(source="stations", dest="station_cards", cardinality=Cardinality.EXACTLY_ONE, batch_size=7,
           save_batch_size=16)
class CopyStations:
    def transform(self, aggregates: Any, record: Record) -> list[Record]:
        seen = record["seen_at"]
        if seen.tzinfo is None:  # SQLite keeps UTC without a zone
            seen = seen.replace(tzinfo=UTC)
        return [{
            "id": record["id"],
            "label": f"{record['code']}: {record['name'].upper()}",
            "amount_cents": int(Decimal(str(record["amount"])) * 100),
            "seen_at": seen,
            "tags": {**record["tags"], "copied": True},
            "active": record["active"],
            "uid": record["uid"],
        }]


@migration(source="stations", dest="station_totals", cardinality=Cardinality.EXACTLY_ONE, batch_size=7,
           match=[Match("readings", batch_size=4)])
class TotalReadings:
    def start_reduction(self, record: Record, aggregates: dict[str, Any]) -> None:
        aggregates.update(n=0, total=0)

    def match_with_readings(self, record: Record, aggregates: Any, store: Any) -> dict[str, Any]:
        return {"station_code": record["code"]}

    def reduce_from_readings(self, aggregates: dict[str, Any], batch: list[Record]) -> None:
        aggregates["n"] += len(batch)
        aggregates["total"] += sum(r["value"] for r in batch)

    def transform(self, aggregates: dict[str, Any], record: Record) -> list[Record]:
        return [{"code": record["code"], "readings": aggregates["n"], "total": aggregates["total"]}]


def expected_cards(dest: str) -> list[Record]:
    cards = []
    for i in range(1, STATIONS + 1):
        row = station(i)
        seen = row["seen_at"]
        cards.append({
            "id": i,
            "label": f"{row['code']}: {row['name'].upper()}",
            "amount_cents": int(row["amount"] * 100),
            # SQLite stores no zone: the instant comes back as naive UTC.
            "seen_at": seen.replace(tzinfo=None) if dest == "sqlite" else seen,
            "tags": {**row["tags"], "copied": True},
            "active": row["active"],
            # A UUID goes into SQLite's text column as its str.
            "uid": str(row["uid"]) if dest == "sqlite" else row["uid"],
        })
    return cards


def expected_totals() -> list[Record]:
    by_code: dict[str, list[int]] = {}
    for r in readings():
        by_code.setdefault(r["station_code"], []).append(r["value"])
    return sorted(
        ({"code": f"ST{i:03d}", "readings": len(by_code.get(f"ST{i:03d}", [])),
          "total": sum(by_code.get(f"ST{i:03d}", []))} for i in range(1, STATIONS + 1)),
        key=lambda r: r["code"],
    )


def all_rows(store: SqlStore) -> list[Record]:
    return [r for page in store.scan(batch_size=11) for r in page]


@pytest.fixture(params=[("sqlite", "postgresql"), ("postgresql", "mariadb"), ("mariadb", "sqlite")],
                ids=lambda pair: f"{pair[0]}-to-{pair[1]}")
def pair(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def stores(pair: tuple[str, str], request: pytest.FixtureRequest) -> Iterator[dict[str, SqlStore]]:
    source_db, dest_db = pair
    urls = {db: str(request.getfixturevalue(URL_FIXTURES[db])) for db in pair}
    placed = {"stations": source_db, "station_cards": dest_db, "readings": dest_db, "station_totals": dest_db}
    for table, db in placed.items():
        engine = create_engine(urls[db], poolclass=NullPool)
        with engine.begin() as conn:
            conn.execute(text(DDL[table][db]))
        engine.dispose()
    key = {"station_totals": "code"}
    made = {t: SqlStore(t, urls[db], t, key=key.get(t, "id")) for t, db in placed.items()}
    made["stations"].save_all([seed_value(source_db, station(i)) for i in range(STATIONS, 0, -1)])
    made["readings"].save_all(readings())
    yield made
    for store in made.values():
        store.close()


def test_copy_and_match_across_databases(
    pair: tuple[str, str], stores: dict[str, SqlStore], tmp_path: Any
) -> None:
    _source_db, dest_db = pair
    service = MigrationService(list(stores.values()), [CopyStations, TotalReadings], ledger=tmp_path / "run.db")
    result = service.run()
    assert result.ok, result.summary()

    cards = all_rows(stores["station_cards"])
    for got, want in zip(cards, expected_cards(dest_db), strict=True):
        assert got == want
        assert {k: type(v) for k, v in got.items() if k != "seen_at"} == {
            k: type(v) for k, v in want.items() if k != "seen_at"
        }
        assert (got["seen_at"].tzinfo is None) == (dest_db == "sqlite")
    assert all_rows(stores["station_totals"]) == expected_totals()
    assert expected_totals()[6] == {"code": "ST007", "readings": 25, "total": 82}  # matched in pages of 4

    again = service.run()
    assert again.ok and [r.written for r in again.reports] == [0, 0]
    assert [r.skipped for r in again.reports] == [STATIONS, STATIONS]
