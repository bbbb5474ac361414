"""Writing rows: one function per dialect in :data:`INSERTERS`, where the fast paths slot in.

Every function runs inside the caller's transaction. PostgreSQL streams plain inserts with COPY
(``postgres.py``); MariaDB/MySQL send multi-row INSERTs (``mysql.py``); SQLite uses executemany.
The ``on_conflict`` rule becomes the dialect's upsert construct.
"""

from __future__ import annotations

from sqlalchemy import Connection, insert

from ..common import OnConflict
from .batch import FastPathRefused, InsertBatch, Inserter
from .mysql import insert_mysql
from .postgres import insert_postgresql
from .sqlite import insert_sqlite

__all__ = ["INSERTERS", "FastPathRefused", "InsertBatch", "Inserter", "inserter_for"]


def insert_generic(conn: Connection, batch: InsertBatch) -> None:
    """Plain INSERT, for dialects without an upsert we know (``on_conflict="error"`` only)."""
    conn.execute(insert(batch.table), batch.rows)


INSERTERS: dict[str, Inserter] = {
    "sqlite": insert_sqlite,
    "postgresql": insert_postgresql,
    "mysql": insert_mysql,
    "mariadb": insert_mysql,
}
"""The insert path of each dialect, by SQLAlchemy dialect name."""


def inserter_for(dialect: str, on_conflict: OnConflict) -> Inserter:
    """The insert function for ``dialect``.

    Raises:
        ValueError: ``on_conflict`` needs an upsert that ferryman does not know for ``dialect``.
    """
    if dialect in INSERTERS:
        return INSERTERS[dialect]
    if on_conflict != "error":
        raise ValueError(f"on_conflict={on_conflict!r} is not supported on {dialect}; supported: {', '.join(INSERTERS)}")
    return insert_generic
