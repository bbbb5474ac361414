"""Errors: each says its exit code; one line of text for any error; one summary of a stored cause."""

from __future__ import annotations

import sqlite3

import pytest

from ferryman import errors
from ferryman.errors import (
    FerrymanError,
    InputError,
    LeaseLostError,
    LedgerBusyError,
    LedgerFileError,
    LedgerMismatchError,
    MigrationDefinitionError,
    PlanError,
    ProgressFormatError,
    StopRequested,
    TargetError,
    TransientStoreError,
    cause_summary,
    one_line,
)


def test_every_error_says_its_exit_code() -> None:
    nothing_done = {InputError, TargetError, MigrationDefinitionError, PlanError, ProgressFormatError,
                    LedgerFileError, LedgerBusyError, LedgerMismatchError}
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, FerrymanError)]
    assert len(classes) > len(nothing_done)
    for cls in classes:
        assert cls.exit_code == (2 if cls in nothing_done else 1), cls
    assert LeaseLostError.exit_code == 1  # the run had begun: something was done
    assert StopRequested.exit_code == 130


def test_cause_summary_picks_the_exception_line() -> None:
    python = "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n    raise X\nValueError: bad\n"
    assert cause_summary(python) == "ValueError: bad"
    chained = python + "\nThe above exception was the direct cause of the following exception:\n\n" \
        "Traceback (most recent call last):\n  File \"y.py\", line 2\nferryman.errors.DuplicateDataError: dup\n"
    assert cause_summary(chained) == "DuplicateDataError: dup"
    java = "java.lang.IllegalStateException: boom\n\tat a.b.C.d(C.java:1)\n"
    assert cause_summary(java) == "IllegalStateException: boom"
    assert cause_summary("") == ""


def test_cause_summary_puts_the_drivers_message_first() -> None:
    driver = (
        "Traceback (most recent call last):\n  File \"s.py\", line 9, in save\n"
        "psycopg.errors.NotNullViolation: null value in column \"email\" of relation \"users\" violates not-null "
        "constraint\nDETAIL:  Failing row contains (2, null).\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n  File \"t.py\", line 3, in save\n"
        "ferryman.errors.TerminalStoreError: store 'dst' (sqlite:///x.db, table users): null value in column ...\n"
    )
    assert cause_summary(driver) == ('null value in column "email" of relation "users" violates not-null constraint '
                                     "(NotNullViolation, in TerminalStoreError)")
    sqlite = "Traceback (most recent call last):\n  File \"a.py\"\nsqlite3.IntegrityError: NOT NULL constraint failed: t.email\n"
    assert cause_summary(sqlite) == "NOT NULL constraint failed: t.email (IntegrityError)"


def test_one_line_messages() -> None:
    err = MigrationDefinitionError("m.X", ["missing method transform", "bad option"])
    assert one_line(err) == "migration m.X is invalid: missing method transform; bad option"
    assert one_line(FileNotFoundError(2, "No such file or directory", "/x/p.db")) == "No such file or directory: /x/p.db"
    assert one_line(RuntimeError("a\n  b")) == "RuntimeError: a; b"
    assert one_line(PlanError("cycle")) == "cycle"
    from sqlalchemy.exc import OperationalError

    text = one_line(OperationalError("SELECT 1", {}, sqlite3.OperationalError("unable to open database file")))
    assert text == "database error: unable to open database file"


def test_a_run_records_errors_with_their_type() -> None:
    assert one_line(TransientStoreError("store 'dst': connection refused"), typed=True) == (
        "TransientStoreError: store 'dst': connection refused")
    assert one_line(ValueError("bad\n  worse"), typed=True) == "ValueError: bad; worse"
    assert one_line(OSError("disk gone"), typed=True) == "OSError: disk gone"
    assert one_line(KeyError(), typed=True) == "KeyError"
    assert one_line(ValueError("postgresql://u:secret@db/x unreachable"), typed=True) == (
        "ValueError: postgresql://u:***@db/x unreachable")


@pytest.mark.parametrize("stored", [
    "java.lang.IllegalStateException: boom\n\tat mjg.Runner.run(Runner.java:10)\n",
    ("Traceback (most recent call last):\n  File \"m.py\", line 3, in run\n    go()\n"
     "java.lang.IllegalStateException: boom\n"),
    "IllegalStateException: boom",
])
def test_a_cause_is_summarised_by_what_failed_not_where(stored: str) -> None:
    assert cause_summary(stored) == "IllegalStateException: boom"
