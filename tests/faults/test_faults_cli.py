"""Faults at the CLI's edges, each through real ``python -m ferryman`` processes.

- A hostile or broken mjg JSON file (a 5,000-digit id, 20,000 levels of nesting, an endless
  string) given to ``progress import``: exit 2, one line naming the JSON path and the limit, no
  file left behind, memory bounded.
- Passwords in database URLs, as ``user:pw@`` or as ``?password=``: never in any output, file or
  HTTP answer.
- Terminal escapes (OSC, CSI, bidi overrides) in ids and causes: printed visibly escaped.
- A reader that goes away (``| head -1``): no traceback, the command's own exit code.
- Bad input to any verb: one line, exit 2, nothing changed; the "(a bug?)" hint only for bugs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import urllib.request
from datetime import datetime

import helpers
import ledger_files
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, make_url, text
from test_cli import files_state, one_error_line, write_target

from ferryman import Action, FailedRecord, MigrationProgress
from ferryman.console import printable
from ferryman.progress.lease import Process
from ferryman.redact import MASK, mask_secrets

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

MEASURE = """
import resource, subprocess, sys
code = subprocess.run([sys.executable, "-m", "ferryman", *sys.argv[1:]]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""
"""Runs ferryman as the only child of a fresh process: its peak RSS (KiB) is the last stderr line."""


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}


def ferryman(*args: str, cwd, timeout: float = 120, extra_env: dict[str, str] | None = None):
    return subprocess.run([sys.executable, "-m", "ferryman", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**env(), **(extra_env or {})})


def measured(*args: str, cwd) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ferryman, returning the process and its peak RSS in KiB."""
    result = subprocess.run([sys.executable, "-c", MEASURE, *args], cwd=cwd, capture_output=True, text=True,
                            timeout=300, env=env())
    *lines, peak = result.stderr.strip().splitlines()
    result.stderr = "\n".join(lines) + "\n"
    return result, int(peak)


# --- bounded import ---------------------------------------------------------------------------------

BASELINE_KIB = 120_000
"""Far above what the interpreter, SQLAlchemy and ferryman take to start (about 50 MB), far below
what the faults took (1 GB for 40 KB of nesting, a crash for 5,000 digits)."""


def entry_with_ids(ids_text: str) -> str:
    return '{"migrationProgress": {"m.M": {"fqcn": "m.M", "succeededRecordIds": [1, ' + ids_text + "]}}}"


HOSTILE = [  # (name, document, message, JSON path)
    ("digits", entry_with_ids("7" * 5000), "a number longer than 1,000 digits",
     '$.migrationProgress["m.M"].succeededRecordIds[1]'),
    ("negative", entry_with_ids("-" + "7" * 5000), "a number longer than 1,000 digits",
     '$.migrationProgress["m.M"].succeededRecordIds[1]'),
    ("deep", entry_with_ids("[" * 20_000 + "]" * 20_000), "nested more than 64 deep",
     '$.migrationProgress["m.M"].succeededRecordIds[1]' + "[0]" * 60),
    ("deeper", '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested more than 64 deep", "$.x" + "[0]" * 63),
    ("string", '{"fatalErrors": ["' + "x" * 30_000_000 + '"]}', "a string longer than 1,000,000 characters",
     "$.fatalErrors[0]"),
    ("unknown", '{"other": {"a": [' + "9" * 5000 + "]}}", "a number longer than 1,000 digits", "$.other.a[0]"),
]


@pytest.mark.parametrize("name, document, message, path", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_import_of_a_hostile_file_exits_2_in_bounded_memory_and_leaves_nothing(tmp_path, name, document, message,
                                                                              path):
    (tmp_path / "in.json").write_text(document)
    before = sorted(os.listdir(tmp_path))
    result, peak = measured("progress", "import", "--progress", "p.db", "in.json", cwd=tmp_path)
    line = one_error_line(result.stderr)
    assert result.returncode == 2, result.stderr
    assert message in line and line.endswith(f" at {path}"), line
    assert "a bug?" not in line
    assert sorted(os.listdir(tmp_path)) == before  # no ledger, no -wal/-shm, no temp file
    assert peak < BASELINE_KIB, f"peak RSS {peak} KiB"


def test_import_of_a_hostile_file_leaves_an_existing_ledger_as_it_was(tmp_path):
    good = MigrationProgress()
    good.entry("m.M").mark_succeeded([1, 2, "x"])
    (tmp_path / "good.json").write_text(good.to_json())
    assert ferryman("progress", "import", "--progress", "p.db", "good.json", cwd=tmp_path).returncode == 0
    (tmp_path / "in.json").write_text(entry_with_ids("[" * 20_000 + "]" * 20_000))
    before = files_state(tmp_path)
    result = ferryman("progress", "import", "--progress", "p.db", "in.json", cwd=tmp_path)
    assert result.returncode == 2 and "nested more than 64 deep" in one_error_line(result.stderr)
    assert files_state(tmp_path) == before


def test_a_json_progress_with_a_huge_number_is_refused_by_every_verb(tmp_path):
    (tmp_path / "p.json").write_text(entry_with_ids("7" * 5000))
    before = files_state(tmp_path)
    for args in (["failed", "list"], ["status"], ["failed", "ignore", "--all"]):
        result = ferryman(*args, "--progress", "p.json", cwd=tmp_path)
        line = one_error_line(result.stderr)
        assert result.returncode == 2 and "a number longer than 1,000 digits at $.migrationProgress" in line, args
    assert files_state(tmp_path) == before


# --- secrets ----------------------------------------------------------------------------------------

QUERY_SECRET = "QpwS3cretValue"
USERINFO_SECRET = "UpwS3cretValue"

SECRET_TARGET = '''\
import os, sqlite3
from contextlib import closing
from ferryman import Retry, SqlStore, migration

HERE = os.path.dirname(os.path.abspath(__file__))
with closing(sqlite3.connect(os.path.join(HERE, "src.db"))) as db, db:
    db.execute("CREATE TABLE IF NOT EXISTS people (id INTEGER PRIMARY KEY, email TEXT)")
    db.execute("DELETE FROM people")
    db.executemany("INSERT INTO people VALUES (?, ?)", [(1, "a@x"), (2, None), (3, "c@x")])
    db.execute("CREATE TABLE IF NOT EXISTS people_copy (id INTEGER PRIMARY KEY, email TEXT)")

stores = [
    SqlStore("src", "sqlite:///" + os.path.join(HERE, "src.db"), "people"),
    SqlStore("dst", {query_url!r}, "people"),
    SqlStore("pg_src", {userinfo_url!r}, "people"),
    SqlStore("copy", "sqlite:///" + os.path.join(HERE, "src.db"), "people_copy"),
]


@migration(source="src", dest="dst", save_retry=Retry(times=0, delay=0))
class ToPostgres:
    def transform(self, aggregates, record):
        return [record]


@migration(source="pg_src", dest="copy")
class BackAgain:
    def transform(self, aggregates, record):
        return [record]


migrations = [ToPostgres, BackAgain]
'''


def secret_urls(url: str) -> tuple[str, str]:
    """The URL with a password as a query parameter, and with one in the userinfo."""
    base = make_url(url)
    return (base.update_query_dict({"password": QUERY_SECRET}).render_as_string(hide_password=False),
            base.set(password=USERINFO_SECRET).render_as_string(hide_password=False))


def assert_no_secret(what: str, output: str | bytes) -> None:
    data = output if isinstance(output, bytes) else output.encode()
    for secret in (QUERY_SECRET, USERINFO_SECRET):
        assert secret.encode() not in data, f"{secret} in {what}: {data[:2000]!r}"


def test_passwords_in_either_form_are_in_no_output_file_or_answer(tmp_path, postgres_url):
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT NOT NULL)"))
    engine.dispose()
    query_url, userinfo_url = secret_urls(postgres_url)
    (tmp_path / "migrations.py").write_text(SECRET_TARGET.format(query_url=query_url, userinfo_url=userinfo_url))

    run = ferryman("run", "migrations.py", "--progress", "p.db", cwd=tmp_path)
    assert run.returncode == 1, run.stderr  # record 2 has no email: NOT NULL
    assert "password=" + MASK in run.stdout + run.stderr or "store 'dst'" not in run.stdout + run.stderr
    outputs = {"run": run.stdout + run.stderr}
    for args in (["status"], ["status", "--json"], ["failed", "list"], ["failed", "list", "--wide"],
                 ["failed", "list", "--json"]):
        result = ferryman(*args, "--progress", "p.db", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        outputs[" ".join(args)] = result.stdout + result.stderr
    plan = ferryman("plan", "migrations.py", cwd=tmp_path)
    assert plan.returncode == 0 and "ToPostgres" in plan.stdout
    outputs["plan"] = plan.stdout + plan.stderr
    assert ferryman("progress", "export", "--progress", "p.db", "--out", "p.json", cwd=tmp_path).returncode == 0
    outputs["export"] = (tmp_path / "p.json").read_text()
    assert "password=" + MASK in outputs["export"]  # the cause names the store, masked
    assert "not-null constraint" in outputs["failed list --wide"]
    for name in os.listdir(tmp_path):
        if name.startswith("p.db"):
            outputs[name] = (tmp_path / name).read_bytes()  # type: ignore[assignment]
    outputs.update(http_answers(tmp_path))
    for what, output in outputs.items():
        assert_no_secret(what, output)


def http_answers(directory) -> dict[str, str]:
    port = helpers.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ferryman", "serve", "--progress", "p.db", "--port", str(port)],
                            cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    base = f"http://127.0.0.1:{port}"
    try:
        def answer(path: str) -> str | None:
            try:
                with urllib.request.urlopen(base + path, timeout=5) as response:
                    return response.read().decode()
            except OSError:
                return None

        progress = helpers.poll_until(lambda: answer("/migrate/progress"), 60, "the status server")
        assert "ToPostgres" in progress
        return {"/migrate/progress": progress, "/migrate/result": answer("/migrate/result") or "",
                "/metrics": answer("/metrics") or ""}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.parametrize("server", ["postgresql+psycopg://postgres@127.0.0.1:{port}/test",
                                    "mysql+pymysql://root@127.0.0.1:{port}/test"])
@pytest.mark.parametrize("form", ["query", "userinfo"])
@pytest.mark.parametrize("debug", [False, True])
def test_an_unreachable_store_is_reported_without_its_password(tmp_path, server, form, debug):
    query_url, userinfo_url = secret_urls(server.format(port=helpers.free_port()))
    url = query_url if form == "query" else userinfo_url
    (tmp_path / "migrations.py").write_text(SECRET_TARGET.format(query_url=url, userinfo_url=url))
    result = ferryman(*(["--debug"] if debug else []), "run", "migrations.py", "--progress", "p.db", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    if not debug:
        line = one_error_line(result.stderr)
        assert "cannot be read" in line and "a bug?" not in line
        assert ("password=" + MASK if form == "query" else ":" + MASK + "@") in line
    assert_no_secret("stderr", result.stdout + result.stderr)
    assert not (tmp_path / "p.db").exists()


SECRET_NAMES = ["password", "PASSWORD", "Passwd", "pwd", "pass", "secret", "client_secret", "token", "access_token",
                "auth_token", "api_key", "apikey", "API-KEY", "sslpassword", "aws_session_token"]
PLAIN_NAMES = ["sslmode", "application_name", "connect_timeout", "charset", "authSource", "replicaSet", "user"]

URL_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%+/=:,!$()*"
secret_text = st.text(st.sampled_from(URL_SAFE + "@"), min_size=8, max_size=30).map(lambda s: "Zq" + s)
"""A secret as a query value: anything but what ends one (``&``, ``#``, spaces, quotes)."""
userinfo_secret = st.text(st.sampled_from(URL_SAFE), min_size=8, max_size=30).map(lambda s: "Zq" + s)
"""A password in ``user:password@``: an ``@``, ``?`` or ``#`` in it is written percent-encoded."""
plain_text = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-._"), min_size=1, max_size=12)


@st.composite
def urls_with_secrets(draw):
    """(text holding a URL, its secrets, the parts that must survive)."""
    scheme = draw(st.sampled_from(["postgresql+psycopg", "mysql+pymysql", "mongodb", "mssql+pyodbc", "redis"]))
    user, host, db = draw(plain_text), draw(plain_text), draw(plain_text)
    secrets_, survivors = [], [scheme + "://", user, host, db]
    userinfo = f"{user}@"
    if draw(st.booleans()):
        password = draw(userinfo_secret)
        secrets_.append(password)
        userinfo = f"{user}:{password}@"
    params = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            value = draw(secret_text)
            secrets_.append(value)
            params.append(f"{draw(st.sampled_from(SECRET_NAMES))}={value}")
        else:
            name, value = draw(st.sampled_from(PLAIN_NAMES)), draw(plain_text)
            survivors += [name, value]
            params.append(f"{name}={value}")
    query = ("?" + "&".join(params)) if params else ""
    url = f"{scheme}://{userinfo}{host}:5432/{db}{query}"
    before, after = draw(st.sampled_from([("", ""), ("store 'dst' (", ", table t): boom"), ("Engine(", ")"),
                                          ("connect to ", " failed\nTraceback"), ('{"url": "', '"}')]))
    return before + url + after, secrets_, survivors


@settings(max_examples=400, deadline=None)
@given(urls_with_secrets())
def test_no_secret_survives_masking_and_everything_else_does(case):
    shown, secrets_, survivors = case
    masked = mask_secrets(shown)
    for secret in secrets_:
        assert secret not in masked, (shown, masked)
    for part in survivors:
        assert part in masked, (shown, masked, part)
    assert mask_secrets(masked) == masked


@given(st.sampled_from(SECRET_NAMES), secret_text, st.sampled_from(["'", '"', ""]))
def test_dsn_and_dict_forms_are_masked(name, secret, quote):
    for shown in (f"host=db port=5432 {name}={quote}{secret}{quote} dbname=shop",
                  f"connect_args={{'{name}': '{secret}', 'host': 'db'}}", json.dumps({name: secret, "host": "db"})):
        masked = mask_secrets(shown)
        assert secret not in masked and "db" in masked, (shown, masked)
    assert json.loads(mask_secrets(json.dumps({name: secret})))[name] == MASK  # JSON stays JSON


# --- terminal escapes ---------------------------------------------------------------------------------

OSC_TITLE = "\x1b]0;pwned\x07"
OSC_LINK = "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"
CSI = "\x1b[2J\x1b[31m"
BIDI = "\u202etxt.exe"


def hostile_progress(directory) -> None:
    progress = MigrationProgress()
    entry = progress.entry("m.Copy")
    when = datetime(2025, 1, 2, 3, 4, 5)
    entry.mark_failed([
        FailedRecord(f"id{OSC_TITLE}1", f"desc{CSI}", f"ValueError: cause{OSC_LINK}{BIDI}", Action.RETRY, when),
        FailedRecord(f"{BIDI}\x9b31m", "plain", "Traceback (most recent call last):\nKeyError: \x1bP+q\x1b\\",
                     Action.RETRY, when),
    ])
    (directory / "p.json").write_text(progress.to_json())


@pytest.mark.parametrize("ledger", ["p.json", "p.db"])
def test_terminal_escapes_in_ids_and_causes_are_printed_visibly(tmp_path, ledger):
    hostile_progress(tmp_path)
    if ledger == "p.db":
        assert ferryman("progress", "import", "--progress", "p.db", "p.json", cwd=tmp_path).returncode == 0
    for args in (["failed", "list"], ["failed", "list", "--wide"], ["status"]):
        result = ferryman(*args, "--progress", ledger, cwd=tmp_path, extra_env={"COLUMNS": "200"})
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", out), repr(out)
        if args[0] == "failed":
            assert '"id\\u001b]0;pwned\\u0007' in out  # an id as JSON: it types back as the id
            assert "desc\\x1b[2J\\x1b[31m" in out
            assert "cause\\x1b]8;;http://evil.example/" in out
            assert '"\\u202e' in out
    ids = json.loads(ferryman("failed", "list", "--json", "--progress", ledger, cwd=tmp_path).stdout)
    assert {row["id"] for row in ids} == {f"id{OSC_TITLE}1", f"{BIDI}\x9b31m"}  # --json stays exact
    ignore = ferryman("failed", "ignore", "--progress", ledger, '"id\\u001b]0;pwned\\u00071"', cwd=tmp_path)
    assert ignore.returncode == 0 and "ignored 1" in ignore.stdout, ignore.stderr


def test_printable_escapes_every_control_character_and_nothing_else():
    controls = [chr(c) for c in [*range(0x20), *range(0x7f, 0xa0), *range(0x202a, 0x202f), *range(0x2066, 0x206a)]]
    escaped = printable("".join(controls))
    assert escaped.isprintable() and "\x1b" not in escaped
    assert printable("\x1b]0;x\x07") == "\\x1b]0;x\\x07"
    assert printable("\u202eabc") == "\\u202eabc"
    readable = "plain ascii, ünïcödé, 中文, emoji 🚢, tab-less"
    assert printable(readable) == readable


# --- closed pipes -------------------------------------------------------------------------------------


def head_1(command: str, cwd) -> tuple[int, str, str]:
    """``command | head -1`` through a real pipe: (ferryman's exit code, head's output, stderr)."""
    script = f"{command} 2>err.txt | head -1; echo \"exit=${{PIPESTATUS[0]}}\""
    result = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300, env=env())
    *shown, status = result.stdout.strip().splitlines()
    return int(status.removeprefix("exit=")), "\n".join(shown), (cwd / "err.txt").read_text()


PY = f"{sys.executable} -m ferryman"


def test_a_run_whose_reader_goes_away_completes_with_its_own_exit_code(tmp_path):
    write_target(tmp_path, n=40, delay=0.01)  # slow enough that head has gone before the run ends
    code, first, stderr = head_1(f"{PY} run migrations.py --progress p.db", tmp_path)
    assert (code, first, stderr) == (0, "progress ledger: p.db", "")
    status = json.loads(ferryman("status", "--json", "--progress", "p.db", cwd=tmp_path).stdout)
    assert status["result"]["status"] == "migrated"


def test_a_failing_run_whose_reader_goes_away_keeps_exit_code_1(tmp_path):
    write_target(tmp_path, n=40, delay=0.01, bad=(3,))
    code, _first, stderr = head_1(f"{PY} run migrations.py --progress p.db --bar", tmp_path)
    assert code == 1 and stderr == "", stderr
    status = json.loads(ferryman("status", "--json", "--progress", "p.db", cwd=tmp_path).stdout)
    assert status["result"]["status"] == "failed"


@pytest.mark.parametrize("args", [["failed", "list"], ["failed", "list", "--json"], ["failed", "list", "--wide"],
                                  ["status"], ["status", "--json"]])
def test_listing_verbs_whose_reader_goes_away_exit_0_quietly(tmp_path, args):
    write_target(tmp_path, n=2500, bad=tuple(range(1, 2501)))  # more output than a pipe holds
    assert ferryman("run", "migrations.py", "--progress", "p.db", cwd=tmp_path).returncode == 1
    code, first, stderr = head_1(f"{PY} {' '.join(args)} --progress p.db", tmp_path)
    assert code == 0 and first and stderr == "", (code, stderr)


# --- failed list: the driver's message, the terminal's width ----------------------------------------------


def test_failed_list_shows_the_drivers_message_within_the_terminal_width(tmp_path, postgres_url):
    engine = create_engine(postgres_url)
    column = "email_address_of_the_customer"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE people (id INTEGER PRIMARY KEY, {column} TEXT NOT NULL)"))
    engine.dispose()
    (tmp_path / "migrations.py").write_text(textwrap.dedent(f'''\
        import os, sqlite3
        from contextlib import closing
        from ferryman import Retry, SqlStore, migration
        HERE = os.path.dirname(os.path.abspath(__file__))
        with closing(sqlite3.connect(os.path.join(HERE, "src.db"))) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS people (id INTEGER PRIMARY KEY, email TEXT)")
            db.executemany("INSERT OR IGNORE INTO people VALUES (?, ?)", [(1, "a@x"), (2, None)])
        stores = [SqlStore("src", "sqlite:///" + os.path.join(HERE, "src.db"), "people"),
                  SqlStore("dst", {postgres_url!r}, "people")]

        @migration(source="src", dest="dst", save_retry=Retry(times=0, delay=0))
        class CopyPeople:
            def transform(self, aggregates, record):
                return [{{"id": record["id"], "{column}": record["email"]}}]

        migrations = [CopyPeople]
        '''))
    assert ferryman("run", "migrations.py", "--progress", "p.db", cwd=tmp_path).returncode == 1
    for width in (100, 140):
        listed = ferryman("failed", "list", "--progress", "p.db", cwd=tmp_path, extra_env={"COLUMNS": str(width)})
        lines = listed.stdout.splitlines()
        assert all(len(line) <= width for line in lines), lines
        assert f'null value in column "{column}"' in lines[1], lines
    wide = ferryman("failed", "list", "--wide", "--progress", "p.db", cwd=tmp_path, extra_env={"COLUMNS": "60"})
    assert 'null value in column "email_address_of_the_customer" of relation "people" violates not-null ' \
           "constraint (NotNullViolation, in TerminalStoreError)" in wide.stdout
    row, = json.loads(ferryman("failed", "list", "--json", "--progress", "p.db", cwd=tmp_path).stdout)
    assert "Failing row contains" in row["full_cause"] and row["cause"].startswith("null value in column")


# --- bad input: one line, exit 2, nothing changed, no "bug" hint ------------------------------------------

BAD_INPUT = [
    (["failed", "ignore", "--progress", "p.db", "999"], "not a failed record in p.db: 999"),
    (["failed", "ignore", "--progress", "p.db", "[1,"], "bad composite id [1,"),
    (["failed", "ignore", "--progress", "p.db", "[]"], "bad composite id []"),
    (["failed", "ignore", "--progress", "p.db", "--migration", "nope", "3"], "no migration 'nope'"),
    (["failed", "ignore", "--progress", "p.db"], "choose the records with IDs, --all or --grep TEXT"),
    (["failed", "retry", "--progress", "p.db", "--all", "3"], "exactly one of them"),
    (["failed", "ignore", "--progress", "p.db", "--grep", ""], "--grep needs some text"),
    (["failed", "list", "--progress", "missing.db"], "no progress file: missing.db"),
    (["failed", "list", "--progress", "migrations.py"], "migrations.py is neither an SQLite progress ledger nor mjg JSON progress"),
    (["failed", "list", "--progress", "p.db", "--wide", "--json"], "--wide and --json do not go together"),
    (["status", "--progress", "missing.db"], "no progress file: missing.db"),
    (["status"], "give either --progress PATH or --url URL"),
    (["status", "--url", "http://[::1"], "bad URL"),
    (["status", "--url", "ftp://host"], "bad URL"),
    (["status", "--url", "http://127.0.0.1:{port}"], "cannot reach"),
    (["run", "migrations.py", "--progress", "p.db", "--only", "nope"], "unknown migration(s) nope"),
    (["run", "missing.py"], "TARGET missing.py: no such file"),
    (["run", "migrations.py", "--serve", "127.0.0.1:99999"], "bad port 99999"),
    (["run", "migrations.py", "--serve", "nohost:abc"], "bad address"),
    (["run", "migrations.py", "--max-tries", "0"], "Invalid value for '--max-tries'"),
    (["run", "migrations.py", "--retry-delay", "-1"], "Invalid value for '--retry-delay'"),
    (["run", "migrations.py", "--retry-delay", "inf"], "Invalid value for '--retry-delay'"),
    (["run", "migrations.py", "--retry-delay", "nan", "--max-tries", "2"], "--retry-delay must be"),
    (["run", "migrations.py", "--progress", "migrations.py"], "migrations.py is neither an SQLite progress ledger nor mjg JSON progress"),
    (["plan", "missing.py"], "TARGET missing.py: no such file"),
    (["serve", "--progress", "p.db", "--port", "99999"], "Invalid value for '--port'"),
    (["serve", "--progress", "no/such/dir/p.db"], "does not exist"),
    (["progress", "export", "--progress", "missing.db", "--out", "x.json"], "no progress file: missing.db"),
    (["progress", "export", "--progress", "p.db", "--out", "p.db"], "--out is the progress file itself"),
    (["progress", "import", "--progress", "p.db", "missing.json"], "no such file: missing.json"),
    (["progress", "import", "--progress", "new.db", "migrations.py"], "migrations.py: invalid JSON"),
    (["progress", "import", "--progress", "x.json", "p.db"], "is a JSON progress file"),
    (["nope"], "No such command 'nope'"),
    (["demo", "--rows", "5"], "Invalid value for '--rows'"),
]


@pytest.fixture(scope="module")
def failed_ledger(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bad-input")
    write_target(directory, n=10, bad=(3, 5))
    assert ferryman("run", "migrations.py", "--progress", "p.db", cwd=directory).returncode == 1
    return directory


@pytest.mark.parametrize("args, message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(failed_ledger, args, message):
    args = [a.replace("{port}", str(helpers.free_port())) for a in args]
    before = files_state(failed_ledger)
    result = ferryman(*args, cwd=failed_ledger, timeout=60)
    line = one_error_line(result.stderr)
    assert result.returncode == 2, (result.returncode, line)
    assert message in line, line
    assert "a bug?" not in line
    assert result.stdout == ""
    assert files_state(failed_ledger) == before


def test_only_an_unexpected_exception_gets_the_bug_hint(tmp_path):
    (tmp_path / "broken.py").write_text(textwrap.dedent('''\
        from ferryman import MemoryStore, migration

        class Odd(MemoryStore):
            def read_page(self, filter, after, limit):
                raise ZeroDivisionError("unexpected")

        stores = [Odd("src", key="id"), MemoryStore("dst", key="id")]

        @migration(source="src", dest="dst")
        class Copy:
            def transform(self, aggregates, record):
                return [record]

        migrations = [Copy]
        '''))
    result = ferryman("run", "broken.py", "--progress", "p.db", cwd=tmp_path)
    line = one_error_line(result.stderr)
    assert line.endswith("(a bug? --debug shows the traceback)") and "ZeroDivisionError: unexpected" in line
    debug = ferryman("--debug", "run", "broken.py", "--progress", "p.db", cwd=tmp_path)
    assert "Traceback (most recent call last)" in debug.stderr


def test_a_ledger_in_use_changes_nothing_with_one_line(tmp_path):
    write_target(tmp_path, n=10, bad=(3,))
    assert ferryman("run", "migrations.py", "--progress", "p.db", cwd=tmp_path).returncode == 1
    ledger_files.take_lease(tmp_path / "p.db", Process.current())  # a live lease: this process, now
    before = files_state(tmp_path)
    result = ferryman("failed", "ignore", "--progress", "p.db", "3", cwd=tmp_path)
    line = one_error_line(result.stderr)
    assert result.returncode == 2 and f"is in use by pid {os.getpid()}" in line and "a bug?" not in line
    assert files_state(tmp_path) == before
