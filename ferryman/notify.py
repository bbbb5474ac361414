"""Notifications: a JSON POST to each URL when a run starts, when each migration ends, when the
run ends (completed, failed, interrupted) and on fatal errors.

After a run with ``verify_sample``, the verification's result is sent too
(``verification.passed`` / ``verification.failed``). The body carries the fields of
``GET /migrate/result`` (``status``, ``step``, ``last_err``,
``try_count``), the ``event`` (as in :mod:`ferryman.eventlog`), the counts, and a ``text`` line
for people: a Slack (or Mattermost, Rocket.Chat...) incoming-webhook URL works as it is.

Sent from a thread per URL (a slow receiver delays neither the run nor the other URLs), each
POST with a timeout, retried with a doubling pause on a network error, a 5xx or a 429 (another
4xx is the receiver refusing the body: retrying would not help). A notification never fails nor
blocks the run: one that cannot be delivered is logged, and listed in
``RunResult.notification_errors``. At the end of the run, pending notifications get ``drain``
seconds to go out.

Uses the standard library's ``urllib``: one POST with a timeout needs nothing more, and a
runtime dependency only for this would not pay for itself.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import FerrymanError, InputError
from .eventlog import counts_of
from .events import RunObserver
from .progress.ledger import Ledger, new_event
from .progress.reader import LedgerReader
from .redact import mask_secrets
from .report import MigrationReport, MigrationState, RunResult, last_error

if TYPE_CHECKING:
    from .verify import VerificationResult

log = logging.getLogger("ferryman")

DEFAULT_TIMEOUT = 5.0
"""Seconds one POST may take."""
DEFAULT_RETRIES = 3
"""POSTs after the first, when the receiver is down or answers 5xx/429."""
DEFAULT_BACKOFF = 1.0
"""Seconds before the first retry; each next pause is twice as long."""
DEFAULT_DRAIN = 15.0
"""Seconds pending notifications get to go out once the run is over."""

_ENDS = {MigrationState.COMPLETED: "completed", MigrationState.FAILED: "failed",
         MigrationState.INTERRUPTED: "stopped", MigrationState.HELD_BACK: "held_back"}


def check_url(url: str) -> str:
    """``url`` when it is an http(s) URL with a host and a valid port; InputError naming it
    otherwise, with its password masked."""
    given = mask_secrets(url)
    given = given if len(given) <= 60 else given[:59] + "…"
    try:
        parts = urllib.parse.urlsplit(url)
        host, _ = parts.hostname, parts.port  # the port raises ValueError unless a number in 0-65535
    except ValueError as exc:
        raise InputError(f"--notify: {given!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InputError(f"--notify: {given!r} is not an http:// or https:// URL")
    return url


def shown_url(url: str) -> str:
    """The URL as logs may show it: scheme and host only (a webhook's path is its secret, and
    so is the password of its ``user:password@``)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/..." if parts.scheme else url[:8] + "..."


def _request(url: str, data: bytes) -> urllib.request.Request:
    """The POST of ``data`` to ``url``; its ``user:password@``, if any, goes as HTTP Basic auth
    (urllib would take it for part of the host)."""
    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/json", "User-Agent": "ferryman"}
    if parts.username is not None:
        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return urllib.request.Request(urllib.parse.urlunsplit(parts), data=data, method="POST", headers=headers)


class Notifier(RunObserver):
    """POSTs a run's events as JSON to ``urls`` (see the module docstring)."""

    def __init__(self, urls: Sequence[str] | str, *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF,
                 drain: float = DEFAULT_DRAIN) -> None:
        self.urls = [check_url(u) for u in ([urls] if isinstance(urls, str) else urls)]
        self.timeout, self.retries, self.backoff, self.drain = timeout, retries, backoff, drain
        self.failures: list[str] = []
        """One line per notification that could not be delivered."""
        self._lock = threading.Lock()
        self._senders: dict[str, _Sender] = {}
        self._attempt = 1
        self._reports: Sequence[MigrationReport] = ()
        self.ledger: Ledger | None = None
        """The run's ledger (the service sets it): a durable one counts ``try_count`` as the
        status API does, across runs of one job."""

    # --- sending --------------------------------------------------------------------------------

    def send(self, body: dict[str, Any]) -> None:
        """Queue ``body`` for every URL; returns at once."""
        data = json.dumps(body, default=str).encode()
        for url in self.urls:
            sender = self._senders.get(url)
            if sender is None:
                sender = self._senders[url] = _Sender(self, url)
            sender.queue.put((str(body.get("event")), data))

    def failed(self, url: str, event: str, why: str) -> None:
        line = f"notification {event} to {shown_url(url)} not delivered: {why}"
        log.warning("%s", line)
        with self._lock:
            self.failures.append(line)

    def close(self) -> list[str]:
        """Let pending notifications go out (for at most ``drain`` seconds, all URLs together),
        then stop; the notifications that could not be delivered, one line each."""
        ends = time.monotonic() + self.drain
        senders, self._senders = list(self._senders.values()), {}
        for sender in senders:
            sender.queue.put(None)
        for sender in senders:
            sender.thread.join(max(ends - time.monotonic(), 0))
            if sender.thread.is_alive():
                sender.give_up.set()
                left = sender.queue.qsize()  # the stop mark is among them
                self.failed(sender.url, sender.current or "?",
                            f"still unanswered {self.drain:g} s after the run ended"
                            + (f" ({left - 1} more after it)" if left > 1 else ""))
        return list(self.failures)

    # --- events ---------------------------------------------------------------------------------

    def _body(self, kind: str, status: str, step: str | None, err: str | None, text: str,
              **fields: Any) -> dict[str, Any]:
        return new_event(kind, status=status, step=step, last_err=err, try_count=self._attempt,
                         counts=counts_of(self._reports), **fields, text=text) | {
            "step": step, "last_err": err}  # null, not left out: the status API's fields are always there

    def attempt_started(self, attempt: int) -> None:
        self._attempt = attempt

    def run_started(self, reports: Sequence[MigrationReport]) -> None:
        self._reports = reports
        if isinstance(self.ledger, LedgerReader):  # the newest run is this one: it holds the lease
            try:
                self._attempt = next((run.attempt for run in self.ledger.runs(1)), self._attempt)
            except FerrymanError:
                pass  # a notification never fails the run: this process's count then
        names = ", ".join(r.name for r in reports)
        tries = f" (attempt {self._attempt})" if self._attempt > 1 else ""
        self.send(self._body("run.started", "running", None, None,
                             f"ferryman: run started{tries}: {len(reports)} migration(s): {names}",
                             migrations=[r.name for r in reports]))

    def migration_finished(self, report: MigrationReport) -> None:
        end = _ENDS.get(report.state)
        if end is None:
            return
        kind = "fatal_error" if report.fatal_error else f"migration.{end}"
        err = report.fatal_error or report.last_error
        text = (f"ferryman: {report.name} {end.replace('_', ' ')}: {report.succeeded:,} migrated, "
                f"{report.failed:,} failed, {report.skipped:,} already done, {report.written:,} written"
                + (f"; {'fatal error' if report.fatal_error else 'last error'}: {err}" if err else ""))
        self.send(self._body(kind, "running", report.name, err, text, migration=report.name,
                             state=report.state.value, migration_counts=counts_of([report])))

    migration_held_back = migration_finished

    def run_finished(self, result: RunResult) -> None:
        outcome = "completed" if result.ok else "interrupted" if result.interrupted else "failed"
        err = result.timed_out or result.ledger_error or last_error(result.reports)
        step = next((r.name for r in reversed(result.reports) if r.state is not MigrationState.PENDING), None)
        counts = counts_of(result.reports)
        states = ", ".join(f"{r.name} {r.state.value.replace('_', ' ')}" for r in result.reports)
        text = (f"ferryman: run {outcome}: {counts['succeeded']:,} migrated, {counts['failed']:,} failed "
                f"({states})" + (f"; last error: {err}" if err else ""))
        self.send(self._body(f"run.{outcome}", "completed" if result.ok else "failed", step, err, text,
                             outcome=outcome, migrations=[_migration(r) for r in result.reports]))
        if result.ledger_error:
            self.send(self._body("fatal_error", "failed", step, result.ledger_error,
                                 f"ferryman: the run stopped: {result.ledger_error}"))


    def fatal(self, error: str) -> None:
        """An error that ended the run before its end (the ledger busy or unwritable...)."""
        self.send(self._body("fatal_error", "failed", None, error, f"ferryman: the run failed: {error}"))

    def verified(self, result: VerificationResult) -> None:
        """The verification after a completed run (``verify_sample=``)."""
        status = "passed" if result.ok else "failed"
        failed = [m.name for m in result.migrations if not m.ok]
        text = f"ferryman: verification {status}" + (f": {', '.join(failed)}" if failed else "")
        err = next((p.line() for m in result.migrations for p in m.problems), None)
        self.send(self._body(f"verification.{status}", "completed", None, err, text, ok=result.ok,
                             migrations=[{"name": m.name, "ok": m.ok, "checked": m.checked,
                                          "problems": len(m.problems)} for m in result.migrations]))


def _migration(report: MigrationReport) -> dict[str, Any]:
    return {"name": report.name, "state": report.state.value, **counts_of([report]),
            "last_err": report.fatal_error or report.last_error}


class _Sender:
    """The thread that POSTs one URL's notifications, in order."""

    def __init__(self, notifier: Notifier, url: str) -> None:
        self.notifier = notifier
        self.url = url
        self.queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self.give_up = threading.Event()
        self.current: str | None = None
        self.thread = threading.Thread(target=self._run, name="ferryman-notify", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            self.current, data = item
            why = self._deliver(data)
            if why is not None and not self.give_up.is_set():
                self.notifier.failed(self.url, self.current, why)
            self.current = None

    def _deliver(self, data: bytes) -> str | None:
        """POST until delivered (None) or out of tries (why not)."""
        n = self.notifier
        request = _request(self.url, data)
        why = ""
        for attempt in range(n.retries + 1):
            if attempt and self.give_up.wait(n.backoff * 2 ** (attempt - 1)):
                return "the run ended"
            try:
                with urllib.request.urlopen(request, timeout=n.timeout) as response:
                    response.read()
                return None
            except urllib.error.HTTPError as exc:
                why = f"HTTP {exc.code} {exc.reason}"
                if 400 <= exc.code < 500 and exc.code != 429:
                    return why  # the receiver refuses this body: retrying would not help
            except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, unreachable, timed out,
                why = str(getattr(exc, "reason", None) or exc) or type(exc).__name__  # a bad answer
        return f"{why} (after {n.retries + 1} tries)"
