"""SqlDatabase and reflected keys: a database's tables as stores, keyed by their primary keys."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from ferryman import MemoryStore, MigrationService, SqlDatabase, SqlStore, StoreUnusableError, migration

TABLES = """
CREATE TABLE customers ("CustomerId" INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE lines (invoice INTEGER, line INTEGER, qty INTEGER, PRIMARY KEY (line, invoice));
CREATE TABLE notes (body TEXT, customer INTEGER);
CREATE TABLE events (id INTEGER, what TEXT);
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/db.sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in filter(str.strip, TABLES.split(";")):
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql("""INSERT INTO customers VALUES (2, 'b'), (1, 'a')""")
        conn.exec_driver_sql("INSERT INTO lines VALUES (1, 2, 5), (2, 1, 6), (1, 1, 7)")
        conn.exec_driver_sql("INSERT INTO events VALUES (2, 'b'), (1, 'a')")
    engine.dispose()
    return url


def test_a_table_is_keyed_by_its_primary_key_single_or_composite(url):
    db = SqlDatabase(url)
    customers, lines = db["customers"], db.table("lines", "invoice_lines")
    assert (customers.name, customers.key, customers.key_given) == ("customers", "CustomerId", False)
    assert [r["CustomerId"] for r in customers.read_page(None, None, 10)] == [1, 2]
    assert (lines.name, lines.key, lines.key_fields) == ("invoice_lines", ("line", "invoice"), ("line", "invoice"))
    assert [lines.id_of(r) for r in lines.read_page(None, None, 10)] == [(1, 1), (1, 2), (2, 1)]
    assert [r["qty"] for r in lines.get_many([(1, 2)])] == [6]
    assert customers.engine is lines.engine  # one engine, one pool for the database
    keyed = db.table("customers", key="name")
    assert (keyed.key, keyed.key_given) == ("name", True)
    assert [r["name"] for r in keyed.read_page(None, "a", 10)] == ["b"]
    assert SqlStore("c", url, "customers").key == "CustomerId"  # a store of its own reflects too


def test_a_table_without_a_primary_key_asks_for_key_in_one_line(url):
    notes = SqlDatabase(url)["notes"]
    with pytest.raises(StoreUnusableError) as info:
        notes.read_page(None, None, 1)
    message = str(info.value)
    assert "\n" not in message
    assert "table notes" in message and "the table has no primary key (nor an id column)" in message
    assert "key=..." in message
    assert "<primary key>" in repr(notes)  # a repr never reflects
    assert SqlDatabase(url).table("notes", key="body").read_page(None, None, 5) == []  # a key given: fine


def test_a_table_without_a_primary_key_but_an_id_column_is_keyed_by_it_as_before(url):
    events = SqlDatabase(url)["events"]
    assert [r["what"] for r in events.read_page(None, None, 5)] == ["a", "b"]
    assert (events.key, events.key_note) == ("id", "no primary key: its id column")


def test_building_stores_never_connects():
    db = SqlDatabase("postgresql+psycopg://nobody:secret@127.0.0.1:1/nowhere")
    store = db["anything"]
    assert repr(store) == ("SqlStore('anything', 'postgresql+psycopg://nobody:***@127.0.0.1:1/nowhere', "
                           "table='anything', key=<primary key>)")
    assert "secret" not in repr(db)
    store.close()


def test_a_schema_given_to_the_database_is_its_tables_default(postgres_url):
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA sales")
        conn.exec_driver_sql("CREATE TABLE sales.orders (order_no INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO sales.orders VALUES (7)")
    engine.dispose()
    orders = SqlDatabase(postgres_url, schema="sales")["orders"]
    assert (orders.table_name, orders.key, orders.read_page(None, None, 5)) == ("sales.orders", "order_no",
                                                                               [{"order_no": 7}])
    assert orders.dataset.endswith("/sales.orders")


def test_the_plan_shows_the_keys_it_reflected_and_the_tables_without_one(url):
    @migration(source="customers", dest="out")
    class Copy:
        def transform(self, aggregates, record):
            return [record]

    @migration(source="invoice_lines", dest="out2", match=[])
    class Lines:
        def transform(self, aggregates, record):
            return [record]

    @migration(source="events", dest="out4")
    class Events:
        def transform(self, aggregates, record):
            return [record]

    @migration(source="notes", dest="out3")
    class Notes:
        def transform(self, aggregates, record):
            return [record]

    db = SqlDatabase(url)
    stores = [db["customers"], db.table("lines", "invoice_lines"), db["notes"], MemoryStore("out"),
              MemoryStore("out2"), MemoryStore("out3"), db["events"], MemoryStore("out4")]
    lines = MigrationService(stores, [Copy, Lines, Events, Notes]).explain()
    assert lines[:4] == ["1. [order 0] Copy: customers -> out; no dependency",
                         "2. [order 0] Lines: invoice_lines -> out2; no dependency",
                         "3. [order 0] Events: events -> out4; no dependency",
                         "4. [order 0] Notes: notes -> out3; no dependency"]
    assert lines[4] == ("keys reflected from the tables' primary keys: customers CustomerId, "
                        "events id (no primary key: its id column), invoice_lines (line, invoice)")
    assert lines[5].startswith("store 'notes': no key: StoreUnusableError: the table has no primary key")
    assert len(lines) == 6
