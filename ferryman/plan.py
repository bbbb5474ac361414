"""Run order: data dependencies inside manual ``order`` groups, computed at run time.

A migration that writes a dataset runs before every migration of its group that reads it (as
source or match). A *dataset* is what a store points at, not the store's name: two stores on
the same database table are one dataset (:attr:`Store.dataset`), so a migration that reads
another's output through a second store still runs after it. ``depends_on=[...]`` adds edges
the data cannot show. Groups run in ascending ``order``; a lower group runs first even when it
reads what a higher group writes (the tool for "back up, then refill"). Ties keep the order of
the migrations list given to the service, so a plan never changes between runs (mjg's came out
in hash order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from .declare import MigrationSpec
from .errors import PlanError
from .stores.base import Store


@dataclass(frozen=True)
class PlanStep:
    """One migration in the plan, the datasets it touches, and why it sits where it does."""

    spec: MigrationSpec
    after: tuple[str, ...]
    """Names of earlier migrations of the same group it must follow."""
    reasons: Mapping[str, str] = field(default_factory=dict)
    """Why it follows each of ``after``, by name."""
    reads: frozenset[str] = frozenset()
    """The datasets it reads (source and matches)."""
    writes: str = ""
    """The dataset it writes."""
    depends_on: frozenset[str] = frozenset()
    """Identities of the migrations named in its ``depends_on``, in any group."""

    def explain(self) -> str:
        reads = ", ".join(sorted(self.spec.reads))
        why = "; ".join(f"after {name} ({self.reasons[name]})" for name in self.after) or "no dependency"
        return f"[order {self.spec.order}] {self.spec.name}: {reads} -> {self.spec.dest}; {why}"


def _datasets(stores: Mapping[str, Store] | Iterable[str]) -> dict[str, str]:
    """Each store name's dataset (plain names stand for themselves)."""
    if isinstance(stores, Mapping):
        return {name: store.dataset for name, store in stores.items()}
    return {name: name for name in stores}


def _check_stores(specs: Sequence[MigrationSpec], dataset_of: Mapping[str, str]) -> None:
    for spec in specs:
        unknown = sorted((spec.reads | {spec.dest}) - dataset_of.keys())
        if unknown:
            raise PlanError(
                f"migration {spec.name} uses unknown store(s) {', '.join(map(repr, unknown))}; "
                f"known stores: {', '.join(sorted(dataset_of)) or '(none)'}",
                [spec.identity],
            )
        same = sorted(r for r in spec.reads if dataset_of[r] == dataset_of[spec.dest])
        if same:
            through = "" if same == [spec.dest] else f" (store {same[0]!r} is {dataset_of[spec.dest]})"
            raise PlanError(
                f"migration {spec.name} reads the store it writes ({spec.dest!r}){through}; "
                "write to another store or split it into two migrations in different order groups",
                [spec.identity],
            )


def _check_writers(group: Sequence[MigrationSpec], dataset_of: Mapping[str, str]) -> None:
    writers: dict[str, MigrationSpec] = {}
    for spec in group:
        other = writers.setdefault(dataset_of[spec.dest], spec)
        if other is not spec:
            what = repr(spec.dest) if other.dest == spec.dest else \
                f"{dataset_of[spec.dest]} ({other.dest!r}, {spec.dest!r})"
            raise PlanError(
                f"migrations {other.name} and {spec.name} both write store {what} in order "
                f"group {spec.order}; give them different order= values to say which runs first",
                [other.identity, spec.identity],
            )


def _resolve_depends_on(specs: Sequence[MigrationSpec]) -> dict[str, list[MigrationSpec]]:
    """Each migration's ``depends_on`` as specs; PlanError for unknown or impossible ones."""
    known = {key: s for s in specs for key in (s.identity, s.name)}
    resolved: dict[str, list[MigrationSpec]] = {}
    for spec in specs:
        found = []
        for ref in spec.depends_on:
            other = known.get(ref)
            if other is None:
                raise PlanError(
                    f"migration {spec.name} depends on {ref!r}, which is not a migration of this "
                    f"plan; known: {', '.join(s.name for s in specs)}", [spec.identity])
            if other.order > spec.order:
                raise PlanError(
                    f"migration {spec.name} (order {spec.order}) depends on {other.name}, which runs "
                    f"later (order {other.order}); give {spec.name} an order >= {other.order}",
                    [spec.identity, other.identity])
            found.append(other)
        resolved[spec.identity] = found
    return resolved


def _find_cycle(pending: Sequence[MigrationSpec], deps: Mapping[str, Sequence[MigrationSpec]]) -> list[MigrationSpec]:
    """A dependency cycle among ``pending`` (each of which has an unresolved dependency)."""
    waiting = {s.identity for s in pending}
    node = pending[0]
    path: list[MigrationSpec] = []
    while node not in path:
        path.append(node)
        node = next(d for d in deps[node.identity] if d.identity in waiting)
    return path[path.index(node):]


def _order_group(group: Sequence[MigrationSpec], dataset_of: Mapping[str, str],
                 explicit: Mapping[str, Sequence[MigrationSpec]]) -> list[PlanStep]:
    """Kahn's algorithm; among ready migrations the earliest in the given list goes first."""
    writer = {dataset_of[s.dest]: s for s in group}
    deps: dict[str, list[MigrationSpec]] = {}
    reasons: dict[str, dict[str, str]] = {}
    for s in group:
        why: dict[str, str] = {}
        for store in sorted(s.reads):
            w = writer.get(dataset_of[store])
            if w is not None and w.name not in why:
                why[w.name] = (f"reads {store!r}, which it writes" if w.dest == store
                               else f"reads {store!r}, the same data as {w.dest!r}, which it writes")
        for other in explicit[s.identity]:
            if other.order == s.order and other.name not in why:
                why[other.name] = "depends_on"
        deps[s.identity] = [next(g for g in group if g.name == name) for name in why]
        reasons[s.identity] = why
    done: set[str] = set()
    steps: list[PlanStep] = []
    pending = list(group)
    while pending:
        ready = next((s for s in pending if all(d.identity in done for d in deps[s.identity])), None)
        if ready is None:
            cycle = _find_cycle(pending, deps)
            names = " -> ".join(s.name for s in [*cycle, cycle[0]])
            raise PlanError(
                f"dependency cycle in order group {group[0].order}: {names} (each reads what the "
                "next writes, or depends on it); break it with different order= values",
                [s.identity for s in cycle],
            )
        pending.remove(ready)
        done.add(ready.identity)
        steps.append(PlanStep(
            ready, tuple(d.name for d in deps[ready.identity]), reasons[ready.identity],
            frozenset(dataset_of[r] for r in ready.reads), dataset_of[ready.dest],
            frozenset(d.identity for d in explicit[ready.identity]),
        ))
    return steps


def build_plan(specs: Sequence[MigrationSpec], stores: Mapping[str, Store] | Iterable[str]) -> list[PlanStep]:
    """The migrations in run order; :class:`PlanError` when they cannot be ordered.

    ``stores`` are the stores by name (a plain list of names stands for stores that are each
    a dataset of their own).
    """
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
    dataset_of = _datasets(stores)
    _check_stores(specs, dataset_of)
    explicit = _resolve_depends_on(specs)
    steps: list[PlanStep] = []
    ordered = sorted(specs, key=lambda s: s.order)  # stable: keeps list order inside a group
    for _, grouped in groupby(ordered, key=lambda s: s.order):
        group = list(grouped)
        _check_writers(group, dataset_of)
        steps.extend(_order_group(group, dataset_of, explicit))
    return steps


def dependants(steps: Sequence[PlanStep], failed: MigrationSpec) -> list[MigrationSpec]:
    """Migrations after ``failed`` that read, directly or transitively, what it writes, or
    depend on it (``depends_on``)."""
    position = {s.spec.identity: i for i, s in enumerate(steps)}
    start = position[failed.identity]
    tainted = {steps[start].writes}
    upstream = {failed.identity}
    found: list[MigrationSpec] = []
    for step in steps[start + 1:]:
        if step.reads & tainted or step.depends_on & upstream:
            found.append(step.spec)
            tainted.add(step.writes)
            upstream.add(step.spec.identity)
    return found
