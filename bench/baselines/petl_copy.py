"""W1 with petl: ``fromdb -> convert -> todb``, petl's own row-by-row way."""

from __future__ import annotations

import sqlite3

import petl

from ..workloads.base import Job, Output
from ..workloads.copy import SELECT_SQL


def copy(job: Job) -> Output:
    src, dst = sqlite3.connect(job.source), sqlite3.connect(job.dest)
    try:
        table = petl.convert(petl.fromdb(src, SELECT_SQL), "name", "upper")
        petl.todb(table, dst, "stations")  # one executemany over the stream, then commit
    finally:
        src.close()
        dst.close()
    return {}
