"""Record ids: canonical forms, and their text on the command line (typed, and shown back)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferryman.errors import InputError
from ferryman.ids import format_id, normalize_id, parse_id
from ferryman.types import RecordId


@pytest.mark.parametrize("text, value", [
    ("17", 17), ("-3", -3), ("abc", "abc"), ('"17"', "17"), ("1.5", "1.5"), ("true", "true"),
    ('[1,"a"]', (1, "a")), ("12345678901234567890123", 12345678901234567890123), ("", ""),
])
def test_ids_typed_on_the_command_line(text: str, value: RecordId) -> None:
    parsed = parse_id(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("value", [17, "abc", "17", (1, "a"), ("x", 2, "3"), -4, "[1]"])
def test_format_id_is_the_inverse_of_parse_id(value: RecordId) -> None:
    assert parse_id(format_id(value)) == value


def test_a_bad_composite_id_is_a_usage_error() -> None:
    with pytest.raises(InputError) as info:
        parse_id("[1, 2.5]")
    assert info.value.exit_code == 2


_part = st.one_of(st.integers(), st.text())
_ids = st.one_of(_part, st.tuples(_part), st.tuples(_part, _part, _part))


@given(_ids)
def test_every_id_shown_types_back_as_itself(value: RecordId) -> None:
    shown = format_id(value)
    assert "\n" not in shown and "\x1b" not in shown  # one line, no terminal control
    parsed = parse_id(shown)
    assert parsed == value and type(parsed) is type(value)
    assert shown and shown == shown.strip()  # what a table shows is all there is to type


@pytest.mark.parametrize("value, shown", [("Val2 ", '"Val2 "'), (" a", '" a"'), ("a b", "a b"), ("", '""'),
                                          ("\t", '"\\t"')])
def test_a_string_id_with_whitespace_at_an_end_or_none_at_all_is_shown_quoted(value: str, shown: str) -> None:
    assert format_id(value) == shown


def test_native_key_values_become_canonical_ids() -> None:
    import uuid
    from decimal import Decimal

    key = uuid.UUID(int=5)
    assert normalize_id((Decimal(7), key, b"\x01", True)) == (7, str(key), "01", 1)
    with pytest.raises(ValueError, match="non-null key"):
        normalize_id(None)
