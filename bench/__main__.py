"""``python -m bench``: run the suites, print the table, write ``bench/results/latest.json``.

Examples::

    python -m bench                      # W1-W4 at 1M rows + scaling 10k/100k/1M, 3 reps
    python -m bench --quick              # the same at 100k rows (scaling 10k/100k)
    python -m bench --scaling --with-10m # only the scaling suite, up to 10M rows
    python -m bench --profile W1/ferryman-durable --size 100000

Exit status 1 when any output failed its check (a wrong result is never reported as a speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from .harness import (
    REPO,
    RESULTS,
    Case,
    Dirs,
    Measurement,
    Summary,
    measure,
    run_plan,
    summarise,
)
from .workloads import WORKLOADS
from .workloads.suites import (
    DEFAULT_SCALING,
    DEFAULT_SIZE,
    HUGE,
    QUICK_SCALING,
    QUICK_SIZE,
    SUITES,
    Suite,
    Target,
    build_suites,
    evaluate,
    plan,
)

VERSIONED = ("ferryman", "sqlalchemy", "pandas", "petl", "dlt", "pyarrow", "psutil")


def _sizes(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=lambda s: int(float(s)), help=f"rows per workload (default {DEFAULT_SIZE:,})")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_SIZE:,} rows, scaling {'/'.join(f'{n:,}' for n in QUICK_SCALING)}")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every case (default 3)")
    parser.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated, of {', '.join(SUITES)}")
    parser.add_argument("--scaling", action="store_true", help="run only the scaling suite")
    parser.add_argument("--scaling-sizes", type=_sizes, help="comma-separated sizes for the scaling suite")
    parser.add_argument("--with-10m", action="store_true", help=f"add {HUGE:,} rows to the scaling suite (slow)")
    parser.add_argument("--no-libs", action="store_true", help="skip the library baselines (petl, pandas, dlt)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="where the JSON goes")
    parser.add_argument("--cache", type=Path, default=RESULTS / "data", help="where generated data is kept")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per measurement")
    parser.add_argument("--profile", metavar="WORKLOAD/VARIANT",
                        help="run that case once under cProfile and print where the time goes")
    args = parser.parse_args(argv)
    args.size = args.size or (QUICK_SIZE if args.quick else DEFAULT_SIZE)
    if args.scaling_sizes is None:
        args.scaling_sizes = list(QUICK_SCALING if args.quick else DEFAULT_SCALING)
    if args.with_10m and HUGE not in args.scaling_sizes:
        args.scaling_sizes.append(HUGE)
    args.suites = ["scaling"] if args.scaling else [s for s in args.suites.split(",") if s]
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(sorted(unknown))}; choose from {', '.join(SUITES)}")
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


# --- report -----------------------------------------------------------------------------------


def _row(summary: Summary, base: Summary | None) -> dict[str, Any]:
    ratio = summary.rows_per_s / base.rows_per_s if base and base.ok and summary.ok else None
    return {
        "case": str(summary.case), "workload": summary.case.workload, "variant": summary.case.variant,
        "label": summary.case.label, "size": summary.case.size, "reps": summary.reps,
        "median_s": summary.median_s, "min_s": summary.min_s, "max_s": summary.max_s,
        "median_cpu_s": summary.median_cpu_s, "rows_per_s": summary.rows_per_s,
        "us_per_row": summary.us_per_row, "vs_baseline": ratio, "peak_mb": summary.peak_mb,
        "ok": summary.ok, "problems": summary.problems,
    }


def suite_rows(suite: Suite, summaries: dict[Case, Summary]) -> list[dict[str, Any]]:
    base = summaries.get(suite.baseline)
    return [_row(summaries[c], base) for c in suite.cases if c in summaries]


def render(suites: Sequence[Suite], summaries: dict[Case, Summary], targets: Sequence[Target]) -> str:
    lines: list[str] = []
    header = (f"  {'case':<44}{'rows':>12}{'median s':>10}{'cpu s':>8}{'rows/s':>11}{'us/row':>8}"
              f"{'vs base':>9}{'peak MB':>9}  check")
    for suite in suites:
        rows = suite_rows(suite, summaries)
        if not rows:
            continue
        lines += ["", f"{suite.title}   (baseline: {suite.baseline.label} @{suite.baseline.size:,})", header]
        for r in rows:
            ratio = "-" if r["vs_baseline"] is None else f"{r['vs_baseline']:.2f}x"
            check = "ok" if r["ok"] else "WRONG"
            lines.append(
                f"  {r['label']:<44}{r['size']:>12,}{r['median_s']:>10.2f}{r['median_cpu_s']:>8.2f}{r['rows_per_s']:>11,.0f}"
                f"{r['us_per_row']:>8.1f}{ratio:>9}{r['peak_mb']:>9.1f}  {check}"
            )
        if suite.note:
            lines.append(f"  note: {suite.note}")
    if targets:
        width = max(len(t.name) for t in targets) + 2
        lines += ["", "Targets", f"  {'target':<{width}}{'goal':<18}{'achieved':>12}  verdict"]
        for t in targets:
            verdict = {True: "met", False: "MISSED", None: "-"}[t.met]
            lines.append(f"  {t.name:<{width}}{t.goal:<18}{t.shown:>12}  {verdict}")
    return "\n".join(lines)


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _machine() -> dict[str, Any]:
    """What the numbers were measured on, and which ferryman (a dirty tree is not a commit)."""
    found: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                             "cpus": os.cpu_count()}
    try:
        import psutil

        found["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        git = ["git", "-C", str(REPO)]
        found["git_commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                                             check=True).stdout.strip()
        found["ferryman_files_changed_since_commit"] = len(subprocess.run(
            [*git, "status", "--porcelain", "--", "ferryman"], capture_output=True, text=True, check=True,
        ).stdout.splitlines())
    except (OSError, subprocess.CalledProcessError):
        pass
    return found


def write_json(path: Path, args: argparse.Namespace, suites: Sequence[Suite], summaries: dict[Case, Summary],
               targets: Sequence[Target], measurements: Sequence[Measurement], meta: dict[str, Any]) -> None:
    document = {
        "meta": {
            **meta,
            "size": args.size, "reps": args.reps, "scaling_sizes": args.scaling_sizes,
            "versions": _versions(),
        },
        "suites": [
            {"key": s.key, "title": s.title, "baseline": str(s.baseline), "note": s.note,
             "rows": suite_rows(s, summaries)}
            for s in suites
        ],
        "targets": [asdict(t) for t in targets],
        "measurements": [
            {"case": str(m.case), "rep": m.rep, "seconds": m.seconds, "cpu_seconds": m.cpu_seconds,
             "peak_mb": m.peak_mb, "ok": m.ok, "rows": m.check.rows, "checksum": m.check.checksum,
             "detail": m.check.detail, "error": m.error}
            for m in measurements
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2))
    os.replace(tmp, path)


# --- modes ------------------------------------------------------------------------------------


def profile(args: argparse.Namespace, dirs: Dirs) -> int:
    """One run of one case under cProfile; the stats go next to the results."""
    workload_key, _, variant = args.profile.partition("/")
    if workload_key not in WORKLOADS:
        print(f"unknown workload {workload_key!r}; there are {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    case = Case(workload_key, variant, args.size)
    case.label  # noqa: B018 - raises KeyError naming the variants when the variant is unknown
    stats_path = RESULTS / f"profile-{workload_key}-{variant}-{args.size}.prof"
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    m = measure(case, 0, dirs, args.timeout, profile_to=stats_path)
    print(f"{case}: {m.seconds:.2f} s under cProfile, {m.peak_mb:.0f} MB, check {'ok' if m.ok else 'WRONG'}")
    if m.error:
        print(m.error)
        return 1
    for order in ("cumulative", "tottime"):
        pstats.Stats(str(stats_path)).sort_stats(order).print_stats(30)
    print(f"stats saved to {stats_path} (open with: python -m pstats {stats_path})")
    return 0 if m.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    dirs = Dirs(cache=args.cache, scratch=RESULTS / "scratch")
    if args.profile:
        return profile(args, dirs)
    suites = build_suites(args.size, args.scaling_sizes, args.suites, with_libraries=not args.no_libs)
    cases = plan(suites)
    started_at = datetime.now(UTC)
    machine = _machine()  # before the run: the tree may change while it runs
    load_before = os.getloadavg()
    print(f"{len(cases)} cases x {args.reps} reps, {args.size:,} rows; each in its own process", flush=True)
    started = time.perf_counter()
    measurements = run_plan(cases, args.reps, dirs, timeout=args.timeout,
                            say=lambda line: print(line, flush=True))
    summaries = summarise(measurements)
    scaling = args.scaling_sizes if "scaling" in args.suites else [args.size]
    targets = evaluate(summaries, args.size, scaling)
    print(render(suites, summaries, targets))
    meta = {
        **machine,
        "date": started_at.isoformat(timespec="seconds"), "command": "python -m bench " + " ".join(argv or sys.argv[1:]),
        "wall_s": time.perf_counter() - started, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
    }
    write_json(args.out, args, suites, summaries, targets, measurements, meta)
    print(f"\nwrote {args.out} ({meta['wall_s']:.0f} s; load average {load_before[0]:.1f} -> {meta['loadavg_after'][0]:.1f})")
    return 0 if all(m.ok for m in measurements) else 1


if __name__ == "__main__":
    sys.exit(main())
