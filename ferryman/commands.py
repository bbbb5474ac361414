"""The verbs behind the ``ferryman`` CLI, as plain functions usable (and tested) from Python.

``cli.py`` only parses arguments, calls one of these, and prints what it returns. Each function
either does its whole job or raises before changing anything on disk: a :class:`CommandError`
(one line, with the exit code the CLI should use), a :class:`~ferryman.target.TargetError`, or
another :class:`~ferryman.errors.FerrymanError`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import threading
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .console import CONTROL_CHARACTERS, printable
from .errors import FerrymanError, LedgerBusyError, MigrationDefinitionError, StoreError
from .events import RunObserver
from .progress.files import is_ledger_file, json_lease, load_json_progress, open_ledger
from .progress.ledger import Ledger, MemoryLedger
from .progress.model import Action, FailedRecord, MigrationProgress
from .progress.sqlite import LeaseFile, SqliteLedger
from .progress.storage import checked_path
from .redact import mask_secrets
from .report import RunResult
from .service import MigrationService
from .signals import STOP_SIGNALS, StopFlag, stop_on_signals
from .stores.base import JournalEntry, Store
from .target import Target, TargetError, load_target
from .types import Filter, Record, RecordId

DEFAULT_PROGRESS = "ferryman-progress.db"
"""The progress ledger ``ferryman run`` uses when no ``--progress`` is given (in the cwd)."""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
"""Where ``ferryman serve`` and ``ferryman demo`` serve the status API and dashboard."""

DEFAULT_LINGER = 300.0
"""``ferryman run --serve``: seconds the server keeps serving the final status after the run."""

DEFAULT_MAX_TRIES = 1
DEFAULT_RETRY_DELAY = 30.0
"""``ferryman run --max-tries N --retry-delay S``: attempts in all, and the pause between them."""

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class CommandError(FerrymanError):
    """A command could not do its job; ``exit_code`` is what the CLI exits with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        self.exit_code = exit_code
        super().__init__(message)


# --- messages and ids -------------------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    """An error as one line of text, for ``ferryman: error: <line>`` (secrets masked)."""
    return mask_secrets(_one_line(exc))


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, MigrationDefinitionError):
        return f"migration {exc.cls_name} is invalid: " + "; ".join(exc.problems)
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"database error: {_join_lines(str(exc.orig))}"
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {_join_lines(str(exc).split('(Background on this error')[0])}"
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    text = _join_lines(str(exc))
    if not isinstance(exc, FerrymanError | OSError):
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text or type(exc).__name__


def _join_lines(text: str) -> str:
    lines = [line.strip().removeprefix("- ").strip() for line in text.strip().splitlines()]
    return "; ".join(line for line in lines if line).replace(":;", ":")


def parse_id(text: str) -> RecordId:
    """A record id typed on the command line: ``17`` -> 17, ``abc`` -> "abc",
    ``'"17"'`` -> "17", ``'[1,"a"]'`` -> (1, "a") (a composite id)."""
    try:
        value = json.loads(text)
    except ValueError:
        if text.lstrip().startswith("["):
            raise CommandError(f"bad composite id {text}: use a JSON array of ints and strings, e.g. "
                               f"'[1,\"a\"]' (or quote a string id as JSON: '\"[1\"')", 2) from None
        return text
    except RecursionError:
        raise CommandError("bad id: nested too deeply", 2) from None
    if isinstance(value, bool) or value is None or isinstance(value, float | dict):
        return text
    if isinstance(value, list):
        if not value or not all(isinstance(v, int | str) and not isinstance(v, bool) for v in value):
            raise CommandError(f"bad composite id {text}: use a JSON array of ints and strings, e.g. '[1,\"a\"]'", 2)
        return tuple(value)
    return value  # type: ignore[no-any-return]


def format_id(record_id: RecordId) -> str:
    """An id as typed on the command line (the inverse of :func:`parse_id`); a string id that
    holds control characters is written as a JSON string, whose escapes type back as the id."""
    if isinstance(record_id, tuple):
        return _json_text(list(record_id))
    if isinstance(record_id, str) and (_needs_quotes(record_id) or printable(record_id) != record_id):
        return _json_text(record_id)
    return str(record_id)


def _needs_quotes(text: str) -> bool:
    try:
        return parse_id(text) != text
    except CommandError:  # "[1," would be refused: quoted, it is a string
        return True


def _json_text(value: object) -> str:
    """JSON that keeps readable characters as they are and escapes the control ones."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return CONTROL_CHARACTERS.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s(?P<message>.*)|$)")
_MODULE_PATH = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*(?::|$))")

DRIVER_MODULES = frozenset({
    "psycopg", "psycopg2", "asyncpg", "pg8000", "pymysql", "MySQLdb", "mysql", "mariadb", "sqlite3",
    "oracledb", "cx_Oracle", "pyodbc", "pymssql", "pymongo", "bson",
})
"""Top-level modules of database drivers: their exception's message is the one that says what the
database refused (a column, a constraint), where the wrappers above it add context."""


def cause_summary(cause: str) -> str:
    """The line of a stored cause a person wants, not "Traceback (most recent call last):".

    For a Python traceback: the database driver's message when a driver raised in the chain
    (``null value in column "email" ... violates not-null constraint (NotNullViolation, in
    TerminalStoreError)``), else the outermost ``Type: message`` line. For anything else (a Java
    stack trace), the first line. Module paths of exception types are left out.
    """
    lines = [line for line in cause.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[-1].startswith("(this error failed a whole batch"):
        return f"{cause_summary(chr(10).join(lines[:-1]))} {lines[-1].split(':')[0]})"
    if not lines[0].startswith("Traceback"):
        return _MODULE_PATH.sub("", lines[0].strip())
    found = [m for line in lines if not line.startswith(("Traceback", " ")) and (m := _EXCEPTION_LINE.match(line))]
    if not found:
        return lines[-1].strip()
    outer = found[-1]
    drivers = [m for m in found if m["message"] and m["type"].split(".")[0] in DRIVER_MODULES]
    if not drivers:
        return _MODULE_PATH.sub("", outer.group(0).strip())
    driver = drivers[-1]
    names = [_short(driver["type"])] + ([] if outer is driver else [f"in {_short(outer['type'])}"])
    return f"{driver['message'].strip()} ({', '.join(names)})"


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


# --- plan -----------------------------------------------------------------------------------------


def plan(target: str | Target | MigrationService) -> list[str]:
    """The run order of the target's migrations, one line each, with why."""
    return _service_of(target).explain()


def reset(
    target: str | Target | MigrationService, migrations: Sequence[str], *,
    progress: str | os.PathLike[str] | None = None, with_dependants: bool = False,
) -> list[str]:
    """Forget the progress of ``migrations`` (and their dependants) in the ledger a run of
    ``target`` would use; one line per migration reset, saying what its destination still holds.

    Raises:
        CommandError: exit code 2 when there is no such ledger or migration, or a live run
            holds the ledger; nothing is changed then.
    """
    service = _service_of(target)
    path = _ledger_path(service, progress)
    if path is not None and not os.path.exists(path):
        raise CommandError(f"no progress ledger at {path}: nothing to reset", 2)
    ledger = service.ledger if path is None else _open_ledger(path)
    try:
        done = service.reset(migrations, with_dependants=with_dependants, progress=ledger)
    except (FerrymanError, OSError, sqlite3.Error) as exc:
        raise CommandError(one_line(exc), 2) from exc
    finally:
        if path is not None and ledger is not None:
            ledger.close()
    lines = []
    for spec in done:
        dest = service.stores[spec.dest]
        kept = ("" if getattr(dest, "on_conflict", "error") == "update" else
                f"; its destination {spec.dest!r} still holds what it wrote: empty it, or make it upsert "
                "(on_conflict='update'), before running again")
        lines.append(f"reset {spec.name}: the next run migrates it from the start{kept}")
    return lines


def _service_of(target: str | Target | MigrationService) -> MigrationService:
    if isinstance(target, MigrationService):
        return target
    if isinstance(target, str):
        target = load_target(target)
    try:
        return target.build_service()
    except (TypeError, ValueError) as exc:  # what the TARGET defines is wrong, e.g. `migrations = [int]`
        raise TargetError(f"TARGET {target.spec}: {exc}") from exc


# --- run ----------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What ``ferryman run`` did: the result of its last attempt and the exit code."""

    result: RunResult
    attempts: int
    dry_run: bool = False
    would_write: dict[str, int] = field(default_factory=dict)
    """Dry run only: records each destination store would have received, by migration name."""

    @property
    def exit_code(self) -> int:
        return self.result.exit_code

    def dry_run_summary(self) -> str:
        lines = []
        for r in self.result.reports:
            lines.append(
                f"{r.name}: would write {self.would_write.get(r.name, 0)} record(s) to {r.dest} "
                f"({r.read} read, {r.skipped} already done, {r.ignored} ignored, {r.failed} would fail"
                + (f", held back: {', '.join(r.held_back_by)} failed" if r.held_back_by else "")
                + ")"
            )
        lines.append("dry run: nothing was saved and no progress was written")
        return "\n".join(lines)


def parse_host_port(text: str, default_host: str = DEFAULT_HOST) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT``, ``PORT`` or ``[::1]:PORT`` -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise CommandError(f"bad address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8765", 2) from None
    if not 0 <= port <= 65535:
        raise CommandError(f"bad port {port} in {text!r}: expected 0-65535", 2)
    return host, port


def check_port_free(host: str, port: int) -> None:
    """Raise a one-line CommandError (exit 2) when ``host:port`` cannot be bound right now."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CommandError(f"cannot serve on {host}:{port}: {exc.strerror or exc}", 2) from exc
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself does
        try:
            sock.bind(address)
        except OSError as exc:
            raise CommandError(
                f"cannot serve on {host}:{port}: {exc.strerror or exc} (is another server using it? "
                "pick another port)", 2,
            ) from exc


def run(
    target: str | Target | MigrationService,
    *,
    progress: str | os.PathLike[str] | None = None,
    only: Sequence[str] | None = None,
    serve: str | tuple[str, int] | None = None,
    max_tries: int = DEFAULT_MAX_TRIES,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    dry_run: bool = False,
    max_failures: int | float | None = None,
    observers: Sequence[RunObserver] = (),
    echo: Echo = _quiet,
    linger: float = 0.0,
    on_finished: Callable[[RunOutcome], None] | None = None,
) -> RunOutcome:
    """Run the target's migrations, resuming from the progress ledger at ``progress``.

    Args:
        target: a file path or module name (see :mod:`ferryman.target`), a loaded Target, or a
            service.
        progress: the ledger: ``*.json`` is an mjg JSON file, anything else an SQLite ledger.
            Default: the service's own ledger, else ``ferryman-progress.db`` in the cwd.
        only: run these migrations only (names or identities).
        serve: ``"HOST:PORT"`` to serve the status API and dashboard during the run.
        max_tries: attempts in all; a run that ends with failed records, held-back migrations
            or fatal errors is started again after ``retry_delay`` seconds, on the same ledger.
        dry_run: read and transform but save nothing and write no progress; the outcome says
            how many records each migration would write.
        max_failures: a failure budget for every migration, over their own (see
            ``@migration(max_failures=...)``).
        observers: more RunObservers (the CLI adds its progress display here).
        echo: receives the lines a person watching the run wants to see.
        linger: with ``serve``, seconds to keep serving the final status once the run is over
            (Ctrl-C or SIGTERM ends it sooner; an interrupted run does not linger).
        on_finished: called with the outcome as soon as the run is over, before the linger.

    Raises:
        CommandError: with ``exit_code`` 2 when nothing was done: the progress is busy or
            unreadable, a store is unreachable, the port is taken.
        TargetError, MigrationDefinitionError, PlanError: the target is unusable.
    """
    if max_tries < 1:
        raise CommandError(f"--max-tries must be at least 1, not {max_tries}", 2)
    if not 0 <= retry_delay <= threading.TIMEOUT_MAX:  # also NaN
        raise CommandError(f"--retry-delay must be a number of seconds >= 0, not {retry_delay}", 2)
    if not 0 <= linger <= threading.TIMEOUT_MAX:
        raise CommandError(f"--linger must be a number of seconds >= 0, not {linger:g}", 2)
    with _sigterm_as_interrupt():
        return _run(target, progress, only, serve, max_tries, retry_delay, dry_run, max_failures, observers,
                    echo, linger, on_finished or _ignore_outcome)


def _ignore_outcome(outcome: RunOutcome) -> None:
    pass


def _run(
    target: str | Target | MigrationService, progress: str | os.PathLike[str] | None,
    only: Sequence[str] | None, serve: str | tuple[str, int] | None, max_tries: int, retry_delay: float,
    dry_run: bool, max_failures: int | float | None, observers: Sequence[RunObserver], echo: Echo,
    linger: float, on_finished: Callable[[RunOutcome], None],
) -> RunOutcome:
    service = _service_of(target)
    steps = service.select(only)
    address = parse_host_port(serve) if isinstance(serve, str) else serve
    if dry_run:
        outcome = _dry_run(service, only, progress, observers, echo)
        on_finished(outcome)
        return outcome
    if address is not None:
        check_port_free(*address)
    # An existing progress is opened (and so checked) before the stores are touched; a new one
    # is created only once the stores answered, so a failed start leaves no file behind.
    path = _ledger_path(service, progress)
    ledger = service.ledger if path is None else (_open_ledger(path) if os.path.exists(path) else None)
    server = None
    try:
        _preflight(service, {name for s in steps for name in (*s.spec.reads, s.spec.dest)})
        if ledger is None:
            assert path is not None
            ledger = _open_ledger(path)
        echo(f"progress ledger: {path if path is not None else _describe_ledger(ledger)}")
        if address is not None:
            from .server import BackgroundServer, LiveStatusSource, create_app

            source = LiveStatusSource(ledger)
            observers = [*observers, source]
            server = BackgroundServer(create_app(source), *address)
            server.start()
            echo(f"status API and dashboard: {server.url}")
        else:
            source = None
        with _attached(service, observers):
            outcome = _attempts(service, ledger, only, max_tries, retry_delay, max_failures, source, echo)
        if path is not None:
            ledger.close()
            ledger = None
        on_finished(outcome)
        if server is not None and linger > 0 and not outcome.result.interrupted:
            _linger(server.url, linger, echo)
        return outcome
    finally:
        if server is not None:
            server.stop()
        if ledger is not None and path is not None:
            ledger.close()


def _linger(url: str, seconds: float, echo: Echo) -> None:
    """Keep the server beside a finished run up, so that a poller sees how the run ended."""
    from .server import wait_for_stop

    echo(f"finished; serving the final status at {url}/ for {seconds:g} s more, Ctrl-C to stop")
    wait_for_stop(seconds)


def _attempts(
    service: MigrationService, ledger: Ledger, only: Sequence[str] | None, max_tries: int,
    retry_delay: float, max_failures: int | float | None, source: Any, echo: Echo,
) -> RunOutcome:
    attempt = 1
    while True:
        if source is not None:
            source.attempt_started(attempt)
        tracker = _WorkTracker()
        service.add_observer(tracker)
        try:
            result = service.run(ledger, only=only, max_failures=max_failures)
        except (FerrymanError, OSError, sqlite3.Error, SQLAlchemyError) as exc:
            error = exc
            if isinstance(exc, sqlite3.Error):  # only the ledger speaks to sqlite3 itself
                error = FerrymanError(f"progress ledger {getattr(ledger, 'path', ledger)}: {exc}")
            if attempt == 1 and not tracker.started:  # e.g. LedgerBusyError: nothing was done
                raise CommandError(one_line(error), 2) from exc
            if error is not exc:
                raise error from exc
            raise
        finally:
            service.remove_observer(tracker)
        if result.ok or result.interrupted or attempt >= max_tries:
            return RunOutcome(result, attempt)
        echo(result.summary())
        echo(f"attempt {attempt} of {max_tries} did not complete; trying again in {retry_delay:g} s "
             "(Ctrl-C to stop)")
        flag = StopFlag()
        with stop_on_signals(flag):
            if flag.wait(retry_delay):
                result.interrupted = flag.reason
                return RunOutcome(result, attempt)
        attempt += 1


class _WorkTracker(RunObserver):
    """Notes whether any migration started, which tells "before any work" errors apart."""

    def __init__(self) -> None:
        self.started = False

    def migration_started(self, report: Any) -> None:
        self.started = True


@contextmanager
def _attached(service: MigrationService, observers: Sequence[RunObserver]) -> Iterator[None]:
    for observer in observers:
        service.add_observer(observer)
    try:
        yield
    finally:
        for observer in observers:
            service.remove_observer(observer)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Outside the service's own handling (between attempts, at start), SIGTERM and SIGHUP
    = Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS if sig != signal.SIGINT}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _preflight(service: MigrationService, names: set[str]) -> None:
    """Read one record of every store the run uses, so an unreachable database or a missing
    table is reported before any work (exit 2) rather than as a failed migration."""
    for name in sorted(names):
        store = service.stores[name]
        try:
            store.read_page(None, None, 1)
        except (StoreError, SQLAlchemyError, OSError) as exc:
            raise CommandError(f"store {name!r} cannot be read: {one_line(exc)}", 2) from exc


def _describe_ledger(ledger: Ledger) -> str:
    path = getattr(ledger, "path", None)
    return f"{path} (the service's own)" if path else f"{type(ledger).__name__} (the service's own)"


def _ledger_path(service: MigrationService, progress: str | os.PathLike[str] | None) -> str | None:
    """The ledger path to open, or None to use the service's own ledger."""
    if progress is None and service.ledger is not None:
        return None
    path = checked_path(progress) if progress is not None else DEFAULT_PROGRESS
    _check_parent(path)
    if os.path.isdir(path):
        raise CommandError(f"{path} is a directory, not a progress file", 2)
    return path


def _open_ledger(path: str) -> Ledger:
    try:
        return open_ledger(path)
    except (OSError, sqlite3.Error, FerrymanError) as exc:
        raise CommandError(one_line(exc), 2) from exc


def _check_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CommandError(f"cannot create progress ledger {path}: directory {parent} does not exist", 2)


# --- dry run ------------------------------------------------------------------------------------


class DryRunStore(Store):
    """A destination that reads through to the real store and saves nothing, only counting."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner.name, inner.key)
        self.inner = inner
        self.saved = 0

    def id_of(self, record: Record) -> RecordId:
        return self.inner.id_of(record)

    def describe(self, record: Record) -> str:
        return self.inner.describe(record)

    def read_page(self, filter: Filter | None, after: RecordId | None, limit: int) -> list[Record]:
        return self.inner.read_page(filter, after, limit)

    def get_many(self, ids: Sequence[RecordId]) -> list[Record]:
        return self.inner.get_many(ids)

    def count(self, filter: Filter | None = None) -> int | None:
        return self.inner.count(filter)

    def save_all(self, records: list[Record], *, journal: JournalEntry | None = None) -> None:
        self.saved += len(records)


def _dry_run(
    service: MigrationService, only: Sequence[str] | None, progress: str | os.PathLike[str] | None,
    observers: Sequence[RunObserver], echo: Echo,
) -> RunOutcome:
    steps = service.select(only)
    dests = {s.spec.dest for s in steps}
    try:
        existing = _existing_progress(service, progress)
    except (OSError, sqlite3.Error, FerrymanError) as exc:
        raise CommandError(one_line(exc), 2) from exc
    _preflight(service, {name for s in steps for name in (*s.spec.reads, s.spec.dest)})
    proxies = {name: DryRunStore(store) if name in dests else store for name, store in service.stores.items()}
    dry = MigrationService(list(proxies.values()), service.migrations, observers=observers)
    ledger = MemoryLedger(existing)
    echo("dry run: reading and transforming, saving nothing")
    result = dry.run(ledger, only=only)
    would = {s.spec.name: proxy.saved for s in steps if isinstance(proxy := proxies[s.spec.dest], DryRunStore)}
    return RunOutcome(result, 1, dry_run=True, would_write=would)


def _existing_progress(service: MigrationService, progress: str | os.PathLike[str] | None) -> MigrationProgress | None:
    """A copy of what the real run would resume from, so the dry run skips the same records."""
    if progress is None and service.ledger is not None:
        return service.ledger.progress().copy()
    path = checked_path(progress) if progress is not None else DEFAULT_PROGRESS
    if not os.path.exists(path):
        return None
    return load_progress(path)


# --- reading and changing a progress ledger --------------------------------------------------------


def _no_progress_file(path: str | os.PathLike[str]) -> FileNotFoundError:
    return FileNotFoundError(2, "no progress file", os.fspath(path))


def load_progress(path: str | os.PathLike[str]) -> MigrationProgress:
    """The whole progress at ``path`` (SQLite ledger or mjg JSON), read without changing it."""
    path = checked_path(path)
    if not os.path.exists(path):
        raise _no_progress_file(path)
    if is_ledger_file(path):
        ledger = SqliteLedger(path, read_only=True)
        try:
            return ledger.progress()
        finally:
            ledger.close()
    return load_json_progress(path)


def _refuse_if_live(ledger: SqliteLedger, doing: str) -> None:
    ledger.refuse_if_live(doing)


@dataclass
class FailedRow:
    """One failed record as ``ferryman failed list`` shows it."""

    identity: str
    name: str
    record: FailedRecord

    @property
    def cause(self) -> str:
        return cause_summary(self.record.cause)

    def to_dict(self) -> dict[str, Any]:
        return {
            "migration": self.name, "identity": self.identity, "id": self.record.id,
            "action": self.record.action.value, "description": self.record.description,
            "cause": self.cause, "full_cause": self.record.cause, "timestamp": self.record.timestamp.isoformat(),
        }


class _ProgressFile:
    """Failed records of a ledger at a path, SQLite or JSON, behind one small interface."""

    def __init__(self, path: str, *, write: bool) -> None:
        """Open the file; to ``write``, only while no live run holds it (a JSON file's lease
        is held until :meth:`close`, so that no run starts meanwhile)."""
        self.path = path
        if not os.path.exists(self.path):
            raise _no_progress_file(self.path)
        self.sqlite: SqliteLedger | None = None
        self.progress: MigrationProgress | None = None
        self.lease: LeaseFile | None = None
        self.changed = 0
        doing = f"change failed records in {self.path}"
        if is_ledger_file(self.path):
            self.sqlite = SqliteLedger(self.path, read_only=not write)
            if write:
                try:
                    _refuse_if_live(self.sqlite, doing)
                except BaseException:
                    self.sqlite.close()
                    raise
            return
        self.progress = load_json_progress(self.path)  # a malformed file: refused, no lock made
        if write:
            self.lease = json_lease(self.path)
            self.lease.acquire(doing, heartbeat=False)
            try:
                self.progress = load_json_progress(self.path)  # as the last run left it
            except BaseException:
                self.close()
                raise

    def identities(self) -> list[str]:
        if self.sqlite is not None:
            return self.sqlite.identities()
        assert self.progress is not None
        return list(self.progress.migrations)

    def names(self) -> dict[str, str]:
        if self.sqlite is not None:
            return self.sqlite.names()
        return {i: i.rsplit(".", 1)[-1] for i in self.identities()}

    def failed(self, identity: str) -> list[FailedRecord]:
        if self.sqlite is not None:
            return self.sqlite.failed_records(identity)
        assert self.progress is not None
        return list(self.progress.migrations[identity].failed.values())

    def set_action(self, identity: str, ids: list[RecordId], action: Action) -> int:
        if self.sqlite is not None:
            changed = self.sqlite.set_action(identity, ids, action)
        else:
            assert self.progress is not None
            changed = self.progress.set_action(identity, ids, action)
        self.changed += changed
        return changed

    def save(self) -> None:
        if self.progress is not None and self.changed:
            self.progress.save(self.path)

    def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite.close()
        if self.lease is not None:
            self.lease.release()


@contextmanager
def _open_progress(path: str | os.PathLike[str], *, write: bool) -> Iterator[_ProgressFile]:
    """The progress file at ``path``; a damaged ledger found on the way is named in one line."""
    path = checked_path(path)
    if os.path.isdir(path):
        raise CommandError(f"{os.fspath(path)} is a directory, not a progress file", 2)
    file = _ProgressFile(path, write=write)
    try:
        yield file
    except sqlite3.DatabaseError as exc:
        raise FerrymanError(f"cannot read progress ledger {path}: {exc}") from exc
    finally:
        file.close()


def _select_migrations(file: _ProgressFile, migration: str | None) -> list[str]:
    identities = file.identities()
    if migration is None:
        return identities
    names = file.names()
    chosen = [i for i in identities if migration in (i, names.get(i), i.rsplit(".", 1)[-1])]
    if not chosen:
        known = ", ".join(names.get(i, i) for i in identities) or "(none)"
        raise CommandError(f"no migration {migration!r} in {file.path}; it has: {known}", 2)
    return chosen


def _rows(file: _ProgressFile, migration: str | None, grep: str | None) -> list[FailedRow]:
    if grep == "":
        raise CommandError("--grep needs some text to look for (an empty one would choose every record)", 2)
    names = file.names()
    needle = grep.casefold() if grep else None
    rows = []
    for identity in _select_migrations(file, migration):
        for record in file.failed(identity):
            if needle and needle not in record.description.casefold() and needle not in record.cause.casefold():
                continue
            rows.append(FailedRow(identity, names.get(identity, identity), record))
    return rows


def failed_list(
    progress: str | os.PathLike[str], *, migration: str | None = None, grep: str | None = None
) -> list[FailedRow]:
    """The failed records in a progress ledger (SQLite or JSON), optionally filtered.

    ``migration`` is a name or identity; ``grep`` is text (case-insensitive) looked for in the
    description and the cause.
    """
    with _open_progress(progress, write=False) as file:
        return _rows(file, migration, grep)


def failed_set_action(
    progress: str | os.PathLike[str],
    action: Action | str,
    *,
    ids: Sequence[RecordId] = (),
    all: bool = False,
    grep: str | None = None,
    migration: str | None = None,
) -> dict[str, int]:
    """Set the action (IGNORE or RETRY) of failed records; how many changed, per migration name.

    Exactly one of ``ids``, ``all`` and ``grep`` chooses the records. An id that is not a
    failed record, or that failed in several migrations while ``migration`` is not given, is an
    error and nothing is changed. Refused while a live run holds an SQLite ledger.
    """
    action = Action(action)
    chosen = sum((bool(ids), all, grep is not None))
    if chosen != 1:
        raise CommandError("choose the records with IDs, --all or --grep TEXT (exactly one of them)", 2)
    with _open_progress(progress, write=True) as file:
        rows = _rows(file, migration, grep)
        targets: dict[str, list[RecordId]] = {}
        if ids:
            by_id: dict[RecordId, list[FailedRow]] = {}
            for row in rows:
                by_id.setdefault(row.record.id, []).append(row)
            missing = [i for i in ids if i not in by_id]
            if missing:
                where = f" of migration {migration}" if migration else ""
                raise CommandError(
                    f"not a failed record{where} in {file.path}: {', '.join(map(format_id, missing))}"
                    " (see `ferryman failed list`)", 2,
                )
            ambiguous = [i for i in ids if len(by_id[i]) > 1]
            if ambiguous:
                where = ", ".join(r.name for r in by_id[ambiguous[0]])
                raise CommandError(
                    f"id {format_id(ambiguous[0])} failed in several migrations ({where}); "
                    "choose one with --migration NAME", 2,
                )
            for record_id in dict.fromkeys(ids):
                targets.setdefault(by_id[record_id][0].identity, []).append(record_id)
        else:
            for row in rows:
                targets.setdefault(row.identity, []).append(row.record.id)
        names = file.names()
        changed = {names.get(identity, identity): file.set_action(identity, chosen_ids, action)
                   for identity, chosen_ids in targets.items()}
        file.save()
        return changed


# --- export and import ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressCounts:
    """What an export or import moved."""

    migrations: int
    succeeded: int
    failed: int

    def __str__(self) -> str:
        return (f"{self.migrations} migration(s), {self.succeeded} succeeded and "
                f"{self.failed} failed record(s)")


def _counts_of_ledger(ledger: SqliteLedger) -> ProgressCounts:
    identities = ledger.identities()
    return ProgressCounts(
        len(identities),
        sum(sum(1 for _ in ledger.iter_succeeded(i)) for i in identities),
        sum(sum(1 for _ in ledger.iter_failed(i)) for i in identities),
    )


def _counts_of(progress: MigrationProgress) -> ProgressCounts:
    entries = progress.migrations.values()
    return ProgressCounts(len(entries), sum(len(e.succeeded) for e in entries), sum(len(e.failed) for e in entries))


def progress_export(progress: str | os.PathLike[str], out: str | os.PathLike[str]) -> ProgressCounts:
    """Write the progress at ``progress`` as mjg JSON to ``out`` (atomically, streaming from an
    SQLite ledger in bounded memory). Refused while a live run holds the ledger."""
    progress, out = checked_path(progress), checked_path(out)
    if os.path.abspath(progress) == os.path.abspath(out):
        raise CommandError("--out is the progress file itself; choose another file", 2)
    _check_parent(os.fspath(out))
    with _open_progress(progress, write=False) as file:
        if file.sqlite is None:
            assert file.progress is not None
            file.progress.save(out)
            return _counts_of(file.progress)
        from .progress.exchange import export_json

        _refuse_if_live(file.sqlite, "export")
        export_json(file.sqlite, out)
        return _counts_of_ledger(file.sqlite)


def progress_import(progress: str | os.PathLike[str], source: str | os.PathLike[str]) -> ProgressCounts:
    """Replace the SQLite ledger at ``progress`` with the mjg JSON in ``source``, all or nothing.

    The ledger is created when missing (and removed again if the import fails). Refused while a
    live run holds it; a malformed file changes nothing.
    """
    from .progress.exchange import import_json

    path = checked_path(progress)
    if path.lower().endswith(".json") or (os.path.exists(path) and not is_ledger_file(path)):
        raise CommandError(
            f"{path} is a JSON progress file; import goes into an SQLite ledger (e.g. progress.db); "
            "a JSON file can simply be copied", 2,
        )
    if not os.path.isfile(source):
        raise FileNotFoundError(2, "no such file", os.fspath(source))
    _check_parent(path)
    created = not os.path.exists(path)
    ledger = SqliteLedger(path)
    try:
        _refuse_if_live(ledger, "import")
        import_json(source, ledger)
        return _counts_of_ledger(ledger)
    except BaseException:
        ledger.close()
        if created:
            for leftover in (path, path + "-wal", path + "-shm", path + "-journal"):
                if os.path.exists(leftover):
                    os.remove(leftover)
        raise
    finally:
        ledger.close()


# --- status and serve -----------------------------------------------------------------------------


def status(*, progress: str | os.PathLike[str] | None = None, url: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """``{"result": <GET /migrate/result>, "progress": <GET /migrate/progress>}`` from a running
    server at ``url``, or computed from the ledger at ``progress``."""
    if (progress is None) == (url is None):
        raise CommandError("give either --progress PATH or --url URL", 2)
    if url is not None:
        base = _status_url(url)
        return {"result": _get_json(f"{base}/migrate/result", timeout),
                "progress": _get_json(f"{base}/migrate/progress", timeout)}
    assert progress is not None
    progress = checked_path(progress)
    if not os.path.exists(progress):
        raise _no_progress_file(progress)
    from .server import LedgerStatusSource

    snapshot = LedgerStatusSource(os.fspath(progress)).snapshot()
    return {"result": snapshot.result(), "progress": snapshot.progress()}


def _status_url(url: str) -> str:
    """``url`` as the base of a status server's API (``http://`` added when it has no scheme)."""
    base = url.strip().rstrip("/")
    if "://" not in base:
        base = "http://" + base
    try:
        parts = urllib.parse.urlsplit(base)
        parts.port  # noqa: B018  # raises for a port that is not a number
    except ValueError as exc:
        raise CommandError(f"bad URL {url!r}: {exc}", 2) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandError(f"bad URL {url!r}: expected http://HOST:PORT, e.g. http://127.0.0.1:8765", 2)
    return base


def _get_json(url: str, timeout: float) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise CommandError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"cannot reach {url}: {reason}", 2) from exc
    except ValueError as exc:
        raise CommandError(f"{url} did not answer JSON: {exc}") from exc


def serve(progress: str | os.PathLike[str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, echo: Echo = _quiet) -> None:
    """Serve the status API and dashboard for the ledger at ``progress`` until Ctrl-C.

    The ledger may not exist yet (the status is ``pending`` until a run starts on it).
    """
    from .server import LedgerStatusSource, create_app, serve_forever

    path = checked_path(progress)
    _check_parent(path)
    if os.path.isdir(path):
        raise CommandError(f"{path} is a directory, not a progress file", 2)
    check_port_free(host, port)  # before the source opens the ledger
    app = create_app(LedgerStatusSource(path))
    serve_forever(app, host, port, on_ready=lambda url: echo(
        f"serving the status of {path} at {url}/ (Ctrl-C to stop)"))
