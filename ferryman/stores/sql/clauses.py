"""WHERE clauses: dict filters, the keyset bounds ("after this key", "up to this key"), and id lookups."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import ge, gt, le, lt
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from sqlalchemy import ColumnElement, Table, and_, bindparam, true, tuple_
from sqlalchemy.sql import ClauseElement

from ...errors import StoreUnusableError
from ..common import IN_TYPES

if TYPE_CHECKING:
    from .dialect import SqlDialect


def filter_clause(table: Table, filter: Mapping[str, Any] | ClauseElement | None, label: str) -> ColumnElement[bool]:
    """A dict filter as SQL; a SQLAlchemy clause passes through as the native filter.

    Raises:
        StoreUnusableError: the filter names a column the table does not have; no filter a
            migration builds the same way can match, so it is the migration's mistake, not a
            record's (it ends the migration with one fatal error).
    """
    if filter is None:
        return true()
    if isinstance(filter, ClauseElement):
        return filter  # type: ignore[return-value]
    if not isinstance(filter, Mapping):
        raise TypeError(f"{label}: a filter is a dict or a SQLAlchemy clause, not {type(filter).__name__}")
    terms = []
    for field, value in filter.items():
        column = table.c.get(field)
        if column is None:
            raise StoreUnusableError(
                f"{label}: filter names unknown column {field!r}; the table has {', '.join(table.c.keys())}"
            )
        # An empty list becomes SQLAlchemy's "empty IN", which matches nothing on every database.
        terms.append(column.in_(list(value)) if isinstance(value, IN_TYPES) else column == value)
    return and_(true(), *terms)


Bound = Literal["after", "upto"]
"""An end of a key range: ``after`` leaves its key out (``key > after``), ``upto`` keeps it in
(``key <= upto``)."""

Comparison = Callable[[Any, Any], Any]


class KeyComparisons(NamedTuple):
    """How one bound compares a key, in tuple order."""

    first: Comparison
    """The first key column's range (``>=``, ``<=``), which keeps an index range on it."""
    earlier: Comparison
    """A column before the last one, its equal prefix given (strict: ``>``, ``<``)."""
    whole: Comparison
    """The whole key, or its last column (``>`` for after, ``<=`` for upto)."""


BOUND_COMPARISONS: dict[Bound, KeyComparisons] = {
    "after": KeyComparisons(ge, gt, gt),
    "upto": KeyComparisons(le, lt, le),
}


def bound_param(bound: Bound, i: int) -> str:
    """The name of the bound value of the ``i``-th key column in :func:`bound_clause`."""
    return f"{bound}_{i}"


def bound_clause(columns: Sequence[ColumnElement[Any]], dialect: SqlDialect, bound: Bound) -> ColumnElement[bool]:
    """``key > (:after_0, ...)`` or ``key <= (:upto_0, ...)`` in tuple order, in the form
    ``dialect`` answers from the key's index.

    The values are bound by name (:func:`bound_param`), so one statement serves every page. One
    column: ``a > x``, ``a <= y``; more: :meth:`~.dialect.SqlDialect.key_bound`.
    """
    values = [bindparam(bound_param(bound, i), type_=c.type) for i, c in enumerate(columns)]
    if len(columns) == 1:
        single: ColumnElement[bool] = BOUND_COMPARISONS[bound].whole(columns[0], values[0])
        return single
    return dialect.key_bound(columns, values, bound)


def ids_clause(columns: Sequence[ColumnElement[Any]], ids: Sequence[tuple[Any, ...]]) -> ColumnElement[bool]:
    """Key in ``ids`` (each id a tuple of key values); a tuple IN for a composite key."""
    if len(columns) == 1:
        return columns[0].in_([i[0] for i in ids])
    return tuple_(*columns).in_(ids)
