"""What a careful engineer writes by hand with ``sqlite3``: the bar ferryman has to clear.

No framework, no progress, no failure handling: rows become dicts, go through the same Python
transform as ferryman's, and are written with ``executemany`` in a single transaction.
"""

from __future__ import annotations

import sqlite3

from ..workloads.base import Job, Output
from ..workloads.copy import INSERT_SQL, SELECT_SQL, transform_station
from ..workloads.lookup_join import INSERT_SQL as INSERT_TOTALS_SQL
from ..workloads.lookup_join import line_total
from ..workloads.match_reduce import INSERT_SQL as INSERT_STATS_SQL
from ..workloads.match_reduce import average

FETCH = 512
"""Rows per ``fetchmany``, and results per ``executemany``: ferryman's default batch."""


def copy_dict_loop(job: Job) -> Output:
    """W1: fetchmany(512) -> a dict per row -> transform -> executemany, one transaction."""
    src, dst = sqlite3.connect(job.source), sqlite3.connect(job.dest)
    try:
        cursor = src.execute(SELECT_SQL)
        columns = [d[0] for d in cursor.description]
        with dst:
            while rows := cursor.fetchmany(FETCH):
                dst.executemany(INSERT_SQL, [transform_station(dict(zip(columns, row))) for row in rows])
    finally:
        src.close()
        dst.close()
    return {}


def area_stats_loop(job: Job) -> Output:
    """W2: for each area one indexed ``SELECT value FROM temps WHERE area_code = ?``, summed in Python."""
    src, dst = sqlite3.connect(job.source), sqlite3.connect(job.dest)
    try:
        areas = src.execute("SELECT id, code FROM areas ORDER BY id")
        with dst:
            while page := areas.fetchmany(FETCH):
                results = []
                for area_id, code in page:
                    total, n = 0.0, 0
                    for (value,) in src.execute("SELECT value FROM temps WHERE area_code = ?", (code,)):
                        total += value
                        n += 1
                    results.append((area_id, code, average(total, n), n))
                dst.executemany(INSERT_STATS_SQL, results)
    finally:
        src.close()
        dst.close()
    return {}


LINES_SQL = "SELECT id, product_id, quantity FROM order_lines ORDER BY id"
PRODUCT_SQL = "SELECT sku, price FROM products WHERE id = ?"
HISTORY_SQL = "SELECT price FROM price_history WHERE product_id = ?"


def line_totals_lookups(job: Job) -> Output:
    """W4: for each line one indexed lookup of its product and one of its price history."""
    src, dst = sqlite3.connect(job.source), sqlite3.connect(job.dest)
    try:
        lines = src.execute(LINES_SQL)
        with dst:
            while page := lines.fetchmany(FETCH):
                results = []
                for line_id, product_id, quantity in page:
                    sku, price = src.execute(PRODUCT_SQL, (product_id,)).fetchone()
                    history = [p for (p,) in src.execute(HISTORY_SQL, (product_id,))]
                    results.append(line_total(line_id, product_id, sku, quantity, price, history))
                dst.executemany(INSERT_TOTALS_SQL, results)
    finally:
        src.close()
        dst.close()
    return {}


def line_totals_dict(job: Job) -> Output:
    """W4: the products loaded into a dict first; one indexed price-history lookup per line."""
    src, dst = sqlite3.connect(job.source), sqlite3.connect(job.dest)
    try:
        products = {i: (sku, price) for i, sku, price in src.execute("SELECT id, sku, price FROM products")}
        lines = src.execute(LINES_SQL)
        with dst:
            while page := lines.fetchmany(FETCH):
                results = []
                for line_id, product_id, quantity in page:
                    sku, price = products[product_id]
                    history = [p for (p,) in src.execute(HISTORY_SQL, (product_id,))]
                    results.append(line_total(line_id, product_id, sku, quantity, price, history))
                dst.executemany(INSERT_TOTALS_SQL, results)
    finally:
        src.close()
        dst.close()
    return {}
