"""The verbs behind the ``ferryman`` CLI that work on a progress file alone, without a TARGET:
failed records, export and import, status, serve. Plain functions usable (and tested) from
Python, like the verbs over a target in :mod:`ferryman.commands`; each either does its whole job
or raises before changing anything (an :class:`~ferryman.errors.InputError` when nothing was
done).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .errors import InputError
from .progress.exchange import export_progress, import_progress
from .progress.failed import FailedRecords, FailedRow
from .progress.files import checked_location, existing, location_exists
from .progress.model import Action
from .server.address import DEFAULT_HOST, DEFAULT_PORT, check_port_free
from .types import RecordId

Echo = Callable[[str], None]


def quiet(_: str) -> None:
    """An :data:`Echo` that shows nothing."""


# --- failed records, export and import -----------------------------------------------------------


def failed_list(
    progress: str | os.PathLike[str], *, migration: str | None = None, grep: str | None = None
) -> list[FailedRow]:
    """:meth:`FailedRecords.list <ferryman.progress.failed.FailedRecords.list>` of the progress
    at ``progress`` (SQLite ledger or mjg JSON)."""
    return FailedRecords(progress).list(migration=migration, grep=grep)


def failed_set_action(
    progress: str | os.PathLike[str], action: Action | str, *, ids: Sequence[RecordId] = (),
    all: bool = False, grep: str | None = None, migration: str | None = None,
) -> dict[str, int]:
    """:meth:`FailedRecords.mark <ferryman.progress.failed.FailedRecords.mark>`: set the action
    (IGNORE or RETRY) of failed records; how many changed, per migration name."""
    return FailedRecords(progress).mark(action, ids=ids, all=all, grep=grep, migration=migration)


progress_export = export_progress
progress_import = import_progress


# --- status and serve -----------------------------------------------------------------------------


def status(*, progress: str | os.PathLike[str] | None = None, url: str | None = None,
           timeout: float = 5.0) -> dict[str, Any]:
    """``{"result": <GET /migrate/result>, "progress": <GET /migrate/progress>}`` from a running
    server at ``url``, or computed from the ledger at ``progress``."""
    if (progress is None) == (url is None):
        raise InputError("give either --progress PATH or --url URL")
    if url is not None:
        from .server.client import fetch_status

        return fetch_status(url, timeout)
    assert progress is not None
    from .server import LedgerStatusSource

    source = LedgerStatusSource(existing(progress))
    snapshot = source.snapshot()
    return {"result": snapshot.result(), "progress": snapshot.progress(), "verification": source.verification()}


def serve(progress: str | os.PathLike[str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          echo: Echo = quiet, *, allow_actions: bool = False, token: str | None = None) -> None:
    """Serve the status API and dashboard for the ledger at ``progress`` until Ctrl-C.

    The ledger may not exist yet (the status is ``pending`` until a run starts on it). With
    ``allow_actions``, the dashboard may mark failed records (``POST /migrate/actions``) with
    ``token`` (a random one when None; the start message gives it).
    """
    from .server import Actions, LedgerStatusSource, create_app, serve_forever

    path = checked_location(progress)
    actions = Actions(path, token) if allow_actions else None
    check_port_free(host, port)  # before the source opens the ledger
    app = create_app(LedgerStatusSource(path), actions)
    waiting = "" if location_exists(path) else (
        f"; there is no progress ledger at {path} yet: its status is 'pending' until a run starts on it "
        "(a mistyped path stays pending)")

    def ready(url: str) -> None:
        echo(f"serving the status of {path} at {url}/ (Ctrl-C to stop){waiting}")
        if actions is not None:
            echo(actions.invitation(url, show_token=token is None))

    serve_forever(app, host, port, on_ready=ready)

