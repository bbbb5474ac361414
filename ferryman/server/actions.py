"""``POST /migrate/actions``: what a person may change from the dashboard, when the server allows it.

A server is read-only unless it was made with :class:`Actions` (``ferryman serve
--allow-actions``). Even then every request is checked on the server:

- the token: the ``X-Ferryman-Token`` header must hold the server's token (compared in constant
  time). It is given (``--token``) or drawn at random and printed when the server starts; the
  page keeps it in the tab's session storage, never in a cookie, so a browser never sends it by
  itself;
- the request: a JSON body (``Content-Type: application/json``). A page of another site cannot
  send a custom header nor a JSON body without the browser asking the server first (a CORS
  preflight), which this server never grants: no cross-site request can act;
- the progress: a change is refused (409) while a live run holds the progress, by the same
  check as ``ferryman failed ignore|retry``, whose library call every action uses.

Every action, done or refused, is logged. Actions are looked up by name (:meth:`Actions.add`),
so a new one is a function, not a new route.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import FerrymanError, InputError, LedgerBusyError, one_line
from ..progress.failed import FailedRecords
from ..progress.model import Action, check_id
from ..types import RecordId

log = logging.getLogger("ferryman")

TOKEN_HEADER = "X-Ferryman-Token"
MIN_TOKEN = 16
"""Fewest characters a token given to the server may have."""
MAX_BODY = 256 * 1024
"""Largest request body an action may send, in bytes."""
MAX_IDS = 1000
"""Most records one action may mark."""
NO_STORE = {"Cache-Control": "no-store"}

Handler = Callable[[Mapping[str, Any]], dict[str, Any]]
"""An action: its parameters (the request body) -> what it did (the response body)."""


class Actions:
    """The actions a server allows on the progress at ``progress``, and the token they need.

    Raises:
        InputError: a given token shorter than MIN_TOKEN characters.
    """

    def __init__(self, progress: str | os.PathLike[str], token: str | None = None) -> None:
        if token is not None and len(token) < MIN_TOKEN:
            raise InputError(f"--token: at least {MIN_TOKEN} characters, not {len(token)}")
        self.progress = os.fspath(progress)
        self.token = token or secrets.token_urlsafe(24)
        self._handlers: dict[str, Handler] = {}
        self.add("ignore", lambda params: self._mark(Action.IGNORE, params))
        self.add("retry", lambda params: self._mark(Action.RETRY, params))

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)

    def add(self, name: str, handler: Handler) -> None:
        """Allow the action ``name``: ``{"action": name, ...}`` calls ``handler`` with the
        body; InputError in it answers 400, LedgerBusyError 409."""
        self._handlers[name] = handler

    def invitation(self, url: str, *, show_token: bool) -> str:
        """How to act on the server at ``url``; a token the user gave is not shown again."""
        shown = self.token if show_token else "TOKEN"
        return (f"actions allowed: open {url}/#actions={shown} (the page keeps the token for its tab), "
                f"or send the header X-Ferryman-Token: {shown}")

    def allows(self, token: str | None) -> bool:
        """Whether ``token`` is the server's (in constant time)."""
        return token is not None and hmac.compare_digest(token.encode(), self.token.encode())

    def run(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Do the action the body names (blocking)."""
        name = params.get("action")
        handler = self._handlers.get(name) if isinstance(name, str) else None
        if handler is None:
            raise InputError(f"action: {name!r} is not one of {', '.join(self.names)}")
        return {"action": name, **handler(params)}

    def _mark(self, action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
        """``ferryman failed ignore|retry --migration M IDS`` on the server's progress."""
        _only(params, {"action", "migration", "ids"})
        migration = params.get("migration")
        if migration is not None and not isinstance(migration, str):
            raise InputError("migration: a migration's name, as a string")
        ids = params.get("ids")
        if not isinstance(ids, list) or not ids:
            raise InputError("ids: a non-empty list of the record ids to mark")
        if len(ids) > MAX_IDS:
            raise InputError(f"ids: at most {MAX_IDS} per action, not {len(ids)}")
        changed = FailedRecords(self.progress).mark(action, ids=[_record_id(i) for i in ids],
                                                    migration=migration)
        return {"changed": changed}


def _only(params: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r}: use {', '.join(sorted(allowed))}")


def _record_id(value: Any) -> RecordId:
    """A record id as JSON carries it: a number, a string, or an array for a composite id."""
    try:
        return check_id(tuple(value) if isinstance(value, list) else value)
    except TypeError:
        raise InputError(f"ids: {json.dumps(value)[:80]} is not a record id (a whole number, "
                         "a string, or an array of those)") from None


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


def actions_routes(actions: Actions | None) -> list[Route]:
    """``GET /migrate/actions`` (whether actions are on, and which) and ``POST /migrate/actions``."""

    async def describe(request: Request) -> Response:
        return JSONResponse({"enabled": actions is not None, "actions": actions.names if actions else [],
                             "token_header": TOKEN_HEADER}, headers=NO_STORE)

    async def act(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        if actions is None:
            return _error(403, "this server is read-only: start it with `ferryman serve --allow-actions` "
                               "to act from the dashboard")
        if not actions.allows(request.headers.get(TOKEN_HEADER)):
            log.warning("dashboard action refused from %s: %s", client,
                        "wrong token" if TOKEN_HEADER in request.headers else "no token")
            return _error(401, f"the {TOKEN_HEADER} header must hold the token the server printed "
                               "when it started")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return _error(415, "send the action as JSON (Content-Type: application/json)")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _error(413, f"the request body is over {MAX_BODY} bytes")
        try:
            params = json.loads(body)
        except (ValueError, RecursionError):
            return _error(400, "the body is not JSON")
        if not isinstance(params, dict):
            return _error(400, 'the body must be a JSON object: {"action": NAME, ...}')
        try:
            done = await run_in_threadpool(actions.run, params)
        except InputError as exc:
            log.warning("dashboard action %r from %s refused: %s", params.get("action"), client, exc)
            return _error(400, str(exc))
        except LedgerBusyError as exc:
            log.warning("dashboard action %r from %s refused: %s", params.get("action"), client, exc)
            return _error(409, str(exc))
        except (FerrymanError, OSError) as exc:
            log.error("dashboard action %r from %s failed: %s", params.get("action"), client, one_line(exc))
            return _error(500, f"the action failed: {one_line(exc)}")
        log.warning("dashboard action from %s: %s -> %s", client,  # shown by default: an audit line
                 json.dumps(params, ensure_ascii=False)[:500], json.dumps(done, ensure_ascii=False))
        return JSONResponse(done, headers=NO_STORE)

    async def route(request: Request) -> Response:
        return await (act(request) if request.method == "POST" else describe(request))

    return [Route("/migrate/actions", route, methods=["GET", "POST"])]
