"""W1 with pandas: ``read_sql`` in chunks, a vectorised upper-case, ``to_sql`` appending."""

from __future__ import annotations

import sqlite3

import pandas

from ..workloads.base import Job, Output
from ..workloads.copy import SELECT_SQL

CHUNK = 50_000
"""Rows per DataFrame: big enough for pandas' vectorised path, small enough to keep memory flat."""


def copy(job: Job) -> Output:
    src, dst = sqlite3.connect(job.source), sqlite3.connect(job.dest)
    try:
        for frame in pandas.read_sql(SELECT_SQL, src, chunksize=CHUNK):
            frame["name"] = frame["name"].str.upper()
            frame.to_sql("stations", dst, if_exists="append", index=False)
        dst.commit()
    finally:
        src.close()
        dst.close()
    return {}
