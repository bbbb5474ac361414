"""The tables of a PostgreSQL ledger, their version, and how a schema is told apart and opened.

Everything that knows the shape of the ledger lives here: the statements that create it, and
the checks that refuse a schema this code must not touch (another application's tables, a
ledger of a newer version) before anything is written to it. The tables live in one PostgreSQL
schema (:mod:`.location`), created on the first write in one transaction with the version row,
so a reader never sees a ledger without it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from ...errors import LedgerFileError
from .location import PgLocation

SCHEMA_VERSION = 1
"""A ledger of a newer version is refused: this code cannot know what it would break in it."""

NOW = "extract(epoch from clock_timestamp())"
"""The database's clock, in seconds since the epoch: the lease's times are taken on it, so that
hosts whose clocks differ judge a heartbeat alike."""

TABLES = """
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE lease (
    singleton integer PRIMARY KEY CHECK (singleton = 1),
    owner text NOT NULL, pid integer NOT NULL, host text NOT NULL,
    acquired_at double precision NOT NULL, heartbeat double precision NOT NULL,
    epoch bigint NOT NULL, started text
);
CREATE TABLE lease_epoch (singleton integer PRIMARY KEY CHECK (singleton = 1), epoch bigint NOT NULL);
CREATE TABLE migration (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, identity text NOT NULL UNIQUE,
    in_progress boolean NOT NULL DEFAULT false, completed boolean NOT NULL DEFAULT false,
    report text, dest text, changes integer NOT NULL DEFAULT 0, inputs text
);
CREATE TABLE succeeded (migration bigint NOT NULL, rid text NOT NULL, PRIMARY KEY (migration, rid));
CREATE TABLE succeeded_log (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, migration bigint NOT NULL, ids text NOT NULL
);
CREATE INDEX succeeded_log_migration ON succeeded_log (migration, seq);
CREATE TABLE failed (
    migration bigint NOT NULL, rid text NOT NULL, seq bigint GENERATED ALWAYS AS IDENTITY,
    description text NOT NULL, cause text NOT NULL, action text NOT NULL, timestamp text NOT NULL,
    PRIMARY KEY (migration, rid)
);
CREATE INDEX failed_seq ON failed (seq);
CREATE INDEX failed_action ON failed (migration, action);
CREATE TABLE fatal_error (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, migration text, text text NOT NULL);
CREATE TABLE run (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job integer NOT NULL, attempt integer NOT NULL,
    started_at double precision NOT NULL, ended_at double precision, outcome text, pid integer,
    host text, step text, last_error text, reports text
);
CREATE TABLE event (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL);
CREATE TABLE verification (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ok boolean NOT NULL, body text NOT NULL)
"""
"""Ids are stored as their JSON text (:mod:`ferryman.progress.codec`), so types survive. A run
appends each page's succeeded ids as one row of ``succeeded_log`` (the JSON array of their
texts, the page's journal entry's text); ``succeeded`` holds them one row each, indexed, for
lookups: a migration's log is folded into it when a run starts it again (as in the SQLite
ledger, an id failed after it was logged is left out: its failed entry is newer). A failed
record's ``seq`` orders failures (the first failure first), kept on an upsert."""

LEDGER_TABLES = frozenset({"meta", "lease", "lease_epoch", "migration", "succeeded", "succeeded_log", "failed",
                           "fatal_error", "run", "event", "verification"})

UPSERT_FAILED = (
    "INSERT INTO failed (migration, rid, description, cause, action, timestamp) "
    "SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) "
    "ON CONFLICT (migration, rid) DO UPDATE SET description = excluded.description, "
    "cause = excluded.cause, action = excluded.action, timestamp = excluded.timestamp"
)
"""Failed records of a migration (columns of :func:`failed_columns`), each replacing the
migration's entry for its id; one statement for a page."""

CONNECT_TIMEOUT = 10
"""Seconds to reach the server before the ledger is said unreachable."""
IDLE_IN_TRANSACTION = "60s"
"""How long the server lets a writer's session sit idle inside a transaction before it ends the
session: a process paused in the middle of a ledger transaction (SIGSTOP, a paused VM) would
otherwise hold the lease row's lock forever, and no run could take its lease over."""


def connect(location: PgLocation, *, read_only: bool, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection to the ledger's database with the ledger's schema as its search path.

    A writer's commits wait for the server's disk (``synchronous_commit``, whatever the server's
    default); a reader's transactions are read-only snapshots.

    Raises :class:`LedgerFileError` when the server cannot be reached.
    """
    try:
        conn = psycopg.connect(location.conninfo, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT,
                               application_name="ferryman")
    except psycopg.Error as exc:
        raise LedgerFileError(f"cannot reach progress ledger {location.shown}: {_first_line(exc)}") from exc
    try:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(location.schema)))
        if read_only:
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        else:
            conn.execute("SET synchronous_commit TO on")
            conn.execute(f"SET idle_in_transaction_session_timeout TO '{IDLE_IN_TRANSACTION}'")
    except BaseException:
        conn.close()
        raise
    return conn


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def tables(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    return {name for (name,) in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')", (schema,))}


def inspect_ledger(conn: psycopg.Connection[Any], location: PgLocation) -> int | None:
    """The schema version of the ferryman ledger in the location's schema, None when it has no
    table (or does not exist); read without writing anything. Anything else raises
    :class:`LedgerFileError`: another application's tables, a ledger of a newer version."""
    shown = f"{location.shown} (schema {location.schema})"
    found = tables(conn, location.schema)
    if not found:
        return None
    meta: dict[str, str] = {}
    if "meta" in found:
        try:
            with conn.transaction():
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except psycopg.errors.UndefinedColumn:  # a table "meta" of another shape
            meta = {}
    if "uid" not in meta or "schema" not in meta:
        raise LedgerFileError(
            f"{shown} is not a ferryman progress ledger (a schema with tables {', '.join(sorted(found))}); "
            "give the progress a schema of its own (?schema=NAME)")
    try:
        version = int(meta["schema"])
    except ValueError:
        raise LedgerFileError(f"progress ledger {shown} is damaged: schema version {meta['schema']!r}") from None
    if version > SCHEMA_VERSION:
        raise LedgerFileError(f"{shown} was written by a newer ferryman (ledger schema {version}; "
                              f"this version reads up to {SCHEMA_VERSION})")
    foreign = found - LEDGER_TABLES
    if foreign:
        raise LedgerFileError(
            f"{shown} is a ferryman progress ledger holding tables of another application too "
            f"({', '.join(sorted(foreign))}); give the progress a schema of its own (?schema=NAME)")
    return version


def create(conn: psycopg.Connection[Any], location: PgLocation) -> None:
    """Create the schema, its tables and meta rows unless another process did (in the caller's
    transaction, serialised with other creators by an advisory lock on the schema's name)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ferryman ledger {location.schema}",))
    if inspect_ledger(conn, location) is not None:
        return
    made = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (location.schema,)).fetchone() is None
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(location.schema)))
    for statement in TABLES.split(";"):
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('uid', %s), ('schema', %s), ('timestamp', %s), ('made_schema', %s)",
                 (uuid.uuid4().hex, str(SCHEMA_VERSION), datetime.now().isoformat(), str(made).lower()))


def drop(conn: psycopg.Connection[Any], location: PgLocation) -> None:
    """Drop the ledger's tables, and its schema when the ledger made it (in the caller's
    transaction): a schema made beforehand for the ledger stays, empty."""
    if inspect_ledger(conn, location) is None:
        return
    row = conn.execute("SELECT value FROM meta WHERE key = 'made_schema'").fetchone()
    if row is not None and row[0] == "true":
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(location.schema)))
        return
    for table in sorted(tables(conn, location.schema)):
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(location.schema, table)))


def failed_columns(records: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows ``(rid, description, cause, action, timestamp)`` as the five arrays of
    :data:`UPSERT_FAILED`, the last row of an id kept (one statement cannot change a row twice)."""
    last = {row[0]: row for row in records}
    return [list(column) for column in zip(*last.values())] if last else [[], [], [], [], []]


def migration_row(conn: psycopg.Connection[Any], identity: str) -> int:
    """The id of the migration row of ``identity``, made when missing."""
    conn.execute("INSERT INTO migration (identity) VALUES (%s) ON CONFLICT (identity) DO NOTHING", (identity,))
    row = conn.execute("SELECT id FROM migration WHERE identity = %s", (identity,)).fetchone()
    assert row is not None
    return int(row[0])
