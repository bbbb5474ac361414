"""The ``ferryman`` command: every verb, exit codes, signals, the status server, bad input.

Most tests use click's CliRunner in this process; exit codes, signals and the server beside a
run use real ``python -m ferryman`` processes on real SQLite files.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import helpers
import pytest
from click.testing import CliRunner

from ferryman import MigrationProgress, SqlStore
from ferryman.cli import cli

TARGET = '''\
import os, sqlite3, time
from contextlib import closing
from ferryman import Retry, SqlStore, migration

HERE = os.path.dirname(os.path.abspath(__file__))
N, DELAY, BAD, FLAKY = {n}, {delay}, {bad!r}, {flaky!r}

for name in ("src.db", "dst.db"):
    with closing(sqlite3.connect(os.path.join(HERE, name))) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        if name == "src.db" and not db.execute("SELECT 1 FROM items LIMIT 1").fetchone():
            db.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"item {{i}}") for i in range(1, N + 1)])

stores = [SqlStore("src", "sqlite:///" + os.path.join(HERE, "src.db"), "items"),
          SqlStore("dst", "sqlite:///" + os.path.join(HERE, "dst.db"), "items")]


@migration(source="src", dest="dst", batch_size=10, save_retry=Retry(times=0, delay=0), name="copy_items")
class CopyItems:
    def transform(self, aggregates, record):
        if DELAY:
            time.sleep(DELAY)
        if record["id"] in BAD:
            raise ValueError(f"bad item {{record['id']}}")
        if FLAKY and record["id"] == 1:  # fails on the first two attempts, then works
            count = int(open(FLAKY).read()) + 1 if os.path.exists(FLAKY) else 1
            with open(FLAKY, "w") as fh:
                fh.write(str(count))
            if count < 3:
                raise ConnectionError(f"flaky, attempt {{count}}")
        return [{{"id": record["id"], "name": record["name"].upper()}}]


migrations = [CopyItems]
'''


def write_target(directory, n: int = 30, delay: float = 0.0, bad: tuple[int, ...] = (), flaky: str = "",
                 name: str = "migrations.py") -> str:
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(TARGET.format(n=n, delay=delay, bad=set(bad), flaky=flaky))
    return path


def ferryman(*args: str, cwd, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ferryman", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def start(*args: str, cwd) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ferryman", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ferryman: error: "), stderr
    return lines[0]


def dst_ids(directory) -> list[int]:
    with sqlite3.connect(os.path.join(directory, "dst.db")) as db:
        return [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]


def ledger_rows(path: str, sql: str) -> list[tuple]:
    if not os.path.exists(path):
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # being created
    finally:
        db.close()


def files_state(directory) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory`` with its bytes and mtime: proof that nothing changed."""
    state = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                state[path] = (fh.read(), os.stat(path).st_mtime_ns)
    return state




@pytest.fixture
def runner(tmp_path, monkeypatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # a default ferryman-progress.db would land here
    return CliRunner()


# --- help -----------------------------------------------------------------------------------------

VERBS = [
    ["demo"], ["run"], ["plan"], ["serve"], ["status"], ["failed"], ["failed", "list"],
    ["failed", "ignore"], ["failed", "retry"], ["progress"], ["progress", "export"], ["progress", "import"],
    ["reset"], ["verify"],
]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_verb_has_help_with_an_example(runner, verb):
    result = runner.invoke(cli, [*verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and "Example" in result.output
    assert "ferryman " + " ".join(verb) in result.output


def test_top_level_help_lists_the_contract_verbs(runner):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for verb in ("demo", "run", "plan", "serve", "status", "failed", "progress", "reset"):
        assert f"  {verb} " in result.output


def test_the_command_to_suggest_is_the_one_that_runs(tmp_path, monkeypatch):
    from ferryman.console import command_name

    venv_script = tmp_path / ".venv" / "bin" / "ferryman"
    venv_script.parent.mkdir(parents=True)
    venv_script.write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(venv_script)])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert command_name() == ".venv/bin/ferryman"  # not on PATH: its own path
    monkeypatch.setenv("PATH", str(venv_script.parent))
    venv_script.chmod(0o755)
    assert command_name() == "ferryman"
    monkeypatch.setattr(sys, "argv", ["/usr/lib/python3/ferryman/__main__.py"])
    assert command_name() == "python -m ferryman"
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [str(venv_script)])
    assert command_name() == str(venv_script)  # outside the cwd: as typed, not ../.venv/bin/ferryman
    monkeypatch.setattr(sys, "argv", ["../.venv/bin/ferryman"])
    assert command_name() == "../.venv/bin/ferryman"  # typed relative: the same from this cwd


def test_python_dash_m_and_version(tmp_path):
    result = ferryman("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("ferryman, version ")
    assert ferryman("run", "--help", cwd=tmp_path).returncode == 0


def test_run_help_names_the_default_progress(runner):
    assert "ferryman-progress.db" in runner.invoke(cli, ["run", "--help"]).output


# --- run, plan, failed, status, progress: in process ------------------------------------------------


def test_plan(runner, tmp_path):
    result = runner.invoke(cli, ["plan", write_target(tmp_path)])
    assert result.exit_code == 0
    assert result.output == ("1. [order 0] copy_items: src -> dst; no dependency\n"
                             "keys reflected from the tables' primary keys: dst id, src id\n")


def test_plan_says_once_that_a_database_cannot_be_read_and_exits_2(tmp_path, mysql_url):
    from sqlalchemy.engine import make_url

    wrong = make_url(mysql_url).set(username="nobody_fm", password="wrong").render_as_string(hide_password=False)
    (tmp_path / "refused.py").write_text(textwrap.dedent(f"""
        from ferryman import MemoryStore, SqlDatabase, migration
        db = SqlDatabase({wrong!r})
        stores = [db["albums"], db["artists"], MemoryStore("out"), MemoryStore("out2")]

        @migration(source="albums", dest="out")
        class Albums:
            def transform(self, aggregates, record):
                return [record]

        @migration(source="artists", dest="out2")
        class Artists:
            def transform(self, aggregates, record):
                return [record]

        migrations = [Albums, Artists]
    """))
    result = ferryman("plan", "refused.py", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout.startswith("1. [order 0] Albums: albums -> out; no dependency")
    (line,) = result.stderr.splitlines()
    assert line.startswith("ferryman: error: stores 'albums', 'artists': no key: ") and "nobody_fm" in line
    assert "wrong" not in line  # the password, masked


def test_run_on_a_json_ledger_then_resume(runner, tmp_path):
    target = write_target(tmp_path, n=25)
    progress = str(tmp_path / "p.json")
    result = runner.invoke(cli, ["run", target, "--progress", progress])
    assert result.exit_code == 0, result.output
    assert "copy_items: completed - 25 migrated, 0 failed" in result.stdout
    assert dst_ids(tmp_path) == list(range(1, 26))
    assert len(next(iter(MigrationProgress.load(progress).migrations.values())).succeeded) == 25
    result = runner.invoke(cli, ["run", target, "--progress", progress])
    assert result.exit_code == 0 and "0 migrated, 0 failed, 25 already done" in result.stdout


def test_failures_list_ignore_and_run_again(runner, tmp_path):
    target = write_target(tmp_path, bad=(4, 9))
    progress = str(tmp_path / "p.db")
    result = runner.invoke(cli, ["run", target, "--progress", progress])
    assert result.exit_code == 1, result.output
    assert "copy_items: failed - 28 migrated, 2 failed" in result.stdout
    hint = result.stdout[result.stdout.index("next:"):].splitlines()  # the commands that matter, real paths
    assert hint[1].split()[:6] == ["python", "-m", "ferryman", "failed", "list", "--progress"] and progress in hint[1]
    assert f"failed ignore|retry --progress {progress} ID ..." in hint[2]
    assert f"run {target} --progress {progress}" in hint[3]
    assert len({line.index("   # ") for line in hint[1:4]}) == 1, hint  # the comments in one column
    listed = runner.invoke(cli, ["failed", "list", "--progress", progress])
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "MIGRATION", "ACTION", "DESCRIPTION", "CAUSE"]
    assert lines[1].split()[:4] == ["4", "copy_items", "RETRY", "src(id=4)"]
    assert "ValueError: bad item 4" in lines[1]
    as_json = json.loads(runner.invoke(cli, ["failed", "list", "--progress", progress, "--json"]).stdout)
    assert [r["id"] for r in as_json] == [4, 9]
    assert runner.invoke(cli, ["failed", "list", "--progress", progress, "--grep", "ITEM 9"]).stdout.count("src(id=") == 1
    ignored = runner.invoke(cli, ["failed", "ignore", "--progress", progress, "4", "9"])
    assert ignored.exit_code == 0 and ignored.stdout.strip() == "ignored 2 failed record(s) (copy_items 2)"
    result = runner.invoke(cli, ["run", target, "--progress", progress])
    assert result.exit_code == 0, result.output
    assert "2 ignored" in result.stdout
    retried = runner.invoke(cli, ["failed", "retry", "--progress", progress, "--migration", "copy_items", "--all"])
    assert retried.stdout.strip() == "marked for retry 2 failed record(s) (copy_items 2)"
    again = runner.invoke(cli, ["failed", "retry", "--progress", progress, "--all"])
    assert "none changed" in again.stdout


def test_failed_selection_is_a_usage_error(runner, tmp_path):
    path = tmp_path / "p.json"
    MigrationProgress().save(path)
    result = runner.invoke(cli, ["failed", "ignore", "--progress", str(path)])
    assert result.exit_code == 2 and "exactly one" in result.stderr
    assert runner.invoke(cli, ["failed", "ignore"]).exit_code == 2  # --progress is required


def test_dry_run(runner, tmp_path):
    target = write_target(tmp_path, bad=(2,))
    result = runner.invoke(cli, ["run", target, "--dry-run"])
    assert result.exit_code == 1, result.output
    assert "copy_items: would write 29 record(s) to dst (30 read, 0 already done, 0 ignored, 1 would fail)" in result.stdout
    assert "copy_items: dry run over in " in result.stdout and "; nothing saved" in result.stdout
    for claim in ("completed", "written,", " migrated", " failed", "next:"):  # the lines of a real run
        assert claim not in result.stdout, claim
    assert dst_ids(tmp_path) == []
    assert not (tmp_path / "ferryman-progress.db").exists() and not os.path.exists("ferryman-progress.db")
    assert not [name for name in os.listdir(tmp_path) if "progress" in name]


def test_status_from_a_ledger(runner, tmp_path):
    target = write_target(tmp_path)
    progress = str(tmp_path / "p.db")
    assert runner.invoke(cli, ["run", target, "--progress", progress]).exit_code == 0
    result = runner.invoke(cli, ["status", "--progress", progress])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("status: migrated") or result.stdout.startswith("status: completed")
    assert "copy_items" in result.stdout and "next:" not in result.stdout  # nothing failed: nothing to do
    raw = json.loads(runner.invoke(cli, ["status", "--progress", progress, "--json"]).stdout)
    assert raw["result"]["try_count"] == 1
    assert runner.invoke(cli, ["status"]).exit_code == 2


def test_status_names_the_command_that_lists_failed_records(runner, tmp_path):
    target = write_target(tmp_path, bad=(3, 5))
    progress = str(tmp_path / "p.db")
    assert runner.invoke(cli, ["run", target, "--progress", progress]).exit_code == 1
    lines = runner.invoke(cli, ["status", "--progress", progress]).stdout.splitlines()
    assert lines[-1] == f"next: python -m ferryman failed list --progress {progress}   # the 2 failed record(s), and why"
    assert runner.invoke(cli, ["failed", "ignore", "--progress", progress, "--all"]).exit_code == 0
    assert "next:" not in runner.invoke(cli, ["status", "--progress", progress]).stdout  # none left to try
    assert "next:" not in runner.invoke(cli, ["status", "--progress", progress, "--json"]).stdout


def test_progress_export_and_import(runner, tmp_path):
    target = write_target(tmp_path, bad=(3,))
    progress = str(tmp_path / "p.db")
    runner.invoke(cli, ["run", target, "--progress", progress])
    out = str(tmp_path / "out.json")
    result = runner.invoke(cli, ["progress", "export", "--progress", progress, "--out", out])
    assert result.exit_code == 0 and "1 migration(s), 29 succeeded and 1 failed record(s)" in result.stdout
    exported = MigrationProgress.load(out)
    (entry,) = exported.migrations.values()
    assert entry.fqcn == "migrations.CopyItems" and 3 in entry.failed
    copy = str(tmp_path / "copy.db")
    result = runner.invoke(cli, ["progress", "import", "--progress", copy, out])
    assert result.exit_code == 0, result.output
    assert runner.invoke(cli, ["failed", "list", "--progress", copy, "--json"]).stdout.count('"id": 3') == 1


def test_debug_shows_the_traceback(runner, tmp_path):
    result = runner.invoke(cli, ["--debug", "run", str(tmp_path / "nope.py")])
    assert result.exit_code == 2 and "Traceback (most recent call last)" in result.stderr
    result = runner.invoke(cli, ["run", str(tmp_path / "nope.py"), "--debug"])
    assert "Traceback" in result.stderr
    result = runner.invoke(cli, ["run", str(tmp_path / "nope.py")])
    assert "Traceback" not in result.stderr


# --- exit codes and one-line errors: real processes --------------------------------------------------


def test_exit_codes(tmp_path):
    ok = tmp_path / "ok"
    ok.mkdir()
    result = ferryman("run", write_target(ok), cwd=ok)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("progress ledger: ferryman-progress.db")
    assert (ok / "ferryman-progress.db").exists()  # the default, in the working directory
    failing = tmp_path / "failing"
    failing.mkdir()
    result = ferryman("run", write_target(failing, bad=(1,)), "--progress", "p.db", cwd=failing)
    assert result.returncode == 1 and "1 failed" in result.stdout
    result = ferryman("run", "migrations.py", "--only", "nope", cwd=failing)
    assert result.returncode == 2
    assert "unknown migration(s) nope; known: copy_items" in one_error_line(result.stderr)
    result = ferryman("run", "--max-tries", "0", "migrations.py", cwd=failing)
    assert result.returncode == 2 and "--max-tries" in result.stderr


@pytest.mark.parametrize("case, text, expected", [
    ("missing file", None, "TARGET nope.py: no such file"),
    ("missing module", None, "no module named 'nope_pkg'"),
    ("raises on import", "import os\n\nraise RuntimeError('no database configured')\n",
     "cannot import TARGET broken.py: RuntimeError: no database configured (at broken.py:3)"),
    ("definition error", "from ferryman import migration\n\n@migration(source='a', dest='b')\nclass X:\n    pass\n",
     "migration X is invalid: missing method transform"),
    ("plan error", "from ferryman import MemoryStore, migration\nstores = [MemoryStore('a')]\n"
     "@migration(source='a', dest='b')\nclass X:\n    def transform(self, aggregates, record):\n        return []\n"
     "migrations = [X]\n", "migration X uses unknown store(s) 'b'"),
    ("nothing defined", "x = 1\n", "defines neither `service` nor `stores` and `migrations`"),
    ("not a migration", "from ferryman import MemoryStore\nstores = [MemoryStore('a')]\nmigrations = [int]\n",
     "TARGET broken.py: int is not decorated with @migration"),
])
def test_bad_targets_are_one_line_exit_2_and_change_nothing(tmp_path, case, text, expected):
    if text is not None:
        (tmp_path / "broken.py").write_text(text)
    before = files_state(tmp_path)
    target = {"missing file": "nope.py", "missing module": "nope_pkg.migrations"}.get(case, "broken.py")
    for verb in (["run", target], ["plan", target], ["run", target, "--dry-run"]):
        result = ferryman(*verb, cwd=tmp_path)
        assert result.returncode == 2, (verb, result.stderr)
        line = one_error_line(result.stderr)
        assert expected in line and "a bug?" not in line
    after = files_state(tmp_path)
    after = {k: v for k, v in after.items() if "__pycache__" not in k}
    assert after == before  # and no ferryman-progress.db either


def test_wrong_or_malformed_progress_files(tmp_path):
    target = write_target(tmp_path)
    assert ferryman("plan", target, cwd=tmp_path).returncode == 0  # the target makes its databases
    bad = tmp_path / "bad.json"
    bad.write_text('{"metadata": {"timestamp": "yesterday"}}')
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("hello")
    before = files_state(tmp_path)
    cases = [
        (["failed", "list", "--progress", "missing.db"], "no progress file: missing.db"),
        (["failed", "list", "--progress", "missing.json"], "no progress file: missing.json"),
        (["failed", "ignore", "--progress", "missing.db", "--all"], "no progress file: missing.db"),
        (["failed", "list", "--progress", "bad.json"], "bad.json"),
        (["failed", "retry", "--progress", "bad.json", "--all"], "bad.json"),
        (["status", "--progress", "missing.db"], "no progress file: missing.db"),
        (["progress", "export", "--progress", "missing.db", "--out", "x.json"], "no progress file"),
        (["progress", "import", "--progress", "p.db", "bad.json"], "bad.json"),
        (["progress", "import", "--progress", "p.db", "missing.json"], "missing.json"),
        (["run", target, "--progress", "bad.json"], "bad.json"),
        (["run", target, "--progress", "nowhere/p.db"], "does not exist"),
        (["failed", "list", "--progress", "notes.db"], "notes.db"),
    ]
    for args, expected in cases:
        result = ferryman(*args, cwd=tmp_path)
        assert result.returncode != 0, args
        assert expected in one_error_line(result.stderr), (args, result.stderr)
    after = {k: v for k, v in files_state(tmp_path).items() if "__pycache__" not in k}
    assert after == before


def test_unreachable_status_server_is_one_line(tmp_path):
    result = ferryman("status", "--url", f"http://127.0.0.1:{helpers.free_port()}", cwd=tmp_path)
    assert result.returncode == 2 and "cannot reach" in one_error_line(result.stderr)


# --- the server beside a run -----------------------------------------------------------------------


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_run_serve_answers_while_running_and_stops_with_the_process(tmp_path):
    port = helpers.free_port()
    target = write_target(tmp_path, n=80, delay=0.04)
    proc = start("run", target, "--progress", "p.db", "--serve", f"127.0.0.1:{port}", "--linger", "0",
                 cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        def running():
            try:
                body = get_json(f"{base}/migrate/result")
            except (urllib.error.URLError, ConnectionError):
                return None
            # "running" with step null is right for the instant between the run's start and
            # its first migration's; wait for the step
            return body if body["status"] == "running" and body["step"] else None

        body = helpers.poll_until(running, 30, "status running")
        assert body["step"] == "copy_items" and body["try_count"] == 1
        status = ferryman("status", "--url", base, cwd=tmp_path)
        assert status.returncode == 0 and status.stdout.startswith("status: running")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert f"status API and dashboard: http://127.0.0.1:{port}" in out
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        get_json(f"{base}/migrate/result")
    assert dst_ids(tmp_path) == list(range(1, 81))


def test_a_port_in_use_is_one_line_and_changes_nothing(tmp_path):
    target = write_target(tmp_path)
    assert ferryman("run", target, "--progress", "p.db", "--only", "copy_items", cwd=tmp_path).returncode == 0
    before = {k: v for k, v in files_state(tmp_path).items() if "__pycache__" not in k}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        for args in (["run", target, "--progress", "p.db", "--serve", f"127.0.0.1:{port}"],
                     ["run", target, "--progress", "new.db", "--serve", f"127.0.0.1:{port}"],
                     ["serve", "--progress", "p.db", "--port", str(port)],
                     ["demo", "--dir", "demo", "--port", str(port), "--rows", "1000"]):
            result = ferryman(*args, cwd=tmp_path)
            assert result.returncode == 2, (args, result.stderr)
            assert str(port) in one_error_line(result.stderr)
    after = {k: v for k, v in files_state(tmp_path).items() if "__pycache__" not in k}
    assert after == before
    assert not (tmp_path / "demo").exists()


def _result_or_none(port: int) -> dict | None:
    try:
        return get_json(f"http://127.0.0.1:{port}/migrate/result")
    except (urllib.error.URLError, ConnectionError):
        return None


def test_serve_watches_a_ledger(tmp_path):
    target = write_target(tmp_path)
    assert ferryman("run", target, "--progress", "p.db", cwd=tmp_path).returncode == 0
    port = helpers.free_port()
    proc = start("serve", "--progress", "p.db", "--port", str(port), cwd=tmp_path)
    try:
        assert helpers.poll_until(lambda: _result_or_none(port), 30, "the server")["status"] == "migrated"
        status = ferryman("status", "--url", f"127.0.0.1:{port}", cwd=tmp_path)
        assert status.stdout.startswith("status: migrated")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert "serving the status of p.db at http://127.0.0.1:" in out and "no progress ledger" not in out
    finally:
        if proc.poll() is None:
            proc.kill()


# --- signals, retries, a busy ledger --------------------------------------------------------------------


COUNT_SUCCEEDED = ("SELECT (SELECT count(*) FROM succeeded) + "
                   "COALESCE((SELECT sum(json_array_length(ids)) FROM succeeded_log), 0)")
"""Succeeded ids in a ledger: folded ones plus those logged page by page."""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_run_with_130_and_the_progress_saved(tmp_path, sig):
    n = 150
    target = write_target(tmp_path, n=n, delay=0.03)
    progress = str(tmp_path / "p.db")
    proc = start("run", target, "--progress", "p.db", cwd=tmp_path)
    try:
        helpers.poll_until(lambda: ledger_rows(progress, COUNT_SUCCEEDED)[0][0] >= 20
                 if ledger_rows(progress, COUNT_SUCCEEDED) else False, 60, "some progress")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert f"interrupted by {sig.name}; progress saved" in out
    done = ledger_rows(progress, COUNT_SUCCEEDED)[0][0]
    assert 20 <= done < n
    assert len(dst_ids(tmp_path)) == done
    assert ledger_rows(progress, "SELECT outcome FROM run") == [("interrupted",)]
    result = ferryman("run", target, "--progress", "p.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{done} already done" in result.stdout
    assert dst_ids(tmp_path) == list(range(1, n + 1))  # nothing lost, nothing twice


def test_max_tries_retries_until_it_works(tmp_path):
    counter = str(tmp_path / "counter.txt")
    target = write_target(tmp_path, flaky=counter)
    result = ferryman("run", target, "--progress", "p.db", "--max-tries", "3", "--retry-delay", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("did not complete; trying again in 0 s") == 2
    assert "attempts: 3 of 3" in result.stdout
    assert Path(counter).read_text() == "3"
    runs = ledger_rows(str(tmp_path / "p.db"), "SELECT job, attempt, outcome FROM run ORDER BY id")
    assert runs == [(1, 1, "failed"), (1, 2, "failed"), (1, 3, "completed")]
    assert dst_ids(tmp_path) == list(range(1, 31))


def test_max_tries_gives_up(tmp_path):
    target = write_target(tmp_path, bad=(5,))
    result = ferryman("run", target, "--progress", "p.db", "--max-tries", "2", "--retry-delay", "0", cwd=tmp_path)
    assert result.returncode == 1
    runs = ledger_rows(str(tmp_path / "p.db"), "SELECT attempt, outcome FROM run ORDER BY id")
    assert runs == [(1, "failed"), (2, "failed")]


def test_a_ledger_in_use_is_refused(tmp_path):
    target = write_target(tmp_path, n=1000, delay=0.03, bad=(1,))
    progress = str(tmp_path / "p.db")
    other = tmp_path / "other.json"
    MigrationProgress().save(other)
    proc = start("run", target, "--progress", "p.db", cwd=tmp_path)
    try:
        helpers.poll_until(lambda: ledger_rows(progress, "SELECT count(*) FROM failed") == [(1,)], 60, "the failure")
        second = ferryman("run", target, "--progress", "p.db", cwd=tmp_path)
        assert second.returncode == 2 and "in use by pid" in one_error_line(second.stderr)
        for args in (["failed", "ignore", "--progress", "p.db", "--all"],
                     ["progress", "import", "--progress", "p.db", "other.json"],
                     ["progress", "export", "--progress", "p.db", "--out", "x.json"]):
            result = ferryman(*args, cwd=tmp_path)
            assert result.returncode != 0 and "in use" in one_error_line(result.stderr), args
        listed = ferryman("failed", "list", "--progress", "p.db", cwd=tmp_path)
        assert listed.returncode == 0 and "RETRY" in listed.stdout  # reading is fine
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "x.json").exists()
    assert ledger_rows(progress, "SELECT action FROM failed") == [("RETRY",)]


def test_a_database_that_cannot_be_reached_is_exit_2(tmp_path):
    text = textwrap.dedent("""\
        from ferryman import SqlStore, migration
        stores = [SqlStore("src", "sqlite:////nonexistent-dir-fm/x.db", "items"),
                  SqlStore("dst", "sqlite:////nonexistent-dir-fm/y.db", "items")]

        @migration(source="src", dest="dst")
        class Copy:
            def transform(self, aggregates, record):
                return [record]

        migrations = [Copy]
    """)
    (tmp_path / "unreachable.py").write_text(text)
    result = ferryman("run", "unreachable.py", cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "store 'dst' cannot be read" in line or "store 'src' cannot be read" in line
    assert "no SQLite database file at /nonexistent-dir-fm/y.db" in line
    assert not (tmp_path / "ferryman-progress.db").exists()


def test_the_readme_example_runs(runner, tmp_path):
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "shop.py")
    assert runner.invoke(cli, ["plan", example]).output == (
        "1. [order 0] CopyCustomers: customers, orders -> new_customers; no dependency\n"
        "keys reflected from the tables' primary keys: customers id, new_customers id, orders id\n")
    result = runner.invoke(cli, ["run", example, "--progress", "shop-progress.db"])
    assert result.exit_code == 0, result.output
    assert "CopyCustomers: completed - 1,000 migrated" in result.stdout
    with sqlite3.connect(tmp_path / "shop-new.db") as db:
        row = db.execute("SELECT first_name, last_name, total_spent FROM customers WHERE id = 7").fetchone()
    assert row[:2] == ("Customer", "Number7") and row[2] > 0
    result = runner.invoke(cli, ["run", example, "--progress", "shop-progress.db"])
    assert result.exit_code == 0 and "1,000 already done" in result.stdout


def test_after_a_fatal_error_the_next_step_is_to_fix_it_and_run_again(runner, tmp_path):
    with sqlite3.connect(tmp_path / "dst.db") as db:  # the destination lacks the column "name"
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    target = write_target(tmp_path)
    progress = str(tmp_path / "p.db")
    result = runner.invoke(cli, ["run", target, "--progress", progress])
    assert result.exit_code == 1, result.output
    assert "fatal: a store the migration writes or reads is unusable" in result.stdout
    hint = result.stdout[result.stdout.index("next:"):].splitlines()
    assert hint[0] == "next: fix the fatal error above, then run again:"
    assert hint[1].endswith(f"run {target} --progress {progress}   # resumes: only what is left"), hint
    assert len(hint) == 2 and "failed list" not in result.stdout  # no record failed: nothing to list


def test_serve_says_when_there_is_no_ledger_yet(tmp_path):
    port = helpers.free_port()
    proc = start("serve", "--progress", "mistyped.db", "--port", str(port), cwd=tmp_path)
    try:
        assert helpers.poll_until(lambda: _result_or_none(port), 30, "the server")["status"] == "pending"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert "serving the status of mistyped.db at http://127.0.0.1:" in out
        assert "; there is no progress ledger at mistyped.db yet: its status is 'pending' until a run starts on " \
               "it (a mistyped path stays pending)" in out
        assert not (tmp_path / "mistyped.db").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


TWO_DESTINATIONS = '''\
import os, sqlite3
from contextlib import closing
from ferryman import Retry, SqlStore, migration

HERE = os.path.dirname(os.path.abspath(__file__))
DST = os.path.join(HERE, os.environ["DST"])
for path in (os.path.join(HERE, "src.db"), DST):
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        if path.endswith("src.db") and not db.execute("SELECT 1 FROM items LIMIT 1").fetchone():
            db.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"item {i}") for i in range(1, 11)])

stores = [SqlStore("src", "sqlite:///" + os.path.join(HERE, "src.db"), "items"),
          SqlStore("dst", "sqlite:///" + DST, "items")]


@migration(source="src", dest="dst", save_retry=Retry(times=0, delay=0))
class Copy:
    def transform(self, aggregates, record):
        if record["id"] in (3, 7):
            raise ValueError(f"bad item {record['id']}")
        return [dict(record)]


migrations = [Copy]
'''


def test_one_class_run_into_two_destinations_on_one_ledger_is_two_migrations_by_name(tmp_path):
    (tmp_path / "t.py").write_text(TWO_DESTINATIONS)

    def command(*args: str, dst: str = "a.db") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ferryman", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "DST": dst})

    assert command("run", "t.py", "--progress", "p.db", dst="a.db").returncode == 1
    second = command("run", "t.py", "--progress", "p.db", dst="b.db")
    assert second.returncode == 1, second.stdout + second.stderr
    other = "Copy@" + SqlStore("dst", f"sqlite:///{tmp_path / 'b.db'}", "items").dataset
    assert f"{other}: failed - 8 migrated, 2 failed" in second.stdout  # the run says which one it is

    listed = json.loads(command("failed", "list", "--progress", "p.db", "--json").stdout)
    assert [(row["migration"], row["id"]) for row in listed] == [("Copy", 3), ("Copy", 7), (other, 3), (other, 7)]
    ignored = command("failed", "ignore", "--progress", "p.db", "--migration", "Copy", "3")
    assert ignored.returncode == 0, ignored.stderr
    assert ignored.stdout.strip() == "ignored 1 failed record(s) (Copy 1)"
    ambiguous = command("failed", "ignore", "--progress", "p.db", "7")
    assert ambiguous.returncode == 2
    assert f"id 7 failed in several migrations (Copy, {other}); choose one with --migration NAME" in ambiguous.stderr
    retried = command("failed", "retry", "--progress", "p.db", "--all")
    assert retried.stdout.strip() == "marked for retry 1 failed record(s) (Copy 1)"
    ignored_all = command("failed", "ignore", "--progress", "p.db", "--all")
    assert ignored_all.stdout.strip() == f"ignored 4 failed record(s) (Copy 2, {other} 2)"
    chosen = command("failed", "retry", "--progress", "p.db", "--migration", other, "3")
    assert chosen.stdout.strip() == f"marked for retry 1 failed record(s) ({other} 1)"

    table = command("status", "--progress", "p.db").stdout.splitlines()
    rows = [line.split()[0] for line in table[2:] if line.startswith("Copy")]
    assert sorted(rows) == ["Copy", other], table  # the newest run's migration first

    with sqlite3.connect(tmp_path / "p.db") as db:  # as a run before the names were told apart wrote them
        for run_id, reports in db.execute("SELECT id, reports FROM run").fetchall():
            db.execute("UPDATE run SET reports = ? WHERE id = ?",
                       (json.dumps([{**r, "name": "Copy"} for r in json.loads(reports)]), run_id))
    table = command("status", "--progress", "p.db").stdout.splitlines()
    assert sorted(line.split()[0] for line in table[2:] if line.startswith("Copy")) == ["Copy", other], table


def test_a_run_closes_its_stores_so_an_sqlite_destination_is_left_whole(tmp_path):
    """No -wal or -shm file beside the destination once the command is over: its connections
    were closed (and the WAL folded back) by the run, not left to the interpreter's exit."""
    target = write_target(tmp_path)
    assert ferryman("run", target, "--progress", "p.db", "--only", "copy_items", cwd=tmp_path).returncode == 0
    assert not [name for name in os.listdir(tmp_path) if name.startswith("dst.db-")]
    assert dst_ids(tmp_path) == list(range(1, 31))
