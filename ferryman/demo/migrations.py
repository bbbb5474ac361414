"""The demo's migrations: matching, reducing and transforming a shop's data.

* ``customer_summaries``: each customer, with the totals of their orders (``Match("orders")``
  reduced page by page into the aggregates). Two customers share an email with an earlier
  one, and the destination's ``UNIQUE(email)`` refuses them.
* ``order_lines``: each order copied with its product's name and list price
  (``Match("products", EXACTLY_ONE)``); orders with a negative quantity are rejected.
* ``country_totals``: each country with the revenue of its customers, read from
  ``customer_summaries``, so it runs after that migration, and is held back while it has
  failed records.

Use them with ``ferryman demo`` or, on the files it creates, ``ferryman run DIR/migrations.py``.
"""

from __future__ import annotations

import os
from typing import Any

from ..declare import Cardinality, Match, Retry, migration
from ..stores.sql import SqlStore
from .data import DEST_FILE, SOURCE_FILE


def build_stores(directory: str) -> list[SqlStore]:
    """The demo's stores over ``directory``/source.db and ``directory``/dest.db."""
    source = f"sqlite:///{os.path.abspath(os.path.join(directory, SOURCE_FILE))}"
    dest = f"sqlite:///{os.path.abspath(os.path.join(directory, DEST_FILE))}"
    return [
        SqlStore("customers", source, "customers"),
        SqlStore("products", source, "products"),
        SqlStore("orders", source, "orders"),
        SqlStore("countries", source, "countries", key="code"),
        SqlStore("customer_summaries", dest, "customer_summaries"),
        SqlStore("order_lines", dest, "order_lines"),
        SqlStore("country_totals", dest, "country_totals", key="code"),
    ]


@migration(source="customers", dest="customer_summaries", match=[Match("orders")],
           name="customer_summaries")
class SummarizeCustomers:
    """One summary per customer: how many orders, items and how much they spent."""

    def start_reduction(self, record: dict[str, Any], aggregates: dict[str, Any]) -> None:
        aggregates.update(orders=0, items=0, spent=0.0, first=None, last=None)

    def match_with_orders(self, record: dict[str, Any], aggregates: dict[str, Any], store: Any) -> dict[str, Any]:
        return {"customer_id": record["id"]}

    def reduce_from_orders(self, aggregates: dict[str, Any], batch: list[dict[str, Any]]) -> None:
        for order in batch:
            aggregates["orders"] += 1
            aggregates["items"] += order["qty"]
            aggregates["spent"] += order["qty"] * order["price"]
            when = order["created_at"]
            aggregates["first"] = min(aggregates["first"] or when, when)
            aggregates["last"] = max(aggregates["last"] or when, when)

    def transform(self, aggregates: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
        return [{
            "id": record["id"], "name": record["name"], "email": record["email"],
            "country": record["country"], "orders": aggregates["orders"], "items": aggregates["items"],
            "total_spent": round(aggregates["spent"], 2),
            "first_order": aggregates["first"], "last_order": aggregates["last"],
        }]


@migration(source="orders", dest="order_lines",
           match=[Match("products", cardinality=Cardinality.EXACTLY_ONE)],
           cardinality=Cardinality.EXACTLY_ONE,
           save_retry=Retry(times=1, delay=0.2),
           name="order_lines")
class CopyOrderLines:
    """Each order as an order line, with the product's name and list price."""

    def match_with_products(self, record: dict[str, Any], aggregates: dict[str, Any], store: Any) -> dict[str, Any]:
        return {"id": record["product_id"]}

    def reduce_from_products(self, aggregates: dict[str, Any], batch: list[dict[str, Any]]) -> None:
        aggregates["product"] = batch[0]

    def transform(self, aggregates: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
        if record["qty"] <= 0:
            raise ValueError(f"order {record['id']} has a negative quantity ({record['qty']})")
        product = aggregates["product"]
        return [{
            "id": record["id"], "customer_id": record["customer_id"], "product_id": product["id"],
            "product_name": product["name"], "qty": record["qty"], "unit_price": record["price"],
            "list_price": product["price"], "discount": round(product["price"] - record["price"], 2),
            "line_total": round(record["qty"] * record["price"], 2), "created_at": record["created_at"],
        }]


@migration(source="countries", dest="country_totals", match=[Match("customer_summaries")],
           name="country_totals")
class CountryTotals:
    """Customers and revenue per country, from the customer summaries."""

    def start_reduction(self, record: dict[str, Any], aggregates: dict[str, Any]) -> None:
        aggregates.update(customers=0, revenue=0.0)

    def match_with_customer_summaries(self, record: dict[str, Any], aggregates: dict[str, Any],
                                      store: Any) -> dict[str, Any]:
        return {"country": record["code"]}

    def reduce_from_customer_summaries(self, aggregates: dict[str, Any], batch: list[dict[str, Any]]) -> None:
        aggregates["customers"] += len(batch)
        aggregates["revenue"] += sum(s["total_spent"] for s in batch)

    def transform(self, aggregates: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"code": record["code"], "name": record["name"], "customers": aggregates["customers"],
                 "revenue": round(aggregates["revenue"], 2)}]


MIGRATIONS = [SummarizeCustomers, CopyOrderLines, CountryTotals]
"""In a stable order; the planner puts country_totals after customer_summaries by itself."""
