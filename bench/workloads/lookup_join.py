"""W4 lookup join: each order line with its product (EXACTLY_ONE) and its price history (ZERO_OR_MORE).

The shape of most real migrations: a big table whose records each look up a few rows of small
tables. ``products`` has one row per 100 lines, ``price_history`` three per product (none for
every 7th). Each line becomes a ``line_totals`` row: its amount at the product's price, how many
earlier prices the product had, and the highest of them. Contestants: ferryman with two Matches,
a hand-written loop doing one indexed lookup per line and table, the same loop with the products
loaded into a dict first, and SQLite's own JOIN as the limit.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .. import data
from .base import Check, Job, Output, Variant, Workload

EXPECTED_SQL = """
SELECT l.id, l.product_id, p.sku, l.quantity, l.quantity * p.price,
       (SELECT count(*) FROM src.price_history h WHERE h.product_id = l.product_id),
       (SELECT max(h.price) FROM src.price_history h WHERE h.product_id = l.product_id)
FROM src.order_lines l JOIN src.products p ON p.id = l.product_id
ORDER BY l.id
"""
ACTUAL_SQL = "SELECT id, product_id, sku, quantity, amount, price_changes, highest_price FROM main.line_totals ORDER BY id"
INSERT_SQL = ("INSERT INTO line_totals (id, product_id, sku, quantity, amount, price_changes, highest_price) "
              "VALUES (?, ?, ?, ?, ?, ?, ?)")


def line_total(line_id: int, product_id: int, sku: str, quantity: int, price: float,
               history: list[float]) -> tuple[object, ...]:
    """The written row, the same function for every contestant that works row by row."""
    return (line_id, product_id, sku, quantity, quantity * price, len(history), max(history) if history else None)


class LookupJoinWorkload(Workload):
    key = "W4"
    title = "lookup join: order lines with their product and its price history"
    unit = "lines"
    variants = (
        Variant("ferryman", "ferryman 2 Matches (durable ledger)",
                "bench.workloads.ferryman_runs:line_totals", "ferryman"),
        Variant("ferryman-read-only", "ferryman 2 read-only Matches (durable)",
                "bench.workloads.ferryman_runs:line_totals_read_only", "ferryman"),
        Variant("per-lookup-loop", "hand-written loop, 2 lookups per line",
                "bench.baselines.handwritten:line_totals_lookups", "hand-written"),
        Variant("dict-loop", "hand-written loop, products in a dict",
                "bench.baselines.handwritten:line_totals_dict", "hand-written"),
        Variant("join", "SQLite INSERT...SELECT JOIN (engine)",
                "bench.baselines.engine_sql:line_totals_join", "engine"),
    )

    def source(self, size: int, cache_dir: Path) -> Path:
        return data.lookup_db(size, cache_dir)

    def prepare(self, job: Job) -> None:
        data.create_table(Path(job.dest), data.LINE_TOTALS_DDL)

    def verify(self, job: Job, output: Output) -> Check:
        conn = sqlite3.connect(job.dest)
        try:
            conn.execute("ATTACH DATABASE ? AS src", (job.source,))
            want = conn.execute(EXPECTED_SQL).fetchall()
            got = conn.execute(ACTUAL_SQL).fetchall()
        finally:
            conn.close()
        bad = [w[0] for w, g in zip(want, got) if g != w]  # exactly: one float product each
        ok = len(got) == len(want) == job.size and not bad
        detail = "" if ok else f"{len(got)} lines written, want {len(want)}; wrong: {bad[:5]}"
        checksum = f"sum(price_changes)={sum(r[5] for r in got)}"
        return Check(ok, len(got), checksum, detail)
