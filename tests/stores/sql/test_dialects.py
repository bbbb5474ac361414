"""One object per SQL dialect: the registry, the generic default, and a database added as one class."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from ferryman.stores import SqlStore
from ferryman.stores.common import OnConflict
from ferryman.stores.sql.clauses import Bound, bound_clause, bound_param
from ferryman.stores.sql.dialect import SqlDialect
from ferryman.stores.sql.dialects import DIALECTS, check_upsert, dialect_for
from ferryman.stores.sql.driver_errors import ConstraintDetails, Kind
from ferryman.stores.sql.mysql import MySQLDialect
from ferryman.stores.sql.postgres import PostgreSQLDialect
from ferryman.stores.sql.sqlite import SQLiteDialect
from ferryman.testing import INT_KEY, Layout, StoreContract, StoreFactory, create_test_table
from ferryman.types import Record


def test_each_database_name_has_one_class_and_any_other_name_the_generic_default() -> None:
    names = [name for cls in DIALECTS for name in cls.names]
    assert len(names) == len(set(names))
    assert type(dialect_for("sqlite")) is SQLiteDialect
    assert type(dialect_for("postgresql")) is PostgreSQLDialect
    assert type(dialect_for("mysql")) is MySQLDialect and type(dialect_for("mariadb")) is MySQLDialect
    generic = dialect_for("oracle")
    assert type(generic) is SqlDialect and generic.name == "oracle"
    assert dialect_for("mariadb") is dialect_for("mariadb")  # shared, stateless


def test_an_upsert_on_a_database_without_a_known_one_is_refused_naming_those_with_one() -> None:
    check_upsert(dialect_for("oracle"), "error")
    on_conflicts: tuple[OnConflict, ...] = ("update", "ignore")
    for on_conflict in on_conflicts:
        with pytest.raises(ValueError) as refused:
            check_upsert(dialect_for("oracle"), on_conflict)
        assert str(refused.value) == (
            f"on_conflict={on_conflict!r} is not supported on oracle; supported: sqlite, postgresql, mysql, mariadb"
        )
    for name in ("sqlite", "postgresql", "mysql", "mariadb"):
        check_upsert(dialect_for(name), "update")


# --- the keyset bounds: every form agrees with Python's tuple order -----------------------------

KEYS = st.lists(st.tuples(st.integers(-3, 3), st.sampled_from(["", "a", "b", "ab"]), st.integers(-2, 2)),
                unique=True, max_size=25)
BOUND_VALUES = st.tuples(st.integers(-4, 4), st.sampled_from(["", "a", "aa", "b", "c"]), st.integers(-3, 3))


def keyset_table() -> Table:
    return Table("k", MetaData(), Column("a", Integer, primary_key=True), Column("b", String(5), primary_key=True),
                 Column("c", Integer, primary_key=True))


BOUNDS: tuple[Bound, ...] = ("after", "upto")


def in_python(keys: Iterable[tuple[Any, ...]], bound: Bound, value: tuple[Any, ...], width: int) -> list[tuple[Any, ...]]:
    """The keys that ``bound`` keeps, on the first ``width`` key columns, by Python's tuple order."""
    kept = (k for k in keys if (k[:width] > value[:width] if bound == "after" else k[:width] <= value[:width]))
    return sorted(kept)


def rows_within(engine: Engine, dialect: SqlDialect, keys: Iterable[tuple[Any, ...]], bound: Bound,
                value: tuple[Any, ...], width: int) -> list[tuple[Any, ...]]:
    """The keys stored in a fresh table that ``dialect``'s ``bound`` condition keeps for
    ``value``, on the first ``width`` key columns."""
    table = keyset_table()
    with engine.begin() as conn:
        table.drop(conn, checkfirst=True)
        table.create(conn)
        rows = [dict(zip("abc", key)) for key in keys]
        if rows:
            conn.execute(insert(table), rows)
        columns = list(table.c)[:width]
        query = select(*table.c).where(bound_clause(columns, dialect, bound)).order_by(*table.c)
        values = {bound_param(bound, i): value[i] for i in range(width)}
        return [tuple(row) for row in conn.execute(query, values)]


@pytest.fixture(scope="module")
def sqlite_engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://", poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("width", [1, 2, 3])
@pytest.mark.parametrize("dialect", [SqlDialect("sqlite"), SQLiteDialect("sqlite")], ids=repr)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=KEYS, value=BOUND_VALUES)
def test_the_expanded_keyset_conditions_are_tuple_order(sqlite_engine: Engine, dialect: SqlDialect, width: int,
                                                        bound: Bound, keys: list[tuple[Any, ...]],
                                                        value: tuple[Any, ...]) -> None:
    assert rows_within(sqlite_engine, dialect, keys, bound, value, width) == in_python(keys, bound, value, width)


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", [SqlDialect("postgresql"), PostgreSQLDialect("postgresql")], ids=repr)
def test_postgres_row_values_and_the_expanded_condition_are_both_tuple_order(postgres_url: str,
                                                                              dialect: SqlDialect) -> None:
    engine = create_engine(postgres_url, poolclass=NullPool)

    @settings(max_examples=40, deadline=None)
    @given(keys=KEYS, value=BOUND_VALUES, width=st.integers(2, 3), bound=st.sampled_from(BOUNDS))
    def agrees(keys: list[tuple[Any, ...]], value: tuple[Any, ...], width: int, bound: Bound) -> None:
        # the strings drawn sort alike in every collation: "" < "a" < "aa" < "ab" < "b" < "c"
        assert rows_within(engine, dialect, keys, bound, value, width) == in_python(keys, bound, value, width)

    try:
        agrees()
    finally:
        engine.dispose()


# --- adding a database: one class -----------------------------------------------------------------


class PlainSQLite(SqlDialect):
    """A database added as one class that knows only its driver's errors: everything else is the
    generic default (plain INSERT, the expanded keyset condition, the journal by INSERT)."""

    def driver_kind(self, orig: BaseException) -> Kind | None:
        return SQLiteDialect.driver_kind(self, orig)  # type: ignore[arg-type]

    def constraint_details(self, orig: BaseException) -> ConstraintDetails:
        return SQLiteDialect.constraint_details(self, orig)  # type: ignore[arg-type]


class TestGenericDialectStore(StoreContract):
    """The store contract, passed by a store whose dialect object is :class:`PlainSQLite`."""

    not_applicable: ClassVar[Mapping[str, str]] = {
        name: "the generic dialect knows no upsert"
        for name in (
            "test_update_on_conflict_makes_saving_again_idempotent",
            "test_update_on_conflict_merges_repeats_within_a_batch",
            "test_ignore_on_conflict_keeps_the_stored_record",
            "test_upsert_still_rejects_a_clash_on_another_unique_field",
        )
    }

    @pytest.fixture
    def make_store(self, sqlite_url: str, stores: list[SqlStore]) -> StoreFactory:
        ddl = create_engine(sqlite_url, poolclass=NullPool)

        def make(layout: Layout = INT_KEY, rows: Iterable[Record] = (), *, name: str = "items",
                 on_conflict: OnConflict = "error") -> SqlStore:
            table = create_test_table(ddl, f"{name}_{len(stores)}", layout)
            store = SqlStore(name, sqlite_url, table.name, key=layout.key, on_conflict=on_conflict)
            store.impl = PlainSQLite("sqlite")
            stores.append(store)
            rows = list(rows)
            if rows:
                store.save_all(rows)
            return store

        return make


def test_the_generic_dialect_refuses_an_upsert_when_the_store_is_built() -> None:
    with pytest.raises(ValueError, match="on_conflict='update' is not supported on oracle"):
        SqlStore("x", "oracle+oracledb://u@h/db", "t", on_conflict="update")
