"""A PostgreSQL progress ledger through real ``python -m ferryman`` processes and signals: the CLI
end to end, hard kills, a paused holder whose lease another host takes over.

The source is SQLite, the destination a PostgreSQL table WITHOUT a unique key (a record written
twice shows as two rows), the ledger a schema of the destination's own database
(``--progress postgresql://...?schema=ledger``). ``FERRYMAN_LEASE_STALE_AFTER`` is 2 s.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import helpers
import ledgers
import pytest
import sqlalchemy as sa
from helpers import poll_until

from ferryman.progress.lease import Process
from ferryman.progress.postgres import PgLocation

STALE_AFTER = 2.0
ROWS = 20_000
GATE_AT = 5_000

FAIL_EVERY = 997
BAD = [i for i in range(1, ROWS + 1) if i % FAIL_EVERY == 0]


class Setting:
    """A target copying ROWS items from ``src.db`` into PostgreSQL, with its ledger in a schema
    of the same database; the processes it started are ended after the test."""

    def __init__(self, directory: Path, postgres_url: str) -> None:
        self.directory = directory
        self.engine = sa.create_engine(postgres_url)
        self.ledger = ledgers.PostgresBackend(postgres_url, schema="ledger")
        self.progress = self.ledger.location
        self.processes: list[subprocess.Popen[str]] = []

    def start_run(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ferryman", "run", "target.py", "--progress", self.progress, "--no-bar", *args],
            cwd=self.directory, env=ledgers.env_with_repo(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.processes.append(proc)
        return proc

    def ferryman(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ferryman", *args], cwd=self.directory,
                              env=ledgers.env_with_repo(), capture_output=True, text=True, timeout=300)

    def counts(self) -> tuple[int, int]:
        """(rows, distinct ids) in the destination."""
        with self.engine.connect() as conn:
            rows, distinct = conn.exec_driver_sql("SELECT count(*), count(DISTINCT id) FROM items").one()
        return rows, distinct

    def assert_every_good_id_once(self) -> None:
        with self.engine.connect() as conn:
            twice = conn.exec_driver_sql("SELECT id FROM items GROUP BY id HAVING count(*) > 1 LIMIT 5").all()
            ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM items ORDER BY id")]
        assert twice == []
        assert ids == [i for i in range(1, ROWS + 1) if i not in set(BAD)]
        with self.ledger.reader() as reader:
            (identity,) = reader.identities()
            assert sum(1 for _ in reader.iter_succeeded(identity)) == ROWS - len(BAD)
            assert sorted(r.id for r in reader.iter_failed(identity)) == BAD

    def open_transactions(self) -> int:
        """Sessions of other clients in the database with a transaction open (the run's
        destination and ledger share it)."""
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state <> 'idle'").scalar_one())


@pytest.fixture
def setting(tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FERRYMAN_LEASE_STALE_AFTER", str(STALE_AFTER))  # for this process too
    with sqlite3.connect(tmp_path / "src.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        db.executemany("INSERT INTO items VALUES (?, ?)", ((i, f"item {i}") for i in range(1, ROWS + 1)))
    db.close()
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id BIGINT NOT NULL, name TEXT NOT NULL)")  # no key
    engine.dispose()
    (tmp_path / "target.py").write_text(ledgers.gated_target(postgres_url, GATE_AT, fail_every=FAIL_EVERY))
    made = Setting(tmp_path, postgres_url)
    yield made
    for proc in made.processes:  # a stopped process would keep its database sessions forever
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.communicate(timeout=30)
    made.engine.dispose()


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ferryman: error: ") and "a bug?" not in lines[0], stderr
    return lines[0]


# --- the CLI end to end --------------------------------------------------------------------------


def test_run_status_failed_export_import_and_serve_on_a_postgresql_ledger(setting: Setting) -> None:
    (setting.directory / "open-gate").touch()
    run = setting.ferryman("run", "target.py", "--progress", setting.progress, "--no-bar")
    assert run.returncode == 1, run.stderr  # records failed: exit 1, the progress kept
    assert f"progress ledger: {PgLocation.parse(setting.progress).shown}" in run.stdout + run.stderr
    assert setting.counts() == (ROWS - len(BAD), ROWS - len(BAD))

    status = setting.ferryman("status", "--progress", setting.progress, "--json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["result"]["status"] == "failed" and body["result"]["try_count"] == 1

    listed = setting.ferryman("failed", "list", "--progress", setting.progress, "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(row["id"] for row in json.loads(listed.stdout)) == BAD

    ignored = setting.ferryman("failed", "ignore", "--progress", setting.progress, "--all")
    assert ignored.returncode == 0, ignored.stderr
    again = setting.ferryman("run", "target.py", "--progress", setting.progress, "--no-bar")
    assert again.returncode == 0, again.stderr
    assert setting.counts() == (ROWS - len(BAD), ROWS - len(BAD))  # nothing twice
    with setting.ledger.reader() as reader:
        assert [r.outcome for r in reader.runs()] == ["completed", "failed"]
        assert reader.failed_counts() == {reader.identities()[0]: {"IGNORE": len(BAD)}}

    out = setting.directory / "out.json"
    exported = setting.ferryman("progress", "export", "--progress", setting.progress, "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    other = ledgers.PostgresBackend(setting.ledger.server.rsplit("?", 1)[0], schema="imported")
    imported = setting.ferryman("progress", "import", "--progress", other.location, str(out))
    assert imported.returncode == 0, imported.stderr
    with setting.ledger.reader() as first, other.reader() as second:
        assert second.progress().migrations == first.progress().migrations

    port = helpers.free_port()
    serve = subprocess.Popen([sys.executable, "-m", "ferryman", "serve", "--progress", setting.progress,
                              "--port", str(port)], cwd=setting.directory, env=ledgers.env_with_repo(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    setting.processes.append(serve)
    assert serve.stdout is not None
    ready = serve.stdout.readline()
    assert "serving the status of" in ready and "pw" not in ready
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/migrate/result", timeout=10) as answer:
        result = json.loads(answer.read())
    assert result["status"] == "migrated" and result["try_count"] == 2
    serve.send_signal(signal.SIGINT)
    serve.communicate(timeout=30)


def test_what_cannot_use_a_postgresql_ledger_says_so_in_one_line_and_workers_can(setting: Setting) -> None:
    nowhere = setting.ferryman("status", "--progress", setting.progress)
    assert nowhere.returncode == 2 and "no progress ledger in schema ledger" in one_error_line(nowhere.stderr)
    unreachable = setting.ferryman("run", "target.py", "--progress", "postgresql://me:pw@127.0.0.1:1/db", "--no-bar")
    line = one_error_line(unreachable.stderr)
    assert unreachable.returncode == 2 and "cannot reach progress ledger" in line and "pw" not in line
    worker = setting.ferryman("worker", "target.py", "--progress", setting.progress, "--migration", "x")
    assert worker.returncode == 2 and "no progress ledger at postgresql://" in one_error_line(worker.stderr)
    assert setting.counts() == (0, 0)
    (setting.directory / "open-gate").touch()
    workers = setting.ferryman("run", "target.py", "--progress", setting.progress, "--no-bar", "--workers", "2")
    assert workers.returncode == 1, workers.stderr  # its failed records
    assert "runs in one process" not in workers.stderr  # in partitions, kept in the ledger's database
    setting.assert_every_good_id_once()
    stray = setting.ferryman("worker", "target.py", "--progress", setting.progress, "--migration", "x")
    assert stray.returncode == 2 and "the target has no migration 'x'" in one_error_line(stray.stderr)


# --- hard kills ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_hard_kills_never_lose_nor_duplicate_a_record(setting: Setting) -> None:
    (setting.directory / "open-gate").touch()
    rng = random.Random(20261207)
    for _ in range(8):
        proc = setting.start_run()

        def holding(proc: subprocess.Popen[str] = proc) -> bool:
            holder = setting.ledger.holder()
            return proc.poll() is not None or (holder is not None and holder.pid == proc.pid)

        poll_until(holding, timeout=60, what="the run to hold the ledger")
        time.sleep(rng.uniform(0.1, 1.2))  # reading, saving, committing the ledger, folding the journal
        if proc.poll() is not None:
            break
        proc.kill()
        proc.communicate(timeout=30)
    assert setting.counts()[0] < ROWS - len(BAD), "the run finished before the test could kill it"
    final = setting.start_run()
    _, err = final.communicate(timeout=300)
    assert final.returncode == 1, err  # its failed records; every other one written once
    setting.assert_every_good_id_once()
    with setting.ledger.reader() as reader:
        outcomes = [r.outcome for r in reader.runs()][::-1]
    assert outcomes[-1] == "failed" and "died" in outcomes


# --- a paused holder -------------------------------------------------------------------------------


def test_a_paused_run_whose_lease_was_taken_over_writes_nothing_more(setting: Setting) -> None:
    first = setting.start_run()
    poll_until(lambda: (setting.directory / "at-gate").exists() or first.poll() is not None, timeout=120,
               what="the run to reach the gate")
    assert first.poll() is None, first.communicate()
    # pause it where no transaction is open: what it wrote is committed
    poll_until(lambda: setting.open_transactions() == 0, timeout=30, what="no open transaction")
    first.send_signal(signal.SIGSTOP)

    def stale() -> bool:
        holder = setting.ledger.holder()
        return holder is not None and time.time() - holder.heartbeat > STALE_AFTER + 0.5

    poll_until(stale, timeout=30, what="the paused run's heartbeat to go stale")
    # another host's run judges the paused holder by its heartbeat, and takes the lease over
    other = setting.ledger.take_lease(Process(4242, "elsewhere.example", None))
    assert other.previous is not None and other.previous.pid == first.pid and other.epoch >= 2
    written, content = setting.counts(), setting.ledger.dump()
    assert 0 < written[0] < ROWS

    first.send_signal(signal.SIGCONT)
    (setting.directory / "open-gate").touch()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1, err
    line = one_error_line(err)
    assert "this run lost the lease of progress ledger postgresql://" in line
    assert "pid 4242 on elsewhere.example" in line
    assert setting.counts() == written  # not one more row
    assert setting.ledger.dump() == content  # not one more ledger row, nor a run outcome

    poll_until(stale, timeout=30, what="the other host's lease to go stale")  # it never beats
    last = setting.start_run()
    _, err = last.communicate(timeout=300)
    assert last.returncode == 1, err  # its failed records
    setting.assert_every_good_id_once()


def test_the_server_and_a_reader_elsewhere_see_the_ledger_a_run_holds(setting: Setting) -> None:
    """What `ferryman status` prints on another machine: a run holding a PostgreSQL ledger."""
    first = setting.start_run()
    poll_until(lambda: (setting.directory / "at-gate").exists() or first.poll() is not None, timeout=120,
               what="the run to reach the gate")
    status = setting.ferryman("status", "--progress", setting.progress, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["result"]["status"] == "running"
    busy = setting.ferryman("failed", "ignore", "--progress", setting.progress, "--all")
    assert busy.returncode == 2 and f"is in use by pid {first.pid}" in one_error_line(busy.stderr)
    (setting.directory / "open-gate").touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 1, err
    assert os.path.exists(setting.directory / "at-gate")


def test_a_run_whose_ledger_connection_is_cut_stops_and_the_next_resumes_exactly_once(setting: Setting) -> None:
    """The server ends the ledger's sessions mid-run (a restart, a failover, an administrator):
    the run stops in one line, and the next folds what the destination committed."""
    first = setting.start_run()
    poll_until(lambda: (setting.directory / "at-gate").exists() or first.poll() is not None, timeout=120,
               what="the run to reach the gate")
    assert first.poll() is None, first.communicate()
    with setting.engine.connect() as conn:
        cut = conn.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'ferryman' "
            "AND datname = current_database()").scalar_one()
    assert cut >= 1
    (setting.directory / "open-gate").touch()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1, err
    (line,) = err.strip().splitlines()  # one line: not the event, lease and close that fail after
    assert line.startswith("ferryman: error: ") and "progress ledger postgresql://" in line, err
    assert "a bug?" not in err
    written = setting.counts()
    assert written[0] == written[1] > 0  # what it wrote, once

    last = setting.start_run()
    _, err = last.communicate(timeout=300)
    assert last.returncode == 1, err  # its failed records
    setting.assert_every_good_id_once()


def test_run_serve_answers_from_the_postgresql_ledger(setting: Setting) -> None:
    port = helpers.free_port()
    first = setting.start_run("--serve", f"127.0.0.1:{port}", "--linger", "0")
    poll_until(lambda: (setting.directory / "at-gate").exists() or first.poll() is not None, timeout=120,
               what="the run to reach the gate")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/migrate/result", timeout=10) as answer:
        assert json.loads(answer.read())["status"] == "running"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/migrate/events?limit=2", timeout=10) as answer:
        assert [e["event"] for e in json.loads(answer.read())["events"]] == ["run.started", "migration.started"]
    (setting.directory / "open-gate").touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 1, err  # its failed records
    setting.assert_every_good_id_once()
