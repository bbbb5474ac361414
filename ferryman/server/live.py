"""The status server beside the run in this process (``ferryman run --serve HOST:PORT``).

:class:`LiveServer` serves a :class:`~.sources.LiveStatusSource`, an observer of the run, in a
thread; once the run is over it can keep serving the final status for a while
(:meth:`LiveServer.linger`), so that a poller sees how the run ended.
"""

from __future__ import annotations

from collections.abc import Callable

from ..progress.ledger import Ledger
from .app import create_app
from .background import BackgroundServer, wait_for_stop
from .sources import LiveStatusSource


class LiveServer:
    """The status API and dashboard of the run that writes to ``ledger``, on ``host:port``.

    Add :attr:`source` to the service's observers before the run starts.
    """

    def __init__(self, ledger: Ledger, host: str, port: int) -> None:
        self.source = LiveStatusSource(ledger)
        self._server = BackgroundServer(create_app(self.source), host, port)

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> None:
        """Serve from now on (FerrymanError when it cannot listen)."""
        self._server.start()

    def linger(self, seconds: float, echo: Callable[[str], None]) -> None:
        """Keep serving the final status ``seconds`` more; Ctrl-C or SIGTERM ends it sooner."""
        echo(f"finished; serving the final status at {self.url}/ for {seconds:g} s more, Ctrl-C to stop")
        wait_for_stop(seconds)

    def stop(self) -> None:
        self._server.stop()
