"""What the status server shows, taken at one instant, and the rules that turn progress into it.

A :class:`StatusSnapshot` holds everything the routes render. The sources
(:mod:`ferryman.server.sources`) build it; the rules that do not need any I/O live here so that
they can be read in one place:

- ``pending``: no run has ever started on this progress;
- ``running``: a run is active and its process is alive (or, its coordinator killed, workers of
  it still hold partitions);
- ``completed``: the run this server watched finished with nothing left to do;
- ``migrated``: the progress shows a successful completion by a run this server did not watch;
- ``failed``: the last run ended with failed records or a fatal error, was interrupted, or its
  process died without finishing.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import cause_summary
from ..progress.lease import Holder
from ..progress.model import (
    Action,
    FailedRecord,
    MigrationEntry,
    MigrationProgress,
    display_name,
)

FAILED_RECORDS_SHOWN = 20
"""How many failed records a snapshot carries, the newest (the total is in ``failed_total``)."""
RUNS_SHOWN = 50
"""How many runs of the history a snapshot carries, newest first."""


class Status(str, Enum):
    """The ``status`` of ``GET /migrate/result``."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    MIGRATED = "migrated"
    FAILED = "failed"


MIGRATION_STATES = ("pending", "running", "completed", "failed", "held_back", "interrupted", "in_progress")
"""Per-migration states: :class:`~ferryman.report.MigrationState` plus ``in_progress``, which
only an mjg JSON progress shows (it cannot tell a live run from an interrupted one)."""

COUNTS = ("read", "skipped", "ignored", "succeeded", "failed", "written")


@dataclass
class StatusSnapshot:
    """Everything the routes render, taken at one instant."""

    status: str
    step: str | None = None
    last_err: str | None = None
    try_count: int = 0
    migrations: list[dict[str, Any]] = field(default_factory=list)
    """Per migration, in run order: ``MigrationReport.to_dict()`` shape."""
    runs: list[dict[str, Any]] = field(default_factory=list)
    """Run history, newest first: id, job, attempt, started_at, ended_at, outcome, last_error..."""
    failed_records: list[dict[str, Any]] = field(default_factory=list)
    """The newest failed records, newest first: migration, id, description, cause (full), action."""
    failed_total: int = 0
    """How many failed records the progress holds (``failed_records`` shows the newest few)."""
    partitions: list[dict[str, Any]] = field(default_factory=list)
    """The key-range partitions of a run with workers, while it has them."""
    taken_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.status = Status(self.status).value
        if self.last_err is not None and not isinstance(self.last_err, str):
            self.last_err = str(self.last_err)

    def result(self) -> dict[str, Any]:
        """The body of ``GET /migrate/result``: exactly status, step, last_err, try_count."""
        return {"status": self.status, "step": self.step, "last_err": self.last_err,
                "try_count": self.try_count}

    def totals(self) -> dict[str, Any]:
        """Counts over every migration; the overall total, rate and ETA; how long the newest
        run took and its average rate.

        ``total`` adds the totals that are known; ``uncounted`` migrations are left out: those
        that have not started (a source is counted when its migration starts) or were held
        back. It is None when none is known, or when a migration that started cannot count
        its source (then nobody can say how far the whole is).
        """
        sums = {name: sum(int(m.get(name) or 0) for m in self.migrations) for name in COUNTS}
        uncounted = [m for m in self.migrations if not isinstance(m.get("total"), int)]
        uncountable = any(m.get("state") not in ("pending", "held_back") or m.get("read") for m in uncounted)
        known = len(uncounted) < len(self.migrations) and not uncountable
        running = [m for m in self.migrations if m.get("state") == "running"]
        rate = sum(float(m.get("rate") or 0.0) for m in running)
        eta: float | None = None
        if known and not uncounted and rate > 0 and self.status == Status.RUNNING:
            left = sum(max(int(m["total"]) - int(m.get("read") or 0), 0) for m in self.migrations
                       if m.get("state") in ("pending", "running"))
            eta = round(left / rate, 1)
        elapsed, average = self._newest_run_pace()
        return {
            "migrations": len(self.migrations),
            "completed": sum(1 for m in self.migrations if m.get("state") == "completed"),
            "total": sum(int(m["total"]) for m in self.migrations if isinstance(m.get("total"), int))
            if known else None,
            "uncounted": len(uncounted),
            **sums,
            "rate": round(rate, 3),
            "eta": eta,
            "elapsed": elapsed,
            "average_rate": average,
        }

    def _newest_run_pace(self) -> tuple[float | None, float | None]:
        """Seconds the newest run took (so far, while it runs), and the source records it read
        per second on average; None without a run history (mjg JSON progress)."""
        run = self.runs[0] if self.runs else None
        if run is None or not isinstance(run.get("started_at"), (int, float)):
            return None, None
        began = float(run["started_at"])
        in_run = [m for m in self.migrations if isinstance(m.get("started_at"), (int, float))
                  and m["started_at"] >= began]
        end = run.get("ended_at")
        if not isinstance(end, (int, float)):
            finished = [m["finished_at"] for m in in_run if isinstance(m.get("finished_at"), (int, float))]
            end = self.taken_at if self.status == Status.RUNNING or not finished else max(finished)
        elapsed = max(float(end) - began, 0.0)
        read = sum(int(m.get("read") or 0) for m in in_run)
        return round(elapsed, 1), (round(read / elapsed, 3) if elapsed > 0 else None)

    def progress(self) -> dict[str, Any]:
        """The body of ``GET /migrate/progress``."""
        return {
            **self.result(),
            "updated_at": self.taken_at,
            "totals": self.totals(),
            "migrations": self.migrations,
            "runs": self.runs,
            "failed_records": self.failed_records,
            "failed_total": self.failed_total,
            "partitions": self.partitions,
        }


def failed_record_dict(migration: str, record_id: Any, description: str, cause: str,
                       action: str, timestamp: str | None = None) -> dict[str, Any]:
    rid = list(record_id) if isinstance(record_id, tuple) else record_id
    return {"migration": migration, "id": rid, "description": description, "cause": cause,
            "action": action, "timestamp": timestamp}


def newest_failures(pairs: Iterable[tuple[str, FailedRecord]]) -> list[tuple[str, FailedRecord]]:
    """The FAILED_RECORDS_SHOWN newest ``(identity, record)`` pairs by timestamp, newest first
    (of two at the same instant, the later pair); memory bounded by what is kept."""
    ranked = ((record.timestamp, i, identity, record) for i, (identity, record) in enumerate(pairs))
    return [(identity, record) for _, _, identity, record in
            heapq.nlargest(FAILED_RECORDS_SHOWN, ranked, key=lambda r: (r[0], r[1]))]


def snapshot_of_progress(progress: MigrationProgress) -> StatusSnapshot:
    """The status of an mjg progress (no run history, so never ``running`` nor ``completed``).

    ``migrated`` when every migration in it is completed and no RETRY failure remains,
    ``failed`` when RETRY failures or fatal errors exist, else ``pending``; ``try_count`` 0.
    """
    meta = progress.metadata
    migrations: list[dict[str, Any]] = []
    retry_total = 0
    last_failure: tuple[Any, str] | None = None
    known = list(progress.migrations)
    identities = known + [i for i in dict.fromkeys(meta.in_progress + meta.completed) if i not in known]
    for identity in identities:
        entry = progress.migrations.get(identity) or MigrationEntry(identity)
        name = display_name(identity)
        retry = [r for r in entry.failed.values() if r.action is Action.RETRY]
        ignored = len(entry.failed) - len(retry)
        retry_total += len(retry)
        if retry:
            newest = max(retry, key=lambda r: r.timestamp)
            if last_failure is None or newest.timestamp >= last_failure[0]:
                last_failure = (newest.timestamp, f"{newest.description}: {cause_summary(newest.cause)}")
        if retry:
            state = "failed"
        elif identity in meta.completed:
            state = "completed"
        elif identity in meta.in_progress:
            state = "in_progress"
        else:
            state = "pending"
        done = len(entry.succeeded)
        migrations.append({
            "identity": identity, "name": name, "source": None, "dest": None, "state": state,
            "total": None, "read": done + len(entry.failed), "skipped": 0, "ignored": ignored,
            "succeeded": done, "failed": len(retry), "written": None, "retried": 0,
            "last_error": None, "fatal_error": None, "held_back_by": [], "started_at": None,
            "finished_at": None, "rate": 0.0, "eta": None,
        })
    failed = [failed_record_dict(display_name(identity), record.id, record.description, record.cause,
                                 record.action.value, record.timestamp.isoformat())
              for identity, record in newest_failures(progress.failed_records())]
    step_ids = meta.in_progress or meta.completed
    step = display_name(step_ids[-1]) if step_ids else None
    failed_total = sum(len(e.failed) for e in progress.migrations.values())
    if progress.fatal_errors or retry_total:
        status = Status.FAILED
        if progress.fatal_errors:
            last_err = cause_summary(progress.fatal_errors[-1]) or "fatal error"
        else:
            assert last_failure is not None
            last_err = last_failure[1]
    elif identities and all(i in meta.completed for i in identities):
        status, last_err = Status.MIGRATED, None
    else:
        status, last_err = Status.PENDING, None
    return StatusSnapshot(status.value, step, last_err, 0, migrations, [], failed, failed_total)


# --- an SQLite ledger's run history -----------------------------------------------------------


@dataclass
class LedgerView:
    """What one read transaction saw in an SQLite ledger."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    """Newest first; ``reports`` is the newest run's list of report dicts."""
    reports: list[dict[str, Any]] = field(default_factory=list)
    holder: Holder | None = None
    migrations: list[dict[str, Any]] = field(default_factory=list)
    failed_records: list[dict[str, Any]] = field(default_factory=list)
    failed_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """identity -> {"RETRY": n, "IGNORE": n}"""
    fatal_count: int = 0
    last_fatal: str | None = None
    partitions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_run(self) -> dict[str, Any] | None:
        return self.runs[0] if self.runs else None

    @property
    def failed_total(self) -> int:
        return sum(sum(c.values()) for c in self.failed_counts.values())

    @property
    def retry_total(self) -> int:
        return sum(c.get(Action.RETRY.value, 0) for c in self.failed_counts.values())


def died_message(run: dict[str, Any]) -> str:
    """The same words the ledger writes when the next run takes over from a dead one."""
    return f"process {run['pid']} on {run['host']} died without finishing"


def run_is_alive(view: LedgerView) -> bool:
    """True while the newest run has no outcome and the lease holder's process is alive, or
    live workers hold partitions of it (its coordinator killed, they go on)."""
    run = view.last_run
    if run is None or run["outcome"] is not None:
        return False
    if view.holder is not None and view.holder.alive(time.time()):
        return True
    return any(p.get("state") == "running" for p in view.partitions)


def fix_dead_runs(view: LedgerView, alive: bool) -> list[dict[str, Any]]:
    """The run history as it truly is: an unfinished run that is not alive has died."""
    runs = [dict(r) for r in view.runs]
    for i, run in enumerate(runs):
        if run["outcome"] is None and not (i == 0 and alive):
            run["outcome"], run["last_error"] = "died", died_message(run)
    return runs


def ledger_migrations(view: LedgerView, alive: bool) -> list[dict[str, Any]]:
    """The newest run's reports, then the ledger's other migrations (their last report)."""
    result: list[dict[str, Any]] = []
    seen: set[str] = set()
    for report in view.reports:
        result.append(_with_current_actions(dict(report), view.failed_counts.get(report["identity"], {}), alive))
        seen.add(report["identity"])
    for row in view.migrations:
        if row["identity"] in seen:
            continue
        counts = view.failed_counts.get(row["identity"], {})
        report = dict(row["report"]) if row["report"] else _bare_report(row, counts)
        result.append(report)
    if not alive:
        completed = {row["identity"]: bool(row["completed"]) for row in view.migrations}
        for report in result:
            if report.get("state") == "running":
                report["state"] = "interrupted"
            elif report.get("state") == "completed" and not completed.get(report["identity"], True):
                report["state"] = "pending"  # reset since that run: it runs again from the start
            report["eta"] = None
    return result


def _with_current_actions(report: dict[str, Any], counts: dict[str, int], alive: bool) -> dict[str, Any]:
    """The run's report with its failed records split as the ledger marks them now: after
    ``ferryman failed ignore``, a failed record counts as ignored. Only a re-split of the same
    records (the run met them all), so read = succeeded + failed + skipped + ignored holds."""
    retry, ignored = counts.get(Action.RETRY.value, 0), counts.get(Action.IGNORE.value, 0)
    if not alive and retry + ignored == report.get("failed", 0) + report.get("ignored", 0):
        report["failed"], report["ignored"] = retry, ignored
    return report


def _bare_report(row: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """A report for a migration the ledger knows only by its records (an imported progress)."""
    retry, ignored = counts.get(Action.RETRY.value, 0), counts.get(Action.IGNORE.value, 0)
    state = ("failed" if retry else "completed" if row["completed"]
             else "in_progress" if row["in_progress"] else "pending")
    identity = row["identity"]
    return {
        "identity": identity, "name": display_name(identity), "source": None, "dest": None,
        "state": state, "total": None, "read": 0, "skipped": 0, "ignored": ignored, "succeeded": 0,
        "failed": retry, "written": 0, "retried": 0, "last_error": None, "fatal_error": None,
        "held_back_by": [], "started_at": None, "finished_at": None, "rate": 0.0, "eta": None,
    }


def _remaining_failures(view: LedgerView) -> str:
    names = [display_name(i) for i, c in view.failed_counts.items() if c.get(Action.RETRY.value)]
    return (f"{view.retry_total} failed record(s) remain in {', '.join(names)}; "
            "run again to retry them")


def not_completed(names: Sequence[str]) -> str:
    """``last_err`` of a completed run over a ledger that holds migrations it did not complete."""
    return f"not completed: {', '.join(names)} (the last run completed without them); run again to finish them"


def ledger_status(view: LedgerView, alive: bool, watched: bool) -> tuple[Status, str | None]:
    """``status`` and ``last_err`` of a ledger; ``watched``: this server saw the newest run."""
    run = view.last_run
    if run is None:  # no run in this ledger: judge the progress alone, as for an mjg file
        if view.retry_total or view.fatal_count:
            if view.fatal_count:
                return Status.FAILED, cause_summary(view.last_fatal or "") or "fatal error"
            return Status.FAILED, _remaining_failures(view)
        if view.migrations and all(m["completed"] for m in view.migrations):
            return Status.MIGRATED, None
        return Status.PENDING, None
    if alive:
        return Status.RUNNING, run["last_error"]
    outcome = run["outcome"]
    if outcome is None:
        return Status.FAILED, died_message(run)
    if outcome == "completed":
        if view.retry_total:
            return Status.FAILED, _remaining_failures(view)
        unfinished = [display_name(m["identity"]) for m in view.migrations if not m["completed"]]
        if unfinished:  # a run of some migrations (--only) completed; the others have not
            return Status.FAILED, not_completed(unfinished)
        return (Status.COMPLETED if watched else Status.MIGRATED), run["last_error"]
    if run["last_error"]:
        return Status.FAILED, run["last_error"]
    if outcome == "interrupted":
        return Status.FAILED, "the run was interrupted before it finished; run again to resume"
    return Status.FAILED, f"the run ended {outcome}"
