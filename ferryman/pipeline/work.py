"""The state of input records during one attempt of the pipeline: by column, with a Work for each
record handled on its own (one that failed, or one saved alone)."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from enum import Enum
from typing import Any

from ..declare import Retry
from ..errors import describe_error
from ..redact import mask_secrets
from ..types import Aggregates, Record, RecordId


class Phase(str, Enum):
    """Where in the pipeline a record failed; names the Retry policy that applies."""

    START = "start_reduction"
    MATCH = "match"
    TRANSFORM = "transform"
    SAVE = "save"


class Work:
    """One record in one attempt: fresh aggregates, its outputs, and how it ended.

    A new Work is made for every attempt, so nothing a failed attempt mutated (aggregates,
    outputs, lists returned by handle_duplicate) leaks into the next one.
    """

    __slots__ = ("aggregates", "error", "id", "outputs", "phase", "record", "retry", "saved", "shared")

    def __init__(self, record: Record, record_id: RecordId) -> None:
        self.record = record
        self.id = record_id
        self.aggregates: Aggregates = {}
        self.outputs: Sequence[Record] = ()
        self.phase: Phase | None = None
        self.error: BaseException | None = None
        self.retry: Retry | None = None
        self.saved = False
        self.shared = 1

    def fail(self, phase: Phase, error: BaseException, retry: Retry | None, shared: int = 1) -> None:
        """Mark the record failed in ``phase``; ``retry`` None means never retry (deterministic).

        ``shared`` is how many records the error failed at once (a batch that failed as a
        whole, an outage): the cause then says it need not be about this record.
        """
        self.phase = phase
        self.error = error
        self.retry = retry
        self.shared = shared

    def forget_traceback(self) -> None:
        """Drop the tracebacks of the error and of every error chained to it, causes and
        contexts alike, once they are text: their frames hold the page's records in a reference
        cycle that only a garbage collection would free. (A store's duplicate keeps the driver's
        error as its cause and the SQLAlchemy error wrapping it as its context: both.)"""
        pending: list[BaseException | None] = [self.error]
        seen: set[int] = set()
        while pending:
            error = pending.pop()
            if error is None or id(error) in seen:
                continue
            seen.add(id(error))
            error.__traceback__ = None
            pending += [error.__cause__, error.__context__]

    def cause(self) -> str:
        """The failure's traceback text, as stored in the progress (mjg stored Java's)."""
        if self.error is None:
            return ""
        text = format_error(self.error)
        if self.shared > 1:
            text += (f"\n(this error failed a whole batch of {self.shared} records at once: "
                     "it need not be about this record)")
        return text


class Attempt:
    """One attempt at some records, by column: the records that reached the save (``ids``,
    ``records`` and their ``outputs``, by position) and the Works of those that failed before it.

    Columns, not a Work per record: a copy of a million rows would otherwise make a million Works
    only to free them a page later. A record gets a Work only where it is handled on its own:
    when it fails, or when its batch is split to find one.
    """

    __slots__ = ("failed", "ids", "outputs", "records", "size")

    def __init__(self, ids: list[RecordId], records: list[Record], outputs: list[Sequence[Record]],
                 failed: list[Work], size: int) -> None:
        self.ids = ids
        self.records = records
        self.outputs = outputs
        self.failed = failed
        self.size = size
        """How many records were attempted: those that reached the save and those that failed."""

    def work(self, position: int) -> Work:
        """The record at ``position`` as a Work of its own, outputs included."""
        w = Work(self.records[position], self.ids[position])
        w.outputs = self.outputs[position]
        return w


class Batch:
    """Records of one attempt by column while they are matched: their aggregates by position,
    and a Work only for each record that fails (made when it fails).

    What :class:`Attempt` is for a copy, for a migration that matches: a page of lookups makes
    no object per record on its way to the save.
    """

    __slots__ = ("aggregates", "failed", "ids", "records")

    def __init__(self, ids: list[RecordId], records: list[Record]) -> None:
        self.ids = ids
        self.records = records
        self.aggregates: list[Aggregates] = [{} for _ in records]
        """Fresh for every attempt, so nothing a failed attempt reduced leaks into the next."""
        self.failed: dict[int, Work] = {}
        """The records that failed, by position."""

    def fail(self, position: int, phase: Phase, error: BaseException, retry: Retry | None) -> None:
        """Fail the record at ``position`` (see :meth:`Work.fail`)."""
        w = Work(self.records[position], self.ids[position])
        w.aggregates = self.aggregates[position]
        w.fail(phase, error, retry)
        self.failed[position] = w

    def alive(self) -> list[int]:
        """The positions of the records that have not failed, ascending."""
        failed = self.failed
        if not failed:
            return list(range(len(self.records)))
        return [p for p in range(len(self.records)) if p not in failed]

    def attempt(self, positions: list[int], outputs: list[Sequence[Record]]) -> Attempt:
        """The attempt: the records at ``positions`` (ascending) with their ``outputs``, less
        those failed since, and the failed ones in record order."""
        failed = self.failed
        size = len(self.records)
        if not failed:
            return Attempt(self.ids, self.records, outputs, [], size)
        kept = [k for k, p in enumerate(positions) if p not in failed]
        ids, records = self.ids, self.records
        return Attempt([ids[positions[k]] for k in kept], [records[positions[k]] for k in kept],
                       [outputs[k] for k in kept], [failed[p] for p in sorted(failed)], size)


CAUSE_LIMIT = 8_000
"""Characters of a failure's traceback the progress keeps: the start and the end (where the
exception is). A million failed records must not make a ledger of gigabytes."""


FRAMES_KEPT = 4096
"""Formatted frames :class:`_KnownFrames` keeps; past that it starts over."""
_formatted_frames: dict[tuple[Any, ...], str] = {}


class _KnownFrames(traceback.StackSummary):
    """A stack formatted as Python formats it, each frame's text made once per process.

    A frame's text (the file, line and function, the source line, the ``^^^^`` under the failing
    expression, which Python finds by parsing that line) depends on nothing but those; failed
    records fail in the same few places, so a thousand failures format a handful of frames."""

    def format_frame_summary(self, frame_summary: traceback.FrameSummary, **options: Any) -> str:
        if frame_summary.locals is not None:
            return super().format_frame_summary(frame_summary, **options)
        key = (frame_summary.filename, frame_summary.lineno, frame_summary.name, frame_summary.line,
               getattr(frame_summary, "end_lineno", None), getattr(frame_summary, "colno", None),
               getattr(frame_summary, "end_colno", None), tuple(sorted(options.items())))
        text = _formatted_frames.get(key)
        if text is None:
            if len(_formatted_frames) >= FRAMES_KEPT:
                _formatted_frames.clear()
            text = _formatted_frames[key] = super().format_frame_summary(frame_summary, **options)
        return text


def _traceback_text(error: BaseException) -> str:
    """``traceback.format_exception(error)``, its frames formatted by :class:`_KnownFrames`."""
    top = traceback.TracebackException.from_exception(error, compact=True)
    pending, seen = [top], set()
    while pending:  # the chain of causes and contexts, and an exception group's members
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.stack = _KnownFrames(current.stack)
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
        pending += getattr(current, "exceptions", None) or []
    return "".join(top.format())


def format_error(error: BaseException) -> str:
    """An error's traceback as the progress stores it (secrets masked, as everywhere; the middle
    of a very long one cut out)."""
    text = mask_secrets(_traceback_text(error).rstrip())
    if len(text) <= CAUSE_LIMIT:
        return text
    head, tail = CAUSE_LIMIT // 4, CAUSE_LIMIT * 3 // 4
    return f"{text[:head]}\n[... {len(text) - head - tail} characters cut ...]\n{text[-tail:]}"


__all__ = ["Attempt", "Batch", "Phase", "Work", "describe_error", "format_error"]
