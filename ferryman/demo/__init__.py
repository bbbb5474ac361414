"""``ferryman demo``: a real migration on sample SQLite data, with the live dashboard.

:func:`run_demo` makes (or reuses) the sample databases in a folder, writes a TARGET file
there, runs the migrations of :mod:`ferryman.demo.migrations` with an SQLite progress ledger
while serving the status API for that ledger, then keeps serving until Ctrl-C so the next
runs (``ferryman run DIR/migrations.py``) show up on the same dashboard.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Sequence

from .. import commands
from ..console import command_name
from ..events import RunObserver
from ..server.address import DEFAULT_HOST, DEFAULT_PORT, check_port_free
from .data import DemoData, ensure_data

__all__ = ["DemoData", "ensure_data", "next_steps", "run_demo"]


def run_demo(
    rows: int = 300_000,
    directory: str = "ferryman-demo",
    port: int | None = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    echo: Callable[[str], None] = print,
    observers: Sequence[RunObserver] | None = None,
) -> int:
    """Run the demo; returns the exit code (0, or 130 when interrupted).

    ``port=None`` runs without the dashboard and returns when the run ends. The planted
    failures are part of the demo, so they do not make the exit code non-zero.
    """
    if port is not None:
        check_port_free(host, port)
    started = time.monotonic()
    data = ensure_data(directory, rows)
    if data.created:
        echo(f"created sample data in {directory}: {data.customers:,} customers, {data.products:,} "
             f"products, {data.orders:,} orders ({time.monotonic() - started:.1f}s)")
    else:
        echo(f"using the sample data in {directory} ({data.orders:,} orders); delete the folder to start afresh")
    if observers is None:
        from ..console import ConsoleProgress

        observers = [ConsoleProgress()]
    server = None
    if port is not None:
        from ..server import (
            BackgroundServer,
            LedgerStatusSource,
            create_app,
            wait_for_stop,
        )

        server = BackgroundServer(create_app(LedgerStatusSource(data.progress)), host, port)
        server.start()
        echo(f"dashboard: {server.url}")
    try:
        lines, _problems = commands.plan(data.target)  # the demo's stores all have keys: no problems
        for line in lines:
            echo(f"plan: {line}")
        result = commands.run(data.target, progress=data.progress, observers=observers, echo=echo)
        for observer in observers:
            close = getattr(observer, "close", None)
            if close is not None:
                close()
        echo(result.summary())
        if result.interrupted:
            return 130
        echo(next_steps(data, None if server is None else server.url))
        if server is not None:
            wait_for_stop()
        return 0
    finally:
        if server is not None:
            server.stop()


def next_steps(data: DemoData, url: str | None) -> str:
    """What to try after the demo's run, as shell commands."""
    progress = shlex.quote(data.progress)
    target = shlex.quote(data.target)
    exported = shlex.quote(os.path.join(data.directory, "progress.json"))
    ferryman = command_name()
    bad_order = data.negative_qty_orders[0]
    lines = [""]
    if url:
        lines += [f"Dashboard: {url}  (open it in a browser; Ctrl-C here stops serving)", "",
                  "Try next, in another terminal:"]
    else:
        lines.append("Try next:")
    lines += [
        f"  {ferryman} status --progress {progress}",
        f"  {ferryman} failed list --progress {progress}",
        f"  {ferryman} failed ignore --progress {progress} --migration order_lines {bad_order}",
        f"  {ferryman} failed ignore --progress {progress} --grep 'UNIQUE constraint'",
        f"  {ferryman} run {target} --progress {progress}    # resumes: only what is left",
        f"  {ferryman} plan {target}",
        f"  {ferryman} progress export --progress {progress} --out {exported}",
    ]
    return "\n".join(lines)
