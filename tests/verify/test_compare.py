"""Field comparison: equal, drifted (by kind) or different."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferryman.verify.compare import as_float4, compare, diff_record

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e30, max_value=1e30)
values = st.one_of(st.none(), st.booleans(), st.integers(), finite, st.text(max_size=20),
                   st.decimals(allow_nan=False, allow_infinity=False, places=4),
                   st.datetimes(timezones=st.none() | st.just(dt.UTC)), st.dates())


@given(values)
def test_a_value_equals_itself(value):
    assert compare(value, value) is True


@given(finite.filter(lambda x: abs(x) > 1e-30))
def test_a_float_in_single_precision_is_drift_or_equal(value):
    stored = as_float4(value)
    assert compare(value, stored) in (True, "float4")


@given(st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-10**9, max_value=10**9))
def test_a_decimal_back_as_float_is_drift(value):
    assert compare(value, float(value)) == "decimal_as_float"


@given(finite, finite)
def test_floats_far_apart_are_different(a, b):
    if not math.isclose(a, b, rel_tol=1e-4) and as_float4(a) != b:  # (a tiny a is 0.0 in single precision)
        assert compare(a, b) is False


@pytest.mark.parametrize(("expected", "stored", "verdict"), [
    (0.1, 0.1 + 1e-17, True),                       # within the float tolerance
    (True, 1, True), (False, 0, True),              # a boolean column of MySQL or SQLite
    (0.1, 0.10000000149011612, "float4"),
    (1 / 3, 0.333333, "float4"),                    # a real read as text, 6 significant digits
    (Decimal("1.25"), 1.25, "decimal_as_float"),
    (1.25, Decimal("1.25"), "float_as_decimal"),
    (3, 3.0, "int_as_float"),
    (dt.datetime(2024, 1, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=2))), dt.datetime(2024, 1, 1, 8),
     "lost_zone"),
    (dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC), dt.datetime(2024, 1, 1, 10), "lost_zone"),
    (dt.datetime(2024, 1, 1, 10), dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC), "gained_zone"),
    (dt.datetime(2024, 1, 1, 10, 0, 0, 500), dt.datetime(2024, 1, 1, 10), "lost_fraction"),
    (dt.date(2024, 1, 1), dt.datetime(2024, 1, 1), "date_as_datetime"),
    ({"a": [1, 2]}, '{"a": [1, 2]}', "as_text"),
    (7, "7", "as_text"),
    (dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC), dt.datetime(2024, 1, 1, 13), False),
    (1.5, 2.5, False), ("a", "b", False), (None, 0, False), (1, None, False), (Decimal("1.25"), 1.3, False),
])
def test_verdicts(expected, stored, verdict):
    assert compare(expected, stored) == verdict


def test_a_record_is_compared_on_the_fields_of_the_output():
    output = {"id": 1, "name": "a", "price": Decimal("2.50"), "loaded_at": 5}
    stored = {"id": 1, "name": "b", "price": 2.5, "created": "by the database", "loaded_at": 6}
    diffs = diff_record(output, stored, ignore=frozenset({"loaded_at"}))
    assert [(d.field, d.drift) for d in diffs] == [("name", None), ("price", "decimal_as_float")]
    missing = diff_record({"id": 1, "gone": 2}, {"id": 1})
    assert [d.describe() for d in missing] == ["gone: different: expected 2 (int), found nothing (no such column)"]
