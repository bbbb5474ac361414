"""FailedRecords from Python: list and mark the failed records of a ledger in hand or at a path."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ferryman import (
    Action,
    FailedRecord,
    InputError,
    LedgerBusyError,
    MemoryLedger,
    MigrationProgress,
)
from ferryman.progress.failed import FailedRecords
from ferryman.progress.files import JsonFileLedger
from ferryman.progress.ledger import Ledger
from ferryman.progress.sqlite import SqliteLedger
from ferryman.report import RunResult

WHEN = datetime(2024, 6, 1, 3, 0)
CAUSE = "Traceback (most recent call last):\n  File \"m.py\", line 3\nValueError: negative quantity\n"


def sample() -> MigrationProgress:
    progress = MigrationProgress()
    progress.entry("shop.Orders").mark_failed([
        FailedRecord(1, "orders(id=1)", CAUSE, Action.RETRY, WHEN),
        FailedRecord(2, "orders(id=2)", "KeyError: 'sku'", Action.RETRY, WHEN),
    ])
    progress.entry("shop.Lines").mark_failed([FailedRecord(1, "lines(id=1)", "KeyError: 'x'", Action.RETRY, WHEN)])
    return progress


@pytest.fixture(params=["memory", "sqlite", "json"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "memory":
        yield MemoryLedger(sample())
        return
    opened: Ledger
    if request.param == "json":
        path = tmp_path / "p.json"
        sample().save(path)
        opened = JsonFileLedger(path)
    else:
        sqlite = SqliteLedger(tmp_path / "p.db")
        sqlite.import_progress(sample())
        opened = sqlite
    yield opened
    opened.close()


def test_a_ledger_in_hand_lists_and_marks(ledger: Ledger) -> None:
    failed = FailedRecords(ledger)
    rows = failed.list()
    assert [(r.name, r.record.id) for r in rows] == [("Orders", 1), ("Orders", 2), ("Lines", 1)]
    assert rows[0].cause == "ValueError: negative quantity"
    assert [r.record.id for r in failed.list(migration="Orders", grep="SKU")] == [2]
    assert failed.mark(Action.IGNORE, grep="keyerror") == {"Orders": 1, "Lines": 1}
    assert failed.mark("RETRY", ids=[2], migration="shop.Orders") == {"Orders": 1}
    with pytest.raises(InputError, match="id 1 failed in several migrations"):
        failed.mark("IGNORE", ids=[1])
    assert {(r.name, r.record.id): r.record.action for r in failed.list()} == {
        ("Orders", 1): Action.RETRY, ("Orders", 2): Action.RETRY, ("Lines", 1): Action.IGNORE}


def test_marks_on_a_json_file_are_saved_once_and_under_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    sample().save(path)
    assert FailedRecords(path).mark(Action.IGNORE, all=True) == {"Orders": 2, "Lines": 1}
    assert {r.action for _, r in MigrationProgress.load(path).failed_records()} == {Action.IGNORE}
    run = JsonFileLedger(path)
    run.begin_run([])
    try:
        with pytest.raises(LedgerBusyError, match=f"cannot change failed records in {path}"):
            FailedRecords(path).mark(Action.RETRY, all=True)
        assert len(FailedRecords(path).list()) == 3  # reading is fine
    finally:
        run.end_run(RunResult([]))
        run.close()
    assert FailedRecords(path).mark(Action.RETRY, all=True) == {"Orders": 2, "Lines": 1}


def test_a_choice_of_records_is_exactly_one_way() -> None:
    failed = FailedRecords(MemoryLedger(sample()))
    choices: list[dict[str, Any]] = [{}, {"ids": [1], "all": True}, {"all": True, "grep": "x"}]
    for choice in choices:
        with pytest.raises(InputError, match="exactly one"):
            failed.mark(Action.IGNORE, **choice)
    with pytest.raises(InputError, match="empty one would choose every record"):
        failed.list(grep="")
    with pytest.raises(InputError, match="no migration 'Nope' in MemoryLedger; it has: Orders, Lines"):
        failed.list(migration="Nope")


@pytest.mark.parametrize("kind", ["sqlite", "json"])
def test_an_id_with_whitespace_at_an_end_is_listed_so_it_types_back_and_a_bare_one_is_told_why(
        tmp_path: Path, kind: str) -> None:
    from click.testing import CliRunner

    from ferryman.cli import cli

    progress = MigrationProgress()
    progress.entry("shop.Customers").mark_failed([FailedRecord("Val2 ", "customers(id='Val2 ')", "KeyError: 'x'",
                                                               Action.RETRY, WHEN)])
    path = tmp_path / f"p.{'db' if kind == 'sqlite' else 'json'}"
    if kind == "json":
        progress.save(path)
    else:
        with SqliteLedger(path) as sqlite:
            sqlite.import_progress(progress)
    runner = CliRunner()
    listed = runner.invoke(cli, ["failed", "list", "--progress", str(path)])
    assert listed.stdout.splitlines()[1].split()[:2] == ['"Val2', '"'], listed.stdout  # "Val2 ", quoted
    bare = runner.invoke(cli, ["failed", "ignore", "--progress", str(path), "Val2"])
    assert bare.exit_code == 2
    assert bare.stderr == (f"ferryman: error: not a failed record in {path}: Val2 (see `ferryman failed list`; "
                           "did you mean '\"Val2 \"'? An id with whitespace at an end is shown, and typed, as a "
                           "JSON string)\n")
    assert [r.record.action for r in FailedRecords(path).list()] == [Action.RETRY]  # nothing changed
    typed = runner.invoke(cli, ["failed", "ignore", "--progress", str(path), listed.stdout.splitlines()[1][:7]])
    assert typed.exit_code == 0 and typed.stdout.strip() == "ignored 1 failed record(s) (Customers 1)"
