"""The status server's routes, all in one place: ``create_app(source)`` -> a Starlette app.

The status routes answer from one :class:`~ferryman.server.status.StatusSnapshot`, taken at most
every REFRESH seconds (in a worker thread: sources do blocking I/O) and rendered once per route
into bytes that every request until the next snapshot reuses (:class:`Answers`). The event log
(``/migrate/events``, paged) and the newest verification (``/migrate/verify``) are read from the
source at each request. When the source fails, the JSON routes answer ``500 {"error": "..."}``;
that is the only case of a 500.

While the server runs it also takes a snapshot every :data:`~.history.SAMPLE_EVERY` seconds by
itself (through the same :class:`Answers`), so that the throughput history
(:mod:`.history`) has points whether or not a page polls. ``GET /migrate/failed`` searches the
failed records (:mod:`.failed`); ``POST /migrate/actions`` changes them, only when the server
was given :class:`~.actions.Actions` (:mod:`.actions`: the token and the checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..errors import InputError, one_line
from ..progress.reader import EVENTS_PAGE
from . import metrics
from .actions import Actions, actions_routes
from .failed import FailedQuery
from .history import SAMPLE_EVERY, History
from .openapi import openapi_document
from .sources import StatusSource
from .status import StatusSnapshot

log = logging.getLogger("ferryman")

STATIC = Path(__file__).with_name("static")
NO_STORE = {"Cache-Control": "no-store"}
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
ASSETS = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}


REFRESH = 0.5
"""Seconds an answer is kept: however many clients poll, the source is read at most this often,
and at once when its version changes (a run that ends is never shown running)."""


class SourceFailed(Exception):
    """The status source raised; carries the one-line message for the 500 body."""


def _json(content: Any) -> bytes:
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@dataclass
class _Kept:
    """One snapshot and the bodies rendered from it so far, by route."""

    snapshot: StatusSnapshot
    version: Hashable
    taken: float
    bodies: dict[str, bytes] = field(default_factory=dict)


class Answers:
    """The routes' bodies as bytes, rendered once per snapshot of ``source``.

    A request reuses the kept bodies while they are younger than REFRESH and the source's
    version is unchanged: no thread hop, no snapshot, no rendering, which is what keeps a
    polled server from slowing the run beside it. A failed read is not kept: the next request
    tries again.
    """

    def __init__(self, source: StatusSource, history: History | None = None) -> None:
        self.source = source
        self.history = history
        """Fed every snapshot taken."""
        self._kept: _Kept | None = None
        self._lock = threading.Lock()
        self._problem: str | None = None  # the dashboard polls: log a problem once, not every poll

    def _fresh(self) -> _Kept | None:
        kept = self._kept
        if kept is None or time.monotonic() - kept.taken >= REFRESH or self.source.version() != kept.version:
            return None
        return kept

    def _refresh(self) -> _Kept:
        """A fresh snapshot (in a worker thread: sources do blocking I/O), one at a time."""
        with self._lock:
            kept = self._fresh()
            if kept is None:
                taken, version = time.monotonic(), self.source.version()
                kept = self._kept = _Kept(self.source.snapshot(), version, taken)
                if self.history is not None:
                    self.history.record(kept.snapshot)
            return kept

    async def current(self) -> StatusSnapshot:
        """The kept snapshot, or a fresh one; SourceFailed (logged once) when it cannot be taken."""
        return (await self._current()).snapshot

    async def _current(self) -> _Kept:
        kept = self._fresh()
        if kept is None:
            try:
                kept = await run_in_threadpool(self._refresh)
            except Exception as exc:
                message = f"cannot read the migration status: {one_line(exc, typed=True)}"
                if self._problem != message:
                    log.warning("status server: %s", message, exc_info=log.isEnabledFor(logging.DEBUG))
                    self._problem = message
                raise SourceFailed(message) from exc
            self._problem = None
        return kept

    async def body(self, route: str, render: Callable[[StatusSnapshot], bytes]) -> bytes:
        kept = await self._current()
        body = kept.bodies.get(route)
        if body is None:
            body = kept.bodies[route] = render(kept.snapshot)
        return body


def create_app(source: StatusSource, actions: Actions | None = None) -> Starlette:
    """The status API and dashboard over ``source`` (see :mod:`ferryman.server.openapi`);
    ``POST /migrate/actions`` changes the progress only when ``actions`` is given."""

    history = History()
    answers = Answers(source, history)

    def json_route(path: str, render: Callable[[StatusSnapshot], Any]) -> Route:
        def render_json(snapshot: StatusSnapshot) -> bytes:
            return _json(render(snapshot))

        async def serve(request: Request) -> Response:
            body = await answers.body(path, render_json)
            return Response(body, media_type="application/json", headers=NO_STORE)
        return Route(path, serve, methods=["GET"])

    def render_metrics(snapshot: StatusSnapshot) -> bytes:
        return metrics.render(snapshot).encode()

    async def metrics_page(request: Request) -> Response:
        try:
            text = await answers.body("/metrics", render_metrics)
            text += metrics.render_verification(await _read(source.verification)).encode()
        except SourceFailed:
            text = metrics.render_down().encode()
        return Response(text, media_type=metrics.CONTENT_TYPE, headers=NO_STORE)

    async def events(request: Request) -> Response:
        try:
            after = _count_param(request, "after", 0)
            limit = min(_count_param(request, "limit", EVENTS_PAGE), EVENTS_PAGE)
        except ValueError as exc:
            return error_response(400, str(exc))
        found = await _read(source.events, after, limit)
        return JSONResponse({"events": found, "next": found[-1]["seq"] if found else after},
                            headers=NO_STORE)

    async def verification(request: Request) -> Response:
        found = await _read(source.verification)
        return JSONResponse(found if found is not None else NO_VERIFICATION, headers=NO_STORE)

    async def failed_records(request: Request) -> Response:
        search = getattr(source, "failed_page", None)
        if search is None:
            return error_response(404, "this status source keeps no failed records to search")
        try:
            query = FailedQuery.parse(request.query_params)
            body = await run_in_threadpool(search, query)
        except InputError as exc:
            return error_response(400, str(exc))
        except Exception as exc:
            raise SourceFailed(f"cannot read the failed records: {one_line(exc, typed=True)}") from exc
        return Response(_json(body), media_type="application/json", headers=NO_STORE)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(__version__))

    async def dashboard(request: Request) -> Response:
        return Response(_asset("dashboard.html"), media_type="text/html; charset=utf-8",
                        headers=PAGE_HEADERS)

    def asset_route(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            return Response(_asset(name), media_type=ASSETS[name], headers=PAGE_HEADERS)
        return serve

    async def source_failed(request: Request, exc: Exception) -> Response:
        return error_response(500, str(exc))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sampler = asyncio.create_task(_sample(answers))
        try:
            yield
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler

    routes = [
        Route("/", dashboard, methods=["GET"]),
        json_route("/migrate/result", StatusSnapshot.result),
        json_route("/migrate/progress", StatusSnapshot.progress),
        Route("/migrate/events", events, methods=["GET"]),
        Route("/migrate/verify", verification, methods=["GET"]),
        json_route("/migrate/history", history.to_dict),
        Route("/migrate/failed", failed_records, methods=["GET"]),
        *actions_routes(actions),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *(Route(f"/static/{name}", asset_route(name), methods=["GET"]) for name in ASSETS),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        SourceFailed: source_failed,
    }
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


def error_response(status: int, message: str) -> Response:
    """``{"error": message}``: how every route says what went wrong."""
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


async def _sample(answers: Answers) -> None:
    """Take a snapshot every SAMPLE_EVERY seconds (unless a request just did), for the history."""
    while True:
        await asyncio.sleep(SAMPLE_EVERY)
        with contextlib.suppress(SourceFailed):  # logged once by Answers; the routes say it
            await answers.current()


NO_VERIFICATION: dict[str, Any] = {"status": "none", "ok": None, "migrations": []}
"""``GET /migrate/verify`` before any verification."""


def _count_param(request: Request, name: str, default: int) -> int:
    """A query parameter that must be an int >= 0 (ValueError naming it otherwise)."""
    text = request.query_params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ValueError(f"query parameter {name} must be an integer >= 0, not {text[:40]!r}")
    return int(text)


async def _read(read: Callable[..., Any], *args: Any) -> Any:
    """``read(*args)`` of the source, in a worker thread (it does blocking I/O); a failure is
    the 500 every JSON route answers."""
    try:
        return await run_in_threadpool(read, *args)
    except Exception as exc:
        raise SourceFailed(f"cannot read the migration status: {one_line(exc, typed=True)}") from exc


def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()
