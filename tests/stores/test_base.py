"""Store's own logic: ids in canonical form, one record at a time or a page at once."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferryman import MemoryStore

KEY_VALUES = st.one_of(
    st.integers(), st.text(), st.booleans(), st.uuids(), st.decimals(allow_nan=False, allow_infinity=False, places=0),
)


@given(st.lists(KEY_VALUES, max_size=20))
def test_ids_of_a_page_equal_id_of_each_record(values):
    store = MemoryStore("s")
    records = [{"id": v, "n": 1} for v in values]
    assert store.ids_of(records) == [store.id_of(r) for r in records]


def test_ids_of_normalises_like_id_of():
    store = MemoryStore("s")
    records = [{"id": True}, {"id": uuid.UUID(int=5)}, {"id": Decimal(7)}, {"id": 3}]
    assert store.ids_of(records) == [1, str(uuid.UUID(int=5)), 7, 3]


def test_ids_of_composite_keys_are_tuples():
    store = MemoryStore("s", key=("a", "b"))
    assert store.ids_of([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]) == [(1, "x"), (2, "y")]


def test_ids_of_a_record_without_its_key_names_the_field():
    store = MemoryStore("s")
    with pytest.raises(KeyError, match="no key field 'id'"):
        store.ids_of([{"id": 1}, {"n": 2}])
