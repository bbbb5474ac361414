"""The status server: ``GET /migrate/result`` (the original API), progress, metrics, a dashboard.

``create_app(source)`` builds the Starlette app over a :class:`StatusSource`:
:class:`LedgerStatusSource` for ``ferryman serve --progress PATH`` (a process of its own that
watches a ledger across runs) or :class:`LiveStatusSource` for ``ferryman run --serve`` (an
observer of the run in this process). :class:`BackgroundServer` runs it in a thread beside a
run (:class:`~.live.LiveServer`: the server of ``run --serve``, which keeps serving the final
status a while); :func:`serve_forever` runs it in the foreground; :func:`wait_for_stop` waits
for Ctrl-C. Loopback (127.0.0.1) by default; anything else is logged as a warning.
:mod:`.address` parses ``HOST:PORT``; :mod:`.client` asks a running server
(``ferryman status --url``). :class:`Actions` lets a server change failed records from the
dashboard (``ferryman serve --allow-actions``); :mod:`.history` keeps the throughput history and
:mod:`.failed` the search of failed records.
"""

from .actions import Actions
from .app import create_app
from .background import BackgroundServer, serve_forever, wait_for_stop
from .sources import LedgerStatusSource, LiveStatusSource, StatusSource
from .status import Status, StatusSnapshot

__all__ = [
    "Actions",
    "BackgroundServer",
    "LedgerStatusSource",
    "LiveStatusSource",
    "Status",
    "StatusSnapshot",
    "StatusSource",
    "create_app",
    "serve_forever",
    "wait_for_stop",
]
