"""Records made from a driver's rows by a generated comprehension equal ``dict(zip(...))``'s."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ferryman.stores.sql.driver import records_maker

FIELDS = st.lists(st.sampled_from(["id", "a", "b", "row", "f0", "make", "x y", "'\"", "{", "é"]), max_size=6)
VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.floats(allow_nan=False))


@given(fields=FIELDS, extra=st.integers(0, 2), data=st.data())
def test_records_are_the_zipped_dicts_of_the_chosen_columns(fields: list[str], extra: int, data: st.DataObject) -> None:
    width = len(fields) + extra
    rows = data.draw(st.lists(st.tuples(*[VALUES] * width), max_size=5))
    at = data.draw(st.permutations(range(width)))[:len(fields)]
    want = [dict(zip(fields, [row[i] for i in at])) for row in rows]
    got = records_maker(tuple(fields), tuple(at))(rows)
    assert [list(r.items()) for r in got] == [list(r.items()) for r in want]  # same fields, values, order
    leading = [dict(zip(fields, row)) for row in rows]
    assert [list(r.items()) for r in records_maker(tuple(fields))(iter(rows))] == [list(r.items()) for r in leading]


def test_a_maker_is_made_once_per_shape() -> None:
    assert records_maker(("id", "v")) is records_maker(("id", "v"))
    made: Any = records_maker(("id", "v"), (1, 0))
    assert made([(1, 2)]) == [{"id": 2, "v": 1}] and made([]) == []
