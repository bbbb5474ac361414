"""A matched store loaded into memory once per migration: the dict a hand-written script joins with.

:func:`load` reads the store once, in key order, into a list, estimating its memory as it goes
and giving up past the Match's budget. :class:`Preloaded` then answers dict filters from that
list, through an index per set of fields built on first use: ``{"sku": x}`` is one dict lookup
instead of a query (a page of such lookups by key reads the records by value,
:meth:`Preloaded.lookup`). The pages it gives are those :meth:`Store.match_pages` would give (key
order, ``batch_size`` records but the last), as long as the store compares the filters' values as
Python does, which the caller checks with :meth:`Store.can_match_in`. Every record handed out is
a copy, so a ``reduce_from_*`` that changes its batch cannot change what later records see;
under ``Match(read_only=True)`` it is instead the loaded record itself, made read-only at load
time (:class:`ReadOnlyRecord`: a change raises instead of reaching later records), as long as its
values are immutable (else a change inside one would still reach them: those are copied).
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from itertools import chain
from operator import itemgetter
from typing import Any, NoReturn, TypeVar
from uuid import UUID

from ..stores.base import Store, match_fields
from ..stores.common import IN_TYPES
from ..types import Record

T = TypeVar("T")

LOAD_PAGE = 10_000
"""Records per read while loading."""

EXACT_SIZES = 1_000
"""The first records read are measured one by one; later ones by :data:`SAMPLE_EVERY`."""

SAMPLE_EVERY = 16

INDEX_BYTES_PER_RECORD = 100
"""What an index adds per record (a dict entry and a list slot, on average), in the estimate."""

_IMMUTABLE = frozenset({int, float, str, bytes, bool, type(None), Decimal, datetime, date, time_of_day,
                        timedelta, UUID})
"""Value types a record can share with its copies: a shallow copy of such a record is a full one."""


class Preloaded:
    """One store's records in key order, and indexes on the fields its filters name."""

    def __init__(self, store: Store, records: list[Record], fields: tuple[str, ...] | None,
                 out: list[Record], size: int, seconds: float, flat: bool, shared: bool = False) -> None:
        self.store = store
        self.records = records
        self.fields = fields
        """The fields each record holds, or None for whole records."""
        self.bytes = size
        """Estimated memory of the records and their indexes."""
        self.reported: dict[str, float] | None = None
        """The run report's entry for this store, whose ``mb`` follows :attr:`bytes` as indexes are built."""
        self.seconds = seconds
        self.shared = shared
        """True when the records are handed out as they are in :attr:`handed`, read-only and
        shared by every page (``Match.read_only``, where every value is immutable)."""
        self.copy_of: Callable[[Record], Record] = dict.copy if flat else copy.deepcopy
        """How a record is copied to be handed out (a shallow copy where its values are immutable)."""
        self.handed = out
        """The records as they are handed out (copied unless :attr:`shared`): with the key and
        the Match's columns only."""
        self._indexes: dict[tuple[str, ...], dict[Hashable, list[int]] | None] = {}
        self._lookups: dict[str, dict[Hashable, list[Record]] | None] = {}

    @property
    def mb(self) -> float:
        return self.bytes / 1e6

    def has(self, fields: Iterable[str]) -> bool:
        """True when the loaded records hold ``fields``."""
        return self.fields is None or all(f in self.fields for f in fields)

    def can_answer(self, flt: Any) -> bool:
        """True for a dict filter on loaded fields whose values (or "in" values) are hashable
        and whose index could be built; whether the store compares them as Python does is the
        caller's question."""
        if not isinstance(flt, Mapping) or not self.has(flt):
            return False
        for value in flt.values():
            try:
                if isinstance(value, IN_TYPES):
                    frozenset(value)
                else:
                    hash(value)
            except TypeError:
                return False
        equal = tuple(sorted(n for n, v in flt.items() if not isinstance(v, IN_TYPES)))
        if equal:
            return self.index(equal) is not None
        listed = [n for n, v in flt.items() if isinstance(v, IN_TYPES)]
        return not listed or self.index((listed[0],)) is not None

    def pages(self, flt: Mapping[str, Any], batch_size: int) -> Iterable[list[Record]]:
        """The pages of records ``flt`` matches, as ``Store.match_pages`` gives them; the filter
        must be one :meth:`can_answer` accepts."""
        return self.pages_at(self._positions(flt), batch_size)

    def pages_at(self, positions: Sequence[int], batch_size: int) -> Iterable[list[Record]]:
        """The records at ``positions`` (ascending) as handed out, in pages of ``batch_size``."""
        records, hand_out = self.handed, self.hand_out
        if len(positions) == 1 and not self.shared:  # the usual lookup: one record
            return [[self.copy_of(records[positions[0]])]]
        if len(positions) <= batch_size:
            return [hand_out(map(records.__getitem__, positions))] if positions else []
        return (hand_out(map(records.__getitem__, positions[start:start + batch_size]))
                for start in range(0, len(positions), batch_size))

    def hand_out(self, records: Iterable[Record]) -> list[Record]:
        """A page of :attr:`handed` records as a reduce receives it: a new list (a reduce may
        change its batch), of copies unless :attr:`shared`."""
        return list(records) if self.shared else list(map(self.copy_of, records))

    def _positions(self, flt: Mapping[str, Any]) -> Sequence[int]:
        """Where the matches are in :attr:`records`, ascending (so in key order)."""
        equal = sorted((n, v) for n, v in flt.items() if not isinstance(v, IN_TYPES))
        listed = [(n, v) for n, v in flt.items() if isinstance(v, IN_TYPES)]
        positions: Sequence[int]
        if equal:
            index = self.index(tuple(n for n, _ in equal))
            assert index is not None  # can_answer built it
            key = equal[0][1] if len(equal) == 1 else tuple(v for _, v in equal)
            positions = index.get(key, ())
        elif listed:
            name, values = listed.pop(0)
            index = self.index((name,))
            assert index is not None
            positions = sorted(set(chain.from_iterable(index.get(v, ()) for v in frozenset(values))))
        else:
            return range(len(self.records))
        if listed:  # the other "in" terms, checked as MemoryStore checks them
            records = self.records
            positions = [p for p in positions if all(records[p].get(n) in v for n, v in listed)]
        return positions

    def lookup(self, name: str) -> dict[Hashable, list[Record]] | None:
        """The records as handed out (before their copy, unless :attr:`shared`) by their value
        of ``name``, in key order; None when a value cannot be a dict key. What :meth:`index` is for a page's other
        filters, for lookups by key: one dict entry leads to the records, with no position to
        follow (at a million lookups in a table bigger than the CPU's caches, each hop is a
        cache miss)."""
        if name not in self._lookups:
            found = _grouped([r.get(name) for r in self.records], self.handed)
            if found is not None:
                self._grew(INDEX_BYTES_PER_RECORD * len(self.records))
            self._lookups[name] = found
        return self._lookups[name]

    def _grew(self, size: int) -> None:
        self.bytes += size
        if self.reported is not None:
            self.reported["mb"] = round(self.mb, 3)

    def index(self, fields: tuple[str, ...]) -> dict[Hashable, list[int]] | None:
        """Positions of the records by their values of ``fields`` (one value for one field, a
        tuple for several); None when a value cannot be a dict key."""
        if fields in self._indexes:
            return self._indexes[fields]
        records = self.records
        values: list[Hashable] = ([r.get(fields[0]) for r in records] if len(fields) == 1
                                  else [tuple([r.get(n) for n in fields]) for r in records])
        index = _grouped(values, range(len(records)))
        if index is not None:
            self._grew(INDEX_BYTES_PER_RECORD * len(records))
        self._indexes[fields] = index
        return index


class ReadOnlyRecord(dict[str, Any]):
    """A preloaded record shared by every page it is matched in (``Match(read_only=True)``): a
    dict in every way a reader sees (fields, ``json.dumps``, ``dict(record)``, ``{**record}``,
    ``isinstance(record, dict)``) whose changing methods raise TypeError, so that a reduce that
    changes it by mistake fails its record instead of changing what later records see.

    A dict subclass rather than a ``types.MappingProxyType`` over the dict: the reduce reads
    the record itself, not a view that leads to it (one object less to fetch per matched record),
    and it stays a dict for the code that receives it."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a record matched with Match(read_only=True) cannot be changed (every record matched "
                        "after it would see the change); change a copy: dict(record)")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReadOnlyRecord, (dict(self),))


def _projection(handed: tuple[str, ...]) -> Callable[[Record], Record]:
    """A record with the ``handed`` fields only (those it has)."""
    values_of = itemgetter(*handed)

    def projected(record: Record) -> Record:
        try:
            values = values_of(record)
        except KeyError:  # a record without some of the fields (MemoryStore): those it has
            return {f: record[f] for f in handed if f in record}
        return dict(zip(handed, values)) if len(handed) > 1 else {handed[0]: values}

    return projected


class OverBudget(Exception):
    """The store did not fit in the memory budget; ``args[0]`` says how far loading got."""


def load(store: Store, columns: Sequence[str] | None, filter_fields: Sequence[str], budget_bytes: float,
         shared: bool = False) -> Preloaded:
    """Read ``store`` once, in key order: whole records, or with ``columns`` only the key, the
    columns and the ``filter_fields`` the index needs (records are handed out with the key and
    the columns, as ``Store.match_pages`` gives them); ``shared``: as :class:`ReadOnlyRecord`
    made now, shared by every page, where every value is immutable (:attr:`Preloaded.shared`).

    Raises:
        OverBudget: the records (with one index) outgrew ``budget_bytes``; what was read is dropped.
    """
    started = time.perf_counter()
    handed = None if columns is None else match_fields(store.key_fields, columns)
    fields = None if handed is None else tuple(dict.fromkeys([*handed, *filter_fields]))
    records: list[Record] = []
    size = 0
    flat = True
    for page in store.match_pages(None, LOAD_PAGE, fields):
        size += estimated_size(page, exact=len(records) < EXACT_SIZES) + INDEX_BYTES_PER_RECORD * len(page)
        if flat and not all(_IMMUTABLE.issuperset(map(type, r.values())) for r in page):
            flat = False
        records.extend(page)
        if size > budget_bytes:
            raise OverBudget(f"{len(records):,} records read, about {size / 1e6:.1f} MB")
    out = records
    if handed is not None and handed != fields:  # the filters' fields are for the index only
        out = list(map(_projection(handed), records))
        size += estimated_size(out)
        if size > budget_bytes:
            raise OverBudget(f"{len(records):,} records read and their columns kept, about {size / 1e6:.1f} MB")
    shared = shared and flat
    if shared:  # the records themselves, made read-only (no copy is kept beside them)
        frozen: list[Record] = list(map(ReadOnlyRecord, out))
        records, out = (frozen, frozen) if out is records else (records, frozen)
    return Preloaded(store, records, fields, out, size - INDEX_BYTES_PER_RECORD * len(records),
                     time.perf_counter() - started, flat, shared)


def estimated_size(records: Sequence[Record], exact: bool = False) -> int:
    """Bytes the records take: each measured when ``exact``, else one in :data:`SAMPLE_EVERY`."""
    if exact or len(records) <= SAMPLE_EVERY:
        return sum(map(record_size, records))
    sample = records[::SAMPLE_EVERY]
    return sum(map(record_size, sample)) * len(records) // len(sample)


def record_size(record: Record) -> int:
    """Bytes a record takes: the dict and its values (shared values are counted each time)."""
    return sys.getsizeof(record) + sum(map(sys.getsizeof, record.values()))


def _grouped(values: Sequence[Hashable], items: Iterable[T]) -> dict[Hashable, list[T]] | None:
    """``items`` grouped by their ``values`` (in order); None when a value cannot be a dict key
    (a JSON list, say): filters on that field go to the store."""
    grouped: dict[Hashable, list[T]] = {}
    try:
        for value, item in zip(values, items):
            grouped.setdefault(value, []).append(item)
    except TypeError:
        return None
    return grouped
