"""Planning: dependency order inside order groups, stable ties, PlanError naming the culprits."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferryman import Match, PlanError, SqlStore, migration
from ferryman.declare import spec_of
from ferryman.plan import build_plan, dependants


def make(name, source, dest, matches=(), order=0, **options):
    ns = {"transform": lambda self, aggregates, record: []}
    for m in matches:
        ns[f"match_with_{m}"] = lambda self, record, aggregates, store: None
        ns[f"reduce_from_{m}"] = lambda self, aggregates, batch: None
    cls = type(name, (), ns)
    return spec_of(migration(source=source, dest=dest, match=[Match(m) for m in matches],
                             order=order, **options)(cls))


def names(steps):
    return [s.spec.name for s in steps]


STORES = list("abcdefgh")


def test_dependency_order_and_stable_ties():
    specs = [make("E", "c", "e", ["d"]), make("B", "a", "b"), make("D", "c", "d"),
             make("C", "b", "c"), make("G", "f", "g")]
    steps = build_plan(specs, STORES)
    assert names(steps) == ["B", "C", "D", "E", "G"]
    assert steps[3].after == ("C", "D")
    assert "after C (reads 'c', which it writes); after D (reads 'd', which it writes)" in steps[3].explain()


def test_order_groups_run_in_ascending_order_even_against_dependencies():
    specs = [make("Refill", "backup", "a", order=1), make("Backup", "a", "backup", order=0)]
    assert names(build_plan(specs, ["a", "backup"])) == ["Backup", "Refill"]


@pytest.mark.parametrize("specs, fragment, culprits", [
    (lambda: [make("X", "a", "zz")], "unknown store(s) 'zz'", ["X"]),
    (lambda: [make("X", "a", "b", ["b"])], "reads the store it writes ('b')", ["X"]),
    (lambda: [make("X", "a", "c"), make("Y", "b", "c")], "both write store 'c'", ["X", "Y"]),
    (lambda: [make("X", "a", "b", ["c"]), make("Y", "b", "c")], "dependency cycle", ["X", "Y"]),
])
def test_plan_errors_name_the_migrations(specs, fragment, culprits):
    with pytest.raises(PlanError) as info:
        build_plan(specs(), STORES)
    assert fragment in str(info.value)
    assert sorted(m.rsplit(".", 1)[-1] for m in info.value.migrations) == culprits


def test_two_writers_in_different_groups_are_fine():
    specs = [make("X", "a", "c"), make("Y", "b", "c", order=1)]
    assert names(build_plan(specs, STORES)) == ["X", "Y"]


def test_dependants_are_transitive():
    specs = [make("A", "a", "b"), make("B", "b", "e"), make("C", "c", "d"), make("D", "d", "e2"),
             make("E", "e", "f", ["e2"]), make("F", "g", "h")]
    steps = build_plan(specs, [*STORES, "e2"])
    failed = next(s.spec for s in steps if s.spec.name == "B")
    assert [s.name for s in dependants(steps, failed)] == ["E"]
    failed = next(s.spec for s in steps if s.spec.name == "A")
    assert [s.name for s in dependants(steps, failed)] == ["B", "E"]


@st.composite
def acyclic_specs(draw):
    """Random DAGs: migration i reads stores written by lower-numbered migrations only."""
    n = draw(st.integers(1, 8))
    specs = []
    for i in range(n):
        inputs = draw(st.lists(st.integers(-1, i - 1), min_size=1, max_size=3, unique=True))
        reads = [f"s{j}" if j >= 0 else "raw" for j in inputs]
        specs.append(make(f"M{i}", reads[0], f"s{i}", reads[1:]))
    return draw(st.permutations(specs))


@settings(max_examples=150, deadline=None)
@given(acyclic_specs())
def test_every_plan_runs_writers_before_readers(specs):
    stores = ["raw", *(f"s{i}" for i in range(len(specs)))]
    steps = build_plan(specs, stores)
    assert sorted(names(steps)) == sorted(s.name for s in specs)
    position = {s.spec.dest: i for i, s in enumerate(steps)}
    for i, step in enumerate(steps):
        for store in step.spec.reads:
            assert position.get(store, -1) < i
    assert names(build_plan(list(specs), stores)) == names(steps)  # deterministic


def sql_stores(tmp_path, *tables):
    """Stores named by their (name, file, table) on SQLite files in ``tmp_path``."""
    return {name: SqlStore(name, f"sqlite:///{tmp_path}/{file}", table) for name, file, table in tables}


def test_two_stores_on_one_table_are_one_dataset(tmp_path):
    stores = sql_stores(tmp_path, ("src", "a.db", "src"), ("out", "b.db", "out"),
                        ("out_again", "./b.db", "out"), ("report", "c.db", "report"))
    specs = [make("Report", "out_again", "report"), make("Copy", "src", "out")]
    steps = build_plan(specs, stores)
    assert names(steps) == ["Copy", "Report"]
    assert "after Copy (reads 'out_again', the same data as 'out', which it writes)" in steps[1].explain()
    failed = next(s.spec for s in steps if s.spec.name == "Copy")
    assert [s.name for s in dependants(steps, failed)] == ["Report"]


def test_datasets_ignore_driver_credentials_and_spelling():
    a = SqlStore("a", "postgresql+psycopg://u:secret@LocalHost/db", "t")
    b = SqlStore("b", "postgresql://other@127.0.0.1:5432/db", "t", schema="public")
    c = SqlStore("c", "postgresql://other@127.0.0.1:5432/db2", "t")
    d = SqlStore("d", "postgresql://db.example/db", "t", dataset="postgresql://127.0.0.1:5432/db/public.t")
    assert a.dataset == b.dataset == d.dataset == "postgresql://127.0.0.1:5432/db/public.t"
    assert c.dataset != a.dataset and "secret" not in a.dataset


@pytest.mark.parametrize("specs, fragment", [
    (lambda: [make("X", "src", "out"), make("Y", "out_again", "out2", ["out"])], None),
    (lambda: [make("X", "src", "out", ["out_again"])], "reads the store it writes ('out') (store 'out_again'"),
    (lambda: [make("X", "src", "out"), make("Y", "src", "out_again")], "both write store"),
])
def test_plan_errors_see_through_store_names(tmp_path, specs, fragment):
    stores = sql_stores(tmp_path, ("src", "a.db", "src"), ("out", "b.db", "out"), ("out_again", "b.db", "out"),
                        ("out2", "c.db", "out2"))
    if fragment is None:
        assert names(build_plan(specs(), stores)) == ["X", "Y"]
        return
    with pytest.raises(PlanError, match=re.escape(fragment)):
        build_plan(specs(), stores)


def test_depends_on_orders_and_holds_back(tmp_path):
    first = make("First", "a", "b")
    specs = [make("Second", "c", "d", depends_on=["First"]), make("Third", "e", "f", depends_on=[first.cls]), first]
    steps = build_plan(specs, STORES)
    assert names(steps) == ["First", "Second", "Third"]
    assert "after First (depends_on)" in steps[1].explain()
    assert [s.name for s in dependants(steps, first)] == ["Second", "Third"]


@pytest.mark.parametrize("specs, fragment", [
    (lambda: [make("X", "a", "b", depends_on=["Nope"])], "depends on 'Nope', which is not a migration"),
    (lambda: [make("X", "a", "b", depends_on=["Y"]), make("Y", "c", "d", order=1)], "runs later (order 1)"),
    (lambda: [make("X", "a", "b", depends_on=["Y"]), make("Y", "c", "d", depends_on=["X"])], "dependency cycle"),
])
def test_impossible_depends_on_is_a_plan_error(specs, fragment):
    with pytest.raises(PlanError, match=re.escape(fragment)):
        build_plan(specs(), STORES)
