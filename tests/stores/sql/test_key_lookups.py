"""Looking ids up in a table: the driver-level lookups give what SQLAlchemy's ``IN`` query gives.

``SqlStore._rows_of`` (``get_many``, a duplicate's explanation) sends a one-column key's ids as a
statement compiled once per power of two of ids; ``_stored_ids`` (which ids of a batch the table
holds) reads an integer key's range when the table holds few rows in it. Both are compared here
with the plain SQLAlchemy query on random tables, on SQLite, PostgreSQL and MariaDB, and
``DriverStatement.params`` with SQLAlchemy's ``construct_params``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman import SqlStore
from ferryman.stores.sql.clauses import ids_clause
from ferryman.stores.sql.driver import DriverStatement, as_dicts
from ferryman.types import Record

QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


class Tables:
    """Tables ``ints`` (integer key) and ``texts`` (text key) in one database, filled anew."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        self.opened: list[SqlStore] = []

    def store(self, name: str, stored: list[Any]) -> SqlStore:
        for store in self.opened:
            store.close()
        meta = sa.MetaData()
        key = sa.BigInteger if name == "ints" else sa.String(12)
        table = sa.Table(name, meta, sa.Column("id", key, primary_key=True, autoincrement=False),
                         sa.Column("v", sa.String(12)))
        meta.drop_all(self.engine)
        meta.create_all(self.engine)
        if stored:
            with self.engine.begin() as conn:
                conn.execute(table.insert(), [{"id": i, "v": f"v{i}"} for i in stored])
        self.opened = [SqlStore(name, self.url, name)]
        return self.opened[0]

    def close(self) -> None:
        for store in self.opened:
            store.close()
        self.engine.dispose()


@pytest.fixture(params=["sqlite_url", "postgres_url", "mysql_url"])
def tables(request: pytest.FixtureRequest) -> Iterator[Tables]:
    made = Tables(request.getfixturevalue(request.param))
    yield made
    made.close()


def through_sqlalchemy(store: SqlStore, ids: list[Any], columns: list[Any]) -> list[Record]:
    """What ``_rows_of`` gave before: one SQLAlchemy ``IN`` query per 512 distinct ids."""
    wanted = list(dict.fromkeys((i,) for i in ids))
    with store.engine.connect() as conn:
        return [r for start in range(0, len(wanted), 512)
                for r in as_dicts(conn.execute(sa.select(*columns).where(
                    ids_clause(store._key_columns(), wanted[start:start + 512]))))]


def by_id(rows: list[Record]) -> list[Record]:
    return sorted(rows, key=lambda r: r["id"])


SPACE = 1500
stored_ints = st.lists(st.integers(0, SPACE), max_size=900, unique=True)
wanted_ints = st.lists(st.integers(-5, SPACE + 5), min_size=1, max_size=1100)


@settings(max_examples=30, deadline=None, suppress_health_check=QUIET)
@given(stored=stored_ints, ids=wanted_ints, text=st.booleans())
def test_a_lookup_by_ids_reads_the_rows_the_sqlalchemy_query_reads(
    tables: Tables, stored: list[int], ids: list[int], text: bool
) -> None:
    store = tables.store("texts" if text else "ints", [str(i) for i in stored] if text else stored)
    if text:
        ids = [str(i) for i in ids]
    for columns in (store._key_columns(), list(store.table.c)):
        assert by_id(store._rows_of(ids, columns)) == by_id(through_sqlalchemy(store, ids, columns))


@settings(max_examples=30, deadline=None, suppress_health_check=QUIET)
@given(dense=st.booleans(), stored=stored_ints, ids=wanted_ints.map(lambda ids: list(dict.fromkeys(ids))))
def test_the_stored_ids_of_a_range_are_those_the_lookup_by_ids_finds(
    tables: Tables, dense: bool, stored: list[int], ids: list[int]
) -> None:
    # dense: the table holds every id of the space, so a sparse batch's range holds more than
    # twice its ids and is looked up id by id after all
    store = tables.store("ints", list(range(SPACE + 1)) if dense else stored)
    expected = {store.id_of(r) for r in through_sqlalchemy(store, ids, store._key_columns())}
    assert store._stored_ids(ids) == expected


@settings(max_examples=30, deadline=None, suppress_health_check=QUIET)
@given(stored=st.lists(st.integers(0, 60), max_size=30, unique=True),
       batch=st.lists(st.integers(0, 60), min_size=1, max_size=80))
def test_the_clashes_named_are_the_records_stored_or_repeated_in_their_order(
    tables: Tables, stored: list[int], batch: list[int]
) -> None:
    store = tables.store("ints", stored)
    records = [{"id": i, "v": "new"} for i in batch]
    counts = Counter(batch)
    named = store.key_clashes(records)
    assert named is not None
    assert [id(r) for r in named] == [id(r) for r in records if r["id"] in stored or counts[r["id"]] > 1]


@settings(max_examples=200, deadline=None)
@given(
    shape=st.sampled_from(["page", "literal", "lookup"]),
    given_names=st.sets(st.sampled_from(["after_0", "limit", "id_0", "id_1", "id_2", "id_3", "extra"])),
    values=st.lists(st.integers(-3, 3), min_size=7, max_size=7),
)
def test_driver_parameters_are_those_sqlalchemy_lays_out(shape: str, given_names: set[str], values: list[int]) -> None:
    table = sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.Integer))
    statement: Any = {
        "page": sa.select(table.c.id).where(table.c.id > sa.bindparam("after_0")).limit(sa.bindparam("limit")),
        "literal": sa.select(table.c.id).where(table.c.id > sa.bindparam("after_0"), table.c.v == 5).limit(3),
        "lookup": sa.select(table.c.v).where(table.c.id.in_([sa.bindparam(f"id_{i}") for i in range(4)])),
    }[shape]
    given_values = dict(zip(sorted(given_names), values))
    for url in ("sqlite://", "postgresql+psycopg://", "mysql+pymysql://"):
        dialect = sa.create_engine(url).dialect
        compiled = statement.compile(dialect=dialect)
        driver = DriverStatement.of(compiled)
        assert driver is not None
        try:
            slow = compiled.construct_params(dict(given_values))
        except sa.exc.InvalidRequestError:  # a required parameter missing: so says the driver path
            with pytest.raises(sa.exc.InvalidRequestError):
                driver.params(given_values)
            continue
        order = compiled.positiontup if compiled.positional else None
        assert driver.params(given_values) == (tuple(slow[name] for name in order) if order else slow)
