"""MemoryStore: the store contract, plus what only an in-process store does."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import pytest

from ferryman.errors import DuplicateDataError, TerminalStoreError
from ferryman.stores import JournalEntry, MemoryStore
from ferryman.stores.common import OnConflict
from ferryman.testing import INT_KEY, Layout, StoreContract, StoreFactory
from ferryman.types import Record


class TestMemoryStore(StoreContract):
    not_applicable: ClassVar[dict[str, str]] = {
        "test_missing_required_field_is_not_a_duplicate": "a MemoryStore has no schema, so no required fields",
    }

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        def make(
            layout: Layout = INT_KEY,
            rows: Iterable[Record] = (),
            *,
            name: str = "items",
            on_conflict: OnConflict = "error",
        ) -> MemoryStore:
            return MemoryStore(name, key=layout.key, records=rows, unique=layout.unique, on_conflict=on_conflict)

        return make


def test_initial_records_with_a_duplicate_are_refused() -> None:
    with pytest.raises(DuplicateDataError):
        MemoryStore("items", records=[{"id": 1}, {"id": 1}])


def test_duplicate_cause_is_a_key_error() -> None:
    store = MemoryStore("items", records=[{"id": 1}])
    with pytest.raises(DuplicateDataError) as caught:
        store.save_all([{"id": 1}])
    assert isinstance(caught.value.__cause__, KeyError)
    assert str(caught.value) == "store 'items' (memory): duplicate key (id)=(1)"


def test_composite_unique_constraint() -> None:
    store = MemoryStore("items", unique=[("a", "b")], records=[{"id": 1, "a": 1, "b": "x"}])
    store.save_all([{"id": 2, "a": 1, "b": "y"}, {"id": 3, "a": 2, "b": "x"}])
    with pytest.raises(DuplicateDataError, match=r"\(a, b\)=\(1, y\)"):
        store.save_all([{"id": 4, "a": 1, "b": "y"}])
    assert [r["id"] for r in store.records()] == [1, 2, 3]


def test_none_in_a_unique_field_never_clashes() -> None:
    store = MemoryStore("items", unique=["code"])
    store.save_all([{"id": 1, "code": None}, {"id": 2}, {"id": 3, "code": None}])
    assert len(store.records()) == 3


def test_upsert_may_swap_unique_values_within_a_batch() -> None:
    store = MemoryStore("items", unique=["code"], on_conflict="update")
    store.save_all([{"id": 1, "code": "a"}, {"id": 2, "code": "b"}])
    store.save_all([{"id": 1, "code": "b"}, {"id": 2, "code": "a"}])
    assert store.records() == [{"id": 1, "code": "b"}, {"id": 2, "code": "a"}]
    store.save_all([{"id": 3, "code": "a2"}])  # the index forgot "a" for id 1 and knows "a" for id 2
    with pytest.raises(DuplicateDataError):
        store.save_all([{"id": 4, "code": "a"}])


def test_callable_is_the_native_filter() -> None:
    store = MemoryStore("items", records=[{"id": i, "n": i} for i in range(6)])
    assert [r["id"] for r in store.read_page(lambda r: r["n"] > 3, None, 10)] == [4, 5]
    assert store.count(lambda r: r["n"] % 2 == 0) == 3


def test_records_returns_copies() -> None:
    store = MemoryStore("items", records=[{"id": 1, "tags": ["a"]}])
    store.records()[0]["tags"].append("b")
    assert store.records() == [{"id": 1, "tags": ["a"]}]


def test_record_without_key_is_refused_and_nothing_is_saved() -> None:
    store = MemoryStore("items")
    with pytest.raises(TerminalStoreError, match="no key field 'id'"):
        store.save_all([{"id": 1}, {"name": "keyless"}])
    assert store.records() == []


def test_keys_of_mixed_types_are_refused_and_nothing_is_saved() -> None:
    store = MemoryStore("items", records=[{"id": 1}])
    with pytest.raises(TerminalStoreError, match="different types"):
        store.save_all([{"id": 2}, {"id": "three"}])
    assert store.records() == [{"id": 1}]


def test_composite_after_may_be_a_list_as_read_from_json() -> None:
    store = MemoryStore("items", key=("a", "b"), records=[{"a": 1, "b": "x"}, {"a": 1, "b": "y"}])
    assert store.read_page(None, [1, "x"], 10) == [{"a": 1, "b": "y"}]  # type: ignore[arg-type]


def test_failed_batch_keeps_the_journal_sequence() -> None:
    store = MemoryStore("items", records=[{"id": 1}])
    with pytest.raises(DuplicateDataError):
        store.save_all([{"id": 1}], journal=JournalEntry("m", "lost"))
    store.save_all([{"id": 2}], journal=JournalEntry("m", "kept"))
    assert store.read_journal() == [JournalEntry("m", "kept", seq=1)]


def test_invalid_on_conflict_is_refused() -> None:
    with pytest.raises(ValueError, match="'error', 'update', 'ignore'"):
        MemoryStore("items", on_conflict="replace")  # type: ignore[arg-type]


def test_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        MemoryStore("items").read_page(None, None, 0)


def test_a_duplicate_names_the_key_or_unique_fields_and_their_values():
    store = MemoryStore("m", records=[{"id": 1, "a": "x", "b": 2}], unique=[("a", "b")])
    for record, columns, values in (({"id": 1, "a": "y", "b": 2}, ("id",), ("1",)),
                                    ({"id": 2, "a": "x", "b": 2}, ("a", "b"), ("x", "2"))):
        with pytest.raises(DuplicateDataError) as info:
            store.save_all([record])
        assert (info.value.constraint, info.value.columns, info.value.values) == (None, columns, values)
