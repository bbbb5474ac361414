"""A failure's traceback text (``work.format_error``): frames formatted once per process read
exactly as Python's own ``traceback.format_exception`` writes them."""

from __future__ import annotations

import traceback
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ferryman.pipeline import work
from ferryman.pipeline.work import format_error


def fail(depth: int, message: str, how: str) -> None:
    """Raise ``ValueError(message)`` ``depth`` calls down, chained as ``how`` says."""
    if depth > 0:
        fail(depth - 1, message, how)
        return
    if how == "cause":
        try:
            {}["missing"]
        except KeyError as exc:
            raise ValueError(message) from exc
    if how == "context":
        try:
            1 / 0  # noqa: B018 - the error is the point
        except ZeroDivisionError:
            raise ValueError(message)  # noqa: B904 - an implicit context on purpose
    if how == "group":
        raise ExceptionGroup(message, [ValueError(message), TypeError("t")])
    if how == "twin":  # the same text and columns as the line below, on another line
        raise ValueError(message)
    if how == "plain":
        raise ValueError(message)
    raise AssertionError(how)


def caught(depth: int, message: str, how: str) -> BaseException:
    try:
        fail(depth, message, how)
    except BaseException as exc:  # noqa: BLE001 - any kind, as the engine catches them
        return exc
    raise AssertionError("did not raise")


HOW = st.sampled_from(["plain", "twin", "cause", "context", "group"])


@settings(max_examples=150, deadline=None)
@given(depth=st.integers(0, 5), message=st.text(max_size=20), how=HOW, again=st.integers(0, 5), how_again=HOW)
def test_frames_formatted_once_read_as_python_formats_them(depth: int, message: str, how: str, again: int,
                                                           how_again: str) -> None:
    first, second = caught(depth, message, how), caught(again, message[::-1], how_again)
    for error in (first, second, first):  # the second time from the known frames
        assert work._traceback_text(error) == "".join(traceback.format_exception(error))


def test_the_known_frames_are_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(work, "FRAMES_KEPT", 3)
    work._formatted_frames.clear()
    for depth in range(6):
        format_error(caught(depth, "x", "plain"))
        assert len(work._formatted_frames) <= 3
