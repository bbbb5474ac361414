"""uvicorn's HTTP/1.1 protocol (h11) with a deadline on every request head.

uvicorn closes a kept-alive connection that stays idle ``timeout_keep_alive`` seconds after a
response, but nothing limits how long it waits for the first request of a connection, nor for
the rest of a request once its first byte arrived: a client that connects and sends nothing, or
half a request line, holds a connection (a file descriptor, a protocol object) for as long as it
likes. :class:`DeadlineH11Protocol` closes a connection that has not delivered a complete request
head within HEAD_TIMEOUT seconds of connecting or of its previous response. A request whose head
arrived is the application's, however long its answer takes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT = 5.0
"""Seconds a connection has to send a complete request head (method, path, headers)."""


class DeadlineH11Protocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection whose next request head is late."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head arrived and went to the application
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request at once
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._await_head()

    def _await_head(self) -> None:
        self._stop_waiting()
        self._head_deadline = self.loop.call_later(HEAD_TIMEOUT, self._head_is_late)

    def _stop_waiting(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_is_late(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
