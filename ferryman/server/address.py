"""Where the status server listens: ``HOST:PORT`` as typed, and whether it can listen there now."""

from __future__ import annotations

import socket

from ..errors import InputError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
"""Where ``ferryman serve`` and ``ferryman demo`` serve the status API and dashboard."""


def parse_host_port(text: str, default_host: str = DEFAULT_HOST) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT``, ``PORT`` or ``[::1]:PORT`` -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise InputError(f"bad address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8765") from None
    if not 0 <= port <= 65535:
        raise InputError(f"bad port {port} in {text!r}: expected 0-65535")
    return host, port


def check_port_free(host: str, port: int) -> None:
    """Raise a one-line :class:`InputError` when ``host:port`` cannot be bound right now, so
    that a run is refused before it starts rather than running without its server."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself does
        try:
            sock.bind(address)
        except OSError as exc:
            raise InputError(
                f"cannot serve on {host}:{port}: {exc.strerror or exc} (is another server using it? "
                "pick another port)"
            ) from exc
