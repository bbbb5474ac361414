"""source_pages: the source read page by page, or one key range of it, through failed reads."""

from __future__ import annotations

from typing import Any

import pytest

from ferryman.declare import Retry
from ferryman.pipeline.pages import SourceUnreadable, source_pages
from ferryman.stores import MemoryStore
from ferryman.types import Record, RecordId


class Flaky(MemoryStore):
    """A MemoryStore whose reads fail from the ``fail_from``-th on, ``failures`` times in a row."""

    def __init__(self, fail_from: int, failures: int) -> None:
        super().__init__("flaky", records=[{"id": i} for i in range(1, 101)])
        self.fail_from, self.failures = fail_from, failures
        self.reads: list[RecordId | None] = []

    def read_page(self, filter: Any, after: RecordId | None, limit: int) -> list[Record]:
        self.reads.append(after)
        if len(self.reads) >= self.fail_from and self.failures:
            self.failures -= 1
            raise ConnectionError("lost")
        return super().read_page(filter, after, limit)


def test_a_range_read_through_a_failure_restarts_after_its_last_page_and_stays_in_range() -> None:
    store = Flaky(fail_from=3, failures=2)
    pages = list(source_pages(store, 7, Retry(times=2, delay=0), lambda delay: False, after=20, upto=60))
    assert [r["id"] for page in pages for r in page] == list(range(21, 61))
    assert store.reads[:5] == [20, 27, 34, 34, 34]  # the third read failed twice, then went on from 34
    assert store.reads[-1] == 55  # the page that reaches past 60 is the last one asked for


def test_a_range_that_cannot_be_read_names_the_id_after_which_its_page_failed() -> None:
    store = Flaky(fail_from=3, failures=10)
    got: list[int] = []
    with pytest.raises(SourceUnreadable, match=r"source 'flaky' unreadable after id 34 \(a page of up to 7 "):
        for page in source_pages(store, 7, Retry(times=1, delay=0), lambda delay: False, after=20, upto=60):
            got += [r["id"] for r in page]
    assert got == list(range(21, 35))


def test_without_bounds_the_whole_source_is_read() -> None:
    store = Flaky(fail_from=1, failures=0)
    pages = list(source_pages(store, 30, Retry(times=0, delay=0), lambda delay: False))
    assert [r["id"] for page in pages for r in page] == list(range(1, 101))
