"""A ferryman TARGET with several migrations: a music shop's sales, moved to a reporting schema.

The source has the shape of the Chinook sample database (artists, albums, tracks, employees,
customers, invoices, invoice lines; plus the countries the shop sells to). Run it from any folder:
it generates a small source, chinook-old.db, and an empty destination, chinook-new.db, there on
first use (a few records are wrong on purpose, as in real data).

- ``Customers``: each customer with their support rep (a Lookup) and what they spent (a Match
  reduced over their invoices). Two customers share an email, which the destination refuses
  (``UNIQUE``): ``handle_duplicate`` saves the second with its email marked as a duplicate. One
  has no email at all, which
  the destination refuses too (``NOT NULL``): that record fails.
- ``Sales``: each invoice line with its invoice, customer, track, album and artist: five Lookups,
  two of them chained (``"track.AlbumId"``). A gift card line has no track, which is fine; one line
  names a track that was deleted: that record fails.
- ``CountrySales``: revenue per country, reduced from the new ``sales`` table, so it runs after
  ``Sales`` and is held back while ``Sales`` has failed records.

The walk-through (``P=chinook-progress.db``):

    ferryman plan examples/chinook.py                 # the order, why, and the keys it reflected
    ferryman run examples/chinook.py --progress $P    # exit 1: two records failed, CountrySales held back
    ferryman failed list --progress $P                # Customers 7: NOT NULL email; Sales 1603: no track 9999

IGNORE: the deleted track will not come back; never try line 1603 again. Sales then counts as
done, and the next run runs CountrySales:

    ferryman failed ignore --progress $P --migration Sales 1603

RETRY: a failed record is tried again by every run (its action is RETRY) until it succeeds. Fix
what made it fail, here the source (or the transform), and run again:

    sqlite3 chinook-old.db "UPDATE customers SET Email = 'kim@example.com' WHERE CustomerId = 7"
    ferryman run examples/chinook.py --progress $P    # exit 0: customer 7 migrated, CountrySales ran

Changed your mind about an IGNORE (the track was restored after all)? Mark it RETRY and run:

    sqlite3 chinook-old.db "INSERT INTO tracks VALUES (9999, 'Restored', 1, 0.99)"
    ferryman failed retry --progress $P --all
    ferryman run examples/chinook.py --progress $P    # line 1603 migrated; CountrySales, which
                                                      # upserts, re-runs with it

A TARGET defines ``stores`` and ``migrations`` at module level.
"""

import os
import random
import sqlite3
from contextlib import closing

from ferryman import Cardinality, Lookup, Match, SqlDatabase, migration

OLD = os.path.abspath("chinook-old.db")  # the source, made up below when missing
NEW = os.path.abspath("chinook-new.db")  # the destination

SOURCE_SCHEMA = """
CREATE TABLE artists (ArtistId INTEGER PRIMARY KEY, Name TEXT);
CREATE TABLE albums (AlbumId INTEGER PRIMARY KEY, Title TEXT, ArtistId INTEGER);
CREATE TABLE tracks (TrackId INTEGER PRIMARY KEY, Name TEXT, AlbumId INTEGER, UnitPrice REAL);
CREATE TABLE employees (EmployeeId INTEGER PRIMARY KEY, FirstName TEXT, LastName TEXT);
CREATE TABLE countries (Country TEXT PRIMARY KEY);
CREATE TABLE customers (CustomerId INTEGER PRIMARY KEY, FirstName TEXT, LastName TEXT, Email TEXT,
                        Country TEXT, SupportRepId INTEGER);
CREATE TABLE invoices (InvoiceId INTEGER PRIMARY KEY, CustomerId INTEGER, InvoiceDate TEXT, Total REAL);
CREATE TABLE invoice_lines (InvoiceLineId INTEGER PRIMARY KEY, InvoiceId INTEGER, TrackId INTEGER,
                            UnitPrice REAL, Quantity INTEGER);
CREATE INDEX invoices_by_customer ON invoices (CustomerId);
"""

DEST_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE NOT NULL,
    country TEXT, support_rep TEXT, invoices INTEGER, spent REAL);
CREATE TABLE IF NOT EXISTS sales (id INTEGER PRIMARY KEY, invoice_id INTEGER, invoice_date TEXT,
    customer TEXT, country TEXT, track TEXT, album TEXT, artist TEXT, amount REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sales_by_country ON sales (country);
CREATE TABLE IF NOT EXISTS country_sales (country TEXT PRIMARY KEY, lines INTEGER, revenue REAL);
"""


def create_sample_databases() -> None:
    """A small, made-up shop: the same data on every machine (a fixed random seed)."""
    if not os.path.exists(OLD):
        rand = random.Random(7)
        countries = ["Brazil", "Canada", "France", "Germany", "India", "Norway", "USA"]
        with closing(sqlite3.connect(OLD)) as db, db:
            db.executescript(SOURCE_SCHEMA)
            db.executemany("INSERT INTO artists VALUES (?, ?)", [(i, f"Artist {i}") for i in range(1, 21)])
            db.executemany("INSERT INTO albums VALUES (?, ?, ?)",
                           [(i, f"Album {i}", rand.randint(1, 20)) for i in range(1, 41)])
            db.executemany("INSERT INTO tracks VALUES (?, ?, ?, ?)",  # every 25th track is a single
                           [(i, f"Track {i}", None if i % 25 == 0 else rand.randint(1, 40), 0.99)
                            for i in range(1, 401)])
            db.executemany("INSERT INTO employees VALUES (?, ?, ?)", [(i, f"Rep{i}", "Smith") for i in range(1, 4)])
            db.executemany("INSERT INTO countries VALUES (?)", [(c,) for c in countries])
            db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)", [
                (i, f"First{i}", f"Last{i}", None if i == 7 else f"c{12 if i == 30 else i}@example.com",
                 countries[i % len(countries)], i % 3 + 1) for i in range(1, 61)])
            db.executemany("INSERT INTO invoices VALUES (?, ?, ?, 0)",
                           [(i, rand.randint(1, 60), f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}") for i in range(1, 401)])
            lines = [(i, (i - 1) // 5 + 1, rand.randint(1, 400), 0.99, rand.randint(1, 3)) for i in range(1, 2001)]
            lines[1602] = (1603, lines[1602][1], 9999, 0.99, 1)  # a deleted track
            lines[99] = (100, lines[99][1], None, 10.0, 1)  # a gift card: no track
            db.executemany("INSERT INTO invoice_lines VALUES (?, ?, ?, ?, ?)", lines)
            db.execute("UPDATE invoices SET Total = (SELECT SUM(UnitPrice * Quantity) FROM invoice_lines l"
                       " WHERE l.InvoiceId = invoices.InvoiceId)")
    with closing(sqlite3.connect(NEW)) as db, db:
        db.executescript(DEST_SCHEMA)


create_sample_databases()

# --- stores
old, new = SqlDatabase(f"sqlite:///{OLD}"), SqlDatabase(f"sqlite:///{NEW}")
stores = [*(old[t] for t in ("artists", "albums", "tracks", "employees", "countries", "customers", "invoices",
                             "invoice_lines")),
          new.table("customers", "new_customers"), new["sales"], new.table("country_sales", on_conflict="update")]
# --- migrations


@migration(source="customers", dest="new_customers", match=[
    Lookup("employees", on={"EmployeeId": "SupportRepId"}, into="rep"),
    Match("invoices", columns=("Total",))])
class Customers:
    def start_reduction(self, record, aggregates):
        aggregates.update(invoices=0, spent=0.0)

    def match_with_invoices(self, record, aggregates, store):
        return {"CustomerId": record["CustomerId"]}

    def reduce_from_invoices(self, aggregates, batch):  # once per page of this customer's invoices
        aggregates["invoices"] += len(batch)
        aggregates["spent"] += sum(invoice["Total"] for invoice in batch)

    def transform(self, aggregates, record):
        rep = aggregates["rep"]
        return [{"id": record["CustomerId"], "name": f"{record['FirstName']} {record['LastName']}",
                 "email": record["Email"], "country": record["Country"],
                 "support_rep": rep and f"{rep['FirstName']} {rep['LastName']}",
                 "invoices": aggregates["invoices"], "spent": round(aggregates["spent"], 2)}]

    def handle_duplicate(self, error, record, outputs, source, dest, registry):
        if error.columns == ("email",):  # an email another customer has: mark it, keep the customer
            return [{**output, "email": f"duplicate-of-{output['email']}"} for output in outputs]
        return None  # anything else: the record fails


@migration(source="invoice_lines", dest="sales", cardinality=Cardinality.EXACTLY_ONE, match=[
    Lookup("invoices", on={"InvoiceId": "InvoiceId"}, into="invoice", required=True),
    Lookup("customers", on={"CustomerId": "invoice.CustomerId"}, into="customer", required=True),
    Lookup("tracks", on={"TrackId": "TrackId"}, into="track", required=lambda line: line["TrackId"] is not None),
    Lookup("albums", on={"AlbumId": "track.AlbumId"}, into="album"),  # a single has no album
    Lookup("artists", on={"ArtistId": "album.ArtistId"}, into="artist")])
class Sales:
    def transform(self, aggregates, record):
        invoice, customer, track, album, artist = (
            aggregates[k] for k in ("invoice", "customer", "track", "album", "artist"))
        return [{"id": record["InvoiceLineId"], "invoice_id": invoice["InvoiceId"],
                 "invoice_date": invoice["InvoiceDate"], "customer": customer["LastName"],
                 "country": customer["Country"], "track": track and track["Name"], "album": album and album["Title"],
                 "artist": artist and artist["Name"], "amount": round(record["UnitPrice"] * record["Quantity"], 2)}]
# --- end of Sales


@migration(source="countries", dest="country_sales", match=[Match("sales", columns=("amount",))])
class CountrySales:
    def start_reduction(self, record, aggregates):
        aggregates.update(lines=0, revenue=0.0)

    def match_with_sales(self, record, aggregates, store):
        return {"country": record["Country"]}

    def reduce_from_sales(self, aggregates, batch):
        aggregates["lines"] += len(batch)
        aggregates["revenue"] += sum(sale["amount"] for sale in batch)

    def transform(self, aggregates, record):
        return [{"country": record["Country"], "lines": aggregates["lines"],
                 "revenue": round(aggregates["revenue"], 2)}]


migrations = [Customers, Sales, CountrySales]
