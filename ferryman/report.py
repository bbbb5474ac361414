"""What happened to each migration: live counters during a run, the outcome after it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .verify import VerificationResult


class MigrationState(str, Enum):
    """Where a migration stands in a run."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    HELD_BACK = "held_back"
    INTERRUPTED = "interrupted"


@dataclass
class MigrationReport:
    """Counters and outcome of one migration in one run.

    ``read`` counts source records read, ``skipped`` those already migrated by an earlier run,
    ``ignored`` those marked IGNORE, ``succeeded``/``failed`` the records this run finished,
    ``written`` the outputs saved, ``total`` the source size when the store can count it.
    """

    identity: str
    name: str
    source: str
    dest: str
    state: MigrationState = MigrationState.PENDING
    total: int | None = None
    read: int = 0
    skipped: int = 0
    ignored: int = 0
    succeeded: int = 0
    failed: int = 0
    written: int = 0
    retried: int = 0
    last_error: str | None = None
    fatal_error: str | None = None
    held_back_by: list[str] = field(default_factory=list)
    held_back_reason: str | None = None
    """Why it was held back, when not because ``held_back_by`` failed."""
    preloaded: dict[str, dict[str, float]] = field(default_factory=dict)
    """Matched stores read into memory once for this run: ``{"records": n, "mb": estimate}``."""
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def unfinished(self) -> int:
        """Records read whose outcome this run did not reach (a stop, a fatal error, failures
        waiting for their retry): ``read`` is always succeeded + failed + skipped + ignored +
        unfinished."""
        return self.read - self.succeeded - self.failed - self.skipped - self.ignored

    @property
    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.time()) - self.started_at

    @property
    def rate(self) -> float:
        """Source records per second in this run."""
        elapsed = self.elapsed
        return self.read / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left, when the total is known and the run is moving."""
        if self.total is None or self.state is not MigrationState.RUNNING or self.rate <= 0:
            return None
        return max(self.total - self.read, 0) / self.rate

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["unfinished"] = self.unfinished
        data["rate"] = round(self.rate, 3)
        data["eta"] = None if self.eta is None else round(self.eta, 1)
        return data


@dataclass
class RunResult:
    """The outcome of :meth:`MigrationService.run`, one report per selected migration."""

    reports: list[MigrationReport]
    interrupted: str | None = None
    """The signal name when the run was stopped early, else None."""
    callback_errors: list[str] = field(default_factory=list)
    ledger_error: str | None = None
    """Why the progress ledger could take no more (its lease was taken, a full disk), if so:
    the run stopped there; the next run records what the destination's journal holds."""
    attempts: int = 1
    """Which attempt this run was (``MigrationService.run(max_tries=...)`` runs several)."""
    timed_out: str | None = None
    """What ``last_err`` says when the run's ``timeout`` stopped it (it ends failed), else None."""
    notification_errors: list[str] = field(default_factory=list)
    """Notifications (``notify=``) that could not be delivered; they never fail the run."""
    verification: VerificationResult | None = None
    """The verification after the run (``verify_sample=``), if one ran."""
    verification_error: str | None = None
    """Why the verification after the run could not run (the run is then not ok)."""

    @property
    def ok(self) -> bool:
        """True when every selected migration completed and every progress save worked."""
        return (
            not self.interrupted and not self.timed_out and not self.callback_errors and not self.ledger_error
            and all(r.state is MigrationState.COMPLETED for r in self.reports)
            and (self.verification is None or self.verification.ok) and not self.verification_error
        )

    def report(self, name: str) -> MigrationReport:
        """The report of a migration, by name or identity."""
        for r in self.reports:
            if name in (r.name, r.identity):
                return r
        raise KeyError(f"no migration {name!r} in this run")

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 0 all completed, 1 failures, held back or timed out, 130
        interrupted."""
        if self.interrupted:
            return 130
        return 0 if self.ok else 1

    def summary(self) -> str:
        """A few lines a person reads at 3 a.m."""
        lines = []
        for r in self.reports:
            line = (
                f"{r.name}: {r.state.value.replace('_', ' ')} - {r.succeeded:,} migrated, {r.failed:,} failed, "
                f"{r.skipped:,} already done, {r.ignored:,} ignored, {r.written:,} written"
            )
            if r.unfinished:
                line += f", {r.unfinished:,} unfinished"
            if r.held_back_reason:
                line += f" (held back: {r.held_back_reason})"
            elif r.held_back_by:
                line += f" (held back: {', '.join(r.held_back_by)} failed)"
            if r.fatal_error:
                line += f"; fatal: {r.fatal_error}"
            lines.append(line)
        if self.interrupted:
            lines.append(f"interrupted by {self.interrupted}; progress saved, run again to resume")
        if self.timed_out:
            lines.append(self.timed_out)
        for err in self.callback_errors:
            lines.append(f"progress persistence failed: {err}")
        if self.ledger_error:
            lines.append(f"the run stopped: {self.ledger_error}")
        if self.verification is not None:
            lines.append(self.verification.summary())
        if self.verification_error:
            lines.append(self.verification_error)
        lines.extend(self.notification_errors)
        return "\n".join(lines)


def last_error(reports: Sequence[MigrationReport]) -> str | None:
    """The run's last error, as the status API's ``last_err`` shows it: the newest migration's
    fatal error, else its last record error, named by the migration (the current ``step`` may be
    another one)."""
    for report in reversed(reports):
        error = report.fatal_error or report.last_error
        if error:
            return f"{report.name}: {error}"
    return None
