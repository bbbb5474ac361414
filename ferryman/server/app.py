"""The status server's routes, all in one place: ``create_app(source)`` -> a Starlette app.

Every route reads one :class:`~ferryman.server.status.StatusSnapshot` per request (in a worker
thread: sources do blocking I/O). When the source fails, the JSON routes answer
``500 {"error": "..."}``; that is the only case of a 500.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..redact import mask_secrets
from . import metrics
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


class SourceFailed(Exception):
    """The status source raised; carries the one-line message for the 500 body."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def create_app(source: StatusSource) -> Starlette:
    """The status API and dashboard over ``source`` (see :mod:`ferryman.server.openapi`)."""

    last_problem: list[str] = []  # the dashboard polls: log a problem once, not every poll

    async def snapshot() -> StatusSnapshot:
        try:
            snap = await run_in_threadpool(source.snapshot)
        except Exception as exc:
            message = f"cannot read the migration status: {mask_secrets(_one_line(exc))}"
            if last_problem != [message]:
                log.warning("status server: %s", message, exc_info=log.isEnabledFor(logging.DEBUG))
                last_problem[:] = [message]
            raise SourceFailed(message) from exc
        last_problem.clear()
        return snap

    async def result(request: Request) -> Response:
        return JSONResponse((await snapshot()).result(), headers=NO_STORE)

    async def progress(request: Request) -> Response:
        return JSONResponse((await snapshot()).progress(), headers=NO_STORE)

    async def metrics_page(request: Request) -> Response:
        try:
            text = metrics.render(await snapshot())
        except SourceFailed:
            text = metrics.render_down()
        return Response(text, media_type=metrics.CONTENT_TYPE, headers=NO_STORE)

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
        return JSONResponse({"error": str(exc)}, status_code=500, headers=NO_STORE)

    routes = [
        Route("/", dashboard, methods=["GET"]),
        Route("/migrate/result", result, methods=["GET"]),
        Route("/migrate/progress", progress, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *(Route(f"/static/{name}", asset_route(name), methods=["GET"]) for name in ASSETS),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        SourceFailed: source_failed,
    }
    return Starlette(routes=routes, exception_handlers=handlers)


def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()
