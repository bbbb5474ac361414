"""What a run measures (suites of cases, each against a baseline) and what ferryman must reach.

A suite is a view over cases: W3's baseline is W1's ferryman case and the scaling suite's
largest size is often W1's own, so a case shared by several suites is measured once per
repetition and read by all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..harness import Case, Summary
from . import workload

DEFAULT_SIZE = 1_000_000
QUICK_SIZE = 100_000
DEFAULT_SCALING = (10_000, 100_000, 1_000_000)
QUICK_SCALING = (10_000, 100_000)
HUGE = 10_000_000
SUITES = ("W1", "W2", "W3", "W4", "scaling")

MEMORY_LIMIT_MB = 150.0
FLAT = 1.25
"""Scaling counts as flat when the largest size costs at most this much more per row (and memory)."""


@dataclass(frozen=True)
class Suite:
    key: str
    title: str
    cases: tuple[Case, ...]
    baseline: Case
    note: str = ""


def build_suites(size: int, scaling_sizes: Sequence[int], selected: Sequence[str] = SUITES,
                 with_libraries: bool = True) -> list[Suite]:
    """The suites asked for; library baselines only when wanted and installed."""

    def cases(key: str, at: int) -> tuple[Case, ...]:
        return tuple(
            Case(key, v.name, at) for v in workload(key).variants
            if v.available() and (with_libraries or v.kind != "library")
        )

    w1_ferryman = Case("W1", "ferryman-durable", size)
    suites = {
        "W1": Suite("W1", f"W1 {workload('W1').title}", cases("W1", size), Case("W1", "dict-loop", size),
                    "library baselines use their own idiom for the transform: petl per row, "
                    "pandas and dlt vectorised"),
        "W2": Suite("W2", f"W2 {workload('W2').title}", cases("W2", size), Case("W2", "per-area-loop", size),
                    f"{size // 100:,} areas, {size:,} temps; rows/s counts temps"),
        "W3": Suite("W3", f"W3 {workload('W3').title}", (*cases("W3", size), w1_ferryman), w1_ferryman,
                    "baseline is W1 ferryman at the same size: 'vs base' below 1 is the cost of failures"),
        "W4": Suite("W4", f"W4 {workload('W4').title}", cases("W4", size), Case("W4", "per-lookup-loop", size),
                    f"{size:,} order lines, {size // 100:,} products; rows/s counts lines"),
        "scaling": Suite(
            "scaling", "scaling: W1 ferryman (durable ledger) by size",
            tuple(Case("W1", "ferryman-durable", n) for n in sorted(scaling_sizes)),
            Case("W1", "ferryman-durable", min(scaling_sizes)),
            "time per row and peak memory should stay flat",
        ),
    }
    return [suites[key] for key in SUITES if key in selected]


def plan(suites: Sequence[Suite]) -> list[Case]:
    """Every distinct case of the suites, in suite order."""
    return list(dict.fromkeys(c for s in suites for c in s.cases))


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    value: float | None
    """The achieved number, or None when a case it needs was not measured (or failed its check)."""
    met: bool | None
    shown: str


Summaries = Mapping[Case, Summary]


def _speed(summaries: Summaries, case: Case, base: Case) -> float | None:
    """Rows/s of ``case`` over rows/s of ``base``; None unless both were measured and correct."""
    a, b = summaries.get(case), summaries.get(base)
    if a is None or b is None or not (a.ok and b.ok):
        return None
    return a.rows_per_s / b.rows_per_s


def _target(name: str, goal: str, value: float | None, test: Callable[[float], bool], fmt: str) -> Target:
    if value is None:
        return Target(name, goal, None, None, "not measured")
    return Target(name, goal, value, test(value), fmt.format(value))


def evaluate(summaries: Summaries, size: int, scaling_sizes: Sequence[int]) -> list[Target]:
    """The targets of the brief, each met, missed, or not measured in this run."""
    fm = Case("W1", "ferryman-durable", size)

    def w1(variant: str) -> Case:
        return Case("W1", variant, size)

    smallest = Case("W1", "ferryman-durable", min(scaling_sizes))
    largest = Case("W1", "ferryman-durable", max(scaling_sizes))
    ledger_cost = _speed(summaries, w1("ferryman-memory"), fm)  # t(durable) / t(memory)
    w3 = _speed(summaries, fm, Case("W3", "ferryman-durable", size))  # t(W3) / t(W1)
    big = summaries.get(largest)
    small = summaries.get(smallest)
    memory = big.peak_mb if big and big.ok else None
    memory_ratio = big.peak_mb / small.peak_mb if big and small and big.ok and small.ok else None
    per_row = _speed(summaries, smallest, largest)  # = time per row of the largest / of the smallest
    if smallest == largest:  # one size only: flatness was not measured
        per_row = memory_ratio = None
    at = f"{max(scaling_sizes):,} rows" + ("" if max(scaling_sizes) >= HUGE else " (10M not run)")
    return [
        _target("W1 vs hand-written dict loop", ">= 1.0x rows/s", _speed(summaries, fm, w1("dict-loop")),
                lambda v: v >= 1.0, "{:.2f}x"),
        _target("W1 vs INSERT...SELECT", ">= 0.5x rows/s", _speed(summaries, fm, w1("insert-select")),
                lambda v: v >= 0.5, "{:.2f}x"),
        _target("W1 vs pandas", "> 1.0x (faster)", _speed(summaries, fm, w1("pandas")),
                lambda v: v > 1.0, "{:.2f}x"),
        _target("W1 vs dlt", "> 1.0x (faster)", _speed(summaries, fm, w1("dlt")),
                lambda v: v > 1.0, "{:.2f}x"),
        _target("W2 vs per-area loop", ">= 1.0x rows/s",
                _speed(summaries, Case("W2", "ferryman", size), Case("W2", "per-area-loop", size)),
                lambda v: v >= 1.0, "{:.2f}x"),
        _target("W4 vs per-lookup loop", ">= 1.0x rows/s",
                _speed(summaries, Case("W4", "ferryman", size), Case("W4", "per-lookup-loop", size)),
                lambda v: v >= 1.0, "{:.2f}x"),
        _target("W4 vs dict-join loop", ">= 0.8x rows/s",
                _speed(summaries, Case("W4", "ferryman", size), Case("W4", "dict-loop", size)),
                lambda v: v >= 0.8, "{:.2f}x"),
        _target("W4 read-only Matches vs per-lookup loop", ">= 1.0x rows/s",
                _speed(summaries, Case("W4", "ferryman-read-only", size), Case("W4", "per-lookup-loop", size)),
                lambda v: v >= 1.0, "{:.2f}x"),
        _target("W4 read-only Matches vs dict-join loop", ">= 0.8x rows/s",
                _speed(summaries, Case("W4", "ferryman-read-only", size), Case("W4", "dict-loop", size)),
                lambda v: v >= 0.8, "{:.2f}x"),
        _target("W3 time vs W1 time", "<= 1.5x", w3, lambda v: v <= 1.5, "{:.2f}x"),
        _target("ledger cost: durable vs checkpoints off", "< 1.3x time", ledger_cost,
                lambda v: v < 1.3, "{:.2f}x"),
        _target(f"peak memory, W1 at {at}", f"< {MEMORY_LIMIT_MB:.0f} MB", memory,
                lambda v: v < MEMORY_LIMIT_MB, "{:.0f} MB"),
        _target("time per row, largest vs smallest size", f"<= {FLAT}x",
                per_row,
                lambda v: v <= FLAT, "{:.2f}x"),
        _target("peak memory, largest vs smallest size", f"<= {FLAT}x", memory_ratio,
                lambda v: v <= FLAT, "{:.2f}x"),
    ]
