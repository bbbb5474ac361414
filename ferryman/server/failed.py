"""``GET /migrate/failed?migration=&q=&offset=&limit=``: failed records searched and paged.

The query is checked here (:meth:`FailedQuery.parse`: one line naming the parameter that is
wrong); the search itself is the progress library's
(:meth:`~ferryman.progress.reader.LedgerReader.failed_page`), asked by the status source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..progress.model import Action
from ..progress.reader import FailedPage
from .status import failed_record_dict

DEFAULT_LIMIT = 50
"""Failed records per page when ``limit`` is not given."""
MAX_LIMIT = 500
"""Most failed records one page may hold."""
MAX_TEXT = 1000
"""Longest text a search may look for, in characters."""


@dataclass(frozen=True)
class FailedQuery:
    """What ``GET /migrate/failed`` asks for."""

    migration: str | None = None
    """A migration's name or identity; None: every migration."""
    text: str | None = None
    """Text looked for in the id, description and cause, in any case; None: every record."""
    offset: int = 0
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> FailedQuery:
        """The query of a request's parameters; InputError naming the one that is wrong."""
        unknown = sorted(set(params) - {"migration", "q", "offset", "limit"})
        if unknown:
            raise InputError(f"unknown parameter {unknown[0]!r}: use migration, q, offset, limit")
        text = params.get("q") or None
        if text is not None and len(text) > MAX_TEXT:
            raise InputError(f"q: at most {MAX_TEXT} characters to look for, not {len(text)}")
        return cls(params.get("migration") or None, text,
                   _integer(params, "offset", 0, 0, None), _integer(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT))


def _integer(params: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise InputError(f"{name}: {text[:40]!r} is not a whole number")
    value = int(text)
    if value < low or (high is not None and value > high):
        limits = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise InputError(f"{name}: {value} is out of range ({limits})")
    return value


def page_body(page: FailedPage, names: dict[str, str], query: FailedQuery, *,
              partial: bool = False) -> dict[str, Any]:
    """The body of ``GET /migrate/failed``; ``partial``: the source keeps only the newest
    failed records (a run in this process on a progress kept in memory)."""
    return {
        "total": page.total, "offset": query.offset, "limit": query.limit, "partial": partial,
        "records": [{**failed_record_dict(names.get(identity, identity), record.id, record.description,
                                          record.cause, Action(record.action).value,
                                          record.timestamp.isoformat()), "identity": identity}
                    for identity, record in page.rows],
    }
