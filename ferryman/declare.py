"""``@migration`` and its option objects: how a user declares one migration.

The decorator checks the whole class at once and raises one :class:`MigrationDefinitionError`
listing every problem with the exact signature expected, so a user fixes a class in one go
instead of one error per run (mjg's annotation processor did the same at compile time).
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from .defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_ORDER,
    DEFAULT_RETRY_DELAY,
    DEFAULT_RETRY_TIMES,
    DEFAULT_SAVE_BATCH_SIZE,
    PRELOAD_MAX_MB,
    PRELOAD_MAX_RECORDS,
)
from .errors import MigrationDefinitionError
from .types import Record

T = TypeVar("T", bound=type)


class Cardinality(str, Enum):
    """How many records a match may find, or a transform may return, for one input record."""

    EXACTLY_ONE = "EXACTLY_ONE"
    ONE_OR_MORE = "ONE_OR_MORE"
    ZERO_OR_ONE = "ZERO_OR_ONE"
    ZERO_OR_MORE = "ZERO_OR_MORE"

    @property
    def bounds(self) -> tuple[int, float]:
        """The least and most records allowed (``inf`` for no most)."""
        return _BOUNDS[self.value]

    def allows(self, n: int) -> bool:
        """True when a final count of ``n`` conforms."""
        low, high = _BOUNDS[self.value]
        return low <= n <= high

    @property
    def strict(self) -> bool:
        """True for cardinalities that need at least one record."""
        return self in (Cardinality.EXACTLY_ONE, Cardinality.ONE_OR_MORE)


_BOUNDS: dict[str, tuple[int, float]] = {
    "EXACTLY_ONE": (1, 1), "ONE_OR_MORE": (1, math.inf), "ZERO_OR_ONE": (0, 1), "ZERO_OR_MORE": (0, math.inf),
}


@dataclass(frozen=True)
class Retry:
    """Extra attempts after the first one, and the pause between attempts (seconds)."""

    times: int = DEFAULT_RETRY_TIMES
    delay: float = DEFAULT_RETRY_DELAY

    def __post_init__(self) -> None:
        if not isinstance(self.times, int) or isinstance(self.times, bool) or self.times < 0:
            raise ValueError(f"Retry.times must be an int >= 0, got {self.times!r}")
        if not isinstance(self.delay, (int, float)) or isinstance(self.delay, bool) or self.delay < 0:
            raise ValueError(f"Retry.delay must be a number of seconds >= 0, got {self.delay!r}")


def method_suffix(store_name: str) -> str:
    """The store name as it appears in ``match_with_<x>`` / ``reduce_from_<x>``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", store_name)


@dataclass(frozen=True)
class Match:
    """A related store whose matching records are reduced into each input record's aggregates.

    ``columns`` names the fields ``reduce_from_*`` needs (None: whole records); the records it
    receives then hold those fields, the store's key and the fields the filter names, which
    ferryman needs to page and share out the matches. ``preload`` loads the store into memory
    once per migration and answers every page's filters from there: True always (within
    ``preload_max_mb``), False never, None when the store counts at most ``preload_max_records``
    records. How matching picks its path is described in ``ferryman/pipeline/match.py``.

    ``read_only=True`` is the migration's promise that its ``reduce_from_*`` and ``transform``
    never change a matched record: a preloaded store's records are then handed out as read-only
    mappings made once per run and shared by every page, where by default each page gets fresh
    copies (a reduce may change its batch, and that must not reach the records matched later).
    Changing one then raises TypeError (the record fails) instead of corrupting later records;
    ``dict(record)`` gives a copy to change or keep. Records with mutable values (a JSON list)
    and records read page by page from the store are handed out as without it.

    ``cardinality`` may be a function of the source record giving its Cardinality, when how many
    matches a record needs depends on the record (an invoice line needs its discount only when it
    has a discount code).
    """

    store: str
    cardinality: Cardinality | Callable[[Record], Cardinality] = Cardinality.ZERO_OR_MORE
    batch_size: int = DEFAULT_BATCH_SIZE
    order: int = DEFAULT_ORDER
    retry: Retry = field(default_factory=Retry)
    columns: tuple[str, ...] | None = None
    preload: bool | None = None
    preload_max_records: int = PRELOAD_MAX_RECORDS
    preload_max_mb: float = PRELOAD_MAX_MB
    read_only: bool = False

    def __post_init__(self) -> None:
        label = f"Match({self.store!r})"
        if not isinstance(self.store, str) or not self.store:
            raise ValueError(f"Match needs a store name, got {self.store!r}")
        if not callable(self.cardinality):
            object.__setattr__(self, "cardinality", Cardinality(self.cardinality))
        _check_positive(f"{label}.batch_size", self.batch_size)
        if self.columns is not None:
            columns = (self.columns,) if isinstance(self.columns, str) else self.columns
            try:
                columns = tuple(columns)
            except TypeError:
                columns = ()
            if not columns or not all(isinstance(c, str) and c for c in columns):
                raise ValueError(f"{label}.columns must be field names (a non-empty tuple of "
                                 f"strings) or None, got {self.columns!r}")
            object.__setattr__(self, "columns", tuple(dict.fromkeys(columns)))
        if not (self.preload is None or isinstance(self.preload, bool)):
            raise ValueError(f"{label}.preload must be True, False or None (automatic), got {self.preload!r}")
        _check_positive(f"{label}.preload_max_records", self.preload_max_records)
        if (not isinstance(self.preload_max_mb, (int, float)) or isinstance(self.preload_max_mb, bool)
                or not self.preload_max_mb > 0):
            raise ValueError(f"{label}.preload_max_mb must be a number of MB > 0, got {self.preload_max_mb!r}")
        if not isinstance(self.read_only, bool):
            raise ValueError(f"{label}.read_only must be True or False, got {self.read_only!r}")

    @property
    def match_method(self) -> str:
        return f"match_with_{method_suffix(self.store)}"

    @property
    def reduce_method(self) -> str:
        return f"reduce_from_{method_suffix(self.store)}"

    @property
    def label(self) -> str:
        """How messages name this Match."""
        return f"Match({self.store!r})"

    @property
    def methods(self) -> dict[str, tuple[str, ...]]:
        """The methods the migration class must have for this Match, with their parameters."""
        return {self.match_method: _MATCH_PARAMS, self.reduce_method: _REDUCE_PARAMS}

    def hooks(self, instance: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """``match_with_*`` and ``reduce_from_*`` of the migration ``instance``."""
        return getattr(instance, self.match_method), getattr(instance, self.reduce_method)

    @property
    def fixed_cardinality(self) -> Cardinality | None:
        """The cardinality, or None when it is a function of the record."""
        return self.cardinality if isinstance(self.cardinality, Cardinality) else None

    def cardinality_for(self, record: Record) -> Cardinality:
        """The cardinality that applies to ``record``'s matches."""
        if isinstance(self.cardinality, Cardinality):
            return self.cardinality
        return Cardinality(self.cardinality(record))

    @property
    def fails_fast(self) -> bool:
        """True when it should run before the other Matches of its order: a fixed strict
        cardinality fails a record before the others read anything for it."""
        return self.fixed_cardinality is not None and self.fixed_cardinality.strict


@dataclass(frozen=True)
class MigrationSpec:
    """Everything ``@migration`` learned about a class, checked and frozen."""

    cls: type
    identity: str
    name: str
    source: str
    dest: str
    matches: tuple[Match, ...]
    batch_size: int
    save_batch_size: int
    cardinality: Cardinality
    load_retry: Retry
    save_retry: Retry
    order: int
    depends_on: tuple[str, ...] = ()
    """Names or identities of migrations that must run (and succeed) first."""
    max_failures: int | float | None = None
    """The failure budget: see :func:`check_max_failures`."""
    partition: bool = True
    """Whether a run with several workers may split its source into key ranges run at once
    (False: the records must be met in one order, by one process)."""

    @property
    def reads(self) -> frozenset[str]:
        """Every store this migration reads: its source and its matches."""
        return frozenset([self.source, *(m.store for m in self.matches)])

    def __repr__(self) -> str:
        return f"MigrationSpec({self.identity}: {self.source} -> {self.dest})"


# name -> (parameters after self, description used in messages)
_HOOKS: dict[str, tuple[str, ...]] = {
    "transform": ("aggregates", "record"),
    "start_reduction": ("record", "aggregates"),
    "handle_duplicate": ("error", "record", "outputs", "source", "dest", "registry"),
    "verify": ("record", "outputs", "stored"),
}
_MATCH_PARAMS = ("record", "aggregates", "store")
_REDUCE_PARAMS = ("aggregates", "batch")
_OPTIONS = {
    "source", "dest", "match", "batch_size", "save_batch_size", "cardinality",
    "load_retry", "save_retry", "order", "name", "depends_on", "max_failures", "partition",
}
PARAMETER_ALIASES: dict[str, frozenset[str]] = {
    "record": frozenset({"rec", "row", "item"}),
    "aggregates": frozenset({"agg", "aggs", "acc"}),
    "batch": frozenset({"page", "matches"}),
    "error": frozenset({"err", "exc", "exception"}),
}
"""Other names a hook's parameter may have. Hooks are called by position, so a parameter named
for another one (``def transform(self, record, aggregates)``: swapped) is refused; a name that
starts with ``_`` says "unused" and is always fine."""


def check_max_failures(value: Any) -> int | float | None:
    """A failure budget: None (the default rule: stop when the first
    :data:`~ferryman.defaults.DEFAULT_ALL_FAILED_LIMIT` records of a run all failed), an int
    N >= 0 (stop when more than N records failed in a run), a ratio in (0, 1) (stop when more
    than that share of the records attempted failed, judged from
    :data:`~ferryman.defaults.FAILURE_RATIO_MIN_RECORDS` records on) or ``math.inf`` (never)."""
    if value is None or value == math.inf:
        return value  # type: ignore[no-any-return]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and 0 < value < 1:
        return value
    raise ValueError(
        f"max_failures must be None, an int >= 0, a ratio between 0 and 1, or math.inf; got {value!r}"
    )


def _check_positive(what: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")


def _signature(name: str, params: Sequence[str]) -> str:
    return f"def {name}(self, {', '.join(params)})"


def _check_method(cls: type, name: str, params: Sequence[str], required: bool) -> str | None:
    """A problem with method ``name`` of ``cls``, or None when it is fine (or optional and absent)."""
    attr = inspect.getattr_static(cls, name, None)
    expected = _signature(name, params)
    if attr is None:
        if not required:
            return None
        close = difflib.get_close_matches(name, [n for n in dir(cls) if not n.startswith("__")], n=1)
        hint = f" (found {close[0]!r}: misspelled?)" if close else ""
        return f"missing method {name}{hint}; expected: {expected}"
    if isinstance(attr, (staticmethod, classmethod)) or not callable(attr):
        return f"{name} must be a plain instance method; expected: {expected}"
    sig = inspect.signature(attr)
    positional = [
        p for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    has_varargs = any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())
    required_count = sum(1 for p in positional if p.default is p.empty)
    wanted = len(params) + 1  # self
    if has_varargs and required_count <= wanted:
        return None
    if not (required_count <= wanted <= len(positional)):
        got = f"def {name}{sig}"
        return f"{name} takes the wrong parameters: {got}; expected: {expected}"
    misnamed = [(p.name, want) for p, want in zip(positional[1:], params) if not _may_be_called(p.name, want)]
    if misnamed:
        given = ", ".join(f"{got!r} where {want!r} is passed" for got, want in misnamed)
        return (f"{name} names its parameters for what it does not receive ({given}); "
                f"expected: {expected} (prefix a parameter with _ if it is unused)")
    return None


def _may_be_called(given: str, expected: str) -> bool:
    return given == expected or given.startswith("_") or given in PARAMETER_ALIASES.get(expected, ())


def _definition_problems(cls: type, spec_kwargs: dict[str, Any], matches: Sequence[Match]) -> list[str]:
    problems: list[str] = []
    for name, params in _HOOKS.items():
        problem = _check_method(cls, name, params, required=(name == "transform"))
        if problem:
            problems.append(problem)
    seen: set[str] = set()
    declared: set[str] = set()
    for m in matches:
        if not m.methods:
            continue
        if m.store in seen:
            problems.append(f"store {m.store!r} is matched twice; declare one Match per store")
        seen.add(m.store)
        for method, params in m.methods.items():
            declared.add(method)
            problem = _check_method(cls, method, params, required=True)
            if problem:
                problems.append(problem)
    for attr in dir(cls):
        if attr.startswith(("match_with_", "reduce_from_")) and attr not in declared:
            problems.append(
                f"method {attr} has no Match for it; add Match({attr.split('_', 2)[2]!r}) to "
                "match=[...] or rename the method"
            )
    if spec_kwargs["source"] == spec_kwargs["dest"]:
        problems.append(f"source and dest are the same store {spec_kwargs['source']!r}")
    return problems


def migration(**options: Any) -> Callable[[T], T]:
    """Declare a migration class: read ``source``, match, transform, save to ``dest``.

    Every option is described in the README; the defaults are mjg's (batches of 512, one retry after
    one second, cardinality ZERO_OR_MORE). Raises :class:`MigrationDefinitionError` listing
    every problem of the class at once.
    """

    def decorate(cls: T) -> T:
        from .lookup import Lookup, compile_matches  # lookup.py builds on Match, defined here

        name = getattr(cls, "__qualname__", repr(cls))
        if not inspect.isclass(cls):
            raise MigrationDefinitionError(name, ["@migration decorates classes only"])
        problems: list[str] = []
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            problems.append(
                f"unknown option(s) {', '.join(unknown)}; known options: {', '.join(sorted(_OPTIONS))}"
            )
        for required in ("source", "dest"):
            if not isinstance(options.get(required), str) or not options.get(required):
                problems.append(f"option {required}= must be a store name (a non-empty string)")
        raw_matches = options.get("match", ())
        if isinstance(raw_matches, (Match, Lookup)):
            raw_matches = [raw_matches]
        if isinstance(raw_matches, (list, tuple)):
            matches, match_problems = compile_matches(raw_matches)
            problems.extend(match_problems)
        else:
            matches = []
            problems.append("match= must be a list of Match(...) and Lookup(...) objects")
        values: dict[str, Any] = {
            "batch_size": options.get("batch_size", DEFAULT_BATCH_SIZE),
            "save_batch_size": options.get("save_batch_size", DEFAULT_SAVE_BATCH_SIZE),
            "order": options.get("order", DEFAULT_ORDER),
            "load_retry": options.get("load_retry", Retry()),
            "save_retry": options.get("save_retry", Retry()),
        }
        for opt in ("batch_size", "save_batch_size"):
            try:
                _check_positive(opt, values[opt])
            except ValueError as exc:
                problems.append(str(exc))
        if not isinstance(values["order"], int) or isinstance(values["order"], bool):
            problems.append(f"order must be an int, got {values['order']!r}")
        for opt in ("load_retry", "save_retry"):
            if not isinstance(values[opt], Retry):
                problems.append(f"{opt} must be a Retry(times=..., delay=...), got {values[opt]!r}")
        try:
            cardinality = Cardinality(options.get("cardinality", Cardinality.ZERO_OR_MORE))
        except ValueError:
            problems.append(
                f"cardinality must be a Cardinality, got {options.get('cardinality')!r}"
            )
            cardinality = Cardinality.ZERO_OR_MORE
        depends_on = options.get("depends_on", ())
        if isinstance(depends_on, (str, type)):
            depends_on = [depends_on]
        refs = [_migration_ref(d) for d in depends_on] if isinstance(depends_on, (list, tuple)) else [None]
        if None in refs:
            problems.append("depends_on must be a list of migration names, identities or @migration classes")
        try:
            max_failures = check_max_failures(options.get("max_failures"))
        except ValueError as exc:
            problems.append(str(exc))
            max_failures = None
        partition = options.get("partition", True)
        if not isinstance(partition, bool):
            problems.append(f"partition must be True or False, got {partition!r}")
        display = options.get("name", cls.__name__)
        if not isinstance(display, str) or not display:
            problems.append(f"name must be a non-empty string, got {display!r}")
        if not problems:
            problems.extend(_definition_problems(cls, options, matches))
        if problems:
            raise MigrationDefinitionError(name, problems)
        ordered = sorted(
            enumerate(matches),
            # strict cardinalities first inside one order: they fail fast (mjg meant this too)
            key=lambda im: (im[1].order, 0 if im[1].fails_fast else 1, im[0]),
        )
        cls.__ferryman_spec__ = MigrationSpec(  # type: ignore[attr-defined]
            cls=cls,
            identity=f"{cls.__module__}.{cls.__qualname__}",
            name=display,
            source=options["source"],
            dest=options["dest"],
            matches=tuple(m for _, m in ordered),
            cardinality=cardinality,
            depends_on=tuple(r for r in refs if r is not None),
            max_failures=max_failures,
            partition=partition is not False,
            **values,
        )
        return cls

    return decorate


def _migration_ref(ref: Any) -> str | None:
    """A ``depends_on`` entry as a name or identity (a class gives its identity)."""
    if isinstance(ref, str) and ref:
        return ref
    if inspect.isclass(ref):
        return f"{ref.__module__}.{ref.__qualname__}"
    return None


def spec_of(obj: Any) -> MigrationSpec:
    """The spec of a ``@migration`` class or instance; TypeError for anything else."""
    cls = obj if inspect.isclass(obj) else type(obj)
    spec = cls.__dict__.get("__ferryman_spec__")
    if not isinstance(spec, MigrationSpec):
        raise TypeError(f"{cls.__qualname__} is not decorated with @migration")
    return spec
