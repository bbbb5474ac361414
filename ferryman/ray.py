"""Workers of a run with ``--workers N`` as Ray tasks: ``ferryman run TARGET --workers N --engine ray``.

Each worker is one Ray task that runs :func:`ferryman.commands.work` in a Ray worker process,
which imports the TARGET itself, exactly as ``python -m ferryman worker`` does in a process of
this host. Nothing is shipped to the task but three strings: the TARGET (a file as an absolute
path; a module name is found through the coordinator's directory, which Ray puts on the tasks'
``sys.path``), the ledger's absolute path and the migration's key. No ``runtime_env`` working
directory is uploaded: the tasks must open the very SQLite ledger the coordinator opened, so
every node that runs them must see the coordinator's files at the same paths (one host, or a
shared file system whose locks SQLite can rely on), and the TARGET is found there too.

Safe to retry: a task is re-run by Ray once when its worker process or node dies
(:data:`TASK_RETRIES`); the coordinator replaces a worker that failed past that. Either way a
worker claims a partition by its lease and the batches of a worker whose lease was taken over
are fenced off in the destination, so a task run twice writes nothing twice.

Importing this module does not import Ray: :class:`RayLauncher` does, and says in one line
that Ray is missing (``pip install 'ferryman[ray]'``).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from . import commands
from .errors import FerrymanError, InputError, one_line
from .launchers import INTERRUPTED
from .progress.storage import is_postgres_location
from .target import is_file_target

if TYPE_CHECKING:
    from ray import ObjectRef

log = logging.getLogger("ferryman")

TASK_RETRIES = 1
"""Times Ray runs a worker's task again when its process or node died. Once covers a node lost
at once, without the coordinator noticing; a worker that fails again is the coordinator's to
count and replace (it gives up on workers failing over and over, which Ray would not)."""


def run_worker(target: str, progress: str, key: str) -> int:
    """The body of a worker's Ray task: :func:`ferryman.commands.work`, its exit code returned.

    Runs in the Ray worker's main thread, so ``ray.cancel`` (which interrupts that thread as
    SIGINT would) reaches the worker's own signal handling: it stops at a batch boundary."""
    from . import cli  # which imports this module

    cli.setup_logging(verbose=False)
    try:
        return commands.work(target, progress=progress, migration=key).exit_code
    except FerrymanError as exc:
        log.error("%s", one_line(exc))
        return exc.exit_code


def import_ray() -> None:
    """Import Ray; an :class:`InputError` in one line when it is not installed."""
    try:
        import ray  # noqa: F401  # here, not on top: importing ferryman never imports Ray
    except ImportError as exc:
        raise InputError(f"--engine ray needs Ray, which is not installed here ({one_line(exc)}): "
                         "pip install 'ferryman[ray]'") from exc


def _local_only(address: str | None) -> dict[str, Any]:
    """``ray.init``'s settings for a Ray started for this run alone (none to join a cluster):
    no dashboard, which would end with the run and takes a core's share while it lasts."""
    if address is None and not os.environ.get("RAY_ADDRESS"):
        return {"include_dashboard": False}
    return {}


class RayTask:
    """A worker running as a Ray task."""

    def __init__(self, ref: ObjectRef[int]) -> None:
        self.ref = ref
        self.code: int | None = None

    def poll(self) -> int | None:
        """The task's exit code once it ended; a task that raised, was cancelled before it
        could stop by itself or lost its node (after Ray's retry) counts as a failed worker."""
        import ray

        if self.code is None:
            ready, _ = ray.wait([self.ref], timeout=0)
            if ready:
                self.code = self._outcome()
        return self.code

    def _outcome(self) -> int:
        import ray

        try:
            return ray.get(self.ref)
        except ray.exceptions.TaskCancelledError:
            return INTERRUPTED
        except ray.exceptions.RayTaskError as exc:  # the worker raised: its error, not Ray's wrapping
            log.warning("a worker's Ray task raised %s", one_line(exc.cause, typed=True))
            return 1
        except ray.exceptions.RayError as exc:  # its process or node died, past Ray's retry
            log.warning("a worker's Ray task failed: %s", one_line(exc))
            return 1

    def interrupt(self) -> None:
        """``ray.cancel``: a task not started yet never starts; a running one is interrupted as
        by SIGINT, which its worker takes as a stop at the next batch boundary (a second one
        would stop it at once, its ledger's commit done first). Unlike a real signal, it is
        seen once the worker runs Python code again, not in the middle of a blocking call."""
        import ray

        if self.code is None:
            ray.cancel(self.ref)


class RayLauncher:
    """Workers as Ray tasks, on the Ray cluster at ``address`` (``"auto"``: the one this node
    belongs to; None: the one ``RAY_ADDRESS`` names, else a local instance started for this
    process, which Ray ends when the process exits). A Ray already initialized in this process
    is used as it is. Ray is connected to at once: a cluster that cannot be reached is an
    :class:`InputError` before anything ran (once Ray gives up: it keeps trying an address that
    does not answer for minutes, saying so on stderr). Never shuts a cluster down."""

    starts_workers = True

    def __init__(self, address: str | None = None) -> None:
        import_ray()
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=address, logging_level=logging.WARNING, **_local_only(address))
            except Exception as exc:  # whatever Ray raises, nothing was done yet
                raise InputError(f"cannot connect to Ray at {address or 'a local instance'}: "
                                 f"{one_line(exc)}") from exc
        self.task = ray.remote(max_retries=TASK_RETRIES, max_calls=1)(run_worker)

    def start(self, target: str, progress: str, key: str) -> RayTask:
        """Submit one worker's task (``max_calls=1``: a fresh Ray worker process each, as a
        worker process of this host is a fresh interpreter)."""
        path = os.path.abspath(target) if is_file_target(target) else target
        ledger = progress if is_postgres_location(progress) else os.path.abspath(progress)
        return RayTask(self.task.remote(path, ledger, key))
