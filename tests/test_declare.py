"""@migration checks a class once, fully, and reports every problem with the signature expected."""

from __future__ import annotations

import math

import pytest

from ferryman import Cardinality, Match, MigrationDefinitionError, Retry, migration
from ferryman.declare import spec_of


def test_defaults_are_mjgs():
    @migration(source="a", dest="b", match=[Match("c")])
    class M:
        def match_with_c(self, record, aggregates, store): ...
        def reduce_from_c(self, aggregates, batch): ...
        def transform(self, aggregates, record): ...

    spec = spec_of(M)
    assert (spec.batch_size, spec.save_batch_size) == (512, 512)
    assert spec.load_retry == spec.save_retry == Retry(times=1, delay=1.0)
    assert spec.cardinality is Cardinality.ZERO_OR_MORE
    assert spec.matches[0] == Match("c", Cardinality.ZERO_OR_MORE, 512, 0, Retry(1, 1.0))
    assert spec.identity == f"{__name__}.test_defaults_are_mjgs.<locals>.M"
    assert spec.name == "M" and spec.order == 0


def test_every_problem_is_reported_at_once():
    with pytest.raises(MigrationDefinitionError) as info:
        @migration(source="a", dest="b", match=[Match("area-codes")])
        class Broken:
            def transfrom(self, aggregates, record): ...
            def match_with_area_codes(self, record): ...
            def reduce_from_zones(self, aggregates, batch): ...
            @staticmethod
            def start_reduction(record, aggregates): ...

    problems = info.value.problems
    text = str(info.value)
    assert "missing method transform (found 'transfrom': misspelled?)" in text
    assert "expected: def transform(self, aggregates, record)" in text
    assert any("match_with_area_codes takes the wrong parameters" in p
               and "expected: def match_with_area_codes(self, record, aggregates, store)" in p
               for p in problems)
    assert any("missing method reduce_from_area_codes" in p for p in problems)
    assert any("reduce_from_zones has no Match" in p for p in problems)
    assert any("start_reduction must be a plain instance method" in p for p in problems)
    assert len(problems) == 5


def test_unknown_option_and_bad_values():
    with pytest.raises(MigrationDefinitionError) as info:
        @migration(source="a", dest="b", batchsize=3, save_batch_size=0, load_retry=3)
        class M:
            def transform(self, aggregates, record): ...

    text = str(info.value)
    assert "unknown option(s) batchsize" in text
    assert "save_batch_size must be an int >= 1" in text
    assert "load_retry must be a Retry" in text


def test_source_equal_to_dest_is_rejected():
    with pytest.raises(MigrationDefinitionError, match="source and dest are the same store 'a'"):
        @migration(source="a", dest="a")
        class M:
            def transform(self, aggregates, record): ...


def test_optional_hooks_and_default_arguments_are_accepted():
    @migration(source="a", dest="b")
    class M:
        def transform(self, aggregates, record, extra=None): ...
        def handle_duplicate(self, *args): ...

    assert spec_of(M).dest == "b"


def test_retry_and_match_validate_themselves():
    with pytest.raises(ValueError, match="Retry.times must be an int >= 0"):
        Retry(times=-1)
    with pytest.raises(ValueError, match="Retry.delay"):
        Retry(delay=-0.5)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        Match("x", batch_size=0)


def test_match_speed_options_validate_themselves_and_show_in_repr():
    match = Match("prices", columns=["price", "sku", "price"], preload=True, preload_max_mb=8)
    assert match.columns == ("price", "sku")  # a tuple, repeats dropped
    assert "columns=('price', 'sku'), preload=True, preload_max_records=100000, preload_max_mb=8" in repr(match)
    assert Match("prices").preload is None and Match("prices", columns="price").columns == ("price",)
    assert Match("prices").read_only is False and "read_only=True" in repr(Match("prices", read_only=True))
    for options, message in [
        ({"columns": ()}, r"Match\('x'\).columns must be field names"),
        ({"columns": ["a", 3]}, "columns must be field names"),
        ({"preload": 1}, r"Match\('x'\).preload must be True, False or None \(automatic\), got 1"),
        ({"preload_max_records": 0}, "preload_max_records must be an int >= 1"),
        ({"preload_max_mb": -1}, "preload_max_mb must be a number of MB > 0, got -1"),
        ({"read_only": 1}, r"Match\('x'\).read_only must be True or False, got 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            Match("x", **options)


def test_strict_matches_run_first_within_an_order_group():
    @migration(source="a", dest="b", match=[
        Match("loose"), Match("later", order=1, cardinality=Cardinality.EXACTLY_ONE),
        Match("strict", cardinality=Cardinality.ONE_OR_MORE),
    ])
    class M:
        def transform(self, aggregates, record): ...
        for _n in ("loose", "later", "strict"):
            exec(f"def match_with_{_n}(self, record, aggregates, store): ...")
            exec(f"def reduce_from_{_n}(self, aggregates, batch): ...")

    assert [m.store for m in spec_of(M).matches] == ["strict", "loose", "later"]


@pytest.mark.parametrize("n", range(4))
def test_cardinality_truth_tables(n):
    assert Cardinality.EXACTLY_ONE.allows(n) == (n == 1)
    assert Cardinality.ONE_OR_MORE.allows(n) == (n >= 1)
    assert Cardinality.ZERO_OR_ONE.allows(n) == (n <= 1)
    assert Cardinality.ZERO_OR_MORE.allows(n)


@pytest.mark.parametrize("signature, fine", [
    ("def transform(self, aggregates, record)", True),
    ("def transform(self, aggs, row)", True),
    ("def transform(self, _aggregates, record)", True),
    ("def transform(self, record, aggregates)", False),
    ("def transform(self, data, item)", False),
    ("def start_reduction(self, aggregates, record)", False),
    ("def handle_duplicate(self, exc, record, outputs, source, dest, registry)", True),
])
def test_parameters_are_checked_by_name(signature, fine):
    namespace: dict[str, object] = {}
    exec(f"{signature}:\n    return []", namespace)
    hook = signature.split("(")[0].split()[-1]
    cls = type("Swapped", (), {"transform": lambda self, aggregates, record: [], hook: namespace[hook]})
    if fine:
        migration(source="a", dest="b")(cls)
        return
    with pytest.raises(MigrationDefinitionError) as info:
        migration(source="a", dest="b")(cls)
    message = str(info.value)
    assert "names its parameters for what it does not receive" in message
    assert f"def {hook}(self, " in message  # the signature expected


@pytest.mark.parametrize("value, fine", [
    (None, True), (0, True), (10, True), (0.05, True), (math.inf, True),
    (-1, False), (1.5, False), (True, False), ("10", False),
])
def test_max_failures_and_depends_on_are_checked(value, fine):
    cls = type("Budgeted", (), {"transform": lambda self, aggregates, record: []})
    if fine:
        assert spec_of(migration(source="a", dest="b", max_failures=value)(cls)).max_failures == value
        return
    with pytest.raises(MigrationDefinitionError, match="max_failures must be"):
        migration(source="a", dest="b", max_failures=value)(cls)


def test_depends_on_takes_names_and_classes():
    first = migration(source="a", dest="b")(type("First", (), {"transform": lambda self, aggregates, record: []}))
    second = migration(source="c", dest="d", depends_on=[first, "Other"])(
        type("Second", (), {"transform": lambda self, aggregates, record: []}))
    assert spec_of(second).depends_on == (f"{first.__module__}.First", "Other")
    with pytest.raises(MigrationDefinitionError, match="depends_on must be a list"):
        migration(source="c", dest="d", depends_on=[3])(type("Third", (), {"transform": lambda self, aggregates, record: []}))
