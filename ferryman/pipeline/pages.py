"""Source pages in key order: the RETRY ids first (by id), then the whole source (or one key range of it).

Reading is keyset-paged (``read_page(after=last key)``), so a page costs the same at the end of
a table as at its start and no row is skipped or read twice. A page that cannot be read after
the migration's ``load_retry`` is a fatal error for the migration; a store that is unusable
(:class:`~ferryman.errors.StoreUnusableError`: no such table, no permission) is one at once,
as retrying cannot change it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TypeVar

from ..declare import Retry
from ..errors import StoreUnusableError
from ..ids import format_id
from ..stores.base import Store
from ..types import Record, RecordId

T = TypeVar("T")


class SourceUnreadable(Exception):
    """A store the migration cannot do without failed after every retry (a fatal error).

    ``args[0]`` says what could not be read; ``__cause__`` is the last error.
    """


def with_retry(
    action: Callable[[], T], retry: Retry, wait: Callable[[float], bool], what: str
) -> T:
    """Run ``action``; on error wait ``retry.delay`` and try again, ``retry.times`` more times
    (never after a StoreUnusableError, which is raised as it is).

    ``wait`` returns True when the run was asked to stop, which ends the retries early.
    """
    attempt = 0
    while True:
        try:
            return action()
        except StoreUnusableError:
            raise
        except Exception as exc:
            attempt += 1
            if attempt > retry.times or wait(retry.delay):
                raise SourceUnreadable(what) from exc


def source_pages(
    source: Store, batch_size: int, retry: Retry, wait: Callable[[float], bool],
    after: RecordId | None = None, upto: RecordId | None = None,
) -> Iterator[list[Record]]:
    """The source's records after ``after`` and up to ``upto`` (None: from the first, to the
    last), page by page, in key order (``Store.read_pages``, which may read ahead); a failed read
    starts again after the last page read, within the same range, ``retry`` allowing."""
    bounds = {} if upto is None else {"upto": upto}  # a store written before upto may not take it
    failures = 0
    pages = source.read_pages(None, after, batch_size, **bounds)
    try:
        while True:
            try:
                page = next(pages, None)
            except StoreUnusableError:
                raise
            except Exception as exc:
                failures += 1
                if failures > retry.times or wait(retry.delay):
                    where = "from its first record" if after is None else f"after id {format_id(after)}"
                    raise SourceUnreadable(f"source {source.name!r} unreadable {where} (a page of up to "
                                           f"{batch_size} records)") from exc
                pages = source.read_pages(None, after, batch_size, **bounds)
                continue
            if page is None:
                return
            failures = 0
            yield page
            after = source.id_of(page[-1])
    finally:
        close = getattr(pages, "close", None)  # a generator's: ends a read-ahead
        if close is not None:
            close()


def pages_by_id(
    source: Store, ids: Sequence[RecordId], batch_size: int, retry: Retry, wait: Callable[[float], bool]
) -> Iterator[list[Record]]:
    """The records with these ids, ``batch_size`` ids per lookup; vanished ids are left out."""
    for start in range(0, len(ids), batch_size):
        chunk = list(ids[start:start + batch_size])
        page = with_retry(partial(source.get_many, chunk), retry, wait, f"source {source.name!r} unreadable")
        if page:
            yield page
