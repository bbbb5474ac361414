"""start_reduction, then each Match: a page's filters answered with as few reads as possible.

For each Match, in order (a later ``order`` sees the aggregates of earlier ones), over the records
still alive: ``match_with_*`` gives each record a filter, and records with equal filters form a
group that shares every page of matches. The groups are then answered by the first path that can:

1. **Preloaded** (``Match.preload``; ``preload.py``): the store read into memory once per
   migration, when asked to (True), or automatically (None) when its ``count()`` is at most
   ``Match.preload_max_records``, within ``Match.preload_max_mb``. It answers every dict filter
   whose fields the store compares as Python does (:meth:`Store.can_match_in`: no
   case-insensitive collation, no type coercion); others go on to 2 and 3. A page whose
   filters are all lookups by key (``{field: value}`` on one field, int or str values, a fixed
   cardinality: what a ``Lookup`` gives) is answered without a group object per value: one
   dict lookup per value, the cardinality checked in line.
2. **Set-oriented**: equality filters on the same fields (``{"a": x}``, ``{"a": x, "b": y}``;
   no None, no lists) go to :meth:`Store.match_pages_in` together; on SQL that is one streamed
   ``IN`` (or row-value ``IN``) query per page of records.
3. **Per filter**: anything else (lists, None, ``{}``, native filters) goes filter by filter
   through :meth:`Store.match_pages`.

The records are the page's :class:`Batch` (by position: aggregates in a list, a Work made only
for a record that fails). Every path hands each group the same pages in the same order (key order, ``Match.batch_size``
records but the last), so cardinality checks, ``reduce_from_*`` calls (once per page for each
member), failures and retries are the same whichever answers. A store that cannot be read fails
the groups it was to answer, with the Match's retry; :class:`StoreUnusableError` ends the
migration instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Hashable, Iterable, Mapping, Sequence
from contextlib import closing
from typing import Any, TypeVar, cast

from ..declare import Cardinality, Match, MigrationSpec
from ..errors import CardinalityError, StoreError, StoreUnusableError
from ..report import MigrationReport
from ..stores.base import Store
from ..stores.common import IN_TYPES
from ..types import Record
from .preload import OverBudget, Preloaded, load
from .work import Batch, Phase, describe_error

log = logging.getLogger("ferryman")

T = TypeVar("T")


def start_reduction(spec: MigrationSpec, instance: Any, batch: Batch) -> None:
    """Call the optional ``start_reduction(record, aggregates)`` for each record."""
    hook = getattr(instance, "start_reduction", None)
    if hook is None:
        return
    for position, (record, aggregates) in enumerate(zip(batch.records, batch.aggregates)):
        try:
            hook(record, aggregates)
        except Exception as exc:
            batch.fail(position, Phase.START, exc, spec.load_retry)


def filter_key(flt: Any) -> Hashable:
    """A hashable key equal for equal filters; "in" values compare as sets."""
    if type(flt) is dict and len(flt) == 1:  # the usual {field: value}, first and fast
        for name, value in flt.items():
            if type(value) is int or type(value) is str:
                return (name, value)
    if isinstance(flt, dict):
        try:
            return tuple(sorted((k, _value_key(v)) for k, v in flt.items()))
        except TypeError:  # unhashable or unorderable values: no sharing, still correct
            return ("id", id(flt))
    try:
        hash(flt)
        return ("native", flt)
    except TypeError:
        return ("id", id(flt))


def _value_key(value: Any) -> Hashable:
    if isinstance(value, IN_TYPES):
        return ("in", frozenset(value))
    hash(value)
    return cast(Hashable, value)


class _Group:
    """The records whose filters are equal: they share every page of matches."""

    __slots__ = ("cardinality", "count", "ended", "filter", "members", "most", "shape")

    def __init__(self, flt: Any, shape: tuple[tuple[str, ...], tuple[Any, ...]] | None,
                 cardinality: Cardinality) -> None:
        self.filter = flt
        self.shape = shape
        """``(fields, values)`` of a filter of plain equalities, else None."""
        self.members: list[int] = []
        """The positions of its records in the batch."""
        self.count = 0
        self.ended = False
        self.cardinality = cardinality
        """Its members': a Match whose cardinality depends on the record groups by it too."""
        self.most = cardinality.bounds[1]


class _Keyed:
    """A page's filters while every one is ``{name: value}`` on the same field, with an int or
    str value and the Match's fixed cardinality: the records by value (in the order met), with
    no group object per value (a lookup by key has about as many values as records)."""

    __slots__ = ("cardinality", "members", "name")

    def __init__(self, cardinality: Cardinality) -> None:
        self.cardinality = cardinality
        self.name: str | None = None
        self.members: dict[int | str, list[int]] = {}

    def groups(self) -> dict[Hashable, _Group]:
        """The same records as groups, as the general path takes them (by ``filter_key``)."""
        name = self.name
        found: dict[Hashable, _Group] = {}
        if name is None:
            return found
        for value, members in self.members.items():
            group = found[(name, value)] = _Group({name: value}, ((name,), (value,)), self.cardinality)
            group.members = members
        return found


class _Reducer:
    """One Match over one page of records: hands pages to groups, checks cardinality."""

    def __init__(self, spec: MigrationSpec, match: Match, reduce_from: Callable[..., Any], batch: Batch) -> None:
        self.spec = spec
        self.match = match
        self.reduce_from = reduce_from
        self.batch = batch

    def take(self, group: _Group, page: list[Record]) -> bool:
        """``reduce_from_*`` of ``page`` for each member still alive; False once the group
        needs no more pages (its cardinality is already violated)."""
        if group.ended:
            return False
        group.count += len(page)
        if group.count > group.most:  # can no longer conform: fail early
            self._fail_cardinality(group, early=True)
            return False
        self.reduce(group.members, page)
        return True

    def reduce(self, members: list[int], page: list[Record]) -> None:
        """``reduce_from_*`` of ``page`` for each of ``members`` still alive."""
        self.reduce_pages(((members, page),))

    def reduce_pages(self, pages: Iterable[tuple[list[int], list[Record]]]) -> None:
        """:meth:`reduce` of each ``(members, page)``, in one loop (a page of lookups by key
        has about one page per record)."""
        reduce_from, retry, batch = self.reduce_from, self.match.retry, self.batch
        aggregates, failed = batch.aggregates, batch.failed
        for members, page in pages:
            for p in members:
                if p not in failed:
                    try:
                        reduce_from(aggregates[p], page)
                    except Exception as exc:  # this record fails alone
                        batch.fail(p, Phase.MATCH, exc, retry)

    def finish(self, groups: Iterable[_Group]) -> None:
        """After the last page: a count the cardinality forbids fails the group."""
        for group in groups:
            if not group.ended and not group.cardinality.allows(group.count):
                self._fail_cardinality(group, early=False)

    def unreadable(self, groups: Iterable[_Group], error: Exception) -> None:
        """The store failed while answering ``groups``: their records fail, a retry may help."""
        batch = self.batch
        for group in groups:
            group.ended = True
            for p in group.members:
                if p not in batch.failed:
                    batch.fail(p, Phase.MATCH, error, self.match.retry)

    def _fail_cardinality(self, group: _Group, early: bool) -> None:
        group.ended = True
        self.fail_cardinality(group.members, group.filter, group.cardinality, group.count, early)

    def fail_cardinality(self, members: list[int], flt: Any, cardinality: Cardinality, count: int,
                         early: bool) -> None:
        """Fail the ``members`` still alive: ``flt`` matched ``count`` records (``early``: at
        least that many, the rest unread), which ``cardinality`` forbids."""
        found = f"at least {count}" if early else str(count)
        error = CardinalityError(
            f"migration {self.spec.name}: {self.match.label} requires "
            f"{cardinality.value} record(s) per filter, but filter {flt!r} matched {found}"
        )
        batch = self.batch
        for p in members:
            if p not in batch.failed:
                batch.fail(p, Phase.MATCH, error, None)


class Matcher:
    """The Matches of one migration for the length of a run: runs them page after page, and
    keeps the stores it preloaded (read once per run, at the first page that needs them)."""

    def __init__(self, spec: MigrationSpec, instance: Any, stores: Mapping[str, Store],
                 report: MigrationReport | None = None) -> None:
        self.spec = spec
        self.instance = instance
        self.stores = stores
        self.report = report
        self._preloads: dict[Hashable, _Preload] = {}
        self._alone: dict[Hashable, set[tuple[Any, ...]]] = {}
        """Per Match and filter fields, the values whose query together with others failed:
        from then on each is read alone, so one unreadable row fails only the records whose
        own filter reads it."""
        for m in spec.matches:
            if m.preload is not False:
                self._preloads.setdefault(_preload_key(m), _Preload(m, stores[m.store]))

    def match_and_reduce(self, batch: Batch) -> None:
        """Run every Match of the migration, in order, over the records still alive."""
        for match in self.spec.matches:
            alive = batch.alive()
            if not alive:
                return
            self._run(match, batch, alive)

    def _run(self, match: Match, batch: Batch, alive: list[int]) -> None:
        store = self.stores[match.store]
        found = self._groups(match, store, batch, alive)
        reducer = _Reducer(self.spec, match, match.hooks(self.instance)[1], batch)
        if isinstance(found, _Keyed):
            if self._keyed_from_preload(reducer, found):
                return
            groups = list(found.groups().values())
        else:
            groups = found
        if not groups:
            return
        shapes, others = _by_shape(groups)
        preload = self._preloads.get(_preload_key(match))
        if preload is not None:
            table = preload.table_for(lambda: [g.filter for g in groups], self.spec, self.report)
            if table is not None:
                shapes = self._from_preload(preload, table, reducer, shapes)
                others = self._others_from_preload(preload, table, reducer, others)
        others += self._by_sets(reducer, store, shapes)
        for group in others:
            self._by_filter(reducer, store, group)
        reducer.finish(groups)

    def _groups(self, match: Match, store: Store, batch: Batch, alive: list[int]) -> _Keyed | list[_Group]:
        """``match_with_*`` for each record; records with equal filters share a group.

        While every filter is ``{name: value}`` on one field with an int or str value (a
        lookup by key, the usual) and the cardinality is fixed, records are only sorted by
        value (:class:`_Keyed`); the first other filter turns them into groups, in the order
        they were met, and the page goes on as groups."""
        match_with: Callable[..., Any] = match.hooks(self.instance)[0]
        fixed = match.fixed_cardinality
        keyed = _Keyed(fixed) if fixed is not None else None
        name: str | None = None  # keyed's field, from its first filter on
        by_value = {} if keyed is None else keyed.members
        groups: dict[Hashable, _Group] = {}
        records, aggregates = batch.records, batch.aggregates
        for p in alive:
            try:
                flt = match_with(records[p], aggregates[p], store)
                cardinality = fixed or match.cardinality_for(records[p])
            except CardinalityError as exc:  # the hook knows the record cannot match as it must
                batch.fail(p, Phase.MATCH, exc, None)
                continue
            except Exception as exc:
                batch.fail(p, Phase.MATCH, exc, match.retry)
                continue
            if flt is None:
                if cardinality.strict:  # None: no match, which a strict cardinality forbids
                    batch.fail(p, Phase.MATCH, CardinalityError(
                        f"migration {self.spec.name}: {match.match_method} returned None (no match), but "
                        f"{match.label} requires {cardinality.value} record(s)"), None)
                continue
            if keyed is not None:
                if type(flt) is dict and len(flt) == 1:
                    if name is None:
                        name = next(iter(flt))
                    value = flt.get(name, flt)  # flt itself when it names another field
                    if type(value) is int or type(value) is str:
                        members = by_value.get(value)
                        if members is None:
                            by_value[value] = [p]
                        else:
                            members.append(p)
                        continue
                keyed.name = name
                groups, keyed = keyed.groups(), None
            if fixed is None:  # records with equal filters but other cardinalities: other groups
                key: Hashable = (cardinality, filter_key(flt))
                group = groups.get(key)
                if group is None:
                    group = groups[key] = _Group(flt, _equality_shape(flt), cardinality)
                group.members.append(p)
                continue
            key = filter_key(flt)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(flt, _equality_shape(flt), fixed)
            group.members.append(p)
        if keyed is None:
            return list(groups.values())
        keyed.name = name
        return keyed

    def _keyed_from_preload(self, reducer: _Reducer, keyed: _Keyed) -> bool:
        """Answer a page of lookups by key from the preloaded store, if it has one that
        compares these values as the store does; False when the page must go on as groups.

        What the group path does, without a group per value: each value's matches are one
        dict lookup, handed to its records as one page (a copy of the records, or the shared
        read-only ones, in one list shared by them), the cardinality checked before the reduce
        when there are too many matches and after it when too few; a value with more than a
        page of matches goes page by page through a group."""
        match, name, members_of = reducer.match, keyed.name, keyed.members
        preload = self._preloads.get(_preload_key(match))
        if preload is None or name is None:
            return not members_of
        table = preload.table_for(lambda: [{name: value} for value in members_of], self.spec, self.report)
        if table is None or not preload.compares(table, (name,), [list(members_of)]):
            return False
        by_value = table.lookup(name)
        if by_value is None:
            return False
        cardinality, batch_size = keyed.cardinality, match.batch_size
        low, most = cardinality.bounds
        get, copy_of, hand_out, shared = by_value.get, table.copy_of, table.hand_out, table.shared
        pages: list[tuple[list[int], list[Record]]] = []  # reduced after the loop: each record is in one
        for value, members in members_of.items():
            found: Sequence[Record] = get(value) or ()
            count = len(found)
            if count > batch_size:
                group = _Group({name: value}, ((name,), (value,)), cardinality)
                group.members = members
                for start in range(0, count, batch_size):
                    if not reducer.take(group, hand_out(found[start:start + batch_size])):
                        break
                reducer.finish([group])
            elif count > most:  # one page, already too many: no reduce
                reducer.fail_cardinality(members, {name: value}, cardinality, count, early=True)
            else:
                if count:
                    pages.append((members, list(found) if shared else [copy_of(found[0])] if count == 1
                                  else list(map(copy_of, found))))
                if count < low:
                    reducer.fail_cardinality(members, {name: value}, cardinality, count, early=False)
        reducer.reduce_pages(pages)
        return True

    def _from_preload(self, preload: _Preload, table: Preloaded, reducer: _Reducer, shapes: _Shapes) -> _Shapes:
        """Answer the equality groups the preloaded store can (a dict lookup each); the shapes
        left for the store to answer."""
        left: _Shapes = {}
        batch_size = reducer.match.batch_size
        take = reducer.take
        for fields, by_values in shapes.items():
            index = preload.equality_index(table, fields, [[v[j] for v in by_values] for j in range(len(fields))])
            if index is None:
                left[fields] = by_values
                continue
            get, pages_at, single = index.get, table.pages_at, len(fields) == 1
            for values, slot in by_values.items():
                positions = get(values[0] if single else values)
                if positions is None:
                    continue  # no match: finish() checks the count of 0
                if len(slot) == 1:  # the usual: one group per value
                    group = slot[0]
                    for page in pages_at(positions, batch_size):
                        if not take(group, page):
                            break
                    continue
                for page in pages_at(positions, batch_size):
                    if not any([take(group, page) for group in slot]):
                        break
        return left

    def _others_from_preload(self, preload: _Preload, table: Preloaded, reducer: _Reducer,
                             groups: list[_Group]) -> list[_Group]:
        """Answer the other dict filters ("in" lists, None, ``{}``) the preloaded store can;
        the groups left for the store to answer."""
        answerable = preload.answerable(table, groups)
        if not answerable:
            return groups
        batch_size = reducer.match.batch_size
        for group in answerable:
            for page in table.pages(group.filter, batch_size):
                if not reducer.take(group, page):
                    break
        chosen = {id(g) for g in answerable}
        return [g for g in groups if id(g) not in chosen]

    def _by_sets(self, reducer: _Reducer, store: Store, shapes: _Shapes) -> list[_Group]:
        """Equality filters, by the fields they name, through ``Store.match_pages_in``; the
        groups left for one query each."""
        rest: list[_Group] = []
        match = reducer.match
        for fields, by_values in shapes.items():
            alone = self._alone.get((match.label, fields), set())
            for values in [v for v in by_values if v in alone]:
                rest.extend(by_values.pop(values))
            if len(by_values) <= 1:  # one filter: one query either way
                rest.extend(group for slot in by_values.values() for group in slot)
                continue
            slots = list(by_values.values())
            members = [g for slot in slots for g in slot]
            try:
                with closing(_iterator(store.match_pages_in(fields, list(by_values), match.batch_size,
                                                            match.columns))) as pages:
                    for i, page in pages:
                        for group in slots[i]:
                            reducer.take(group, page)
            except StoreUnusableError:
                raise
            except Exception as exc:
                self._alone.setdefault((match.label, fields), set()).update(by_values)
                error = _unreadable(f"{match.label}: the matches of {len(by_values)} filters, read together, could "
                                    f"not be read ({describe_error(exc)}); a retry reads them one by one", exc)
                reducer.unreadable([g for g in members if g.count or g.ended], error)  # partly reduced
                rest.extend(g for g in members if not (g.count or g.ended))
        return rest

    def _by_filter(self, reducer: _Reducer, store: Store, group: _Group) -> None:
        match = reducer.match
        try:
            with closing(_iterator(store.match_pages(group.filter, match.batch_size, match.columns))) as pages:
                for page in pages:
                    if not reducer.take(group, page):
                        return
        except StoreUnusableError:
            raise
        except Exception as exc:  # the matching store could not be read: retry these records
            reducer.unreadable([group], _unreadable(
                f"{match.label}: the matches of filter {group.filter!r} could not be read: {describe_error(exc)}", exc))


def _unreadable(text: str, cause: Exception) -> StoreError:
    """The error a record whose matches could not be read fails with (its cause kept)."""
    error = StoreError(text)
    error.__cause__ = cause
    return error


def _preload_key(match: Match) -> Hashable:
    """Matches of one store that read it alike share its preload (Lookups of one store do)."""
    return (match.store, match.columns, match.preload, match.preload_max_records, match.preload_max_mb,
            match.read_only)


def _iterator(items: Iterable[T]) -> Generator[T, None, None]:
    """``items`` as a generator, whose ``close`` ends a store's read (and its cursor) early."""
    yield from items


_Shapes = dict[tuple[str, ...], dict[tuple[Any, ...], list[_Group]]]
"""Equality groups by the fields their filters name, then by the values (groups with equal
values but unequal keys, ``{"a": 1}`` and ``{"a": True}``, share a slot)."""


def _by_shape(groups: list[_Group]) -> tuple[_Shapes, list[_Group]]:
    """The groups of plain equality filters by shape, and the others."""
    shapes: _Shapes = {}
    others: list[_Group] = []
    for group in groups:
        shape = group.shape
        if shape is None:
            others.append(group)
        else:
            fields, values = shape
            shapes.setdefault(fields, {}).setdefault(values, []).append(group)
    return shapes, others


def _equality_shape(flt: Any) -> tuple[tuple[str, ...], tuple[Any, ...]] | None:
    """``(fields, values)`` of a filter of plain equalities (sorted by field), or None."""
    if not isinstance(flt, dict) or not flt:
        return None
    if len(flt) == 1:
        for name, value in flt.items():
            return ((name,), (value,)) if _plain(value) else None
    names = tuple(sorted(flt))
    values = tuple(flt[n] for n in names)
    return (names, values) if all(map(_plain, values)) else None


def _plain(value: Any) -> bool:
    """A value ``match_pages_in`` takes: hashable, not None, not a list of values."""
    if value is None or isinstance(value, (*IN_TYPES, dict)):
        return False
    try:
        hash(value)
    except TypeError:
        return False
    return True


class _Preload:
    """Whether and what one Match's store has preloaded: decided at the first page that needs
    it, then kept for the run."""

    def __init__(self, match: Match, store: Store) -> None:
        self.match = match
        self.store = store
        self.table: Preloaded | None = None
        self.declined = False
        self._small: bool | None = None
        self._warned: set[str] = set()

    def table_for(self, page_filters: Callable[[], list[Any]], spec: MigrationSpec,
                  report: MigrationReport | None) -> Preloaded | None:
        """The preloaded store, loading it now if this page (whose distinct filters
        ``page_filters`` gives) is the first that needs it."""
        if self.table is not None or self.declined:
            return self.table
        filters = page_filters()
        if not self._worth_loading(filters):
            return None
        match, store = self.match, self.store
        named = sorted({n for flt in filters if isinstance(flt, Mapping) for n in flt})
        try:
            self.table = load(store, match.columns, named, match.preload_max_mb * 1e6, match.read_only)
        except OverBudget as over:
            self._decline(spec, f"it outgrew the memory budget of {match.preload_max_mb:g} MB "
                                f"(preload_max_mb) at {over.args[0]}")
            return None
        except StoreUnusableError:
            raise
        except Exception as exc:
            self._decline(spec, f"it could not be read: {describe_error(exc)}")
            return None
        table = self.table
        log.info("migration %s: preloaded %s records of store %r (about %.1f MB) in %.2f s",
                 spec.name, f"{len(table.records):,}", store.name, table.mb, table.seconds)
        if report is not None:
            table.reported = report.preloaded[store.name] = {"records": len(table.records), "mb": round(table.mb, 3)}
        return table

    def _worth_loading(self, filters: list[Any]) -> bool:
        """True when the Match asks for it, or leaves it to ferryman and the store is small; and
        some filter of this page could be answered from memory."""
        if self.match.preload is None and self._small is None:
            try:
                count = self.store.count()
            except StoreUnusableError:
                raise
            except Exception as exc:  # a preload is an optimisation, never worth failing for
                log.debug("store %r cannot be counted (%s): not preloaded", self.store.name, describe_error(exc))
                count = None
            self._small = count is not None and count <= self.match.preload_max_records
            if not self._small:
                self.declined = True
                return False
        probe = _Probe(self.store, filters)
        worth = any([probe.compares(flt) for flt in filters])
        if self.match.preload:
            self._warn_unanswered(probe.refused)
        return worth

    def equality_index(self, table: Preloaded, fields: tuple[str, ...],
                       values: Sequence[Sequence[Any]]) -> dict[Hashable, list[int]] | None:
        """The index that answers equality filters on ``fields`` as the store would, or None;
        ``values[j]`` are the filters' values of ``fields[j]``."""
        return table.index(fields) if self.compares(table, fields, values) else None

    def compares(self, table: Preloaded, fields: tuple[str, ...], values: Sequence[Sequence[Any]]) -> bool:
        """True when ``table`` holds ``fields`` and the store compares these values of them as
        Python does, so that equality filters on them can be answered from memory."""
        if not table.has(fields):
            return False
        for name, found in zip(fields, values):
            if not self.store.can_match_in(name, found):
                if self.match.preload:
                    self._warn_unanswered({name})
                return False
        return True

    def answerable(self, table: Preloaded, groups: list[_Group]) -> list[_Group]:
        """The groups whose filters ``table`` answers as the store would."""
        probe = _Probe(self.store, [g.filter for g in groups])
        chosen = [g for g in groups if probe.compares(g.filter) and table.can_answer(g.filter)]
        if self.match.preload and len(chosen) < len(groups):
            self._warn_unanswered(probe.refused)
        return chosen

    def _warn_unanswered(self, refused: set[str]) -> None:
        for name in refused - self._warned:
            self._warned.add(name)
            log.warning("%s, preload=True: store %r does not compare field %r as Python does "
                        "(a case-insensitive collation, another type); filters on it are queried",
                        self.match.label, self.store.name, name)

    def _decline(self, spec: MigrationSpec, why: str) -> None:
        self.declined = True
        log.warning("migration %s: store %r is not preloaded, %s; its matches are queried page by page",
                spec.name, self.store.name, why)


class _Probe:
    """Asks the store whether it compares a page's filter values as Python does: once per field
    for all the page's values, then, for a field refused as a whole, value by value."""

    def __init__(self, store: Store, filters: Iterable[Any]) -> None:
        self.store = store
        values: dict[str, list[Any]] = {}
        for flt in filters:
            if isinstance(flt, Mapping):
                for name, value in flt.items():
                    if isinstance(value, IN_TYPES):
                        values.setdefault(name, []).extend(value)
                    else:
                        values.setdefault(name, []).append(value)
        self._fields = {name: store.can_match_in(name, found) for name, found in values.items()}
        self.refused: set[str] = set()

    def compares(self, flt: Any) -> bool:
        """True for a dict filter whose every value the store compares as Python does."""
        return isinstance(flt, Mapping) and all(self._compares(name, value) for name, value in flt.items())

    def _compares(self, name: str, value: Any) -> bool:
        if self._fields.get(name):
            return True
        if self.store.can_match_in(name, list(value) if isinstance(value, IN_TYPES) else [value]):
            return True
        self.refused.add(name)
        return False
