"""Faults of the status server: the end of a run, exposure, half-open connections, large ledgers.

Real ``python -m ferryman`` processes on real SQLite files, real signals, raw sockets against a
real uvicorn, and ledgers with 100k failed records written through the ledger's own API.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import helpers
import httpx
import ledger_files
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman.cli import cli
from ferryman.progress.model import Action, FailedRecord, MigrationEntry, MigrationProgress
from ferryman.progress.sqlite import FAILED_INDEX, SqliteLedger
from ferryman.progress.sqlite.schema import objects
from ferryman.report import RunResult
from ferryman.server import BackgroundServer, LedgerStatusSource, LiveStatusSource, create_app
from ferryman.server import app as server_app
from ferryman.server.background import KEEP_ALIVE, _is_loopback
from ferryman.server.protocol import HEAD_TIMEOUT
from ferryman.server.sources import read_view
from ferryman.server.status import FAILED_RECORDS_SHOWN

REPO = Path(__file__).resolve().parents[2]

TARGET = '''\
import os, sqlite3, time
from contextlib import closing
from ferryman import Retry, SqlStore, migration

HERE = os.path.dirname(os.path.abspath(__file__))
BAD = {bad!r}

for name in ("src.db", "dst.db"):
    with closing(sqlite3.connect(os.path.join(HERE, name))) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        if name == "src.db" and not db.execute("SELECT 1 FROM items LIMIT 1").fetchone():
            db.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"item {{i}}") for i in range(1, 61)])

stores = [SqlStore("src", "sqlite:///" + os.path.join(HERE, "src.db"), "items"),
          SqlStore("dst", "sqlite:///" + os.path.join(HERE, "dst.db"), "items")]


@migration(source="src", dest="dst", batch_size=10, save_retry=Retry(times=0, delay=0), name="copy_items")
class CopyItems:
    def transform(self, aggregates, record):
        time.sleep(0.01)
        if record["id"] in BAD:
            raise ValueError(f"bad item {{record['id']}}")
        return [{{"id": record["id"], "name": record["name"].upper()}}]


migrations = [CopyItems]
'''


def write_target(directory: Path, bad: tuple[int, ...] = ()) -> str:
    path = directory / "items.py"
    path.write_text(TARGET.format(bad=set(bad)), encoding="utf-8")
    return str(path)


def start_run(directory: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "ferryman", "run", *args], cwd=directory, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def get_result(base: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{base}/migrate/result", timeout=5) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError):
        return None


def last_run(ledger: Path) -> tuple[float | None, str | None]:
    run = ledger_files.runs(ledger)[-1]
    return run.ended_at, run.outcome


def poll_final(proc: subprocess.Popen[str], base: str, every: float) -> tuple[dict, float]:
    """The first final /migrate/result and when it arrived, polling every ``every`` seconds."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        body = get_result(base)
        if body is not None and body["status"] not in ("pending", "running"):
            return body, time.time()
        assert proc.poll() is None, f"exited {proc.returncode} before a final status was seen"
        time.sleep(every)
    raise AssertionError("no final status within 90 s")


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# --- the end of a run stays visible ----------------------------------------------------------------


@pytest.mark.parametrize("bad,sig,code", [((), signal.SIGINT, 0), ((7, 13), signal.SIGTERM, 1)],
                         ids=["completed-ctrl-c", "failed-sigterm"])
def test_a_slow_poller_sees_how_the_run_ended_and_a_signal_ends_the_linger_not_the_exit_code(
        tmp_path, bad, sig, code):
    port = helpers.free_port()
    target = write_target(tmp_path, bad)
    proc = start_run(tmp_path, target, "--progress", "p.db", "--serve", f"127.0.0.1:{port}", "--no-bar")
    base = f"http://127.0.0.1:{port}"
    try:
        body, seen_at = poll_final(proc, base, every=1.5)  # a client of the original API
        ended_at, outcome = last_run(tmp_path / "p.db")
        assert ended_at is not None and seen_at >= ended_at
        assert proc.poll() is None  # still serving: the default linger is minutes
        assert get_result(base) == body  # and what it serves is the final status
        proc.send_signal(sig)
        out, err = finish(proc, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    if bad:
        assert outcome == "failed" and body["status"] == "failed" and body["try_count"] == 1
        assert body["last_err"] == f"{body['step']}: src(id=13): ValueError: bad item 13"
    else:
        assert outcome == "completed"
        assert body == {"status": "completed", "step": "copy_items", "last_err": None, "try_count": 1}
    assert f"finished; serving the final status at {base}/ for 300 s more, Ctrl-C to stop" in out
    assert "Traceback" not in err and "interrupted" not in err
    assert get_result(base) is None  # the server is gone with the process


@pytest.mark.parametrize("bad,code,status", [((), 0, "completed"), ((5,), 1, "failed")],
                         ids=["completed", "failed"])
def test_with_linger_1_the_process_exits_by_itself_with_the_runs_code(tmp_path, bad, code, status):
    port = helpers.free_port()
    target = write_target(tmp_path, bad)
    proc = start_run(tmp_path, target, "--progress", "p.db", "--serve", f"127.0.0.1:{port}",
                     "--linger", "1", "--no-bar")
    base = f"http://127.0.0.1:{port}"
    seen: list[str] = []
    try:
        while proc.poll() is None:
            body = get_result(base)
            if body is not None and (not seen or seen[-1] != body["status"]):
                seen.append(body["status"])
            time.sleep(0.05)
        out, err = finish(proc, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert seen[-1] == status and "running" in seen, seen
    assert "for 1 s more, Ctrl-C to stop" in out
    summary_at, linger_at = out.index("copy_items"), out.index("finished; serving")
    assert summary_at < linger_at  # the run's summary comes first, not after the linger


def test_linger_0_stops_at_once_and_linger_needs_serve(tmp_path):
    port = helpers.free_port()
    target = write_target(tmp_path)
    proc = start_run(tmp_path, target, "--progress", "p.db", "--serve", f"127.0.0.1:{port}",
                     "--linger", "0", "--no-bar")
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "finished; serving" not in out
    result = CliRunner().invoke(cli, ["run", target, "--linger", "5"])
    assert result.exit_code == 2 and "--linger is for --serve" in result.output


# --- exposure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("fe80::1%2", False),
])
def test_what_counts_as_loopback(host, loopback):
    assert _is_loopback(host) is loopback


def test_binding_beyond_loopback_warns_in_one_stderr_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    serve = subprocess.Popen(
        [sys.executable, "-m", "ferryman", "serve", "--progress", "p.db", "--host", "0.0.0.0",
         "--port", "0"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stdout is not None
        ready = serve.stdout.readline()
        assert "serving the status of p.db at http://0.0.0.0:" in ready
        serve.send_signal(signal.SIGINT)
        _, err = finish(serve, timeout=30)
    finally:
        if serve.poll() is None:
            serve.kill()
    warning = [line for line in err.splitlines() if line.startswith("ferryman: warning: ")]
    assert len(warning) == 1, err
    assert "listens on 0.0.0.0:" in warning[0] and "beyond loopback" in warning[0]
    assert "record ids and failure causes" in warning[0]

    for host, warnings in (("0.0.0.0", 1), ("127.0.0.1", 0)):
        directory = tmp_path / host
        directory.mkdir()
        run = start_run(directory, write_target(directory), "--serve", f"{host}:0", "--linger", "0", "--no-bar")
        _, err = finish(run)
        assert run.returncode == 0, err
        assert sum("beyond loopback" in line for line in err.splitlines()) == warnings, err


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_server_beside_a_run_or_the_demo_warns_beyond_loopback(tmp_path):
    app = create_app(LedgerStatusSource(tmp_path / "p.db"))
    logger, collect = logging.getLogger("ferryman"), Collect()
    logger.addHandler(collect)  # the CLI's setup stops propagation to the root (and caplog)
    try:
        with BackgroundServer(app, host="0.0.0.0") as exposed:
            pass
        with BackgroundServer(app, host="127.0.0.1"):
            pass
    finally:
        logger.removeHandler(collect)
    messages = collect.messages
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"the status server listens on {exposed.url.removeprefix('http://')}, "
                                  "beyond loopback")


# --- connections that never finish a request ---------------------------------------------------


def closed_after(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closed ``sock`` (reading what it sent); fails after ``limit``."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"still open after {limit} s (received {received[:80]!r})") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return time.monotonic() - started, received
        received += chunk


def test_a_connection_that_never_completes_a_request_is_closed_within_the_deadline(tmp_path):
    app = create_app(LedgerStatusSource(tmp_path / "p.db"))
    request = b"GET /migrate/result HTTP/1.1\r\nHost: x\r\n\r\n"
    with BackgroundServer(app) as server:
        host, port = server.url.removeprefix("http://").split(":")
        address = (host, int(port))
        silent = socket.create_connection(address)
        half_line = socket.create_connection(address)
        half_line.sendall(b"GET /migrate/res")
        half_head = socket.create_connection(address)
        half_head.sendall(b"GET /migrate/result HTTP/1.1\r\nHost: x\r\n")
        then_half = socket.create_connection(address)  # one good request, then half of the next
        then_half.sendall(request + b"GET /migrate/result HTTP/1.1\r\n")
        idle = socket.create_connection(address)  # one good request, then nothing (keep-alive)
        idle.sendall(request)
        opened = time.monotonic()
        results = {name: closed_after(sock, HEAD_TIMEOUT + 15) for name, sock in [
            ("silent", silent), ("half_line", half_line), ("half_head", half_head),
            ("then_half", then_half), ("idle", idle)]}
        waited = time.monotonic() - opened
        assert httpx.get(f"{server.url}/migrate/result").json()["status"] == "pending"  # still serving
    for sock in (silent, half_line, half_head, then_half, idle):
        sock.close()
    assert waited >= min(HEAD_TIMEOUT, KEEP_ALIVE) - 0.5  # closed by the deadline, not at once
    for name in ("silent", "half_line", "half_head"):
        assert results[name][1] == b"", name  # closed without an answer
    for name in ("then_half", "idle"):
        assert results[name][1].startswith(b"HTTP/1.1 200 OK"), name  # the complete request was answered
        assert results[name][1].count(b"HTTP/1.1 ") == 1, name


def test_a_slow_answer_is_not_cut_by_the_head_deadline(tmp_path, monkeypatch):
    source = LedgerStatusSource(tmp_path / "p.db")
    real = source.snapshot

    def slow_snapshot():
        time.sleep(HEAD_TIMEOUT + 1)
        return real()

    monkeypatch.setattr(source, "snapshot", slow_snapshot)
    with BackgroundServer(create_app(source)) as server:
        response = httpx.get(f"{server.url}/migrate/result", timeout=HEAD_TIMEOUT + 30)
    assert response.status_code == 200 and response.json()["status"] == "pending"


# --- a ledger with 100k failed records -------------------------------------------------------------

IDENTITY = "shop.CopyOrders"
FAILED = 100_000


def failures(ids, when: datetime) -> list[FailedRecord]:
    return [FailedRecord(i, f"order {i}", f"Traceback ...\nValueError: order {i} has no customer",
                         Action.RETRY, when + timedelta(microseconds=i)) for i in ids]


@pytest.fixture(scope="module")
def big_ledger(tmp_path_factory) -> Path:
    """100k failures recorded page by page as a run does, then 1,000 set to IGNORE and 500 of
    them succeeding on a retry (which deletes their failed entries)."""
    path = tmp_path_factory.mktemp("big") / "big.db"
    ledger = SqliteLedger(path)
    when = datetime(2024, 6, 1, 3, 0)
    for start in range(1, FAILED + 1, 5000):
        ledger.record(IDENTITY, [], failures(range(start, start + 5000), when))
        ledger.checkpoint()
    assert ledger.set_action(IDENTITY, range(1, 1001), Action.IGNORE) == 1000
    ledger.record(IDENTITY, list(range(2001, 2501)), [])
    ledger.close()
    return path


def test_progress_of_100k_failed_records_is_a_bounded_list_and_the_right_total(big_ledger):
    with ledger_files.reader(big_ledger) as reader:
        counted = reader.count_failed()[IDENTITY]
    retry, ignored = counted["RETRY"], counted["IGNORE"]
    assert (retry, ignored) == (FAILED - 1000 - 500, 1000)
    with BackgroundServer(create_app(LedgerStatusSource(big_ledger))) as server, \
            httpx.Client(base_url=server.url) as client:
        progress = client.get("/migrate/progress").json()
        metrics = client.get("/metrics").text
    assert progress["failed_total"] == retry + ignored
    assert [f["id"] for f in progress["failed_records"]] == list(range(FAILED, FAILED - FAILED_RECORDS_SHOWN, -1))
    migration_row = progress["migrations"][0]
    assert (migration_row["failed"], migration_row["ignored"]) == (retry, ignored)
    assert progress["status"] == "failed" and str(retry) in progress["last_err"]
    assert f"ferryman_failed_records {retry + ignored}\n" in metrics


def test_reading_the_status_of_100k_failed_records_does_not_scan_them(big_ledger):
    """Counted in SQLite virtual-machine steps, not seconds: reading the view costs the same
    whether the ledger holds 100 failures or 100k (a scan would take millions of steps)."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    with ledger_files.reader(big_ledger) as reader:
        reader.conn.set_progress_handler(count, 100)
        view = read_view(reader)
    assert view.failed_total == FAILED - 500 and len(view.failed_records) == FAILED_RECORDS_SHOWN
    assert steps[0] * 100 < 20_000, f"{steps[0] * 100} steps"


def test_a_ledger_written_before_the_counters_gets_them_right_when_opened(tmp_path):
    path = tmp_path / "old.db"
    ledger = SqliteLedger(path)
    ledger.record(IDENTITY, [], failures(range(1, 301), datetime(2024, 1, 1)))
    ledger.checkpoint()
    ledger.set_action(IDENTITY, range(1, 11), Action.IGNORE)
    ledger.close()
    ledger_files.without_failure_counters(path, "300")  # as an older ferryman left it
    read_only = LedgerStatusSource(path).snapshot()  # a reader alone counts, and changes nothing
    assert read_only.failed_total == 299
    assert "failed_count" not in ledger_files.row_counts(path)
    SqliteLedger(path).close()
    with ledger_files.reader(path) as reader:
        assert reader.failed_counts() == reader.count_failed() == {IDENTITY: {"IGNORE": 10, "RETRY": 289}}
        assert len(FAILED_INDEX) == len({name for name in objects(reader.conn)
                                         if name == "failed_seq" or name.startswith("failed_count")})


OPS = st.lists(st.one_of(
    st.tuples(st.just("fail"), st.sampled_from(["a.M1", "a.M2"]), st.lists(st.integers(1, 30), max_size=8)),
    st.tuples(st.just("succeed"), st.sampled_from(["a.M1", "a.M2"]), st.lists(st.integers(1, 30), max_size=8)),
    st.tuples(st.just("ignore"), st.sampled_from(["a.M1", "a.M2"]), st.lists(st.integers(1, 30), max_size=8)),
    st.tuples(st.just("retry_all"), st.sampled_from(["a.M1", "a.M2"]), st.just([])),
    st.tuples(st.just("import"), st.just("a.M1"), st.lists(st.integers(1, 30), max_size=8)),
), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_the_kept_counts_always_equal_a_count_of_the_failed_records(tmp_path_factory, ops):
    path = tmp_path_factory.mktemp("prop") / "p.db"
    ledger = SqliteLedger(path)
    when = datetime(2024, 1, 1)
    try:
        for kind, identity, ids in ops:
            unique = list(dict.fromkeys(ids))
            if kind == "fail":
                ledger.record(identity, [], failures(unique, when))
            elif kind == "succeed":
                ledger.record(identity, unique, [])
            elif kind == "ignore":
                ledger.set_action(identity, unique, Action.IGNORE)
            elif kind == "retry_all":
                ledger.set_action(identity, None, Action.RETRY)
            else:
                entry = MigrationEntry(identity)
                entry.failed = {f.id: f for f in failures(unique, when)}
                ledger.import_progress(MigrationProgress(migrations={identity: entry}))
            ledger.checkpoint()
            assert ledger.failed_counts() == ledger.count_failed(), (kind, identity, unique)
    finally:
        ledger.close()


# --- polling stays cheap -------------------------------------------------------------------------


class CountingSource:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.snapshots = 0

    def snapshot(self):
        self.snapshots += 1
        return self.inner.snapshot()

    def version(self):
        return self.inner.version()

    def events(self, after, limit):
        return self.inner.events(after, limit)

    def verification(self):
        return self.inner.verification()


def test_many_polls_read_the_source_at_most_once_per_refresh_and_at_once_when_it_ends():
    live = LiveStatusSource()
    source = CountingSource(live)
    with BackgroundServer(create_app(source)) as server, httpx.Client(base_url=server.url) as client:
        live.attempt_started(1)
        live.run_started([])
        started = time.monotonic()
        bodies = [client.get(path).content for _ in range(40)
                  for path in ("/migrate/result", "/migrate/progress", "/metrics")]
        elapsed = time.monotonic() - started
        assert source.snapshots <= 2 + elapsed / server_app.REFRESH, (source.snapshots, elapsed)
        assert json.loads(bodies[0])["status"] == "running"
        live.run_finished(RunResult([]))
        assert client.get("/migrate/result").json()["status"] == "completed"  # not up to REFRESH late
