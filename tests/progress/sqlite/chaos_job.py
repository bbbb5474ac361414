"""A migration run as its own process, for the crash tests: SQLite -> SQLite, durable ledger.

usage: python chaos_job.py SRC_URL DST_URL LEDGER_PATH [BATCH]

CHAOS_JOB_DELAY=SECONDS in the environment slows each record down (a run that must outlive a test).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

from ferryman import MigrationReport, MigrationService, RunObserver, SqlStore, migration
from ferryman.types import Aggregates, Record


class SayRunning(RunObserver):
    """Tells the test the run has begun (a signal before that kills the process outright)."""

    def run_started(self, reports: Sequence[MigrationReport]) -> None:
        print("running", flush=True)


@migration(source="src", dest="dst", batch_size=int(sys.argv[4]) if len(sys.argv) > 4 else 256)
class CopyUpper:
    delay = float(os.environ.get("CHAOS_JOB_DELAY", "0"))

    def transform(self, aggregates: Aggregates, record: Record) -> list[Record]:
        if self.delay:
            time.sleep(self.delay)
        return [{"id": record["id"], "name": record["name"].upper(), "n": record["n"] * 2}]


def main() -> int:
    src_url, dst_url, ledger = sys.argv[1:4]
    service = MigrationService(
        [SqlStore("src", src_url, "src"), SqlStore("dst", dst_url, "dst")], [CopyUpper], ledger=ledger,
        observers=[SayRunning()],
    )
    result = service.run()
    print(result.summary(), flush=True)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
