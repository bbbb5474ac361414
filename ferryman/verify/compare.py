"""One output as the transform makes it, against the row the destination holds: field by field.

A field is **equal**, **drifted** or **different**:

- equal: the same value of the same type; floats within a relative FLOAT_TOLERANCE (a text
  round trip of a double); a bool stored as the int 0 or 1 (what MySQL and SQLite do with every
  boolean: nothing is lost);
- drifted: the same value as far as it goes, but its type or precision changed on the way: a
  float stored as single precision (PostgreSQL ``real``, MySQL ``FLOAT``), a Decimal that came
  back as a float (or a float as a Decimal: a NUMERIC column), an int as a float, a timestamp
  that lost its time zone (or gained one), or its fraction of a second (MySQL ``DATETIME``
  without fsp), a date stored as a timestamp, any value that came back as text;
- different: anything else, named with both values.

Fields the destination adds (defaults, generated keys) are not compared; a field the output has
and the stored row lacks is different.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..types import Record

FLOAT_TOLERANCE = 1e-9
"""Relative difference two floats may have and still be equal (a double printed and read back
keeps 15 significant digits; 1e-9 leaves room for drivers that print fewer)."""

FLOAT4_TOLERANCE = 1e-5
"""Relative difference of a float stored in single precision: exactly rounded (a driver that
reads the binary value), or printed with 6 significant digits (PostgreSQL ``real`` and MySQL
``FLOAT`` as their drivers read them, as text: up to 5e-6 off)."""

_MISSING = object()


@dataclass(frozen=True)
class FieldDiff:
    """A field whose stored value is not the output's."""

    field: str
    expected: Any
    stored: Any
    drift: str | None
    """The kind of drift (``float4``, ``decimal_as_float``, ``lost_zone``...), None: different."""

    def describe(self) -> str:
        stored = "nothing (no such column)" if self.stored is _MISSING else _shown(self.stored)
        what = _DRIFT_WORDS.get(self.drift or "", "type drift") if self.drift else "different"
        # "expected": the transform's output replayed now, which may not be what the run wrote
        return f"{self.field}: {what}: expected {_shown(self.expected)}, found {stored}"


_DRIFT_WORDS = {
    "float4": "float stored as single precision (float4/real)",
    "decimal_as_float": "Decimal came back as float",
    "float_as_decimal": "float came back as Decimal (a NUMERIC column)",
    "int_as_float": "int came back as float",
    "int_as_decimal": "int came back as Decimal",
    "lost_zone": "timestamp lost its time zone",
    "gained_zone": "naive timestamp came back with a time zone",
    "lost_fraction": "timestamp lost its fraction of a second",
    "date_as_datetime": "date came back as a timestamp",
    "as_text": "value came back as text",
}


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{text[:80]}…" if len(text) > 81 else f"{text} ({type(value).__name__})"


def diff_record(expected: Record, stored: Record, ignore: frozenset[str] = frozenset()) -> list[FieldDiff]:
    """The fields of ``expected`` (but ``ignore``) that ``stored`` does not hold equal."""
    diffs = []
    for name, value in expected.items():
        if name in ignore:
            continue
        found = stored.get(name, _MISSING)
        if found is _MISSING:
            diffs.append(FieldDiff(name, value, _MISSING, None))
            continue
        verdict = compare(value, found)
        if verdict is not True:
            diffs.append(FieldDiff(name, value, found, verdict or None))
    return diffs


def compare(expected: Any, stored: Any) -> bool | str:
    """True when equal; the kind of drift (a str); False when different."""
    te, ts = type(expected), type(stored)
    if te is ts:
        if te is float:
            return _floats(expected, stored)
        if te is dt.datetime:
            return _datetimes(expected, stored)
        return bool(expected == stored)
    if expected is None or stored is None:
        return False
    if (te is bool and ts is int) or (te is int and ts is bool):
        return bool(int(expected) == int(stored))
    numeric = (int, float, Decimal)
    if isinstance(expected, numeric) and isinstance(stored, numeric) and not isinstance(stored, bool):
        return _numbers(expected, stored)
    if te is dt.date and ts is dt.datetime:
        return "date_as_datetime" if stored.time() == dt.time() and stored.date() == expected else False
    if ts is str:
        return "as_text" if _same_text(expected, stored) else False
    return False


def _floats(expected: float, stored: float) -> bool | str:
    if math.isnan(expected) or math.isnan(stored):
        return math.isnan(expected) and math.isnan(stored)
    if math.isclose(expected, stored, rel_tol=FLOAT_TOLERANCE):
        return True
    single = as_float4(expected) == stored or math.isclose(expected, stored, rel_tol=FLOAT4_TOLERANCE)
    return "float4" if single else False


def as_float4(value: float) -> float:
    """``value`` rounded to single precision, as a ``real`` column stores it."""
    try:
        return float(struct.unpack("f", struct.pack("f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def _numbers(expected: float | Decimal, stored: float | Decimal) -> bool | str:
    """Two numbers of different types: a drift when the value made it, else different."""
    kind = {(Decimal, float): "decimal_as_float", (float, Decimal): "float_as_decimal",
            (int, float): "int_as_float", (int, Decimal): "int_as_decimal"}.get((type(expected), type(stored)))
    try:
        e, s = float(expected), float(stored)
    except (OverflowError, ValueError):
        return False
    if math.isclose(e, s, rel_tol=FLOAT_TOLERANCE if type(stored) is not float else FLOAT4_TOLERANCE):
        return kind or "as_text"
    return False


def _datetimes(expected: dt.datetime, stored: dt.datetime) -> bool | str:
    aware_e, aware_s = expected.tzinfo is not None, stored.tzinfo is not None
    if aware_e == aware_s:
        if expected == stored:
            return True
        return "lost_fraction" if stored.microsecond == 0 and _whole_second(expected) == stored else False
    if aware_e:  # stored naive: as UTC, or as the wall clock the output showed
        candidates = (expected.astimezone(dt.UTC).replace(tzinfo=None), expected.replace(tzinfo=None))
        return "lost_zone" if any(c == stored or _whole_second(c) == stored for c in candidates) else False
    candidates = (stored.astimezone(dt.UTC).replace(tzinfo=None), stored.replace(tzinfo=None))
    return "gained_zone" if expected in candidates else False


def _whole_second(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=0)


def _same_text(expected: Any, stored: str) -> bool:
    """Whether ``stored`` is ``expected`` written as text (JSON for a dict or a list)."""
    if isinstance(expected, (dict, list)):
        try:
            return bool(json.loads(stored) == expected)
        except ValueError:
            return False
    if isinstance(expected, dt.datetime):
        return stored in (expected.isoformat(), expected.isoformat(" "))
    if isinstance(expected, (dt.date, dt.time)):
        return stored == expected.isoformat()
    return stored == str(expected)
