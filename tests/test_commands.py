"""The library verbs behind the CLI, called from Python on real stores and real ledger files."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime

import pytest

from ferryman import (
    Action,
    FailedRecord,
    LedgerBusyError,
    MemoryStore,
    MigrationEntry,
    MigrationProgress,
    MigrationService,
    PlanError,
    ProgressFormatError,
    Retry,
    SqlStore,
    commands,
    console,
    ledger_commands,
    migration,
)
from ferryman.dry_run import DryRunResult
from ferryman.errors import InputError, one_line
from ferryman.progress.sqlite import SqliteLedger
from ferryman.report import RunResult
from ferryman.server.address import parse_host_port

NO_RETRY = Retry(times=0, delay=0)


def snapshot(path) -> tuple[bytes, int] | None:
    """Bytes and mtime of a file (None when missing), to prove that nothing changed."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as fh:
        return fh.read(), os.stat(path).st_mtime_ns


def make_service(n: int = 20, bad: set[int] | frozenset[int] = frozenset(), calls: list[int] | None = None,
                 dst: MemoryStore | None = None):
    @migration(source="src", dest="dst", batch_size=5, save_retry=NO_RETRY, name="copy")
    class Copy:
        def transform(self, aggregates, record):
            if calls is not None:
                calls.append(record["id"])
            if record["id"] in bad:
                raise ValueError(f"bad record {record['id']}\nsecond line")
            return [{"id": record["id"], "v": record["v"] * 2}]

    src = MemoryStore("src", records=[{"id": i, "v": i} for i in range(1, n + 1)])
    dst = dst if dst is not None else MemoryStore("dst")
    return MigrationService([src, dst], [Copy]), dst


# --- run ----------------------------------------------------------------------------------------


def test_run_then_resume_on_a_json_ledger(tmp_path):
    progress = tmp_path / "p.json"
    service, dst = make_service()
    outcome = commands.run(service, progress=progress)
    assert outcome.exit_code == 0 and outcome.attempts == 1
    assert len(dst.records()) == 20
    saved = MigrationProgress.load(progress)
    (entry,) = saved.migrations.values()
    assert sorted(entry.succeeded) == list(range(1, 21))
    calls: list[int] = []
    service, _ = make_service(calls=calls, dst=dst)
    outcome = commands.run(service, progress=progress)
    assert outcome.exit_code == 0 and calls == []  # everything was done already
    assert outcome.reports[0].skipped == 20


def test_failures_then_ignore_then_run_again(tmp_path):
    progress = str(tmp_path / "p.json")
    service, dst = make_service(bad={3, 11})
    outcome = commands.run(service, progress=progress)
    assert outcome.exit_code == 1
    rows = ledger_commands.failed_list(progress)
    assert [(r.record.id, r.name, r.record.action) for r in rows] == [
        (3, "Copy", Action.RETRY), (11, "Copy", Action.RETRY)]
    assert rows[0].cause == "ValueError: bad record 3"
    assert ledger_commands.failed_set_action(progress, "IGNORE", ids=[3, 11]) == {"Copy": 2}
    service, _ = make_service(bad={3, 11}, dst=dst)
    outcome = commands.run(service, progress=progress)
    assert outcome.exit_code == 0
    assert outcome.reports[0].ignored == 2
    assert [r.record.action for r in ledger_commands.failed_list(progress)] == [Action.IGNORE] * 2


def test_max_tries_runs_again_until_it_completes(tmp_path):
    attempts: list[int] = []

    @migration(source="src", dest="dst", save_retry=NO_RETRY)
    class Flaky:
        def transform(self, aggregates, record):
            if record["id"] == 2:
                attempts.append(1)
                if len(attempts) < 3:
                    raise ConnectionError(f"try {len(attempts)}")
            return [dict(record)]

    src = MemoryStore("src", records=[{"id": i} for i in range(1, 6)])
    dst = MemoryStore("dst")
    lines: list[str] = []
    outcome = commands.run(MigrationService([src, dst], [Flaky]), progress=tmp_path / "p.json",
                           max_tries=3, retry_delay=0, echo=lines.append)
    assert outcome.exit_code == 0 and outcome.attempts == 3 and len(attempts) == 3
    assert len(dst.records()) == 5
    assert sum("trying again" in line for line in lines) == 2


def test_max_tries_gives_up_with_exit_1(tmp_path):
    service, _ = make_service(bad={1})
    outcome = commands.run(service, progress=tmp_path / "p.json", max_tries=2, retry_delay=0)
    assert outcome.exit_code == 1 and outcome.attempts == 2


def test_dry_run_saves_nothing_and_writes_no_progress(tmp_path):
    progress = tmp_path / "p.json"
    service, dst = make_service(bad={4})
    outcome = commands.run(service, progress=progress, dry_run=True)
    assert isinstance(outcome, DryRunResult) and outcome.would_write == {"copy": 19}
    assert dst.records() == [] and not progress.exists()
    text = outcome.summary()
    assert "copy: would write 19 record(s) to dst (20 read, 0 already done, 0 ignored, 1 would fail)" in text


@pytest.mark.parametrize(("option", "named"), [
    ({"serve": "127.0.0.1:0"}, "--serve"), ({"max_tries": 3}, "--max-tries"), ({"retry_delay": 5}, "--retry-delay"),
    ({"timeout": "10m"}, "--timeout"), ({"events": "events.jsonl"}, "--events"),
    ({"notify": ["http://127.0.0.1:9/hook"]}, "--notify"), ({"verify_sample": 10}, "--verify-sample"),
])
def test_dry_run_refuses_the_options_of_a_real_run_and_changes_nothing(tmp_path, option, named):
    service, dst = make_service()
    with pytest.raises(InputError, match=f"^{named}: not for --dry-run"):
        commands.run(service, progress=tmp_path / "p.json", dry_run=True, **option)
    assert dst.records() == [] and os.listdir(tmp_path) == []


def test_dry_run_skips_what_the_progress_says_is_done(tmp_path):
    progress = tmp_path / "p.json"
    service, dst = make_service(n=10)
    commands.run(service, progress=progress)
    before = snapshot(progress)
    service, _ = make_service(n=12, dst=dst)
    outcome = commands.run(service, progress=progress, dry_run=True)
    assert outcome.would_write == {"copy": 2}
    assert snapshot(progress) == before


def test_unknown_only_is_a_plan_error(tmp_path):
    service, _ = make_service()
    with pytest.raises(PlanError, match="unknown migration"):
        commands.run(service, progress=tmp_path / "p.json", only=["nope"])
    assert not (tmp_path / "p.json").exists()


def test_an_unreadable_store_stops_the_run_before_any_work(tmp_path):
    @migration(source="src", dest="dst")
    class Copy:
        def transform(self, aggregates, record):
            return [record]

    url = f"sqlite:///{tmp_path}/db.sqlite"
    sqlite3.connect(tmp_path / "db.sqlite").executescript("CREATE TABLE src (id INTEGER PRIMARY KEY);")
    service = MigrationService([SqlStore("src", url, "src"), SqlStore("dst", url, "missing_table")], [Copy])
    with pytest.raises(InputError) as info:
        commands.run(service, progress=tmp_path / "p.db")
    assert info.value.exit_code == 2 and "store 'dst' cannot be read" in str(info.value)
    assert "missing_table" in str(info.value)
    assert not (tmp_path / "p.db").exists()


def test_a_malformed_json_progress_changes_nothing(tmp_path):
    progress = tmp_path / "p.json"
    progress.write_text('{"metadata": [}')
    before = snapshot(progress)
    service, dst = make_service()
    with pytest.raises(InputError) as info:
        commands.run(service, progress=progress)
    assert info.value.exit_code == 2 and "p.json" in str(info.value)
    assert snapshot(progress) == before and dst.records() == []


def test_a_progress_in_a_missing_directory(tmp_path):
    service, _ = make_service()
    with pytest.raises(InputError, match="does not exist") as info:
        commands.run(service, progress=tmp_path / "nowhere" / "p.db")
    assert info.value.exit_code == 2


def test_bad_arguments():
    service, _ = make_service()
    with pytest.raises(InputError):
        commands.run(service, max_tries=0)
    with pytest.raises(InputError):
        commands.run(service, retry_delay=-1)
    assert parse_host_port("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_host_port(":81") == ("127.0.0.1", 81)
    assert parse_host_port("82") == ("127.0.0.1", 82)
    assert parse_host_port("[::1]:83") == ("::1", 83)
    with pytest.raises(InputError):
        parse_host_port("host:port")


def test_a_taken_port_is_refused_before_anything(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        service, dst = make_service()
        with pytest.raises(InputError, match=f"cannot serve on 127.0.0.1:{port}") as info:
            commands.run(service, progress=tmp_path / "p.db", serve=f"127.0.0.1:{port}")
        assert info.value.exit_code == 2
    assert not (tmp_path / "p.db").exists() and dst.records() == []


def test_plan_explains_the_order(tmp_path):
    service, _ = make_service()
    lines, problems = commands.plan(service)
    assert lines == ["1. [order 0] copy: src -> dst; no dependency"] and problems == []


# --- failed records on both kinds of ledger ---------------------------------------------------------


def sample_progress() -> MigrationProgress:
    when = datetime(2025, 8, 29, 0, 33, 52)
    cause = "Traceback (most recent call last):\n  File \"m.py\", line 3\nValueError: negative quantity\n"
    orders = MigrationEntry("shop.CopyOrders", {1: None, 2: None}, {
        17: FailedRecord(17, "orders(id=17)", cause, Action.RETRY, when),
        (1, "a"): FailedRecord((1, "a"), "orders(id=(1, 'a'))", "KeyError: 'x'", Action.RETRY, when),
        "x9": FailedRecord("x9", "orders(id='x9')", "DuplicateDataError: UNIQUE constraint failed", Action.IGNORE, when),
    })
    customers = MigrationEntry("shop.CopyCustomers", {5: None}, {
        17: FailedRecord(17, "customers(id=17)", "DuplicateDataError: UNIQUE constraint failed: email", Action.RETRY, when),
    })
    progress = MigrationProgress(migrations={"shop.CopyOrders": orders, "shop.CopyCustomers": customers})
    progress.metadata.completed = []
    return progress


@pytest.fixture(params=["json", "sqlite"])
def ledger_path(request, tmp_path) -> str:
    if request.param == "json":
        path = str(tmp_path / "progress.json")
        sample_progress().save(path)
    else:
        path = str(tmp_path / "progress.db")
        ledger_commands.progress_import(path, _json_file(tmp_path))
    return path


def _json_file(tmp_path) -> str:
    path = str(tmp_path / "sample.json")
    sample_progress().save(path)
    return path


def test_failed_list_everything(ledger_path):
    rows = ledger_commands.failed_list(ledger_path)
    assert [(r.name, r.record.id, r.record.action.value) for r in rows] == [
        ("CopyOrders", 17, "RETRY"), ("CopyOrders", (1, "a"), "RETRY"), ("CopyOrders", "x9", "IGNORE"),
        ("CopyCustomers", 17, "RETRY"),
    ]
    assert rows[0].cause == "ValueError: negative quantity"
    text = console.format_failed(rows)
    assert text.splitlines()[0].split() == ["ID", "MIGRATION", "ACTION", "DESCRIPTION", "CAUSE"]
    assert '[1,"a"]' in text and "4 failed record(s), 1 marked IGNORE" in text


def test_failed_list_filters(ledger_path):
    assert [r.record.id for r in ledger_commands.failed_list(ledger_path, migration="CopyCustomers")] == [17]
    assert [r.record.id for r in ledger_commands.failed_list(ledger_path, migration="shop.CopyCustomers")] == [17]
    assert [r.record.id for r in ledger_commands.failed_list(ledger_path, grep="unique")] == ["x9", 17]
    with pytest.raises(InputError, match="no migration 'Nope'.*CopyOrders, CopyCustomers"):
        ledger_commands.failed_list(ledger_path, migration="Nope")


def test_ignore_and_retry_by_id(ledger_path):
    changed = ledger_commands.failed_set_action(ledger_path, Action.IGNORE, ids=[17, (1, "a")], migration="CopyOrders")
    assert changed == {"CopyOrders": 2}
    actions = {(r.name, r.record.id): r.record.action.value for r in ledger_commands.failed_list(ledger_path)}
    assert actions == {("CopyOrders", 17): "IGNORE", ("CopyOrders", (1, "a")): "IGNORE",
                       ("CopyOrders", "x9"): "IGNORE", ("CopyCustomers", 17): "RETRY"}
    assert ledger_commands.failed_set_action(ledger_path, "RETRY", ids=["x9"]) == {"CopyOrders": 1}
    assert ledger_commands.failed_set_action(ledger_path, "RETRY", ids=["x9"]) == {"CopyOrders": 0}


def test_ignore_all_and_grep(ledger_path):
    assert ledger_commands.failed_set_action(ledger_path, "IGNORE", grep="UNIQUE") == {"CopyOrders": 0, "CopyCustomers": 1}
    assert ledger_commands.failed_set_action(ledger_path, "IGNORE", all=True) == {"CopyOrders": 2, "CopyCustomers": 0}
    assert {r.record.action for r in ledger_commands.failed_list(ledger_path)} == {Action.IGNORE}
    assert ledger_commands.failed_set_action(ledger_path, "RETRY", all=True, migration="CopyCustomers") == {"CopyCustomers": 1}


def test_bad_selections_change_nothing(ledger_path):
    before = snapshot(ledger_path)
    with pytest.raises(InputError, match="exactly one") as info:
        ledger_commands.failed_set_action(ledger_path, "IGNORE")
    assert info.value.exit_code == 2
    with pytest.raises(InputError, match="exactly one"):
        ledger_commands.failed_set_action(ledger_path, "IGNORE", ids=[17], all=True)
    with pytest.raises(InputError, match="not a failed record.*: 99, nope"):
        ledger_commands.failed_set_action(ledger_path, "IGNORE", ids=[(1, "a"), 99, "nope"], migration="CopyOrders")
    with pytest.raises(InputError, match="id 17 failed in several migrations.*--migration"):
        ledger_commands.failed_set_action(ledger_path, "IGNORE", ids=[17])
    assert snapshot(ledger_path) == before


def test_a_missing_progress_file(tmp_path):
    for path in (tmp_path / "nope.db", tmp_path / "nope.json"):
        with pytest.raises(FileNotFoundError) as info:
            ledger_commands.failed_list(path)
        assert one_line(info.value) == f"no progress file: {path}"
        assert not path.exists()
    with pytest.raises(InputError, match="is a directory"):
        ledger_commands.failed_list(tmp_path)


def test_a_malformed_progress_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"migrationProgress": {"a": {"succeededRecordIds": [1.5]}}}')
    before = snapshot(path)
    with pytest.raises(ProgressFormatError) as info:
        ledger_commands.failed_set_action(path, "IGNORE", all=True)
    assert "$.migrationProgress" in one_line(info.value) and "\n" not in one_line(info.value)
    assert snapshot(path) == before


def test_a_live_run_holds_the_ledger(tmp_path):
    path = str(tmp_path / "p.db")
    ledger_commands.progress_import(path, _json_file(tmp_path))
    other = tmp_path / "other.json"
    MigrationProgress().save(other)
    run = SqliteLedger(path)
    run.begin_run([])
    try:
        before = {r.record.id: r.record.action for r in ledger_commands.failed_list(path)}  # reading is fine
        with pytest.raises(LedgerBusyError, match="cannot change failed records in .* is in use by pid"):
            ledger_commands.failed_set_action(path, "IGNORE", all=True)
        with pytest.raises(LedgerBusyError):
            ledger_commands.progress_import(path, other)
        with pytest.raises(LedgerBusyError):
            ledger_commands.progress_export(path, tmp_path / "out.json")
        assert {r.record.id: r.record.action for r in ledger_commands.failed_list(path)} == before
        assert not (tmp_path / "out.json").exists()
    finally:
        run.end_run(RunResult([]))
        run.close()
    assert ledger_commands.failed_set_action(path, "IGNORE", all=True) == {"CopyOrders": 2, "CopyCustomers": 1}


# --- export and import ---------------------------------------------------------------------------------


def test_export_then_import_round_trip(tmp_path):
    db = str(tmp_path / "p.db")
    counts = ledger_commands.progress_import(db, _json_file(tmp_path))
    assert (counts.migrations, counts.succeeded, counts.failed) == (2, 3, 4)
    assert str(counts) == "2 migration(s), 3 succeeded and 4 failed record(s)"
    out = tmp_path / "out.json"
    assert ledger_commands.progress_export(db, out) == counts
    assert MigrationProgress.load(out).migrations == sample_progress().migrations
    again = tmp_path / "again.db"
    ledger_commands.progress_import(again, out)
    assert ledger_commands.failed_list(again)[0].record.id == 17


def test_export_from_json_and_refusals(tmp_path):
    src = _json_file(tmp_path)
    ledger_commands.progress_export(src, tmp_path / "copy.json")
    assert MigrationProgress.load(tmp_path / "copy.json") == MigrationProgress.load(src)
    with pytest.raises(InputError, match="the progress file itself"):
        ledger_commands.progress_export(src, src)
    with pytest.raises(InputError, match="import goes into an SQLite ledger"):
        ledger_commands.progress_import(tmp_path / "x.json", src)


def test_import_of_a_malformed_file_changes_nothing(tmp_path):
    db = str(tmp_path / "p.db")
    ledger_commands.progress_import(db, _json_file(tmp_path))
    before = ledger_commands.failed_list(db)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProgressFormatError):
        ledger_commands.progress_import(db, bad)
    assert [r.record for r in ledger_commands.failed_list(db)] == [r.record for r in before]
    with pytest.raises(ProgressFormatError):
        ledger_commands.progress_import(tmp_path / "new.db", bad)
    assert not [p for p in os.listdir(tmp_path) if p.startswith("new.db")]  # not even an empty ledger
    with pytest.raises(FileNotFoundError):
        ledger_commands.progress_import(tmp_path / "new.db", tmp_path / "missing.json")
    assert not (tmp_path / "new.db").exists()


# --- status ------------------------------------------------------------------------------------------


def test_status_of_a_progress_file(tmp_path):
    progress = str(tmp_path / "p.json")
    service, _ = make_service(bad={2})
    commands.run(service, progress=progress)
    snap = ledger_commands.status(progress=progress)
    assert snap["result"]["status"] == "failed"
    text = console.format_status(snap)
    assert text.startswith("status: failed")
    assert "MIGRATION" in text and "Copy" in text
    with pytest.raises(FileNotFoundError):
        ledger_commands.status(progress=tmp_path / "missing.db")
    with pytest.raises(InputError):
        ledger_commands.status()


def test_status_of_an_unreachable_server():
    with pytest.raises(InputError, match="cannot reach http://127.0.0.1:9/migrate/result"):
        ledger_commands.status(url="http://127.0.0.1:9", timeout=2)


def test_format_status_tolerates_missing_parts():
    assert console.format_status({}) == "no status to show"
    text = console.format_status({"result": {"status": "running", "step": "a", "last_err": None, "try_count": 2},
                                   "progress": {"migrations": [{"name": "a", "state": "running", "read": 5}]}})
    assert text.splitlines()[0] == "status: running   step: a   tries: 2   last error: -"
    assert text.splitlines()[1].split() == ["MIGRATION", "STATE", "READ"]
    wide = console.format_status({"progress": {"migrations": [{"name": "a", "read": 1234567, "rate": 2500.0}]}})
    assert wide.splitlines()[1].split() == ["a", "1,234,567", "2,500.0"]  # counts as the run's lines write them
    assert json.dumps(text)  # plain text


def test_format_status_shows_partitions_with_their_ranges_as_ids():
    text = console.format_status({"progress": {"migrations": [], "partitions": [
        {"migration": "Lines", "index": 0, "after": None, "upto": [10248, "b c"], "state": "completed",
         "attempts": 1, "read": 1500, "written": 1500, "failed": 0, "rate": 10.0, "holder": None},
        {"migration": "Lines", "index": 1, "after": [10248, "b c"], "upto": 123456, "state": "running",
         "attempts": 2, "read": 7, "written": 7, "failed": 0, "rate": 1.5, "holder": "pid 7 on h"}]}})
    lines = text.splitlines()
    assert lines[0].split() == ["MIGRATION", "PART", "AFTER", "UPTO", "STATE", "TRIES", "READ", "WRITTEN",
                                "FAILED", "RATE/S", "HOLDER"]
    assert lines[1].split()[:4] == ["Lines", "0", "-", '[10248,"b']  # the id as `failed list` types it
    assert "123456" in lines[2] and "123,456" not in lines[2] and lines[2].endswith("pid 7 on h")
    assert "1,500" in lines[1]  # counts keep their separators
