"""How long ``MigrationService.verify`` takes on a large migration: a sample, then everything.

    python -m bench.verify_sample --rows 1000000 --sample 1000 [--all] [--dir DIR]

Builds an SQLite source of ROWS records, migrates it to an SQLite destination with a durable
ledger (the ledger a real run leaves), then times, each in this one process: the sampled
verification (``--sample``) and, with ``--all``, the verification of every record. Prints one
JSON object. Peak memory is this process's RSS high-water mark.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from contextlib import closing

from ferryman import MigrationService, SqlStore, migration
from ferryman.progress.sqlite import SqliteLedger


@migration(source="src", dest="dst", batch_size=2048, save_batch_size=2048, name="copy")
class Copy:
    def transform(self, aggregates, record):
        return [{"id": record["id"], "name": record["name"].upper(), "amount": record["amount"] * 2}]


def build(directory: str, rows: int) -> None:
    for name in ("src", "dst"):
        with closing(sqlite3.connect(os.path.join(directory, f"{name}.db"))) as db, db:
            db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, amount REAL)")
    with closing(sqlite3.connect(os.path.join(directory, "src.db"))) as db, db:
        db.executemany("INSERT INTO items VALUES (?, ?, ?)",
                       ((i, f"item {i}", i * 0.25) for i in range(1, rows + 1)))


def peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--dir")
    args = parser.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="ferryman-verify-bench-")
    os.makedirs(directory, exist_ok=True)
    ledger_path = os.path.join(directory, "progress.db")
    if not os.path.exists(ledger_path):
        build(directory, args.rows)
    stores = [SqlStore("src", f"sqlite:///{directory}/src.db", "items"),
              SqlStore("dst", f"sqlite:///{directory}/dst.db", "items")]
    service = MigrationService(stores, [Copy])
    out: dict[str, object] = {"rows": args.rows, "sample": args.sample}
    with SqliteLedger(ledger_path) as ledger:
        started = time.perf_counter()
        assert service.run(ledger).ok
        out["run_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        sampled = service.verify(ledger, sample=args.sample, seed=1)
        out["verify_sample_s"] = round(time.perf_counter() - started, 2)
        assert sampled.ok and sampled.migration("copy").checked == min(args.sample, args.rows)
        out["peak_mb_after_sample"] = round(peak_mb(), 1)
        if args.all:
            started = time.perf_counter()
            whole = service.verify(ledger, sample=None)
            out["verify_all_s"] = round(time.perf_counter() - started, 2)
            assert whole.ok and whole.migration("copy").checked == args.rows
            out["peak_mb_after_all"] = round(peak_mb(), 1)
    out["dir"] = directory
    print(json.dumps(out))


if __name__ == "__main__":
    main()
