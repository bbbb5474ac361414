"""transform(aggregates, record) -> outputs, with the migration's output cardinality."""

from __future__ import annotations

from typing import Any

from ..declare import Cardinality, MigrationSpec
from ..errors import CardinalityError
from .work import Phase, Work, live


def transform(spec: MigrationSpec, instance: Any, works: list[Work]) -> None:
    """Fill ``work.outputs`` for every live record; None counts as no outputs."""
    hook = instance.transform
    cardinality = spec.cardinality
    for w in live(works):
        try:
            outputs = hook(w.aggregates, w.record)
        except Exception as exc:
            w.fail(Phase.TRANSFORM, exc, spec.save_retry)
            continue
        if outputs is None:
            outputs = []
        elif not isinstance(outputs, list):
            if isinstance(outputs, dict) or not hasattr(outputs, "__iter__"):
                w.fail(Phase.TRANSFORM, TypeError(
                    f"migration {spec.name}: transform must return a list of records, "
                    f"got {type(outputs).__name__}"), None)
                continue
            outputs = list(outputs)
        if cardinality is not Cardinality.ZERO_OR_MORE and not cardinality.allows(len(outputs)):
            w.fail(Phase.TRANSFORM, CardinalityError(
                f"migration {spec.name}: transform must return {cardinality.value} record(s), "
                f"returned {len(outputs)}"), None)
            continue
        w.outputs = outputs
