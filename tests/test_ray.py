"""Workers as Ray tasks (``ferryman run --workers N --engine ray``).

Real Ray (a local instance, or a cluster of several nodes on this host) and real ``python -m
ferryman`` coordinators; the same target as tests/test_partitioned.py: an SQLite source and a
PostgreSQL table without a unique key (a record written twice shows as two rows).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from helpers import poll_until
from test_partitioned import REPO, dest_rows, ferryman, ledger_counts, make_target, summary

from ferryman.cli import cli

ROWS = 50_000


@pytest.fixture
def setting(tmp_path, postgres_url, monkeypatch):
    """The target's directory and the destination's engine. PYTHONPATH names this checkout, for
    the Ray processes a test starts too: they import ferryman as the coordinator does."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id BIGINT NOT NULL, name TEXT NOT NULL)")  # no key
    make_target(tmp_path, postgres_url, rows=ROWS)
    (tmp_path / "fixed").touch()  # no record fails
    yield tmp_path, engine
    engine.dispose()


COMPLETED = f"copy_items: completed - {ROWS:,} migrated, 0 failed, 0 already done, 0 ignored, {ROWS:,} written"


def run_with_ray(directory, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ferryman", "run", "target.py", "--no-bar", "--workers", "2",
                             "--engine", "ray", *args], cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def assert_rows_once_as_the_ledger_says(directory, engine, rows: int = ROWS) -> None:
    assert dest_rows(engine) == (rows, rows)
    assert ledger_counts(directory) == (rows, [])
    assert not (directory / "ferryman-progress.db.parts").exists()  # folded into the ledger


@pytest.mark.postgres
def test_ray_tasks_on_a_local_ray_migrate_every_record_once(setting):
    directory, engine = setting
    result = ferryman(directory, "run", "target.py", "--no-bar", "--workers", "2", "--engine", "ray")
    assert result.returncode == 0, result.stderr
    assert "runs in one process" not in result.stderr  # the workers ran it
    assert summary(result) == COMPLETED
    assert_rows_once_as_the_ledger_says(directory, engine)


@pytest.mark.postgres
def test_a_stopped_run_stops_its_ray_tasks_at_a_batch_and_the_next_run_finishes(setting):
    directory, engine = setting
    (directory / "slow").touch()
    run = run_with_ray(directory)
    poll_until(lambda: dest_rows(engine)[0] >= ROWS // 10, timeout=60, what="a tenth of the rows")
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert "copy_items: interrupted" in out
    done = dest_rows(engine)[0]
    assert done < ROWS, f"the run ended before the stop: make it longer\n{out}\n{err}"
    assert_rows_once_as_the_ledger_says(directory, engine, done)  # stopped at batch boundaries, all saved

    again = ferryman(directory, "run", "target.py", "--no-bar", "--workers", "2", "--engine", "ray")
    assert again.returncode == 0, again.stderr
    assert summary(again).startswith(f"copy_items: completed - {ROWS - done:,} migrated, 0 failed, {done:,} already")
    assert_rows_once_as_the_ledger_says(directory, engine)


@pytest.mark.postgres
def test_a_ray_node_removed_mid_run_leaves_every_record_once(setting):
    from ray.cluster_utils import Cluster

    directory, engine = setting
    (directory / "slow").touch()
    # the head runs no task: each of the two workers has a node of its own
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        run = run_with_ray(directory, "--address", cluster.address)
        poll_until(lambda: dest_rows(engine)[0] >= ROWS // 10, timeout=60, what="a tenth of the rows")
        cluster.remove_node(nodes[0])  # its raylet and its worker, killed
        at_removal = dest_rows(engine)[0]
        out, err = run.communicate(timeout=120)
    finally:
        cluster.shutdown()
    assert at_removal < ROWS, "the node went after the run: make it longer"
    assert "Task run_worker failed" in out + err  # Ray's word that a running worker went with the node
    assert run.returncode == 0, err
    # "written" leaves out what the lost worker wrote after its last checkpoint (README)
    assert summary(subprocess.CompletedProcess(run.args, 0, out)).startswith(COMPLETED.split(", 0 ignored")[0])
    assert_rows_once_as_the_ledger_says(directory, engine)


def test_a_ray_task_that_raised_failed_or_was_cancelled_is_a_failed_worker(tmp_path, monkeypatch, caplog):
    import ray

    from ferryman.ray import RayTask

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    ray.init(num_cpus=1, logging_level="ERROR")
    try:
        def run(body, **options) -> RayTask:
            return RayTask(ray.remote(max_retries=0, **options)(body).remote())

        def code(task: RayTask) -> int:
            return poll_until(lambda: task.poll() is not None and [task.poll()], timeout=60, what="the end")[0]

        def boom() -> int:
            raise ValueError("no such column")

        def dies() -> int:
            os._exit(3)

        started = tmp_path / "started"

        def sleeps() -> int:
            started.touch()
            for _ in range(600):  # short sleeps: a cancel interrupts Python code, not a long sleep
                time.sleep(0.1)
            return 0

        assert code(run(lambda: 0)) == 0
        assert code(run(boom)) == 1
        assert "a worker's Ray task raised ValueError: no such column" in caplog.messages
        assert code(run(dies)) == 1
        assert any(m.startswith("a worker's Ray task failed: WorkerCrashedError") for m in caplog.messages)
        running, waiting = run(sleeps), run(sleeps)  # one CPU: the second waits for the first
        poll_until(started.exists, timeout=60, what="the first task running")
        waiting.interrupt()
        running.interrupt()  # no handler of its own: stopped as a KeyboardInterrupt
        assert (code(waiting), code(running)) == (130, 130)
    finally:
        ray.shutdown()


def test_engine_ray_without_ray_installed_is_one_line_and_exit_2(tmp_path):
    hide_ray = "import sys; sys.modules['ray'] = None; from ferryman.cli import main; main(sys.argv[1:])"
    result = subprocess.run([sys.executable, "-c", hide_ray, "run", "target.py", "--workers", "2", "--engine", "ray"],
                            cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("ferryman: error: --engine ray needs Ray, which is not installed here (")
    assert line.endswith("): pip install 'ferryman[ray]'")


def test_importing_ferryman_does_not_import_ray():
    code = "import sys, ferryman, ferryman.cli, ferryman.ray; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(REPO)}, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "2", "--address", "auto"], "--address is for --engine ray"),
    (["--engine", "ray"], "--engine ray runs the workers of --workers N: give N above 1"),
])
def test_ray_options_out_of_place_are_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "target.py"), *args])
    assert result.exit_code == 2
    assert message in result.output
