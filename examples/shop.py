"""A ferryman TARGET: move a shop's customers, with what each has spent, to a new schema.

Run it from any folder; it creates two small SQLite databases there on first use:

    ferryman plan examples/shop.py
    ferryman run examples/shop.py --progress shop-progress.db
    ferryman failed list --progress shop-progress.db

A TARGET defines `stores` and `migrations` at module level (or a ready `service`).
"""

import os
import sqlite3
from contextlib import closing

from ferryman import Match, SqlStore, migration

OLD = os.path.abspath("shop-old.db")  # the source, made up below when missing
NEW = os.path.abspath("shop-new.db")  # the destination


def create_sample_databases() -> None:
    if not os.path.exists(OLD):
        with closing(sqlite3.connect(OLD)) as db, db:
            db.executescript("""
                CREATE TABLE customers (id INTEGER PRIMARY KEY, full_name TEXT, email TEXT);
                CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, amount REAL);
                CREATE INDEX orders_by_customer ON orders (customer_id);
            """)
            db.executemany("INSERT INTO customers VALUES (?, ?, ?)",
                           [(i, f"Customer Number{i}", f"c{i}@example.com") for i in range(1, 1001)])
            db.executemany("INSERT INTO orders VALUES (?, ?, ?)",
                           [(i, i % 1000 + 1, round(i * 0.37 % 90 + 10, 2)) for i in range(1, 5001)])
    with closing(sqlite3.connect(NEW)) as db, db:
        db.execute("""CREATE TABLE IF NOT EXISTS customers (
            id INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT,
            email TEXT UNIQUE, total_spent REAL)""")


create_sample_databases()

stores = [
    SqlStore("customers", f"sqlite:///{OLD}", "customers"),
    SqlStore("orders", f"sqlite:///{OLD}", "orders"),
    SqlStore("new_customers", f"sqlite:///{NEW}", "customers"),
]


@migration(source="customers", dest="new_customers", match=[Match("orders")])
class CopyCustomers:
    """Split the name, and add up each customer's orders."""

    def start_reduction(self, record, aggregates):
        aggregates["spent"] = 0.0

    def match_with_orders(self, record, aggregates, store):
        return {"customer_id": record["id"]}  # a filter: the orders of this customer

    def reduce_from_orders(self, aggregates, batch):  # called once per page of matches
        aggregates["spent"] += sum(float(order["amount"]) for order in batch)  # NUMERIC: Decimal

    def transform(self, aggregates, record):
        first, _, last = record["full_name"].partition(" ")
        return [{"id": record["id"], "first_name": first, "last_name": last,
                 "email": record["email"], "total_spent": round(aggregates["spent"], 2)}]


migrations = [CopyCustomers]
