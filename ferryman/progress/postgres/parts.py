"""Where a PostgreSQL ledger keeps the partitions of a run with workers: schemas beside its own.

Per migration run in partitions (see :mod:`ferryman.progress.partitions` for what they are),
in the ledger's database:

- schema :func:`parts_schema` (the ledger's schema name, ``_p_`` and a digest of the ledger's
  schema and the migration's key), table ``document``: the round's split and the ids its retry
  pass ran, as JSON, with the ledger's schema name (so that only this ledger's are removed);
- schema ``<that>_<i>``: partition ``i``'s own ledger (:class:`PgPartitionLedger`), a
  PostgreSQL ledger like any other, with its lease on the database's clock.

Workers on any host that reaches the database claim partitions: a claim holds the split's row
``FOR UPDATE`` while it takes the partition's lease, and the coordinator closes the round by
deleting that row, which waits for a claim in flight. The lease is what a worker holds while it
runs the partition: a row lock could not be held for hours (a transaction that long holds back
the server's vacuum, and dies with its connection).

This module owns those schemas; the partitions' ledgers are the PostgreSQL ledger's own tables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from ...errors import LedgerWriteError
from ..partitions import PartitionLookups, PartitionSet
from ..storage import read_errors_named
from .location import PgLocation
from .reader import PostgresReader
from .schema import connect, tables
from .writer import PostgresLedger

KEPT_OF_NAME = 40
"""Characters of the ledger's schema name a partitions schema starts with (PostgreSQL names
hold 63)."""

DOCUMENT = "CREATE TABLE IF NOT EXISTS {}.document (name text PRIMARY KEY, ledger text NOT NULL, body text NOT NULL)"


def parts_schema(schema: str, key: str) -> str:
    """The schema of migration ``key``'s partitions, beside the ledger in ``schema``."""
    digest = hashlib.sha256(f"{schema}\0{key}".encode()).hexdigest()[:12]
    return f"{schema[:KEPT_OF_NAME]}_p_{digest}"


class PgPartitionLedger(PartitionLookups, PostgresLedger):
    """Partition ``i``'s ledger: a schema, a lease and journal key of its own."""

    def __init__(self, location: PgLocation, main: PostgresReader, main_uid: str) -> None:
        super().__init__(location)
        self._join(main, main_uid)


class PgPartitionSet(PartitionSet):
    """The partitions of migration ``key`` of the ledger at ``location``. The split is read on
    ``ledger_conn`` (the ledger's connection: a status read that finds no round opens
    nothing); everything else on a connection of its own, opened when first needed and closed
    by :meth:`release`."""

    def __init__(self, location: PgLocation, key: str, ledger_conn: psycopg.Connection[Any]) -> None:
        self.location = location
        self.schema = parts_schema(location.schema, key)
        self._ledger_conn = ledger_conn
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.location, read_only=False)
        return self._conn

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _documents(self) -> sql.Composed:
        return sql.SQL("{}.document").format(sql.Identifier(self.schema))

    def _has_documents(self, conn: psycopg.Connection[Any]) -> bool:
        return conn.execute("SELECT to_regclass(%s)", (f'"{self.schema}".document',)).fetchone() not in (None, (None,))

    def _read(self, name: str) -> Any:
        with read_errors_named(self.location.shown, psycopg.Error):
            conn = self._ledger_conn
            if not self._has_documents(conn):
                return None
            row = conn.execute(sql.SQL("SELECT body FROM {} WHERE name = %s").format(self._documents()),
                               (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _write(self, name: str, data: Any) -> None:
        conn = self._connection()
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ferryman parts {self.schema}",))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
                conn.execute(sql.SQL(DOCUMENT).format(sql.Identifier(self.schema)))
                conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
                                     "SET body = excluded.body").format(self._documents()),
                             (name, self.location.schema, json.dumps(data)))
        except psycopg.Error as exc:
            raise LedgerWriteError(f"cannot write progress ledger {self.location.shown} "
                                   f"(schema {self.schema}): {exc}") from exc

    @contextmanager
    def claiming(self, round_id: str) -> Iterator[bool]:
        conn = self._connection()
        with read_errors_named(self.location.shown, psycopg.Error), conn.transaction():
            if not self._has_documents(conn):
                yield False
                return
            row = conn.execute(sql.SQL("SELECT body FROM {} WHERE name = 'split' FOR UPDATE")
                               .format(self._documents())).fetchone()
            yield row is not None and str(json.loads(row[0])["round"]) == round_id

    def close(self) -> None:
        conn = self._connection()
        with read_errors_named(self.location.shown, psycopg.Error):
            if self._has_documents(conn):
                conn.execute(sql.SQL("DELETE FROM {} WHERE name = 'split'").format(self._documents()))

    def _location(self, index: int) -> PgLocation:
        schema = f"{self.schema}_{index}"
        return dataclasses.replace(self.location, schema=schema, shown=f"{self.location.shown} (schema {schema})")

    def ledger(self, index: int, main: Any) -> PgPartitionLedger:
        """``main``: the main :class:`PostgresLedger` (read through its own connection)."""
        return PgPartitionLedger(self._location(index), main, main.uid)

    @contextmanager
    def reading(self, index: int) -> Iterator[PostgresReader | None]:
        """A reader on this set's connection, its search path set to the partition's schema."""
        location = self._location(index)
        conn = self._connection()
        with read_errors_named(self.location.shown, psycopg.Error):
            exists = "run" in tables(conn, location.schema)
            if exists:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(location.schema)))
        yield PostgresReader(conn, location, exists) if exists else None

    def existing(self) -> list[int]:
        with read_errors_named(self.location.shown, psycopg.Error):
            names = [name for (name,) in self._connection().execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (self.schema + "_",))]
        found = (name[len(self.schema) + 1:] for name in names)
        return sorted(int(index) for index in found if index.isdigit())

    def remove(self) -> None:
        conn = self._connection()
        try:
            with conn.transaction():
                for index in self.existing():
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                                 .format(sql.Identifier(f"{self.schema}_{index}")))
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
        except psycopg.Error as exc:
            raise LedgerWriteError(f"cannot write progress ledger {self.location.shown} "
                                   f"(schema {self.schema}): {exc}") from exc


_PARTS_SCHEMA = re.compile(r"_p_[0-9a-f]{12}")


def drop_every_partition(conn: psycopg.Connection[Any], schema: str) -> None:
    """In ``conn``'s transaction: the partitions of every migration of the ledger in
    ``schema`` dropped (those whose documents name that ledger)."""
    prefix = schema[:KEPT_OF_NAME]
    for (name,) in conn.execute("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)",
                                (prefix + "_p_",)).fetchall():
        if not _PARTS_SCHEMA.fullmatch(name[len(prefix):]) or "document" not in tables(conn, name):
            continue
        owner = conn.execute(sql.SQL("SELECT ledger FROM {}.document LIMIT 1").format(sql.Identifier(name))).fetchone()
        if owner is not None and owner[0] == schema:
            for (part,) in conn.execute("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)",
                                        (name + "_",)).fetchall():
                if part[len(name) + 1:].isdigit():
                    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(part)))
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
