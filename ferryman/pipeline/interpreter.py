"""CPython's garbage collector tuned for the length of a run, restored afterwards.

The collector starts a collection after 700 more container objects were made than freed. A run
keeps a few pages of records in flight, so that count swings by thousands on every page, and
collections (which walk every live young object, and every so often all the process's objects)
cost a quarter of the CPU time of a plain copy. During a run a collection starts only after
:data:`GEN0_THRESHOLD` net new objects (real growth: cyclic garbage is still collected, memory
stays bounded), and the objects the process held before the run (SQLAlchemy's metadata, the
user's own data) are set aside with :func:`gc.freeze` so that full collections walk only the
run's own.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

GEN0_THRESHOLD = 100_000
"""Net new container objects that start a collection during a run (CPython's default: 700)."""


@contextmanager
def tuned_for_pipeline() -> Iterator[None]:
    """Apply the run's settings inside the block; the process's own come back after it."""
    thresholds = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0  # else the application manages frozen objects itself
    if thresholds[0]:  # 0: the application turned automatic collection off; leave it so
        gc.set_threshold(max(thresholds[0], GEN0_THRESHOLD), *thresholds[1:])
    if freeze:
        gc.freeze()
    try:
        yield
    finally:
        if freeze:
            gc.unfreeze()
        gc.set_threshold(*thresholds)
