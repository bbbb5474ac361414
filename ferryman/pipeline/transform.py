"""transform(aggregates, record) -> outputs, with the migration's output cardinality."""

from __future__ import annotations

from typing import Any

from ..declare import MigrationSpec
from ..errors import CardinalityError
from .work import Phase, Work


def transform(spec: MigrationSpec, instance: Any, works: list[Work]) -> None:
    """Fill ``work.outputs`` for every live record; None counts as no outputs."""
    hook = instance.transform
    low, high = spec.cardinality.bounds
    for w in works:
        if w.error is not None or w.saved:
            continue
        try:
            outputs = hook(w.aggregates, w.record)
        except Exception as exc:
            w.fail(Phase.TRANSFORM, exc, spec.save_retry)
            continue
        if type(outputs) is not list:
            if outputs is None:
                outputs = []
            elif isinstance(outputs, dict) or not hasattr(outputs, "__iter__"):
                w.fail(Phase.TRANSFORM, TypeError(
                    f"migration {spec.name}: transform must return a list of records, "
                    f"got {type(outputs).__name__}"), None)
                continue
            else:
                outputs = list(outputs)
        n = len(outputs)
        if n < low or n > high:
            w.fail(Phase.TRANSFORM, CardinalityError(
                f"migration {spec.name}: transform must return {spec.cardinality.value} record(s), "
                f"returned {n}"), None)
            continue
        w.outputs = outputs
