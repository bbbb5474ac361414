"""The ``ferryman_journal`` table: progress notes committed in the same transaction as a batch;
and the ``ferryman_fence`` table: per migration, the lowest lease epoch whose batches may commit.

One table each per database (and schema), shared by every store there; rows name their migration.
``seq`` never repeats, even after deletes (SQLite needs AUTOINCREMENT for that), so the ledger can
rely on "everything up to seq N" meaning the same thing before and after a delete. Entries are
appended by the store's dialect (``SqlDialect.append_journal``), inside the batch's transaction.

A batch whose entry has a ``fence`` reads its migration's fence row in its own transaction, with
a share lock (PostgreSQL ``FOR SHARE``, MariaDB ``LOCK IN SHARE MODE``; SQLite's write lock
serializes anyway), and is refused when the row's epoch is above the entry's: a store's
``raise_fence`` writes the row, so it waits for the batches that read it before, and the batches
after it see the new epoch. No row: never raised, every batch passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    bindparam,
    case,
    delete,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateTable

from ..base import JournalEntry

JOURNAL_TABLE = "ferryman_journal"
FENCE_TABLE = "ferryman_fence"
FENCE_MESSAGE = "ferryman_fence: a newer lease fenced this migration off"
"""What the database's error says when its own check refuses a batch (PostgreSQL, MariaDB)."""


@dataclass(frozen=True)
class JournalTables:
    """A store's journal and fence tables (a schema's, or the database's)."""

    entries: Table
    fences: Table


class StaleFence(Exception):
    """A batch of ``migration`` under lease ``epoch`` was refused by the fence row read in its
    transaction (``fence``); the store names itself in the FencedOffError it becomes."""

    def __init__(self, migration: str, epoch: int, fence: int) -> None:
        super().__init__(migration, epoch, fence)
        self.migration, self.epoch, self.fence = migration, epoch, fence


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


def fence_table(schema: str | None = None) -> Table:
    """A fresh description of the fence table."""
    return Table(
        FENCE_TABLE,
        MetaData(),
        Column("migration", String(400), primary_key=True),
        Column("epoch", BigInteger, nullable=False),
        schema=schema,
    )


def journal_tables(schema: str | None = None) -> JournalTables:
    return JournalTables(journal_table(schema), fence_table(schema))


def create_journal(engine: Engine, tables: JournalTables) -> None:
    """Create the tables that are missing; safe to call again and from several processes."""
    for table in (tables.entries, tables.fences):
        try:
            with engine.begin() as conn:
                conn.execute(CreateTable(table, if_not_exists=True))
        except DBAPIError:
            # PostgreSQL's IF NOT EXISTS can still fail when another process creates it meanwhile.
            if not table_exists(engine, table):
                raise


def table_exists(engine: Engine, table: Table) -> bool:
    return inspect(engine).has_table(table.name, schema=table.schema)


def fence_query(table: Table) -> Select[Any]:
    """The SELECT of a migration's fence epoch (bound as ``migration``), share-locked."""
    return select(table.c.epoch).where(table.c.migration == bindparam("migration")).with_for_update(read=True)


def fence_epoch(conn: Connection, table: Table, migration: str) -> int | None:
    """The migration's fence, share-locked until the transaction ends; None: never raised."""
    epoch: int | None = conn.execute(fence_query(table), {"migration": migration}).scalar()
    return epoch


def check_fence_row(conn: Connection, table: Table, entry: JournalEntry) -> None:
    """Raise :class:`StaleFence` when the fence row (read and share-locked in ``conn``'s
    transaction) is above ``entry.fence``; nothing to check for an entry without one."""
    if entry.fence is None:
        return
    epoch = fence_epoch(conn, table, entry.migration)
    if epoch is not None and epoch > entry.fence:
        raise StaleFence(entry.migration, entry.fence, epoch)


def raise_fence_row(conn: Connection, table: Table, migration: str, epoch: int) -> None:
    """``epoch = max(epoch, new)``, the row made if missing, in ``conn``'s transaction. The
    UPDATE comes first: it waits for the batches holding the row's share lock (and on MariaDB,
    without a row, for those holding the gap's)."""
    raised = update(table).where(table.c.migration == migration).values(
        epoch=case((table.c.epoch < epoch, epoch), else_=table.c.epoch))
    if conn.execute(raised).rowcount == 0:
        conn.execute(insert(table).values(migration=migration, epoch=epoch))


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
