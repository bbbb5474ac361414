"""Record ids: one canonical form that survives JSON and every store.

An id is an ``int`` (any size), a ``str``, or a ``tuple`` of those for a composite key. Stores
normalise native key values (UUID, ObjectId, Decimal, bytes) with :func:`normalize_id` so that an
id read back from a progress file equals the id the store gives for the same record.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

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


def format_id(record_id: RecordId) -> str:
    """A short text for an id, as shown in logs and descriptions."""
    return repr(record_id)
