"""W1 with dlt: ``sql_table`` with the pyarrow backend, an Arrow transform, the sqlalchemy destination.

dlt extracts to files, normalises them and loads them, each a step of its own; the time here is
the whole ``pipeline.run``. Its pipeline state goes to the job's scratch directory, and the
destination table already exists (the same DDL every contestant gets), so dlt appends into it.
"""

from __future__ import annotations

import os

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # before dlt is imported: no network

import dlt
import pyarrow
import pyarrow.compute as pc
from dlt.sources.sql_database import sql_table

from ..workloads.base import Job, Output

CHUNK = 50_000
"""Rows per Arrow table (dlt's default chunk size)."""


def _upper_name(table: pyarrow.Table) -> pyarrow.Table:
    """The W1 transform, vectorised as a dlt user would write it for Arrow items."""
    index = table.schema.get_field_index("name")
    return table.set_column(index, "name", pc.utf8_upper(table.column("name")))


def copy(job: Job) -> Output:
    stations = sql_table(
        credentials=f"sqlite:///{job.source}", table="stations", backend="pyarrow", chunk_size=CHUNK
    ).add_map(_upper_name)
    pipeline = dlt.pipeline(
        pipeline_name="bench_w1",
        destination=dlt.destinations.sqlalchemy(credentials=f"sqlite:///{job.dest}"),
        dataset_name="main",  # SQLite's main schema: the destination file itself
        pipelines_dir=os.path.join(job.work, "dlt"),
    )
    info = pipeline.run(stations, write_disposition="append")
    info.raise_on_failed_jobs()
    return {"loads": len(info.loads_ids)}
