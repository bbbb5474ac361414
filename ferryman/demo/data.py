"""The demo's sample data: a shop's source database and an empty destination, in SQLite.

The source has ``customers``, ``products``, ``orders`` (``rows`` of them) and ``countries``.
A handful of records are bad on purpose, so the demo shows failures and how to deal with them:

* orders with a negative quantity (:func:`negative_qty_orders`), which the ``order_lines``
  migration rejects with a ``ValueError``;
* two customers whose email repeats an earlier customer's, which the destination's
  ``UNIQUE(email)`` refuses (a ``DuplicateDataError``).

Generating is deterministic (a fixed seed) and fast: one ``executemany`` per table in one
transaction. An existing source is reused as it is.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

SOURCE_FILE = "source.db"
DEST_FILE = "dest.db"
PROGRESS_FILE = "progress.db"
TARGET_FILE = "migrations.py"

COUNTRIES = [
    ("AR", "Argentina"), ("AU", "Australia"), ("BR", "Brazil"), ("CA", "Canada"), ("DE", "Germany"),
    ("ES", "Spain"), ("FR", "France"), ("GB", "United Kingdom"), ("IN", "India"), ("IT", "Italy"),
    ("JP", "Japan"), ("KE", "Kenya"), ("MX", "Mexico"), ("NL", "Netherlands"), ("NO", "Norway"),
    ("PL", "Poland"), ("SE", "Sweden"), ("US", "United States"), ("VN", "Vietnam"), ("ZA", "South Africa"),
]
_FIRST = ["Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger",
          "Radia", "Guido", "Hedy", "Tim", "Katherine", "Niklaus", "Sophie", "Donald", "Joan", "John"]
_LAST = ["Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen",
         "Dijkstra", "Perlman", "van Rossum", "Lamarr", "Berners-Lee", "Johnson", "Wirth", "Wilson",
         "Knuth", "Clarke", "McCarthy"]
_GOODS = ["kettle", "lamp", "chair", "desk", "mug", "notebook", "backpack", "headphones", "umbrella",
          "blender", "pillow", "scarf", "teapot", "bicycle bell", "plant pot", "camera strap"]

SOURCE_SCHEMA = """
CREATE TABLE countries (code TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE customers (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, country TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL NOT NULL);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, product_id INTEGER NOT NULL,
    qty INTEGER NOT NULL, price REAL NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE demo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

DEST_SCHEMA = """
CREATE TABLE IF NOT EXISTS customer_summaries (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE, country TEXT NOT NULL,
    orders INTEGER NOT NULL, items INTEGER NOT NULL, total_spent REAL NOT NULL,
    first_order TEXT, last_order TEXT
);
CREATE INDEX IF NOT EXISTS customer_summaries_country ON customer_summaries (country);
CREATE TABLE IF NOT EXISTS order_lines (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, product_id INTEGER NOT NULL,
    product_name TEXT NOT NULL, qty INTEGER NOT NULL, unit_price REAL NOT NULL,
    list_price REAL NOT NULL, discount REAL NOT NULL, line_total REAL NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS country_totals (
    code TEXT PRIMARY KEY, name TEXT NOT NULL, customers INTEGER NOT NULL, revenue REAL NOT NULL
);
"""


@dataclass(frozen=True)
class DemoData:
    """Where the demo's files are and what the source holds."""

    directory: str
    orders: int
    customers: int
    products: int
    created: bool
    """True when this call generated the source (False: an existing one was reused)."""

    @property
    def source(self) -> str:
        return os.path.join(self.directory, SOURCE_FILE)

    @property
    def dest(self) -> str:
        return os.path.join(self.directory, DEST_FILE)

    @property
    def progress(self) -> str:
        return os.path.join(self.directory, PROGRESS_FILE)

    @property
    def target(self) -> str:
        return os.path.join(self.directory, TARGET_FILE)

    @property
    def negative_qty_orders(self) -> list[int]:
        return negative_qty_orders(self.orders)


def sizes(rows: int) -> tuple[int, int, int]:
    """(orders, customers, products) for ``rows`` orders: 300k orders -> 20k customers, 2k products."""
    return rows, max(rows // 15, 50), max(rows // 150, 20)


def negative_qty_orders(orders: int) -> list[int]:
    """The ids of the orders with a negative quantity (17 is always one of them)."""
    return sorted({17, orders // 5 + 3, orders // 2 + 1, (3 * orders) // 4 + 7, orders - 11})


def duplicate_emails(customers: int) -> list[tuple[int, int]]:
    """(customer, earlier customer whose email it repeats), twice."""
    return [(customers // 3 + 2, 5), ((2 * customers) // 3 + 1, 9)]


def email(customer_id: int, name: str) -> str:
    return f"{name.lower().replace(' ', '.').replace('-', '')}.{customer_id}@example.com"


def ensure_data(directory: str, rows: int = 300_000) -> DemoData:
    """Create the demo's source and destination databases in ``directory`` unless they exist."""
    os.makedirs(directory, exist_ok=True)
    source = os.path.join(directory, SOURCE_FILE)
    existing = _existing_sizes(source)
    if existing is not None:
        created = False
        n_orders, n_customers, n_products = existing
    else:
        created = True
        n_orders, n_customers, n_products = sizes(rows)
        _generate(source, n_orders, n_customers, n_products)
    dest = sqlite3.connect(os.path.join(directory, DEST_FILE))
    try:
        dest.executescript(DEST_SCHEMA)
    finally:
        dest.close()
    write_target(directory)
    return DemoData(directory, n_orders, n_customers, n_products, created)


def _existing_sizes(source: str) -> tuple[int, int, int] | None:
    if not os.path.exists(source):
        return None
    conn = sqlite3.connect(source)
    try:
        meta = dict(conn.execute("SELECT key, value FROM demo_meta").fetchall())
        return int(meta["orders"]), int(meta["customers"]), int(meta["products"])
    except (sqlite3.Error, KeyError, ValueError):
        return None  # half-written by an interrupted demo: make it again
    finally:
        conn.close()


def _generate(path: str, n_orders: int, n_customers: int, n_products: int) -> None:
    temp = path + ".part"
    for leftover in (temp, temp + "-journal"):
        if os.path.exists(leftover):
            os.remove(leftover)
    rng = random.Random(20250829)
    start = datetime(2024, 1, 1)
    conn = sqlite3.connect(temp)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.executescript(SOURCE_SCHEMA)
        with conn:
            conn.executemany("INSERT INTO countries VALUES (?, ?)", COUNTRIES)
            customers = []
            for cid in range(1, n_customers + 1):
                name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
                when = start - timedelta(days=rng.randrange(1, 900))
                customers.append([cid, name, email(cid, name), rng.choice(COUNTRIES)[0], when.isoformat(" ")])
            for cid, earlier in duplicate_emails(n_customers):
                customers[cid - 1][2] = customers[earlier - 1][2]
            conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", customers)
            prices = [round(rng.uniform(2, 300), 2) for _ in range(n_products)]
            conn.executemany(
                "INSERT INTO products VALUES (?, ?, ?)",
                ((pid, f"{rng.choice(_GOODS)} #{pid}", prices[pid - 1]) for pid in range(1, n_products + 1)),
            )
            negative = set(negative_qty_orders(n_orders))
            conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", _orders(
                rng, n_orders, n_customers, prices, negative, start))
            conn.execute("CREATE INDEX orders_customer ON orders (customer_id)")  # faster after the rows
            conn.executemany("INSERT INTO demo_meta VALUES (?, ?)", [
                ("orders", str(n_orders)), ("customers", str(n_customers)), ("products", str(n_products)),
            ])
    finally:
        conn.close()
    os.replace(temp, path)  # a half-made source never looks finished


def _orders(rng: random.Random, n: int, n_customers: int, prices: list[float], negative: set[int],
            start: datetime) -> Iterator[tuple[int, int, int, int, float, str]]:
    rand = rng.random  # random() and a table of timestamps: 300k rows in about a second
    n_products = len(prices)
    hours = [(start + timedelta(hours=h, minutes=h * 7 % 60)).isoformat(" ") for h in range(365 * 24)]
    for oid in range(1, n + 1):
        pid = int(rand() * n_products) + 1
        qty = int(rand() * 5) + 1
        if oid in negative:
            qty = -qty
        price = round(prices[pid - 1] * 0.9, 2) if rand() < 0.2 else prices[pid - 1]
        yield (oid, int(rand() * n_customers) + 1, pid, qty, price, hours[(oid - 1) * len(hours) // n])


TARGET_TEXT = '''"""The demo's migrations as a TARGET for `ferryman run` (written by `ferryman demo`).

    ferryman plan {dir}/migrations.py
    ferryman run {dir}/migrations.py --progress {dir}/progress.db
"""

import os

from ferryman.demo.migrations import MIGRATIONS, build_stores

HERE = os.path.dirname(os.path.abspath(__file__))

stores = build_stores(HERE)
migrations = MIGRATIONS
'''


def write_target(directory: str) -> str:
    """Write ``migrations.py`` into ``directory`` (a TARGET importing the demo's migrations)."""
    path = os.path.join(directory, TARGET_FILE)
    text = TARGET_TEXT.replace("{dir}", directory.rstrip("/") or ".")
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text:
                return path
    except FileNotFoundError:
        pass
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path
