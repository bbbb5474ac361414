"""W2 match and reduce: for each area, the average and count of its temps (mjg's own example).

``areas`` has one row per 100 ``temps``; ``temps`` is indexed on ``(area_code, value)``. This is
where ferryman's Match runs one query per area, so it measures the query-per-record path
against a hand-written loop doing the same lookups, and against GROUP BY as the limit.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

from .. import data
from .base import Check, Job, Output, Variant, Workload

EXPECTED_SQL = """
SELECT a.id, a.code, avg(t.value), count(t.value)
FROM src.areas a LEFT JOIN src.temps t ON t.area_code = a.code
GROUP BY a.id ORDER BY a.id
"""
ACTUAL_SQL = "SELECT id, code, avg_value, n FROM main.area_stats ORDER BY id"
INSERT_SQL = "INSERT INTO area_stats (id, code, avg_value, n) VALUES (?, ?, ?, ?)"


def average(total: float, n: int) -> float | None:
    """The written average: NULL for an area without temps, like SQL's avg()."""
    return total / n if n else None


def _same_average(got: float | None, want: float | None) -> bool:
    # Sums in another order differ in the last bits; anything beyond that is wrong.
    if got is None or want is None:
        return got is None and want is None
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


class MatchReduceWorkload(Workload):
    key = "W2"
    title = "match and reduce: per-area average and count of temps"
    unit = "temps"
    variants = (
        Variant("ferryman", "ferryman Match + reduce (durable ledger)",
                "bench.workloads.ferryman_runs:area_stats", "ferryman"),
        Variant("per-area-loop", "hand-written per-area query loop",
                "bench.baselines.handwritten:area_stats_loop", "hand-written"),
        Variant("group-by", "SQLite GROUP BY (engine)",
                "bench.baselines.engine_sql:area_stats_group_by", "engine"),
    )

    def source(self, size: int, cache_dir: Path) -> Path:
        return data.areas_temps_db(size, cache_dir)

    def prepare(self, job: Job) -> None:
        data.create_table(Path(job.dest), data.AREA_STATS_DDL)

    def verify(self, job: Job, output: Output) -> Check:
        conn = sqlite3.connect(job.dest)
        try:
            conn.execute("ATTACH DATABASE ? AS src", (job.source,))
            want = conn.execute(EXPECTED_SQL).fetchall()
            got = conn.execute(ACTUAL_SQL).fetchall()
        finally:
            conn.close()
        bad = [
            w[0] for w, g in zip(want, got)
            if g[:2] != w[:2] or g[3] != w[3] or not _same_average(g[2], w[2])
        ]
        ok = len(got) == len(want) == data.n_areas_for(job.size) and not bad
        detail = "" if ok else f"{len(got)} areas written, want {len(want)}; wrong: {bad[:5]}"
        checksum = f"sum(n)={sum(r[3] for r in got)}"
        return Check(ok, len(got), checksum, detail)
