"""How a run with workers starts them: local processes by default, or anything that can run
``ferryman worker`` somewhere (a Ray cluster, see :mod:`ferryman.ray`).

A worker is started with the TARGET, the ledger's path and the migration's key, and imports the
TARGET itself: stores and connections are never shared nor pickled. A launcher only needs to
tell when a worker ended (and how) and to ask one to stop at a batch boundary. Whatever runs a
worker twice (a task retried after its node died) is safe: a worker claims a partition by taking
its lease, and a batch of a worker whose lease was taken is fenced off in the destination.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Protocol

INTERRUPTED = 130
"""A worker's exit code once stopped by a signal (the code of ``ferryman worker`` interrupted)."""


def how_it_ended(code: int) -> str:
    """A worker's end as a message says it: ``ended with exit code 1``, ``was killed by SIGKILL``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"ended with exit code {code}"


class WorkerHandle(Protocol):
    """A started worker."""

    def poll(self) -> int | None:
        """None while it runs; then its exit code (0: no partition left for it)."""

    def interrupt(self) -> None:
        """Ask it to stop at the next batch boundary, saving its progress."""


class WorkerLauncher(Protocol):
    """Starts workers for :class:`~ferryman.partitioned.PartitionedRunner`."""

    starts_workers: bool
    """False: workers are started by something else (``ferryman worker``), and only waited for."""

    def start(self, target: str, progress: str, key: str) -> WorkerHandle:
        """Start one worker of migration ``key`` of ``target``, whose ledger is at ``progress``."""


def worker_command(target: str, progress: str, key: str) -> Sequence[str]:
    """The command line of a worker: a new interpreter importing the target itself."""
    return [sys.executable, "-m", "ferryman", "worker", target, "--progress", progress, "--migration", key]


class LocalProcess:
    """A worker in a process of this host (never forked: a new interpreter), in a session of
    its own: a Ctrl-C at the terminal reaches the coordinator alone, which passes it on once
    (the workers would otherwise get it twice, and take the second as "stop at once")."""

    def __init__(self, command: Sequence[str]) -> None:
        self.process = subprocess.Popen(command, start_new_session=True)

    def poll(self) -> int | None:
        return self.process.poll()

    def interrupt(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)


class ProcessLauncher:
    """Workers as processes of this host: what ``ferryman run --workers N`` uses."""

    starts_workers = True

    def start(self, target: str, progress: str, key: str) -> WorkerHandle:
        return LocalProcess(worker_command(target, progress, key))


class ExternalWorkers:
    """Workers started by something else: ``ferryman worker`` processes on any host that
    reaches the ledger (a Kubernetes Job, a batch scheduler, a shell). The run splits the
    migration, waits for them to run its partitions and folds them, as with workers it starts."""

    starts_workers = False

    def start(self, target: str, progress: str, key: str) -> WorkerHandle:
        raise AssertionError("external workers are started by something else")
