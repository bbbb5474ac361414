"""What a person sees: a run's progress while it runs, and the tables of the other commands.

:class:`ConsoleProgress` is a :class:`~ferryman.events.RunObserver`. The runner calls it once
per page, so it does no I/O there: on a terminal it updates rich's task table (rich redraws on
its own thread a few times a second); in a log (not a terminal) it writes a line when a
migration starts and ends and at most one progress line every ``interval`` seconds.

:func:`format_failed` and :func:`format_status` render ``ferryman failed list`` and
``ferryman status``.

Everything printed that comes from data (ids, names, descriptions, causes, errors) goes through
:func:`shown`: secrets masked, and every control character made visible (``\x1b``), so that a
record id or an error message cannot retitle the terminal, plant a hyperlink, move the cursor or
reverse the text. A reader that goes away (``ferryman run ... | head -1``) costs the output only:
:class:`PipeSafeStream` drops the rest and the command goes on to its own end and exit code.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

from .errors import cause_summary
from .events import RunObserver
from .ids import format_id
from .progress.model import Action
from .redact import mask_secrets, printable
from .report import MigrationReport, MigrationState, RunResult

if TYPE_CHECKING:
    from .progress.failed import FailedRow

LOG_INTERVAL = 5.0
"""Seconds between two progress lines when the output is not a terminal."""


def shown(text: object) -> str:
    """A value as the terminal may show it: secrets masked, control characters escaped."""
    return printable(mask_secrets(str(text)))


def shown_lines(text: str) -> str:
    """:func:`shown` for text of several lines, each kept on its own line."""
    return "\n".join(shown(line) for line in text.split("\n"))


class PipeSafeStream:
    """A text stream whose reader may go away: after a write meets a closed pipe, the descriptor
    is pointed at /dev/null (as the Python docs' note on SIGPIPE advises, so that the
    interpreter's last flush cannot fail either) and everything else written is dropped."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                self.stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._drop()

    def isatty(self) -> bool:
        return not self.reader_gone and self.stream.isatty()

    def __getattr__(self, name: str) -> Any:  # encoding, errors, fileno... of the stream
        return getattr(self.stream, name)

    def _drop(self) -> None:
        self.reader_gone = True
        discard_output(self.stream)


def discard_output(stream: IO[str]) -> None:
    """Point ``stream``'s descriptor at /dev/null: what is still buffered, and any later write,
    goes nowhere instead of failing again with a closed pipe."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def command_name() -> str:
    """How to call ferryman again from this shell: ``ferryman`` when that is what ``PATH``
    finds, else the script's own path (a ``.venv/bin/ferryman`` not on ``PATH``) as typed, or
    relative when it is under the current directory (never climbing out of it with ``..``,
    which reads as a puzzle), or ``python -m ferryman``."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) != "ferryman":
        return "python -m ferryman"
    found = shutil.which("ferryman")
    if found and os.path.realpath(found) == os.path.realpath(script):
        return "ferryman"
    if os.path.isabs(script):
        relative = os.path.relpath(script)
        script = script if relative.startswith(os.pardir) else relative
    return shlex.quote(script)


def next_steps_after_failures(target: str, progress: str, records_failed: bool = True,
                              run_options: Sequence[str] = ()) -> str:
    """What to do after a run that did not complete: the three commands that matter when records
    failed; when none did (a fatal error stopped a migration), fix it and run again (with
    ``run_options``, the run's own: its workers, say)."""
    ferryman, target, progress = command_name(), shlex.quote(target), shlex.quote(progress)
    steps = [
        (f"{ferryman} failed list --progress {progress}", "what failed, and why"),
        (f"{ferryman} failed ignore|retry --progress {progress} ID ...", "or --all, --grep TEXT"),
    ] if records_failed else []
    again = "".join(f" {shlex.quote(option)}" for option in run_options)
    steps.append((f"{ferryman} run {target} --progress {progress}{again}", "resumes: only what is left"))
    width = max(len(command) for command, _ in steps)
    head = "next:" if records_failed else "next: fix the fatal error above, then run again:"
    return "\n".join([head, *(f"  {command.ljust(width)}   # {why}" for command, why in steps)])


def next_step_after_status(snapshot: dict[str, Any], progress: str) -> str | None:
    """What ``ferryman status`` adds when records failed: the command that lists them."""
    totals = snapshot.get("progress", {}).get("totals") if isinstance(snapshot.get("progress"), dict) else None
    failed = totals.get("failed") if isinstance(totals, dict) else None
    if not isinstance(failed, int) or failed <= 0:
        return None
    return (f"next: {command_name()} failed list --progress {shlex.quote(progress)}   "
            f"# the {failed:,} failed record(s), and why")


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m07s``, ``2h05m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_count(report: MigrationReport) -> str:
    """``1,024/20,000`` (read/total), or just ``1,024`` when the total is unknown."""
    total = f"/{report.total:,}" if report.total is not None else ""
    return f"{report.read:,}{total}"


def progress_line(report: MigrationReport, dry_run: bool = False) -> str:
    """One line on a running migration: counts, rate and ETA (what it would do, in a dry run)."""
    percent = f" ({100 * report.read / report.total:.0f}%)" if report.total else ""
    migrated, failed = ("would migrate", "would fail") if dry_run else ("migrated", "failed")
    return (
        f"{shown(report.name)}: {format_count(report)} read{percent}, {report.succeeded:,} {migrated}, "
        f"{report.failed:,} {failed}, {report.rate:,.0f}/s, ETA {format_duration(report.eta)}"
    )


def finished_line(report: MigrationReport, dry_run: bool = False) -> str:
    """One line on a migration that ended; in a dry run, what it would have done (nothing was
    saved, so nothing is said to be completed, migrated or written)."""
    took = format_duration(report.elapsed)
    if dry_run:
        line = (
            f"{shown(report.name)}: dry run over in {took} - would write {report.written:,} record(s) "
            f"({report.succeeded:,} would migrate, {report.failed:,} would fail, {report.skipped:,} already "
            f"done, {report.ignored:,} ignored); nothing saved"
        )
    else:
        line = (
            f"{shown(report.name)}: {report.state.value} in {took} - "
            f"{report.succeeded:,} migrated, {report.failed:,} failed, {report.skipped:,} already done, "
            f"{report.ignored:,} ignored, {report.written:,} written"
        )
    if report.fatal_error:
        line += f"; fatal: {shown(report.fatal_error)}"
    return line


def state_text(report: MigrationReport, dry_run: bool = False) -> str:
    """A migration's state in words, with who held it back; a dry run's never says completed."""
    held_back = f" ({', '.join(map(shown, report.held_back_by))} {'would fail' if dry_run else 'failed'})" \
        if report.held_back_by else ""
    if not dry_run or report.state in (MigrationState.PENDING, MigrationState.HELD_BACK):
        return report.state.value.replace("_", " ") + held_back
    if report.state is MigrationState.RUNNING:
        return "dry run"
    return {MigrationState.COMPLETED: "dry run, nothing saved",
            MigrationState.FAILED: "dry run: some would fail"}.get(report.state, f"dry run {report.state.value}")


class ConsoleProgress(RunObserver):
    """Progress of a run on ``stream`` (stdout by default).

    Args:
        stream: where to write.
        fancy: rich progress bars (True), plain lines (False), or decide by ``stream.isatty()``.
        interval: seconds between plain progress lines.
    """

    def __init__(self, stream: IO[str] | None = None, *, fancy: bool | None = None,
                 interval: float = LOG_INTERVAL, dry_run: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.dry_run = dry_run
        """The run saves nothing: say what it would do."""
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
            names = ", ".join(shown(r.name) for r in reports)
            self._say(f"run started: {len(reports)} migration(s): {names}")
            return
        self._start_bars(reports)

    def migration_started(self, report: MigrationReport) -> None:
        if not self.fancy:
            total = f", {report.total:,} records" if report.total is not None else ""
            started = "dry run started, saving nothing" if self.dry_run else "started"
            self._say(f"{shown(report.name)}: {started} ({shown(report.source)} -> {shown(report.dest)}{total})")
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
            self._say(progress_line(report, self.dry_run))

    def migration_finished(self, report: MigrationReport) -> None:
        if self.fancy:
            self._update(report)
        else:
            self._say(finished_line(report, self.dry_run))

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
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[count]}"),
            TextColumn("[green]{task.fields[ok]} ok[/]  [red]{task.fields[bad]} "
                       + ("would fail" if self.dry_run else "failed") + "[/]"),
            TextColumn("{task.fields[rate]}  ETA {task.fields[eta]}"),
            TextColumn("[dim]{task.fields[state]}[/]"),
            console=console,
            refresh_per_second=4,
        )
        self._tasks = {}
        self._started = set()
        width = max((len(shown(r.name)) for r in reports), default=0)
        for report in reports:
            self._tasks[report.identity] = self._progress.add_task(
                shown(report.name).ljust(width), total=report.total, start=False, **self._fields(report)
            )
        self._progress.start()

    def _fields(self, report: MigrationReport) -> dict[str, Any]:
        return {
            "count": format_count(report),
            "ok": f"{report.succeeded:,}",
            "bad": f"{report.failed:,}",
            "rate": f"{report.rate:,.0f}/s",
            "eta": format_duration(report.eta),
            "state": state_text(report, self.dry_run),
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


class RetryLines(RunObserver):
    """Says, between two attempts of a run, how the last one ended and when the next starts."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo

    def retrying(self, result: RunResult, max_tries: int, delay: float) -> None:
        self.echo(result.summary())
        self.echo(f"attempt {result.attempts} of {max_tries} did not complete; trying again in {delay:g} s "
                  "(Ctrl-C to stop)")


# --- tables for the other commands ---------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned table (numbers right-aligned), as ``ferryman failed list`` prints;
    every cell is :func:`shown`."""
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
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"  # counts; ids reach a table as text (format_id), never cut up so
    return shown(value)


_FAILED_HEADERS = ("ID", "MIGRATION", "ACTION", "DESCRIPTION", "CAUSE")
_NARROWEST_CAUSE = 24
_NARROWEST_DESCRIPTION = 16


def format_failed(rows: Sequence[FailedRow], width: int | None = None) -> str:
    """``ferryman failed list`` output: id, migration, action, description, cause.

    The cause is the most telling line of the stored one (the driver's message first). With a
    ``width`` (the terminal's), descriptions and causes are cut at their end to fit it; without,
    they are shown whole.
    """
    if not rows:
        return "no failed records"
    table = [[shown(format_id(r.record.id)), shown(r.name), r.record.action.value, shown(r.record.description),
              shown(r.cause)] for r in rows]
    if width is not None:
        _fit(table, width)
    ignored = sum(1 for r in rows if r.record.action is Action.IGNORE)
    footer = f"{len(rows)} failed record(s), {ignored} marked IGNORE"
    return format_table(_FAILED_HEADERS, table) + "\n" + footer


def _fit(table: list[list[str]], width: int) -> None:
    """Cut the description and cause columns (the last two) so that each line fits ``width``."""
    fixed = sum(max(len(h), *(len(r[i]) for r in table)) + 2 for i, h in enumerate(_FAILED_HEADERS[:3]))
    room = max(width - fixed - 2, _NARROWEST_DESCRIPTION + _NARROWEST_CAUSE)
    widest_description = max(len(_FAILED_HEADERS[3]), *(len(r[3]) for r in table))
    description = min(widest_description, max(_NARROWEST_DESCRIPTION, room // 3))
    cause = max(room - description, _NARROWEST_CAUSE)
    for row in table:
        row[3], row[4] = clip(row[3], description), clip(row[4], cause)


def clip(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut at the end: the most telling part comes first."""
    return text if len(text) <= width else text[:width - 1] + "…"


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


_PARTITION_COLUMNS = [
    ("MIGRATION", ("migration",)),
    ("PART", ("index",)),
    ("AFTER", ("after",)),
    ("UPTO", ("upto",)),
    ("STATE", ("state",)),
    ("TRIES", ("attempts",)),
    ("READ", ("read",)),
    ("WRITTEN", ("written",)),
    ("FAILED", ("failed",)),
    ("RATE/S", ("rate",)),
    ("HOLDER", ("holder",)),
]
"""The partitions table of a run with workers: the key range ``(AFTER, UPTO]`` of each."""


def _columns_table(columns: Sequence[tuple[str, tuple[str, ...]]], rows: Sequence[dict[str, Any]]) -> str:
    """A table of ``rows`` in the ``columns`` (header, keys that may hold the value) some row has."""
    shown_columns = [(h, keys) for h, keys in columns if any(k in r for r in rows for k in keys)]
    table = [[next((r[k] for k in keys if k in r), None) for _, keys in shown_columns] for r in rows]
    return format_table([h for h, _ in shown_columns], table)


def _range_end(value: Any) -> str | None:
    """A range's end as ``failed list`` shows ids (a composite key comes as a JSON list); None
    for an open end (the first range starts, and the last ends, with the source)."""
    if value is None:
        return None
    return shown(format_id(tuple(value) if isinstance(value, list) else value))


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
    lines = []
    result = snapshot.get("result")
    if isinstance(result, dict):
        err = result.get("last_err")
        err_text = cause_summary(err if isinstance(err, str) else json.dumps(err)) if err else "-"
        lines.append(
            f"status: {shown(result.get('status', '-'))}   step: {shown(result.get('step') or '-')}   "
            f"tries: {shown(result.get('try_count', '-'))}   last error: {shown(err_text)}"
        )
    progress = snapshot.get("progress")
    rows = _migration_rows(progress)
    if rows:
        lines.append(_columns_table(_STATUS_COLUMNS, rows))
    partitions = progress.get("partitions") if isinstance(progress, dict) else None
    if isinstance(partitions, list) and partitions:
        lines.append(_columns_table(_PARTITION_COLUMNS, [
            {**p, "after": _range_end(p.get("after")), "upto": _range_end(p.get("upto"))}
            for p in partitions if isinstance(p, dict)]))
    if not lines:
        lines.append("no status to show")
    verification = snapshot.get("verification")
    if isinstance(verification, dict) and verification.get("ok") is not None:
        lines.extend(verification_lines(verification))
    return "\n".join(lines)


def verification_lines(verification: dict[str, Any]) -> list[str]:
    """The newest verification, as ``ferryman status`` shows it: a line, then one per
    migration that did not pass, with its first problems."""
    sample = verification.get("sample")
    scope = "all succeeded records" if sample is None else f"sample {sample:,} per migration"
    finished = verification.get("finished_at", "-")
    lines = [f"verification: {shown(verification.get('status'))} ({scope}, {shown(finished)})"]
    for m in verification.get("migrations") or []:
        if not isinstance(m, dict):
            continue
        if m.get("verified_at", finished) != finished:
            lines.append(f"  {shown(m.get('name'))}: {'passed' if m.get('ok') else 'failed'} in an earlier "
                         f"verification ({shown(m.get('verified_at'))})")
        if m.get("ok"):
            continue
        failed = [name for name, check in (m.get("checks") or {}).items()
                  if isinstance(check, dict) and not check.get("ok")]
        lines.append(f"  {shown(m.get('name'))}: failed {', '.join(failed)}")
        for problem in (m.get("problems") or [])[:5]:
            pid = problem.get("id")
            pid = tuple(pid) if isinstance(pid, list) else pid
            where = f" record {shown(format_id(pid))}" if pid is not None else ""
            lines.append(f"    {shown(problem.get('check'))}{where}: {shown(problem.get('detail'))}")
    return lines
