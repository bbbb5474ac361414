"""Type aliases shared across ferryman."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .progress.model import MigrationProgress

Record = dict[str, Any]
"""A record is a plain dict: field name -> value."""

RecordId = int | str | tuple[Any, ...]
"""An id: an int (any size), a str, or a tuple of those for a composite key."""

Filter = Mapping[str, Any]
"""Equality filter: ``{"a": 1}``; a list/tuple/set value means "in"; ``{}`` matches all."""

Aggregates = dict[str, Any]
"""Per-record scratch space filled by start_reduction/reduce_from_* and read by transform."""

ProgressCallback = Callable[["MigrationProgress"], None]
