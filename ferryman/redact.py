"""Secrets out of everything ferryman shows or stores: passwords in URLs and connection strings;
and control characters out of what it shows (:func:`printable`).

A database URL reaches error messages, tracebacks, store labels, the progress ledger, the status
API and the terminal. SQLAlchemy hides only the ``user:password@`` form; a password given as a
query parameter (``?password=...``, common with PostgreSQL and MongoDB) or in a libpq DSN
(``password=... host=...``) would be shown as it is. :func:`mask_secrets` is the one function
that every place showing or storing such text calls; it works on free text, since a URL hides
inside messages and tracebacks, and it is idempotent.
"""

from __future__ import annotations

import re

MASK = "***"

_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key)"  # also db_password, aws_session_token
    r"|pwd|pass"
)
"""Names of credential parameters (any case): the exact short ones, and any name ending in a
long one."""

_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s\"']*:)[^@?#\s\"']*(@)")
"""``scheme://user:password@``: the password runs to the first ``@`` (SQLAlchemy allows ``/`` in it;
an ``@``, ``?`` or ``#`` in a password must be written ``%40``, ``%3F``, ``%23``)."""
_USERINFO_HINT = re.compile(r"://[^:/?#@\s\"']*:[^@?#\s\"']*@")
"""The part of every match of :data:`_USERINFO` from ``://`` on: a URL without a password (a
store's label) has none, and it is found from each ``://`` alone."""

_PARAMETER = re.compile(
    rf"((?<![A-Za-z0-9_.-])(?:{_SECRET_NAME})\s*=\s*)"
    rf"(?!{re.escape(MASK)}(?:[\s,)&#;'\"]|$))"  # masked already: keep what follows the mask
    r"""('(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|[^\s&#;'"]+)""",
    re.IGNORECASE,
)
"""``password=value`` in a query string (``?``/``&``), a DSN (spaces) or an option string."""

_QUOTED_MEMBER = re.compile(
    rf"""((['"])(?:{_SECRET_NAME})\2\s*:\s*)(?:(['"])(?:\\.|(?!\3).)*\3|[^\s,}}\]]+)""",
    re.IGNORECASE,
)
"""``'password': 'value'`` in the repr of a dict of connection arguments, or in JSON (which stays
JSON: a quoted value stays quoted)."""

_NAME_END = "(?:password|passwd|secret|token|key|pwd|pass)"
"""How every name :data:`_SECRET_NAME` matches ends, case folded: ``casefold`` maps every letter
here as the expressions' IGNORECASE matches it (the long s and the Kelvin sign too); not the
``i`` of ``api``, which the dotted capital I matches but folds to two characters, so an API
key's name is found by its ``key``."""
_PARAMETER_HINT = re.compile(rf"{_NAME_END}\s*=")
_QUOTED_MEMBER_HINT = re.compile(rf"""{_NAME_END}['"]\s*:""")
"""What every match of :data:`_PARAMETER` and of :data:`_QUOTED_MEMBER` holds, searched for in
the case folded text: the end of a credential's name and what follows it. Most text has none
(a traceback), and these find that in one plain pass, where the expressions themselves try
every word with IGNORECASE."""


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL and the value of every credential parameter
    replaced by ``***``; everything else is kept as it is.

    The expressions only run on text that holds what they need to match (a URL with a
    password; a credential's name and its ``=`` or ``:``): most text is a traceback or a
    message without either, and every failed record's cause passes through here."""
    if "=" not in text and "@" not in text and ":" not in text:
        return text
    if "://" in text and _USERINFO_HINT.search(text):
        text = _USERINFO.sub(rf"\g<1>{MASK}\g<2>", text)
    if _PARAMETER_HINT.search(text.casefold()):
        text = _PARAMETER.sub(rf"\g<1>{MASK}", text)
    if _QUOTED_MEMBER_HINT.search(text.casefold()):
        text = _QUOTED_MEMBER.sub(_mask_member, text)
    return text


def _mask_member(match: re.Match[str]) -> str:
    quote = match.group(3) or ""
    return f"{match.group(1)}{quote}{MASK}{quote}"


CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
"""C0 (newlines and tabs too: one value stays on one line), DEL, C1 (CSI, OSC... as one code
point), the bidirectional marks, embeddings, overrides and isolates, and the line and paragraph
separators: what would let a value retitle a terminal, move its cursor or reverse its text."""


def printable(text: str) -> str:
    """``text`` with every control character as a visible escape: ``\\x1b``, ``\\u202e``."""
    return CONTROL_CHARACTERS.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


__all__ = ["CONTROL_CHARACTERS", "MASK", "mask_secrets", "printable"]
