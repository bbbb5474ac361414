"""``Lookup``: a many-to-one join in one line, compiled into a :class:`Match` and its hooks.

``Lookup("tracks", on={"TrackId": "track_id"}, into="track", required=True)`` puts the track whose
``TrackId`` equals the record's ``track_id`` into ``aggregates["track"]`` (None when there is
none), as a ``Match`` with a ``match_with_*`` returning ``{"TrackId": record["track_id"]}`` and a
``reduce_from_*`` doing ``aggregates["track"] = batch[0]`` would. ``@migration`` compiles each
Lookup into exactly that (:class:`LookupMatch`), so a Lookup is matched as any Match is: from a
preloaded store when it is small, by one set query per page of records otherwise.

A value of ``on`` names a field of the source record, or, written ``"into.field"``, a field of
the record an earlier Lookup of the same migration put into ``aggregates[into]`` (a chained
lookup: an invoice line's track, then the track's album). Lookups run in the order they are
listed, after the Matches of a lower ``order``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .declare import Cardinality, Match
from .errors import CardinalityError
from .types import Aggregates, Record

Required = bool | Callable[[Record], bool]

MATCH_OPTIONS = ("order", "retry", "columns", "preload", "preload_max_records", "preload_max_mb", "read_only")
"""The options a Lookup passes on to its Match (``Match`` says what each does)."""


class Lookup:
    """The record of ``store`` whose fields equal the source record's, put into
    ``aggregates[into]``: at most one (``required=False``, ZERO_OR_ONE: None when there is none)
    or exactly one (``required=True``, EXACTLY_ONE: the record fails without it).

    Args:
        store: the store to look in.
        on: ``{store_field: source}``: ``source`` is a field of the source record, or
            ``"into.field"``, a field of an earlier Lookup's record.
        into: the aggregates key the record is put into.
        required: True, False, or a function of the source record saying whether it needs one.
        **options: ``order``, ``retry``, ``columns``, ``preload``, ``preload_max_records``,
            ``preload_max_mb``, ``read_only``, as for :class:`Match`.

    Nothing is checked here: ``@migration`` reports every problem of its Lookups together with
    the class's others.
    """

    def __init__(self, store: str, on: Mapping[str, str] | None = None, into: str | None = None,
                 required: Required = False, **options: Any) -> None:
        self.store = store
        self.on = on
        self.into = into
        self.required = required
        self.options = options

    def __repr__(self) -> str:
        return f"Lookup({self.store!r}, into={self.into!r})"


@dataclass(frozen=True)
class _Key:
    """One field of a Lookup's filter: ``field`` of the looked-up store equals ``name`` of the
    source record (``source`` None) or of ``aggregates[source]``."""

    field: str
    source: str | None
    name: str

    def __str__(self) -> str:
        return self.name if self.source is None else f"{self.source}.{self.name}"


@dataclass(frozen=True)
class LookupMatch(Match):
    """A :class:`Match` whose hooks a :class:`Lookup` made: no methods to write."""

    into: str = ""
    keys: tuple[_Key, ...] = ()
    required: Required = False

    @property
    def label(self) -> str:
        return f"Lookup({self.store!r}, into={self.into!r})"

    @property
    def methods(self) -> dict[str, tuple[str, ...]]:
        return {}

    @property
    def fails_fast(self) -> bool:
        return False  # Lookups keep their listed order: a chained one reads an earlier one

    def needs_one(self, record: Record) -> bool:
        required = self.required
        return bool(required(record)) if callable(required) else required

    def hooks(self, instance: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
        into, keys, label = self.into, self.keys, self.label

        def match_with(record: Record, aggregates: Aggregates, _store: Any) -> dict[str, Any] | None:
            aggregates[into] = None
            flt: dict[str, Any] = {}
            for key in keys:
                holder = record if key.source is None else aggregates.get(key.source)
                value = None if holder is None else _field(holder, key, label)
                if value is None:
                    if self.needs_one(record):
                        found = "" if holder is not None else f" ({key.source} found no record)"
                        what = f"the record's {key.name}" if key.source is None else str(key)
                        raise CardinalityError(f"{label} is required, but {what} is None{found}")
                    return None
                flt[key.field] = value
            return flt

        def reduce_from(aggregates: Aggregates, batch: list[Record]) -> None:
            aggregates[into] = batch[0]

        return match_with, reduce_from


def _field(holder: Record, key: _Key, label: str) -> Any:
    try:
        return holder[key.name]
    except KeyError:
        whose = "the source record" if key.source is None else f"the {key.source} record"
        raise KeyError(f"{label}: {whose} has no field {key.name!r} (on={{{key.field!r}: {str(key)!r}}})") from None


def compile_matches(items: Sequence[Any]) -> tuple[list[Match], list[str]]:
    """``match=[...]`` as Matches (each Lookup compiled), and every problem found."""
    matches: list[Match] = []
    problems: list[str] = []
    earlier: dict[str, Lookup] = {}
    for item in items:
        if isinstance(item, Match):
            matches.append(item)
        elif isinstance(item, Lookup):
            compiled = _compile(item, earlier, problems)
            if isinstance(item.into, str) and item.into not in earlier:
                earlier[item.into] = item
            if compiled is not None:
                matches.append(compiled)
        else:
            problems.append(f"match= must be a list of Match(...) and Lookup(...) objects, got {item!r}")
    return matches, problems


def _compile(lookup: Lookup, earlier: Mapping[str, Lookup], problems: list[str]) -> LookupMatch | None:
    """The Match of ``lookup``, or None after adding its problems to ``problems``; ``earlier``
    are the Lookups listed before it, by ``into``."""
    found: list[str] = []
    label = repr(lookup)
    if not isinstance(lookup.store, str) or not lookup.store:
        found.append(f"Lookup needs a store name, got {lookup.store!r}")
    unknown = sorted(set(lookup.options) - set(MATCH_OPTIONS))
    if unknown:
        found.append(f"{label}: unknown option(s) {', '.join(unknown)}; known options: on, into, required, "
                     f"{', '.join(MATCH_OPTIONS)}")
    if not isinstance(lookup.into, str) or not lookup.into:
        found.append(f"{label}: into= must name the aggregates key the record goes into (a non-empty string)")
    elif lookup.into in earlier:
        found.append(f"{label}: into={lookup.into!r} is already the into= of {earlier[lookup.into]!r}; "
                     "give each Lookup its own")
    if not (isinstance(lookup.required, bool) or callable(lookup.required)):
        found.append(f"{label}: required= must be True, False or a function of the record, got {lookup.required!r}")
    keys = _keys(lookup, label, earlier, found)
    options = {k: v for k, v in lookup.options.items() if k in MATCH_OPTIONS}
    order = options.get("order", 0)
    for key in keys:
        before = earlier[key.source].options.get("order", 0) if key.source is not None else order
        if isinstance(order, int) and isinstance(before, int) and before > order:
            found.append(f"{label}: reads {key}, but Lookup into={key.source!r} runs later (order {before} > {order})")
    compiled = None
    if isinstance(lookup.store, str) and lookup.store:
        try:
            compiled = LookupMatch(lookup.store, cardinality=_cardinality(lookup.required), into=str(lookup.into),
                                   keys=keys, required=lookup.required, **options)
        except (ValueError, TypeError) as exc:
            found.append(f"{label}: {str(exc).replace(f'Match({lookup.store!r})', 'Lookup')}")
    problems.extend(found)
    return None if found else compiled


def _cardinality(required: Required) -> Cardinality | Callable[[Record], Cardinality]:
    """EXACTLY_ONE where a record is required, else ZERO_OR_ONE; per record for a function."""
    if not callable(required):
        return Cardinality.EXACTLY_ONE if required else Cardinality.ZERO_OR_ONE

    def per_record(record: Record) -> Cardinality:
        return Cardinality.EXACTLY_ONE if required(record) else Cardinality.ZERO_OR_ONE

    return per_record


def _keys(lookup: Lookup, label: str, earlier: Mapping[str, Lookup], found: list[str]) -> tuple[_Key, ...]:
    """The fields of ``lookup``'s filter; a problem for each ``on`` entry that cannot be one."""
    on = lookup.on
    if not isinstance(on, Mapping) or not on:
        found.append(f"{label}: on= must map the store's fields to the record's, e.g. "
                     "on={'TrackId': 'track_id'}, or to an earlier Lookup's ('track.AlbumId')")
        return ()
    keys: list[_Key] = []
    for field, source in on.items():
        if not isinstance(field, str) or not field or not isinstance(source, str) or not source:
            found.append(f"{label}: on={{{field!r}: {source!r}}} must map a field name to a field name")
            continue
        into, dot, name = source.partition(".")
        if not dot:
            keys.append(_Key(field, None, source))
        elif into in earlier and name:
            keys.append(_Key(field, into, name))
        else:
            listed = ", ".join(repr(k) for k in earlier) or "none"
            found.append(f"{label}: on={{{field!r}: {source!r}}} reads {into!r}, which no earlier Lookup "
                         f"puts into the aggregates (earlier into= values: {listed}); list that Lookup first")
    return tuple(keys)
