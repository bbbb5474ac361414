"""The hand-written contestant of ``python -m bench.mariadb``: what a careful developer writes
with ``sqlite3`` and PyMySQL (imported here, before the harness starts its clock)."""

from __future__ import annotations

import sqlite3

import pymysql  # noqa: F401 - imported before the clock starts, as ferryman is in its run module

from ..workloads.base import Job, Output
from ..workloads.copy import COLUMNS, SELECT_SQL, transform_station
from . import DEST_TABLE, bench_url, connect

BATCH = 512
"""Rows per ``fetchmany``, per ``executemany`` and per commit: ferryman's default batch."""

INSERT_SQL = (f"INSERT INTO {DEST_TABLE} ({', '.join(COLUMNS)}) "
              f"VALUES ({', '.join(f'%({c})s' for c in COLUMNS)})")


def copy_executemany_loop(job: Job) -> Output:
    """fetchmany(512) -> a dict per row -> transform -> ``executemany`` (PyMySQL sends one
    multi-row INSERT) -> commit, batch after batch: resumable by hand at a batch boundary, as
    careful a loop as a developer writes without a framework."""
    src, dst = sqlite3.connect(job.source), connect(bench_url())
    try:
        cursor = src.execute(SELECT_SQL)
        columns = [d[0] for d in cursor.description]
        with dst.cursor() as out:
            while rows := cursor.fetchmany(BATCH):
                out.executemany(INSERT_SQL, [transform_station(dict(zip(columns, row))) for row in rows])
                dst.commit()
    finally:
        src.close()
        dst.close()
    return {}
