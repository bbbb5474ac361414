"""What polling the status server costs a run (see README.md beside this file).

``python -m bench.serve_overhead`` copies N ``stations`` rows from one SQLite file to another
with ``ferryman run --serve``, in a fresh process each time, in two modes:

* ``quiet``: the server is up, nobody asks it anything;
* ``polled``: a poller asks ``/migrate/result`` and ``/migrate/progress`` every ``--interval``
  seconds, on a new connection each time, from the moment the port answers until the process ends.

``--failed N`` starts each run on a ledger where an earlier run of another migration left N
failed records (the status shows them, so the server reads them).

The modes alternate (quiet polled, then polled quiet, ...), and the ratio is also taken within
each repetition, whose two runs are next to each other in time, so that a slow drift of the load
from other processes cancels out. The run's time is the ledger's own
(``run.ended_at - run.started_at``: interpreter start-up and imports are not the run); the
process's CPU seconds (all threads, from ``wait4``) are reported too, and those of its threads
other than the run's (the server's share, read from ``/proc``: Linux only). The table shows
medians and the spread (min-max) of each mode, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import data

REPO = Path(__file__).resolve().parents[2]
MODES = ("quiet", "polled")
SAMPLE = 0.05
"""Seconds between two reads of the threads' CPU times."""
TICK = os.sysconf("SC_CLK_TCK")
PATHS = ("/migrate/result", "/migrate/progress")


@dataclass
class Measurement:
    mode: str
    run_s: float
    """The run itself, as the ledger recorded it."""
    cpu_s: float
    """The whole process: user + system, every thread."""
    threads_cpu_s: float
    """The process's threads other than the run's (server, its workers, the lease heartbeat),
    sampled from ``/proc`` every SAMPLE seconds: the last few hundredths of a second are missed."""
    polls: int
    """Requests the server answered (polled mode)."""
    exit_code: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Poller(threading.Thread):
    """Asks the server every ``interval`` seconds until stopped; counts the answers."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(name="poller", daemon=True)
        self.port = port
        self.interval = interval
        self.answered = 0
        self.done = threading.Event()

    def _get(self, path: str) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except OSError:
            return False  # not up yet, or gone
        finally:
            conn.close()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.done.is_set():
            for path in PATHS:
                self.answered += self._get(path)
            next_at += self.interval
            self.done.wait(max(0.0, next_at - time.monotonic()))


class ThreadSampler(threading.Thread):
    """Reads the CPU time of each thread of process ``pid`` until it ends."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="sampler", daemon=True)
        self.pid = pid
        self.cpu: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        tasks = Path(f"/proc/{self.pid}/task")
        while not self.done.is_set():
            try:
                for task in tasks.iterdir():
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    self.cpu[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICK
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass  # a thread or the process ended between two reads
            self.done.wait(SAMPLE)

    def others(self) -> float:
        return sum(cpu for tid, cpu in self.cpu.items() if tid != self.pid)


def run_seconds(ledger: Path) -> float:
    conn = sqlite3.connect(ledger)
    try:
        started, ended = conn.execute(
            "SELECT started_at, ended_at FROM run ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    return float(ended - started)


def copied_rows(dest: Path) -> int:
    conn = sqlite3.connect(dest)
    try:
        return int(conn.execute("SELECT count(*) FROM stations").fetchone()[0])
    finally:
        conn.close()


def measure(mode: str, rows: int, source: Path, work: Path, interval: float, extra: Sequence[str],
            template: Path | None) -> Measurement:
    dest, ledger = work / "dest.db", work / "run.db"
    data.create_table(dest, data.STATIONS_DDL)
    for leftover in (ledger, Path(f"{ledger}-wal"), Path(f"{ledger}-shm")):
        leftover.unlink(missing_ok=True)
    if template is not None:
        shutil.copyfile(template, ledger)
    port = free_port()
    env = {**os.environ, "FERRYMAN_BENCH_SOURCE": str(source), "FERRYMAN_BENCH_DEST": str(dest),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "ferryman", "run", "bench.serve_overhead.target",
               "--progress", str(ledger), "--serve", f"127.0.0.1:{port}", "--linger", "0", "--no-bar",
               *extra]
    poller = Poller(port, interval) if mode == "polled" else None
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    sampler = ThreadSampler(proc.pid)
    sampler.start()
    if poller is not None:
        poller.start()
    _, status, usage = os.wait4(proc.pid, 0)
    sampler.done.set()
    sampler.join()
    if poller is not None:
        poller.done.set()
        poller.join()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"ferryman run exited {proc.returncode}: {stderr.strip()}")
    copied = copied_rows(dest)
    if copied != rows:
        raise SystemExit(f"the run copied {copied} rows of {rows}")
    return Measurement(mode, run_seconds(ledger), usage.ru_utime + usage.ru_stime, sampler.others(),
                       poller.answered if poller else 0, proc.returncode)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="stations to copy")
    parser.add_argument("--reps", type=int, default=3, help="runs of each mode")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between two polls")
    parser.add_argument("--failed", type=int, default=0,
                        help="failed records an earlier run of another migration left in the ledger")
    parser.add_argument("--cache", type=Path, default=REPO / "bench" / "results" / "data",
                        help="where the source file is built once")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "serve-overhead",
                        help="where each run's destination and ledger go")
    parser.add_argument("--ferryman-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for `ferryman run` (repeatable)")
    return parser.parse_args(argv)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})"


def report(measurements: list[Measurement]) -> str:
    lines = [f"{'mode':<8} {'runs':>4} {'run s, median (min-max)':>26} {'cpu s, median (min-max)':>26}"
             f" {'other threads cpu s':>26} {'polls':>6}"]
    medians: dict[str, tuple[float, float]] = {}
    for mode in MODES:
        mine = [m for m in measurements if m.mode == mode]
        runs, cpus = [m.run_s for m in mine], [m.cpu_s for m in mine]
        medians[mode] = (statistics.median(runs), statistics.median(cpus))
        polls = statistics.median([m.polls for m in mine])
        others = _spread([m.threads_cpu_s for m in mine])
        lines.append(f"{mode:<8} {len(mine):>4} {_spread(runs):>26} {_spread(cpus):>26} {others:>26}"
                     f" {polls:>6.0f}")
    (quiet_run, quiet_cpu), (polled_run, polled_cpu) = medians["quiet"], medians["polled"]
    lines.append(f"polled / quiet: run time {polled_run / quiet_run:.3f}x, "
                 f"cpu {polled_cpu / quiet_cpu:.3f}x (medians)")
    quiet = [m for m in measurements if m.mode == "quiet"]
    polled = [m for m in measurements if m.mode == "polled"]
    paired = [p.run_s / q.run_s for q, p in zip(quiet, polled)]  # the two runs of one repetition
    lines.append(f"polled / quiet within each repetition: run time {_spread(paired).strip()}x "
                 "(median, min-max)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    source = data.stations_db(args.rows, args.cache)
    args.work.mkdir(parents=True, exist_ok=True)
    template = None
    if args.failed:
        from .request_cost import failed_ledger

        template = failed_ledger(args.work / f"failed-{args.failed}.db", args.failed)
    measurements: list[Measurement] = []
    for rep in range(args.reps):
        for mode in (MODES if rep % 2 == 0 else MODES[::-1]):
            m = measure(mode, args.rows, source, args.work, args.interval, args.ferryman_arg, template)
            measurements.append(m)
            print(f"rep {rep + 1} {mode:<7} run {m.run_s:6.2f} s  cpu {m.cpu_s:6.2f} s  "
                  f"other threads {m.threads_cpu_s:5.2f} s  polls answered {m.polls}", flush=True)
    print(report(measurements))
    return 0
