"""The workloads by key: W1 copy, W2 match and reduce, W3 failures, W4 lookup join.

Importing this package never imports ferryman or a baseline library; the run functions that do
are named by string in each workload's variants and imported only in the child that runs them.
"""

from __future__ import annotations

from .base import Check, Job, Output, Variant, Workload
from .copy import CopyWorkload
from .failures import FailuresWorkload
from .lookup_join import LookupJoinWorkload
from .match_reduce import MatchReduceWorkload

WORKLOADS: dict[str, Workload] = {
    w.key: w for w in (CopyWorkload(), MatchReduceWorkload(), FailuresWorkload(), LookupJoinWorkload())
}


def workload(key: str) -> Workload:
    try:
        return WORKLOADS[key]
    except KeyError:
        raise KeyError(f"no workload {key!r}; there are {', '.join(WORKLOADS)}") from None


__all__ = ["WORKLOADS", "Check", "Job", "Output", "Variant", "Workload", "workload"]
