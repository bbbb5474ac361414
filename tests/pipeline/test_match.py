"""Matching: every path (preloaded, set-oriented, per filter) gives what the per-filter path gives.

The reference is the per-filter path as a store gives it when it implements only the reading
contract (``read_page``): :class:`ContractOnly` wraps a store and hides everything else, so
``Store``'s defaults answer one filter at a time. The same migration then runs against the store
itself with ``preload`` False, True and None; aggregates (every ``reduce_from_*`` batch, with its
records' fields), outputs and failures must be identical, for random data and random filters
(equality, "in" lists, composite, None values, ``{}``, a None filter) on MemoryStore, SQLite,
PostgreSQL and MariaDB. With ``Match(read_only=True)`` (preloaded records shared, not copied) the
same migration, less its reduce's change to the records, must give what it gives without.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman import (
    Cardinality,
    Match,
    MemoryStore,
    MigrationProgress,
    MigrationService,
    Retry,
    SqlStore,
    Store,
    migration,
)
from ferryman.errors import StoreUnusableError
from ferryman.pipeline import preload as preload_module

FAST = Retry(times=1, delay=0)
KINDS = ("a", "a", "a", "b", "ab", "ab", "in", "none", "null", "all", "mixed", "key")  # mostly equalities
A_VALUES = st.one_of(st.none(), st.integers(0, 3), st.integers(0, 3))
B_VALUES = st.sampled_from([None, "x", "X", "y", "z", "z "])


class ContractOnly(Store):
    """A store reduced to the reading contract: matching through ``Store``'s defaults."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner.name, inner.key)
        self.inner = inner

    def read_page(self, filter, after, limit):
        return self.inner.read_page(filter, after, limit)

    def get_many(self, ids):
        return self.inner.get_many(ids)

    def save_all(self, records, *, journal=None):
        self.inner.save_all(records, journal=journal)


# --- data and the migration -----------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    string_keys = draw(st.booleans())

    def key(n: int) -> Any:
        return f"{'aBcD'[n % 4]}{n:03d}" if string_keys else n  # case and digits: collations differ

    matched = [
        {"id": key(i), "a": draw(A_VALUES), "b": draw(B_VALUES), "v": i}
        for i in range(draw(st.integers(0, 12)))
    ]
    sources = [
        {"id": i, "kind": draw(st.sampled_from(kinds)), "x": draw(A_VALUES), "y": draw(B_VALUES),
         "k": key(draw(st.integers(0, 12)))}
        for i in range(1, draw(st.integers(1, 14)) + 1)
    ]
    return {
        "string_keys": string_keys,
        "matched": matched,
        "sources": sources,
        "cardinality": draw(st.sampled_from(list(Cardinality))),
        "batch_size": draw(st.integers(1, 3)),
        "columns": draw(st.sampled_from([None, ("v",)])),
        "bad_match": draw(st.sets(st.integers(1, 10), max_size=2)),
        "flaky": draw(st.sets(st.integers(1, 10), max_size=2)),
        "bad_v": draw(st.sets(st.integers(0, 12), max_size=2)),
    }


def make_filter(record: dict[str, Any]) -> Any:
    x, y = record["x"], record["y"]
    return {
        "a": {"a": x}, "b": {"b": y}, "ab": {"a": x, "b": y}, "in": {"a": [x, 2]}, "none": None,
        "null": {"a": None}, "all": {}, "mixed": {"a": x, "b": [y, "y"]}, "key": {"id": record["k"]},
    }[record["kind"]]


def make_migration(scenario: dict[str, Any], preload: bool | None, read_only: bool | None = None) -> type:
    """The migration under test: two Matches, the second (order 1) filtering on what the first
    reduced; failures in match_with, reduce_from, and on the first attempt only (retried).
    ``read_only`` None: the Matches are not read-only and the first reduce changes its batch;
    True or False: the Matches' ``read_only``, and no reduce changes a record."""
    attempts: dict[int, int] = {}
    shared = bool(read_only)
    first = Match("m", cardinality=scenario["cardinality"], batch_size=scenario["batch_size"],
                  retry=FAST, columns=scenario["columns"], preload=preload, read_only=shared)
    second = Match("n", batch_size=2, order=1, retry=FAST, preload=preload, read_only=shared)

    @migration(source="src", dest="dst", match=[second, first], load_retry=FAST, save_retry=FAST)
    class Matching:
        def start_reduction(self, record, aggregates):
            aggregates.update(m=[], n=[])

        def match_with_m(self, record, aggregates, store):
            attempts[record["id"]] = attempts.get(record["id"], 0) + 1
            if record["id"] in scenario["bad_match"]:
                raise ValueError(f"no filter for {record['id']}")
            if record["id"] in scenario["flaky"] and attempts[record["id"]] == 1:
                raise TimeoutError(f"flaky {record['id']}")
            return make_filter(record)

        def reduce_from_m(self, aggregates, batch):
            aggregates["m"].append([sorted(r.items(), key=str) for r in batch])
            if any(r.get("v") in scenario["bad_v"] for r in batch):
                raise RuntimeError(f"bad batch {[r['v'] for r in batch]}")
            if read_only is None:
                for r in batch:
                    r["v"] = None  # a reduce that changes its batch must not change what others get

        def match_with_n(self, record, aggregates, store):
            return {"a": len(aggregates["m"]) % 3}

        def reduce_from_n(self, aggregates, batch):
            aggregates["n"].append([r["v"] for r in batch])

        def transform(self, aggregates, record):
            return [{"id": record["id"], "m": repr(aggregates["m"]), "n": repr(aggregates["n"])}]

    return Matching


def outcome(matched: dict[str, Store], scenario: dict[str, Any], preload: bool | None,
            contract_only: bool = False, read_only: bool | None = None) -> tuple[list[dict[str, Any]], dict[Any, str]]:
    """The destination's records and the failures (id -> the error's last line) of one run."""
    stores: dict[str, Store] = dict(matched)
    if contract_only:
        stores = {name: ContractOnly(store) for name, store in stores.items()}
    dst = MemoryStore("dst")
    progress = MigrationProgress()
    service = MigrationService(
        [MemoryStore("src", records=scenario["sources"]), dst, *stores.values()],
        [make_migration(scenario, preload, read_only)], checkpoint_interval=0,
    )
    result = service.run(progress)
    assert not [r.fatal_error for r in result.reports if r.fatal_error]
    failures = {f.id: f.cause.strip().splitlines()[-1] for _, f in progress.failed_records()}
    return dst.records(), failures


def assert_every_path_agrees(matched: dict[str, Store], scenario: dict[str, Any]) -> None:
    expected = outcome(matched, scenario, preload=False, contract_only=True)
    for preload in (False, True, None):
        assert outcome(matched, scenario, preload) == expected, f"preload={preload}"


def assert_read_only_agrees(matched: dict[str, Store], scenario: dict[str, Any]) -> None:
    """Read-only Matches give what the same Matches give with copies, on every path."""
    expected = outcome(matched, scenario, preload=False, contract_only=True, read_only=False)
    for preload in (True, None, False):
        assert outcome(matched, scenario, preload, read_only=False) == expected, f"preload={preload}"
        assert outcome(matched, scenario, preload, read_only=True) == expected, f"read-only, preload={preload}"


# --- the stores -----------------------------------------------------------------------------


def memory_stores(scenario: dict[str, Any]) -> dict[str, Store]:
    return {name: MemoryStore(name, records=scenario["matched"]) for name in ("m", "n")}


class SqlTables:
    """Tables m and n in one database, filled anew for each example."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        self.opened: list[SqlStore] = []

    def stores(self, scenario: dict[str, Any]) -> dict[str, Store]:
        self.close_stores()
        meta = sa.MetaData()
        key_type = sa.String(10) if scenario["string_keys"] else sa.Integer
        for name in ("m", "n"):
            sa.Table(name, meta, sa.Column("id", key_type, primary_key=True, autoincrement=False),
                     sa.Column("a", sa.Integer), sa.Column("b", sa.String(5)), sa.Column("v", sa.Integer))
        meta.drop_all(self.engine)
        meta.create_all(self.engine)
        if scenario["matched"]:
            with self.engine.begin() as conn:
                for table in meta.tables.values():
                    conn.execute(table.insert(), scenario["matched"])
        self.opened = [SqlStore(name, self.url, name) for name in ("m", "n")]
        return {s.name: s for s in self.opened}

    def close_stores(self) -> None:
        for store in self.opened:
            store.close()
        self.opened = []

    def close(self) -> None:
        self.close_stores()
        self.engine.dispose()


@pytest.fixture
def sqlite_tables(tmp_path) -> Iterator[SqlTables]:
    tables = SqlTables(f"sqlite:///{tmp_path}/match.db")
    yield tables
    tables.close()


@pytest.fixture(params=["postgres_url", "mysql_url"])
def server_tables(request: pytest.FixtureRequest) -> Iterator[SqlTables]:
    tables = SqlTables(request.getfixturevalue(request.param))
    yield tables
    tables.close()


QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=150, deadline=None, suppress_health_check=QUIET)
@given(scenarios())
def test_every_path_gives_the_per_filter_result_on_memory(scenario: dict[str, Any]) -> None:
    assert_every_path_agrees(memory_stores(scenario), scenario)


@settings(max_examples=60, deadline=None, suppress_health_check=QUIET)
@given(scenario=scenarios())
def test_every_path_gives_the_per_filter_result_on_sqlite(sqlite_tables: SqlTables, scenario: dict[str, Any]) -> None:
    assert_every_path_agrees(sqlite_tables.stores(scenario), scenario)


@settings(max_examples=12, deadline=None, suppress_health_check=QUIET)
@given(scenario=scenarios())
def test_every_path_gives_the_per_filter_result_on_servers(server_tables: SqlTables, scenario: dict[str, Any]) -> None:
    assert_every_path_agrees(server_tables.stores(scenario), scenario)


@settings(max_examples=150, deadline=None, suppress_health_check=QUIET)
@given(st.sampled_from([("key",), ("a",), ("key", "a")]).flatmap(scenarios))
def test_lookups_by_key_give_the_per_filter_result(scenario: dict[str, Any]) -> None:
    """Pages whose filters are all ``{field: value}`` on one field (the path without a group per
    value), and pages that turn to groups part way: a None value, another field."""
    assert_every_path_agrees(memory_stores(scenario), scenario)


@settings(max_examples=40, deadline=None, suppress_health_check=QUIET)
@given(scenario=st.sampled_from([("key",), ("a",)]).flatmap(scenarios))
def test_lookups_by_key_give_the_per_filter_result_on_sqlite(sqlite_tables: SqlTables,
                                                              scenario: dict[str, Any]) -> None:
    assert_every_path_agrees(sqlite_tables.stores(scenario), scenario)


@settings(max_examples=10, deadline=None, suppress_health_check=QUIET)
@given(scenario=st.sampled_from([("key",), ("a",)]).flatmap(scenarios))
def test_lookups_by_key_give_the_per_filter_result_on_servers(server_tables: SqlTables,
                                                               scenario: dict[str, Any]) -> None:
    assert_every_path_agrees(server_tables.stores(scenario), scenario)


@settings(max_examples=100, deadline=None, suppress_health_check=QUIET)
@given(st.sampled_from([KINDS, ("key",), ("a",), ("key", "a")]).flatmap(scenarios))
def test_read_only_matches_give_what_copies_give_on_memory(scenario: dict[str, Any]) -> None:
    assert_read_only_agrees(memory_stores(scenario), scenario)


@settings(max_examples=30, deadline=None, suppress_health_check=QUIET)
@given(scenario=st.sampled_from([KINDS, ("key",), ("a",)]).flatmap(scenarios))
def test_read_only_matches_give_what_copies_give_on_sqlite(sqlite_tables: SqlTables, scenario: dict[str, Any]) -> None:
    assert_read_only_agrees(sqlite_tables.stores(scenario), scenario)


@settings(max_examples=8, deadline=None, suppress_health_check=QUIET)
@given(scenario=st.sampled_from([KINDS, ("key",)]).flatmap(scenarios))
def test_read_only_matches_give_what_copies_give_on_servers(server_tables: SqlTables,
                                                            scenario: dict[str, Any]) -> None:
    assert_read_only_agrees(server_tables.stores(scenario), scenario)


# --- preloading -----------------------------------------------------------------------------


class CountingStore(MemoryStore):
    """Counts the reads a Match makes: whole-store reads, single filters, sets of filters."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loads = 0
        self.filters = 0
        self.sets = 0

    def match_pages(self, filter, batch_size, columns=None):
        if filter is None:
            self.loads += 1
        else:
            self.filters += 1
        return super().match_pages(filter, batch_size, columns)

    def match_pages_in(self, fields, values, batch_size, columns=None):
        self.sets += 1
        return super().match_pages_in(fields, values, batch_size, columns)


def price_migration(**options: Any) -> type:
    @migration(source="lines", dest="dst", batch_size=10,
               match=[Match("products", cardinality=Cardinality.EXACTLY_ONE, **options)])
    class Prices:
        def match_with_products(self, record, aggregates, store):
            return {"sku": f"p{record['product']}"}

        def reduce_from_products(self, aggregates, batch):
            aggregates["product"] = batch[0]

        def transform(self, aggregates, record):
            return [{"id": record["id"], "price": aggregates["product"]["price"],
                     "fields": sorted(aggregates["product"])}]

    return Prices


def run_prices(products: Store, **options: Any) -> tuple[MigrationService, Any, MemoryStore]:
    lines = MemoryStore("lines", records=[{"id": i, "product": i % 7} for i in range(1, 101)])
    dst = MemoryStore("dst")
    service = MigrationService([lines, products, dst], [price_migration(**options)], checkpoint_interval=0)
    result = service.run()
    return service, result, dst


def products_store(n: int = 7) -> CountingStore:
    return CountingStore("products", records=[{"id": i, "sku": f"p{i}", "price": i * 1.5, "name": "x" * 50}
                                              for i in range(n)])


def test_a_small_store_is_read_once_per_run_and_reported():
    products = products_store()
    _, result, dst = run_prices(products)
    assert result.ok and len(dst.records()) == 100
    assert (products.loads, products.filters, products.sets) == (1, 0, 0)  # ten pages, one read
    assert {r["id"]: r["price"] for r in dst.records()}[10] == 3 * 1.5
    (report,) = result.reports
    assert report.preloaded["products"]["records"] == 7 and report.preloaded["products"]["mb"] > 0
    assert report.to_dict()["preloaded"] == report.preloaded


def test_the_reported_memory_counts_the_indexes_built_during_the_run():
    """Lookups by sku build one index (the records by sku), after the report was first made."""
    records_only = preload_module.load(products_store(2000), None, ["sku"], 1e9).mb
    _, result, _ = run_prices(products_store(2000))
    index = preload_module.INDEX_BYTES_PER_RECORD * 2000 / 1e6
    assert result.reports[0].preloaded["products"]["mb"] == round(records_only + index, 3)


def test_a_store_counting_more_than_the_threshold_is_queried():
    products = products_store()
    _, result, _ = run_prices(products, preload_max_records=6)
    assert result.ok and (products.loads, products.sets) == (0, 10)  # one set query per page
    assert result.reports[0].preloaded == {}


def test_preload_false_never_reads_the_whole_store_and_true_ignores_the_threshold():
    products = products_store()
    assert run_prices(products, preload=False)[1].ok and products.loads == 0
    products = products_store()
    assert run_prices(products, preload=True, preload_max_records=1)[1].ok and products.loads == 1


def shared_migration(change: Any, batch_size: int) -> tuple[type, list[dict[str, Any]]]:
    """Lines each matching its product with a read-only Match; ``change(line, product)`` is
    called in the reduce with the record it received, which is also kept in the list returned."""
    received: list[dict[str, Any]] = []

    @migration(source="lines", dest="dst", batch_size=batch_size, load_retry=FAST, save_retry=FAST,
               match=[Match("products", cardinality=Cardinality.EXACTLY_ONE, read_only=True, retry=FAST)])
    class Shared:
        def start_reduction(self, record, aggregates):
            aggregates["id"] = record["id"]

        def match_with_products(self, record, aggregates, store):
            return {"sku": f"p{record['product']}"}

        def reduce_from_products(self, aggregates, batch):
            received.append(batch[0])
            aggregates["product"] = repr(dict(batch[0]))  # what it was before any change
            change(aggregates["id"], batch[0])

        def transform(self, aggregates, record):
            return [{"id": record["id"], "product": aggregates["product"]}]

    return Shared, received


def run_shared(products: Store, change: Any,
               batch_size: int = 10) -> tuple[Any, list[dict[str, Any]], MemoryStore, MigrationProgress]:
    migration_class, received = shared_migration(change, batch_size)
    lines = MemoryStore("lines", records=[{"id": i, "product": i % 7} for i in range(1, 101)])
    dst, progress = MemoryStore("dst"), MigrationProgress()
    result = MigrationService([lines, products, dst], [migration_class], checkpoint_interval=0).run(progress)
    return result, received, dst, progress


def test_a_read_only_match_shares_the_preloaded_records_and_a_change_fails_its_record_only():
    def change(line: int, product: dict[str, Any]) -> None:
        if line == 8:
            product["price"] = 0.0

    products = products_store()
    result, received, dst, progress = run_shared(products, change)
    assert products.loads == 1
    assert len({id(r) for r in received}) == 7  # the same record for every line of a product, no copies
    assert all(isinstance(r, dict) for r in received)
    (failed,) = [f for _, f in progress.failed_records()]
    assert failed.id == 8 and "TypeError: a record matched with Match(read_only=True) cannot be changed" in failed.cause
    written = {r["id"]: eval(r["product"]) for r in dst.records()}
    assert len(written) == 99 and 8 not in written and not result.ok
    assert all(written[i]["price"] == (i % 7) * 1.5 for i in written)  # line 15, after line 8: unchanged


def test_a_read_only_match_still_copies_records_holding_mutable_values():
    """A read-only dict would not protect a list inside it: such records are copied as without
    (one line per page: every line its own copy, as every page gets its own)."""
    def change(line: int, product: dict[str, Any]) -> None:
        product["tags"].append(line)
        product["price"] = -1

    products = CountingStore("products", records=[{"id": i, "sku": f"p{i}", "price": i * 1.5, "tags": ["t"]}
                                                  for i in range(7)])
    result, received, dst, _ = run_shared(products, change, batch_size=1)
    assert result.ok and products.loads == 1 and len({id(r) for r in received}) == 100
    assert all(eval(r["product"])["tags"] == ["t"] for r in dst.records())


@pytest.fixture
def warnings_logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """ferryman's warnings, even where the CLI's console handler stops them reaching the root."""
    logger = logging.getLogger("ferryman")
    logger.addHandler(caplog.handler)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.WARNING)
    logger.propagate = False  # caplog's handler is on the root logger too: once is enough
    yield caplog
    logger.setLevel(level)
    logger.propagate = propagate
    logger.removeHandler(caplog.handler)


def test_a_store_past_the_memory_budget_is_queried_with_a_warning(warnings_logged):
    products = products_store(2000)
    _, result, dst = run_prices(products, preload=True, preload_max_mb=0.05)
    assert result.ok and len(dst.records()) == 100  # the same answers, by queries
    assert products.loads == 1 and products.sets == 10 and result.reports[0].preloaded == {}
    (message,) = [r.getMessage() for r in warnings_logged.records if "not preloaded" in r.getMessage()]
    assert "store 'products' is not preloaded, it outgrew the memory budget of 0.05 MB (preload_max_mb)" in message


def test_the_budget_counts_the_records_read(monkeypatch):
    """The estimate grows with what is read: a budget the records fit in is enough."""
    budget_mb = 2000 * (preload_module.record_size({"id": 1999, "sku": "p1999", "price": 1.5, "name": "x" * 50})
                        + preload_module.INDEX_BYTES_PER_RECORD) * 1.2 / 1e6
    products = products_store(2000)
    _, result, _ = run_prices(products, preload=True, preload_max_mb=budget_mb)
    assert products.loads == 1 and products.sets == 0
    assert 0 < result.reports[0].preloaded["products"]["mb"] <= budget_mb


def test_a_native_sql_filter_is_answered_beside_lookups_by_key(sqlite_tables: SqlTables):
    """A SQLAlchemy clause (whose ``==`` builds SQL, never a bool) among dict filters and None."""
    scenario = {"string_keys": False, "matched": [{"id": i, "a": i % 3, "b": "x", "v": i} for i in range(6)]}
    m = sqlite_tables.stores(scenario)["m"]
    assert isinstance(m, SqlStore)

    @migration(source="src", dest="dst", match=[Match("m", preload=False)])
    class Native:
        def start_reduction(self, record, aggregates):
            aggregates["v"] = []

        def match_with_m(self, record, aggregates, store):
            return [{"id": record["id"]}, store.table.c.a == 2, None][record["id"] % 3]

        def reduce_from_m(self, aggregates, batch):
            aggregates["v"] += [r["v"] for r in batch]

        def transform(self, aggregates, record):
            return [{"id": record["id"], "v": aggregates["v"]}]

    dst = MemoryStore("dst")
    sources = MemoryStore("src", records=[{"id": i} for i in range(6)])
    assert MigrationService([sources, dst, m], [Native], checkpoint_interval=0).run().ok
    assert dst.records() == [{"id": 0, "v": [0]}, {"id": 1, "v": [2, 5]}, {"id": 2, "v": []},
                             {"id": 3, "v": [3]}, {"id": 4, "v": [2, 5]}, {"id": 5, "v": []}]


def test_columns_give_reduce_the_key_and_the_columns_only(sqlite_tables: SqlTables):
    scenario = {"string_keys": False, "matched": [{"id": i, "a": i % 2, "b": "x", "v": i} for i in range(4)]}
    for stores in (memory_stores(scenario), sqlite_tables.stores(scenario)):
        for preload in (True, False):
            products = stores["m"]
            seen: list[list[str]] = []

            @migration(source="src", dest="dst", match=[Match("m", columns=("v",), preload=preload)])
            class Columns:
                def match_with_m(self, record, aggregates, store):
                    return {"a": record["id"] % 2}

                def reduce_from_m(self, aggregates, batch, seen=seen):
                    seen.extend(sorted(r) for r in batch)

                def transform(self, aggregates, record):
                    return [{"id": record["id"]}]

            src = MemoryStore("src", records=[{"id": i} for i in range(1, 4)])
            assert MigrationService([src, products, MemoryStore("dst")], [Columns]).run().ok
            assert seen and all(fields == ["id", "v"] for fields in seen), (products, preload)


def test_a_store_that_becomes_unusable_while_matching_ends_the_migration():
    class Gone(MemoryStore):
        def match_pages_in(self, fields, values, batch_size, columns=None):
            raise StoreUnusableError("store 'products': table products does not exist")

    _, result, dst = run_prices(Gone("products"), preload=False)
    (report,) = result.reports
    assert "table products does not exist" in report.fatal_error and report.failed == 0
    assert dst.records() == []


def test_an_unreadable_row_fails_only_the_records_whose_own_filter_reads_it():
    class OneBadRow(MemoryStore):
        """Reading product 3 fails (a value the driver cannot convert); sets of filters are read
        filter after filter, so the filters before it in a set were answered when it fails."""

        def match_pages(self, filter, batch_size, columns=None):
            if filter == {"sku": "p3"}:
                raise ValueError("day is out of range for month")
            return super().match_pages(filter, batch_size, columns)

        def match_pages_in(self, fields, values, batch_size, columns=None):
            return Store.match_pages_in(self, fields, values, batch_size, columns)

    products = OneBadRow("products", records=[{"id": i, "sku": f"p{i}", "price": i * 1.5} for i in range(7)])
    lines = MemoryStore("lines", records=[{"id": i, "product": i % 7} for i in range(1, 101)])
    dst = MemoryStore("dst")
    progress = MigrationProgress()
    service = MigrationService([lines, products, dst], [price_migration(preload=False, retry=FAST)])
    (report,) = service.run(progress).reports
    failed = {record.id: record.cause for _, record in progress.failed_records()}
    assert set(failed) == {i for i in range(1, 101) if i % 7 == 3}  # not their pages' other records
    assert (report.succeeded, report.failed) == (86, 14) and len(dst.records()) == 86
    assert all("Match('products'): the matches of filter {'sku': 'p3'} could not be read: ValueError: day is "
               "out of range for month" in cause for cause in failed.values())


def test_preload_true_keeps_the_databases_comparison_where_python_differs(mysql_url, warnings_logged):
    """MariaDB's collation finds 'P1' for 'p1': a dict keyed in Python would not, so those
    filters are still queried, and the Match says so once."""
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE products (id INTEGER PRIMARY KEY, sku VARCHAR(10), price FLOAT, "
                             "name VARCHAR(60))")
        conn.execute(sa.text("INSERT INTO products VALUES (:id, :sku, :price, 'n')"),
                     [{"id": i, "sku": f"P{i}", "price": i * 1.5} for i in range(7)])
    engine.dispose()
    products = SqlStore("products", mysql_url, "products")
    try:
        _, result, dst = run_prices(products, preload=True)
    finally:
        products.close()
    assert result.ok and {r["id"]: r["price"] for r in dst.records()}[10] == 3 * 1.5
    warnings = [r.getMessage() for r in warnings_logged.records if "does not compare field 'sku'" in r.getMessage()]
    assert len(warnings) == 1
