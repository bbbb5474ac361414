"""Run order: data dependencies inside manual ``order`` groups, computed at run time.

A migration that writes store S runs before every migration of its group that reads S (as source
or match). Groups run in ascending ``order``; a lower group runs first even when it reads what a
higher group writes (the tool for "back up, then refill"). Ties keep the order of the migrations
list given to the service, so a plan never changes between runs (mjg's came out in hash order).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import Iterable, Sequence

from .declare import MigrationSpec
from .errors import PlanError


@dataclass(frozen=True)
class PlanStep:
    """One migration in the plan and why it sits where it does."""

    spec: MigrationSpec
    after: tuple[str, ...]
    """Names of earlier migrations of the same group whose output this one reads."""

    def explain(self) -> str:
        reads = ", ".join(sorted(self.spec.reads))
        why = f"after {', '.join(self.after)} (reads what they write)" if self.after else "no dependency"
        return f"[order {self.spec.order}] {self.spec.name}: {reads} -> {self.spec.dest}; {why}"


def _check_stores(specs: Sequence[MigrationSpec], store_names: Iterable[str]) -> None:
    known = set(store_names)
    for spec in specs:
        unknown = sorted((spec.reads | {spec.dest}) - known)
        if unknown:
            raise PlanError(
                f"migration {spec.name} uses unknown store(s) {', '.join(map(repr, unknown))}; "
                f"known stores: {', '.join(sorted(known)) or '(none)'}",
                [spec.identity],
            )
        if spec.dest in spec.reads:
            raise PlanError(
                f"migration {spec.name} reads the store it writes ({spec.dest!r}); "
                "write to another store or split it into two migrations in different order groups",
                [spec.identity],
            )


def _check_writers(group: Sequence[MigrationSpec]) -> None:
    writers: dict[str, MigrationSpec] = {}
    for spec in group:
        other = writers.setdefault(spec.dest, spec)
        if other is not spec:
            raise PlanError(
                f"migrations {other.name} and {spec.name} both write store {spec.dest!r} in order "
                f"group {spec.order}; give them different order= values to say which runs first",
                [other.identity, spec.identity],
            )


def _find_cycle(pending: Sequence[MigrationSpec]) -> list[MigrationSpec]:
    """A dependency cycle among ``pending`` (each of which has an unresolved dependency)."""
    by_dest = {s.dest: s for s in pending}
    node = pending[0]
    path: list[MigrationSpec] = []
    while node not in path:
        path.append(node)
        node = next(by_dest[r] for r in sorted(node.reads) if r in by_dest)
    return path[path.index(node):]


def _order_group(group: Sequence[MigrationSpec]) -> list[PlanStep]:
    """Kahn's algorithm; among ready migrations the earliest in the given list goes first."""
    writer = {s.dest: s for s in group}
    deps = {s.identity: [writer[r] for r in sorted(s.reads) if r in writer] for s in group}
    done: set[str] = set()
    steps: list[PlanStep] = []
    pending = list(group)
    while pending:
        ready = next((s for s in pending if all(d.identity in done for d in deps[s.identity])), None)
        if ready is None:
            cycle = _find_cycle(pending)
            names = " -> ".join(s.name for s in [*cycle, cycle[0]])
            raise PlanError(
                f"dependency cycle in order group {group[0].order}: {names} (each reads what the "
                "next writes); break it with different order= values",
                [s.identity for s in cycle],
            )
        pending.remove(ready)
        done.add(ready.identity)
        steps.append(PlanStep(ready, tuple(d.name for d in deps[ready.identity])))
    return steps


def build_plan(specs: Sequence[MigrationSpec], store_names: Iterable[str]) -> list[PlanStep]:
    """The migrations in run order; :class:`PlanError` when they cannot be ordered."""
    seen: dict[str, MigrationSpec] = {}
    for spec in specs:
        if spec.identity in seen:
            raise PlanError(f"migration {spec.identity} is listed twice", [spec.identity])
        clash = next((s for s in seen.values() if s.name == spec.name), None)
        if clash is not None:
            raise PlanError(
                f"migrations {clash.identity} and {spec.identity} share the name {spec.name!r}; "
                "give one of them name=...",
                [clash.identity, spec.identity],
            )
        seen[spec.identity] = spec
    _check_stores(specs, store_names)
    steps: list[PlanStep] = []
    ordered = sorted(specs, key=lambda s: s.order)  # stable: keeps list order inside a group
    for _, grouped in groupby(ordered, key=lambda s: s.order):
        group = list(grouped)
        _check_writers(group)
        steps.extend(_order_group(group))
    return steps


def dependants(steps: Sequence[PlanStep], failed: MigrationSpec) -> list[MigrationSpec]:
    """Migrations after ``failed`` that read, directly or transitively, what it writes."""
    position = {s.spec.identity: i for i, s in enumerate(steps)}
    tainted = {failed.dest}
    found: list[MigrationSpec] = []
    for step in steps[position[failed.identity] + 1:]:
        if step.spec.reads & tainted:
            found.append(step.spec)
            tainted.add(step.spec.dest)
    return found
