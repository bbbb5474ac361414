"""MongoStore on mongomock: the store contract as far as mongomock goes, ObjectId ids, errors.

No MongoDB server runs here, so everything below runs against ``mongomock``, an in-process
imitation of pymongo's API. What that proves and what it does not is written down in
``docs/stores.md``: mongomock has no sessions or transactions, so the store is not atomic on it
and the contract's atomicity and journal tests skip; the transactional code path is run once
with a stand-in session (``test_transactional_path_writes_the_journal_in_the_session``), which
checks the calls, not MongoDB's atomicity.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import mongomock
import pymongo
import pytest
from bson import ObjectId

from ferryman import Cardinality, MigrationService, Retry, migration
from ferryman.errors import DuplicateDataError, StoreError, TerminalStoreError, TransientStoreError
from ferryman.progress.files import open_ledger
from ferryman.stores import JournalEntry, MemoryStore, MongoStore, SqlStore
from ferryman.stores.common import OnConflict
from ferryman.testing import INT_KEY, Layout, StoreContract, StoreFactory, create_test_table
from ferryman.types import Record


@pytest.fixture
def client() -> Iterator[Any]:
    c = mongomock.MongoClient()
    yield c
    c.close()


NO_TRANSACTIONS = "mongomock has no sessions, so MongoStore is not atomic there"
NO_JOURNAL = "without transactions MongoStore keeps no journal"


class TestMongoStoreOnMongomock(StoreContract):
    not_applicable: ClassVar[dict[str, str]] = {
        "test_batch_with_a_stored_key_saves_nothing": NO_TRANSACTIONS,
        "test_a_begun_batch_with_a_stored_key_saves_nothing": NO_TRANSACTIONS,
        "test_duplicate_within_a_batch_saves_nothing": NO_TRANSACTIONS,
        "test_duplicate_in_a_unique_field_saves_nothing": NO_TRANSACTIONS,
        "test_journal_entry_is_committed_with_the_batch": NO_JOURNAL,
        "test_journal_entry_is_not_written_when_the_batch_fails": NO_JOURNAL,
        "test_journal_entry_with_an_empty_batch": NO_JOURNAL,
        "test_read_journal_of_one_migration": NO_JOURNAL,
        "test_a_batch_below_its_migration_s_fence_raises_fenced_off_and_saves_nothing": NO_JOURNAL,
        "test_a_batch_at_or_above_its_migration_s_fence_or_without_one_is_saved": NO_JOURNAL,
        "test_delete_journal_forgets_entries_up_to_seq": NO_JOURNAL,
        "test_delete_journal_of_one_migration_keeps_the_others": NO_JOURNAL,
        "test_delete_journal_keep_last_keeps_the_newest_entry_of_the_migration": NO_JOURNAL,
        "test_missing_required_field_is_not_a_duplicate": "a collection has no required fields",
    }

    @pytest.fixture
    def make_store(self, client: Any) -> StoreFactory:
        made: list[int] = []

        def make(
            layout: Layout = INT_KEY,
            rows: Iterable[Record] = (),
            *,
            name: str = "items",
            on_conflict: OnConflict = "error",
        ) -> MongoStore:
            collection = f"{name}_{len(made)}"
            made.append(1)
            for field in layout.unique:
                client["test"][collection].create_index([(field, 1)], unique=True, sparse=True)
            store = MongoStore(name, client["test"], collection, key=layout.key, on_conflict=on_conflict)
            rows = list(rows)
            if rows:
                store.save_all(rows)
            return store

        return make


# --- ObjectId keys ------------------------------------------------------------------------


@pytest.fixture
def docs(client: Any) -> MongoStore:
    """Twelve documents with MongoDB-assigned ObjectId keys."""
    store = MongoStore("docs", client["test"], "docs")
    store.save_all([{"n": i, "name": f"doc {i}"} for i in range(12)])
    return store


def test_objectid_keys_are_str_ids(docs: MongoStore) -> None:
    page = docs.read_page(None, None, 100)
    assert [d["n"] for d in page] == list(range(12))  # ObjectIds grow with insertion
    ids = [docs.id_of(d) for d in page]
    assert all(type(i) is str and len(i) == 24 for i in ids)
    assert ids == [str(d["_id"]) for d in page]


def test_str_ids_find_objectid_keys(docs: MongoStore) -> None:
    ids = [docs.id_of(d) for d in docs.read_page(None, None, 100)]
    # as a progress file gives them back: str, and paging continues after one
    assert [docs.id_of(d) for d in docs.get_many([ids[7], ids[2], str(ObjectId())])] == [ids[2], ids[7]]
    assert [d["n"] for d in docs.read_page(None, ids[4], 3)] == [5, 6, 7]
    pages = list(docs.scan(batch_size=5))
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [docs.id_of(d) for p in pages for d in p] == ids


def test_hex_looking_str_keys_stay_str(client: Any) -> None:
    store = MongoStore("codes", client["test"], "codes")
    hexy = "0123456789abcdef01234567"
    store.save_all([{"_id": hexy, "n": 1}, {"_id": "plain", "n": 2}])
    assert store.get_many([hexy, "plain"]) == [{"_id": hexy, "n": 1}, {"_id": "plain", "n": 2}]
    assert store.read_page(None, hexy, 10) == [{"_id": "plain", "n": 2}]


def test_objectid_keys_round_trip_through_the_progress(client: Any, tmp_path: Any) -> None:
    source = MongoStore("docs", client["test"], "src")
    source.save_all([{"n": i} for i in range(9)])
    out = MemoryStore("out", "id")
    broken = {4}

    @migration(source="docs", dest="out", cardinality=Cardinality.EXACTLY_ONE, batch_size=4,
               save_retry=Retry(times=0, delay=0), load_retry=Retry(times=0, delay=0))
    class CopyDocs:
        def transform(self, aggregates: Any, record: Record) -> list[Record]:
            if record["n"] in broken:
                raise RuntimeError("not yet")
            return [{"id": str(record["_id"]), "n": record["n"]}]

    path = tmp_path / "run.db"
    assert MigrationService([source, out], [CopyDocs], ledger=path).run().report("CopyDocs").failed == 1
    failed = list(open_ledger(path).progress().migrations[f"{CopyDocs.__module__}.{CopyDocs.__qualname__}"].failed)
    assert len(failed) == 1 and type(failed[0]) is str
    broken.clear()
    assert MigrationService([source, out], [CopyDocs], ledger=path).run().ok
    assert sorted(r["n"] for r in out.records()) == list(range(9))


# --- filters, duplicates, errors ----------------------------------------------------------


def test_filters_in_and_native_operators(client: Any) -> None:
    store = MongoStore("items", client["test"], "f", key="id")
    store.save_all(INT_KEY.rows(range(10)))
    assert [r["id"] for r in store.read_page({"n": [0, 2]}, 2, 10)] == [3, 5, 6, 8, 9]
    assert [r["id"] for r in store.read_page({"id": {"$gte": 7}}, None, 10)] == [7, 8, 9]
    assert store.count({"n": {"$in": [1]}}) == 3
    assert "_id" not in store.get_many([1])[0]  # the key is "id": MongoDB's _id stays inside


def test_duplicate_cause_is_the_drivers_error(client: Any) -> None:
    store = MongoStore("items", client["test"], "d", key="id")
    store.save_all(INT_KEY.rows(range(3)))
    with pytest.raises(DuplicateDataError) as caught:
        store.save_all([INT_KEY.row(5), INT_KEY.row(1)])
    assert isinstance(caught.value.__cause__, pymongo.errors.BulkWriteError)
    assert "(id)=(1)" in str(caught.value) and "\n" not in str(caught.value)
    assert store.atomic is False  # and indeed: the record before the clash was saved
    assert [r["id"] for r in store.read_page(None, None, 10)] == [0, 1, 2, 5]


def test_a_journal_without_transactions_is_refused(client: Any) -> None:
    store = MongoStore("items", client["test"], "j", key="id")
    assert store.supports_journal is False
    with pytest.raises(TerminalStoreError, match="needs transactions"):
        store.save_all([INT_KEY.row(1)], journal=JournalEntry("m", "p"))


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (pymongo.errors.AutoReconnect("primary stepped down"), TransientStoreError),
        (pymongo.errors.ServerSelectionTimeoutError("no servers"), TransientStoreError),
        (pymongo.errors.NetworkTimeout("timed out"), TransientStoreError),
        (pymongo.errors.OperationFailure("not authorized", code=13), TerminalStoreError),
        (pymongo.errors.OperationFailure("conflict", code=112, details={"errorLabels": ["TransientTransactionError"]}),
         TransientStoreError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value.__name__,
)
def test_driver_errors_map_to_transient_or_terminal(
    client: Any, monkeypatch: pytest.MonkeyPatch, error: Exception, kind: type[StoreError]
) -> None:
    store = MongoStore("items", client["test"], "e", key="id")

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(type(store.collection), "find", fail)
    with pytest.raises(StoreError) as caught:
        store.read_page(None, None, 10)
    assert type(caught.value) is kind and caught.value.__cause__ is error
    assert str(caught.value).startswith("store 'items' (database test, collection e): ")


def test_url_password_is_hidden_and_no_connection_is_made_when_built() -> None:
    store = MongoStore("far", "mongodb://app:s3cret-pw@127.0.0.1:1/shop", "orders",
                       transactions=False)
    assert "s3cret-pw" not in store._label and "app:***@" in store._label
    store.close()


def test_upsert_is_idempotent(client: Any) -> None:
    store = MongoStore("items", client["test"], "u", key="id", on_conflict="update")
    rows = INT_KEY.rows(range(5))
    store.save_all(rows)
    store.save_all(rows)
    store.save_all([{"id": 2, "name": "changed"}])
    assert store.read_page(None, None, 10) == [*rows[:2], {**rows[2], "name": "changed"}, *rows[3:]]


# --- the transactional path, with a stand-in session ---------------------------------------


class FakeSession:
    """Records that a transaction was opened and closed; mongomock ignores ``session=``."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.log.append("session closed")

    def start_transaction(self) -> Any:
        log = self.log

        class Transaction:
            def __enter__(self) -> None:
                log.append("begin")

            def __exit__(self, exc_type: Any, *rest: Any) -> None:
                log.append("abort" if exc_type else "commit")

        return Transaction()


@pytest.fixture
def sessions_ignored() -> Iterator[None]:
    """mongomock accepts (and ignores) ``session=`` arguments meanwhile."""
    mongomock.ignore_feature("session")
    yield
    mongomock.warn_on_feature("session")


@pytest.mark.usefixtures("sessions_ignored")
def test_transactional_path_writes_the_journal_in_the_session(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(client, "start_session", lambda: FakeSession(calls), raising=False)
    store = MongoStore("items", client["test"], "t", key="id", transactions=True)
    assert store.atomic and store.supports_journal
    store.save_all(INT_KEY.rows(range(3)), journal=JournalEntry("m1", "p1"))
    store.save_all(INT_KEY.rows(range(3, 5)), journal=JournalEntry("m2", "p2"))
    assert calls == ["begin", "commit", "session closed"] * 2
    entries = store.read_journal()
    assert [(e.migration, e.payload, e.seq) for e in entries] == [("m1", "p1", 1), ("m2", "p2", 2)]
    with pytest.raises(DuplicateDataError):
        store.save_all([INT_KEY.row(9), INT_KEY.row(1)], journal=JournalEntry("m1", "lost"))
    assert calls[-3:] == ["begin", "abort", "session closed"]
    store.delete_journal("m1", up_to_seq=1)
    assert [e.payload for e in store.read_journal()] == ["p2"]


# --- a migration into MongoDB -------------------------------------------------------------


def test_sqlite_to_mongo_migration(client: Any, sqlite_url: str, tmp_path: Any) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(sqlite_url)
    create_test_table(engine, "items")
    engine.dispose()
    source = SqlStore("items", sqlite_url, "items")
    source.save_all(INT_KEY.rows(range(30)))
    dest = MongoStore("cards", client["test"], "cards", key="id")

    @migration(source="items", dest="cards", cardinality=Cardinality.EXACTLY_ONE, batch_size=8)
    class ToCards:
        def transform(self, aggregates: Any, record: Record) -> list[Record]:
            return [{"id": record["id"], "title": record["name"].title(), "tags": [record["code"], record["n"]]}]

    try:
        result = MigrationService([source, dest], [ToCards], ledger=tmp_path / "run.db").run()
        assert result.ok, result.summary()
        got = [r for page in dest.scan(batch_size=7) for r in page]
        assert got == [{"id": i, "title": f"Name {i}", "tags": [f"c{i:04d}", i % 3]} for i in range(30)]
    finally:
        source.close()
