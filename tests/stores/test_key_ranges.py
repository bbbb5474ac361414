"""Key ranges: ``Store.split`` cuts a store's records into ranges of about equal size, and
``read_pages(..., upto=)`` reads one of them; together the ranges are the whole store, each
record once, in the store's own key order (a database's collation for text keys)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, create_engine, delete, event
from sqlalchemy.pool import NullPool

from ferryman import key_ranges
from ferryman.stores import MemoryStore, SqlStore, Store
from ferryman.stores.base import split_positions
from ferryman.types import Filter, Record, RecordId

# --- the rule: where a store is cut ----------------------------------------------------------


@given(total=st.integers(0, 500), parts=st.integers(1, 12))
def test_split_positions_cut_ranges_that_differ_by_one_record_at_most(total: int, parts: int) -> None:
    positions = split_positions(total, parts)
    assert positions == sorted(set(positions)) and all(0 <= p < total - 1 for p in positions)
    ends = [*positions, total - 1]
    sizes = [end - start for start, end in zip([-1, *positions], ends)]
    assert len(sizes) == max(1, min(parts, total))
    if total:
        assert sum(sizes) == total and max(sizes) - min(sizes) <= 1


def test_key_ranges_are_bounded_by_the_boundaries_and_open_at_both_ends() -> None:
    assert key_ranges([]) == [(None, None)]
    assert key_ranges([3, 9]) == [(None, 3), (3, 9), (9, None)]
    assert key_ranges([(1, "a")]) == [(None, (1, "a")), ((1, "a"), None)]


@pytest.mark.parametrize("parts", [0, -1])
def test_fewer_than_one_part_is_refused(parts: int) -> None:
    for store in (MemoryStore("m"), ReadPageOnly([])):
        with pytest.raises(ValueError, match="at least 1 part"):
            store.split(parts)


# --- the defaults: a store that implements read_page only ----------------------------------------


class ReadPageOnly(Store):
    """A custom store with the abstract methods only; counts the pages it is asked for."""

    def __init__(self, ids: Sequence[int]) -> None:
        super().__init__("custom")
        self.rows = [{"id": i} for i in sorted(ids)]
        self.reads = 0

    def read_page(self, filter: Filter | None, after: RecordId | None, limit: int) -> list[Record]:
        self.reads += 1
        return [r for r in self.rows if after is None or r["id"] > after][:limit]  # type: ignore[operator]

    def get_many(self, ids: Sequence[RecordId]) -> list[Record]:
        raise NotImplementedError

    def save_all(self, records: list[Record], *, journal: Any = None) -> None:
        raise NotImplementedError


@given(ids=st.sets(st.integers(0, 60), max_size=40), after=st.none() | st.integers(-1, 61),
       upto=st.integers(-1, 61), limit=st.integers(1, 8))
def test_the_default_upto_stops_at_the_first_record_past_it(ids: set[int], after: int | None, upto: int,
                                                             limit: int) -> None:
    store = ReadPageOnly(list(ids))
    pages = list(store.read_pages(None, after, limit, upto=upto))
    expected = [{"id": i} for i in sorted(ids) if (after is None or i > after) and i <= upto]
    assert [r for page in pages for r in page] == expected
    assert all(0 < len(page) <= limit for page in pages)
    kept_before = sum(1 for i in ids if after is None or i > after) - sum(1 for i in ids if i > upto)
    assert store.reads <= max(kept_before, 0) // limit + 1  # never a page beyond the one past upto


def test_the_default_split_is_one_range() -> None:
    store = ReadPageOnly(range(50))
    assert store.split(4) == []
    assert [r for page in store.read_pages(None, None, 7, upto=None) for r in page] == store.rows


# --- the built-in stores, on random tables ---------------------------------------------------------


@dataclass(frozen=True)
class KeyKind:
    """A key of one shape: its columns, and random distinct keys for a database."""

    name: str
    fields: tuple[str, ...]
    columns: Callable[[], list[Column[Any]]]
    key: Callable[[bool], st.SearchStrategy[Any]]
    """A random key; the argument: whether the database ignores case (MariaDB)."""

    def keys(self, ignores_case: bool) -> st.SearchStrategy[list[Any]]:
        """Random keys, distinct in the database; as many as 150 (Hypothesis' lists alone
        are mostly short, and balance is checked only on stores ten times as large as ``parts``)."""
        return st.integers(0, 150).flatmap(lambda n: st.lists(
            self.key(ignores_case), min_size=n, max_size=n, unique_by=folded(ignores_case)))

    def record(self, key: Any, n: int) -> Record:
        values = key if isinstance(key, tuple) else (key,)
        return {**dict(zip(self.fields, values)), "v": n}


def texts(ignores_case: bool) -> st.SearchStrategy[str]:
    """Mixed case, and any Unicode but NUL (PostgreSQL refuses it in text) where the database
    tells every string apart; ASCII letters and digits where it ignores case and accents."""
    if ignores_case:
        return st.text(st.sampled_from("aAbBzZ09_-"), max_size=6)
    return st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=6)


def folded(ignores_case: bool) -> Callable[[Any], Any]:
    """What makes two keys the same key in the database."""
    if not ignores_case:
        return lambda key: key
    return lambda key: tuple(v.lower() if isinstance(v, str) else v for v in key) if isinstance(key, tuple) \
        else key.lower() if isinstance(key, str) else key


KINDS = [
    KeyKind("int", ("k",), lambda: [Column("k", BigInteger, primary_key=True, autoincrement=False)],
            lambda _: st.integers(-2**40, 2**40)),
    KeyKind("text", ("k",), lambda: [Column("k", String(40), primary_key=True)],
            texts),
    KeyKind("int_text", ("a", "b"),
            lambda: [Column("a", Integer, primary_key=True, autoincrement=False),
                     Column("b", String(40), primary_key=True)],
            lambda ignores_case: st.tuples(st.integers(-3, 3), texts(ignores_case))),
]

DATABASES = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}


@pytest.fixture(params=["memory", *DATABASES])
def fresh_store(request: pytest.FixtureRequest) -> Iterator[Callable[[KeyKind, list[Any]], Store]]:
    """Makes a store of one key kind holding records with the given keys, and only those: a
    MemoryStore, or a table (one per kind, emptied each time) in a fresh database."""
    if request.param == "memory":
        yield lambda kind, keys: MemoryStore("ranges", key=kind.fields,
                                             records=[kind.record(k, n) for n, k in enumerate(keys)])
        return
    url: str = request.getfixturevalue(DATABASES[request.param])
    ddl = create_engine(url, poolclass=NullPool)
    stores: dict[str, SqlStore] = {}

    def fresh(kind: KeyKind, keys: list[Any]) -> Store:
        store = stores.get(kind.name)
        if store is None:
            table = Table(f"ranges_{kind.name}", MetaData(), *kind.columns(), Column("v", Integer))
            table.create(ddl)
            store = stores[kind.name] = SqlStore("ranges", url, table.name)
        with store.engine.begin() as conn:
            conn.execute(delete(store.table))
        store.save_all([kind.record(k, n) for n, k in enumerate(keys)])
        return store

    yield fresh
    for store in stores.values():
        store.close()
    ddl.dispose()


def ignores_case(store: Store) -> bool:
    return isinstance(store, SqlStore) and store.dialect in ("mysql", "mariadb")


def read_all(store: Store, after: RecordId | None, limit: int, upto: RecordId | None = None) -> list[Record]:
    pages = list(store.read_pages(None, after, limit, upto=upto))
    assert all(0 < len(page) <= limit for page in pages)
    return [r for page in pages for r in page]


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_ranges_cut_the_store_into_balanced_parts_read_exactly_once(
    fresh_store: Callable[[KeyKind, list[Any]], Store], kind: KeyKind
) -> None:
    """(a) at most parts - 1 boundaries, ascending in the store's order; (b) the ranges read
    one after the other are the whole store's pages, each record once; (c) their sizes differ by
    one record at most, and there are ``parts`` of them when the store has that many records."""
    database_ignores_case = ignores_case(fresh_store(kind, []))

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(keys=kind.keys(database_ignores_case), parts=st.integers(1, 8), limit=st.integers(1, 25))
    def check(keys: list[Any], parts: int, limit: int) -> None:
        store = fresh_store(kind, keys)
        everything = read_all(store, None, limit)
        ids = store.ids_of(everything)
        boundaries = store.split(parts)
        assert len(boundaries) <= parts - 1
        assert [ids.index(b) for b in boundaries] == split_positions(len(ids), parts)  # ascending, balanced
        ranges = [read_all(store, lo, limit, hi) for lo, hi in key_ranges(boundaries)]
        assert [r for records in ranges for r in records] == everything
        sizes = [len(records) for records in ranges]
        assert len(sizes) == max(1, min(parts, len(ids)))
        if len(ids) >= 10 * parts:
            assert all(abs(size - len(ids) / parts) < 1 for size in sizes)

    check()


@pytest.mark.parametrize("database", list(DATABASES))
def test_sql_split_is_one_query(request: pytest.FixtureRequest, database: str) -> None:
    url: str = request.getfixturevalue(DATABASES[database])
    ddl = create_engine(url, poolclass=NullPool)
    Table("t", MetaData(), Column("k", Integer, primary_key=True, autoincrement=False)).create(ddl)
    ddl.dispose()
    store = SqlStore("t", url, "t")
    try:
        store.save_all([{"k": k} for k in range(100)])
        statements: list[str] = []
        event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        assert store.split(4) == [24, 49, 74]
        assert len(statements) == 1 and "row_number() OVER" in statements[0]
    finally:
        store.close()


@pytest.mark.parametrize("key", [("id",), ("a", "b")], ids=["one_column", "composite"])
def test_sqlite_reads_a_range_page_from_the_last_key_read_not_from_the_range_start(
    sqlite_url: str, key: tuple[str, ...]
) -> None:
    """Both bounds are one index range that starts at the page's ``after``: SQLite searches the
    key's index between the two, it does not walk from the range's start on every page."""
    columns = [Column(name, Integer, primary_key=True, autoincrement=False) for name in key]
    ddl = create_engine(sqlite_url, poolclass=NullPool)
    Table("r", MetaData(), *columns, Column("v", Integer)).create(ddl)
    store = SqlStore("r", sqlite_url, "r")
    try:
        store.save_all([{**{name: n for name in key}, "v": n} for n in range(50)])
        sent: list[tuple[str, Any]] = []
        event.listen(store.engine, "before_cursor_execute", lambda *args: sent.append((args[2], args[3])))
        low, high = store.id_of({name: 10 for name in key}), store.id_of({name: 40 for name in key})
        assert len(next(store.read_pages(None, low, 5, upto=high))) == 5
        with ddl.connect() as conn:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sent[0][0]}", sent[0][1]).fetchall()
        assert len(plan) == 1 and plan[0][3].startswith("SEARCH r USING") and ">?" in plan[0][3] \
            and "<?" in plan[0][3]
    finally:
        store.close()
        ddl.dispose()
