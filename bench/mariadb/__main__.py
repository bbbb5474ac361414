"""``python -m bench.mariadb [--rows N] [--reps R]``: see README.md beside this file.

Creates a database of its own on the server (``ferryman_bench_<pid>``), measures both contestants
in alternated repetitions, prints medians and the ratio, and drops the database. Exit status 1
when an output failed its check or the two contestants left different tables.
"""

from __future__ import annotations

import argparse
import os
import pstats
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import make_url

from ..__main__ import render
from ..harness import RESULTS, Case, Dirs, measure, run_plan, summarise
from ..workloads.suites import Suite, _speed, _target
from . import DEFAULT_SERVER, URL_VARIABLE, WORKLOAD, connect


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.mariadb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=lambda s: int(float(s)), default=300_000, help="rows to copy (300,000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each contestant (3)")
    parser.add_argument("--url", default=os.environ.get("FERRYMAN_TEST_MYSQL_URL") or DEFAULT_SERVER,
                        help="a mysql+pymysql:// URL of the server; the benchmark creates and drops its own database")
    parser.add_argument("--cache", default=str(RESULTS / "data"), help="where generated data is kept")
    parser.add_argument("--profile", action="store_true",
                        help="after the measurements, one more ferryman run under cProfile, printed")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    database = f"ferryman_bench_{os.getpid()}"
    url = make_url(args.url).set(database=database).render_as_string(hide_password=False)
    os.environ[URL_VARIABLE] = url  # the children inherit it
    admin = connect(args.url, autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database}")
    try:
        return _measure_all(args)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.close()


def _measure_all(args: argparse.Namespace) -> int:
    dirs = Dirs(cache=Path(args.cache), scratch=RESULTS / "scratch")
    cases = [Case(WORKLOAD.key, v.name, args.rows) for v in WORKLOAD.variants]
    ferryman, loop = cases
    measurements = run_plan(cases, args.reps, dirs, say=lambda line: print(line, flush=True))
    summaries = summarise(measurements)
    checksums = {m.case: m.check.checksum for m in measurements if m.ok}
    same = len(set(checksums.values())) == 1
    suite = Suite(WORKLOAD.key, f"{WORKLOAD.key} {WORKLOAD.title}", tuple(cases), loop,
                  "batch 512 for both: one transaction per batch (ferryman's holds its journal row)")
    target = _target("MariaDB copy vs executemany loop", ">= 1.0x rows/s", _speed(summaries, ferryman, loop),
                     lambda v: v >= 1.0, "{:.2f}x")
    print(render([suite], summaries, [target]))
    if not same:
        print(f"the contestants left different tables: {checksums}")
    if args.profile:
        stats_path = RESULTS / f"profile-{ferryman.workload}-{ferryman.variant}-{args.rows}.prof"
        stats_path.parent.mkdir(parents=True, exist_ok=True)
        m = measure(ferryman, 0, dirs, profile_to=stats_path)
        print(f"\n{ferryman}: {m.seconds:.2f} s under cProfile, check {'ok' if m.ok else 'WRONG'}")
        for order in ("tottime", "cumulative"):
            pstats.Stats(str(stats_path)).sort_stats(order).print_stats(30)
    return 0 if same and all(m.ok for m in measurements) else 1


if __name__ == "__main__":
    sys.exit(main())
