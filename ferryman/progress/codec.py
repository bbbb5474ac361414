"""Record ids as the ledger stores them: the JSON text of each id, so types survive.

``1`` and ``"1"`` are two ids and stay two (``1`` vs ``"1"``); a composite id is a JSON array.
A page of ids is one JSON array (:func:`encode_ids`): the text of a journal entry and of a
``succeeded_log`` row, the same bytes for both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from json.encoder import encode_basestring as _json_string
from typing import Any

from ..types import RecordId
from .model import Action, FailedRecord

_PLAIN_TYPES = {int, str, tuple}
_ARRAY_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_id(record_id: RecordId) -> str:
    """Canonical text of an id; the JSON of it, so types survive (``1`` vs ``"1"``)."""
    if type(record_id) is int:
        return int.__repr__(record_id)
    if type(record_id) is str:
        return _json_string(record_id)
    return json.dumps(list(record_id), ensure_ascii=False, separators=(",", ":"))  # type: ignore[arg-type]


def decode_id(text: str) -> RecordId:
    return as_id(json.loads(text))


def encode_ids(ids: Iterable[RecordId]) -> str:
    """The JSON array of ``ids``: ``"[" + ",".join(map(encode_id, ids)) + "]"``, only faster.

    For ints, strs and tuples the C JSON encoder writes exactly what :func:`encode_id` writes;
    anything else goes through it (an int subclass, which encode_id refuses, is written as its
    int).
    """
    if not isinstance(ids, (list, tuple)):
        ids = list(ids)
    try:
        return "[" + ",".join(map(int.__repr__, ids)) + "]"  # all ints, or TypeError
    except TypeError:
        pass
    if {*map(type, ids)} <= _PLAIN_TYPES:
        return _ARRAY_ENCODER.encode(list(ids))
    return "[" + ",".join(map(encode_id, ids)) + "]"


def array_keys(text: str) -> list[str]:
    """The canonical texts (:func:`encode_id`) of the ids in a JSON array of ids.

    For :func:`encode_ids`'s own text: the ints of an array without strings or arrays are
    already in int.__repr__'s form. Foreign text (a journal read back) goes through json.loads.
    """
    if '"' not in text and "[" not in text[1:]:
        body = text[1:-1]
        return body.split(",") if body else []
    return [encode_id(as_id(v)) for v in json.loads(text)]


def array_ids(text: str) -> list[RecordId]:
    """The ids of a JSON array of ids."""
    values = json.loads(text)
    return values if "[" not in text[1:] else [as_id(v) for v in values]


def as_id(value: Any) -> RecordId:
    """A JSON value back as an id: arrays are composite ids (tuples)."""
    return tuple(value) if isinstance(value, list) else value


def failed_fields(record: FailedRecord) -> tuple[str, str, str, str, str]:
    """A failed record as stored: ``(rid, description, cause, action, timestamp)``."""
    return (encode_id(record.id), record.description, record.cause, Action(record.action).value,
            record.timestamp.isoformat())


def failed_row(mid: int, seq: int, record: FailedRecord) -> tuple[Any, ...]:
    """A failed record as a row of the SQLite ledger's ``failed``, of the migration with row id ``mid``."""
    rid, *rest = failed_fields(record)
    return (mid, rid, seq, *rest)


def decode_failed(rid: str, description: str, cause: str, action: str, timestamp: str) -> FailedRecord:
    """A stored failed record (the columns of :func:`failed_row` after ``seq``) back as one."""
    return FailedRecord(decode_id(rid), description, cause, Action(action), datetime.fromisoformat(timestamp))
