"""The constraint a record broke, as fields of the error: what each database says, parsed."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from ferryman import DuplicateDataError, SqlStore, TerminalStoreError

TABLES = [
    "CREATE TABLE parents (id INTEGER PRIMARY KEY)",
    """CREATE TABLE items (id INTEGER PRIMARY KEY, a VARCHAR(20) NOT NULL, b INTEGER, c INTEGER,
       CONSTRAINT items_ab UNIQUE (a, b), CONSTRAINT items_chk CHECK (c > 0),
       CONSTRAINT items_fk FOREIGN KEY (b) REFERENCES parents (id))""",
    "INSERT INTO parents VALUES (1), (2)",
    "INSERT INTO items VALUES (1, 'x', 1, 1)",
]


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def items(request, tmp_path):
    url = {"sqlite": lambda: f"sqlite:///{tmp_path}/db.sqlite",
           "postgresql": lambda: request.getfixturevalue("postgres_url"),
           "mysql": lambda: request.getfixturevalue("mysql_url")}[request.param]()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in TABLES:
            conn.exec_driver_sql(statement)
    engine.dispose()
    store = SqlStore("items", url, "items")
    yield request.param, store
    store.close()


def row(i: int, a: str | None = "y", b: int | None = 2, c: int = 1) -> dict[str, object]:
    return {"id": i, "a": a, "b": b, "c": c}


# (constraint, columns, values) each database reports, for a clash on the primary key and on (a, b)
DUPLICATES = {
    "sqlite": {"key": (None, ("id",), ()), "ab": (None, ("a", "b"), ())},
    "postgresql": {"key": ("items_pkey", ("id",), ("1",)), "ab": ("items_ab", ("a", "b"), ("x", "1"))},
    "mysql": {"key": ("PRIMARY", ("id",), ("1",)), "ab": ("items_ab", ("a", "b"), ("x", "1"))},
}


@pytest.mark.parametrize("batch", [1, 12], ids=["alone", "in-a-batch"])  # 12 rows: PostgreSQL's COPY
def test_a_duplicate_names_its_constraint_columns_and_values(items, batch):
    dialect, store = items
    fillers = [row(100 + i, a=f"f{i}") for i in range(batch - 1)]
    for clash, record in (("key", row(1)), ("ab", row(5, a="x", b=1))):
        with pytest.raises(DuplicateDataError) as info:
            store.save_all([*fillers, record])
        error = info.value
        assert (error.constraint, error.columns, error.values) == DUPLICATES[dialect][clash], str(error)


# (constraint, columns) for NOT NULL, CHECK and foreign key violations
TERMINAL = {
    "sqlite": {"null": (None, ("a",)), "check": ("items_chk", ()), "fk": (None, ())},
    "postgresql": {"null": (None, ("a",)), "check": ("items_chk", ()), "fk": ("items_fk", ("b",))},
    "mysql": {"null": (None, ("a",)), "check": ("items_chk", ()), "fk": ("items_fk", ("b",))},
}


def test_not_null_check_and_foreign_key_violations_name_what_they_can(items):
    dialect, store = items
    for broken, record in (("null", row(7, a=None)), ("check", row(8, c=-1)), ("fk", row(9, b=9))):
        with pytest.raises(TerminalStoreError) as info:
            store.save_all([record])
        error = info.value
        assert type(error) is TerminalStoreError
        assert (error.constraint, error.columns) == TERMINAL[dialect][broken], str(error)
    assert [r["id"] for r in store.read_page(None, None, 10)] == [1]  # nothing was saved


def test_a_field_missing_from_a_not_null_column_without_default_names_it(items):
    _dialect, store = items
    with pytest.raises(TerminalStoreError) as info:
        store.save_all([{"id": 7, "b": 1, "c": 1}])
    assert info.value.columns == ("a",), str(info.value)
