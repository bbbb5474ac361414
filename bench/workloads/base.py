"""What every workload provides, so that one harness can prepare, run and check them all.

A workload owns its data (the cached source and a fresh destination per measurement) and its
check; its variants are the contestants (ferryman and the baselines), each named by a
``module:function`` that the harness runs in a fresh child process. The check runs in the
parent after the child has exited, so it never counts towards a contestant's time or memory,
and a contestant cannot pass by reporting its own success.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

Output = dict[str, Any]
"""What a run function returns: JSON-able facts the check may use (e.g. ferryman's counters)."""


@dataclass(frozen=True)
class Job:
    """Everything a run function gets; crosses the process boundary as JSON."""

    workload: str
    variant: str
    size: int
    source: str
    dest: str
    work: str
    """A scratch directory of this measurement only (ledgers, dlt's pipeline state)."""

    @property
    def ledger(self) -> str:
        """Where a durable ferryman ledger goes, so the check can read the failed records."""
        return os.path.join(self.work, "ledger.db")


@dataclass(frozen=True)
class Variant:
    """One contestant of a workload."""

    name: str
    label: str
    target: str
    """``module:function`` taking a :class:`Job` and returning an :data:`Output`."""
    kind: str
    """``ferryman``, ``engine`` (the database alone: the physical limit), ``hand-written`` or ``library``."""
    requires: tuple[str, ...] = ()
    """Top-level modules the target imports; without them the variant is skipped, not failed."""

    def available(self) -> bool:
        return all(importlib.util.find_spec(module) is not None for module in self.requires)


@dataclass(frozen=True)
class Check:
    """The verdict on one output: a fast wrong result must not win."""

    ok: bool
    rows: int
    """Rows found in the destination."""
    checksum: str
    detail: str = ""


class Workload(ABC):
    """A migration task with its data, its contestants and its check."""

    key: ClassVar[str]
    title: ClassVar[str]
    unit: ClassVar[str] = "rows"
    """What ``rows/s`` counts: the ``size`` source rows read."""
    variants: ClassVar[tuple[Variant, ...]]

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        known = ", ".join(v.name for v in self.variants)
        raise KeyError(f"workload {self.key} has no variant {name!r}; it has {known}")

    @abstractmethod
    def source(self, size: int, cache_dir: Path) -> Path:
        """The (cached) source database for ``size``."""

    @abstractmethod
    def prepare(self, job: Job) -> None:
        """Make the job's destination fresh: the empty table, plus any rows the workload needs."""

    @abstractmethod
    def verify(self, job: Job, output: Output) -> Check:
        """Compare the destination (and ledger) with what the source says it must hold."""
