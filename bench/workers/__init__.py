"""``ferryman run TARGET --workers 2`` against ``--workers 1`` into PostgreSQL (see README.md).

``python -m bench.workers [--rows N] [--reps R] [--work-us U]`` builds N station rows in SQLite
and in PostgreSQL (``bench.postgres``'s data), calibrates a pure-Python loop so that it costs
about U microseconds, writes a TARGET file whose migration copies the stations into a PostgreSQL
table with ``bench.postgres``'s transform plus that loop per record, then times the command line
``ferryman run TARGET --workers 1`` and ``--workers 2`` (fresh processes, a fresh destination
table and a fresh progress ledger each time), alternated, and reports medians. Every run's
destination is checked in SQL against the expected table.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from ..postgres import (
    COLUMNS,
    DEFAULT_URL,
    admin_connect,
    build_pg,
    build_sqlite,
    dest_fingerprint,
    libpq_url,
    reset_dest,
    rows,
    run_handwritten,
    transform,
)

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = ("sqlite-to-pg", "pg-to-pg")
WORKERS = (1, 2)
TARGET_RATIO = {"process": 1.5, "ray": 1.3}
"""The goal of ``--workers 2`` over ``--workers 1``, per engine of the workers."""
"""The goal: ``--workers 2`` at least this many times the rows/s of ``--workers 1``."""
POLL = 0.02
"""Seconds between two looks at the coordinator's worker processes."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

TARGET_TEMPLATE = '''"""Written by python -m bench.workers ({scenario}): stations copied into PostgreSQL,
bench.postgres's transform plus {loops} turns of a pure-Python loop per record."""

import sys

sys.path.insert(0, {repo!r})  # the workers import this file on their own

from ferryman import Cardinality, migration
from ferryman.stores import SqlStore

from bench.workers import busy_transform

stores = [SqlStore("stations", {source!r}, "stations"), SqlStore("stations_out", {dest!r}, "stations_out")]


@migration(source="stations", dest="stations_out", cardinality=Cardinality.EXACTLY_ONE)
class BusyCopy:
    def transform(self, aggregates, record):
        return [busy_transform(record, {loops})]


migrations = [BusyCopy]
'''


def spin(turns: int) -> int:
    """Pure-Python work that holds the GIL: what a costly transform does per record."""
    total = 0
    for i in range(turns):
        total += i
    return total


def busy_transform(record: dict[str, Any], turns: int) -> dict[str, Any]:
    """The migration's transform: ``spin(turns)``, then bench.postgres's (the output does not
    depend on the loop, so every run must leave the same table)."""
    spin(turns)
    return transform(record)


def _best_seconds(call: Any, repeat: int = 5) -> float:
    """The fastest of ``repeat`` timings of ``call``: other processes only ever slow it down."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


@dataclass
class Calibration:
    """The loop turns per record, what they cost by the interpolation, what the whole transform
    measured with them."""

    turns: int
    loop_us: float
    transform_us: float

    def __str__(self) -> str:
        return (f"calibration: {self.turns} loop turns = {self.loop_us:.1f} us; the whole transform "
                f"{self.transform_us:.1f} us per record (best timings, in this process)")


def calibrate(work_us: float) -> Calibration:
    """The loop turns that make the whole transform cost ``work_us`` here: the transform timed
    with no turn and with some, the turns interpolated (twice), then timed again (the fastest of
    many timings each: the machine's other load only makes work look dearer)."""
    record = dict(zip(COLUMNS, next(rows(1))))
    sample = 500

    def per_record(turns: int) -> float:
        def transform_sample() -> None:
            for _ in range(sample):
                busy_transform(record, turns)
        return _best_seconds(transform_sample, repeat=20) / sample * 1e6

    base = per_record(0)
    turns = 1_000
    for _ in range(2):  # a second step corrects the first's guess of a turn's cost
        per_turn = (per_record(turns) - base) / turns
        turns = max(1, round((work_us - base) / per_turn))
    return Calibration(turns, turns * per_turn, per_record(turns))


def write_target(path: Path, scenario: str, url: str, sqlite_path: Path, turns: int) -> None:
    source = f"sqlite:///{sqlite_path}" if scenario == "sqlite-to-pg" else url
    path.write_text(TARGET_TEMPLATE.format(scenario=scenario, loops=turns, repo=str(REPO), source=source, dest=url))


# --- checks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """What a run must leave: N rows, N distinct ids, the md5 of every row in id order."""

    count: int
    distinct_ids: int
    md5: str


def fingerprint(url: str) -> Fingerprint:
    import psycopg

    count, digest = dest_fingerprint(url)
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SELECT count(DISTINCT id) FROM stations_out").fetchone()
    assert row is not None
    return Fingerprint(count, int(row[0]), digest)


def expected_fingerprint(url: str, sqlite_path: Path, work: Path) -> Fingerprint:
    """The table the migration must leave, written once by bench.postgres's hand-written COPY
    loop with the same transform (the loop changes no output)."""
    reset_dest(url)
    run_handwritten("sqlite-to-pg", url, sqlite_path, work, 512)
    return fingerprint(url)


def check(found: Fingerprint, expected: Fingerprint, n: int) -> str:
    """"ok", or what is wrong with the destination."""
    wrong = [f"{name} {getattr(found, name)} (expected {want})" for name, want in
             (("count", n), ("distinct_ids", n), ("md5", expected.md5)) if getattr(found, name) != want]
    return "ok" if not wrong else "WRONG: " + ", ".join(wrong)


# --- one run: a fresh ferryman process ----------------------------------------------------------


@dataclass
class Measurement:
    scenario: str
    workers: int
    rows: int
    seconds: float
    cpu_seconds: float
    cpu_wait_seconds: float
    workers_cpu_seconds: float | None
    before_workers: float | None
    after_workers: float | None
    verdict: str

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def _live_children(pid: int) -> dict[int, float]:
    """The process's children that have not exited, with the CPU seconds each used so far (a
    worker that ended but is not yet reaped by its coordinator is a zombie: it counts as ended)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return {}
    live = {}
    for kid in kids:
        try:
            fields = Path(f"/proc/{kid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":  # state; utime and stime are fields 14 and 15 of the whole line
            live[int(kid)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return live


def _run_queue_wait(pid: int) -> float | None:
    """Seconds the process's main thread was ready to run but waited for a CPU (``schedstat``'s
    second field): what the machine's other load took from it."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def measure(scenario: str, workers: int, target: Path, url: str, work: Path, n: int,
            expected: Fingerprint, options: Any) -> Measurement:
    """Time ``ferryman run TARGET --workers N`` end to end (interpreter start to exit), and when
    its workers ran: the coordinator's time before the first one started (imports, the split)
    and after the last one ended (the fold of the partitions into the ledger, the run's end)."""
    reset_dest(url)
    run_dir = Path(tempfile.mkdtemp(dir=work))
    progress = str(run_dir / "progress.db")
    if options.ledger == "postgresql":
        progress = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False) + \
            f"?schema=ledger_{run_dir.name.lower()}"
    command = [sys.executable, "-m", "ferryman", "-v", "run", str(target), "--workers", str(workers),
               "--progress", progress, "--no-bar"]
    if workers > 1 and options.engine == "ray":
        command += ["--engine", "ray", *(["--address", options.address] if options.address else [])]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(run_dir / "output.txt", "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=run_dir, stdout=out, stderr=subprocess.STDOUT)
        first = last = None
        worker_cpu: dict[int, float] = {}  # as last seen, up to POLL before each worker's end
        waits: dict[int, float] = {}  # the same, for the coordinator and every worker
        while proc.poll() is None:
            if live := _live_children(proc.pid):
                first = first or time.perf_counter()
                last = time.perf_counter()
                worker_cpu.update(live)
            for pid in (proc.pid, *live):
                if (wait := _run_queue_wait(pid)) is not None:
                    waits[pid] = wait
            time.sleep(POLL)
        end = time.perf_counter()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{scenario} --workers {workers} exited {proc.returncode}:\n"
                         f"{(run_dir / 'output.txt').read_text()}")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return Measurement(scenario, workers, n, end - start, cpu, sum(waits.values()),
                       sum(worker_cpu.values()) if worker_cpu else None,
                       None if first is None else first - start, None if last is None else end - last,
                       check(fingerprint(url), expected, n))


# --- the command ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work-us", type=float, default=20.0, help="pure-Python work per record, microseconds")
    parser.add_argument("--url", default=os.environ.get("FERRYMAN_TEST_PG_URL") or DEFAULT_URL,
                        help="any database on the server; the benchmark creates and drops its own")
    parser.add_argument("--only", choices=SCENARIOS, help="run one scenario")
    parser.add_argument("--engine", choices=tuple(TARGET_RATIO), default="process",
                        help="where the 2 workers run: processes, or Ray tasks (needs ferryman[ray])")
    parser.add_argument("--address", help="with --engine ray: a running Ray cluster (default: one started per run)")
    parser.add_argument("--ledger", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the progress ledger: a file, or a schema of the benchmark's database")
    args = parser.parse_args(argv)



    database = f"ferryman_bench_workers_{os.getpid()}"
    url = make_url(args.url).set(database=database).render_as_string(hide_password=False)
    scenarios = [args.only] if args.only else list(SCENARIOS)
    calibration = calibrate(args.work_us)
    print(calibration, flush=True)
    with admin_connect(args.url) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="ferryman-bench-workers-") as tmp:
            results = run_all(args, scenarios, url, Path(tmp), calibration)
    finally:
        with admin_connect(args.url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    report(results, scenarios, args, calibration)
    return 0 if all(m.verdict == "ok" for m in results) else 1


def run_all(args: Any, scenarios: list[str], url: str, work: Path, calibration: Calibration) -> list[Measurement]:
    sqlite_path = work / "source.db"
    t = time.perf_counter()
    build_sqlite(sqlite_path, args.rows)
    build_pg(url, args.rows)
    expected = expected_fingerprint(url, sqlite_path, work)
    print(f"built {args.rows:,} rows in SQLite and PostgreSQL and the expected table "
          f"({time.perf_counter() - t:.1f}s); {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    targets = {}
    for scenario in scenarios:
        targets[scenario] = work / f"target_{scenario.replace('-', '_')}.py"
        write_target(targets[scenario], scenario, url, sqlite_path, calibration.turns)
    results: list[Measurement] = []
    for rep in range(args.reps):
        for scenario in scenarios:
            for workers in WORKERS if rep % 2 == 0 else tuple(reversed(WORKERS)):
                m = measure(scenario, workers, targets[scenario], url, work, args.rows, expected, args)
                results.append(m)
                print(f"  run {rep + 1}: {scenario:<12} --workers {workers}  {m.rate:>9,.0f} rows/s "
                      f"{m.seconds:6.2f}s  CPU {m.cpu_seconds:6.2f}s  waited {m.cpu_wait_seconds:5.2f}s  {_phases(m)}  {m.verdict}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return results


def _phases(m: Measurement) -> str:
    if m.before_workers is None or m.after_workers is None:
        return f"{'(in process)':<52}"
    return (f"workers' CPU {m.workers_cpu_seconds or 0:5.2f}s, before them {m.before_workers:4.2f}s, "
            f"after {m.after_workers:4.2f}s")


def _median(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.2f}" if known else "-"


def report(results: list[Measurement], scenarios: list[str], args: Any, calibration: Calibration) -> None:
    print(f"\n{args.rows:,} rows, {args.reps} runs each (medians); {calibration.transform_us:.1f} us of "
          f"transform per record; `ferryman run TARGET --workers N`, wall time of the whole command;\n"
          f"CPU s: the command's and its workers'; waited s: their main threads' time ready to run but "
          f"waiting for a CPU;\nworkers CPU s: the workers' alone; before s / after s: the "
          f"coordinator's wall time before the first worker started / after the last one ended")
    print(f"{'scenario':<12} {'workers':>7} {'rows/s':>10} {'seconds':>8} {'CPU s':>7} {'waited s':>8} "
          f"{'workers CPU s':>13} {'before s':>8} {'after s':>8}  check")
    for scenario in scenarios:
        rates = {}
        for workers in WORKERS:
            ms = [m for m in results if m.scenario == scenario and m.workers == workers]
            rates[workers] = statistics.median(m.rate for m in ms)
            verdict = "ok" if all(m.verdict == "ok" for m in ms) else "WRONG"
            print(f"{scenario:<12} {workers:>7} {rates[workers]:>10,.0f} "
                  f"{statistics.median(m.seconds for m in ms):>8.2f} {statistics.median(m.cpu_seconds for m in ms):>7.2f} "
                  f"{statistics.median(m.cpu_wait_seconds for m in ms):>8.2f} {_median([m.workers_cpu_seconds for m in ms]):>13} {_median([m.before_workers for m in ms]):>8} "
                  f"{_median([m.after_workers for m in ms]):>8}  {verdict}")
        ratio, goal = rates[2] / rates[1], TARGET_RATIO[args.engine]
        verdict = "met" if ratio >= goal else "missed"
        print(f"{scenario:<12} workers 2 ({args.engine}, {args.ledger} ledger) / workers 1: {ratio:.2f}x  "
              f"(target >= {goal}x: {verdict})")
