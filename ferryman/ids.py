"""Record ids: one canonical form that survives JSON and every store, and its text for people.

An id is an ``int`` (any size), a ``str``, or a ``tuple`` of those for a composite key. Stores
normalise native key values (UUID, ObjectId, Decimal, bytes) with :func:`normalize_id` so that an
id read back from a progress file equals the id the store gives for the same record. On the
command line an id is typed as :func:`parse_id` reads it and shown as :func:`format_id` writes it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from .errors import InputError
from .redact import CONTROL_CHARACTERS
from .types import RecordId


def normalize_key_value(value: Any) -> int | str:
    """One key field's value in canonical form (int or str)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, str)):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if value is None:
        raise ValueError("a key field is None: records need a non-null key to be migrated")
    return str(value)


def normalize_id(value: Any) -> RecordId:
    """An id in canonical form: int, str, or a tuple of those."""
    if isinstance(value, (tuple, list)):
        return tuple(normalize_key_value(v) for v in value)
    return normalize_key_value(value)


def parse_id(text: str) -> RecordId:
    """A record id typed on the command line: ``17`` -> 17, ``abc`` -> "abc",
    ``'"17"'`` -> "17", ``'[1,"a"]'`` -> (1, "a") (a composite id)."""
    try:
        value = json.loads(text)
    except ValueError:
        if text.lstrip().startswith("["):
            raise InputError(f"bad composite id {text}: use a JSON array of ints and strings, e.g. "
                             f"'[1,\"a\"]' (or quote a string id as JSON: '\"[1\"')") from None
        return text
    except RecursionError:
        raise InputError("bad id: nested too deeply") from None
    if isinstance(value, bool) or value is None or isinstance(value, float | dict):
        return text
    if isinstance(value, list):
        if not value or not all(isinstance(v, int | str) and not isinstance(v, bool) for v in value):
            raise InputError(f"bad composite id {text}: use a JSON array of ints and strings, e.g. '[1,\"a\"]'")
        return tuple(value)
    if isinstance(value, int | str):
        return value
    return text


def format_id(record_id: RecordId) -> str:
    """An id as typed on the command line (the inverse of :func:`parse_id`); a string id that
    holds control characters, whitespace at an end (which a table does not show, and which is
    easily lost in typing), or nothing, is written as a JSON string, which types back as the id."""
    if isinstance(record_id, tuple):
        return _json_text(list(record_id))
    if isinstance(record_id, str) and (_needs_quotes(record_id) or CONTROL_CHARACTERS.search(record_id)
                                       or record_id != record_id.strip() or not record_id):
        return _json_text(record_id)
    return str(record_id)


def near_miss(typed: RecordId, known: Iterable[RecordId]) -> RecordId | None:
    """The id of ``known`` that ``typed`` differs from only by whitespace at the ends of a
    string (``Val2`` for ``"Val2 "``), if any: what a "not found" may suggest."""
    if not isinstance(typed, str | int):
        return None
    bare = str(typed).strip()
    return next((k for k in known if isinstance(k, str) and k != typed and k.strip() == bare), None)


def _needs_quotes(text: str) -> bool:
    try:
        return parse_id(text) != text
    except InputError:  # "[1," would be refused: quoted, it is a string
        return True


def _json_text(value: object) -> str:
    """JSON that keeps readable characters as they are and escapes the control ones."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return CONTROL_CHARACTERS.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)
