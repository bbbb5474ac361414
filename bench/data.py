"""Deterministic data sets for the benchmarks, built locally and cached by size.

Nothing is downloaded: every table comes from a seeded ``random.Random``, so two machines (or
two runs) measure the same bytes. Sources are built once per size and kept under the cache
directory, because building 10M rows takes longer than migrating them; destinations are made
fresh for every measurement by :func:`create_stations_table` and friends.

All files are SQLite in WAL mode: ferryman's engine switches every file database it opens to WAL,
so building them that way keeps every tool reading the same file in the same state.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

GENERATOR_VERSION = 2
"""Bumped whenever a generator changes what it writes, so stale cached files are not reused."""

SEED = 20240611
CHUNK = 50_000

STATIONS_DDL = """
CREATE TABLE stations (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    created_at TEXT NOT NULL
)
"""
STATION_COLUMNS = ("id", "code", "name", "type", "lat", "lon", "created_at")

AREAS_DDL = "CREATE TABLE areas (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, name TEXT NOT NULL)"
TEMPS_DDL = """
CREATE TABLE temps (
    id INTEGER PRIMARY KEY,
    area_code TEXT NOT NULL,
    value REAL NOT NULL,
    measured_at TEXT NOT NULL
)
"""
TEMPS_INDEX = "CREATE INDEX temps_area_code_value ON temps (area_code, value)"
AREA_STATS_DDL = """
CREATE TABLE area_stats (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    avg_value REAL,
    n INTEGER NOT NULL
)
"""

PRODUCTS_DDL = "CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, name TEXT NOT NULL, price REAL NOT NULL)"
PRICE_HISTORY_DDL = """
CREATE TABLE price_history (
    id INTEGER PRIMARY KEY,
    product_id INTEGER NOT NULL,
    valid_from TEXT NOT NULL,
    price REAL NOT NULL
)
"""
PRICE_HISTORY_INDEX = "CREATE INDEX price_history_product ON price_history (product_id)"
ORDER_LINES_DDL = """
CREATE TABLE order_lines (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL,
    product_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL
)
"""
LINE_TOTALS_DDL = """
CREATE TABLE line_totals (
    id INTEGER PRIMARY KEY,
    product_id INTEGER NOT NULL,
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    amount REAL NOT NULL,
    price_changes INTEGER NOT NULL,
    highest_price REAL
)
"""

LINES_PER_PRODUCT = 100
"""W4 has one product per this many order lines: 10k products for 1M lines."""
PRICES_PER_PRODUCT = 3
NO_HISTORY_EVERY = 7
"""Every 7th product has no price history, so its lines match no price (ZERO_OR_MORE)."""

TEMPS_PER_AREA = 100
"""W2 has one area per this many temps: 10k areas for 1M temps, as in mjg's example."""
EMPTY_AREA_EVERY = 97
"""Every 97th area has no temps, so the zero-match path (avg NULL, count 0) is exercised too."""

_SYLLABLES = ("ka", "lo", "mer", "dun", "vi", "sel", "tor", "an", "bre", "quo", "zim", "ha", "pel", "rix")
_SUFFIXES = ("Ridge", "Creek", "Harbor", "Valley", "Point", "Field", "Lake", "Mount")
_TYPES = ("weather", "river", "air", "seismic", "tide")
_EPOCH = datetime(2020, 1, 1)


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection to a benchmark file, in WAL mode (see the module docstring)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    return conn


def station_code(station_id: int) -> str:
    """A unique code that grows with the id.

    Codes in random order would make the destination's UNIQUE index take random inserts; past
    ~500k rows that index outgrows SQLite's default 2 MB page cache and every contestant turns
    into a disk benchmark (INSERT...SELECT: 0.3 s at 100k rows, 11 s at 1M; 4.6 s with a 64 MB
    cache). W1 is about the cost per record of the tools, so the index grows at its right edge,
    as the primary key does.
    """
    return f"ST{station_id:09d}"


def area_code(area_id: int) -> str:
    return f"A{area_id:06d}"


def _name(rng: random.Random) -> str:
    # Mixed case ASCII only: SQLite's upper() and Python's str.upper() then agree, so the
    # engine's own INSERT ... SELECT upper(name) is a valid physical-limit baseline.
    word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
    return f"{word.capitalize()} {rng.choice(_SUFFIXES)}"


def stations(n: int, seed: int = SEED) -> Iterator[tuple[object, ...]]:
    """``n`` station rows with ids 1..n, in id order."""
    rng = random.Random(seed)
    for i in range(1, n + 1):
        yield (
            i,
            station_code(i),
            _name(rng),
            rng.choice(_TYPES),
            round(rng.uniform(-90, 90), 6),
            round(rng.uniform(-180, 180), 6),
            (_EPOCH + timedelta(seconds=37 * i)).isoformat(),
        )


def areas(n_areas: int, seed: int = SEED) -> Iterator[tuple[object, ...]]:
    rng = random.Random(seed + 1)
    for i in range(1, n_areas + 1):
        yield (i, area_code(i), _name(rng))


def temps(n_temps: int, n_areas: int, seed: int = SEED) -> Iterator[tuple[object, ...]]:
    """Temperatures spread over the areas that are not empty, in random order of area."""
    rng = random.Random(seed + 2)
    filled = [i for i in range(1, n_areas + 1) if i % EMPTY_AREA_EVERY != 0] or [1]
    for i in range(1, n_temps + 1):
        yield (
            i,
            area_code(rng.choice(filled)),
            round(rng.gauss(12.0, 9.0), 1),
            (_EPOCH + timedelta(minutes=10 * i)).isoformat(),
        )


def n_areas_for(n_temps: int) -> int:
    return max(1, n_temps // TEMPS_PER_AREA)


def _insert(conn: sqlite3.Connection, table: str, rows: Iterator[tuple[object, ...]], width: int) -> None:
    marks = ", ".join("?" * width)
    batch: list[tuple[object, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == CHUNK:
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", batch)
            batch.clear()
    if batch:
        conn.executemany(f"INSERT INTO {table} VALUES ({marks})", batch)


def _build(path: Path, fill: Callable[[sqlite3.Connection], None]) -> Path:
    """Build into a temporary name and rename, so an interrupted build is never reused."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".building")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    conn = connect(tmp)
    try:
        with conn:
            fill(conn)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    os.replace(tmp, path)
    return path


def stations_db(size: int, cache_dir: Path) -> Path:
    """The W1/W3 source: a ``stations`` table of ``size`` rows (cached)."""

    def fill(conn: sqlite3.Connection) -> None:
        conn.execute(STATIONS_DDL)
        _insert(conn, "stations", stations(size), len(STATION_COLUMNS))

    return _build(cache_dir / f"stations-{size}-v{GENERATOR_VERSION}.db", fill)


def areas_temps_db(size: int, cache_dir: Path) -> Path:
    """The W2 source: ``areas`` (size/100) and ``temps`` (size, indexed on area_code, value)."""
    n_areas = n_areas_for(size)

    def fill(conn: sqlite3.Connection) -> None:
        conn.execute(AREAS_DDL)
        conn.execute(TEMPS_DDL)
        _insert(conn, "areas", areas(n_areas), 3)
        _insert(conn, "temps", temps(size, n_areas), 4)
        conn.execute(TEMPS_INDEX)
        conn.execute("ANALYZE")

    return _build(cache_dir / f"areas-temps-{size}-v{GENERATOR_VERSION}.db", fill)


def n_products_for(n_lines: int) -> int:
    return max(1, n_lines // LINES_PER_PRODUCT)


def products(n_products: int, seed: int = SEED) -> Iterator[tuple[object, ...]]:
    rng = random.Random(seed + 3)
    for i in range(1, n_products + 1):
        yield (i, f"SKU-{i:07d}", _name(rng), round(rng.uniform(0.5, 500.0), 2))


def price_history(n_products: int, seed: int = SEED) -> Iterator[tuple[object, ...]]:
    """Earlier prices of the products (none for every 7th), in random order of product."""
    rng = random.Random(seed + 4)
    entries = [(p, k) for p in range(1, n_products + 1) if p % NO_HISTORY_EVERY != 0
               for k in range(PRICES_PER_PRODUCT)]
    rng.shuffle(entries)
    for i, (product_id, k) in enumerate(entries, 1):
        yield (i, product_id, (_EPOCH + timedelta(days=30 * k)).date().isoformat(), round(rng.uniform(0.5, 500.0), 2))


def order_lines(n_lines: int, n_products: int, seed: int = SEED) -> Iterator[tuple[object, ...]]:
    rng = random.Random(seed + 5)
    for i in range(1, n_lines + 1):
        yield (i, 1 + i // 4, rng.randint(1, n_products), rng.randint(1, 20))


def lookup_db(size: int, cache_dir: Path) -> Path:
    """The W4 source: ``order_lines`` (size), ``products`` (size/100) and their
    ``price_history`` (3 per product but every 7th, indexed on product_id)."""
    n_products = n_products_for(size)

    def fill(conn: sqlite3.Connection) -> None:
        for ddl in (PRODUCTS_DDL, PRICE_HISTORY_DDL, ORDER_LINES_DDL):
            conn.execute(ddl)
        _insert(conn, "products", products(n_products), 4)
        _insert(conn, "price_history", price_history(n_products), 4)
        _insert(conn, "order_lines", order_lines(size, n_products), 4)
        conn.execute(PRICE_HISTORY_INDEX)
        conn.execute("ANALYZE")

    return _build(cache_dir / f"lookup-{size}-v{GENERATOR_VERSION}.db", fill)


def create_table(path: Path, ddl: str) -> None:
    """A fresh destination file holding one empty table (made before each measurement)."""
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    conn = connect(path)
    try:
        conn.execute(ddl)
        conn.commit()
    finally:
        conn.close()
