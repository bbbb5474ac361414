"""A migration run in key-range partitions by worker processes (``ferryman run --workers N``).

Real ``python -m ferryman`` processes: the source is an SQLite file, the destination a
PostgreSQL table without a unique key (a record written twice shows as two rows).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import poll_until
from sqlalchemy.engine import make_url

from ferryman.progress.files import open_ledger

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[1]
ROWS = 20_000
FAILING = 1_000
"""Records whose id is a multiple of this fail until the file ``fixed`` exists (a file ``slow``
makes the run last some seconds more)."""

TARGET = '''\
import os
import time
from ferryman import SqlStore, migration

HERE = os.path.dirname(os.path.abspath(__file__))
SLOW = os.path.exists(os.path.join(HERE, "slow"))  # a run that lasts long enough to act during it

stores = [SqlStore("src", "sqlite:///" + os.path.join(HERE, "src.db"), "items"),
          SqlStore("dst", {dest_url!r}, "items"),
          SqlStore("local", "sqlite:///" + os.path.join(HERE, "local.db"), "items")]


@migration(source="src", dest="{dest}", name="copy_items", batch_size=300)
class CopyItems:
    def transform(self, aggregates, record):
        if record["id"] % {failing} == 0 and not os.path.exists(os.path.join(HERE, "fixed")):
            raise ValueError("not fixed yet")
        if SLOW and record["id"] % 100 == 0:
            time.sleep(0.01)
        return [{{"id": record["id"], "name": record["name"]}}]


migrations = [CopyItems]
'''


def make_target(directory: Path, dest_url: str, dest: str = "dst", rows: int = ROWS) -> None:
    with sqlite3.connect(directory / "src.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        db.executemany("INSERT INTO items VALUES (?, ?)", ((i, f"item {i}") for i in range(1, rows + 1)))
    db.close()
    with sqlite3.connect(directory / "local.db") as db:
        db.execute("CREATE TABLE items (id INTEGER NOT NULL, name TEXT NOT NULL)")
    db.close()
    (directory / "target.py").write_text(TARGET.format(dest_url=dest_url, dest=dest, failing=FAILING))


LEDGERS = ["sqlite", "postgresql"]
"""The progress ledger: the default SQLite file beside the target, or a schema of the
destination's PostgreSQL database (what workers on other hosts reach)."""


@pytest.fixture(params=LEDGERS)
def setting(request, tmp_path: Path, postgres_url: str):
    """The target's directory, the destination's engine and the run's ``--progress``."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id BIGINT NOT NULL, name TEXT NOT NULL)")  # no key
    make_target(tmp_path, postgres_url)
    progress = "ferryman-progress.db" if request.param == "sqlite" else pg_ledger(postgres_url)
    yield tmp_path, engine, progress
    engine.dispose()


def pg_ledger(postgres_url: str) -> str:
    """A PostgreSQL ledger in schema ``ledger`` of the test's database."""
    server = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    return f"{server}?schema=ledger"


def stop_all(*procs: subprocess.Popen[str]) -> None:
    """Kill what still runs of ``procs`` (a test that failed half-way)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def ferryman(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "ferryman", *args], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=300)


def run(directory: Path, *args: str, progress: str = "ferryman-progress.db") -> subprocess.CompletedProcess[str]:
    return ferryman(directory, "run", "target.py", "--no-bar", "--workers", "2", "--progress", progress, *args)


def summary(result: subprocess.CompletedProcess[str]) -> str:
    return next(line for line in result.stdout.splitlines() if line.startswith("copy_items: "))


def partition_schemas(engine: sa.Engine) -> list[str]:
    """The schemas a PostgreSQL ledger keeps partitions in (none once a run folded them)."""
    with engine.connect() as conn:
        return [name for (name,) in conn.exec_driver_sql(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, 'ledger_p_')")]


def dest_rows(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        rows, distinct = conn.exec_driver_sql("SELECT count(*), count(DISTINCT id) FROM items").one()
    return rows, distinct


def ledger_counts(directory: Path, progress: str = "ferryman-progress.db") -> tuple[int, list[tuple[int, str]]]:
    """(succeeded ids, failed records as (id, action)) in the run's ledger."""
    ledger = open_ledger(progress if "://" in progress else str(directory / progress), read_only=True)
    try:
        progress = ledger.progress()
        (entry,) = progress.migrations.values()
        return len(entry.succeeded), sorted((f.id, f.action.value) for f in entry.failed.values())
    finally:
        ledger.close()


def test_workers_migrate_every_record_once_and_the_ledger_and_counts_say_so(setting):
    directory, engine, progress = setting
    (directory / "fixed").touch()
    first = run(directory, progress=progress)
    assert first.returncode == 0, first.stderr
    assert summary(first) == (f"copy_items: completed - {ROWS:,} migrated, 0 failed, 0 already done, "
                              f"0 ignored, {ROWS:,} written")
    assert dest_rows(engine) == (ROWS, ROWS)
    assert ledger_counts(directory, progress) == (ROWS, [])
    assert not (directory / "ferryman-progress.db.parts").exists()  # folded into the ledger
    assert partition_schemas(engine) == []

    again = run(directory, progress=progress)
    assert again.returncode == 0, again.stderr
    assert summary(again).startswith(f"copy_items: completed - 0 migrated, 0 failed, {ROWS:,} already done")
    assert dest_rows(engine) == (ROWS, ROWS)


def test_failed_records_are_kept_fixed_and_retried_or_ignored_as_in_one_process(setting):
    directory, engine, progress = setting
    failing = ROWS // FAILING
    first = run(directory, progress=progress)
    assert first.returncode == 1
    assert summary(first).startswith(f"copy_items: failed - {ROWS - failing:,} migrated, {failing} failed")
    resume = next(line for line in first.stdout.splitlines() if line.endswith("# resumes: only what is left"))
    assert resume.split("#")[0].rstrip().endswith(" --workers 2"), resume  # the next run as this one ran
    succeeded, failed = ledger_counts(directory, progress)
    assert (succeeded, len(failed)) == (ROWS - failing, failing)
    assert {action for _, action in failed} == {"RETRY"}
    listed = ferryman(directory, "failed", "list", "--progress", progress, "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == failing

    ignored = ferryman(directory, "failed", "ignore", "--progress", progress,
                       "--migration", "copy_items", str(FAILING))
    assert ignored.returncode == 0, ignored.stderr
    (directory / "fixed").touch()
    second = run(directory, progress=progress)
    assert second.returncode == 0, second.stderr  # the retry pass ran the others, now fixed
    assert summary(second) == (f"copy_items: completed - {failing - 1} migrated, 0 failed, "
                               f"{ROWS - failing:,} already done, 1 ignored, {failing - 1} written")
    assert dest_rows(engine) == (ROWS - 1, ROWS - 1)
    assert ledger_counts(directory, progress) == (ROWS - 1, [(FAILING, "IGNORE")])


def test_a_destination_taking_one_writer_runs_in_one_process_and_says_why(tmp_path, postgres_url):
    make_target(tmp_path, postgres_url, dest="local")
    (tmp_path / "fixed").touch()
    result = run(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "copy_items runs in one process: its destination 'local' takes one writer at a time" in result.stderr
    with sqlite3.connect(tmp_path / "local.db") as db:
        assert db.execute("SELECT count(*), count(DISTINCT id) FROM items").fetchone() == (ROWS, ROWS)
    db.close()


def test_a_worker_for_a_migration_the_target_lacks_is_refused_in_one_line(setting):
    directory, _, progress = setting
    (directory / "fixed").touch()
    assert run(directory, progress=progress).returncode == 0
    result = ferryman(directory, "worker", "target.py", "--progress", progress, "--migration", "nowhere.Missing")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ferryman: error: the target has no migration 'nowhere.Missing' (a name, an identity "
                           "or its key in "), line
    by_name = ferryman(directory, "worker", "target.py", "--progress", progress, "--migration", "copy_items")
    assert (by_name.returncode, by_name.stderr) == (0, "")  # its name will do; no run has partitions now


def test_workers_are_fewer_when_the_destination_server_lacks_connections(setting):
    directory, engine, _ = setting
    (directory / "fixed").touch()
    with (directory / "target.py").open("a") as target:  # the server has one connection to spare
        target.write(
            "from ferryman import ServerConnections\n"
            "_asked = stores[1].server_connections\n"
            "def _one_to_spare():\n"
            "    found = _asked()\n"
            "    return ServerConnections(found.server, found.in_use + 1, found.in_use)\n"
            "stores[1].server_connections = _one_to_spare\n")
    result = ferryman(directory, "run", "target.py", "--no-bar", "--workers", "3")
    assert result.returncode == 0, result.stderr
    assert "copy_items: 1 worker(s) instead of 3: postgresql://" in result.stderr
    assert "has 1 free connection(s)" in result.stderr and "each worker may open 1" in result.stderr
    assert summary(result).startswith(f"copy_items: completed - {ROWS:,} migrated, 0 failed")
    assert dest_rows(engine) == (ROWS, ROWS)


def test_workers_started_elsewhere_run_the_partitions_of_a_run_that_waits_for_them(tmp_path, postgres_url):
    """``--engine external`` with a PostgreSQL ledger: the run splits and waits; ``ferryman
    worker`` processes started by something else, in another directory, with no migration
    named, claim the partitions (started before the run, or as it starts: they wait for it) and
    end with it."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id BIGINT NOT NULL, name TEXT NOT NULL)")
    make_target(tmp_path, postgres_url)
    (tmp_path / "fixed").touch()
    (tmp_path / "slow").touch()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    progress = pg_ledger(postgres_url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}

    def worker(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "ferryman", "worker", str(tmp_path / "target.py"),
                                 "--progress", progress, *args], cwd=elsewhere, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    early = worker("--wait", "120")
    try:
        coordinator = subprocess.Popen(
            [sys.executable, "-m", "ferryman", "run", "target.py", "--no-bar", "--workers", "2",
             "--engine", "external", "--progress", progress], cwd=tmp_path, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        late = worker("--wait", "120")
        out, err = coordinator.communicate(timeout=240)
        assert coordinator.returncode == 0, err
        assert "copy_items: waiting for workers to run its 8 partitions: ferryman worker target.py" in err
        assert summary(subprocess.CompletedProcess([], 0, out, err)) == (
            f"copy_items: completed - {ROWS:,} migrated, 0 failed, 0 already done, 0 ignored, {ROWS:,} written")
        for proc in (early, late):
            _, worker_err = proc.communicate(timeout=60)
            assert proc.returncode == 0, worker_err
    finally:
        stop_all(early, late)
    assert dest_rows(engine) == (ROWS, ROWS)
    assert ledger_counts(tmp_path, progress) == (ROWS, [])
    assert partition_schemas(engine) == []
    engine.dispose()


def test_a_run_whose_workers_are_started_elsewhere_says_again_while_none_is_at_work(
        tmp_path, postgres_url, monkeypatch, caplog):
    """In process (the library's call): with ``ExternalWorkers`` the run starts no worker, says
    so, says it again while none holds a partition, and ends once a worker started later ran
    them all."""
    import logging
    import threading

    from ferryman import commands, partitioned
    from ferryman.launchers import ExternalWorkers

    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id BIGINT NOT NULL, name TEXT NOT NULL)")
    make_target(tmp_path, postgres_url)
    (tmp_path / "fixed").touch()
    progress = pg_ledger(postgres_url)
    monkeypatch.setattr(partitioned, "REMIND_AFTER", 0.5)
    monkeypatch.chdir(tmp_path)
    late: list[subprocess.CompletedProcess[str]] = []
    starter = threading.Timer(3.0, lambda: late.append(ferryman(tmp_path, "worker", "target.py", "--progress",
                                                                progress, "--wait", "30")))
    starter.start()
    try:
        with caplog.at_level(logging.WARNING, logger="ferryman"):
            result = commands.run(str(tmp_path / "target.py"), progress=progress, workers=2,
                                  launcher=ExternalWorkers())
    finally:
        starter.join()
    assert result.ok, result.summary()
    assert late and late[0].returncode == 0, late[0].stderr if late else "no worker"
    waits = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert waits[0].startswith("copy_items: waiting for workers to run its 8 partitions: ferryman worker ")
    assert any(w.startswith("copy_items: still waiting: no worker holds any of its partitions") for w in waits)
    assert dest_rows(engine) == (ROWS, ROWS)
    engine.dispose()


def test_a_stop_of_a_run_stops_the_workers_it_did_not_start_at_a_batch_boundary(tmp_path, postgres_url):
    """The coordinator of ``--engine external`` cannot signal its workers: once it closes the
    round (a Ctrl-C), each stops its partition at a batch boundary within seconds (not at its
    end), saving its progress, and ends with the run (exit 0); the next run goes on from there,
    exactly once."""
    rows = 200_000
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id BIGINT NOT NULL, name TEXT NOT NULL)")
    make_target(tmp_path, postgres_url, rows=rows)
    with (tmp_path / "target.py").open("a") as target:  # 0.5 ms a record: 12 s a partition of 25,000
        target.write("_transform = CopyItems.transform\n"
                     "def _slower(self, aggregates, record):\n"
                     "    time.sleep(0.0005)\n"
                     "    return _transform(self, aggregates, record)\n"
                     "if SLOW:\n"
                     "    CopyItems.transform = _slower\n")
    (tmp_path / "fixed").touch()
    (tmp_path / "slow").touch()
    progress = pg_ledger(postgres_url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "ferryman", "run", "target.py", "--no-bar", "--workers", "2", "--engine", "external",
         "--progress", progress], cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    worker = subprocess.Popen([sys.executable, "-m", "ferryman", "worker", "target.py", "--progress", progress,
                               "--wait", "60"], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        poll_until(lambda: dest_rows(engine)[0] > 2_000, timeout=120, what="the worker to write")
        coordinator.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        _, err = coordinator.communicate(timeout=120)
        assert coordinator.returncode == 130, err
        assert time.monotonic() - stopped < 7, err  # not the ~10 s left of the worker's partition
        _, worker_err = worker.communicate(timeout=60)
        assert worker.returncode == 0, worker_err
    finally:
        stop_all(coordinator, worker)
    done = ledger_counts(tmp_path, progress)[0]
    assert dest_rows(engine) == (done, done) and 0 < done < rows  # what it wrote, recorded once
    (tmp_path / "slow").unlink()
    again = run(tmp_path, progress=progress)
    assert again.returncode == 0, again.stderr
    assert dest_rows(engine) == (rows, rows)
    engine.dispose()
