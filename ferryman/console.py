"""What a person sees: a run's progress while it runs, and the tables of the other commands.

:class:`ConsoleProgress` is a :class:`~ferryman.events.RunObserver`. The runner calls it once
per page, so it does no I/O there: on a terminal it updates rich's task table (rich redraws on
its own thread a few times a second); in a log (not a terminal) it writes a line when a
migration starts and ends and at most one progress line every ``interval`` seconds.

:func:`format_failed` and :func:`format_status` render ``ferryman failed list`` and
``ferryman status``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import IO, TYPE_CHECKING, Any, Sequence

from .events import RunObserver
from .progress.model import Action
from .report import MigrationReport, MigrationState, RunResult

if TYPE_CHECKING:
    from .commands import FailedRow

LOG_INTERVAL = 5.0
"""Seconds between two progress lines when the output is not a terminal."""


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m07s``, ``2h05m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_count(report: MigrationReport) -> str:
    """``1,024/20,000`` (read/total), or just ``1,024`` when the total is unknown."""
    total = f"/{report.total:,}" if report.total is not None else ""
    return f"{report.read:,}{total}"


def progress_line(report: MigrationReport) -> str:
    """One line on a running migration: counts, rate and ETA."""
    percent = f" ({100 * report.read / report.total:.0f}%)" if report.total else ""
    return (
        f"{report.name}: {format_count(report)} read{percent}, {report.succeeded:,} migrated, "
        f"{report.failed:,} failed, {report.rate:,.0f}/s, ETA {format_duration(report.eta)}"
    )


def finished_line(report: MigrationReport) -> str:
    """One line on a migration that ended."""
    line = (
        f"{report.name}: {report.state.value} in {format_duration(report.elapsed)} - "
        f"{report.succeeded:,} migrated, {report.failed:,} failed, {report.skipped:,} already done, "
        f"{report.ignored:,} ignored, {report.written:,} written"
    )
    if report.fatal_error:
        line += f"; fatal: {report.fatal_error}"
    return line


class ConsoleProgress(RunObserver):
    """Progress of a run on ``stream`` (stdout by default).

    Args:
        stream: where to write.
        fancy: rich progress bars (True), plain lines (False), or decide by ``stream.isatty()``.
        interval: seconds between plain progress lines.
    """

    def __init__(self, stream: IO[str] | None = None, *, fancy: bool | None = None,
                 interval: float = LOG_INTERVAL) -> None:
        self.stream = stream if stream is not None else sys.stdout
        if fancy is None:
            isatty = getattr(self.stream, "isatty", None)
            fancy = bool(isatty and isatty())
        self.fancy = fancy
        self.interval = interval
        self._last_line = 0.0
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._started: set[Any] = set()

    # --- events ---------------------------------------------------------------------------------

    def run_started(self, reports: Sequence[MigrationReport]) -> None:
        if not self.fancy:
            names = ", ".join(r.name for r in reports)
            self._say(f"run started: {len(reports)} migration(s): {names}")
            return
        self._start_bars(reports)

    def migration_started(self, report: MigrationReport) -> None:
        if not self.fancy:
            total = f", {report.total:,} records" if report.total is not None else ""
            self._say(f"{report.name}: started ({report.source} -> {report.dest}{total})")
            self._last_line = time.monotonic()
            return
        self._update(report)

    def page_done(self, report: MigrationReport) -> None:
        if self.fancy:
            self._update(report)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._say(progress_line(report))

    def migration_finished(self, report: MigrationReport) -> None:
        if self.fancy:
            self._update(report)
        else:
            self._say(finished_line(report))

    def run_finished(self, result: RunResult) -> None:
        if not self.fancy:
            return
        for report in result.reports:
            self._update(report)
        self.close()

    def close(self) -> None:
        """Stop drawing (idempotent); the last frame stays on the screen."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # --- plain lines ------------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        self.stream.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
        self.stream.flush()

    # --- rich bars ------------------------------------------------------------------------------

    def _start_bars(self, reports: Sequence[MigrationReport]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self.close()
        console = Console(file=self.stream, force_terminal=True)
        self._progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[count]}"),
            TextColumn("[green]{task.fields[ok]} ok[/]  [red]{task.fields[bad]} failed[/]"),
            TextColumn("{task.fields[rate]}  ETA {task.fields[eta]}"),
            TextColumn("[dim]{task.fields[state]}[/]"),
            console=console,
            refresh_per_second=4,
        )
        self._tasks = {}
        self._started = set()
        width = max((len(r.name) for r in reports), default=0)
        for report in reports:
            self._tasks[report.identity] = self._progress.add_task(
                report.name.ljust(width), total=report.total, start=False, **self._fields(report)
            )
        self._progress.start()

    @staticmethod
    def _fields(report: MigrationReport) -> dict[str, Any]:
        state = report.state.value.replace("_", " ")
        if report.held_back_by:
            state += f" ({', '.join(report.held_back_by)} failed)"
        return {
            "count": format_count(report),
            "ok": f"{report.succeeded:,}",
            "bad": f"{report.failed:,}",
            "rate": f"{report.rate:,.0f}/s",
            "eta": format_duration(report.eta),
            "state": state,
        }

    def _update(self, report: MigrationReport) -> None:
        progress = self._progress
        task = self._tasks.get(report.identity)
        if progress is None or task is None:
            return
        if report.state is MigrationState.RUNNING and task not in self._started:
            self._started.add(task)
            progress.start_task(task)
        total = report.total if report.total is not None else None
        if report.state is MigrationState.COMPLETED and total is None:
            total = report.read  # a full bar for a source that cannot count itself
        progress.update(task, total=total, completed=report.read, **self._fields(report))


# --- tables for the other commands ---------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned table (numbers right-aligned), as ``ferryman failed list`` prints."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in rows) and bool(rows)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def format_failed(rows: Sequence[FailedRow], width: int = 100) -> str:
    """``ferryman failed list`` output: id, migration, action, description, cause."""
    from .commands import format_id

    if not rows:
        return "no failed records"
    table = [
        (format_id(r.record.id), r.name, r.record.action.value, r.record.description, _clip(r.cause, width))
        for r in rows
    ]
    ignored = sum(1 for r in rows if r.record.action is Action.IGNORE)
    footer = f"{len(rows)} failed record(s), {ignored} marked IGNORE"
    return format_table(["ID", "MIGRATION", "ACTION", "DESCRIPTION", "CAUSE"], table) + "\n" + footer


def _clip(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters; the middle goes, since the end of a message
    (``UNIQUE constraint failed: t.email``) matters as much as its start."""
    text = re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*(?::|$))", "", text)  # ferryman.errors.X -> X
    if len(text) <= width:
        return text
    head = width * 2 // 5
    return text[:head] + "…" + text[len(text) - (width - head - 1):]


_STATUS_COLUMNS = [
    ("MIGRATION", ("name", "step", "identity", "migration")),
    ("STATE", ("state", "status")),
    ("READ", ("read",)),
    ("TOTAL", ("total",)),
    ("WRITTEN", ("written",)),
    ("SUCCEEDED", ("succeeded",)),
    ("SKIPPED", ("skipped",)),
    ("FAILED", ("failed",)),
    ("IGNORED", ("ignored",)),
    ("RATE/S", ("rate",)),
    ("ETA S", ("eta",)),
]


def _migration_rows(progress: Any) -> list[dict[str, Any]]:
    if isinstance(progress, dict):
        for key in ("migrations", "steps", "progress"):
            if key in progress:
                return _migration_rows(progress[key])
        if progress and all(isinstance(v, dict) for v in progress.values()):
            return [{"name": k, **v} for k, v in progress.items()]
        return []
    if isinstance(progress, list):
        return [row for row in progress if isinstance(row, dict)]
    return []


def format_status(snapshot: dict[str, Any]) -> str:
    """The ``ferryman status`` text: the /migrate/result line and a table per migration."""
    from .commands import cause_summary

    lines = []
    result = snapshot.get("result")
    if isinstance(result, dict):
        err = result.get("last_err")
        err_text = cause_summary(err if isinstance(err, str) else json.dumps(err)) if err else "-"
        lines.append(
            f"status: {result.get('status', '-')}   step: {result.get('step') or '-'}   "
            f"tries: {result.get('try_count', '-')}   last error: {err_text}"
        )
    rows = _migration_rows(snapshot.get("progress"))
    if rows:
        columns = [(h, keys) for h, keys in _STATUS_COLUMNS if any(k in r for r in rows for k in keys)]
        table = [[next((r[k] for k in keys if k in r), None) for _, keys in columns] for r in rows]
        lines.append(format_table([h for h, _ in columns], table))
    elif not lines:
        lines.append("no status to show")
    return "\n".join(lines)
