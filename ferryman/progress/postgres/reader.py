"""The read API of a PostgreSQL ledger: :class:`~ferryman.progress.reader.LedgerReader` in SQL,
readable from any host that reaches the database.

:meth:`PostgresReader.open` is what the status server opens at every snapshot: a read-only
connection (it never creates nor changes anything, and takes no lease) whose snapshots are
``REPEATABLE READ`` transactions. A schema with no ledger yet reads as a ledger with nothing in it.
Ids are read in pages along the primary key, so memory holds a page, never a migration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.pq import TransactionStatus

from ...errors import LedgerFileError
from ...types import RecordId
from ..codec import decode_failed, decode_id
from ..lease import Holder
from ..model import FailedRecord, ProgressMetadata
from ..reader import (
    EVENTS_PAGE,
    FailedPage,
    LedgerReader,
    MigrationRecord,
    RunRecord,
    counts_by_identity,
    select_migrations,
    stored_report,
    stored_reports,
)
from ..storage import read_errors_named
from .lease import current_holder
from .location import PgLocation
from .schema import connect, inspect_ledger

if TYPE_CHECKING:
    from .parts import PgPartitionSet

PAGE = 10_000
"""Ids read per statement while iterating a migration's records."""
LOG_PAGE = 16
"""Rows of the log of successes (a page of ids each) read per statement."""

_RUN_COLUMNS = "id, job, attempt, started_at, ended_at, outcome, pid, host, step, last_error"
_FAILED_COLUMNS = "rid, description, cause, action, timestamp"


class PostgresReader(LedgerReader):
    """Reads the PostgreSQL ledger on ``conn`` (its own connection, or a writer's)."""

    def __init__(self, conn: psycopg.Connection[Any], location: PgLocation, exists: bool) -> None:
        self.conn = conn
        self.location = location
        self.path = location.shown
        self.address = location.url
        """What another process opens this ledger with (its password included)."""
        self.exists = exists
        """False for a schema without a ledger (yet): everything reads as empty."""

    @classmethod
    def open(cls, location: str | PgLocation) -> PostgresReader:
        """A reader of the ledger at ``location`` on a read-only connection of its own.

        Raises:
            LedgerFileError: the server cannot be reached, or the schema holds something else
                or a ledger of a newer version.
        """
        location = PgLocation.parse(location) if isinstance(location, str) else location
        conn = connect(location, read_only=True)
        try:
            with read_errors_named(location.shown, psycopg.Error):
                exists = inspect_ledger(conn, location) is not None
            return cls(conn, location, exists)
        except BaseException:
            conn.close()
            raise

    def _reading(self) -> AbstractContextManager[None]:
        return read_errors_named(self.path, psycopg.Error)

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._reading():
            return self.conn.execute(query, params).fetchall()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        if self.conn.info.transaction_status != TransactionStatus.IDLE:  # already inside one
            yield
            return
        with self._reading(), self.conn.transaction():
            if not self.conn.read_only:  # a writer's connection: one state of the ledger all the same
                self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield

    # --- runs and the lease ---------------------------------------------------------------------

    def runs(self, limit: int | None = None) -> list[RunRecord]:
        if not self.exists:
            return []
        rows = self._rows(f"SELECT {_RUN_COLUMNS} FROM run ORDER BY id DESC LIMIT %s", (limit,))
        return [RunRecord(*row) for row in rows]

    def run_reports(self, run_id: int) -> list[dict[str, Any]]:
        if not self.exists:
            return []
        rows = self._rows("SELECT reports FROM run WHERE id = %s", (run_id,))
        return stored_reports(rows[0][0] if rows else None)

    def holder(self) -> Holder | None:
        if not self.exists:
            return None
        with self._reading():
            return current_holder(self.conn)

    # --- migrations -----------------------------------------------------------------------------

    def migrations(self) -> list[MigrationRecord]:
        if not self.exists:
            return []
        rows = self._rows("SELECT identity, in_progress, completed, report, dest, changes FROM migration ORDER BY id")
        return [MigrationRecord(i, p, c, stored_report(r), d, n) for i, p, c, r, d, n in rows]

    def identities(self) -> list[str]:
        if not self.exists:
            return []
        return [r[0] for r in self._rows("SELECT identity FROM migration ORDER BY id")]

    def metadata(self) -> ProgressMetadata:
        if not self.exists:
            return ProgressMetadata(datetime.now(), [], [])
        with self.snapshot():
            rows = self._rows("SELECT identity, in_progress, completed FROM migration ORDER BY id")
            return ProgressMetadata(datetime.fromisoformat(self._meta("timestamp")),
                                    [i for i, _, c in rows if c], [i for i, p, c in rows if p and not c])

    def _meta(self, key: str) -> str:
        rows = self._rows("SELECT value FROM meta WHERE key = %s", (key,))
        if not rows:
            raise LedgerFileError(f"{self.path} is not a ferryman progress ledger (no {key})")
        return str(rows[0][0])

    def migration_id(self, identity: str) -> int | None:
        """The row id of a migration, None when the ledger does not know it."""
        if not self.exists:
            return None
        rows = self._rows("SELECT id FROM migration WHERE identity = %s", (identity,))
        return None if not rows else int(rows[0][0])

    # --- records --------------------------------------------------------------------------------

    def iter_succeeded(self, identity: str) -> Iterator[RecordId]:
        """Every succeeded id once: the per-id table a page of its key at a time, then the log
        (less the ids failed since), a few rows at a time; in one snapshot on a reader's own
        connection (a run's fold committed meanwhile cannot hide nor repeat ids)."""
        if not self.conn.read_only:  # the writer: nobody else folds its log
            yield from self._succeeded(identity)
            return
        with self.snapshot():
            yield from self._succeeded(identity)

    def _succeeded(self, identity: str) -> Iterator[RecordId]:
        mid = self.migration_id(identity)
        if mid is None:
            return
        for keys in self._id_pages(mid, PAGE):
            yield from map(decode_id, keys)
        has_failed = self.has_rows("failed", mid)
        for text in self._logged(mid):
            yield from self.logged_ids(mid, text, has_failed)

    def _id_pages(self, mid: int, size: int) -> Iterator[list[str]]:
        """The migration's per-id successes (encoded), ``size`` at a time along the key."""
        last = ""
        while rows := self._rows("SELECT rid FROM succeeded WHERE migration = %s AND rid > %s ORDER BY rid LIMIT %s",
                                 (mid, last, size)):
            yield [rid for (rid,) in rows]
            last = rows[-1][0]

    def _logged(self, mid: int) -> Iterator[str]:
        """The migration's log of successes, its rows' JSON arrays in order, a few rows a statement."""
        seq = 0
        while logged := self._rows("SELECT seq, ids FROM succeeded_log WHERE migration = %s AND seq > %s "
                                   "ORDER BY seq LIMIT %s", (mid, seq, LOG_PAGE)):
            yield from (text for _, text in logged)
            seq = logged[-1][0]

    def present(self, table: str, mid: int, keys: list[str]) -> list[str]:
        """Which of ``keys`` (encoded ids) ``table`` holds for the migration."""
        return [r[0] for r in self._rows(f"SELECT rid FROM {table} WHERE migration = %s AND rid = ANY(%s)",
                                         (mid, keys))]

    def iter_failed(self, identity: str) -> Iterator[FailedRecord]:
        mid = self.migration_id(identity)
        if mid is None:
            return
        last = 0
        while True:
            rows = self._rows(f"SELECT seq, {_FAILED_COLUMNS} FROM failed WHERE migration = %s AND seq > %s "
                              "ORDER BY seq LIMIT %s", (mid, last, PAGE))
            for _, *row in rows:
                yield decode_failed(*row)
            if len(rows) < PAGE:
                return
            last = rows[-1][0]

    def newest_failed(self, limit: int) -> list[tuple[str, FailedRecord]]:
        if not self.exists:
            return []
        rows = self._rows(f"SELECT m.identity, {', '.join('f.' + c for c in _FAILED_COLUMNS.split(', '))} "
                          "FROM failed f JOIN migration m ON m.id = f.migration ORDER BY f.seq DESC LIMIT %s",
                          (min(limit, 2**62),))
        return [(identity, decode_failed(*row)) for identity, *row in rows]

    def failed_page(self, *, migration: str | None = None, text: str | None = None,
                    offset: int = 0, limit: int = 50) -> FailedPage:
        """:meth:`LedgerReader.failed_page`; without a search, only the page is read (along the
        ``seq`` index), with its total counted by the database."""
        if text:
            return super().failed_page(migration=migration, text=text, offset=offset, limit=limit)
        with self.snapshot():
            names = self.names()
            chosen = select_migrations(names, migration, self.path)
            if not self.exists:
                return FailedPage(0)
            identity_of = {self.migration_id(identity): identity for identity in names}
            mids = [self.migration_id(identity) for identity in chosen]
            ((total,),) = self._rows("SELECT count(*) FROM failed WHERE migration = ANY(%s)", (mids,))
            rows = self._rows(f"SELECT migration, {_FAILED_COLUMNS} FROM failed WHERE migration = ANY(%s) "
                              "ORDER BY seq DESC LIMIT %s OFFSET %s", (mids, limit, offset))
        return FailedPage(int(total), [(identity_of[mid], decode_failed(*row)) for mid, *row in rows])

    def failed_counts(self) -> dict[str, dict[str, int]]:
        if not self.exists:
            return {}
        return counts_by_identity(self._rows(
            "SELECT m.identity, f.action, count(*) FROM failed f JOIN migration m ON m.id = f.migration "
            "GROUP BY m.identity, f.action"))

    def fatal_errors(self, limit: int | None = None) -> list[str]:
        if not self.exists:
            return []
        return [r[0] for r in self._rows(
            "SELECT text FROM (SELECT seq, text FROM fatal_error ORDER BY seq DESC LIMIT %s) newest ORDER BY seq",
            (limit,))]

    def fatal_count(self) -> int:
        if not self.exists:
            return 0
        return int(self._rows("SELECT count(*) FROM fatal_error")[0][0])

    # --- events and verifications -----------------------------------------------------------------

    def events(self, after: int = 0, limit: int = EVENTS_PAGE) -> list[dict[str, Any]]:
        if not self.exists:
            return []
        rows = self._rows("SELECT seq, body FROM event WHERE seq > %s ORDER BY seq LIMIT %s", (after, limit))
        return [{"seq": seq, **json.loads(body)} for seq, body in rows]

    def verification(self) -> dict[str, Any] | None:
        if not self.exists:
            return None
        rows = self._rows("SELECT body FROM verification ORDER BY id DESC LIMIT 1")
        found: dict[str, Any] | None = json.loads(rows[0][0]) if rows else None
        return found

    # --- what partitions of a run with workers read of it ------------------------------------

    def ledger_uid(self) -> str:
        return self._meta("uid")

    def has_rows(self, table: str, mid: int) -> bool:
        return bool(self._rows(f"SELECT 1 FROM {table} WHERE migration = %s LIMIT 1", (mid,)))

    def logged_texts(self, identity: str, chunk: int) -> Iterator[str]:
        mid = self.migration_id(identity)
        if mid is None:
            return
        for keys in self._id_pages(mid, chunk):
            yield "[" + ",".join(keys) + "]"
        yield from self._logged(mid)

    def partitions(self, key: str) -> PgPartitionSet:
        """Kept in schemas beside the ledger's (:mod:`.parts`), which workers on any host reach."""
        from .parts import PgPartitionSet

        return PgPartitionSet(self.location, key, self.conn)

    # --- connections ----------------------------------------------------------------------------

    def new_reader(self) -> PostgresReader:
        return PostgresReader.open(self.location)

    def close(self) -> None:
        self.conn.close()


def ledger_exists(location: str | PgLocation) -> bool:
    """Whether the schema holds a ledger (LedgerFileError: something else, or unreachable)."""
    with PostgresReader.open(location) as reader:
        return reader.exists
