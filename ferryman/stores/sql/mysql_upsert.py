"""Upserts by the store's key alone on MariaDB/MySQL, for tables with another unique key.

``INSERT ... ON DUPLICATE KEY UPDATE`` acts on a clash with *any* unique key: a record whose
(unique) email another row has would overwrite that other row, and ``on_conflict="ignore"``
would drop the record, both silently, never reaching ``handle_duplicate``, while the run counts
the record as written. Where the table has a unique key besides the store's key, a batch is
saved in its transaction as the other databases' ``ON CONFLICT (key)`` saves it: the rows whose
key is stored (locked with ``FOR UPDATE``) are updated by key (or left, for ``"ignore"``), the
others inserted plainly, so that a clash on another unique key raises a duplicate, as with
``on_conflict="error"``. A table whose only unique key is the store's keeps the one statement.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, bindparam, select, tuple_, update
from sqlalchemy.dialects import mysql

from .batch import InsertBatch
from .constraints import unique_keys


def needs_key_only_upsert(batch: InsertBatch) -> bool:
    """Whether ``ON DUPLICATE KEY UPDATE`` could act on another unique key than the store's."""
    if batch.on_conflict == "error":
        return False
    cache: dict[tuple[str, ...], bool] = batch.table.info.setdefault("ferryman_other_unique_keys", {})
    if batch.key not in cache:
        cache[batch.key] = bool(unique_keys(batch.table, batch.key))
    return cache[batch.key]


def upsert_by_key(conn: Connection, batch: InsertBatch) -> None:
    """Update (or keep, for ``"ignore"``) the rows whose key is stored, insert the others."""
    table, key = batch.table, batch.key
    columns = [table.c[k] for k in key]
    ids = [tuple(row[k] for k in key) for row in batch.rows]
    lookup = columns[0].in_([i[0] for i in ids]) if len(key) == 1 else tuple_(*columns).in_(ids)
    stored = {tuple(r) for r in conn.execute(select(*columns).where(lookup).with_for_update())}
    new = [row for row, i in zip(batch.rows, ids) if i not in stored]
    updated = batch.updated_columns
    if batch.on_conflict == "update" and updated and len(new) < len(batch.rows):
        statement = update(table).where(and_(*(table.c[k] == bindparam(f"key_{k}") for k in key)))
        statement = statement.values({c: bindparam(f"value_{c}") for c in updated})
        params: list[dict[str, Any]] = [
            {**{f"key_{k}": row[k] for k in key}, **{f"value_{c}": row[c] for c in updated}}
            for row, i in zip(batch.rows, ids) if i in stored
        ]
        conn.execute(statement, params)
    if new:
        conn.execute(mysql.insert(table), new)
