"""The limits a progress JSON document must keep, and a byte stream that enforces them early.

A progress file comes from anywhere (Java mjg, a hand edit, a corrupted disk), so reading one must
neither crash nor take memory out of proportion to what it holds:

- ijson's C backend (yajl) turns an integer literal into a Python ``int`` with
  ``PyLong_FromString``; beyond Python's int-string limit (``sys.get_int_max_str_digits()``,
  4300 digits) that conversion fails and the backend crashes the interpreter instead of raising.
  No number may reach it with more than :data:`MAX_NUMBER_DIGITS` digits in a row.
- yajl keeps a token that spans two reads whole in memory, so an endless string would grow
  without bound before any event reaches ferryman: :class:`LimitedReader` holds back a string
  until it is complete and refuses one that outgrows what :data:`MAX_STRING_CHARS` allows.
- Nesting is checked by the reader of the events (it knows the JSON path): ids are ints, strings
  or flat arrays of those, and the format nests six levels, so a deep structure anywhere is
  malformed.

The limits follow Jackson's default read constraints for numbers (so every file Java mjg reads is
read here too) and are far above anything ferryman or mjg writes for strings and nesting.
"""

from __future__ import annotations

import re
from typing import BinaryIO

MAX_DEPTH = 64
"""Arrays and objects nested deeper than this are refused."""

MAX_NUMBER_DIGITS = 1000
"""A number with a run of more digits than this is refused (Jackson's default limit too)."""

MAX_STRING_CHARS = 1_000_000
"""A string (a cause, a description, a string id) longer than this is refused."""

MAX_VALUE_CHARS = 16_000_000
"""A value read whole (metadata, one failed record, a composite id) holding more text than this
is refused; long arrays (ids, failed records, fatal errors) are streamed in chunks of at most
this much text instead."""

_MAX_STRING_BYTES = 12 * MAX_STRING_CHARS
"""The most bytes a string within :data:`MAX_STRING_CHARS` takes in JSON: a character written as
two ``\\uXXXX`` escapes (a surrogate pair) takes twelve."""

_COMPLETE_TOKENS = re.compile(
    rb'(?:[^"0-9]++|[0-9]{1,%d}+(?![0-9])|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+' % MAX_NUMBER_DIGITS
)
"""Text whose digit runs (outside strings) are within the limit and whose strings are closed."""
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"')


class LimitExceeded(Exception):
    """Raised by :meth:`LimitedReader.read` once the text before the offending token is parsed;
    the reader of the events adds the JSON path."""


def number_too_long() -> str:
    return f"a number longer than {MAX_NUMBER_DIGITS:,} digits"


def string_too_long() -> str:
    return f"a string longer than {MAX_STRING_CHARS:,} characters"


class LimitedReader:
    """A binary file for ijson that only ever hands on text within the lexical limits.

    It hands on text up to the last complete token (a string still open or a number that may go
    on is held back, never more than the limits allow). When a token breaks a limit, the text
    before it is handed on first, so that the parser's events reach the token (and its JSON
    path); the next read raises :class:`LimitExceeded`.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.held = b""
        self.problem: str | None = None

    def read(self, size: int = 65536) -> bytes:
        if size == 0:  # ijson's check that this is a binary file
            return b""
        if self.problem is not None:
            raise LimitExceeded(self.problem)
        while True:
            # An open string may be long: read as much again as is held (the copies stay linear).
            chunk = self.raw.read(min(max(size, len(self.held)), _MAX_STRING_BYTES))
            data = self.held + chunk
            if not chunk:  # the end: the parser reports an unfinished token itself
                self.held = b""
                return data
            ready = self._ready(data)
            self.held = data[ready:]
            if ready:
                return data[:ready]
            if self.problem is not None:  # nothing before the token: the parser is waiting for it
                raise LimitExceeded(self.problem)

    def _ready(self, data: bytes) -> int:
        """How much of ``data`` can go to the parser; sets ``problem`` if a limit is broken."""
        if data[:1] == b'"':  # a string held back earlier: check its whole length
            string = _STRING.match(data)
            if (string.end() if string else len(data)) > _MAX_STRING_BYTES + 2:
                self.problem = string_too_long()
                return 0
        end = _COMPLETE_TOKENS.match(data).end()  # type: ignore[union-attr]  # matches empty text
        if end == len(data):  # all complete, but a number at the end may go on in the next read
            return len(data.rstrip(b"0123456789"))
        if data[end:end + 1] != b'"':
            self.problem = number_too_long()
        elif len(data) - end > _MAX_STRING_BYTES + 2:
            self.problem = string_too_long()
        return end


def too_deep() -> str:
    return f"arrays or objects nested more than {MAX_DEPTH} deep"


NUMBER_BOUND = 10**MAX_NUMBER_DIGITS
"""Every int within the digit limit lies strictly between ``-NUMBER_BOUND`` and ``NUMBER_BOUND``."""


def too_many_digits(value: int) -> bool:
    """Whether a parsed int has more than :data:`MAX_NUMBER_DIGITS` digits."""
    return not -NUMBER_BOUND < value < NUMBER_BOUND
