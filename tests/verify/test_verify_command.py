"""``ferryman verify`` and ``ferryman run --verify-sample``: exit codes, what ``ferryman status``,
``GET /migrate/verify`` and the metrics show, and the migration's own verify hook."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import httpx
import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ferryman import MigrationDefinitionError, migration
from ferryman.server import BackgroundServer, LedgerStatusSource, create_app

TARGET = """
import os, sqlite3
from contextlib import closing
from ferryman import SqlStore, migration

for name in ("src.db", "dst.db"):
    with closing(sqlite3.connect(name)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        if name == "src.db" and not db.execute("SELECT 1 FROM items").fetchone():
            db.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"item {i}") for i in range(1, 41)])

stores = [SqlStore("src", "sqlite:///src.db", "items"), SqlStore("dst", "sqlite:///dst.db", "items")]


@migration(source="src", dest="dst", batch_size=8, name="copy")
class Copy:
    def transform(self, aggregates, record):
        return [{"id": record["id"], "name": record["name"].upper()}]

    def verify(self, record, outputs, stored):
        if stored[0] is not None and stored[0]["name"].startswith("BAD"):
            return f"{record['name']} became {stored[0]['name']}"


migrations = [Copy]
"""


def ferryman(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-m", "ferryman", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env, check=False)


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferryman: error: "), stderr
    return lines[0]


@pytest.fixture
def project(tmp_path):
    (tmp_path / "m.py").write_text(TARGET)
    return tmp_path


def test_exit_codes_and_what_every_reader_shows(project):
    nothing = ferryman("verify", "m.py", cwd=project)
    assert nothing.returncode == 2
    assert "no progress ledger at" in one_error_line(nothing.stderr)

    run = ferryman("run", "m.py", "--verify-sample", "5", "--no-bar", cwd=project)
    assert run.returncode == 0, run.stderr
    assert "verification passed (a sample of 5 per migration" in run.stdout
    assert ferryman("verify", "m.py", "--all", cwd=project).returncode == 0

    with sqlite3.connect(project / "dst.db") as db:
        db.execute("UPDATE items SET name = 'BAD 3' WHERE id = 3")
    bad = ferryman("verify", "m.py", "--all", cwd=project)
    assert bad.returncode == 1, bad.stderr
    assert "copy: FAILED" in bad.stdout
    assert "different record 3: dst(id=3): name: different: expected 'ITEM 3' (str), found 'BAD 3' (str)" in bad.stdout
    assert "hook record 3: item 3 became BAD 3" in bad.stdout

    usage = ferryman("verify", "m.py", "--all", "--sample", "3", cwd=project)
    assert usage.returncode == 2 and "--sample and --all do not go together" in one_error_line(usage.stderr)
    unknown = ferryman("verify", "m.py", "--only", "nosuch", cwd=project)
    assert unknown.returncode == 2 and "unknown migration(s) nosuch" in one_error_line(unknown.stderr)

    status = ferryman("status", "--progress", "ferryman-progress.db", cwd=project)
    assert "verification: failed (all succeeded records" in status.stdout
    assert "copy: failed replay, hook" in status.stdout

    with BackgroundServer(create_app(LedgerStatusSource(project / "ferryman-progress.db"))) as server, \
            httpx.Client(base_url=server.url) as client:
        doc = client.get("/openapi.json").json()
        found = client.get("/migrate/verify").json()
        schema = {"$ref": "#/components/schemas/Verification", "components": doc["components"]}
        jsonschema.Draft202012Validator(schema).validate(found)
        assert found["status"] == "failed" and found["sample"] is None
        (copy,) = found["migrations"]
        assert copy["checks"]["replay"]["different"] == 1 and copy["checks"]["hook"]["failed"] == 1
        metrics = {s.name + repr(sorted(s.labels.items())): s.value
                   for family in text_string_to_metric_families(client.get("/metrics").text)
                   for s in family.samples}
        assert metrics["ferryman_verification_ok[]"] == 0
        assert metrics["ferryman_verification_check_ok[('check', 'counts'), ('migration', 'copy')]"] == 1
        assert metrics["ferryman_verification_check_ok[('check', 'replay'), ('migration', 'copy')]"] == 0
        assert metrics["ferryman_verification_records_checked[('migration', 'copy')]"] == 40
        from ferryman import ledger_commands

        over_http = ledger_commands.status(url=server.url)  # ferryman status --url
        assert over_http["verification"]["status"] == "failed"
        events = client.get("/migrate/events").json()["events"]
        assert [e["event"] for e in events if e["event"].startswith("verification")] == [
            "verification.passed", "verification.passed", "verification.failed"]


def test_before_any_verification_the_route_says_none(tmp_path):
    with BackgroundServer(create_app(LedgerStatusSource(tmp_path / "none.db"))) as server, \
            httpx.Client(base_url=server.url) as client:
        assert client.get("/migrate/verify").json() == {"status": "none", "ok": None, "migrations": []}


def test_a_verify_hook_with_the_wrong_parameters_is_refused_when_declared():
    with pytest.raises(MigrationDefinitionError, match=r"verify takes the wrong parameters.*"
                                                       r"expected: def verify\(self, record, outputs, stored\)"):
        @migration(source="a", dest="b")
        class Wrong:
            def transform(self, aggregates, record):
                return []

            def verify(self, record):
                return None


def test_a_verification_that_cannot_run_after_the_run_is_said_and_the_run_result_stands():
    from ferryman import MemoryStore, MigrationService

    class Unreadable(MemoryStore):
        def get_many(self, ids):
            raise OSError("the destination's disk is gone")

    @migration(source="src", dest="dst", name="copy")
    class Copy:
        def transform(self, aggregates, record):
            return [record]

    src = MemoryStore("src", records=[{"id": i} for i in range(5)])
    result = MigrationService([src, Unreadable("dst")], [Copy]).run(verify_sample=3)
    assert all(r.state.value == "completed" for r in result.reports)
    assert result.verification is None and not result.ok and result.exit_code == 1
    assert result.summary().splitlines()[-1] == (
        "the verification could not run: the destination's disk is gone")
