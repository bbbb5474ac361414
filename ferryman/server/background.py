"""Serving the app with uvicorn: in a daemon thread beside a run, or in the foreground.

Both bind the listening socket themselves before uvicorn starts, so a port in use fails at
once with a clear :class:`~ferryman.errors.FerrymanError` instead of a hang or a log line,
and port 0 gets a real port that :attr:`BackgroundServer.url` shows. Binding beyond loopback
logs a warning: the status names records and shows their failure causes, and the server has no
authentication. Connections are bounded in time (:mod:`ferryman.server.protocol`): a request
head must arrive within HEAD_TIMEOUT seconds, an idle kept-alive connection is closed after
KEEP_ALIVE seconds.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from ..errors import FerrymanError
from .protocol import DeadlineH11Protocol

log = logging.getLogger("ferryman")

KEEP_ALIVE = 5
"""Seconds an idle kept-alive connection stays open after a response."""
START_TIMEOUT = 10.0
"""Seconds :meth:`BackgroundServer.start` waits for uvicorn to accept connections."""
STOP_TIMEOUT = 5
"""Seconds open connections get to finish when the server stops."""


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``; FerrymanError when the port is in use."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise FerrymanError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # like uvicorn: lets a restarted server reuse a port in TIME_WAIT; a port another socket
        # listens on still fails with EADDRINUSE on Linux and macOS
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise FerrymanError(f"port {port} on {host} is in use") from exc
        raise FerrymanError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    if not _is_loopback(str(address[0])):
        log.warning("the status server listens on %s, beyond loopback: anyone who can reach it "
                    "reads the migration status, record ids and failure causes (no authentication)",
                    url_of(sock).removeprefix("http://"))
    return sock


def _is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (also written as ::ffff:127.x.y.z); False for 0.0.0.0, ::."""
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app, log_config=None, access_log=False, log_level="warning", lifespan="on", ws="none",
        http=DeadlineH11Protocol, timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=STOP_TIMEOUT,
    )


class BackgroundServer:
    """uvicorn in a daemon thread, for ``ferryman run --serve`` and tests."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        """Start serving; returns once connections are accepted (FerrymanError if it cannot)."""
        sock = bind(self.host, self.port)
        self.url = url_of(sock)
        self._server = server = uvicorn.Server(_config(self.app))
        self._thread = threading.Thread(target=self._serve, args=(server, sock),
                                        name="ferryman-status-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                reason = f": {self._error}" if self._error else ""
                raise FerrymanError(f"the status server on {self.url} did not start{reason}")
            time.sleep(0.01)
        log.info("status server on %s", self.url)

    def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported by start(); a daemon thread must not spew
            self._error = exc
        finally:
            sock.close()

    def stop(self) -> None:
        """Stop serving and wait for the thread (open connections get STOP_TIMEOUT seconds)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT + 2)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(2)
        self._thread = None

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Terminated(Exception):
    """SIGTERM arrived: stop serving and return, as for Ctrl-C."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def serve_forever(app: Any, host: str, port: int, *,
                  on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` until Ctrl-C or SIGTERM, then return (blocking).

    ``on_ready(url)`` is called once the server accepts connections (useful with port 0).
    Raises FerrymanError at once when the port is in use.
    """
    sock = bind(host, port)
    url = url_of(sock)
    server = uvicorn.Server(_config(app))
    if on_ready is not None:
        _call_when_started(server, lambda: on_ready(url))
    log.info("status server on %s", url)
    in_main = threading.current_thread() is threading.main_thread()
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler
    # that was there before: KeyboardInterrupt for SIGINT, and ours for SIGTERM
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main else None
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        sock.close()


def wait_for_stop(seconds: float | None = None) -> bool:
    """Block until Ctrl-C or SIGTERM, or ``seconds`` (None: no limit); True when a signal came.

    Outside the main thread, where no signal handler can be set, it only waits.
    """
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        if seconds is not None:
            return stop.wait(seconds)
        while not stop.wait(3600):
            pass
        return True
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _call_when_started(server: uvicorn.Server, callback: Callable[[], None]) -> None:
    startup = server.startup

    async def startup_then_call(sockets: list[socket.socket] | None = None) -> None:
        await startup(sockets=sockets)
        if server.started:
            callback()

    server.startup = startup_then_call  # type: ignore[method-assign]
