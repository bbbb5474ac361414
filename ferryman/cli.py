"""The ``ferryman`` command: a thin click shell over :mod:`ferryman.commands`.

Each command parses its arguments, calls one function of ``commands``, and prints the result.
Errors become one line on stderr, ``ferryman: error: <message>``, and a non-zero exit
(``--debug`` prints the traceback instead): the error's own ``exit_code``
(:mod:`ferryman.errors`): 2 when nothing was done (usage, a missing or malformed file, an
unknown migration or id, definition, plan or connection errors before any work, a progress in
use), 1 otherwise. ``ferryman run`` exits 0 when every selected migration completed, 1 when
records failed or migrations were held back, 130 when interrupted. A reader that goes away
(``| head -1``) changes neither: the rest of the output is dropped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import __version__, commands, console, ledger_commands
from .deadline import parse_duration
from .declare import check_max_failures
from .defaults import DEFAULT_VERIFY_SAMPLE
from .errors import DRIVER_MODULES, FerrymanError, InputError, StopRequested, one_line
from .ids import parse_id
from .launchers import ExternalWorkers, WorkerLauncher
from .progress.files import DEFAULT_PROGRESS
from .progress.model import Action
from .ray import RayLauncher
from .report import RunResult
from .server.address import DEFAULT_HOST, DEFAULT_PORT
from .service import DEFAULT_RETRY_DELAY
from .signals import STOP_SIGNALS

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# --- errors, logging, shared options -------------------------------------------------------------


EXIT_CODE = "ferryman.exit_code"
"""``ctx.meta`` key: the exit code a command has earned before it prints its last output, kept
when its reader goes away meanwhile."""


_MISSING_FILE = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
"""Errors of the system that name a path the user gave wrong: nothing was done."""


def exit_code_for(exc: BaseException) -> int:
    """The error's own exit code (:class:`~ferryman.errors.FerrymanError`); 2 for a path
    given wrong, else 1."""
    if isinstance(exc, FerrymanError | StopRequested):
        return exc.exit_code
    return 2 if isinstance(exc, _MISSING_FILE) else 1


def echo(text: str) -> None:
    """Print a line of text made of data: secrets masked, control characters escaped."""
    click.echo(console.shown_lines(text))


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (click's test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"ferryman: {record.levelname.lower()}: {console.shown(record.getMessage())}\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001  # pragma: no cover - logging must never break a run
            self.handleError(record)


def setup_logging(verbose: bool) -> None:
    """ferryman's messages on stderr, one line each (also what a worker in a Ray task logs)."""
    logger = logging.getLogger("ferryman")
    for handler in list(logger.handlers):
        if isinstance(handler, _StderrHandler):
            logger.removeHandler(handler)
    logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta["ferryman.debug"] = True


debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
    help="On an error, print the full traceback instead of one line.",
)


VERBOSE_HELP = "Log each page, retry, batch split and checkpoint (INFO level) on stderr."


def _set_verbose(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        setup_logging(True)


verbose_option = click.option(
    "-v", "--verbose", is_flag=True, expose_value=False, callback=_set_verbose,
    help=VERBOSE_HELP,
)
"""``-v`` after the command too (``ferryman run t.py -v``), where people type it."""


def progress_option(required: bool, help: str) -> Callable[[F], F]:
    return click.option(
        "--progress", "progress", metavar="PATH|URL", required=required,
        type=click.Path(dir_okay=False), help=help,
    )


LEDGER_HELP = ("Progress ledger: *.json = mjg JSON file, postgresql://USER@HOST/DB?schema=S = "
               "PostgreSQL ledger, else SQLite.")


def _expected(exc: BaseException) -> bool:
    """Errors that explain themselves: ferryman's own, files, databases, drivers. Anything else
    escaping a command is a bug of ferryman (or of the TARGET's code) and gets the hint."""
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, (FerrymanError, OSError, SQLAlchemyError)):
        return True
    return type(exc).__module__.split(".")[0] in DRIVER_MODULES


class FerrymanGroup(click.Group):
    """A click group that turns every error into one line and the right exit code: the one
    place where errors meet the terminal."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"ferryman: error: {console.shown(exc.format_message())}{where}", err=True)
            ctx.exit(exc.exit_code)
        except (click.ClickException, click.Abort):
            raise
        except (KeyboardInterrupt, StopRequested):
            _Interrupt.seen = True
            click.echo("ferryman: interrupted", err=True)
            ctx.exit(StopRequested.exit_code)
        except BrokenPipeError:  # the reader of stdout went away (`| head -1`): not an error
            console.discard_output(sys.stdout)
            ctx.exit(ctx.meta.get(EXIT_CODE, 0))
        except Exception as exc:  # noqa: BLE001  # the one place where every error meets the terminal
            if ctx.meta.get("ferryman.debug") or os.environ.get("FERRYMAN_DEBUG"):
                text = "".join(traceback.format_exception(exc)).rstrip()
                click.echo(console.shown_lines(text), err=True)
            else:
                hint = "" if _expected(exc) else " (a bug? --debug shows the traceback)"
                click.echo(f"ferryman: error: {console.shown(one_line(exc))}{hint}", err=True)
            ctx.exit(exit_code_for(exc))


@click.group(cls=FerrymanGroup, context_settings=CONTEXT)
@debug_option
@click.option("-v", "--verbose", is_flag=True, help=VERBOSE_HELP)
@click.version_option(__version__, prog_name="ferryman")
def cli(verbose: bool) -> None:
    """ferryman: move records between datastores without losing or duplicating any.

    A TARGET is a Python file (path/to/migrations.py) or an importable module
    (pkg.migrations) defining module-level `stores` and `migrations`, or a `service`.

    \b
    Start with the demo:
      ferryman demo
    """
    setup_logging(verbose)


# --- demo -------------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT, short_help="Run a real migration on sample data, with the dashboard.")
@click.option("--rows", type=click.IntRange(min=100), default=300_000, show_default=True,
              help="Orders to generate (customers and products scale with it).")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="ferryman-demo",
              show_default=True, help="Where the sample databases and progress go (reused if there).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port of the live dashboard (on 127.0.0.1).")
@click.option("--no-serve", is_flag=True, help="Run the migrations without the dashboard, then exit.")
@verbose_option
@debug_option
def demo(rows: int, directory: str, port: int, no_serve: bool) -> None:
    """Run a real migration on sample SQLite data, with the live dashboard.

    Creates a source database (customers, products, orders) and a destination in --dir,
    runs the example migrations with a progress ledger, serves the dashboard, and tells
    you what to try next. A few records fail on purpose.

    \b
    Examples:
      ferryman demo
      ferryman demo --rows 20000 --dir /tmp/demo --no-serve
    """
    from .demo import run_demo

    code = run_demo(rows=rows, directory=directory, port=None if no_serve else port, echo=click.echo)
    click.get_current_context().exit(code)


# --- run and plan -------------------------------------------------------------------------------


def _budget(text: str | None) -> int | float | None:
    """``--max-failures``: a count, a ratio or ``inf``."""
    if text is None:
        return None
    try:
        value: int | float = math.inf if text.strip().lower() == "inf" else (
            float(text) if any(c in text for c in ".eE") else int(text))
        return check_max_failures(value)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give a count (e.g. 100), a ratio between 0 and 1 (e.g. 0.05) or 'inf'",
            param_hint="--max-failures") from None


def _duration(text: str | None, option: str) -> float | None:
    """A DURATION option (``90s``, ``10m``, ``2h``) in seconds."""
    if text is None:
        return None
    try:
        return parse_duration(text, option)
    except InputError as exc:
        raise click.BadParameter(str(exc).removeprefix(f"{option}: "), param_hint=option) from None


@cli.command(context_settings=CONTEXT, short_help="Run the migrations of TARGET (resumes).")
@click.argument("target")
@progress_option(False, f"{LEDGER_HELP} Default: {DEFAULT_PROGRESS} in the working directory, "
                        "or the service's own ledger when it has one.")
@click.option("--only", multiple=True, metavar="NAME", help="Run only this migration (name or identity); repeatable.")
@click.option("--serve", metavar="HOST:PORT",
              help="Serve the status API and dashboard during the run, e.g. 127.0.0.1:8765.")
@click.option("--linger", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="With --serve: keep serving the final status this long after the run (Ctrl-C "
                   f"ends it sooner; 0: stop at once). Default {commands.DEFAULT_LINGER:g}.")
@click.option("--max-tries", type=click.IntRange(min=1), default=commands.DEFAULT_MAX_TRIES, show_default=True,
              help="Attempts in all: a run that ends with failures is started again after --retry-delay.")
@click.option("--retry-delay", type=click.FloatRange(min=0, max=threading.TIMEOUT_MAX),
              default=DEFAULT_RETRY_DELAY,
              show_default=True, metavar="SECONDS", help="Pause between two attempts.")
@click.option("--dry-run", is_flag=True, help="Read and transform, but save nothing and write no progress.")
@click.option("--max-failures", metavar="N|RATIO", callback=lambda _c, _p, v: _budget(v),
              help="Stop a migration once more than N of its records failed in this run (or more than "
                   "RATIO, e.g. 0.05, of those attempted); 'inf' never stops. Overrides the migrations' "
                   "own max_failures. Default: each migration's, else stop when its first 1,000 all fail.")
@click.option("--timeout", metavar="DURATION", callback=lambda _c, _p, v: _duration(v, "--timeout"),
              help="Stop at the next batch once the run has taken this long (e.g. 90s, 10m, 2h, "
                   "1h30m), attempts included: it ends failed (exit 1), the progress saved; the next "
                   "run resumes.")
@click.option("--events", metavar="FILE", type=click.Path(dir_okay=False),
              help="Append one JSON line per status change (run and migration started, completed, "
                   "failed, held back, retried, stopped) to FILE; the ledger keeps them either way "
                   "(GET /migrate/events).")
@click.option("--notify", multiple=True, metavar="URL",
              help="POST JSON to URL when the run starts, each migration ends, the run ends and on "
                   "fatal errors (a Slack incoming-webhook URL works as is); repeatable. Never fails "
                   "nor blocks the run: what could not be delivered is listed at the end.")
@click.option("--verify-sample", type=click.IntRange(min=1), default=None, metavar="N",
              help="Once the run completed, verify it (as `ferryman verify --sample N`): exit 0 only "
                   "when the verification passed too.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Run each migration that allows it in key-range partitions, N worker processes at once.")
@click.option("--engine", type=click.Choice(["process", "ray", "external"]), default="process", show_default=True,
              help="Where --workers run: processes of this host; Ray tasks (needs ferryman[ray]; with an SQLite "
                   "ledger the nodes must share its file system); or `ferryman worker` processes started "
                   "elsewhere, which the run waits for (needs a PostgreSQL --progress to span hosts).")
@click.option("--address", metavar="ADDR",
              help="With --engine ray: the Ray cluster ('auto': the one this node belongs to). Default: "
                   "RAY_ADDRESS, else a local Ray started for this run.")
@click.option("--bar/--no-bar", "bar", default=None,
              help="Progress bars (default: only when stdout is a terminal) or plain log lines.")
@verbose_option
@debug_option
def run(target: str, progress: str | None, only: tuple[str, ...], serve: str | None,
        linger: float | None, max_tries: int, retry_delay: float, dry_run: bool,
        max_failures: float | None, timeout: float | None, events: str | None, notify: tuple[str, ...],
        verify_sample: int | None, workers: int, engine: str, address: str | None, bar: bool | None) -> None:
    """Run the migrations of TARGET, resuming where the progress ledger left off.

    Exit codes: 0 every selected migration completed; 1 records failed, migrations
    were held back or the run timed out (the progress is saved: fix, then run again);
    2 usage, definition, plan or connection error before any work; 130 interrupted
    (Ctrl-C / SIGTERM; the progress is saved). With --serve, the server keeps serving the final status for
    --linger seconds after the run; Ctrl-C then ends the linger, not the exit code.

    \b
    Examples:
      ferryman run migrations.py
      ferryman run pkg.migrations --progress progress.db --only order_lines
      ferryman run migrations.py --serve 127.0.0.1:8765 --max-tries 3 --retry-delay 60
      ferryman run migrations.py --timeout 2h --verify-sample 1000 --events events.jsonl
      ferryman run migrations.py --notify https://hooks.slack.com/services/T000/B000/XXXX
      ferryman run migrations.py --workers 4
      ferryman run migrations.py --workers 8 --engine ray --address auto
      ferryman run migrations.py --dry-run
    """
    if linger is not None and serve is None:
        raise click.UsageError("--linger is for --serve: it keeps the status server up after the run")
    launcher = _launcher(engine, address, workers)
    out = console.PipeSafeStream(sys.stdout)  # the run goes on to its end if the reader goes away

    def say(text: str) -> None:
        click.echo(console.shown_lines(text), file=out)  # type: ignore[arg-type]  # a text stream

    display = console.ConsoleProgress(out, fancy=bar, dry_run=dry_run)  # type: ignore[arg-type]
    ctx = click.get_current_context()

    def finished(result: RunResult) -> None:
        display.close()
        ctx.meta[EXIT_CODE] = result.exit_code
        say(result.summary())
        if result.attempts > 1:
            say(f"attempts: {result.attempts} of {max_tries}")
        if result.exit_code == 1 and not dry_run:
            records_failed = any(r.failed for r in result.reports)
            if records_failed or any(r.fatal_error for r in result.reports):
                say(console.next_steps_after_failures(target, progress or DEFAULT_PROGRESS, records_failed,
                                                      _worker_options(workers, engine, address)))

    try:
        result = commands.run(
            target, progress=progress, only=list(only) or None, serve=serve, max_tries=max_tries,
            retry_delay=retry_delay, dry_run=dry_run, max_failures=max_failures, timeout=timeout,
            events=events, notify=list(notify), verify_sample=verify_sample, workers=workers, launcher=launcher,
            observers=[display], echo=say, linger=commands.DEFAULT_LINGER if linger is None else linger,
            on_finished=finished,
        )
    finally:
        display.close()
    ctx.exit(result.exit_code)


def _worker_options(workers: int, engine: str, address: str | None) -> list[str]:
    """The options of a run with workers, as the next run is given them again."""
    if workers == 1:
        return []
    options = ["--workers", str(workers)]
    if engine != "process":
        options += ["--engine", engine]
    if address is not None:
        options += ["--address", address]
    return options


def _launcher(engine: str, address: str | None, workers: int) -> WorkerLauncher | None:
    """The launcher of ``--engine`` (None: processes of this host); Ray is connected to (or
    started) here, before anything runs, and only when it will run workers."""
    if engine != "ray" and address is not None:
        raise click.UsageError("--address is for --engine ray: the Ray cluster the workers run on")
    if engine == "process":
        return None
    if workers == 1:
        raise click.UsageError(f"--engine {engine} runs the workers of --workers N: give N above 1")
    return RayLauncher(address) if engine == "ray" else ExternalWorkers()


@cli.command(context_settings=CONTEXT, short_help="Run partitions of a run with --workers.")
@click.argument("target")
@progress_option(required=True, help="The progress ledger of the run with --workers.")
@click.option("--migration", metavar="NAME",
              help="Only the partitions of this migration (its name, identity or key in the ledger), then end. "
                   "Default: those of every migration the run splits, until the run is over.")
@click.option("--wait", type=click.FloatRange(min=0), default=0, show_default=True, metavar="SECONDS",
              help="How long to wait for the run to start (its ledger to appear, and without --migration "
                   "its coordinator): for a worker started beside it.")
def worker(target: str, progress: str, migration: str | None, wait: float) -> None:
    """Run partitions of a run of TARGET with --workers, until none is left for this worker.

    `ferryman run --workers N` starts its workers with this command. More can join from any
    host that reaches the progress ledger (a PostgreSQL ledger: any host; an SQLite one: this
    host): each imports TARGET itself, claims a partition no live worker holds, runs it, takes
    the next. With `ferryman run --workers N --engine external`, the run starts none and waits
    for workers started elsewhere (a Kubernetes Job, say).

    \b
    Example (one per machine or pod, as many as wanted):
      ferryman worker migrations.py --progress 'postgresql://ferry@db/ops?schema=ferryman' --wait 300

    Exit codes: 0 no partition left for it; 1 it lost a partition's lease (another worker took
    it over) or could not write its ledger; 130 interrupted.
    """
    result = commands.work(target, progress=progress, migration=migration, wait=wait)
    if result.ledger_error:  # its partition goes to another worker, or to the next run
        click.echo(f"ferryman: error: {console.shown(result.ledger_error.splitlines()[0])}", err=True)
    click.get_current_context().exit(result.exit_code)


@cli.command(context_settings=CONTEXT, short_help="Show the run order of TARGET, and why.")
@click.argument("target")
@debug_option
def plan(target: str) -> None:
    """Show the order the migrations of TARGET run in, and why.

    \b
    Example:
      ferryman plan migrations.py
    """
    lines, problems = commands.plan(target)
    for line in lines:
        if line not in problems:
            echo(line)
    for problem in problems:  # a run would stop before any work: say it as an error does
        click.echo(f"ferryman: error: {console.shown(problem)}", err=True)
    if problems:
        click.get_current_context().exit(2)


@cli.command(context_settings=CONTEXT, short_help="Forget a migration's progress so it runs again.")
@click.argument("target")
@click.option("--migration", "migrations", multiple=True, required=True, metavar="NAME",
              help="The migration to reset (name or identity); repeatable.")
@click.option("--with-dependants", is_flag=True,
              help="Also reset every migration that reads, directly or not, what it writes.")
@click.option("--forget-other-ledgers", is_flag=True,
              help="Also forget the marks other progress ledgers left on the destinations, to start over "
                   "with this ledger on purpose (it is created if missing).")
@progress_option(False, f"{LEDGER_HELP} Default: the one `ferryman run TARGET` uses.")
@debug_option
def reset(target: str, migrations: tuple[str, ...], with_dependants: bool, forget_other_ledgers: bool,
          progress: str | None) -> None:
    """Forget the progress of a migration of TARGET, so the next run migrates it from the start.

    Its failed records go too, with their IGNORE and RETRY marks: an ignored record is tried
    again. Its destination still holds what it wrote: empty it first, or let it upsert
    (on_conflict='update'). Refused while a run holds the progress ledger, and when there is no ledger.

    \b
    Example:
      ferryman reset migrations.py --migration revenue --with-dependants
      ferryman run migrations.py
    """
    for line in commands.reset(target, list(migrations), progress=progress, with_dependants=with_dependants,
                               forget_other_ledgers=forget_other_ledgers):
        click.echo(line)


@cli.command(context_settings=CONTEXT, short_help="Check the destinations hold what the progress says.")
@click.argument("target")
@progress_option(False, f"{LEDGER_HELP} Default: the one `ferryman run TARGET` uses.")
@click.option("--sample", type=click.IntRange(min=1), default=None, metavar="N",
              help=f"Replay N succeeded records per migration, chosen at random (default {DEFAULT_VERIFY_SAMPLE:,}).")
@click.option("--all", "all_", is_flag=True, help="Replay every succeeded record (slower; memory stays bounded).")
@click.option("--only", multiple=True, metavar="NAME",
              help="Verify only this migration (name or identity); repeatable.")
@click.option("--seed", type=int, default=None, help="Seed of the random sample (the same seed, the same sample).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@debug_option
def verify(target: str, progress: str | None, sample: int | None, all_: bool, only: tuple[str, ...],
           seed: int | None, as_json: bool) -> None:
    """Check that the destinations hold what the progress says was migrated.

    For each migration: the source's count must equal succeeded + failed + ignored; a random
    sample (or --all) of succeeded records is read again, matched and transformed (read-only:
    nothing is saved), and each output is looked up under its key and compared field by field
    (missing, duplicated, different, type drift such as a float stored as float4, a Decimal
    back as float, a timestamp that lost its zone); then the migration's own verify hook.
    Never writes to a destination. The result is kept in the progress ledger (ferryman status,
    GET /migrate/verify, metrics).

    Exit codes: 0 every check passed; 1 a check failed; 2 nothing was checked (usage, no
    ledger, a store that cannot be read, a run holding the ledger).

    \b
    Examples:
      ferryman verify migrations.py --progress progress.db
      ferryman verify migrations.py --progress progress.db --all --only order_lines
      ferryman verify migrations.py --sample 10000 --seed 7 --json
    """
    if all_ and sample is not None:
        raise click.UsageError("--sample and --all do not go together: --all replays every record")
    result = commands.verify(target, progress=progress, only=list(only) or None, seed=seed,
                             sample=None if all_ else (sample or DEFAULT_VERIFY_SAMPLE))
    ctx = click.get_current_context()
    ctx.meta[EXIT_CODE] = result.exit_code
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        echo(result.summary())
    ctx.exit(result.exit_code)


# --- serve and status --------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT, short_help="Serve the status API and dashboard for a ledger.")
@progress_option(True, f"{LEDGER_HELP} It may not exist yet: the server waits for the first run.")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--allow-actions", is_flag=True,
              help="Let the dashboard mark failed records IGNORE or RETRY, with the server's token.")
@click.option("--token", envvar="FERRYMAN_TOKEN", metavar="TOKEN",
              help="With --allow-actions: the token actions need (at least 16 characters; also "
                   "FERRYMAN_TOKEN). Default: a random one, printed at start.")
@debug_option
def serve(progress: str, host: str, port: int, allow_actions: bool, token: str | None) -> None:
    """Serve the status API and dashboard for a progress ledger, across runs, until Ctrl-C.

    Read-only unless --allow-actions: then the dashboard can mark failed records IGNORE or
    RETRY (not while a run holds the ledger), each request carrying the token in the
    X-Ferryman-Token header.

    \b
    Example:
      ferryman serve --progress progress.db --port 8765
      curl http://127.0.0.1:8765/migrate/result
      ferryman serve --progress progress.db --allow-actions
    """
    if not allow_actions and token is not None:
        source = click.get_current_context().get_parameter_source("token")
        if source is not click.core.ParameterSource.ENVIRONMENT:  # FERRYMAN_TOKEN alone is harmless
            raise click.UsageError("--token is for --allow-actions: a read-only server needs no token")
        token = None
    ledger_commands.serve(progress, host, port, echo=echo, allow_actions=allow_actions, token=token)


@cli.command(context_settings=CONTEXT, short_help="Show where a migration stands.")
@progress_option(False, LEDGER_HELP)
@click.option("--url", metavar="URL", help="A running status server, e.g. http://127.0.0.1:8765.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@debug_option
def status(progress: str | None, url: str | None, as_json: bool) -> None:
    """Show where a migration stands, from a progress ledger or a status server.

    \b
    Examples:
      ferryman status --progress progress.db
      ferryman status --url http://127.0.0.1:8765
    """
    snapshot = ledger_commands.status(progress=progress, url=url)
    click.echo(json.dumps(snapshot, indent=2, default=str) if as_json else console.format_status(snapshot))
    hint = None if as_json or progress is None else console.next_step_after_status(snapshot, progress)
    if hint is not None:
        echo(hint)
    # --json escapes every control and non-ASCII character (ensure_ascii): the text stays exact


# --- failed records ----------------------------------------------------------------------------------


@cli.group(context_settings=CONTEXT, short_help="List failed records; mark them IGNORE or RETRY.")
def failed() -> None:
    """List failed records, and mark them IGNORE or RETRY for the next run.

    \b
    Examples:
      ferryman failed list --progress progress.db
      ferryman failed ignore --progress progress.db --migration order_lines 17 42
      ferryman failed retry --progress progress.db --all
    """


def _selection_options(f: F) -> F:
    f = click.option("--grep", metavar="TEXT",
                     help="Only records whose description or cause contains TEXT (any case).")(f)
    f = click.option("--migration", metavar="NAME", help="Only this migration (name or identity).")(f)
    return progress_option(True, LEDGER_HELP)(f)


@failed.command("list", context_settings=CONTEXT)
@_selection_options
@click.option("--wide", is_flag=True, help="Show descriptions and causes whole, however wide the terminal.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON array, an object per record, with the whole stored cause.")
@debug_option
def failed_list(progress: str, migration: str | None, grep: str | None, wide: bool, as_json: bool) -> None:
    """List failed records: id, migration, action, description, cause.

    The cause is the most telling line of the stored one: the database driver's message when
    a database refused the record (e.g. 'null value in column "email" ... violates not-null
    constraint'), else the exception. On a terminal, long descriptions and causes are cut to
    its width; --wide shows them whole, --json shows everything.

    \b
    Examples:
      ferryman failed list --progress progress.db
      ferryman failed list --progress progress.json --migration order_lines --grep quantity
      ferryman failed list --progress progress.db --json
    """
    if wide and as_json:
        raise click.UsageError("--wide and --json do not go together: --json shows everything")
    rows = ledger_commands.failed_list(progress, migration=migration, grep=grep)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2, default=str))
    else:
        click.echo(console.format_failed(rows, width=None if wide else _terminal_width()))


def _terminal_width() -> int | None:
    """The terminal's width when stdout is one (or $COLUMNS is set); None for a pipe or a file,
    where a line is never cut."""
    if "COLUMNS" not in os.environ and not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def _set_action(action: Action) -> Callable[..., None]:
    verb = "ignored" if action is Action.IGNORE else "marked for retry"

    def command(progress: str, migration: str | None, grep: str | None, all_: bool, ids: tuple[str, ...]) -> None:
        changed = ledger_commands.failed_set_action(
            progress, action, ids=[parse_id(i) for i in ids], all=all_, grep=grep, migration=migration,
        )
        total = sum(changed.values())
        detail = ", ".join(f"{name} {n}" for name, n in changed.items() if n)
        echo(f"{verb} {total} failed record(s)" + (f" ({detail})" if detail else "")
             + ("" if total else f"; none changed (already {action.value}, or none selected)"))

    return command


_SET_HELP = """{doc}

Choose records by ID (ints as ints, other text as strings, composite ids as JSON arrays
such as '[1,"a"]'; put `--` before ids starting with '-'), or --all, or --grep TEXT.
An id that failed in several migrations needs --migration. Refused while a run holds the
progress (whatever its kind).

\b
Examples:
  ferryman failed {verb} --progress progress.db --migration order_lines 17 42
  ferryman failed {verb} --progress progress.db --grep "negative quantity"
  ferryman failed {verb} --progress progress.json --all
"""

for _action, _verb, _doc in (
    (Action.IGNORE, "ignore", "Mark failed records IGNORE: the next runs leave them alone."),
    (Action.RETRY, "retry", "Mark failed records RETRY: the next run tries them again first."),
):
    _cmd = _set_action(_action)
    _cmd = click.argument("ids", nargs=-1, metavar="[ID]...")(_cmd)
    _cmd = click.option("--all", "all_", is_flag=True, help="Every failed record (of --migration, if given).")(_cmd)
    _cmd = _selection_options(_cmd)
    _cmd = debug_option(_cmd)
    failed.command(_verb, context_settings=CONTEXT, help=_SET_HELP.format(doc=_doc, verb=_verb))(_cmd)


# --- progress export / import -------------------------------------------------------------------------


@cli.group("progress", context_settings=CONTEXT, short_help="Export or import a ledger as mjg JSON.")
def progress_group() -> None:
    """Move a progress ledger to and from mjg's JSON format.

    \b
    Examples:
      ferryman progress export --progress progress.db --out progress.json
      ferryman progress import --progress progress.db progress.json
    """


@progress_group.command("export", context_settings=CONTEXT)
@progress_option(True, LEDGER_HELP)
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="FILE.json",
              help="Where to write the mjg JSON (replaced atomically).")
@debug_option
def progress_export(progress: str, out: str) -> None:
    """Write a progress ledger as mjg JSON (readable by Java mjg).

    \b
    Example:
      ferryman progress export --progress progress.db --out progress.json
    """
    counts = ledger_commands.progress_export(progress, out)
    echo(f"exported {counts} to {out}")


@progress_group.command("import", context_settings=CONTEXT)
@progress_option(True, "The SQLite ledger to replace (created if missing).")
@click.argument("file", type=click.Path(dir_okay=False), metavar="FILE.json")
@debug_option
def progress_import(progress: str, file: str) -> None:
    """Replace an SQLite ledger's content with mjg JSON (e.g. from Java mjg).

    \b
    Example:
      ferryman progress import --progress progress.db progress.json
    """
    counts = ledger_commands.progress_import(progress, file)
    echo(f"imported {counts} into {progress}")


class _Interrupt:
    """Whether the process is already on its way out because of a signal or Ctrl-C."""

    seen = False


def _interrupt(signum: int, _frame: Any) -> None:
    """Outside a run (which stops gently on its own), a stop signal is Ctrl-C; once the
    process is on its way out, more signals change nothing: one line, exit 130."""
    if _Interrupt.seen:
        return
    _Interrupt.seen = True
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> None:
    """The console script ``ferryman`` (and ``python -m ferryman``).

    A stop signal at any moment ends the process with one line and exit code 130, however
    many arrive and wherever they land (a run saves its progress first).
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    try:
        cli.main(args=argv, prog_name="ferryman")
    except (KeyboardInterrupt, StopRequested):
        _Interrupt.seen = True
        click.echo("ferryman: interrupted", err=True)
        sys.exit(StopRequested.exit_code)
    finally:  # the interpreter's shutdown would restore the default handlers, which kill
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":  # pragma: no cover
    main()
