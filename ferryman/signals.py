"""Stop gently on the first SIGINT/SIGTERM, at once on the second, saving progress either way.

The first signal sets a flag that the runner checks at record-batch boundaries and during retry
pauses; the second raises :class:`~ferryman.errors.StopRequested` (a ``BaseException``, so a
user's ``except Exception`` cannot swallow it) wherever the main thread is.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from .errors import StopRequested

log = logging.getLogger("ferryman")


class StopFlag:
    """Set when the run should stop; ``wait`` doubles as an interruptible sleep."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when a stop is requested."""
        return self._event.wait(seconds) if seconds > 0 else self._event.is_set()


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``flag`` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if flag.requested:
            log.warning("%s again: stopping now; progress is being saved", name)
            raise StopRequested(name)
        log.warning(
            "%s received: stopping at the next record boundary and saving progress "
            "(send it again to stop at once)", name,
        )
        flag.request(name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
