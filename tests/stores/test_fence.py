"""The destination's fence (``Store.raise_fence``): a batch whose journal entry carries a lease
epoch below its migration's fence commits nothing and raises FencedOffError, on every store and
every write path (SQLite's and MariaDB's plain INSERT, PostgreSQL's INSERT with its COMMIT and its
one-query COPY, MariaDB's batch sent ahead); raising the fence waits for a batch that checked it
before, whose entry is then in the journal."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import created_store, poll_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from ferryman.errors import FencedOffError, LeaseLostError
from ferryman.stores import JournalEntry, MemoryStore, SqlStore, Store
from ferryman.stores.base import SAVED

DDL = "CREATE TABLE items (id bigint PRIMARY KEY, name varchar(40) NOT NULL)"
KINDS = ["memory", "sqlite", "postgresql", "mariadb"]
URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}
BULK = 20
"""Rows enough for PostgreSQL's COPY and MariaDB's saving ahead (8 or more); fewer go by INSERT."""


def items(ids: range) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"item {i}"} for i in ids]


def make_store(kind: str, request: pytest.FixtureRequest, stores: list[SqlStore]) -> Store:
    if kind == "memory":
        return MemoryStore("items")
    url = str(request.getfixturevalue(URL_FIXTURES[kind]))
    store = created_store(url, DDL, "items", stores)
    store.save_all([], journal=JournalEntry("warm-up", ""))  # the table reflected, the journal made
    return store


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, stores: list[SqlStore]) -> Store:
    return make_store(request.param, request, stores)


def saved(store: Store) -> list[int]:
    return [r["id"] for r in store.read_page(None, None, 10_000)]


def payloads(store: Store, migration: str = "m") -> list[str]:
    return [e.payload for e in store.read_journal(migration)]


def entry(payload: str, fence: int | None, migration: str = "m") -> JournalEntry:
    return JournalEntry(migration, payload, fence=fence)


@pytest.mark.parametrize("rows", [3, BULK], ids=["insert", "bulk"])
def test_a_batch_of_an_older_epoch_is_fenced_off_and_writes_nothing(store: Store, rows: int) -> None:
    store.save_all(items(range(5)), journal=entry("before", 4))
    store.raise_fence("m", 5)
    with pytest.raises(FencedOffError) as caught:
        store.save_all(items(range(100, 100 + rows)), journal=entry("late", 4))
    error = caught.value
    assert isinstance(error, LeaseLostError) and error.exit_code == 1
    message = str(error)
    assert message.startswith("store 'items' (") and "'m'" in message
    assert "epoch 5" in message and "epoch 4" in message
    assert "lost its lease and wrote nothing of this batch" in message
    assert saved(store) == list(range(5))
    assert payloads(store) == ["before"]


@pytest.mark.parametrize("rows", [3, BULK], ids=["insert", "bulk"])
def test_a_batch_of_the_fence_s_epoch_or_a_newer_one_or_none_is_saved(store: Store, rows: int) -> None:
    store.raise_fence("m", 5)
    for n, fence in enumerate([5, 6, None]):
        store.save_all(items(range(n * 100, n * 100 + rows)), journal=entry(f"at {fence}", fence))
    store.save_all(items(range(900, 900 + rows)), journal=entry("other", 1, migration="other"))  # a fence per migration
    assert payloads(store) == ["at 5", "at 6", "at None"] and payloads(store, "other") == ["other"]
    assert len(saved(store)) == 4 * rows


def test_a_fence_never_goes_down(store: Store) -> None:
    store.raise_fence("m", 7)
    store.raise_fence("m", 3)
    with pytest.raises(FencedOffError, match="epoch 7"):
        store.save_all(items(range(3)), journal=entry("late", 6))
    assert saved(store) == [] and payloads(store) == []


@pytest.mark.parametrize("rows", [3, BULK], ids=["insert", "bulk"])
def test_a_migration_key_with_quotes_and_dollars_is_fenced_like_any_other(store: Store, rows: int) -> None:
    """The key goes into the checks' SQL text as a literal (PostgreSQL's DO block is itself
    dollar-quoted)."""
    odd = "it's $ferryman$ \\ $ferryman_$ \"-- odd"
    store.raise_fence(odd, 2)
    with pytest.raises(FencedOffError):
        store.save_all(items(range(rows)), journal=entry("late", 1, migration=odd))
    store.save_all(items(range(rows)), journal=entry("current", 2, migration=odd))
    assert payloads(store, odd) == ["current"] and saved(store) == list(range(rows))


def test_a_fenced_entry_read_back_carries_no_fence(store: Store) -> None:
    """The fence is checked, not stored."""
    store.save_all(items(range(2)), journal=entry("p", 3))
    assert [(e.migration, e.payload, e.fence) for e in store.read_journal("m")] == [("m", "p", None)]


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_bulk_batches_take_the_fast_path_and_small_ones_insert(kind: str, request: pytest.FixtureRequest,
                                                               stores: list[SqlStore]) -> None:
    """So the tests above cover both: COPY (PostgreSQL) or sending ahead (MariaDB), and INSERT."""
    store = make_store(kind, request, stores)
    write = store.begin_save_all(items(range(BULK)), journal=entry("bulk", 1))
    assert write is not SAVED
    write.wait()
    assert store.begin_save_all(items(range(100, 103)), journal=entry("insert", 1)) is SAVED


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.booleans(), st.integers(1, 6)), max_size=12))
def test_a_batch_commits_exactly_when_its_epoch_is_at_least_every_fence_raised_before(
        steps: list[tuple[bool, int]]) -> None:
    store = MemoryStore("items")
    highest = 0
    committed: list[str] = []
    for n, (raise_it, epoch) in enumerate(steps):
        if raise_it:
            store.raise_fence("m", epoch)
            highest = max(highest, epoch)
            continue
        try:
            store.save_all([{"id": n}], journal=entry(str(n), epoch))
            committed.append(str(n))
            assert epoch >= highest
        except FencedOffError:
            assert epoch < highest
    assert payloads(store) == committed
    assert saved(store) == [int(p) for p in committed]


# --- raising the fence waits for a batch that checked it -------------------------------------


class JournalHeld:
    """Another session holds a lock that makes a batch's journal INSERT wait: the batch has
    written its rows and checked its fence (share-locked), and cannot commit yet."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.engine: Engine = create_engine(url, poolclass=NullPool)
        self.conn = self.engine.connect()
        lock = ("LOCK TABLE ferryman_journal IN SHARE MODE" if kind == "postgresql"
                else "LOCK TABLES ferryman_journal WRITE")
        self.conn.execute(text(lock))

    def batch_waits(self) -> bool:
        query = ("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                 "WHERE c.relname = 'ferryman_journal' AND NOT l.granted" if self.kind == "postgresql"
                 else "SELECT count(*) FROM information_schema.processlist WHERE state LIKE 'Waiting for table%'")
        with self.engine.connect() as conn:
            return bool(conn.execute(text(query)).scalar_one())

    def release(self) -> None:
        if self.kind == "postgresql":
            self.conn.commit()
        else:
            self.conn.execute(text("UNLOCK TABLES"))
        self.conn.close()
        self.engine.dispose()


def in_thread(work: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


@pytest.fixture
def held() -> Iterator[list[JournalHeld]]:
    """Locks taken by a test, released after it whatever happens."""
    taken: list[JournalHeld] = []
    yield taken
    for lock in taken:
        if not lock.conn.closed:
            lock.release()


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
@pytest.mark.parametrize("rows", [3, BULK], ids=["insert", "bulk"])
@pytest.mark.parametrize("raised_before", [True, False], ids=["fence-row", "no-fence-row"])
def test_raising_the_fence_waits_for_a_batch_that_checked_it_which_then_is_in_the_journal(
        kind: str, rows: int, raised_before: bool, request: pytest.FixtureRequest,
        stores: list[SqlStore], held: list[JournalHeld]) -> None:
    store = make_store(kind, request, stores)
    assert isinstance(store, SqlStore)
    if raised_before:
        store.raise_fence("m", 3)
    lock = JournalHeld(kind, str(store.url))
    held.append(lock)
    batch, batch_errors = in_thread(lambda: store.save_all(items(range(rows)), journal=entry("checked", 3)))
    poll_until(lock.batch_waits, timeout=30, what="the batch to wait for its journal INSERT")
    fence, fence_errors = in_thread(lambda: store.raise_fence("m", 4))
    time.sleep(0.5)
    assert fence.is_alive(), "raise_fence returned while a batch that checked the old epoch was open"

    lock.release()
    batch.join(30)
    fence.join(30)
    assert not batch.is_alive() and not fence.is_alive()
    assert batch_errors == [] and fence_errors == []
    assert payloads(store) == ["checked"] and saved(store) == list(range(rows))
    with pytest.raises(FencedOffError, match="epoch 4"):
        store.save_all(items(range(100, 100 + rows)), journal=entry("late", 3))



# --- a commit in doubt ------------------------------------------------------------------------


def test_a_commit_cut_off_is_never_taken_for_landed_once_the_fence_is_above_it(
        sqlite_url: str, stores: list[SqlStore], monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's connection is lost at its COMMIT (nothing landed); meanwhile the new holder
    raised the fence and saved the same ids, under the same payload. The journal holds an entry
    just like the lost batch's: it is not taken for it."""
    store = created_store(sqlite_url, DDL, "items", stores)
    store.save_all([], journal=JournalEntry("warm-up", ""))
    dialect = store.engine.dialect
    real_commit = dialect.do_commit
    new_holder = SqlStore("items", sqlite_url, "items")
    stores.append(new_holder)

    def lost_commit(dbapi_connection: Any) -> None:
        monkeypatch.setattr(dialect, "do_commit", real_commit)
        dbapi_connection.rollback()
        new_holder.raise_fence("m", 2)
        new_holder.save_all(items(range(3)), journal=entry("same ids", 2))
        dbapi_connection.close()
        raise sqlite3.ProgrammingError("Cannot operate on a closed database.")

    monkeypatch.setattr(dialect, "do_commit", lost_commit)
    with pytest.raises(FencedOffError, match="epoch 2"):
        store.save_all(items(range(3)), journal=entry("same ids", 1))
    assert payloads(store) == ["same ids"] and saved(store) == [0, 1, 2]  # the new holder's, once
