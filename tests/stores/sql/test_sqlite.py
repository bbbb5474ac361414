"""SQLite's bulk insert (``ferryman/stores/sql/sqlite.py``): straight to sqlite3's executemany
only when SQLAlchemy would send the values unchanged; otherwise what is stored is exactly what
an INSERT through SQLAlchemy stores (JSON text for a str in a JSON column, ...)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, event, text
from sqlalchemy.pool import NullPool

from ferryman.errors import TerminalStoreError
from ferryman.stores import SqlStore
from ferryman.types import Record

DOCS_DDL = """CREATE TABLE docs (
    id INTEGER PRIMARY KEY, doc JSON, amount NUMERIC(10, 2), label TEXT, at DATETIME,
    ratio REAL, flag BOOLEAN)"""

PLUS_TWO = timezone(timedelta(hours=2))


def run_ddl(url: str, *statements: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def docs(sqlite_url: str, stores: list[SqlStore]) -> SqlStore:
    run_ddl(sqlite_url, DOCS_DDL)
    store = SqlStore("docs", sqlite_url, "docs")
    stores.append(store)
    return store


@pytest.fixture
def inserts(docs: SqlStore) -> Iterator[list[tuple[str, bool, Any]]]:
    """(statement, sent with exec_driver_sql, parameters) of every INSERT the store's engine runs."""
    seen: list[tuple[str, bool, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            seen.append((statement, context.compiled is None, parameters))

    engine = docs.engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def assert_read_back(store: SqlStore, want: list[Record]) -> None:
    got = store.read_page(None, None, 100)
    assert got == want
    for got_row, want_row in zip(got, want):
        for name, value in want_row.items():
            assert type(got_row[name]) is type(value), name
    assert store.get_many([w["id"] for w in want]) == want


NATIVE_ROWS = [
    {"id": 1, "doc": "abc", "amount": 12, "label": "x", "at": None, "ratio": 2, "flag": True},
    {"id": 2, "doc": "5", "amount": 0.25, "label": "y", "at": None, "ratio": 0.5, "flag": False},
    {"id": 3, "doc": 7, "amount": None, "label": None, "at": None, "ratio": None, "flag": None},
]
"""Only str, int, float, bool and None: the values sqlite3 would take as they are."""

NATIVE_BACK = [
    {"id": 1, "doc": "abc", "amount": Decimal("12.00"), "label": "x", "at": None, "ratio": 2.0, "flag": True},
    {"id": 2, "doc": "5", "amount": Decimal("0.25"), "label": "y", "at": None, "ratio": 0.5, "flag": False},
    {"id": 3, "doc": 7, "amount": None, "label": None, "at": None, "ratio": None, "flag": None},
]


@pytest.mark.parametrize("on_conflict", ["error", "update"])
def test_native_values_still_get_the_column_types_processing(
    sqlite_url: str, docs: SqlStore, stores: list[SqlStore], on_conflict: str
) -> None:
    """A str saved into a JSON column is the JSON string "abc", not the text abc (which is no
    JSON and could not be read back); the bulk path and the upsert store the same."""
    store = SqlStore("docs", sqlite_url, "docs", on_conflict=on_conflict)  # type: ignore[arg-type]
    stores.append(store)
    store.save_all([dict(r) for r in NATIVE_ROWS])
    assert_read_back(docs, NATIVE_BACK)


def test_the_driver_gets_json_text_for_a_str_in_a_json_column(
    docs: SqlStore, inserts: list[tuple[str, bool, Any]]
) -> None:
    """...and still through sqlite3's executemany: only the columns that need it are processed."""
    docs.save_all([dict(r) for r in NATIVE_ROWS])
    [(statement, driver_sql, parameters)] = inserts
    assert driver_sql and statement.startswith("INSERT INTO docs (id, doc, amount, label, at, ratio, flag) VALUES (?")
    assert parameters == [
        (1, '"abc"', 12.0, "x", None, 2.0, 1),
        (2, '"5"', 0.25, "y", None, 0.5, 0),
        (3, "7", None, None, None, None, None),
    ]


def test_structured_and_adapted_values_read_back_as_saved(docs: SqlStore) -> None:
    uid = uuid.UUID(int=0x1234)
    docs.save_all([
        {"id": 1, "doc": {"a": [1, 2]}, "label": "plain", "at": datetime(2024, 1, 1, 12, 30)},
        {"id": 2, "doc": ["x", None], "label": uid, "at": datetime(2024, 1, 1, 12, 30, tzinfo=PLUS_TWO)},
    ])
    docs.save_all([{"id": 3, "doc": "abc", "label": "text", "amount": Decimal("3.25")}])
    docs.save_all([{"id": 4, "label": str(uid), "at": None}])
    assert_read_back(docs, [
        {"id": 1, "doc": {"a": [1, 2]}, "amount": None, "label": "plain", "at": datetime(2024, 1, 1, 12, 30),
         "ratio": None, "flag": None},
        {"id": 2, "doc": ["x", None], "amount": None, "label": str(uid), "at": datetime(2024, 1, 1, 10, 30),
         "ratio": None, "flag": None},
        {"id": 3, "doc": "abc", "amount": Decimal("3.25"), "label": "text", "at": None, "ratio": None, "flag": None},
        {"id": 4, "doc": None, "amount": None, "label": str(uid), "at": None, "ratio": None, "flag": None},
    ])


@pytest.mark.parametrize("row", [{"id": 1, "ratio": "abc"}, {"id": 1, "at": "2024-01-01 00:00:00"}])
def test_a_value_the_column_type_refuses_fails_as_an_insert_through_sqlalchemy_does(
    sqlite_url: str, docs: SqlStore, stores: list[SqlStore], row: Record
) -> None:
    upsert = SqlStore("docs", sqlite_url, "docs", on_conflict="update")
    stores.append(upsert)
    with pytest.raises(TerminalStoreError) as bulk:
        docs.save_all([dict(row), {"id": 2}])
    with pytest.raises(TerminalStoreError) as through_sqlalchemy:
        upsert.save_all([dict(row), {"id": 2}])
    assert str(bulk.value) == str(through_sqlalchemy.value)
    assert docs.read_page(None, None, 10) == []


def test_plain_columns_go_straight_to_sqlite3_executemany(sqlite_url: str, stores: list[SqlStore]) -> None:
    run_ddl(sqlite_url, "CREATE TABLE plain (id INTEGER PRIMARY KEY, name TEXT, n BIGINT, code VARCHAR(8))")
    store = SqlStore("plain", sqlite_url, "plain")
    stores.append(store)
    seen: list[tuple[str, bool, bool, Any]] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            seen.append((statement, context.compiled is None, executemany, parameters))

    rows = [{"id": i, "name": f"n{i}", "n": 2**62 + i, "code": None if i == 2 else "c"} for i in range(3)]
    try:
        store.save_all(rows)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert seen == [(
        "INSERT INTO plain (id, name, n, code) VALUES (?, ?, ?, ?)",
        True,  # exec_driver_sql: no compiled statement, no SQLAlchemy parameter processing
        True,
        [tuple(r.values()) for r in rows],
    )]
    assert store.read_page(None, None, 10) == rows


def test_python_side_column_defaults_of_a_given_table_are_applied(sqlite_url: str, stores: list[SqlStore]) -> None:
    """A ``sqlalchemy.Table`` is used as given: its client-side defaults fill absent columns."""
    run_ddl(sqlite_url, "CREATE TABLE given (id INTEGER PRIMARY KEY, name TEXT, origin TEXT)")
    table = Table("given", MetaData(), Column("id", Integer, primary_key=True), Column("name", String),
                  Column("origin", String, default="ferryman"))
    store = SqlStore("given", sqlite_url, table)
    stores.append(store)
    store.save_all([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    assert store.read_page(None, None, 10) == [
        {"id": 1, "name": "a", "origin": "ferryman"}, {"id": 2, "name": "b", "origin": "ferryman"},
    ]


def test_a_mistyped_sqlite_path_is_refused_and_creates_no_file(tmp_path):
    from ferryman.errors import StoreUnusableError

    missing = tmp_path / "chinok.sqlite"
    store = SqlStore("src", f"sqlite:///{missing}", "albums")
    with pytest.raises(StoreUnusableError, match=f"store 'src' .*no SQLite database file at {missing}"):
        store.read_page(None, None, 10)
    store.close()
    assert not missing.exists()
