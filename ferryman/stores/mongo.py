"""MongoStore: a MongoDB collection through pymongo (extra ``mongo``). Experimental.

Tested only against ``mongomock`` (see ``docs/stores.md``): what a real server does beyond what
mongomock imitates (transactions above all) has not been run here.

* **Reading**: keyset pages sorted on the key (``find(... {key: {"$gt": after}}).sort(key).limit(n)``;
  a composite key expands into ``$or`` terms). MongoDB compares values of one BSON type only
  ("type bracketing"), so a key must hold values of one type across the collection (all
  ObjectIds, all ints, all strings).
* **Ids**: an ObjectId key becomes its 24-digit hex str (:func:`ferryman.ids.normalize_id`); such
  str ids are turned back into ObjectIds for ``get_many`` and ``read_page`` when the collection's
  keys are ObjectIds.
* **Saving**: ``insert_many(ordered=True)``. Inside a transaction when the deployment has them (a
  replica set or a sharded cluster): then ``atomic`` and ``supports_journal`` are True and the
  journal entry is written in the same transaction. On a standalone server (and mongomock) a
  failing batch keeps the documents before the failing one, so ``atomic = False`` and ferryman
  saves one input record's outputs at a time.
* **Duplicates**: error code 11000 (a unique index: the key's, which the store creates for a key
  other than ``_id``, or any other) raises DuplicateDataError with the driver's error as cause.
* **Filters**: a dict; a list/tuple/set value becomes ``$in``; any other value (including an
  operator dict such as ``{"$gte": 3}``) is passed to MongoDB as is, so a native query works.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import DuplicateDataError, TerminalStoreError, TransientStoreError
from ..redact import mask_secrets
from ..types import Filter, Record, RecordId
from .base import JournalEntry, Store
from .common import IN_TYPES, OnConflict, check_on_conflict, describe_values

log = logging.getLogger("ferryman")

IDS_PER_QUERY = 500
"""``get_many`` asks for at most this many ids per query."""

JOURNAL_COLLECTION = "ferryman_journal"
JOURNAL_COUNTER = "ferryman_journal_seq"
DUPLICATE_CODES = {11000, 11001, 12582}


def _pymongo() -> Any:
    try:
        import pymongo
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("MongoStore needs pymongo: pip install 'ferryman[mongo]'") from exc
    return pymongo


class MongoStore(Store):
    """One MongoDB collection.

    Args:
        name: the registry name.
        database_or_client_url: a ``pymongo`` Database (or anything shaped like one, e.g.
            mongomock's), a ``MongoClient`` (then ``database`` names the database), or a URL
            ``mongodb://user:password@host:port/dbname`` (the client is made on first use).
        collection: the collection name.
        key: the key field (default ``_id``), or a tuple of fields for a composite key.
        database: the database name, for a client or a URL without one.
        on_conflict: ``"error"`` (DuplicateDataError), ``"update"`` (``$set`` the given fields,
            upserting: saving again is idempotent) or ``"ignore"`` (``$setOnInsert``).
        transactions: True/False to say whether the deployment runs transactions; None asks the
            server (``hello``) on first use.
        create_index: for a key other than ``_id``, create a unique index on it (named
            ``ferryman_key``) before the first write, so duplicates are caught and pages are
            read from an index.

    Records are read without MongoDB's ``_id`` when the key does not include it.
    """

    def __init__(
        self,
        name: str,
        database_or_client_url: Any,
        collection: str,
        key: str | Sequence[str] = "_id",
        *,
        database: str | None = None,
        on_conflict: OnConflict = "error",
        transactions: bool | None = None,
        create_index: bool = True,
    ) -> None:
        super().__init__(name, key)
        self.on_conflict = check_on_conflict(on_conflict)
        self.collection_name = collection
        self._lock = threading.RLock()
        self._transactions = transactions
        self._create_index = create_index and "_id" not in self.key_fields
        self._index_ready = False
        self._journal_ready = False
        self._objectid_keys: set[str] = set()
        self._owns_client = isinstance(database_or_client_url, str)
        self._url = database_or_client_url if isinstance(database_or_client_url, str) else None
        self._database_name = database
        self._db: Any = None
        self._client: Any = None
        if isinstance(database_or_client_url, str):
            shown = mask_secrets(database_or_client_url)
        elif hasattr(database_or_client_url, "list_collection_names"):  # a Database
            self._db = database_or_client_url
            self._client = database_or_client_url.client
            shown = f"database {database_or_client_url.name}"
        else:  # a client
            if not database:
                raise ValueError(f"store {name!r}: a MongoClient needs database=...")
            self._client = database_or_client_url
            self._db = database_or_client_url[database]
            shown = f"database {database}"
        self._label = f"store {name!r} ({shown}, collection {collection})"
        self._project = None if "_id" in self.key_fields else {"_id": False}

    # --- connection -----------------------------------------------------------------------

    @property
    def db(self) -> Any:
        """The pymongo Database (the client is made on first use for a URL)."""
        with self._lock:
            if self._db is None:
                pymongo = _pymongo()
                assert self._url is not None
                with self._errors():
                    name = self._database_name or pymongo.uri_parser.parse_uri(self._url)["database"]
                    if not name:
                        raise TerminalStoreError(f"{self._label}: the URL names no database; pass database=...")
                    self._client = pymongo.MongoClient(self._url, connect=False)
                    self._db = self._client[name]
            return self._db

    @property
    def collection(self) -> Any:
        return self.db[self.collection_name]

    @property
    def atomic(self) -> bool:  # type: ignore[override]
        """True when the deployment runs transactions (see the module docstring)."""
        return self._has_transactions()

    @property
    def supports_journal(self) -> bool:  # type: ignore[override]
        return self._has_transactions()

    def _has_transactions(self) -> bool:
        if self._transactions is None:
            try:
                hello = self.db.client.admin.command("hello")
            except NotImplementedError:  # mongomock
                self._transactions = False
            except Exception as exc:  # noqa: BLE001 - unreachable now: assume the weaker promise, ask later
                log.warning("%s: cannot tell whether transactions are available (%s); saving "
                            "as if not", self._label, exc)
                return False
            else:
                self._transactions = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
        return self._transactions

    def close(self) -> None:
        with self._lock:
            if self._owns_client and self._client is not None:
                self._client.close()
                self._client = self._db = None

    # --- errors ---------------------------------------------------------------------------

    @contextmanager
    def _errors(self, docs: Sequence[Record] | None = None) -> Iterator[None]:
        """pymongo errors as ferryman errors (the driver's error is the ``__cause__``)."""
        pymongo = _pymongo()
        errors = pymongo.errors
        try:
            yield
        except errors.PyMongoError as exc:
            detail = " ".join(str(exc).split())
            codes = _error_codes(exc)
            if codes & DUPLICATE_CODES:
                clash = _failing_index(exc)
                records = [docs[clash]] if docs is not None and clash is not None and clash < len(docs) else []
                what = ""
                if records and all(f in records[0] for f in self.key_fields):
                    what = " " + describe_values(self.key_fields, [records[0][f] for f in self.key_fields])
                raise DuplicateDataError(f"{self._label}: duplicate key{what}: {detail}", records) from exc
            transient = isinstance(exc, (errors.AutoReconnect, errors.ConnectionFailure, errors.NetworkTimeout,
                                         errors.ServerSelectionTimeoutError, errors.ExecutionTimeout,
                                         errors.WTimeoutError))
            if not transient and hasattr(exc, "has_error_label"):
                transient = exc.has_error_label("TransientTransactionError") or exc.has_error_label(
                    "RetryableWriteError")
            error_class = TransientStoreError if transient else TerminalStoreError
            raise error_class(f"{self._label}: {detail}") from exc

    # --- ids and queries ------------------------------------------------------------------

    def _key_is_objectid(self, field: str) -> bool:
        if field in self._objectid_keys:
            return True
        found = self.collection.find_one({field: {"$type": "objectId"}}, {"_id": True})
        if found is not None:
            self._objectid_keys.add(field)
        return found is not None

    def _stored_value(self, field: str, value: Any) -> Any:
        """A key value as stored: a str id of an ObjectId key becomes the ObjectId again."""
        if isinstance(value, str) and len(value) == 24:
            from bson import ObjectId

            if ObjectId.is_valid(value) and self._key_is_objectid(field):
                return ObjectId(value)
        return value

    def _key_values(self, record_id: RecordId) -> tuple[Any, ...]:
        values = tuple(record_id) if isinstance(record_id, (tuple, list)) else (record_id,)
        if len(values) != len(self.key_fields):
            raise ValueError(f"{self._label}: id {record_id!r} does not fit key {self.key!r}")
        return tuple(self._stored_value(f, v) for f, v in zip(self.key_fields, values))

    def _query(self, filter: Filter | None) -> dict[str, Any]:
        if filter is None:
            return {}
        if not isinstance(filter, Mapping):
            raise TypeError(f"{self._label}: a filter is a dict, not {type(filter).__name__}")
        return {f: {"$in": list(v)} if isinstance(v, IN_TYPES) else v for f, v in filter.items()}

    def _after(self, values: tuple[Any, ...]) -> dict[str, Any]:
        fields = self.key_fields
        terms = [
            {**{fields[j]: values[j] for j in range(i)}, fields[i]: {"$gt": values[i]}} for i in range(len(fields))
        ]
        return terms[0] if len(terms) == 1 else {"$or": terms}

    def _sort(self) -> list[tuple[str, int]]:
        return [(f, 1) for f in self.key_fields]

    # --- reading --------------------------------------------------------------------------

    def read_page(self, filter: Filter | None, after: RecordId | None, limit: int) -> list[Record]:
        if limit < 1:
            raise ValueError(f"{self._label}: limit must be at least 1, not {limit}")
        query = self._query(filter)
        with self._errors():
            if after is not None:
                query = {"$and": [query, self._after(self._key_values(after))]} if query else self._after(
                    self._key_values(after))
            cursor = self.collection.find(query, self._project).sort(self._sort()).limit(limit)
            return list(cursor)

    def get_many(self, ids: Sequence[RecordId]) -> list[Record]:
        records: list[Record] = []
        with self._errors():
            wanted = list(dict.fromkeys(self._key_values(i) for i in ids))
            for start in range(0, len(wanted), IDS_PER_QUERY):
                chunk = wanted[start:start + IDS_PER_QUERY]
                if len(self.key_fields) == 1:
                    query: dict[str, Any] = {self.key_fields[0]: {"$in": [v[0] for v in chunk]}}
                else:
                    query = {"$or": [dict(zip(self.key_fields, v)) for v in chunk]}
                records.extend(self.collection.find(query, self._project))
        return sorted(records, key=self.id_of)

    def count(self, filter: Filter | None = None) -> int:
        with self._errors():
            return int(self.collection.count_documents(self._query(filter)))

    # --- writing --------------------------------------------------------------------------

    def save_all(self, records: list[Record], *, journal: JournalEntry | None = None) -> None:
        """Insert (or upsert) the records; in one transaction, with the journal, when available."""
        if not records and journal is None:
            return
        docs = [dict(r) for r in records]  # insert_many adds _id to what it is given
        transactional = self._has_transactions()
        if journal is not None and not transactional:
            raise TerminalStoreError(f"{self._label}: a journal needs transactions, which this deployment lacks")
        with self._errors(docs):
            self._ensure_index()
            if journal is not None:
                self._ensure_journal()
            if transactional:
                with self.db.client.start_session() as session, session.start_transaction():
                    self._write(docs, session)
                    if journal is not None:
                        self._append_journal(journal, session)
            else:
                self._write(docs, None)

    def _write(self, docs: list[Record], session: Any) -> None:
        if not docs:
            return
        collection = self.collection
        if self.on_conflict == "error":
            collection.insert_many(docs, ordered=True, session=session)
            return
        # One upsert per document, in order: later fields win, as SqlStore merges repeats.
        for doc in docs:
            if any(f not in doc for f in self.key_fields):
                collection.insert_one(doc, session=session)  # no key yet: MongoDB assigns _id
                continue
            match = {f: doc[f] for f in self.key_fields}
            fields = {k: v for k, v in doc.items() if k != "_id"}  # _id cannot be $set
            update = {"$set": fields} if self.on_conflict == "update" and fields else {"$setOnInsert": fields or match}
            collection.update_one(match, update, upsert=True, session=session)

    def _ensure_index(self) -> None:
        if self._create_index and not self._index_ready:
            self.collection.create_index(self._sort(), unique=True, name="ferryman_key")
            self._index_ready = True

    # --- journal --------------------------------------------------------------------------

    def _ensure_journal(self) -> None:
        # Collections are created outside transactions (servers before 4.4 cannot in one).
        if not self._journal_ready:
            names = set(self.db.list_collection_names())
            for name in (JOURNAL_COLLECTION, JOURNAL_COUNTER):
                if name not in names:
                    try:
                        self.db.create_collection(name)
                    except Exception:  # created meanwhile by another process
                        if name not in set(self.db.list_collection_names()):
                            raise
            self._journal_ready = True

    def _append_journal(self, entry: JournalEntry, session: Any) -> None:
        pymongo = _pymongo()
        counter = self.db[JOURNAL_COUNTER].find_one_and_update(
            {"_id": "seq"}, {"$inc": {"n": 1}}, upsert=True,
            return_document=pymongo.ReturnDocument.AFTER, session=session,
        )
        self.db[JOURNAL_COLLECTION].insert_one(
            {"_id": int(counter["n"]), "migration": entry.migration, "payload": entry.payload}, session=session
        )

    def read_journal(self, migration: str | None = None) -> list[JournalEntry]:
        query = {} if migration is None else {"migration": migration}
        with self._errors():
            found = self.db[JOURNAL_COLLECTION].find(query).sort([("_id", 1)])
            return [JournalEntry(migration=d["migration"], payload=d["payload"], seq=d["_id"]) for d in found]

    def delete_journal(self, migration: str | None = None, *, up_to_seq: int | None = None,
                       keep_last: bool = False) -> None:
        query: dict[str, Any] = {}
        if migration is not None:
            query["migration"] = migration
        try:
            with self._errors():
                if keep_last:
                    newest = self.db[JOURNAL_COLLECTION].find_one({"migration": migration}, sort=[("_id", -1)])
                    if newest is None:
                        return
                    up_to_seq = newest["_id"] - 1 if up_to_seq is None else min(up_to_seq, newest["_id"] - 1)
                if up_to_seq is not None:
                    query["_id"] = {"$lte": up_to_seq}
                self.db[JOURNAL_COLLECTION].delete_many(query)
        except TransientStoreError as exc:  # best effort, as SqlStore: the entries stay for later
            log.warning("journal cleanup postponed: %s", exc)

    def __repr__(self) -> str:
        return f"MongoStore({self.name!r}, collection={self.collection_name!r}, key={self.key!r})"


def _error_codes(exc: BaseException) -> set[int]:
    codes: set[int] = set()
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        codes.add(code)
    details = getattr(exc, "details", None) or {}
    if isinstance(details, Mapping):
        for error in details.get("writeErrors", ()) or ():
            if isinstance(error.get("code"), int):
                codes.add(error["code"])
    return codes


def _failing_index(exc: BaseException) -> int | None:
    """The position of the document an ordered ``insert_many`` stopped at."""
    details = getattr(exc, "details", None) or {}
    if isinstance(details, Mapping):
        for error in details.get("writeErrors", ()) or ():
            index = error.get("index")
            if isinstance(index, int):
                return index
    return None

