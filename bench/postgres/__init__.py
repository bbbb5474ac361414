"""ferryman against a hand-written psycopg COPY loop, on PostgreSQL (see README.md).

``python -m bench.postgres [--rows N]`` builds N station rows in SQLite and in PostgreSQL, then
measures two migrations with the same per-row Python transform:

* ``sqlite-to-pg``: SQLite table -> PostgreSQL table;
* ``pg-to-pg``: PostgreSQL table -> PostgreSQL table (another table of the same database);

each done by ferryman (``MigrationService`` with the durable SQLite ledger, ``SqlStore`` on both
sides) and by a hand-written loop (read with fetchmany from a server-side cursor, transform,
``COPY`` into the destination). Every measurement runs in a fresh subprocess (so peak RSS is its
own); implementations alternate; each is repeated (3 times by default) and the medians reported.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SEED = 20240611
COLUMNS = ("id", "code", "name", "type", "lat", "lon", "created_at")
OUT_COLUMNS = ("id", "code", "name", "type", "lat", "lon", "created_at", "hemisphere")
PG_SOURCE_DDL = """CREATE TABLE stations (id bigint PRIMARY KEY, code text NOT NULL, name text NOT NULL,
    type text NOT NULL, lat double precision NOT NULL, lon double precision NOT NULL, created_at text NOT NULL)"""
SQLITE_SOURCE_DDL = """CREATE TABLE stations (id INTEGER PRIMARY KEY, code TEXT NOT NULL, name TEXT NOT NULL,
    type TEXT NOT NULL, lat REAL NOT NULL, lon REAL NOT NULL, created_at TEXT NOT NULL)"""
DEST_DDL = """CREATE TABLE stations_out (id bigint PRIMARY KEY, code text NOT NULL, name text NOT NULL,
    type text NOT NULL, lat double precision NOT NULL, lon double precision NOT NULL, created_at text NOT NULL,
    hemisphere text NOT NULL)"""
DEST_TYPES = ["int8", "text", "text", "text", "float8", "float8", "text", "text"]
FETCH = 5000
"""Rows per fetchmany of the hand-written loop."""

SCENARIOS = ("sqlite-to-pg", "pg-to-pg")
IMPLEMENTATIONS = ("ferryman", "handwritten")


def transform(record: dict[str, Any]) -> dict[str, Any]:
    """The per-row Python work both implementations do."""
    lat = record["lat"]
    return {
        "id": record["id"],
        "code": record["code"],
        "name": record["name"].upper(),
        "type": record["type"],
        "lat": round(lat, 3),
        "lon": round(record["lon"], 3),
        "created_at": record["created_at"],
        "hemisphere": "N" if lat >= 0 else "S",
    }


# --- data ---------------------------------------------------------------------------------


def rows(n: int) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(SEED)
    syllables = ("ka", "lo", "mer", "dun", "vi", "sel", "tor", "an", "bre", "quo")
    for i in range(1, n + 1):
        name = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))).capitalize()
        yield (i, f"S{(i * 2654435761) % 2**32:010d}", f"{name} Ridge", rng.choice(("river", "air", "tide")),
               round(rng.uniform(-90, 90), 6), round(rng.uniform(-180, 180), 6), f"2020-01-01T00:{i % 60:02d}:00")


def build_sqlite(path: Path, n: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(SQLITE_SOURCE_DDL)
    conn.executemany(f"INSERT INTO stations VALUES ({', '.join('?' * len(COLUMNS))})", rows(n))
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL as psycopg takes it."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def build_pg(url: str, n: int) -> None:
    import psycopg

    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(PG_SOURCE_DDL)
        with conn.cursor() as cur, cur.copy(f"COPY stations ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows(n):
                copy.write_row(row)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE stations")


def reset_dest(url: str) -> None:
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS stations_out")
        conn.execute("DROP TABLE IF EXISTS ferryman_journal")
        conn.execute(DEST_DDL)
        conn.execute("CHECKPOINT")


def dest_fingerprint(url: str) -> tuple[int, str]:
    import psycopg

    with psycopg.connect(libpq_url(url)) as conn:
        count, digest = conn.execute(
            "SELECT count(*), md5(string_agg(concat_ws('|', id, code, name, type, lat, lon, created_at, hemisphere),"
            " ',' ORDER BY id)) FROM stations_out").fetchone()
    return int(count), str(digest)


# --- the two implementations (run in a child process) -------------------------------------


def run_ferryman(scenario: str, url: str, sqlite_path: Path, work: Path, batch_size: int) -> int:
    from ferryman import Cardinality, MigrationService, migration
    from ferryman.stores import SqlStore

    source_url = f"sqlite:///{sqlite_path}" if scenario == "sqlite-to-pg" else url
    source = SqlStore("stations", source_url, "stations")
    dest = SqlStore("stations_out", url, "stations_out")

    @migration(source="stations", dest="stations_out", cardinality=Cardinality.EXACTLY_ONE,
               batch_size=batch_size, save_batch_size=batch_size)
    class BenchCopy:
        def transform(self, aggregates: Any, record: dict[str, Any]) -> list[dict[str, Any]]:
            return [transform(record)]

    result = MigrationService([source, dest], [BenchCopy], ledger=work / "run.db").run()
    if not result.ok:
        raise SystemExit(f"ferryman run failed: {result.summary()}")
    return result.reports[0].written


def run_handwritten(scenario: str, url: str, sqlite_path: Path, work: Path, batch_size: int) -> int:
    import psycopg

    dest = psycopg.connect(libpq_url(url))
    written = 0
    if scenario == "sqlite-to-pg":
        src = sqlite3.connect(sqlite_path)
        src.row_factory = sqlite3.Row
        cursor: Any = src.execute(f"SELECT {', '.join(COLUMNS)} FROM stations ORDER BY id")
        to_dict: Callable[[Any], dict[str, Any]] = dict
    else:
        src = psycopg.connect(libpq_url(url))
        cursor = src.cursor(name="bench_source", row_factory=psycopg.rows.dict_row)
        cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM stations ORDER BY id")
        to_dict = lambda row: row  # noqa: E731 - already a dict
    with dest.cursor() as out, out.copy(f"COPY stations_out ({', '.join(OUT_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(DEST_TYPES)
        while True:
            batch = cursor.fetchmany(FETCH)
            if not batch:
                break
            for row in batch:
                t = transform(to_dict(row))
                copy.write_row([t[c] for c in OUT_COLUMNS])
            written += len(batch)
    dest.commit()
    dest.close()
    src.close()
    return written


def child(impl: str, scenario: str, url: str, sqlite_path: str, work: str, batch_size: int, profile: bool) -> None:
    # Imports are not timed: the rate is the steady state of each implementation.
    import psycopg  # noqa: F401
    import sqlalchemy  # noqa: F401

    if impl == "ferryman":
        import ferryman.stores.sql  # noqa: F401
    run = run_ferryman if impl == "ferryman" else run_handwritten
    args = (scenario, url, Path(sqlite_path), Path(work), batch_size)
    start, cpu_start = time.perf_counter(), time.process_time()
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        written = profiler.runcall(run, *args)
        elapsed = time.perf_counter() - start
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
    else:
        written = run(*args)
        elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu = time.process_time() - cpu_start  # every thread's: shows whether a run waited or worked
    print(json.dumps({"rows": written, "seconds": elapsed, "cpu_seconds": cpu, "peak_rss_mib": peak_kib / 1024}))


# --- the parent: setup, alternation, report -----------------------------------------------


@dataclass
class Measurement:
    scenario: str
    impl: str
    rows: int
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def measure(impl: str, scenario: str, url: str, sqlite_path: Path, work: Path, batch_size: int,
            profile: bool = False) -> Measurement:
    reset_dest(url)
    run_dir = Path(tempfile.mkdtemp(dir=work))
    command = [sys.executable, "-m", "bench.postgres", "--child", impl, "--scenario", scenario, "--url", url,
               "--sqlite", str(sqlite_path), "--work", str(run_dir), "--batch-size", str(batch_size)]
    if profile:
        command.append("--profile")
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0:
        raise SystemExit(f"{impl} {scenario} failed:\n{done.stdout}\n{done.stderr}")
    if profile:
        print(done.stderr)
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return Measurement(scenario, impl, data["rows"], data["seconds"], data["cpu_seconds"], data["peak_rss_mib"])


def admin_connect(url: str) -> Any:
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(url).set(drivername="postgresql", database="postgres")
    return psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.postgres", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512, help="ferryman's batch_size and save_batch_size")
    parser.add_argument("--url", default=os.environ.get("FERRYMAN_TEST_PG_URL") or DEFAULT_URL,
                        help="any database on the server; the benchmark creates and drops its own")
    parser.add_argument("--only", choices=SCENARIOS, help="run one scenario")
    parser.add_argument("--profile", action="store_true", help="also profile one ferryman run per scenario")
    parser.add_argument("--child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--sqlite", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        child(args.child, args.scenario, args.url, args.sqlite, args.work, args.batch_size, args.profile)
        return 0

    from sqlalchemy.engine import make_url

    database = f"ferryman_bench_{os.getpid()}"
    url = make_url(args.url).set(database=database).render_as_string(hide_password=False)
    scenarios = [args.only] if args.only else list(SCENARIOS)
    with admin_connect(args.url) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="ferryman-bench-") as tmp:
            work = Path(tmp)
            sqlite_path = work / "source.db"
            t = time.perf_counter()
            build_sqlite(sqlite_path, args.rows)
            build_pg(url, args.rows)
            print(f"built {args.rows:,} rows in SQLite and PostgreSQL ({time.perf_counter() - t:.1f}s); "
                  f"server {make_url(args.url).render_as_string(hide_password=True)}, database {database}")
            results: list[Measurement] = []
            fingerprints: dict[tuple[str, str], tuple[int, str]] = {}
            for rep in range(args.repeat):
                for scenario in scenarios:
                    order = IMPLEMENTATIONS if rep % 2 == 0 else tuple(reversed(IMPLEMENTATIONS))
                    for impl in order:
                        m = measure(impl, scenario, url, sqlite_path, work, args.batch_size)
                        results.append(m)
                        fingerprints[(scenario, impl)] = dest_fingerprint(url)
                        print(f"  run {rep + 1}: {scenario:<12} {impl:<11} {m.rate:>10,.0f} rows/s "
                              f"{m.seconds:6.2f}s  CPU {m.cpu_seconds:6.2f}s  peak RSS {m.peak_rss_mib:6.1f} MiB", flush=True)
            for scenario in scenarios:
                a, b = fingerprints[(scenario, "ferryman")], fingerprints[(scenario, "handwritten")]
                if a != b or a[0] != args.rows:
                    raise SystemExit(f"{scenario}: the two implementations wrote different tables: {a} vs {b}")
            report(results, scenarios, args)
            if args.profile:
                for scenario in scenarios:
                    print(f"\n--- cProfile of ferryman, {scenario} ---")
                    measure("ferryman", scenario, url, sqlite_path, work, args.batch_size, profile=True)
    finally:
        with admin_connect(args.url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return 0


def report(results: list[Measurement], scenarios: list[str], args: Any) -> None:
    print(f"\n{args.rows:,} rows, {args.repeat} runs each (medians); ferryman batch_size={args.batch_size}, "
          f"durable ledger; hand-written: fetchmany({FETCH}) + one binary COPY")
    print(f"{'scenario':<12} {'implementation':<15} {'rows/s':>10} {'seconds':>8} {'CPU s':>7} {'peak RSS MiB':>13}")
    for scenario in scenarios:
        rates: dict[str, float] = {}
        for impl in IMPLEMENTATIONS:
            ms = [m for m in results if m.scenario == scenario and m.impl == impl]
            rate = statistics.median(m.rate for m in ms)
            rates[impl] = rate
            print(f"{scenario:<12} {impl:<15} {rate:>10,.0f} {statistics.median(m.seconds for m in ms):>8.2f} "
                  f"{statistics.median(m.cpu_seconds for m in ms):>7.2f} "
                  f"{statistics.median(m.peak_rss_mib for m in ms):>13.1f}")
        print(f"{scenario:<12} {'ferryman / hand-written':<27} {rates['ferryman'] / rates['handwritten']:.2f}x  "
              f"(target >= 0.70x)")

