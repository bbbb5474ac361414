"""Notifications reach a real HTTP receiver on loopback; a receiver that is down, slow or
answers 500 neither fails nor blocks the run."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import helpers
import pytest

from ferryman import (
    InputError,
    MemoryStore,
    MigrationService,
    Retry,
    RunObserver,
    migration,
)
from ferryman.notify import Notifier, shown_url

BROKEN: set[int] = set()


@migration(source="src", dest="dst", batch_size=10, save_retry=Retry(times=0, delay=0), name="copy")
class Copy:
    def transform(self, aggregates, record):
        if record["id"] in BROKEN:
            raise ValueError(f"item {record['id']} is broken")
        return [dict(record)]


class Receiver:
    """A webhook receiver on loopback: answers ``status`` after ``delay`` seconds."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status, self.delay = status, delay
        self.bodies: list[dict] = []
        self.authorizations: list[str | None] = []
        self.hits = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                receiver.hits += 1
                receiver.authorizations.append(self.headers["Authorization"])
                time.sleep(receiver.delay)
                if receiver.status == 200:
                    receiver.bodies.append(body)
                try:
                    self.send_response(receiver.status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up waiting (its timeout): as a real receiver sees it

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T000/SECRET"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _broken():
    BROKEN.clear()
    yield
    BROKEN.clear()


def _service() -> MigrationService:
    src = MemoryStore("src", records=[{"id": i, "name": f"n{i}"} for i in range(1, 31)])
    return MigrationService([src, MemoryStore("dst")], [Copy])


class RunTimes(RunObserver):
    """When the run started and when it ended (before notifications are drained)."""

    def __init__(self) -> None:
        self.started = self.finished = 0.0

    def run_started(self, reports) -> None:
        self.started = time.monotonic()

    def run_finished(self, result) -> None:
        self.finished = time.monotonic()


def test_a_receiver_gets_the_start_each_migration_end_and_the_end(receiver):
    BROKEN.add(4)
    result = _service().run(notify=[receiver.url])
    assert result.exit_code == 1 and result.notification_errors == []
    events = [b["event"] for b in receiver.bodies]
    assert events == ["run.started", "migration.failed", "run.failed"]
    start, migration_end, end = receiver.bodies
    for body in receiver.bodies:  # the status API's fields, always there
        assert {"status", "step", "last_err", "try_count", "counts", "text", "time"} <= set(body)
        assert body["try_count"] == 1
    assert start["status"] == "running" and start["step"] is None and start["migrations"] == ["copy"]
    assert migration_end["step"] == "copy" and "item 4 is broken" in migration_end["last_err"]
    assert migration_end["migration_counts"]["failed"] == 1
    assert migration_end["migration_counts"]["succeeded"] == 29
    assert end["status"] == "failed" and end["outcome"] == "failed"
    assert end["counts"] == {"read": 30, "succeeded": 29, "failed": 1, "skipped": 0, "ignored": 0, "written": 29}
    assert end["text"].startswith("ferryman: run failed: 29 migrated, 1 failed (copy failed); last error: ")


def test_a_completed_run_says_completed_in_slack_words(receiver):
    assert _service().run(notify=[receiver.url]).ok
    end = receiver.bodies[-1]
    assert end["event"] == "run.completed" and end["status"] == "completed" and end["last_err"] is None
    assert end["text"] == "ferryman: run completed: 30 migrated, 0 failed (copy completed)"


@pytest.mark.parametrize("kind", ["down", "answers 500", "slow"])
def test_a_bad_receiver_neither_fails_nor_blocks_the_run(kind, receiver):
    good = receiver
    if kind == "down":
        bad_url = f"http://127.0.0.1:{helpers.free_port()}/hook"
        bad = None
    else:
        bad = Receiver(status=500) if kind == "answers 500" else Receiver(delay=2.0)
        bad_url = bad.url
    notifier = Notifier([bad_url, good.url], timeout=0.5, retries=2, backoff=0.05, drain=1.0)
    times = RunTimes()
    service = _service()
    service.add_observer(times)
    started = time.monotonic()
    try:
        result = service.run(notify=[notifier])
    finally:
        if bad is not None:
            bad.close()
    took = time.monotonic() - started
    assert result.ok  # the run completes whatever the receiver does
    assert times.finished - times.started < 0.5  # the run itself never waited for a receiver
    assert took < 1.0 + 1.5  # and its end waited at most the drain (+ slack for a loaded machine)
    assert [b["event"] for b in good.bodies] == ["run.started", "migration.completed", "run.completed"]
    assert result.notification_errors  # listed, not hidden
    assert all(shown_url(bad_url) in line for line in result.notification_errors)
    assert all("SECRET" not in line for line in result.notification_errors)  # a webhook's path is secret
    if kind == "answers 500":
        assert bad is not None and bad.hits == 3 * 3  # three events, each tried three times
        assert "HTTP 500" in result.notification_errors[0]
    if kind == "down":
        assert "after 3 tries" in result.notification_errors[0]


def test_a_url_that_is_not_http_is_refused_before_any_work():
    with pytest.raises(InputError, match="--notify: 'ftp://x/y' is not an http:// or https:// URL"):
        _service().run(notify=["ftp://x/y"])


def test_a_urls_user_and_password_go_as_basic_auth_and_are_never_shown(receiver, caplog):
    with_password = receiver.url.replace("http://", "http://hook%40team:s3cret%3Ax@")
    down = f"http://ops:s3cret@127.0.0.1:{helpers.free_port()}/hook"
    result = _service().run(notify=[with_password, down])
    assert result.ok
    assert [b["event"] for b in receiver.bodies] == ["run.started", "migration.completed", "run.completed"]
    assert receiver.authorizations == ["Basic aG9va0B0ZWFtOnMzY3JldDp4"] * 3  # base64 of hook@team:s3cret:x
    assert len(result.notification_errors) == 3  # the one that is down is said, each event once
    assert "s3cret" not in "\n".join(result.notification_errors) + caplog.text


def test_a_receiver_that_answers_no_http_is_a_notification_not_delivered():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def answer_nonsense() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"nonsense\r\n\r\n")

    threading.Thread(target=answer_nonsense, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    try:
        notifier = Notifier(url, retries=0)
        result = _service().run(notify=[notifier])
    finally:
        server.close()
    assert result.ok
    assert len(result.notification_errors) == 3, result.notification_errors
    assert all("not delivered: nonsense" in line for line in result.notification_errors)


BAD_URLS = [
    ("http://[::1", "'http://[::1' is not a valid URL: Invalid IPv6 URL"),
    ("http://example.invalid:99999/x", "'http://example.invalid:99999/x' is not a valid URL: Port out of range 0-65535"),
    ("https://user:s3cret@example.invalid:x/", "'https://user:***@example.invalid:x/' is not a valid URL: Port could "
                                               "not be cast to integer value as 'x'"),
    ("ftp://user:s3cret@x/y", "'ftp://user:***@x/y' is not an http:// or https:// URL"),
]


@pytest.mark.parametrize("url, message", BAD_URLS, ids=[u for u, _ in BAD_URLS])
def test_cli_a_malformed_notify_url_is_one_line_without_its_password(tmp_path, url, message):
    (tmp_path / "m.py").write_text(TARGET)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    bad = subprocess.run([sys.executable, "-m", "ferryman", "run", "m.py", "--progress", "p.db", "--notify", url],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert bad.stderr.splitlines() == [f"ferryman: error: --notify: {message}"]
    assert "s3cret" not in bad.stdout + bad.stderr
    assert not (tmp_path / "p.db").exists()  # nothing was done


TARGET = """
from ferryman import MemoryStore, migration
stores = [MemoryStore("src", records=[{"id": i} for i in range(5)]), MemoryStore("dst")]

@migration(source="src", dest="dst", name="copy")
class Copy:
    def transform(self, aggregates, record):
        return [record]

migrations = [Copy]
"""


def test_cli_notify_is_repeatable_and_lists_what_was_not_delivered(tmp_path, receiver):
    (tmp_path / "m.py").write_text(TARGET)
    down = f"http://127.0.0.1:{helpers.free_port()}/hook"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-m", "ferryman", "run", "m.py", "--notify", receiver.url,
                          "--notify", down, "--no-bar"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert [b["event"] for b in receiver.bodies] == ["run.started", "migration.completed", "run.completed"]
    assert f"notification run.completed to {shown_url(down)} not delivered" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "ferryman", "run", "m.py", "--notify", "localhost:80"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "ferryman: error: --notify: 'localhost:80' is not an http:// or https:// URL"]


def test_a_verification_after_the_run_is_notified_and_decides_the_exit_code(receiver):
    @migration(source="src", dest="dst", name="copy")
    class Checked:
        def transform(self, aggregates, record):
            return [dict(record)]

        def verify(self, record, outputs, stored):
            return None if record["id"] != 3 else "item 3 looks wrong"

    src = MemoryStore("src", records=[{"id": i, "name": f"n{i}"} for i in range(1, 11)])
    result = MigrationService([src, MemoryStore("dst")], [Checked]).run(notify=[receiver.url], verify_sample=100)
    assert result.verification is not None and not result.verification.ok
    assert not result.ok and result.exit_code == 1
    assert all(r.state.value == "completed" for r in result.reports)  # the run itself completed
    assert [b["event"] for b in receiver.bodies] == [
        "run.started", "migration.completed", "run.completed", "verification.failed"]
    last = receiver.bodies[-1]
    assert last["text"] == "ferryman: verification failed: copy" and last["ok"] is False
    assert last["last_err"] == "hook record 3: item 3 looks wrong"


def test_an_error_that_ends_the_run_is_notified(receiver, tmp_path):
    from ferryman import LedgerBusyError, RunResult
    from ferryman.progress.sqlite import SqliteLedger

    service = _service()
    with SqliteLedger(tmp_path / "p.db") as holder:
        holder.begin_run([])  # another run holds the ledger
        with SqliteLedger(tmp_path / "p.db") as ledger, pytest.raises(LedgerBusyError):
            service.run(ledger, notify=[receiver.url])
        holder.end_run(RunResult([]))
    (fatal,) = receiver.bodies
    assert fatal["event"] == "fatal_error" and fatal["status"] == "failed" and "in use by" in fatal["last_err"]


def test_try_count_counts_the_runs_of_a_job_as_the_status_api_does(receiver, tmp_path):
    from ferryman.progress.sqlite import SqliteLedger

    BROKEN.add(2)
    service = _service()
    with SqliteLedger(tmp_path / "p.db") as ledger:
        assert service.run(ledger, notify=[receiver.url]).exit_code == 1
        BROKEN.clear()
        assert service.run(ledger, notify=[receiver.url]).ok  # a manual re-run of the unfinished job
    assert [b["try_count"] for b in receiver.bodies] == [1, 1, 1, 2, 2, 2]
