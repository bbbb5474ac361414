"""What a verification found: per migration, each check's counts and the first problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..ids import format_id
from ..types import RecordId

PROBLEMS_KEPT = 50
"""Problems a migration's result names one by one (all are counted)."""


@dataclass(frozen=True)
class Problem:
    """One thing that does not add up."""

    check: str
    """``counts``, ``source``, ``missing``, ``duplicated``, ``different``, ``drift``, ``replay``
    or ``hook``."""
    detail: str
    id: RecordId | None = None
    """The source record's id, where the problem is about one."""

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "id": list(self.id) if isinstance(self.id, tuple) else self.id,
                "detail": self.detail}

    def line(self) -> str:
        where = f" record {format_id(self.id)}" if self.id is not None else ""
        return f"{self.check}{where}: {self.detail}"


@dataclass
class MigrationVerification:
    """The checks of one migration.

    Counts: ``source_total`` (the source's count, None where it cannot count) must equal
    ``succeeded + failed + ignored`` (records skipped by ``handle_duplicate`` count as succeeded).
    Outputs: the records replayed (``checked``) give ``outputs_expected`` outputs, each to be
    found once under its key: ``missing`` were not found, ``duplicated`` were found more than
    once. Replay: every field of every output found equal (``different``, ``drifted`` count the
    outputs that were not; ``drift`` counts them by kind); ``replay_failed`` records could not be
    read or transformed again; ``hook_failed`` the migration's ``verify`` hook refused.
    ``settled``: records whose stored outputs are what ``handle_duplicate`` saves instead, for a
    clash the destination shows (compared as such); ``settled_skipped``: records it skips for
    such a clash (nothing of theirs to compare).
    """

    name: str
    identity: str
    source: str
    dest: str
    source_total: int | None = None
    succeeded: int = 0
    failed: int = 0
    ignored: int = 0
    checked: int = 0
    outputs_expected: int = 0
    outputs_found: int = 0
    missing: int = 0
    duplicated: int = 0
    different: int = 0
    drifted: int = 0
    replay_failed: int = 0
    source_missing: int = 0
    hook_failed: int = 0
    settled: int = 0
    settled_skipped: int = 0
    drift: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None
    """Why the outputs could not be looked up (they carry no destination key), if so."""
    problems: list[Problem] = field(default_factory=list)

    def problem(self, check: str, detail: str, record_id: RecordId | None = None) -> None:
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(Problem(check, detail, record_id))

    @property
    def unaccounted(self) -> int | None:
        """Source records with no outcome in the progress (negative: the progress holds ids the
        source no longer has); None where the source cannot count."""
        if self.source_total is None:
            return None
        return self.source_total - self.succeeded - self.failed - self.ignored

    @property
    def counts_ok(self) -> bool:
        return self.unaccounted in (None, 0)

    @property
    def outputs_ok(self) -> bool:
        return not (self.missing or self.duplicated)

    @property
    def replay_ok(self) -> bool:
        return not (self.different or self.drifted or self.replay_failed or self.source_missing)

    @property
    def ok(self) -> bool:
        return self.counts_ok and self.outputs_ok and self.replay_ok and not self.hook_failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "identity": self.identity, "source": self.source, "dest": self.dest,
            "ok": self.ok,
            "checks": {
                "counts": {"ok": self.counts_ok, "source": self.source_total, "succeeded": self.succeeded,
                           "failed": self.failed, "ignored": self.ignored, "unaccounted": self.unaccounted},
                "outputs": {"ok": self.outputs_ok, "expected": self.outputs_expected,
                            "found": self.outputs_found, "missing": self.missing, "duplicated": self.duplicated,
                            "skipped": self.skipped},
                "replay": {"ok": self.replay_ok, "checked": self.checked, "different": self.different,
                           "drifted": self.drifted, "drift": dict(self.drift), "failed": self.replay_failed,
                           "gone_from_source": self.source_missing, "settled": self.settled,
                           "settled_skipped": self.settled_skipped},
                "hook": {"ok": not self.hook_failed, "failed": self.hook_failed},
            },
            "problems": [p.to_dict() for p in self.problems],
        }

    def summary(self) -> str:
        """One line, then a line per problem named."""
        verdict = "passed" if self.ok else "FAILED"
        source = "?" if self.source_total is None else f"{self.source_total:,}"
        parts = [f"source {source} = {self.succeeded:,} succeeded + {self.failed:,} failed + "
                 f"{self.ignored:,} ignored" + ("" if self.counts_ok else f" (off by {self.unaccounted:+,})"),
                 f"{self.checked:,} replayed", f"{self.outputs_found:,}/{self.outputs_expected:,} outputs found"]
        for label, n in (("missing", self.missing), ("duplicated", self.duplicated),
                         ("different", self.different), ("drifted", self.drifted),
                         ("not replayable", self.replay_failed), ("gone from the source", self.source_missing),
                         ("refused by the verify hook", self.hook_failed)):
            if n:
                parts.append(f"{n:,} {label}")
        for label, n in (("as handle_duplicate settled them", self.settled),
                         ("skipped by handle_duplicate, not compared", self.settled_skipped)):
            if n:
                parts.append(f"{n:,} {label}")
        if self.skipped:
            parts.append(f"outputs not looked up: {self.skipped}")
        lines = [f"{self.name}: {verdict} - " + ", ".join(parts)]
        lines += [f"  {p.line()}" for p in self.problems]
        return "\n".join(lines)


@dataclass
class VerificationResult:
    """The outcome of :meth:`MigrationService.verify`: ``ok`` only when every check of every
    migration passed."""

    migrations: list[MigrationVerification]
    sample: int | None
    """Records replayed per migration at most; None: all of them."""
    seed: int | None
    started_at: datetime
    finished_at: datetime

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.migrations)

    @property
    def exit_code(self) -> int:
        """0 when every check passed, else 1."""
        return 0 if self.ok else 1

    def migration(self, name: str) -> MigrationVerification:
        for m in self.migrations:
            if name in (m.name, m.identity):
                return m
        raise KeyError(f"no migration {name!r} in this verification")

    def to_dict(self) -> dict[str, Any]:
        finished = self.finished_at.isoformat()
        return {"status": "passed" if self.ok else "failed", "ok": self.ok, "sample": self.sample,
                "seed": self.seed, "started_at": self.started_at.isoformat(), "finished_at": finished,
                "migrations": [{**m.to_dict(), "verified_at": finished} for m in self.migrations]}

    def kept_with(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        """What a ledger keeps as the newest verification: this one, plus the migrations that
        ``previous`` (the one kept before) checked and this one did not (a verification of some
        migrations, ``--only``), as they were then, each with its ``verified_at``. So a passed
        check of one migration never hides another's earlier failure."""
        body = self.to_dict()
        mine = {m["identity"] for m in body["migrations"]}
        earlier = [m for m in (previous or {}).get("migrations") or []
                   if isinstance(m, dict) and m.get("identity") not in mine]
        if earlier:
            body["migrations"] = earlier + body["migrations"]
            body["ok"] = all(bool(m.get("ok")) for m in body["migrations"])
            body["status"] = "passed" if body["ok"] else "failed"
        return body

    def summary(self) -> str:
        scope = "every succeeded record" if self.sample is None else f"a sample of {self.sample:,} per migration"
        took = (self.finished_at - self.started_at).total_seconds()
        head = f"verification {'passed' if self.ok else 'FAILED'} ({scope}, {took:.1f} s)"
        return "\n".join([head, *(m.summary() for m in self.migrations)])
