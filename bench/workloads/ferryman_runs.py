"""ferryman's side of every workload: the migrations as a user would write them, and their runs.

Kept apart from the workloads' data and checks so that a baseline's child process never imports
ferryman (SQLAlchemy alone adds ~30 MB to a process's peak memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ferryman import Cardinality, Match, MigrationService, Retry, SqlStore, Store, migration

from .base import Job, Output
from .copy import transform_station
from .failures import fails_in_transform
from .lookup_join import line_total
from .match_reduce import average


@migration(source="stations", dest="stations_copy")
class CopyStations:
    def transform(self, aggregates: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
        return [transform_station(record)]


# One retry as mjg does, without the default 1 s pause: it comes once, before the failed records
# are tried again after the main pass, and W3 measures work, not sleep (see README).
@migration(source="stations", dest="stations_copy", save_retry=Retry(times=1, delay=0.0))
class CopyStationsWithFailures:
    def transform(self, aggregates: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
        if fails_in_transform(record["id"]):
            raise ValueError(f"station {record['id']}: cannot be migrated")
        return [transform_station(record)]

    def handle_duplicate(self, error: Exception, record: Any, outputs: Any, source: Any, dest: Any,
                         registry: Any) -> None:
        return None  # not handled: the duplicate stands and the record is failed


# Only the value is needed: temps' index on (area_code, value) then answers the query alone.
@migration(source="areas", dest="area_stats", match=[Match("temps", columns=("value",))])
class AreaStats:
    def start_reduction(self, record: dict[str, Any], aggregates: dict[str, Any]) -> None:
        aggregates["total"] = 0.0
        aggregates["n"] = 0

    def match_with_temps(self, record: dict[str, Any], aggregates: dict[str, Any], store: Any) -> dict[str, Any]:
        return {"area_code": record["code"]}

    def reduce_from_temps(self, aggregates: dict[str, Any], batch: list[dict[str, Any]]) -> None:
        aggregates["total"] += sum(t["value"] for t in batch)
        aggregates["n"] += len(batch)

    def transform(self, aggregates: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
        n = aggregates["n"]
        return [{"id": record["id"], "code": record["code"], "avg_value": average(aggregates["total"], n), "n": n}]


@migration(source="order_lines", dest="line_totals", match=[
    Match("products", cardinality=Cardinality.EXACTLY_ONE, columns=("sku", "price")),
    Match("price_history", columns=("price",)),
])
class LineTotals:
    def start_reduction(self, record: dict[str, Any], aggregates: dict[str, Any]) -> None:
        aggregates["prices"] = []

    def match_with_products(self, record: dict[str, Any], aggregates: dict[str, Any], store: Any) -> dict[str, Any]:
        return {"id": record["product_id"]}

    def reduce_from_products(self, aggregates: dict[str, Any], batch: list[dict[str, Any]]) -> None:
        aggregates["product"] = batch[0]

    def match_with_price_history(self, record: dict[str, Any], aggregates: dict[str, Any],
                                 store: Any) -> dict[str, Any]:
        return {"product_id": record["product_id"]}

    def reduce_from_price_history(self, aggregates: dict[str, Any], batch: list[dict[str, Any]]) -> None:
        aggregates["prices"].extend(h["price"] for h in batch)

    def transform(self, aggregates: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
        product = aggregates["product"]
        row = line_total(record["id"], record["product_id"], product["sku"], record["quantity"], product["price"],
                         aggregates["prices"])
        return [dict(zip(LINE_TOTAL_FIELDS, row))]


# The same with the promise that nothing changes a matched record (the reduces only read them):
# the preloaded records are handed out as shared read-only mappings instead of copies.
@migration(source="order_lines", dest="line_totals", match=[
    Match("products", cardinality=Cardinality.EXACTLY_ONE, columns=("sku", "price"), read_only=True),
    Match("price_history", columns=("price",), read_only=True),
])
class LineTotalsReadOnly(LineTotals):
    pass


LINE_TOTAL_FIELDS = ("id", "product_id", "sku", "quantity", "amount", "price_changes", "highest_price")


def _sqlite(name: str, path: str, table: str) -> SqlStore:
    return SqlStore(name, f"sqlite:///{path}", table)


def _run(stores: Sequence[Store], migration_class: type, ledger: str | None) -> Output:
    service = MigrationService(stores, [migration_class], ledger=ledger)
    try:
        result = service.run()
    finally:
        if service.ledger is not None:
            service.ledger.close()
        for store in stores:
            store.close()
    return {"ok": result.ok, "reports": [r.to_dict() for r in result.reports]}


def _stations(job: Job) -> list[Store]:
    return [_sqlite("stations", job.source, "stations"), _sqlite("stations_copy", job.dest, "stations")]


def copy_durable(job: Job) -> Output:
    """W1 with the default, crash-safe SQLite ledger."""
    return _run(_stations(job), CopyStations, job.ledger)


def copy_in_memory(job: Job) -> Output:
    """W1 with checkpoints off: a MemoryLedger and no persistence callbacks."""
    return _run(_stations(job), CopyStations, None)


def copy_with_failures(job: Job) -> Output:
    """W3, with the durable ledger the check reads the failed records from."""
    return _run(_stations(job), CopyStationsWithFailures, job.ledger)


def area_stats(job: Job) -> Output:
    """W2 with the durable ledger."""
    stores: list[Store] = [
        _sqlite("areas", job.source, "areas"),
        _sqlite("temps", job.source, "temps"),
        _sqlite("area_stats", job.dest, "area_stats"),
    ]
    return _run(stores, AreaStats, job.ledger)


def _line_stores(job: Job) -> list[Store]:
    stores: list[Store] = [
        _sqlite(name, job.source, name) for name in ("order_lines", "products", "price_history")
    ]
    stores.append(_sqlite("line_totals", job.dest, "line_totals"))
    return stores


def line_totals(job: Job) -> Output:
    """W4 with the durable ledger; both matched stores are small enough to be preloaded."""
    return _run(_line_stores(job), LineTotals, job.ledger)


def line_totals_read_only(job: Job) -> Output:
    """W4 with read-only Matches: the preloaded records are shared, not copied."""
    return _run(_line_stores(job), LineTotalsReadOnly, job.ledger)
