"""Run timeouts: a duration as people write it (``90s``, ``10m``, ``2h``, ``1h30m``), and the
timer that stops a run gently when its time is up.

A timeout never cuts a batch in half: when it fires it asks the run to stop at the next batch
boundary (the same stop a first Ctrl-C asks for), so what was saved is recorded and the next
run resumes exactly where this one stopped. Unlike Ctrl-C, a run that timed out ends
``failed`` (exit code 1), its ``last_err`` saying it timed out: nobody asked it to stop, it
did not finish in the time it was given.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import InputError
from .signals import StopFlag

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+")


def parse_duration(text: str, what: str = "timeout") -> float:
    """Seconds in ``text``: a number of seconds (``90``, ``1.5``) or amounts with units
    s, m, h, d (``90s``, ``10m``, ``2h``, ``1h30m``); above zero.

    Raises:
        InputError: one line naming ``what`` and the text when it is not such a duration.
    """
    value = text.strip().lower()
    seconds: float | None = None
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        seconds = float(value)
    elif _WHOLE.fullmatch(value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    if seconds is None or not 0 < seconds <= threading.TIMEOUT_MAX:
        raise InputError(f"{what}: {text!r} is not a duration above zero; give e.g. 90s, 10m, 2h or 1h30m")
    return seconds


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` in seconds when it is None or a number above zero; else InputError."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or math.isnan(timeout) \
            or not 0 < timeout <= threading.TIMEOUT_MAX:
        raise InputError(f"timeout must be a number of seconds above zero, not {timeout!r}")
    return float(timeout)


def format_seconds(seconds: float) -> str:
    """``90s``, ``10m``, ``2h``, ``1h30m``, ``1.5s``: as a person would have written it."""
    if seconds < 60 or seconds != int(seconds):
        return f"{seconds:g}s"
    whole = int(seconds)
    parts = [(whole // 3600, "h"), (whole % 3600 // 60, "m"), (whole % 60, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n)


def timed_out_message(timeout: float) -> str:
    """What ``last_err`` says of a run that timed out."""
    return (f"timed out after {format_seconds(timeout)}: stopped at a batch boundary, progress saved; "
            "run again to resume")


@contextmanager
def deadline(stop: StopFlag, seconds: float | None, message: str) -> Iterator[None]:
    """Ask ``stop`` to stop, as timed out with ``message``, once ``seconds`` have passed while
    the block runs (at once when ``seconds`` is not above zero; never when None)."""
    if seconds is None:
        yield
        return
    if seconds <= 0:
        stop.time_out(message)
        yield
        return
    timer = threading.Timer(seconds, stop.time_out, args=(message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
