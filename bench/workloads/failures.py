"""W3 failures: W1 where 1% of the records fail in ``transform`` and 0.1% hit a duplicate.

Ids with ``id % 100 == 7`` raise ValueError in transform (and again in the retry pass after the
main pass); ids with ``id % 1000 == 3`` are already in the destination (different content), so
their save hits the primary key and ``handle_duplicate`` returns None. The first batch holding
one fails and the store names its culprit; from then on each batch's keys are looked up before
it is saved and the culprits saved alone. So this measures failure isolation, the retry pass and
the failed-records ledger. The check asks the ledger for exactly the expected failed ids.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .. import data
from .base import Check, Job, Output, Variant, Workload
from .copy import COLUMNS, station_counts

TRANSFORM_FAILS = (100, 7)
"""(every, at): records whose id % every == at raise ValueError in transform (1%)."""
ALREADY_THERE = (1000, 3)
"""(every, at): ids pre-inserted into the destination, so saving them is a duplicate (0.1%)."""
PREEXISTING_NAME = "PRE-EXISTING"


def fails_in_transform(record_id: int) -> bool:
    return record_id % TRANSFORM_FAILS[0] == TRANSFORM_FAILS[1]


def _ids(size: int, every_at: tuple[int, int]) -> range:
    every, at = every_at
    return range(at, size + 1, every)


def expected_failures(size: int) -> tuple[set[int], set[int]]:
    """The ids that must end in the failed-records ledger: (transform errors, duplicates)."""
    return set(_ids(size, TRANSFORM_FAILS)), set(_ids(size, ALREADY_THERE))


def _ledger_failures(path: str) -> dict[int, str]:
    """Failed record id -> cause, from the durable ledger the run left behind."""
    from ferryman.progress.sqlite import SqliteLedger

    ledger = SqliteLedger(path, read_only=True)
    try:
        return {f.id: f.cause for identity in ledger.identities() for f in ledger.failed_records(identity)}  # type: ignore[misc]
    finally:
        ledger.close()


class FailuresWorkload(Workload):
    key = "W3"
    title = "copy with 1% transform errors and 0.1% duplicates"
    variants = (
        Variant("ferryman-durable", "ferryman (durable ledger), failures",
                "bench.workloads.ferryman_runs:copy_with_failures", "ferryman"),
    )

    def source(self, size: int, cache_dir: Path) -> Path:
        return data.stations_db(size, cache_dir)

    def prepare(self, job: Job) -> None:
        data.create_table(Path(job.dest), data.STATIONS_DDL)
        conn = sqlite3.connect(job.dest)
        try:
            with conn:
                conn.executemany(
                    f"INSERT INTO stations ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    ((i, f"P{i:09d}", PREEXISTING_NAME, "weather", 0.0, 0.0, "2000-01-01T00:00:00")
                     for i in _ids(job.size, ALREADY_THERE)),
                )
        finally:
            conn.close()

    def verify(self, job: Job, output: Output) -> Check:
        raised, duplicates = expected_failures(job.size)
        rows, matched, id_sum = station_counts(job.dest, job.source)
        conn = sqlite3.connect(job.dest)
        try:
            kept = conn.execute("SELECT count(*) FROM stations WHERE name = ?", (PREEXISTING_NAME,)).fetchone()[0]
        finally:
            conn.close()
        failed = _ledger_failures(job.ledger)
        problems = []
        if rows != job.size - len(raised) or matched != job.size - len(raised) - len(duplicates):
            problems.append(f"{rows} rows / {matched} equal to the source")
        if kept != len(duplicates):
            problems.append(f"{kept} pre-existing rows left, want {len(duplicates)}")
        if set(failed) != raised | duplicates:
            problems.append(f"ledger has {len(failed)} failed ids, want {len(raised | duplicates)}")
        elif not all("ValueError" in failed[i] for i in raised) or not all(
            "DuplicateDataError" in failed[i] for i in duplicates
        ):
            problems.append("a failed record has the wrong cause")
        return Check(not problems, rows, f"sum(id)={id_sum}; failed={len(failed)}", "; ".join(problems))
