"""The TARGET ``ferryman run`` migrates in the serve benchmark: W1's copy of ``stations``.

The files come from the environment (``FERRYMAN_BENCH_SOURCE``, ``FERRYMAN_BENCH_DEST``), set by
:mod:`bench.serve_overhead` for each measurement.
"""

from __future__ import annotations

import os

from ferryman import SqlStore

from ..workloads.ferryman_runs import CopyStations

stores = [
    SqlStore("stations", f"sqlite:///{os.environ['FERRYMAN_BENCH_SOURCE']}", "stations"),
    SqlStore("stations_copy", f"sqlite:///{os.environ['FERRYMAN_BENCH_DEST']}", "stations"),
]
migrations = [CopyStations]
