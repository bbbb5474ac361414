"""W1 copy: ``stations`` from one SQLite file to another, upper-casing each name in Python.

The simplest migration there is, so it shows ferryman's own cost per record: paging, the
per-record pipeline, batched saves and the ledger. The destination keeps the source ids.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from .. import data
from .base import Check, Job, Output, Variant, Workload

COLUMNS = data.STATION_COLUMNS
SELECT_SQL = f"SELECT {', '.join(COLUMNS)} FROM stations ORDER BY id"
INSERT_SQL = f"INSERT INTO stations ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})"

# Destination rows equal to the transformed source row, column by column (floats exactly:
# every contestant must round-trip a REAL unchanged).
MATCHED_SQL = """
SELECT count(*) FROM main.stations d JOIN src.stations s ON s.id = d.id
WHERE d.code = s.code AND d.name = upper(s.name) AND d.type = s.type
  AND d.lat = s.lat AND d.lon = s.lon AND d.created_at = s.created_at
"""


def transform_station(record: dict[str, Any]) -> dict[str, Any]:
    """The W1 transform, the same function for every contestant that works row by row."""
    return {**record, "name": record["name"].upper()}


def station_counts(dest: str | Path, source: str | Path) -> tuple[int, int, int]:
    """Rows in the destination, rows equal to their transformed source row, and the sum of ids."""
    conn = sqlite3.connect(dest)
    try:
        conn.execute("ATTACH DATABASE ? AS src", (str(source),))
        rows, id_sum = conn.execute("SELECT count(*), coalesce(sum(id), 0) FROM main.stations").fetchone()
        matched = conn.execute(MATCHED_SQL).fetchone()[0]
    finally:
        conn.close()
    return rows, matched, id_sum


class CopyWorkload(Workload):
    key = "W1"
    title = "copy stations SQLite -> SQLite, per-row upper(name)"
    variants = (
        Variant("ferryman-durable", "ferryman (durable ledger)",
                "bench.workloads.ferryman_runs:copy_durable", "ferryman"),
        Variant("ferryman-memory", "ferryman (checkpoints off)",
                "bench.workloads.ferryman_runs:copy_in_memory", "ferryman"),
        Variant("insert-select", "SQLite INSERT...SELECT (engine)",
                "bench.baselines.engine_sql:copy_insert_select", "engine"),
        Variant("dict-loop", "hand-written sqlite3 dict loop",
                "bench.baselines.handwritten:copy_dict_loop", "hand-written"),
        Variant("petl", "petl fromdb/convert/todb",
                "bench.baselines.petl_copy:copy", "library", ("petl",)),
        Variant("pandas", "pandas read_sql/to_sql chunks",
                "bench.baselines.pandas_copy:copy", "library", ("pandas",)),
        Variant("dlt", "dlt sql_database(pyarrow) -> sqlalchemy",
                "bench.baselines.dlt_copy:copy", "library", ("dlt", "pyarrow")),
    )

    def source(self, size: int, cache_dir: Path) -> Path:
        return data.stations_db(size, cache_dir)

    def prepare(self, job: Job) -> None:
        data.create_table(Path(job.dest), data.STATIONS_DDL)

    def verify(self, job: Job, output: Output) -> Check:
        rows, matched, id_sum = station_counts(job.dest, job.source)
        expected_sum = job.size * (job.size + 1) // 2
        ok = rows == matched == job.size and id_sum == expected_sum
        detail = "" if ok else f"{rows} rows, {matched} equal to the source, want {job.size}"
        return Check(ok, rows, f"sum(id)={id_sum}", detail)
