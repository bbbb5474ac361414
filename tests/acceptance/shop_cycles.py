"""Migrations for the fix / IGNORE / RETRY / re-run cycles, as a user would write them.

``CopyInvoices`` copies invoices (one has no amount until the user fixes it); ``Revenue``
reduces the copied invoices per country, reading them through a store of its own name on the
same table (the plan must see that it is the same data). ``CYCLES_SRC`` and ``CYCLES_DST`` are
the source and destination URLs; ``CYCLES_UPSERT=1`` makes the revenue table upsert.
"""

from __future__ import annotations

import os

from ferryman import Match, SqlStore, migration

SRC = os.environ["CYCLES_SRC"]
DST = os.environ["CYCLES_DST"]
UPSERT = os.environ.get("CYCLES_UPSERT") == "1"


@migration(source="invoices", dest="new_invoices")
class CopyInvoices:
    def transform(self, aggregates, record):
        if record["amount"] is None:
            raise ValueError(f"invoice {record['id']} has no amount")
        return [{"id": record["id"], "country": record["country"], "amount": record["amount"]}]


@migration(source="countries", dest="revenue", match=[Match("copied_invoices")])
class Revenue:
    def start_reduction(self, record, aggregates):
        aggregates["total"] = 0.0

    def match_with_copied_invoices(self, record, aggregates, store):
        return {"country": record["code"]}

    def reduce_from_copied_invoices(self, aggregates, batch):
        aggregates["total"] += sum(float(i["amount"]) for i in batch)

    def transform(self, aggregates, record):
        return [{"country": record["code"], "total": round(aggregates["total"], 2)}]


stores = [
    SqlStore("invoices", SRC, "invoices"),
    SqlStore("countries", SRC, "countries", key="code"),
    SqlStore("new_invoices", DST, "new_invoices"),
    SqlStore("copied_invoices", DST, "new_invoices"),
    SqlStore("revenue", DST, "revenue", key="country", on_conflict="update" if UPSERT else "error"),
]
migrations = [Revenue, CopyInvoices]  # listed "wrong way round": the plan orders them
