"""The contract every store passes, as a reusable pytest suite.

To test a store, subclass :class:`StoreContract` in a test module (with a ``Test`` name) and
override the ``make_store`` fixture; the subclass inherits every contract test::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def make_store(self):
            def make(layout=INT_KEY, rows=(), *, name="items", on_conflict="error"):
                ...   # an empty store shaped like `layout`, then save `rows` into it
            return make

A :class:`Layout` describes the test data: its key, its unique fields, its rows and, for SQL
stores, its columns (:func:`create_test_table` builds the table). A store that lacks an optional
feature (journal, counting, atomicity) lists the tests of it in ``not_applicable``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import pytest
from sqlalchemy import BigInteger, Column, Engine, Integer, MetaData, String, Table

from ..errors import DuplicateDataError, FencedOffError, StoreError, TerminalStoreError
from ..stores.base import JournalEntry, Store, key_ranges
from ..stores.common import OnConflict
from ..types import Filter, Record, RecordId


@dataclass(frozen=True)
class Layout:
    """The shape of a test table: key, unique fields, rows by index, SQL columns.

    Rows are in key order when their indexes are ascending, so ``layout.ids(range(10))`` is the
    order a store must return them in.
    """

    name: str
    key: str | tuple[str, ...]
    unique: tuple[str, ...]
    row: Callable[[int], Record]
    columns: Callable[[], list[Column[Any]]]

    def rows(self, indexes: Iterable[int]) -> list[Record]:
        return [self.row(i) for i in indexes]

    def id(self, index: int) -> RecordId:
        row = self.row(index)
        return row[self.key] if isinstance(self.key, str) else tuple(row[f] for f in self.key)

    def ids(self, indexes: Iterable[int]) -> list[RecordId]:
        return [self.id(i) for i in indexes]


INT_KEY = Layout(
    "int_key",
    "id",
    ("code",),
    lambda i: {"id": i, "code": f"c{i:04d}", "name": f"name {i}", "n": i % 3},
    lambda: [
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("code", String(64), unique=True),
        Column("name", String(200), nullable=False),
        Column("n", Integer),
    ],
)
"""``id`` big integer key (given, never generated), ``code`` unique, ``name`` required."""

TEXT_KEY = Layout(
    "text_key",
    "id",
    (),
    lambda i: {"id": f"k{i:04d}", "name": f"name {i}", "n": i % 3},
    lambda: [
        Column("id", String(64), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("n", Integer),
    ],
)
"""``id`` string key; ids ``k0000``, ``k0001``... sort the same under every collation."""

COMPOSITE_KEY = Layout(
    "composite_key",
    ("a", "b"),
    (),
    lambda i: {"a": i // 3, "b": f"b{i % 3}", "name": f"name {i}", "n": i % 3},
    lambda: [
        Column("a", Integer, primary_key=True, autoincrement=False),
        Column("b", String(64), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("n", Integer),
    ],
)
"""Primary key ``(a, b)``: index 4 is ``(1, "b1")``, so paging must compare both fields."""


def create_test_table(engine: Engine, name: str, layout: Layout = INT_KEY, schema: str | None = None) -> Table:
    """Create the table for ``layout`` (it must not exist yet) and return it."""
    table = Table(name, MetaData(), *layout.columns(), schema=schema)
    table.create(engine)
    return table


class StoreFactory(Protocol):
    """Makes an empty store shaped like ``layout`` and saves ``rows`` into it."""

    def __call__(
        self,
        layout: Layout = INT_KEY,
        rows: Iterable[Record] = (),
        *,
        name: str = "items",
        on_conflict: OnConflict = "error",
    ) -> Store: ...


TEN = range(10)


def ids_of(store: Store, records: Iterable[Record]) -> list[RecordId]:
    return [store.id_of(r) for r in records]


def scan_pages(store: Store, filter: Filter | None = None, batch_size: int = 512) -> list[list[Record]]:
    """``store.scan`` as a list, cut short so a store that pages in circles fails instead of hanging."""
    return list(itertools.islice(store.scan(filter, batch_size=batch_size), 1000))


def shuffled(rows: list[Record], seed: int = 7) -> list[Record]:
    """The rows out of order, so a store that keeps insertion order is caught."""
    copy = list(rows)
    random.Random(seed).shuffle(copy)
    return copy


class StoreContract:
    """Contract tests; subclasses override :meth:`make_store`.

    A test that cannot apply to a store (a store without a schema has no required fields) is
    listed in the subclass's ``not_applicable`` with the reason, and is then not collected at
    all: the suite never skips, so every test that runs can fail.
    """

    not_applicable: ClassVar[Mapping[str, str]] = {}
    """Test name -> why it does not apply to this store."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.not_applicable:
            if not name.startswith("test_") or not hasattr(StoreContract, name):
                raise TypeError(f"{cls.__name__}.not_applicable names no contract test: {name!r}")
            setattr(cls, name, None)  # pytest collects only callables

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        raise NotImplementedError(f"{type(self).__name__} must override the make_store fixture")

    @pytest.fixture
    def store(self, make_store: StoreFactory) -> Store:
        """Ten INT_KEY records, ids 0-9, saved out of order."""
        return make_store(INT_KEY, shuffled(INT_KEY.rows(TEN)))

    # --- paging ---------------------------------------------------------------------------

    @pytest.mark.parametrize("size", [1, 2, 3, 7])
    def test_scan_reads_every_record_once_in_key_order(self, make_store: StoreFactory, size: int) -> None:
        store = make_store(INT_KEY, shuffled(INT_KEY.rows(TEN)))
        pages = scan_pages(store, batch_size=size)
        assert [len(p) for p in pages] == [size] * (10 // size) + ([10 % size] if 10 % size else [])
        assert [r for page in pages for r in page] == INT_KEY.rows(TEN)

    def test_read_page_continues_after_the_given_key(self, store: Store) -> None:
        assert ids_of(store, store.read_page(None, 4, 3)) == [5, 6, 7]

    def test_read_page_after_a_key_that_is_not_stored(self, make_store: StoreFactory) -> None:
        store = make_store(INT_KEY, INT_KEY.rows(range(0, 10, 2)))
        assert ids_of(store, store.read_page(None, 3, 10)) == [4, 6, 8]

    @pytest.mark.parametrize("after", [9, 1000])
    def test_read_page_after_the_end_is_empty(self, store: Store, after: int) -> None:
        assert store.read_page(None, after, 5) == []

    def test_scan_of_an_empty_store_yields_no_page(self, make_store: StoreFactory) -> None:
        assert scan_pages(make_store(INT_KEY)) == []

    def test_read_pages_after_a_key_reads_the_rest_in_key_order(self, make_store: StoreFactory) -> None:
        store = make_store(INT_KEY, shuffled(INT_KEY.rows(range(40))))
        pages = list(itertools.islice(store.read_pages(None, 3, 5), 100))
        assert [len(p) for p in pages] == [5] * 7 + [1]
        assert [r for page in pages for r in page] == INT_KEY.rows(range(4, 40))
        ahead = store.read_pages(None, None, 4)
        assert next(ahead) == INT_KEY.rows(range(4))
        ahead.close()  # left early: a read-ahead is dropped
        assert store.read_page(None, 35, 10) == INT_KEY.rows(range(36, 40))

    # --- key ranges -----------------------------------------------------------------------

    @pytest.mark.parametrize("layout", [INT_KEY, TEXT_KEY, COMPOSITE_KEY], ids=lambda layout: layout.name)
    @pytest.mark.parametrize("parts", [1, 3, 8])
    def test_split_ranges_read_one_after_another_are_the_whole_store_once(
        self, make_store: StoreFactory, layout: Layout, parts: int
    ) -> None:
        """A store that does not split (the default) passes with one range."""
        store = make_store(layout, shuffled(layout.rows(range(40))))
        boundaries = store.split(parts)
        assert len(boundaries) <= parts - 1
        assert boundaries == sorted(boundaries, key=layout.ids(range(40)).index)
        ranges = [list(store.read_pages(None, after, 6, upto=upto)) for after, upto in key_ranges(boundaries)]
        assert [r for pages in ranges for page in pages for r in page] == layout.rows(range(40))
        assert all(0 < len(page) <= 6 for pages in ranges for page in pages)

    def test_upto_bounds_a_read_to_the_ids_up_to_it(self, make_store: StoreFactory) -> None:
        store = make_store(INT_KEY, shuffled(INT_KEY.rows(range(40))))
        assert [r for page in store.read_pages(None, 3, 5, upto=21) for r in page] == INT_KEY.rows(range(4, 22))
        assert [r for page in store.read_pages(None, None, 5, upto=2) for r in page] == INT_KEY.rows(range(3))
        assert list(store.read_pages(None, 21, 5, upto=21)) == []
        assert [r for page in store.read_pages({"n": 1}, 3, 5, upto=21) for r in page] == [
            r for r in INT_KEY.rows(range(4, 22)) if r["n"] == 1]

    def test_split_refuses_fewer_than_one_part(self, store: Store) -> None:
        with pytest.raises(ValueError):
            store.split(0)

    # --- filters --------------------------------------------------------------------------

    def test_filter_equality(self, store: Store) -> None:
        assert ids_of(store, store.read_page({"n": 1}, None, 10)) == [1, 4, 7]

    @pytest.mark.parametrize("values", [[0, 2], (0, 2), {0, 2}, frozenset({0, 2})])
    def test_filter_collection_means_in(self, store: Store, values: Any) -> None:
        assert ids_of(store, store.read_page({"n": values}, None, 10)) == [0, 2, 3, 5, 6, 8, 9]

    def test_filter_empty_collection_matches_nothing(self, store: Store) -> None:
        assert store.read_page({"n": []}, None, 10) == []

    @pytest.mark.parametrize("everything", [None, {}])
    def test_filter_none_or_empty_dict_matches_everything(self, store: Store, everything: Any) -> None:
        assert ids_of(store, store.read_page(everything, None, 100)) == list(TEN)

    def test_filter_fields_combine_with_and(self, store: Store) -> None:
        page = store.read_page({"n": 1, "code": ["c0001", "c0002", "c0004"]}, None, 10)
        assert ids_of(store, page) == [1, 4]

    def test_filtered_scan_pages_after_the_last_match(self, store: Store) -> None:
        pages = scan_pages(store, {"n": [0, 2]}, batch_size=2)
        assert [ids_of(store, p) for p in pages] == [[0, 2], [3, 5], [6, 8], [9]]

    # --- get_many -------------------------------------------------------------------------

    def test_get_many_returns_found_records_in_key_order(self, store: Store) -> None:
        assert store.get_many([7, 99, 2, 5, -1]) == INT_KEY.rows([2, 5, 7])

    def test_get_many_returns_a_repeated_id_once(self, store: Store) -> None:
        assert ids_of(store, store.get_many([3, 3, 1, 3])) == [1, 3]

    def test_get_many_of_no_ids_is_empty(self, store: Store) -> None:
        assert store.get_many([]) == []

    def test_get_many_with_more_ids_than_one_query_takes(self, make_store: StoreFactory) -> None:
        store = make_store(INT_KEY, INT_KEY.rows(range(1200)))
        assert ids_of(store, store.get_many(list(range(1205, -5, -1)))) == list(range(1200))

    # --- composite keys -------------------------------------------------------------------

    def test_composite_key_pages_in_key_order(self, make_store: StoreFactory) -> None:
        store = make_store(COMPOSITE_KEY, shuffled(COMPOSITE_KEY.rows(TEN)))
        pages = scan_pages(store, batch_size=4)
        assert [len(p) for p in pages] == [4, 4, 2]
        assert ids_of(store, [r for p in pages for r in p]) == COMPOSITE_KEY.ids(TEN)

    def test_composite_key_after_compares_every_field(self, make_store: StoreFactory) -> None:
        store = make_store(COMPOSITE_KEY, COMPOSITE_KEY.rows(TEN))
        page = store.read_page(None, (1, "b1"), 3)
        assert ids_of(store, page) == [(1, "b2"), (2, "b0"), (2, "b1")]

    def test_composite_ids_are_tuples(self, make_store: StoreFactory) -> None:
        store = make_store(COMPOSITE_KEY, COMPOSITE_KEY.rows(range(3)))
        assert store.id_of(store.get_many([(0, "b1")])[0]) == (0, "b1")

    def test_composite_get_many(self, make_store: StoreFactory) -> None:
        store = make_store(COMPOSITE_KEY, COMPOSITE_KEY.rows(TEN))
        found = store.get_many([(2, "b1"), (0, "b0"), (9, "b9"), (0, "b2"), (1, "b9")])
        assert found == COMPOSITE_KEY.rows([0, 2, 7])

    def test_composite_duplicate(self, make_store: StoreFactory) -> None:
        store = make_store(COMPOSITE_KEY, COMPOSITE_KEY.rows(range(3)))
        with pytest.raises(DuplicateDataError):
            store.save_all([{**COMPOSITE_KEY.row(1), "name": "again"}])
        store.save_all([{**COMPOSITE_KEY.row(1), "b": "b7"}])  # same a, other b: a new record
        assert len(store.read_page(None, None, 10)) == 4

    # --- ids ------------------------------------------------------------------------------

    def test_big_int_ids_keep_their_type_and_value(self, make_store: StoreFactory) -> None:
        big = [1, 2**31, 2**62, 2**63 - 1]
        store = make_store(INT_KEY, INT_KEY.rows(reversed(big)))
        read = [r["id"] for r in store.read_page(None, None, 10)]
        assert read == big and all(type(i) is int for i in read)
        assert ids_of(store, store.get_many([2**62])) == [2**62]
        assert ids_of(store, store.read_page(None, 2**62, 10)) == [2**63 - 1]

    def test_string_ids(self, make_store: StoreFactory) -> None:
        store = make_store(TEXT_KEY, shuffled(TEXT_KEY.rows(TEN)))
        pages = scan_pages(store, batch_size=3)
        read = ids_of(store, [r for p in pages for r in p])
        assert read == TEXT_KEY.ids(TEN) and all(type(i) is str for i in read)
        assert ids_of(store, store.get_many(["k0003", "nope", "k0001"])) == ["k0001", "k0003"]
        assert ids_of(store, store.read_page(None, "k0004", 2)) == ["k0005", "k0006"]
        with pytest.raises(DuplicateDataError):
            store.save_all([TEXT_KEY.row(5)])

    def test_id_of_and_describe(self, make_store: StoreFactory) -> None:
        store = make_store(INT_KEY)
        assert store.id_of(INT_KEY.row(3)) == 3
        assert store.describe(INT_KEY.row(3)) == "items(id=3)"
        composite = make_store(COMPOSITE_KEY, name="pairs")
        assert composite.describe(COMPOSITE_KEY.row(3)) == "pairs(a=1, b='b0')"

    # --- saving ---------------------------------------------------------------------------

    def test_saved_records_read_back_equal(self, make_store: StoreFactory) -> None:
        rows = [*INT_KEY.rows(range(3)), {**INT_KEY.row(3), "n": None}]
        store = make_store(INT_KEY, rows)
        assert store.read_page(None, None, 10) == rows

    def test_records_are_copies(self, store: Store) -> None:
        got = store.get_many([3])[0]
        got["name"] = "changed by the caller"
        row = INT_KEY.row(20)
        store.save_all([row])
        row["name"] = "changed by the caller"
        assert store.get_many([3, 20]) == INT_KEY.rows([3, 20])

    def test_saving_an_empty_batch_changes_nothing(self, store: Store) -> None:
        store.save_all([])
        assert ids_of(store, store.read_page(None, None, 100)) == list(TEN)

    def test_concurrent_batches_all_land(self, make_store: StoreFactory) -> None:
        store = make_store(INT_KEY)
        batches = [INT_KEY.rows(range(start, start + 20)) for start in range(0, 400, 20)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(store.save_all, batches))
        assert ids_of(store, [r for p in scan_pages(store, batch_size=64) for r in p]) == list(range(400))

    def test_a_begun_batch_is_saved_once_waited_for_and_reading_goes_on_meanwhile(
        self, make_store: StoreFactory
    ) -> None:
        store = make_store(INT_KEY, INT_KEY.rows(TEN))
        write = store.begin_save_all(INT_KEY.rows(range(10, 40)))  # enough rows for bulk paths
        assert ids_of(store, store.read_page(None, 5, 3)) == [6, 7, 8]
        write.wait()
        assert ids_of(store, [r for p in scan_pages(store, batch_size=64) for r in p]) == list(range(40))

    def test_a_begun_batch_with_a_stored_key_saves_nothing(self, store: Store) -> None:
        self._require_atomic(store)
        batch = [*INT_KEY.rows(range(10, 21)), {**INT_KEY.row(3), "name": "again"}]  # COPY-sized
        with pytest.raises(DuplicateDataError) as caught:
            store.begin_save_all(batch).wait()  # raised by either, whichever knows first
        assert ids_of(store, caught.value.records) == [3]
        assert store.read_page(None, None, 100) == INT_KEY.rows(TEN)

    # --- duplicates and atomicity ---------------------------------------------------------

    def _require_atomic(self, store: Store) -> None:
        assert store.atomic, f"{type(store).__name__} is not atomic: list the test in not_applicable"

    def test_batch_with_a_stored_key_saves_nothing(self, store: Store) -> None:
        self._require_atomic(store)
        batch = [INT_KEY.row(10), INT_KEY.row(11), {**INT_KEY.row(3), "name": "again"}, INT_KEY.row(12)]
        with pytest.raises(DuplicateDataError) as caught:
            store.save_all(batch)
        assert caught.value.__cause__ is not None
        assert store.read_page(None, None, 100) == INT_KEY.rows(TEN)

    def test_duplicate_error_names_the_store_and_the_key(self, store: Store) -> None:
        with pytest.raises(DuplicateDataError) as caught:
            store.save_all([INT_KEY.row(10), INT_KEY.row(3)])
        message = str(caught.value)
        assert "'items'" in message and "(id)=(3)" in message and "\n" not in message
        assert ids_of(store, caught.value.records) == [3]

    def test_duplicate_within_a_batch_saves_nothing(self, make_store: StoreFactory) -> None:
        store = make_store(INT_KEY)
        self._require_atomic(store)
        with pytest.raises(DuplicateDataError) as caught:
            store.save_all([INT_KEY.row(1), INT_KEY.row(2), {**INT_KEY.row(1), "code": "other"}])
        assert caught.value.__cause__ is not None
        assert store.read_page(None, None, 10) == []

    def test_duplicate_in_a_unique_field_saves_nothing(self, store: Store) -> None:
        self._require_atomic(store)
        with pytest.raises(DuplicateDataError) as caught:
            store.save_all([INT_KEY.row(21), {**INT_KEY.row(20), "code": "c0003"}])
        assert caught.value.__cause__ is not None
        assert ids_of(store, store.read_page(None, None, 100)) == list(TEN)

    def test_missing_required_field_is_not_a_duplicate(self, store: Store) -> None:
        row = INT_KEY.row(30)
        del row["name"]
        with pytest.raises(StoreError) as caught:
            store.save_all([INT_KEY.row(31), row])
        assert isinstance(caught.value, TerminalStoreError)
        assert not isinstance(caught.value, DuplicateDataError)
        assert store.get_many([30, 31]) == []

    # --- on_conflict ----------------------------------------------------------------------

    def test_update_on_conflict_makes_saving_again_idempotent(self, make_store: StoreFactory) -> None:
        rows = INT_KEY.rows(range(5))
        store = make_store(INT_KEY, rows, on_conflict="update")
        store.save_all(rows)
        store.save_all(rows)
        assert store.read_page(None, None, 10) == rows
        changed = {**INT_KEY.row(2), "name": "changed"}
        store.save_all([changed, INT_KEY.row(7)])
        assert store.read_page(None, None, 10) == [*rows[:2], changed, *rows[3:], INT_KEY.row(7)]

    def test_update_on_conflict_merges_repeats_within_a_batch(self, make_store: StoreFactory) -> None:
        store = make_store(INT_KEY, INT_KEY.rows(range(3)), on_conflict="update")
        store.save_all([{**INT_KEY.row(2), "name": "first", "n": 9}, {"id": 2, "name": "second"}])
        assert store.get_many([2]) == [{**INT_KEY.row(2), "name": "second", "n": 9}]

    def test_ignore_on_conflict_keeps_the_stored_record(self, make_store: StoreFactory) -> None:
        store = make_store(INT_KEY, INT_KEY.rows(range(3)), on_conflict="ignore")
        store.save_all([{**INT_KEY.row(1), "name": "changed"}, INT_KEY.row(7)])
        assert store.read_page(None, None, 10) == INT_KEY.rows([0, 1, 2, 7])

    @pytest.mark.parametrize("on_conflict", ["update", "ignore"])
    def test_upsert_still_rejects_a_clash_on_another_unique_field(
        self, make_store: StoreFactory, on_conflict: OnConflict
    ) -> None:
        store = make_store(INT_KEY, INT_KEY.rows(range(3)), on_conflict=on_conflict)
        with pytest.raises(DuplicateDataError):
            store.save_all([{**INT_KEY.row(7), "code": "c0002"}])
        assert store.read_page(None, None, 10) == INT_KEY.rows(range(3))

    # --- journal --------------------------------------------------------------------------

    def _journal_store(self, make_store: StoreFactory, rows: Iterable[Record] = ()) -> Store:
        store = make_store(INT_KEY, rows)
        assert store.supports_journal, f"{type(store).__name__} has no journal: list the test in not_applicable"
        return store

    def test_journal_entry_is_committed_with_the_batch(self, make_store: StoreFactory) -> None:
        store = self._journal_store(make_store)
        assert store.read_journal() == []
        store.save_all(INT_KEY.rows(range(3)), journal=JournalEntry("m1", "p1"))
        store.save_all(INT_KEY.rows(range(3, 5)), journal=JournalEntry("m2", "p2"))
        entries = store.read_journal()
        assert [(e.migration, e.payload) for e in entries] == [("m1", "p1"), ("m2", "p2")]
        assert isinstance(entries[0].seq, int) and isinstance(entries[1].seq, int)
        assert entries[0].seq < entries[1].seq
        assert ids_of(store, store.read_page(None, None, 10)) == list(range(5))

    def test_journal_entry_is_not_written_when_the_batch_fails(self, make_store: StoreFactory) -> None:
        store = self._journal_store(make_store, INT_KEY.rows(range(3)))
        with pytest.raises(DuplicateDataError):
            store.save_all([INT_KEY.row(5), INT_KEY.row(1)], journal=JournalEntry("m1", "lost"))
        assert store.read_journal() == []
        assert store.get_many([5]) == []

    def test_journal_entry_with_an_empty_batch(self, make_store: StoreFactory) -> None:
        store = self._journal_store(make_store)
        store.save_all([], journal=JournalEntry("m1", "nothing to save"))
        assert [e.payload for e in store.read_journal()] == ["nothing to save"]

    def test_a_batch_below_its_migration_s_fence_raises_fenced_off_and_saves_nothing(
            self, make_store: StoreFactory) -> None:
        store = self._journal_store(make_store, INT_KEY.rows(range(2)))
        store.raise_fence("m1", 5)
        store.raise_fence("m1", 3)  # a fence never goes down
        with pytest.raises(FencedOffError):
            store.save_all(INT_KEY.rows(range(2, 4)), journal=JournalEntry("m1", "late", fence=4))
        assert store.read_page(None, None, 10) == INT_KEY.rows(range(2))
        assert store.read_journal() == []

    def test_a_batch_at_or_above_its_migration_s_fence_or_without_one_is_saved(
            self, make_store: StoreFactory) -> None:
        store = self._journal_store(make_store)
        store.raise_fence("m1", 5)
        for i, (migration, fence) in enumerate([("m1", 5), ("m1", 6), ("m1", None), ("m2", 1)]):
            store.save_all([INT_KEY.row(i)], journal=JournalEntry(migration, f"p{i}", fence=fence))
        assert [e.payload for e in store.read_journal()] == ["p0", "p1", "p2", "p3"]
        assert store.read_page(None, None, 10) == INT_KEY.rows(range(4))

    def test_read_journal_of_one_migration(self, make_store: StoreFactory) -> None:
        store = self._journal_store(make_store)
        for i, migration in enumerate(["m1", "m2", "m1"]):
            store.save_all([INT_KEY.row(i)], journal=JournalEntry(migration, f"p{i}"))
        assert [e.payload for e in store.read_journal("m1")] == ["p0", "p2"]
        assert [e.payload for e in store.read_journal("m3")] == []

    def test_delete_journal_forgets_entries_up_to_seq(self, make_store: StoreFactory) -> None:
        store = self._journal_store(make_store)
        for i in range(3):
            store.save_all([INT_KEY.row(i)], journal=JournalEntry("m", f"p{i}"))
        _first, second, third = store.read_journal()
        store.delete_journal("m", up_to_seq=second.seq)
        assert store.read_journal() == [third]
        store.delete_journal(up_to_seq=third.seq)
        store.save_all([INT_KEY.row(3)], journal=JournalEntry("m", "p3"))
        (fourth,) = store.read_journal()
        assert fourth.payload == "p3" and fourth.seq is not None and third.seq is not None
        assert fourth.seq > third.seq  # never reused, even after deleting every entry

    def test_delete_journal_of_one_migration_keeps_the_others(self, make_store: StoreFactory) -> None:
        store = self._journal_store(make_store)
        for i, migration in enumerate(["m1", "m2", "m1", "m2"]):
            store.save_all([INT_KEY.row(i)], journal=JournalEntry(migration, f"p{i}"))
        store.delete_journal("m1")
        assert [(e.migration, e.payload) for e in store.read_journal()] == [("m2", "p1"), ("m2", "p3")]
        last_seq = store.read_journal()[-1].seq
        store.save_all([INT_KEY.row(4)], journal=JournalEntry("m2", "p4"))
        store.delete_journal("m2", up_to_seq=last_seq)
        assert [e.payload for e in store.read_journal()] == ["p4"]

    def test_delete_journal_keep_last_keeps_the_newest_entry_of_the_migration(self, make_store: StoreFactory) -> None:
        store = self._journal_store(make_store)
        for i, migration in enumerate(["m1", "m2", "m1", "m1", "m2"]):
            store.save_all([INT_KEY.row(i)], journal=JournalEntry(migration, f"p{i}"))
        store.delete_journal("m1", keep_last=True)
        assert [(e.migration, e.payload) for e in store.read_journal()] == [("m2", "p1"), ("m1", "p3"), ("m2", "p4")]
        store.delete_journal("m1", keep_last=True)  # nothing more to delete
        store.delete_journal("m3", keep_last=True)  # no entries at all
        assert [e.payload for e in store.read_journal()] == ["p1", "p3", "p4"]

    # --- count ----------------------------------------------------------------------------

    def test_count_with_filter(self, store: Store) -> None:
        assert store.count() is not None, f"{type(store).__name__} does not count: list the test in not_applicable"
        assert store.count() == 10
        assert store.count({}) == 10
        assert store.count({"n": 1}) == 3
        assert store.count({"n": [0, 1]}) == 7
        assert store.count({"n": []}) == 0
