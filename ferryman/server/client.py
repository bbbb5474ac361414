"""Asking a running status server how the migration stands (``ferryman status --url``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..errors import FerrymanError, InputError


def fetch_status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """``{"result": <GET /migrate/result>, "progress": <GET /migrate/progress>,
    "verification": <GET /migrate/verify, None when none ran>}`` of the server at ``url``
    (``http://`` is assumed when it names no scheme).

    Raises:
        InputError: the URL is malformed, or nothing answers there.
        FerrymanError: the server answered with an HTTP error or not with JSON.
    """
    base = _base(url)
    status = {"result": _get_json(f"{base}/migrate/result", timeout),
              "progress": _get_json(f"{base}/migrate/progress", timeout)}
    try:
        verification = _get_json(f"{base}/migrate/verify", timeout)
    except FerrymanError:  # a server of an older ferryman has no such route
        verification = None
    status["verification"] = verification if isinstance(verification, dict) and verification.get("ok") is not None \
        else None
    return status


def _base(url: str) -> str:
    base = url.strip().rstrip("/")
    if "://" not in base:
        base = "http://" + base
    try:
        parts = urllib.parse.urlsplit(base)
        parts.port  # noqa: B018  # raises for a port that is not a number
    except ValueError as exc:
        raise InputError(f"bad URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"bad URL {url!r}: expected http://HOST:PORT, e.g. http://127.0.0.1:8765")
    return base


def _get_json(url: str, timeout: float) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # http(s) only, checked above
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise FerrymanError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"cannot reach {url}: {reason}") from exc
    except ValueError as exc:
        raise FerrymanError(f"{url} did not answer JSON: {exc}") from exc
