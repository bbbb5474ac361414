"""The query that cuts a table's keys into ranges of about equal size (``SqlStore.split``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select


def split_query(columns: Sequence[ColumnElement[Any]], parts: int) -> Select[Any]:
    """The keys (``columns``) that end each of ``parts`` ranges of a table but the last, in key
    order: the rows :func:`~ferryman.stores.base.split_positions` names, so that ranges differ
    by one row at most.

    One pass over the key's index: each row is numbered in key order next to the count of all
    rows (a window over the whole table, so it is not counted by a second scan). Row ``n`` of
    ``total`` ends a range when a multiple of ``total`` lies in ``((n - 1) * parts, n * parts]``,
    i.e. ``n * parts % total < parts``: integer arithmetic on every database, no division whose
    rounding differs among them.
    """
    position = func.row_number().over(order_by=list(columns)).label("ferryman_position")
    total = func.count().over().label("ferryman_total")
    numbered = select(*columns, position, total).subquery("numbered")
    n, count = numbered.c.ferryman_position, numbered.c.ferryman_total
    keys = [numbered.c[column.name] for column in columns]
    ends = and_(n < count, (n * parts) % count < parts)
    return select(*keys).where(ends).order_by(*keys)
