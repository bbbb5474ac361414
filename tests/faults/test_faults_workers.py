"""Faults in a run with workers: workers killed at random moments, the coordinator killed.

Real ``python -m ferryman run --workers N`` processes and SIGKILL. 300,000 records from an
SQLite file or a PostgreSQL table into a PostgreSQL table WITHOUT a unique key, so that a record
written twice shows as two rows; the check at the end is exact: every id once, the ledger's
succeeded ids and the run's counts equal to the source.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import poll_until
from sqlalchemy.engine import make_url

from ferryman.progress.files import open_ledger
from ferryman.server import LedgerStatusSource

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
ROWS = 300_000
KILLS = 10

TARGET = '''\
import os
from ferryman import SqlStore, migration

HERE = os.path.dirname(os.path.abspath(__file__))

stores = [SqlStore("src", {source_url!r}, "src_items"), SqlStore("dst", {dest_url!r}, "items")]


@migration(source="src", dest="dst", name="copy_items")
class CopyItems:
    def transform(self, aggregates, record):
        sum(range(300))  # a little work, so that a run lasts long enough for every kill
        return [{{"id": record["id"], "name": record["name"].upper()}}]


migrations = [CopyItems]
'''


SOURCES = ["sqlite", "postgres"]
PG_LEDGER = "+pg-ledger"
WITH_LEDGERS = [*SOURCES, "postgres" + PG_LEDGER]
"""A source with ``+pg-ledger``: the progress ledger is a schema of the destination's database
(the ledger that workers on other hosts reach), not an SQLite file."""


@dataclass
class Setting:
    directory: Path
    engine: sa.Engine
    processes: list[subprocess.Popen[str]]
    progress: str


@pytest.fixture(params=SOURCES)
def setting(request, tmp_path: Path, postgres_url: str):
    """The target's directory, the destination's engine, the processes started and the run's
    ``--progress``; the source is an SQLite file or a table beside the destination."""
    engine = sa.create_engine(postgres_url)
    rows = ((i, f"item {i}") for i in range(1, ROWS + 1))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id BIGINT NOT NULL, name TEXT NOT NULL)")  # no key
    if request.param.startswith("sqlite"):
        source_url = "sqlite:///" + str(tmp_path / "src.db")
        with sqlite3.connect(tmp_path / "src.db") as db:
            db.execute("CREATE TABLE src_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            db.executemany("INSERT INTO src_items VALUES (?, ?)", rows)
        db.close()
    else:
        source_url = postgres_url
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE src_items (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
            conn.exec_driver_sql(f"INSERT INTO src_items SELECT i, 'item ' || i FROM generate_series(1, {ROWS}) i")
    (tmp_path / "target.py").write_text(TARGET.format(source_url=source_url, dest_url=postgres_url))
    processes: list[subprocess.Popen[str]] = []
    if request.param.endswith(PG_LEDGER):
        server = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
        progress = f"{server}?schema=ledger"
    else:
        progress = str(tmp_path / "ferryman-progress.db")
    yield Setting(tmp_path, engine, processes, progress)
    for proc in processes:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    for pid in workers_of(tmp_path):
        os.kill(pid, signal.SIGKILL)
    engine.dispose()


def start(setting: Setting, workers: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    directory, processes = setting.directory, setting.processes
    n = len(processes)
    # files, not pipes: workers inherit them, and a pipe would stay open as long as they live
    with open(directory / f"out{n}.txt", "w") as out, open(directory / f"err{n}.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ferryman", "run", "target.py", "--no-bar", "--workers",
                                 str(workers), "--progress", setting.progress], cwd=directory, env=env, stdout=out, stderr=err, text=True,
                                start_new_session=True)
    processes.append(proc)
    return proc


def ended(setting: Setting, proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for a run started by :func:`start`; its output and error output."""
    proc.wait(timeout=600)
    n = setting.processes.index(proc)
    return (setting.directory / f"out{n}.txt").read_text(), (setting.directory / f"err{n}.txt").read_text()


def workers_of(directory: Path) -> list[int]:
    """The live worker processes whose current directory is ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            here = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"worker" in command and b"ferryman" in command and here == str(directory):
            found.append(int(entry.name))
    return found


def written(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM items").scalar_one())


def succeeded(setting: Setting) -> int:
    """The succeeded ids in the run's ledger (none failed)."""
    ledger = open_ledger(setting.progress, read_only=True)
    try:
        (entry,) = ledger.progress().migrations.values()
        assert len(entry.failed) == 0
        return len(entry.succeeded)
    finally:
        ledger.close()


def assert_every_row_once(setting: Setting) -> None:
    directory, engine = setting.directory, setting.engine
    with engine.connect() as conn:
        twice = conn.exec_driver_sql("SELECT id FROM items GROUP BY id HAVING count(*) > 1 LIMIT 5").all()
        rows, low, high = conn.exec_driver_sql("SELECT count(*), min(id), max(id) FROM items").one()
        wrong = conn.exec_driver_sql("SELECT count(*) FROM items WHERE name <> 'ITEM ' || id").scalar_one()
        parts = conn.exec_driver_sql("SELECT count(*) FROM pg_namespace WHERE starts_with(nspname, 'ledger_p_')")
    assert (twice, rows, low, high, wrong) == ([], ROWS, 1, ROWS, 0)
    assert succeeded(setting) == ROWS
    assert not (directory / "ferryman-progress.db.parts").exists()
    assert parts.scalar_one() == 0  # a PostgreSQL ledger's partitions folded too


def summary(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("copy_items: "))


@pytest.mark.parametrize("setting", WITH_LEDGERS, indirect=True)
def test_workers_killed_at_random_moments_leave_every_row_once(setting):
    directory, engine = setting.directory, setting.engine
    run = start(setting, workers=3)
    rng = random.Random(20261207)
    kills = 0
    while kills < KILLS and run.poll() is None:
        before = written(engine)
        time.sleep(rng.uniform(0.05, 0.2))
        # a worker that wrote nothing since the last kill may still be starting: killing
        # only those would test the give-up rule, not the recovery
        if written(engine) == before:
            continue
        pids = workers_of(directory)
        if pids:
            os.kill(rng.choice(pids), signal.SIGKILL)
            kills += 1
    out, err = ended(setting, run)
    assert kills == KILLS, f"the run ended before every kill: make it longer\n{out}\n{err}"
    assert run.returncode == 0, err
    assert "a worker was killed by SIGKILL" in err
    assert summary(out).startswith(f"copy_items: completed - {ROWS:,} migrated, 0 failed, 0 already done")
    assert_every_row_once(setting)


@pytest.mark.parametrize("setting", WITH_LEDGERS, indirect=True)
def test_a_coordinator_killed_leaves_its_workers_to_the_next_run_which_folds_them(setting):
    directory, engine = setting.directory, setting.engine
    first = start(setting, workers=2)
    poll_until(lambda: written(engine) > ROWS // 4, timeout=120, what="a quarter of the rows")
    first.kill()  # the coordinator alone: its workers go on, orphaned
    first.wait(timeout=60)
    assert workers_of(directory)
    snapshot = LedgerStatusSource(setting.progress).snapshot()  # its workers are at it
    assert (snapshot.status, snapshot.last_err) == ("running", None), snapshot.last_err

    second = start(setting, workers=2)
    out, err = ended(setting, second)
    assert second.returncode == 0, err
    line = summary(out)
    migrated, already = (int(line.split(" - ")[1].split()[i].replace(",", "")) for i in (0, 4))
    assert migrated + already == ROWS and already > 0, line
    assert_every_row_once(setting)


def test_a_second_signal_to_the_coordinator_stops_its_workers_and_folds_what_they_did(setting):
    directory, engine = setting.directory, setting.engine
    first = start(setting, workers=2)
    poll_until(lambda: written(engine) > ROWS // 10, timeout=120, what="a tenth of the rows")
    first.send_signal(signal.SIGINT)
    time.sleep(0.2)
    first.send_signal(signal.SIGINT)  # a supervisor that does not wait
    out, _err = ended(setting, first)
    assert first.returncode == 130
    assert not workers_of(directory)  # stopped with it, not left to finish their ranges
    migrated = int(summary(out).split(" - ")[1].split()[0].replace(",", ""))
    assert migrated == written(engine) < ROWS  # the counts say what the destination holds
    assert succeeded(setting) == migrated  # folded into the ledger

    second = start(setting, workers=2)
    out, err = ended(setting, second)
    assert second.returncode == 0, err
    assert summary(out).startswith(f"copy_items: completed - {ROWS - migrated:,} migrated, 0 failed, "
                                   f"{migrated:,} already done")
    assert_every_row_once(setting)


@pytest.mark.parametrize("setting", [source + PG_LEDGER for source in SOURCES], indirect=True)
def test_a_worker_paused_past_its_lease_on_another_host_is_taken_over_and_fenced_off(setting):
    """A worker of another host (its own UTS namespace) SIGSTOPped in the middle of a partition
    of a run with ``--engine external``: once its heartbeat is stale, a worker here takes the
    partition over; SIGCONTed, the paused one writes nothing more and stops. Every row once, no
    false failed record."""
    directory, engine = setting.directory, setting.engine
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "FERRYMAN_LEASE_STALE_AFTER": "4"}
    worker = [sys.executable, "-m", "ferryman", "worker", "target.py", "--progress", setting.progress, "--wait", "60"]

    def spawn(name: str, command: list[str]) -> subprocess.Popen[str]:
        with open(directory / f"{name}.out", "w") as out, open(directory / f"{name}.err", "w") as err:
            proc = subprocess.Popen(command, cwd=directory, env=env, stdout=out, stderr=err, text=True,
                                    start_new_session=True)
        setting.processes.append(proc)
        return proc

    coordinator = spawn("run", [sys.executable, "-m", "ferryman", "run", "target.py", "--no-bar", "--workers", "2",
                                "--engine", "external", "--progress", setting.progress])
    paused = spawn("paused", ["unshare", "--uts", "sh", "-c", 'hostname elsewhere.example && exec "$@"', "-",
                              *worker])
    poll_until(lambda: written(engine) > 5_000, timeout=120, what="the first worker to write")
    paused.send_signal(signal.SIGSTOP)
    at_pause = written(engine)
    time.sleep(6)  # past the stale limit: its heartbeat, on the database's clock, is old
    here = spawn("here", worker)
    poll_until(lambda: written(engine) > at_pause + 30_000 or here.poll() is not None, timeout=120,
               what="the worker here to take over")
    paused.send_signal(signal.SIGCONT)
    assert paused.wait(timeout=120) == 1
    assert "lease" in (directory / "paused.err").read_text()
    assert here.wait(timeout=300) == 0, (directory / "here.err").read_text()
    assert coordinator.wait(timeout=300) == 0, (directory / "run.err").read_text()
    out = (directory / "run.out").read_text()
    assert summary(out).startswith(f"copy_items: completed - {ROWS:,} migrated, 0 failed, 0 already done")
    assert_every_row_once(setting)


def test_a_ctrl_c_at_the_terminal_stops_the_workers_once_at_a_batch_boundary(setting):
    """The terminal sends SIGINT to the whole foreground process group: the workers, in sessions
    of their own, hear of it once, from the coordinator, and stop at a batch boundary."""
    engine = setting.engine
    first = start(setting, workers=2)
    poll_until(lambda: written(engine) > ROWS // 10, timeout=120, what="a tenth of the rows")
    workers = workers_of(setting.directory)
    assert workers and all(os.getpgid(pid) != first.pid for pid in workers)  # out of the terminal's reach
    os.killpg(first.pid, signal.SIGINT)  # its own group (start_new_session): as a terminal does
    out, err = ended(setting, first)
    assert first.returncode == 130, err
    assert "SIGINT again" not in err and "exit code" not in err, err  # one stop, no worker failed
    migrated = int(summary(out).split(" - ")[1].split()[0].replace(",", ""))
    assert migrated == written(engine) == succeeded(setting) < ROWS  # each stopped at a batch boundary

    second = start(setting, workers=2)
    out, err = ended(setting, second)
    assert second.returncode == 0, err
    assert_every_row_once(setting)
