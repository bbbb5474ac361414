"""CPU seconds ``ferryman serve`` spends per request on a ledger with many failed records.

``python -m bench.serve_overhead.request_cost [--failed N]`` makes a ledger by a real run in
which every one of N source records fails (a ValueError in ``transform``, so each has a
traceback as its cause), starts ``python -m ferryman serve`` on it, and asks each route many
times. The server process's CPU time (user + system, from ``/proc/PID/stat``) before and after,
divided by the requests, is the cost of one request as the server sees it, HTTP included:

* ``back-to-back``: requests one after the other (what a burst of clients costs);
* ``spaced``: one request every ``--spacing`` seconds, longer than the server keeps an answer,
  so that each one reads the ledger afresh (what one poller costs), less what the idle server
  spends meanwhile (uvicorn wakes up ten times a second), measured before for as long.

``/proc`` counts CPU time in ticks (10 ms here): the back-to-back figures are over ``--burst``
requests, the spaced ones over ``--spaced``, so their resolution is 10 ms divided by that.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ferryman import MemoryStore, MigrationService, Retry, migration

from . import REPO, free_port

ROUTES = ("/migrate/result", "/migrate/progress", "/metrics", "/migrate/history",
          "/migrate/failed?limit=50", "/migrate/failed?offset=50000&limit=50",
          "/migrate/failed?q=record+4242+has&limit=50")
"""The last three search the failed records: they are not kept between requests (each one asks
the ledger), a search reads every cause once."""
TICK = os.sysconf("SC_CLK_TCK")


@migration(source="src", dest="dst", load_retry=Retry(times=0, delay=0),
           save_retry=Retry(times=0, delay=0), name="always_fails", max_failures=math.inf)
class AlwaysFails:
    def transform(self, aggregates: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
        raise ValueError(f"record {record['id']} has no code")


def failed_ledger(path: Path, failed: int) -> Path:
    """A fresh ledger holding ``failed`` failed records of one migration."""
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    source = MemoryStore("src", records=[{"id": i} for i in range(1, failed + 1)])
    service = MigrationService([source, MemoryStore("dst")], [AlwaysFails], ledger=str(path))
    try:
        result = service.run()
    finally:
        assert service.ledger is not None
        service.ledger.close()
    assert result.reports[0].failed == failed, result.summary()
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def ask(port: int, route: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", route)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"{route}: HTTP {response.status}: {body[:200]!r}")
        return len(body)
    finally:
        conn.close()


def per_request(pid: int, port: int, route: str, count: int, spacing: float) -> float:
    idle = 0.0
    if spacing:
        before = cpu_seconds(pid)
        time.sleep(spacing * count)
        idle = cpu_seconds(pid) - before
    before = cpu_seconds(pid)
    for _ in range(count):
        ask(port, route)
        if spacing:
            time.sleep(spacing)
    return (cpu_seconds(pid) - before - idle) / count


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_overhead.request_cost",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--failed", type=int, default=100_000, help="failed records in the ledger")
    parser.add_argument("--burst", type=int, default=200, help="back-to-back requests per route")
    parser.add_argument("--spaced", type=int, default=15, help="spaced requests per route")
    parser.add_argument("--spacing", type=float, default=1.2, help="seconds between spaced requests")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "serve-overhead",
                        help="where the ledger is made")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    ledger = failed_ledger(args.work / "failed.db", args.failed)
    print(f"ledger with {args.failed} failed records made in {time.monotonic() - started:.1f} s")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen(
        [sys.executable, "-m", "ferryman", "serve", "--progress", str(ledger), "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if "serving" not in line:
            raise SystemExit(f"ferryman serve did not start: {line}{server.communicate()[1]}")
        print(f"{'route':<44} {'bytes':>7} {'back-to-back ms cpu':>20} {'spaced ms cpu':>14}")
        for route in ROUTES:
            size = ask(port, route)
            burst = per_request(server.pid, port, route, args.burst, 0.0)
            spaced = per_request(server.pid, port, route, args.spaced, args.spacing)
            print(f"{route:<44} {size:>7} {burst * 1000:>20.2f} {spaced * 1000:>14.2f}", flush=True)
    finally:
        server.terminate()
        server.communicate(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
