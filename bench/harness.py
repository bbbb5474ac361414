"""Measure cases: each in a fresh child process, timed inside, checked outside, repeated, alternated.

Why a child per measurement: peak memory (the RSS high-water mark) is only meaningful for a
process that did nothing else, and a fresh interpreter means no warm caches or leftovers from the
previous contestant. The child reads its own high-water mark (``VmHWM`` in ``/proc/self/status``)
as it ends. ``getrusage(RUSAGE_CHILDREN)`` / ``os.wait4`` would be wrong here: on Linux a child's
``ru_maxrss`` starts at the parent's RSS at fork time (exec keeps the old high-water mark), so
every contestant would weigh at least as much as this harness.

Why alternate: this machine is shared, so the load changes while a suite runs. Every repetition
measures every case once, each repetition starting one case later, and the summaries are medians;
a burst of noise then hits all contestants alike instead of one of them.

The child times only the run function (not the interpreter start or imports: those are not
throughput) and records its CPU time too, which noise from other processes disturbs less. The
check runs in this process afterwards, against the files the child left.
"""

from __future__ import annotations

import cProfile
import gc
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .workloads import Check, Job, workload

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DEFAULT_TIMEOUT = 3600.0
"""Seconds before a measurement is killed and counted as failed."""


@dataclass(frozen=True, order=True)
class Case:
    """One thing to measure: a workload's variant at a size."""

    workload: str
    variant: str
    size: int

    def __str__(self) -> str:
        return f"{self.workload}/{self.variant}@{self.size:,}"

    @property
    def label(self) -> str:
        return workload(self.workload).variant(self.variant).label


@dataclass(frozen=True)
class Dirs:
    """Where data sets are cached (kept between runs) and where measurements scratch (emptied)."""

    cache: Path
    scratch: Path


@dataclass
class Measurement:
    """One run of one case."""

    case: Case
    rep: int
    seconds: float
    cpu_seconds: float
    peak_mb: float
    check: Check
    error: str | None = None
    output: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.check.ok


@dataclass
class Summary:
    """A case over its repetitions: median times, the highest peak memory, all checks passed."""

    case: Case
    reps: int
    median_s: float
    min_s: float
    max_s: float
    median_cpu_s: float
    peak_mb: float
    ok: bool
    problems: list[str]

    @property
    def rows_per_s(self) -> float:
        return self.case.size / self.median_s if self.median_s > 0 else 0.0

    @property
    def us_per_row(self) -> float:
        return 1e6 * self.median_s / self.case.size


# --- the parent side --------------------------------------------------------------------------


def measure(case: Case, rep: int, dirs: Dirs, timeout: float = DEFAULT_TIMEOUT,
            profile_to: Path | None = None) -> Measurement:
    """Prepare, run in a child, check, clean up: one measurement of ``case``."""
    wl = workload(case.workload)
    variant = wl.variant(case.variant)
    source = wl.source(case.size, dirs.cache)
    work = dirs.scratch / f"{case.workload}-{case.variant}-{case.size}-{rep}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    job = Job(case.workload, case.variant, case.size, str(source), str(work / "dest.db"), str(work))
    wl.prepare(job)
    try:
        result, peak_mb, error = _run_child(variant.target, job, timeout, profile_to)
        check = Check(False, 0, "", "the run failed")
        if error is None:
            try:
                check = wl.verify(job, result.get("output", {}))
            except Exception as exc:  # noqa: BLE001 - a check that cannot run is a failed check, not a crash
                check = Check(False, 0, "", f"the check raised {exc!r}")
        return Measurement(
            case, rep, result.get("seconds", float("nan")), result.get("cpu_seconds", float("nan")),
            peak_mb, check, error, result.get("output", {}),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_child(target: str, job: Job, timeout: float, profile_to: Path | None) -> tuple[dict[str, Any], float, str | None]:
    work = Path(job.work)
    result_path = work / "result.json"
    spec = {"target": target, "job": asdict(job), "result": str(result_path),
            "profile": str(profile_to) if profile_to else None}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"  # dlt would otherwise try to phone home
    env["DLT_DATA_DIR"] = str(work / "dlt-data")
    log_path = work / "child.log"
    with open(log_path, "wb") as log:
        # cwd is the scratch directory, so no tool picks up configuration lying around the repo.
        proc = subprocess.Popen([sys.executable, "-m", "bench.harness", json.dumps(spec)],
                                cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout)
            reason = f"exit code {proc.returncode}"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            reason = f"timed out after {timeout:.0f} s"
    if proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        return {}, float("nan"), f"{reason}: " + "\n".join(tail)
    result = json.loads(result_path.read_text())
    return result, result["peak_mb"], None


def peak_rss_mb() -> float:
    """This process's RSS high-water mark since it was exec'd."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # no /proc (macOS): ru_maxrss, in bytes there, may include the parent's

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)


def run_plan(cases: Sequence[Case], reps: int, dirs: Dirs, *, timeout: float = DEFAULT_TIMEOUT,
             say: Callable[[str], None] = print) -> list[Measurement]:
    """Every case ``reps`` times, alternating, each repetition starting one case later."""
    for case in sorted({(c.workload, c.size): c for c in cases}.values()):
        wl = workload(case.workload)
        started = time.perf_counter()
        path = wl.source(case.size, dirs.cache)
        if time.perf_counter() - started > 1:
            say(f"built {path.name} in {time.perf_counter() - started:.0f} s (cached for later runs)")
    measurements: list[Measurement] = []
    for rep in range(reps):
        shift = rep % len(cases) if cases else 0
        for case in [*cases[shift:], *cases[:shift]]:
            m = measure(case, rep, dirs, timeout)
            measurements.append(m)
            say(_progress_line(m, reps))
    return measurements


def _progress_line(m: Measurement, reps: int) -> str:
    head = f"[{m.rep + 1}/{reps}] {m.case!s:<40}"
    if m.error:
        return f"{head} FAILED {m.error.splitlines()[0]}"
    verdict = "ok" if m.check.ok else f"WRONG: {m.check.detail}"
    rate = m.case.size / m.seconds if m.seconds > 0 else 0.0
    return f"{head} {m.seconds:8.2f} s {rate:>12,.0f} rows/s {m.peak_mb:7.1f} MB  {verdict}"


def summarise(measurements: Sequence[Measurement]) -> dict[Case, Summary]:
    by_case: dict[Case, list[Measurement]] = {}
    for m in measurements:
        by_case.setdefault(m.case, []).append(m)
    summaries = {}
    for case, ms in by_case.items():
        good = [m for m in ms if m.error is None] or ms
        seconds = [m.seconds for m in good]
        problems = [m.error or m.check.detail for m in ms if not m.ok]
        summaries[case] = Summary(
            case, len(ms), statistics.median(seconds), min(seconds), max(seconds),
            statistics.median(m.cpu_seconds for m in good), max(m.peak_mb for m in good),
            all(m.ok for m in ms), problems,
        )
    return summaries


# --- the child side ---------------------------------------------------------------------------


def _child(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    module_name, function_name = spec["target"].split(":")
    run = getattr(importlib.import_module(module_name), function_name)
    job = Job(**spec["job"])
    profiler = cProfile.Profile() if spec["profile"] else None
    gc.collect()
    cpu_started, started = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    output = run(job)
    if profiler is not None:
        profiler.disable()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if profiler is not None:
        profiler.dump_stats(spec["profile"])
    Path(spec["result"]).write_text(json.dumps(
        {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mb": peak_rss_mb(), "output": output},
        default=str))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
