"""The read API of an SQLite ledger: :class:`~ferryman.progress.reader.LedgerReader` in SQL.

:meth:`SqliteReader.open` is what the status server opens at every snapshot: read-only
(``mode=ro``: it never creates nor changes the file, and takes no lease), and cheap: it checks
that the file is a ledger this code may read, not every page of it. A ledger written by an older
ferryman is read as it is (tables or columns it lacks read as empty), an empty database as a
ledger with nothing in it yet.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from itertools import chain, islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ...errors import LedgerFileError
from ...ids import format_id
from ...sampling import reservoir
from ...types import RecordId
from ..codec import array_keys, decode_failed, decode_id
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
from .schema import LEDGER_TABLES, columns, connect, inspect_ledger, tables

if TYPE_CHECKING:
    from .parts import SqlitePartitionSet

LOOKUP_CHUNK = 500
"""Ids per ``rid IN (...)`` statement (SQLite allows 32766 parameters; 500 is plenty)."""

_RUN_COLUMNS = "id, job, attempt, started_at, ended_at, outcome, pid, host, step, last_error"


class SqliteReader(LedgerReader):
    """Reads the SQLite ledger on ``conn`` (its own connection, or a writer's)."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path
        self.address = path
        """What another process opens this ledger with."""
        conn.create_function("ferryman_mentions", 4, _mentions, deterministic=True)
        with self._reading():
            self._tables = tables(conn)
            self._migration_columns = columns(conn, "migration") if "migration" in self._tables else set()

    @classmethod
    def open(cls, path: str) -> SqliteReader:
        """A reader of the ledger at ``path`` on a read-only connection of its own.

        Raises:
            LedgerFileError: the file cannot be opened, is not a ferryman ledger, or is of a
                newer schema.
        """
        try:
            conn = connect(path, read_only=True, timeout=5)
        except sqlite3.Error as exc:
            raise LedgerFileError(f"cannot read progress ledger {path}: {exc}") from exc
        try:
            inspect_ledger(conn, path)
            return cls(conn, path)
        except BaseException:
            conn.close()
            raise

    def _reading(self) -> AbstractContextManager[None]:
        return read_errors_named(self.path, sqlite3.DatabaseError)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        if self.conn.in_transaction:  # already inside one (a writer's, or a snapshot's)
            yield
            return
        with self._reading():
            self.conn.execute("BEGIN")
        try:
            yield
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")  # a read transaction: nothing to keep or lose

    # --- runs and the lease ---------------------------------------------------------------------

    def runs(self, limit: int | None = None) -> list[RunRecord]:
        if "run" not in self._tables:
            return []
        with self._reading():
            rows = self.conn.execute(f"SELECT {_RUN_COLUMNS} FROM run ORDER BY id DESC LIMIT ?",
                                     (-1 if limit is None else limit,)).fetchall()
        return [RunRecord(*row) for row in rows]

    def run_reports(self, run_id: int) -> list[dict[str, Any]]:
        if "run" not in self._tables:
            return []
        with self._reading():
            row = self.conn.execute("SELECT reports FROM run WHERE id = ?", (run_id,)).fetchone()
        return stored_reports(None if row is None else row[0])

    def holder(self) -> Holder | None:
        if "lease" not in self._tables:
            return None
        with self._reading():
            return current_holder(self.conn)

    # --- migrations -----------------------------------------------------------------------------

    def migrations(self) -> list[MigrationRecord]:
        if "migration" not in self._tables:
            return []
        have = self._migration_columns  # a read-only file of schema 2 has no lineage yet
        dest = "dest" if "dest" in have else "NULL"
        changes = "changes" if "changes" in have else "0"
        with self._reading():
            rows = self.conn.execute(f"SELECT identity, in_progress, completed, report, {dest}, {changes} "
                                     "FROM migration ORDER BY id").fetchall()
        return [MigrationRecord(i, bool(p), bool(c), stored_report(r), d, n) for i, p, c, r, d, n in rows]

    def identities(self) -> list[str]:
        if "migration" not in self._tables:
            return []
        with self._reading():
            return [r[0] for r in self.conn.execute("SELECT identity FROM migration ORDER BY id")]

    def metadata(self) -> ProgressMetadata:
        with self._reading():
            rows = self.conn.execute(
                "SELECT identity, in_progress, completed FROM migration ORDER BY id").fetchall()
            return ProgressMetadata(
                datetime.fromisoformat(self._meta("timestamp")),
                [i for i, _, c in rows if c], [i for i, p, c in rows if p and not c],
            )

    def _meta(self, key: str) -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise LedgerFileError(f"{self.path} is not a ferryman progress ledger (no {key})")
        return str(row[0])

    @property
    def schema_version(self) -> int:
        """The schema version the file says it has (:data:`~.schema.SCHEMA_VERSION` once
        opened for writing)."""
        with self._reading():
            return int(self._meta("schema"))

    def migration_id(self, identity: str) -> int | None:
        """The row id of a migration, None when the ledger does not know it."""
        row = self.conn.execute("SELECT id FROM migration WHERE identity = ?", (identity,)).fetchone()
        return None if row is None else int(row[0])

    # --- records --------------------------------------------------------------------------------

    @property
    def _has_log(self) -> bool:
        """False only for a version 1 file opened read-only (it has no log to read)."""
        return "succeeded_log" in self._tables

    def iter_succeeded(self, identity: str) -> Iterator[RecordId]:
        """Every succeeded id once: the per-id table, then the log (less ids failed since)."""
        with self._reading():
            mid = self.migration_id(identity)
            if mid is None:
                return
            if not self._has_log:
                for (rid,) in self.conn.execute("SELECT rid FROM succeeded WHERE migration = ?", (mid,)):
                    yield decode_id(rid)
                return
            has_failed = self.conn.execute(
                "SELECT 1 FROM failed WHERE migration = ? LIMIT 1", (mid,)).fetchone() is not None
            # One statement, one snapshot: a fold committed meanwhile cannot hide ids between the two.
            for logged, text in self.conn.execute(
                    "SELECT 0, rid FROM succeeded WHERE migration = ?1 UNION ALL "
                    "SELECT 1, ids FROM (SELECT ids FROM succeeded_log WHERE migration = ?1 ORDER BY seq)",
                    (mid,)):
                if not logged:
                    yield decode_id(text)
                    continue
                yield from self.logged_ids(mid, text, has_failed)

    def sample_succeeded(self, identity: str, k: int, rng: random.Random) -> tuple[list[RecordId], int]:
        """The reservoir runs over the ids' stored texts and decodes only the ``k`` it keeps
        (decoding a million ids would cost more than the whole sample)."""
        with self._reading(), self.snapshot():
            mid = self.migration_id(identity)
            if mid is None:
                return [], 0
            if not self._has_log or self.conn.execute(
                    "SELECT 1 FROM failed WHERE migration = ? LIMIT 1", (mid,)).fetchone() is not None:
                return super().sample_succeeded(identity, k, rng)  # ids logged, then failed: left out there
            # two statements in one read transaction (the snapshot): one state of the ledger
            table = map(itemgetter(0), self.conn.execute("SELECT rid FROM succeeded WHERE migration = ?", (mid,)))
            logged = chain.from_iterable(map(array_keys, map(itemgetter(0), self.conn.execute(
                "SELECT ids FROM succeeded_log WHERE migration = ? ORDER BY seq", (mid,)))))
            keys, total = reservoir(chain(table, logged), k, rng)
        return [decode_id(key) for key in keys], total

    def present(self, table: str, mid: int, keys: list[str]) -> Iterator[str]:
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start:start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            for (rid,) in self.conn.execute(
                    f"SELECT rid FROM {table} WHERE migration = ? AND rid IN ({marks})", (mid, *chunk)):
                yield rid

    def iter_failed(self, identity: str) -> Iterator[FailedRecord]:
        with self._reading():
            mid = self.migration_id(identity)
            if mid is None:
                return
            for rid, d, c, a, t in self.conn.execute(
                "SELECT rid, description, cause, action, timestamp FROM failed "
                "WHERE migration = ? ORDER BY seq", (mid,)
            ):
                yield decode_failed(rid, d, c, a, t)

    def newest_failed(self, limit: int) -> list[tuple[str, FailedRecord]]:
        if "failed" not in self._tables:
            return []
        with self._reading():
            rows = self.conn.execute(
                "SELECT m.identity, f.rid, f.description, f.cause, f.action, f.timestamp "
                "FROM failed f JOIN migration m ON m.id = f.migration ORDER BY f.seq DESC LIMIT ?",
                (limit,)).fetchall()
        return [(identity, decode_failed(*row)) for identity, *row in rows]

    def failed_page(self, *, migration: str | None = None, text: str | None = None,
                    offset: int = 0, limit: int = 50) -> FailedPage:
        """:meth:`LedgerReader.failed_page` that decodes the page's records alone. Without a
        search, the page is read along the ``failed_seq`` index and the total is the kept
        count; a search reads the keys of the records it chooses (and every description and
        cause once), then the page's records."""
        with self.snapshot(), self._reading():
            names = self.names()
            chosen = select_migrations(names, migration, self.path)
            if "failed" not in self._tables:
                return FailedPage(0)
            identity_of = {self.migration_id(identity): identity for identity in names}
            conditions: list[str] = []
            params: list[object] = []
            if migration is not None:
                mids = [self.migration_id(identity) for identity in chosen]
                conditions.append(f"migration IN ({','.join('?' * len(mids))})")
                params.extend(mids)
            if text:
                conditions.append("ferryman_mentions(?, rid, description, cause)")
                params.append(text.casefold())
            where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
            if not text:
                counts = self.failed_counts()
                total = sum(sum(counts.get(identity, {}).values()) for identity in chosen)
                rows = self.conn.execute(
                    f"SELECT migration, rid, description, cause, action, timestamp FROM failed{where} "
                    "ORDER BY seq DESC LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall()
                return FailedPage(total, [(identity_of[mid], decode_failed(*row)) for mid, *row in rows])
            keys = self.conn.execute(f"SELECT migration, rid FROM failed{where} ORDER BY seq DESC",
                                     params).fetchall()
            page = []
            for mid, rid in keys[offset:offset + limit]:
                row = self.conn.execute("SELECT rid, description, cause, action, timestamp FROM failed "
                                        "WHERE migration = ? AND rid = ?", (mid, rid)).fetchone()
                page.append((identity_of[mid], decode_failed(*row)))
        return FailedPage(len(keys), page)

    def failed_counts(self) -> dict[str, dict[str, int]]:
        """As the ledger's triggers keep them (:data:`~.schema.FAILED_INDEX`); counted from the
        records in a file no ferryman with those counters has written to yet."""
        if "failed" not in self._tables:
            return {}
        if "failed_count" not in self._tables:
            return self.count_failed()
        with self._reading():
            return counts_by_identity(self.conn.execute(
                "SELECT m.identity, c.action, c.n FROM failed_count c JOIN migration m "
                "ON m.id = c.migration WHERE c.n > 0"))

    def count_failed(self) -> dict[str, dict[str, int]]:
        """:meth:`failed_counts` counted from the failed records themselves (reads them all)."""
        if "failed" not in self._tables:
            return {}
        with self._reading():
            return counts_by_identity(self.conn.execute(
                "SELECT m.identity, f.action, count(*) FROM failed f JOIN migration m "
                "ON m.id = f.migration GROUP BY m.identity, f.action"))

    def fatal_errors(self, limit: int | None = None) -> list[str]:
        if "fatal_error" not in self._tables:
            return []
        with self._reading():
            return [r[0] for r in self.conn.execute(
                "SELECT text FROM (SELECT seq, text FROM fatal_error ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                (-1 if limit is None else limit,))]

    def fatal_count(self) -> int:
        if "fatal_error" not in self._tables:
            return 0
        with self._reading():
            return int(self.conn.execute("SELECT count(*) FROM fatal_error").fetchone()[0])

    # --- events and verifications -----------------------------------------------------------------

    def events(self, after: int = 0, limit: int = EVENTS_PAGE) -> list[dict[str, Any]]:
        if "event" not in self._tables:
            return []
        with self._reading():
            rows = self.conn.execute("SELECT seq, body FROM event WHERE seq > ? ORDER BY seq LIMIT ?",
                                     (after, limit)).fetchall()
        return [{"seq": seq, **json.loads(body)} for seq, body in rows]

    def verification(self) -> dict[str, Any] | None:
        if "verification" not in self._tables:
            return None
        with self._reading():
            row = self.conn.execute("SELECT body FROM verification ORDER BY id DESC LIMIT 1").fetchone()
        found: dict[str, Any] | None = None if row is None else json.loads(row[0])
        return found

    def row_counts(self) -> dict[str, int]:
        """How many rows each table of the ledger holds (a table the file lacks is left out):
        what the file looks like inside, for someone who investigates it."""
        with self._reading():
            return {table: int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                    for table in sorted(self._tables & LEDGER_TABLES)}

    # --- what partitions of a run with workers read of it ------------------------------------

    def ledger_uid(self) -> str:
        return self._meta("uid")

    def has_rows(self, table: str, mid: int) -> bool:
        return self.conn.execute(f"SELECT 1 FROM {table} WHERE migration = ? LIMIT 1", (mid,)).fetchone() is not None

    def logged_texts(self, identity: str, chunk: int) -> Iterator[str]:
        mid = self.migration_id(identity)
        if mid is None:
            return
        rows = (rid for (rid,) in self.conn.execute("SELECT rid FROM succeeded WHERE migration = ?", (mid,)))
        while ids := list(islice(rows, chunk)):
            yield "[" + ",".join(ids) + "]"
        if self._has_log:
            for (text,) in self.conn.execute("SELECT ids FROM succeeded_log WHERE migration = ? ORDER BY seq",
                                             (mid,)):
                yield text

    def partitions(self, key: str) -> SqlitePartitionSet:
        """Kept in a directory beside the ledger's file (:mod:`.parts`)."""
        from .parts import SqlitePartitionSet, parts_directory

        return SqlitePartitionSet(parts_directory(self.path, key))

    # --- connections ----------------------------------------------------------------------------

    def new_reader(self) -> SqliteReader:
        return SqliteReader.open(self.path)

    def close(self) -> None:
        self.conn.close()



def _mentions(needle: str, rid: str, description: str, cause: str) -> bool:
    """:func:`~..model.mentions` of a stored failed record; an int id (a stored id that is
    neither a JSON string nor an array) is shown as it is stored, without decoding it."""
    if needle in description.casefold() or needle in cause.casefold():
        return True
    shown = rid if rid[0] not in '"[' else format_id(decode_id(rid))
    return needle in shown.casefold()
