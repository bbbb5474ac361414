"""What the progress ledger's kind costs a run: SQLite file vs PostgreSQL schema.

    python -m bench.ledger_kinds --rows 200000 --reps 3 [--server postgresql://postgres@127.0.0.1:5432/test]

Builds an SQLite source of ROWS records once and a database of its own on the server (dropped
at the end), then copies the source into a PostgreSQL table of it (no unique key) with ``ferryman run``'s service, once with an SQLite ledger and once with a
PostgreSQL ledger in a schema of the destination's database, alternating the two for REPS
repetitions, each in a fresh process (``python -m bench.ledger_kinds --one KIND``). Every output
is checked: the destination holds each id once, the ledger every id. Prints one JSON object:
each run's wall seconds, the medians, their ratio, the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing

import psycopg

from ferryman import MigrationService, SqlStore, migration
from ferryman.progress.files import open_ledger, open_reader

KINDS = ("sqlite", "postgresql")
SCHEMA = "bench_ledger"


@migration(source="src", dest="dst", batch_size=1000, name="copy")
class Copy:
    def transform(self, aggregates, record):
        return [{"id": record["id"], "name": record["name"].upper(), "amount": record["amount"] * 2}]


def build(path: str, rows: int) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, amount REAL)")
        db.executemany("INSERT INTO items VALUES (?, ?, ?)", ((i, f"item {i}", i * 0.25) for i in range(1, rows + 1)))


def fresh_destination(pg: str) -> None:
    with closing(psycopg.connect(pg, autocommit=True)) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        for table in ("bench_items", "ferryman_journal", "ferryman_fence"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute("CREATE TABLE bench_items (id bigint NOT NULL, name text, amount double precision)")


def location(kind: str, directory: str, pg: str) -> str:
    return os.path.join(directory, "progress.db") if kind == "sqlite" else f"{pg}?schema={SCHEMA}"


def one(kind: str, directory: str, pg: str) -> float:
    """One run in this process; its wall seconds."""
    progress = location(kind, directory, pg)
    if os.path.exists(progress):
        os.remove(progress)
    stores = [SqlStore("src", f"sqlite:///{directory}/src.db", "items"),
              SqlStore("dst", pg.replace("postgresql://", "postgresql+psycopg://", 1), "bench_items")]
    service = MigrationService(stores, [Copy], ledger=open_ledger(progress))
    started = time.perf_counter()
    result = service.run()
    seconds = time.perf_counter() - started
    assert service.ledger is not None
    service.ledger.close()
    for store in stores:
        store.close()
    if not result.ok:
        raise SystemExit(f"{kind}: the run failed: {result.summary()}")
    return seconds


def check(kind: str, directory: str, pg: str, rows: int) -> None:
    with closing(psycopg.connect(pg)) as conn:
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM bench_items").fetchone() or (0, 0)
    with open_reader(location(kind, directory, pg)) as reader:
        (identity,) = reader.identities()
        recorded = sum(1 for _ in reader.iter_succeeded(identity))
    if (total, distinct, recorded) != (rows, rows, rows):
        raise SystemExit(f"{kind}: WRONG output: {total} rows, {distinct} ids, {recorded} in the ledger; want {rows}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a database of the server to connect to while the bench's own is made")
    parser.add_argument("--pg", help=argparse.SUPPRESS)
    parser.add_argument("--dir")
    parser.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(one(args.one, args.dir, args.pg))
        return
    database = f"bench_ledger_{os.getpid()}"
    with closing(psycopg.connect(args.server, autocommit=True)) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    try:
        run_all(args, args.server.rsplit("/", 1)[0] + "/" + database)
    finally:
        with closing(psycopg.connect(args.server, autocommit=True)) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def run_all(args: argparse.Namespace, pg: str) -> None:
    args.pg = pg
    directory = args.dir or tempfile.mkdtemp(prefix="ferryman-ledger-bench-")
    if not os.path.exists(os.path.join(directory, "src.db")):
        build(os.path.join(directory, "src.db"), args.rows)
    load_before = os.getloadavg()
    seconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for rep in range(args.reps):
        for kind in KINDS if rep % 2 == 0 else KINDS[::-1]:  # alternated
            fresh_destination(args.pg)
            out = subprocess.run([sys.executable, "-m", "bench.ledger_kinds", "--one", kind, "--dir", directory,
                                  "--pg", args.pg], capture_output=True, text=True, check=True)
            seconds[kind].append(float(out.stdout.strip().splitlines()[-1]))
            check(kind, directory, args.pg, args.rows)
    medians = {kind: statistics.median(values) for kind, values in seconds.items()}
    print(json.dumps({
        "rows": args.rows, "reps": args.reps, "seconds": seconds, "median_seconds": medians,
        "rows_per_second": {kind: round(args.rows / m) for kind, m in medians.items()},
        "postgresql_vs_sqlite_time": round(medians["postgresql"] / medians["sqlite"], 3),
        "load_before": load_before, "load_after": os.getloadavg(),
    }, indent=2))


if __name__ == "__main__":
    main()
