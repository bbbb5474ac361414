"""Rules the built-in stores apply the same way, so a test on MemoryStore predicts SqlStore.

Both stores read filters, resolve key conflicts and word duplicate errors through this module;
a behaviour defined here cannot drift apart between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from ..errors import FencedOffError

if TYPE_CHECKING:
    from .base import JournalEntry

OnConflict = Literal["error", "update", "ignore"]
"""What ``save_all`` does with a record whose key is already stored.

``"error"`` raises :class:`~ferryman.errors.DuplicateDataError` (the default, and what migrations
rely on to call ``handle_duplicate``); ``"update"`` overwrites the stored record's fields with the
given ones, so re-saving is idempotent; ``"ignore"`` keeps the stored record.
"""

IN_TYPES = (list, tuple, set, frozenset)
"""Filter values of these types mean "field in these values"; anything else means equality."""


def check_on_conflict(value: str) -> OnConflict:
    """``value`` if it is a valid :data:`OnConflict`, else a ``ValueError`` listing the choices."""
    choices = get_args(OnConflict)
    if value not in choices:
        raise ValueError(f"on_conflict must be one of {', '.join(map(repr, choices))}, not {value!r}")
    return value  # type: ignore[return-value]


def describe_values(fields: Sequence[str], values: Sequence[Any]) -> str:
    """Fields and values in PostgreSQL's style, e.g. ``(a, b)=(1, x)``, for error messages."""
    return f"({', '.join(fields)})=({', '.join(str(v) for v in values)})"


def check_fence(destination: str, entry: JournalEntry, fence: int | None) -> None:
    """Raise :class:`~ferryman.errors.FencedOffError` when the migration's ``fence`` (None: never
    raised) is above the epoch ``entry`` was written under; an entry without one always passes."""
    if entry.fence is not None and fence is not None and fence > entry.fence:
        raise FencedOffError(destination, entry.migration, entry.fence, fence)
