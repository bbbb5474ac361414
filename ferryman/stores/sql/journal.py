"""The ``ferryman_journal`` table: progress notes committed in the same transaction as a batch.

One table per database (and schema), shared by every store there; entries name their migration.
``seq`` never repeats, even after deletes (SQLite needs AUTOINCREMENT for that), so the ledger can
rely on "everything up to seq N" meaning the same thing before and after a delete. Entries are
appended by the store's dialect (``SqlDialect.append_journal``), inside the batch's transaction.
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, Text, delete, func, inspect, select
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateTable

from ..base import JournalEntry

JOURNAL_TABLE = "ferryman_journal"


def journal_table(schema: str | None = None) -> Table:
    """A fresh description of the journal table (each store keeps its own)."""
    return Table(
        JOURNAL_TABLE,
        MetaData(),
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("migration", String(400), nullable=False),
        # MySQL's TEXT stops at 64 KiB; a payload listing a batch's ids can be longer.
        Column("payload", Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False),
        schema=schema,
        sqlite_autoincrement=True,
    )


def create_journal(engine: Engine, table: Table) -> None:
    """Create the table if it is missing; safe to call again and from several processes."""
    try:
        with engine.begin() as conn:
            conn.execute(CreateTable(table, if_not_exists=True))
    except DBAPIError:
        # PostgreSQL's IF NOT EXISTS can still fail when another process creates it meanwhile.
        if not journal_exists(engine, table):
            raise


def journal_exists(engine: Engine, table: Table) -> bool:
    return inspect(engine).has_table(table.name, schema=table.schema)


def journal_values(entry: JournalEntry) -> dict[str, str]:
    """The journal row's values (``seq`` is the database's)."""
    return {"migration": entry.migration, "payload": entry.payload}


def read_entries(conn: Connection, table: Table, migration: str | None) -> list[JournalEntry]:
    query = select(table.c.seq, table.c.migration, table.c.payload).order_by(table.c.seq)
    if migration is not None:
        query = query.where(table.c.migration == migration)
    return [JournalEntry(migration=r.migration, payload=r.payload, seq=r.seq) for r in conn.execute(query)]


def delete_entries(conn: Connection, table: Table, migration: str | None, up_to_seq: int | None,
                   keep_last: bool = False) -> None:
    statement = delete(table)
    if migration is not None:
        statement = statement.where(table.c.migration == migration)
    if keep_last:  # the newest seq read first: MySQL deletes from no table its subquery reads
        newest = conn.execute(select(func.max(table.c.seq)).where(table.c.migration == migration)).scalar()
        if newest is None:
            return
        up_to_seq = newest - 1 if up_to_seq is None else min(up_to_seq, newest - 1)
    if up_to_seq is not None:
        statement = statement.where(table.c.seq <= up_to_seq)
    conn.execute(statement)


def has_entry(conn: Connection, table: Table, entry: JournalEntry) -> bool:
    """True when an entry with this migration and payload is stored (a commit that landed)."""
    query = select(table.c.seq).where(table.c.migration == entry.migration, table.c.payload == entry.payload)
    return conn.execute(query.limit(1)).first() is not None
