"""Durable ledgers of either kind in tests: an SQLite file or a PostgreSQL schema, behind one
:class:`Backend`, so that one test checks the ledger contract on both.

What no ferryman of this version writes (a heartbeat an hour old, a lease taken by a process
on another host) is made here, in SQL, and only here (:mod:`ledger_files` for SQLite).

Importable from tests as ``import ledgers`` (``pythonpath = ["tests"]``); the fixture
``ledger_backend`` (tests/progress/conftest.py) gives a fresh one per test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import ledger_files
import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import make_url

from ferryman import Action, FailedRecord, RunResult
from ferryman.progress.durable import DurableLedger
from ferryman.progress.lease import Holder, Process
from ferryman.progress.ledger import Ledger
from ferryman.progress.postgres import PgLease, PgLocation, PostgresLedger, PostgresReader
from ferryman.progress.reader import LedgerReader
from ferryman.progress.sqlite import SqliteLedger, SqliteReader
from ferryman.report import MigrationReport, MigrationState


class Backend:
    """One durable ledger: where it is, and how tests open, read and change it."""

    kind: str
    location: str
    """What ``--progress`` is given: a path, or a ``postgresql://`` URL."""

    def open(self, *, read_only: bool = False) -> DurableLedger:
        raise NotImplementedError

    def reader(self) -> LedgerReader:
        raise NotImplementedError

    def take_lease(self, me: Process, stale_after: float | None = None) -> Any:
        """Take the lease as ``me`` would, through the lease's own API (``stale_after``: its limit)."""
        raise NotImplementedError

    def age_heartbeat(self, seconds: float) -> None:
        """As if the holder had not beaten for ``seconds`` more."""
        raise NotImplementedError

    def dump(self) -> str:
        """The whole content as text: equal dumps, equal content."""
        raise NotImplementedError

    def holder(self) -> Holder | None:
        with self.reader() as reader:
            return reader.holder()

    def succeeded(self, identity: str) -> list[Any]:
        with self.reader() as reader:
            return sorted(reader.iter_succeeded(identity), key=repr)


class SqliteBackend(Backend):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def open(self, *, read_only: bool = False) -> DurableLedger:
        return SqliteLedger(self.path, read_only=read_only)

    def reader(self) -> LedgerReader:
        return SqliteReader.open(self.location)

    def take_lease(self, me: Process, stale_after: float | None = None) -> Any:
        return ledger_files.take_lease(self.path, me, stale_after)

    def age_heartbeat(self, seconds: float) -> None:
        ledger_files.age_heartbeat(self.path, seconds)

    def dump(self) -> str:
        return ledger_files.dump(self.path)


class PostgresBackend(Backend):
    kind = "postgresql"

    def __init__(self, server_url: str, schema: str | None = None) -> None:
        url = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.server = url
        self.schema = schema or f"fl_{secrets.token_hex(6)}"
        self.location = f"{url}?schema={self.schema}"

    def open(self, *, read_only: bool = False) -> DurableLedger:
        return PostgresLedger(self.location, read_only=read_only)

    def reader(self) -> LedgerReader:
        return PostgresReader.open(self.location)

    def _conn(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.server, autocommit=True)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        return conn

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        """What another program does to the ledger's tables."""
        with closing(self._conn()) as conn:
            conn.execute(statement, params)  # type: ignore[arg-type]

    def take_lease(self, me: Process, stale_after: float | None = None) -> Any:
        lease = PgLease(PgLocation.parse(self.location), me=me)
        if stale_after is not None:
            lease.stale_after = stale_after
        with closing(self._conn()) as conn, conn.transaction():
            lease.acquire(conn)
        return lease

    def age_heartbeat(self, seconds: float) -> None:
        self.execute("UPDATE lease SET heartbeat = heartbeat - %s", (seconds,))

    def dump(self) -> str:
        with closing(self._conn()) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (self.schema,))]
            return "\n".join(f"{table}: {sorted(map(repr, conn.execute(sql.SQL('SELECT * FROM {}').format(sql.Identifier(table)))))}"
                             for table in tables)

    def drop(self) -> None:
        with closing(psycopg.connect(self.server, autocommit=True)) as conn:
            for (schema,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = %s "
                                          "OR starts_with(nspname, %s)", (self.schema, self.schema + "_p_")).fetchall():
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def backends(kind: str, tmp_path: Path, server_url: str | None) -> Iterator[Backend]:
    """A fresh backend of ``kind`` (``sqlite``, ``postgresql``), dropped afterwards."""
    if kind == "sqlite":
        yield SqliteBackend(tmp_path / "l.db")
        return
    assert server_url is not None
    backend = PostgresBackend(server_url)
    try:
        yield backend
    finally:
        backend.drop()


def env_with_repo() -> dict[str, str]:
    repo = Path(__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}


# --- runs and sources the ledger tests share --------------------------------------------------

WHEN = datetime(2024, 6, 1, 3, 0)


def failures(ids: Iterable[int], start: datetime = WHEN) -> list[FailedRecord]:
    return [FailedRecord(i, f"items(id={i})", f"ValueError: bad {i}", Action.RETRY, start + timedelta(seconds=i))
            for i in ids]


def a_run(open_ledger: Callable[[], Ledger], identity: str, *, ok: bool, fatal: str | None = None) -> None:
    """One run as the service records it, on the ledger ``open_ledger`` opens: its report, its
    failures, its outcome."""
    ledger = open_ledger()
    report = MigrationReport(identity, identity.rsplit(".", 1)[-1].lower(), "src", "dst")
    report.state = MigrationState.COMPLETED if ok else MigrationState.FAILED
    ledger.begin_run([report])
    ledger.start_migration(identity)
    ids = [1, 2, 3] if ok else [1, 2]  # 3 fails, until a run migrates it
    done = ledger.succeeded_among(identity, ids)  # as the runner does: each id once
    ledger.record(identity, [i for i in ids if i not in done], [] if ok else failures([3]))
    if fatal:
        ledger.record_fatal(identity, fatal)
    ledger.finish_migration(identity, completed=ok)
    ledger.end_run(RunResult([report]))
    ledger.close()


def make_source(directory: Path, n: int) -> None:
    """``src.db`` with ``n`` rows in table src, and an empty table dst in ``dst.db``."""
    for name in ("src", "dst"):
        engine = sa.create_engine(f"sqlite:///{directory}/{name}.db")
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n INTEGER)")
            if name == "src":
                conn.execute(sa.text("INSERT INTO src VALUES (:id, :name, :n)"),
                             [{"id": i, "name": f"row {i}", "n": i} for i in range(1, n + 1)])
        engine.dispose()


GATED_TARGET = '''\
import os, time
from ferryman import SqlStore, migration

HERE = os.path.dirname(os.path.abspath(__file__))

stores = [SqlStore("src", "sqlite:///" + os.path.join(HERE, "src.db"), "items"),
          SqlStore("dst", {dest_url!r}, "items")]


@migration(source="src", dest="dst", batch_size=250, name="copy_items")
class CopyItems:
    def transform(self, aggregates, record):
        if record["id"] % 50 == 0:
            time.sleep(0.01)  # slow enough to be killed or paused mid-run
        if record["id"] == {gate_at}:
            open(os.path.join(HERE, "at-gate"), "w").close()
            while not os.path.exists(os.path.join(HERE, "open-gate")):
                time.sleep(0.01)
        if {fail_every} and record["id"] % {fail_every} == 0:
            raise ValueError("no good: " + str(record["id"]))
        return [{{"id": record["id"], "name": record["name"]}}]


migrations = [CopyItems]
'''
"""A TARGET copying table items of ``src.db`` beside it into ``dest_url``, slowly enough to act
during the run; the record ``gate_at`` waits at a gate (the file ``at-gate`` appears, the file
``open-gate`` lets it go); with ``fail_every``, the records whose id is a multiple of it fail."""


def gated_target(dest_url: str, gate_at: int, fail_every: int = 0) -> str:
    return GATED_TARGET.format(dest_url=dest_url, gate_at=gate_at, fail_every=fail_every)
