"""One ``save_all`` as the dialects' ``insert`` sees it: rows of one table that share their set of fields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, Protocol

from sqlalchemy import Table

from ...types import Record
from ..common import OnConflict


@dataclass(frozen=True)
class InsertBatch:
    """Rows for one table, all with the same fields (so one statement fits them all).

    ``fast`` allows a bulk path (PostgreSQL's COPY); it is False when the store sends the batch
    again after the bulk path refused it.
    """

    table: Table
    rows: list[Record]
    key: tuple[str, ...]
    on_conflict: OnConflict
    fast: bool = True

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0])

    @property
    def updated_columns(self) -> list[str]:
        return [c for c in self.columns if c not in self.key]


class WriteInFlight(Protocol):
    """A batch sent by a bulk path that commits while the caller goes on."""

    def finish(self) -> None:
        """Read the batch's outcome (once); raises what saving it raised, or
        :class:`FastPathRefused`."""


class FastPathRefused(Exception):
    """A bulk path could not take this batch for a reason plain INSERTs handle (a value's format).

    The store rolls the transaction back and saves the whole batch again: with the bulk path
    once more when ``retry_fast`` (it has switched to a plainer form, e.g. binary to text COPY),
    else with ``fast=False``. So the bulk path never changes what is accepted, only how fast.
    ``__cause__`` is the reason.
    """

    def __init__(self, message: str, *, retry_fast: bool = False) -> None:
        super().__init__(message)
        self.retry_fast = retry_fast


def on_conflict_statement(make_insert: Callable[[Table], Any], batch: InsertBatch) -> Any:
    """SQLite's and PostgreSQL's shared ``INSERT ... ON CONFLICT (key) DO ...``."""
    statement = make_insert(batch.table)
    if batch.on_conflict == "error":
        return statement
    updates = {c: statement.excluded[c] for c in batch.updated_columns}
    if batch.on_conflict == "ignore" or not updates:
        return statement.on_conflict_do_nothing(index_elements=list(batch.key))
    return statement.on_conflict_do_update(index_elements=list(batch.key), set_=updates)


DRIVER_NATIVE = frozenset({int, str, float, bytes, bool, type(None)})
"""Value types that SQLite's and MySQL's drivers take as they are."""


def value_tuples(batch: InsertBatch) -> list[tuple[Any, ...]]:
    """The rows as tuples in ``batch.columns`` order, for a driver's ``executemany``.

    Built with ``map``/``itemgetter``: no Python code runs per row.
    """
    columns = batch.columns
    if len(columns) == 1:
        return [(row[columns[0]],) for row in batch.rows]
    return list(map(itemgetter(*columns), batch.rows))


def all_native(rows: list[tuple[Any, ...]]) -> bool:
    """True when every value is of a :data:`DRIVER_NATIVE` type (checked at C speed)."""
    return DRIVER_NATIVE.issuperset(map(type, chain.from_iterable(rows)))
