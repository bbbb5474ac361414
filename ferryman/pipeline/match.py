"""start_reduction, then each Match: filters grouped by equality, as few queries as possible.

Records whose ``match_with_*`` returns equal filters share one paged query, and
``reduce_from_*`` is called for each of them once per page of matches (mjg's design, which
only worked when filter sets implemented equality; dict filters always do here). When a page's
filters are all equalities on one field and the store compares like Python
(:meth:`Store.can_match_in`), one ``{field: [values]}`` query serves them all and each record's
reduce receives its share of every page.

A matching store that cannot be read fails the records that needed it, with the match's retry;
one that is unusable (:class:`~ferryman.errors.StoreUnusableError`: no such table, no permission)
ends the migration instead, as no record could get past it.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

from ..declare import Match, MigrationSpec
from ..errors import CardinalityError, StoreUnusableError
from ..stores.base import Store
from .work import Phase, Work, live


def start_reduction(spec: MigrationSpec, instance: Any, works: list[Work]) -> None:
    """Call the optional ``start_reduction(record, aggregates)`` for each record."""
    hook = getattr(instance, "start_reduction", None)
    if hook is None:
        return
    for w in works:
        try:
            hook(w.record, w.aggregates)
        except Exception as exc:
            w.fail(Phase.START, exc, spec.load_retry)


def match_and_reduce(spec: MigrationSpec, instance: Any, works: list[Work], stores: dict[str, Store]) -> None:
    """Run every Match of the migration, in order, over the records still alive."""
    for match in spec.matches:
        alive = live(works)
        if not alive:
            return
        _run_match(spec, instance, match, stores[match.store], alive)


def filter_key(flt: Any) -> Hashable:
    """A hashable key equal for equal filters; "in" values compare as sets."""
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
    if isinstance(value, (list, tuple, set, frozenset)):
        return ("in", frozenset(value))
    hash(value)
    return value


def _run_match(spec: MigrationSpec, instance: Any, match: Match, store: Store, works: list[Work]) -> None:
    match_with: Callable[..., Any] = getattr(instance, match.match_method)
    groups: dict[Hashable, tuple[Any, list[Work]]] = {}
    for w in works:
        try:
            flt = match_with(w.record, w.aggregates, store)
        except Exception as exc:
            w.fail(Phase.MATCH, exc, match.retry)
            continue
        if flt is not None:
            groups.setdefault(filter_key(flt), (flt, []))[1].append(w)
        elif match.cardinality.strict:  # None: no match, which a strict cardinality forbids
            w.fail(Phase.MATCH, CardinalityError(
                f"migration {spec.name}: {match.match_method} returned None (no match), but "
                f"Match({match.store!r}) requires {match.cardinality.value} record(s)"), None)
    reduce_from: Callable[..., Any] = getattr(instance, match.reduce_method)
    field = _shared_equality_field(groups)
    if field is not None:
        by_value = {flt[field]: members for flt, members in groups.values()}
        if store.can_match_in(field, list(by_value)):
            _reduce_by_value(spec, match, store, field, by_value, reduce_from)
            return
    for flt, members in groups.values():
        _reduce_group(spec, match, store, flt, members, reduce_from)


def _shared_equality_field(groups: dict[Hashable, tuple[Any, list[Work]]]) -> str | None:
    """The field when every filter is ``{field: scalar}`` on the same field (and there are two+)."""
    if len(groups) < 2:
        return None
    field = None
    for flt, _ in groups.values():
        if not isinstance(flt, dict) or len(flt) != 1:
            return None
        (name, value), = flt.items()
        if (field is not None and name != field) or isinstance(value, (list, tuple, set, frozenset, dict)):
            return None
        field = name
    return field


def _reduce_by_value(
    spec: MigrationSpec, match: Match, store: Store, field: str, by_value: dict[Any, list[Work]],
    reduce_from: Callable[..., Any],
) -> None:
    counts = dict.fromkeys(by_value, 0)
    try:
        for page in store.scan({field: list(by_value)}, match.batch_size):
            shares: dict[Any, list[Any]] = {}
            for record in page:
                shares.setdefault(record[field], []).append(record)
            for value, share in shares.items():
                members = by_value[value]
                counts[value] += len(share)
                if not match.cardinality.allows_so_far(counts[value]):
                    _fail_cardinality(spec, match, {field: value}, counts[value], members, early=True)
                else:
                    _reduce_members(match, members, share, reduce_from)
    except StoreUnusableError:
        raise  # the store, not these records: the runner ends the migration
    except Exception as exc:  # the matching store could not be read: retry these records
        for members in by_value.values():
            for w in live(members):
                w.fail(Phase.MATCH, exc, match.retry)
        return
    for value, members in by_value.items():
        if not match.cardinality.allows(counts[value]):
            _fail_cardinality(spec, match, {field: value}, counts[value], members, early=False)


def _fail_cardinality(
    spec: MigrationSpec, match: Match, flt: Any, count: int, members: list[Work], early: bool
) -> None:
    error = _cardinality_error(spec, match, flt, count, early)
    for w in live(members):
        w.fail(Phase.MATCH, error, None)


def _reduce_group(
    spec: MigrationSpec, match: Match, store: Store, flt: Any, members: list[Work],
    reduce_from: Callable[..., Any],
) -> None:
    count = 0
    try:
        for page in store.scan(flt, match.batch_size):
            count += len(page)
            if not match.cardinality.allows_so_far(count):
                _fail_cardinality(spec, match, flt, count, members, early=True)
                return
            _reduce_members(match, members, page, reduce_from)
    except StoreUnusableError:
        raise  # the store, not these records: the runner ends the migration
    except Exception as exc:  # the matching store could not be read: retry these records
        for w in live(members):
            w.fail(Phase.MATCH, exc, match.retry)
        return
    if not match.cardinality.allows(count):
        _fail_cardinality(spec, match, flt, count, members, early=False)


def _reduce_members(match: Match, members: list[Work], batch: list[Any], reduce_from: Callable[..., Any]) -> None:
    """``reduce_from_*`` for each member still alive; one that raises fails alone."""
    for w in members:
        if w.error is None:
            try:
                reduce_from(w.aggregates, batch)
            except Exception as exc:
                w.fail(Phase.MATCH, exc, match.retry)


def _cardinality_error(spec: MigrationSpec, match: Match, flt: Any, count: int, early: bool) -> CardinalityError:
    found = f"at least {count}" if early else str(count)
    return CardinalityError(
        f"migration {spec.name}: Match({match.store!r}) requires {match.cardinality.value} "
        f"record(s) per filter, but filter {flt!r} matched {found}"
    )
