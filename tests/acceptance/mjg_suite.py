"""mjg's own acceptance fixture (suite1), in ferryman: stations, indicators, measurements.

M1 pivots stations x indicators, M2 copies stations, M3 averages measurements per
station-indicator using M1's and M2's outputs. ``make_stores`` builds the same stores in memory
or as tables in any SQL database, so every scenario runs on each (``test_mjg_suite.py``: memory
and SQLite; ``test_mjg_suite_servers.py``: PostgreSQL and MariaDB).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ferryman import Cardinality, Match, MemoryStore, Retry, SqlStore, migration

INDICATORS = [
    {"id": i, "code": f"INDICATOR_{i}", "name": name}
    for i, name in enumerate(["pH", "TSS", "COD", "Hg", "NO2"], 1)
]
STATIONS = [{"id": i, "code": f"STATION_{i}"} for i in (1, 2, 3)]
MEASUREMENTS = [
    {"id": n, "station_indicator_id": sid, "value": v}
    for n, (sid, v) in enumerate(
        [
            ("STATION_1,INDICATOR_1", 14.0), ("STATION_1,INDICATOR_2", 255.0),
            ("STATION_1,INDICATOR_3", 411.0), ("STATION_1,INDICATOR_4", -52.25),
            ("STATION_2,INDICATOR_4", 12.03), ("STATION_2,INDICATOR_4", -40.01),
            ("STATION_2,INDICATOR_4", 50774.0), ("STATION_2,INDICATOR_4", 0.0),
        ],
        1,
    )
]

NO_RETRY = Retry(times=0, delay=0)


def expected_pivot(station_ids=(1, 2, 3)) -> list[dict[str, Any]]:
    return [
        {"id": f"STATION_{s},INDICATOR_{i}", "station_code": f"STATION_{s}", "station_id": s,
         "indicator_code": f"INDICATOR_{i}", "indicator_id": i}
        for s in station_ids for i in range(1, 6)
    ]


@migration(
    source="stations", dest="station_indicators", batch_size=1,
    match=[Match("indicators", batch_size=1, retry=NO_RETRY)],
    load_retry=NO_RETRY, save_retry=NO_RETRY,
)
class M1_PopulatePivotTable:
    """Station x indicator; ``fail_in`` makes one method always fail, as mjg's test switch."""

    fail_in: str | None = None
    fail_station: int | None = None
    duplicate_calls = 0

    def _maybe_fail(self, method: str, record: dict[str, Any] | None = None) -> None:
        if self.fail_in == method and (
            record is None or self.fail_station is None or record["id"] == self.fail_station
        ):
            raise RuntimeError(f"Fake error while {method}")

    def start_reduction(self, record, aggregates):
        self._maybe_fail("start_reduction", record)
        aggregates["indicators"] = []

    def match_with_indicators(self, record, aggregates, store):
        self._maybe_fail("match_with_indicators", record)
        return {}

    def reduce_from_indicators(self, aggregates, batch):
        self._maybe_fail("reduce_from_indicators")
        aggregates["indicators"].extend(batch)

    def transform(self, aggregates, record):
        self._maybe_fail("transform", record)
        return [
            {"id": f"{record['code']},{ind['code']}", "station_code": record["code"],
             "station_id": record["id"], "indicator_code": ind["code"], "indicator_id": ind["id"]}
            for ind in aggregates["indicators"]
        ]

    def handle_duplicate(self, error, record, outputs, source, dest, registry):
        type(self).duplicate_calls += 1
        self._maybe_fail("handle_duplicate", record)
        return None


@migration(source="stations", dest="stations2", cardinality=Cardinality.EXACTLY_ONE)
class M2_CopyStations:
    def transform(self, aggregates, record):
        return [{"id": record["id"], "code": f"new code {record['code']}"}]


@migration(
    source="station_indicators", dest="station_indicators2", cardinality=Cardinality.EXACTLY_ONE,
    match=[
        Match("stations2", cardinality=Cardinality.EXACTLY_ONE),
        Match("measurements", cardinality=Cardinality.ZERO_OR_MORE),
    ],
)
class M3_AverageMeasurements:
    def start_reduction(self, record, aggregates):
        aggregates.update(total=0.0, count=0, station=None)

    def match_with_stations2(self, record, aggregates, store):
        return {"code": f"new code {record['station_code']}"}

    def reduce_from_stations2(self, aggregates, batch):
        aggregates["station"] = batch[0]

    def match_with_measurements(self, record, aggregates, store):
        return {"station_indicator_id": record["id"]}

    def reduce_from_measurements(self, aggregates, batch):
        aggregates["total"] += sum(m["value"] for m in batch)
        aggregates["count"] += len(batch)

    def transform(self, aggregates, record):
        count = aggregates["count"]
        return [{
            "id": record["id"],
            "station_code": aggregates["station"]["code"],
            "station_id": aggregates["station"]["id"],
            "indicator_code": record["indicator_code"],
            "average_value": aggregates["total"] / count if count else None,
        }]


MIGRATIONS = [M1_PopulatePivotTable, M2_CopyStations, M3_AverageMeasurements]


def _tables(meta: sa.MetaData) -> None:
    sa.Table("indicators", meta, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("code", sa.String(40), unique=True), sa.Column("name", sa.String(40)))
    sa.Table("stations", meta, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("code", sa.String(40), unique=True))
    sa.Table("measurements", meta, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("station_indicator_id", sa.String(80), index=True),
             sa.Column("value", sa.Float))
    sa.Table("station_indicators", meta, sa.Column("id", sa.String(80), primary_key=True),
             sa.Column("station_code", sa.String(40)), sa.Column("station_id", sa.Integer),
             sa.Column("indicator_code", sa.String(40)), sa.Column("indicator_id", sa.Integer))
    sa.Table("stations2", meta, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("code", sa.String(60), unique=True))
    sa.Table("station_indicators2", meta, sa.Column("id", sa.String(80), primary_key=True),
             sa.Column("station_code", sa.String(60)), sa.Column("station_id", sa.Integer),
             sa.Column("indicator_code", sa.String(40)), sa.Column("average_value", sa.Float),
             sa.UniqueConstraint("station_code", "indicator_code"))


SEED = {"indicators": INDICATORS, "stations": STATIONS, "measurements": MEASUREMENTS}
STORE_NAMES = ["indicators", "stations", "measurements", "station_indicators", "stations2",
               "station_indicators2"]


def make_stores(kind: str, url: str | None = None) -> list:
    """The six stores, seeded: in memory (``kind="memory"``), else as tables in the database at
    ``url`` (any SQLAlchemy URL: SQLite, PostgreSQL, MariaDB; the database must be empty)."""
    if kind == "memory":
        uniques = {"stations2": [("code",)], "station_indicators2": [("station_code", "indicator_code")]}
        return [MemoryStore(n, "id", records=SEED.get(n, ()), unique=uniques.get(n, ()))
                for n in STORE_NAMES]
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    _tables(meta)
    meta.create_all(engine)
    with engine.begin() as conn:
        for name, rows in SEED.items():
            conn.execute(meta.tables[name].insert(), rows)
    engine.dispose()
    return [SqlStore(n, url, n, key="id") for n in STORE_NAMES]


def rows(store) -> list[dict[str, Any]]:
    """Every record of a store, in key order."""
    return [r for page in store.scan() for r in page]
