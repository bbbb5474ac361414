"""Stop gently on the first SIGINT/SIGTERM/SIGHUP, at once on the second, saving progress either way.

The first signal sets a flag that the runner checks at record-batch boundaries and during retry
pauses; the second raises :class:`~ferryman.errors.StopRequested` (a ``BaseException``, so a
user's ``except Exception`` cannot swallow it) wherever the main thread is — except inside a
:func:`critical` section (a progress ledger's commit and the bookkeeping that goes with it),
where it is held until the section ends: a stop that cut a commit from its bookkeeping would
forget pages the ledger holds, or record them twice. SIGHUP (a dropped SSH session) counts as
a stop like the others: the progress is saved before the process ends.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import StopRequested

log = logging.getLogger("ferryman")

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""The signals that stop a run (SIGHUP does not exist on Windows)."""


class StopFlag:
    """Set when the run should stop; ``wait`` doubles as an interruptible sleep."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        self.timeout: str | None = None
        """Set (to what ``last_err`` says) when the stop came from a timeout, not a signal."""

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def time_out(self, message: str) -> None:
        """Stop because the run's time is up (see :mod:`ferryman.deadline`); a stop already
        asked for by a signal stays one."""
        if not self._event.is_set():
            self.timeout = message
            self.request(message)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when a stop is requested."""
        return self._event.wait(seconds) if seconds > 0 else self._event.is_set()


class _Critical:
    """How deep the main thread is in critical sections, and a forced stop held meanwhile."""

    depth = 0
    held: str | None = None


@contextmanager
def critical() -> Iterator[None]:
    """Hold a forced stop (second signal) until the block ends, then raise it.

    Only the main thread is ever interrupted by a signal, so other threads need no holding.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Critical.depth += 1
    try:
        yield
    finally:
        _Critical.depth -= 1
        held = _Critical.held
        if _Critical.depth == 0 and held is not None:
            _Critical.held = None
            raise StopRequested(held)


def _force_stop(name: str) -> None:
    if _Critical.depth:
        log.warning("%s again: stopping as soon as the progress ledger's commit is done", name)
        _Critical.held = name
        return
    log.warning("%s again: stopping now; progress is being saved", name)
    raise StopRequested(name)


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[None]:
    """Route SIGINT/SIGTERM/SIGHUP to ``flag`` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if flag.requested:
            _force_stop(name)
            return
        # Requested before saying so: a second signal can run this handler again while the
        # first is still logging, and must find the stop requested.
        flag.request(name)
        log.warning(
            "%s received: stopping at the next record boundary and saving progress "
            "(send it again to stop at once)", name,
        )

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def stops_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, where no run handles them
    (before a run starts: opening the progress, checking the stores); in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS if sig != signal.SIGINT}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
