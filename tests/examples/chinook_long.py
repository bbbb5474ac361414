"""examples/chinook.py as it is written without SqlDatabase and Lookup: one SqlStore with its key
per table, and a Match with a ``match_with_*`` and a ``reduce_from_*`` per lookup.

It must migrate exactly what the example does (``test_examples.py`` checks the destinations
row by row) and it is what the example's line count is compared with. Run it where the example
has made its databases (it loads the example's module for them).
"""

import importlib.util
import os

from ferryman import Cardinality, Match, SqlStore, migration

_spec = importlib.util.spec_from_file_location(
    "chinook_sample", os.path.join(os.path.dirname(__file__), "..", "..", "examples", "chinook.py"))
assert _spec is not None and _spec.loader is not None
_sample = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sample)  # makes the databases when missing
OLD, NEW = f"sqlite:///{_sample.OLD}", f"sqlite:///{_sample.NEW}"

# --- stores
stores = [
    SqlStore("artists", OLD, "artists", key="ArtistId"),
    SqlStore("albums", OLD, "albums", key="AlbumId"),
    SqlStore("tracks", OLD, "tracks", key="TrackId"),
    SqlStore("employees", OLD, "employees", key="EmployeeId"),
    SqlStore("countries", OLD, "countries", key="Country"),
    SqlStore("customers", OLD, "customers", key="CustomerId"),
    SqlStore("invoices", OLD, "invoices", key="InvoiceId"),
    SqlStore("invoice_lines", OLD, "invoice_lines", key="InvoiceLineId"),
    SqlStore("new_customers", NEW, "customers", key="id"),
    SqlStore("sales", NEW, "sales", key="id"),
    SqlStore("country_sales", NEW, "country_sales", key="country", on_conflict="update"),
]
# --- migrations


@migration(source="customers", dest="new_customers", match=[
    Match("employees", cardinality=Cardinality.ZERO_OR_ONE),
    Match("invoices", columns=("Total",))])
class Customers:
    def start_reduction(self, record, aggregates):
        aggregates.update(rep=None, invoices=0, spent=0.0)

    def match_with_employees(self, record, aggregates, store):
        if record["SupportRepId"] is None:
            return None
        return {"EmployeeId": record["SupportRepId"]}

    def reduce_from_employees(self, aggregates, batch):
        aggregates["rep"] = batch[0]

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
        if "UNIQUE constraint failed: customers.email" in str(error):  # no structured fields before
            return [{**output, "email": f"duplicate-of-{output['email']}"} for output in outputs]
        return None  # anything else: the record fails


@migration(source="invoice_lines", dest="sales", cardinality=Cardinality.EXACTLY_ONE, match=[
    Match("invoices", cardinality=Cardinality.EXACTLY_ONE, order=0),
    Match("customers", cardinality=Cardinality.EXACTLY_ONE, order=1),
    Match("tracks", cardinality=Cardinality.ZERO_OR_ONE, order=0),
    Match("albums", cardinality=Cardinality.ZERO_OR_ONE, order=1),
    Match("artists", cardinality=Cardinality.ZERO_OR_ONE, order=2)])
class Sales:
    def start_reduction(self, record, aggregates):
        aggregates.update(invoice=None, customer=None, track=None, album=None, artist=None)

    def match_with_invoices(self, record, aggregates, store):
        return {"InvoiceId": record["InvoiceId"]}

    def reduce_from_invoices(self, aggregates, batch):
        aggregates["invoice"] = batch[0]

    def match_with_customers(self, record, aggregates, store):
        return {"CustomerId": aggregates["invoice"]["CustomerId"]}

    def reduce_from_customers(self, aggregates, batch):
        aggregates["customer"] = batch[0]

    def match_with_tracks(self, record, aggregates, store):
        if record["TrackId"] is None:  # a gift card: no track, and none needed
            return None
        return {"TrackId": record["TrackId"]}

    def reduce_from_tracks(self, aggregates, batch):
        aggregates["track"] = batch[0]

    def match_with_albums(self, record, aggregates, store):
        track = aggregates["track"]
        if track is None and record["TrackId"] is not None:
            raise LookupError(f"track {record['TrackId']} does not exist")  # the cardinality per record
        if track is None or track["AlbumId"] is None:
            return None
        return {"AlbumId": track["AlbumId"]}

    def reduce_from_albums(self, aggregates, batch):
        aggregates["album"] = batch[0]

    def match_with_artists(self, record, aggregates, store):
        album = aggregates["album"]
        if album is None or album["ArtistId"] is None:
            return None
        return {"ArtistId": album["ArtistId"]}

    def reduce_from_artists(self, aggregates, batch):
        aggregates["artist"] = batch[0]

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
