"""ferryman's contestant of ``python -m bench.mariadb`` (ferryman imported here, before the
harness starts its clock, as for every workload)."""

from __future__ import annotations

from ferryman import SqlStore

from ..workloads.base import Job, Output
from ..workloads.ferryman_runs import CopyStations, _run
from . import DEST_TABLE, bench_url


def copy_ferryman(job: Job) -> Output:
    """W1's migration, its destination a MariaDB table, with the durable ledger."""
    stores = [SqlStore("stations", f"sqlite:///{job.source}", "stations"),
              SqlStore("stations_copy", bench_url(), DEST_TABLE)]
    return _run(stores, CopyStations, job.ledger)
