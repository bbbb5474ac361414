"""The database doing the whole job in one statement: the physical limit of each workload.

No row ever reaches Python, so nothing written in Python (ferryman or a baseline) can beat these;
they say how far from the hardware the others are.
"""

from __future__ import annotations

import sqlite3

from ..workloads.base import Job, Output
from ..workloads.copy import COLUMNS
from ..workloads.lookup_join import EXPECTED_SQL as LINE_TOTALS_SQL
from ..workloads.match_reduce import EXPECTED_SQL


def _attached(job: Job) -> sqlite3.Connection:
    conn = sqlite3.connect(job.dest)
    conn.execute("ATTACH DATABASE ? AS src", (job.source,))
    return conn


def copy_insert_select(job: Job) -> Output:
    """W1: ``INSERT INTO stations SELECT ... upper(name) ...`` across ATTACHed files."""
    selected = ", ".join("upper(name)" if c == "name" else c for c in COLUMNS)
    conn = _attached(job)
    try:
        with conn:
            conn.execute(
                f"INSERT INTO main.stations ({', '.join(COLUMNS)}) SELECT {selected} FROM src.stations ORDER BY id"
            )
    finally:
        conn.close()
    return {}


def area_stats_group_by(job: Job) -> Output:
    """W2: one ``INSERT ... SELECT ... LEFT JOIN ... GROUP BY``."""
    conn = _attached(job)
    try:
        with conn:
            conn.execute(f"INSERT INTO main.area_stats (id, code, avg_value, n) {EXPECTED_SQL}")
    finally:
        conn.close()
    return {}


def line_totals_join(job: Job) -> Output:
    """W4: one ``INSERT ... SELECT`` joining the lines to products and price history."""
    conn = _attached(job)
    try:
        with conn:
            conn.execute("INSERT INTO main.line_totals (id, product_id, sku, quantity, amount, price_changes, "
                         f"highest_price) {LINE_TOTALS_SQL}")
    finally:
        conn.close()
    return {}
