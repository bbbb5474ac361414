"""SqlStore: a table in SQLite, PostgreSQL or MariaDB/MySQL, through SQLAlchemy Core."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import cache, cached_property, partial
from itertools import chain, groupby, islice, repeat
from operator import eq, itemgetter, methodcaller
from typing import Any

from sqlalchemy import (
    URL,
    ColumnElement,
    Connection,
    Engine,
    MetaData,
    Table,
    bindparam,
    func,
    make_url,
    select,
    tuple_,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import BindParameter

from ...errors import FencedOffError, StoreError, StoreUnusableError, TerminalStoreError, TransientStoreError
from ...redact import mask_secrets
from ...types import Filter, Record, RecordId
from ..base import (
    PLAIN_ID_TYPES,
    SAVED,
    JournalEntry,
    PendingWrite,
    ServerConnections,
    Store,
    check_parts,
    keyset_pages,
    match_fields,
)
from ..common import OnConflict, check_fence, check_on_conflict, describe_values
from .batch import FastPathRefused, InsertBatch, WriteInFlight
from .clauses import Bound, bound_clause, bound_param, filter_clause, ids_clause
from .constraints import unique_keys
from .dialects import check_upsert, dialect_for
from .driver import DriverStatement, PageQuery, as_dicts, records_maker, unprocessed
from .driver_errors import classify, driver_error, error_detail, map_errors
from .engines import acquire_engine, prepare_to_write, release_engine
from .identity import sql_dataset
from .journal import (
    StaleFence,
    create_journal,
    delete_entries,
    fence_epoch,
    has_entry,
    journal_tables,
    read_entries,
    table_exists,
)
from .split import split_query

EXPLAIN_DUPLICATES_UP_TO = 10_000
"""Largest batch whose duplicate error names the clashing records: one lookup of the batch's
keys, after which the engine saves the rest at once instead of halving the batch ~log2(n) times."""

log = logging.getLogger("ferryman")

IDS_PER_QUERY = 512
"""``get_many`` asks for at most this many ids per SELECT, far below every driver's parameter limit."""

VALUES_PER_QUERY = 1000
"""``match_pages_in`` asks for at most this many filters' matches per SELECT (a page of source
records is one SELECT at the default batch size); far below every driver's parameter limit."""

FETCH_ROWS = 2000
"""Rows fetched at a time from a streamed match query: what one query holds in memory."""


class SqlStore(Store):
    """One table, read in key order with keyset pagination and written in one transaction per batch.

    Args:
        name: the registry name.
        url_or_engine: a database URL (the engine is built with sensible options and shared with
            every other store on the same URL in this process) or your own ``Engine``.
        table: a table name, reflected on first use (so building a store never connects), or a
            ``sqlalchemy.Table``.
        key: the key column, or a tuple of columns for a composite key; None (the default): the
            table's primary key, single or composite, reflected on first use; without one, its
            ``id`` column; without either, the store is refused with a message asking for
            ``key=``. It must be the table's
            primary key or a unique key for ``on_conflict`` other than ``"error"``.
        on_conflict: ``"error"`` raises DuplicateDataError; ``"update"`` upserts the given
            columns (``INSERT ... ON CONFLICT (key) DO UPDATE`` / ``ON DUPLICATE KEY UPDATE``);
            ``"ignore"`` keeps the stored row. On MySQL both apply to a clash on any unique key.
        schema: the schema (PostgreSQL) or database (MySQL) of a table given by name.
        create_engine_kwargs: extra ``create_engine`` options, for a URL only.
        dataset: where the data lives, when the URL cannot tell (two stores with the same
            dataset are the same data when migrations are ordered); default: the database and
            table the URL and table name point at.

    A native filter is a SQLAlchemy clause, e.g. ``store.table.c.n > 3``.

    What differs per database is the store's :attr:`impl`, one :class:`~.dialect.SqlDialect`
    class per database (``docs/stores.md`` has the details): PostgreSQL saves plain batches with
    ``COPY`` (``postgres.py``), MariaDB/MySQL with multi-row INSERTs (``mysql.py``). A reflected
    table's types are made faithful (``types.py``): JSON columns give dicts and lists on every
    database, MySQL's BOOL gives bool, aware datetimes keep their instant.

    A lost connection while committing leaves the outcome unknown; a batch saved with a journal
    entry then asks the database whether that entry (and so the batch) was committed, and
    reports success if it was. When the database cannot be asked yet, the next ``save_all`` of
    the same journal entry asks first, so the engine's retry of that batch does not save it twice.

    Engines made from URLs are released by :meth:`close`; the last store on an engine disposes of
    it. Closing is optional: an unclosed store keeps its pooled connections until the process ends.
    """

    supports_journal = True

    def __init__(
        self,
        name: str,
        url_or_engine: str | URL | Engine,
        table: str | Table,
        key: str | Sequence[str] | None = None,
        *,
        on_conflict: OnConflict = "error",
        schema: str | None = None,
        create_engine_kwargs: Mapping[str, Any] | None = None,
        dataset: str | None = None,
    ) -> None:
        super().__init__(name, key)
        self.key_given = key is not None
        self.on_conflict = check_on_conflict(on_conflict)
        self._lock = threading.RLock()
        self._owns_engine = not isinstance(url_or_engine, Engine)
        if isinstance(url_or_engine, Engine):
            if create_engine_kwargs:
                raise ValueError(f"store {name!r}: create_engine_kwargs only applies to a URL, not to an Engine")
            self.url, self.dialect = url_or_engine.url, url_or_engine.dialect.name
        else:
            self.url = make_url(url_or_engine)
            self.dialect = self.url.get_backend_name()
        self.impl = dialect_for(self.dialect)
        """What this store's database does its own way."""
        self.shared = self.dialect != "sqlite" or self.url.database not in (None, "", ":memory:")
        self.concurrent_writes = self.dialect != "sqlite"
        check_upsert(self.impl, self.on_conflict)
        self._engine_options = dict(create_engine_kwargs or {})
        self._table: Table | None = table if isinstance(table, Table) else None
        self._table_arg = table if isinstance(table, str) else table.name
        self._schema = table.schema if isinstance(table, Table) else schema
        self.table_name = f"{self._schema}.{self._table_arg}" if self._schema else self._table_arg
        self._label = f"store {name!r} ({self.shown_url}, table {self.table_name})"
        self._dataset = dataset or sql_dataset(self.url, self._schema, self._table_arg)
        self._journal = journal_tables(self._schema)
        self._journal_ready = False
        self._in_doubt: set[tuple[str, str]] = set()  # journal entries whose commit was cut off
        self._pages: dict[tuple[bool, bool], PageQuery] = {}  # unfiltered page SELECTs, by their bounds
        self._lookups: dict[tuple[tuple[str, ...], int], PageQuery] = {}  # by columns and number of ids
        self._key_range: PageQuery | None = None
        if self._table is not None and self.key_given:
            self._check_key(self._table)
        # Building the engine now reports a missing driver or a bad option at once; it does not connect.
        self._engine: Engine | None = (
            url_or_engine if isinstance(url_or_engine, Engine) else acquire_engine(self.url, self._engine_options)
        )

    @property
    def dataset(self) -> str:
        """The database and table this store reads and writes (see :func:`sql_dataset`)."""
        return self._dataset

    # --- engine and table -----------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine (acquired again after :meth:`close`)."""
        with self._lock:
            if self._engine is None:
                self._engine = acquire_engine(self.url, self._engine_options)
            return self._engine

    @property
    def table(self) -> Table:
        """The table, reflected from the database on first use."""
        if self._table is None:
            with self._lock:
                if self._table is None:
                    self.impl.check_url(self.url, self._label)
                    with self._errors(), self.engine.connect() as conn:
                        table = Table(self._table_arg, MetaData(), schema=self._schema, autoload_with=conn)
                        self.impl.adapt_table(table, conn)
                    if self.key_given:
                        self._check_key(table)
                    self._table = table
        return self._table

    @cached_property
    def key_fields(self) -> tuple[str, ...]:  # type: ignore[override]  # given: an attribute
        """The key given, else the table's primary key (reflecting the table on first use), else
        its ``id`` column (the key SqlStore took before it reflected keys: a view, a table
        without primary key)."""
        table = self.table
        fields = tuple(column.name for column in table.primary_key.columns)
        if not fields and "id" in table.c:
            self.key_note = "no primary key: its id column"
            return ("id",)
        if not fields:
            raise StoreUnusableError(
                f"{self._label}: the table has no primary key (nor an id column), so ferryman cannot tell "
                "which column identifies a record; name it (or a tuple of them) with key=..."
            )
        return fields

    @cached_property
    def key(self) -> str | tuple[str, ...]:  # type: ignore[override]  # given: an attribute
        fields = self.key_fields
        return fields if len(fields) > 1 else fields[0]

    def close(self) -> None:
        with self._lock:
            if self._owns_engine and self._engine is not None:
                release_engine(self._engine)
                self._engine = None

    def _check_key(self, table: Table) -> None:
        missing = [f for f in self.key_fields if f not in table.c]
        if missing:
            raise StoreUnusableError(
                f"{self._label}: key column {', '.join(map(repr, missing))} is not in the table; "
                f"it has {', '.join(table.c.keys())}"
            )

    def _errors(self) -> AbstractContextManager[None]:
        return map_errors(self._label, self.impl)

    def _key_columns(self) -> list[ColumnElement[Any]]:
        return [self.table.c[f] for f in self.key_fields]

    def _key_values(self, record_id: RecordId | list[Any]) -> tuple[Any, ...]:
        values = tuple(record_id) if isinstance(record_id, (tuple, list)) else (record_id,)
        if len(values) != len(self.key_fields):
            raise ValueError(f"{self._label}: id {record_id!r} does not fit key {self.key!r}")
        return values

    # --- reading --------------------------------------------------------------------------

    def read_page(self, filter: Filter | ClauseElement | None, after: RecordId | None, limit: int) -> list[Record]:
        self._check_limit(limit)
        return self._read_page(filter, after, limit, None)

    def _check_limit(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"{self._label}: limit must be at least 1, not {limit}")

    def _read_page(self, filter: Filter | ClauseElement | None, after: RecordId | None, limit: int,
                   names: Sequence[str] | None, upto: RecordId | None = None) -> list[Record]:
        values = self._page_values(after, limit, upto)
        query = self._page_query(filter, after is not None, names, upto is not None)
        # One LIMITed query: the drivers' default (client-side) cursors hold at most ``limit``
        # rows, so memory stays bounded however large the table is.
        with self._errors(), self.engine.connect() as conn:
            return query.read(conn, values)

    def read_pages(self, filter: Filter | ClauseElement | None, after: RecordId | None, limit: int,
                   upto: RecordId | None = None) -> Generator[list[Record], None, None]:
        """Pages in key order, ``upto`` bounding the query (``key <= upto``) like ``after``;
        where the dialect can (PostgreSQL on psycopg) an unfiltered scan sends each page's query
        as soon as the page before it is read, so the server runs it while the caller works on
        that page."""
        pages = self._keyset_pages(filter, after, limit, upto)
        if filter is not None or not self.impl.pipelines(self.engine):
            yield from pages
            return
        for page in pages:  # the first pages go through SQLAlchemy, which shows the driver's SQL
            yield page
            query = self._pages.get((True, upto is not None))
            if len(page) == limit and query is not None and query.driver is not None:
                pages.close()
                yield from self._pipelined_pages(query.driver, self.id_of(page[-1]), limit, upto)
                return

    def _keyset_pages(self, filter: Filter | ClauseElement | None, after: RecordId | None, limit: int,
                      upto: RecordId | None) -> Generator[list[Record], None, None]:
        """Page after page, each a query of its own."""
        self._check_limit(limit)
        return keyset_pages(lambda last: self._read_page(filter, last, limit, None, upto), self.id_of, after, limit)

    def _pipelined_pages(self, driver: tuple[DriverStatement, list[str]], after: RecordId, limit: int,
                         upto: RecordId | None) -> Generator[list[Record], None, None]:
        statement, keys = driver
        with self._errors(), self.engine.connect() as conn:
            pages = self.impl.pipelined_pages(conn, statement, keys,
                                              lambda last: statement.params(self._page_values(last, limit, upto)),
                                              self.id_of, after, limit)
            if pages is not None:
                yield from pages
                return
        yield from self._keyset_pages(None, after, limit, upto)  # page by page, that connection back in the pool

    def _page_values(self, after: RecordId | None, limit: int, upto: RecordId | None = None) -> dict[str, Any]:
        """The bound values of a page SELECT."""
        values: dict[str, Any] = {"limit": limit}
        self._bind(values, "after", after)
        self._bind(values, "upto", upto)
        return values

    def _bind(self, values: dict[str, Any], bound: Bound, record_id: RecordId | None) -> None:
        """Add the values of ``bound`` (:func:`~.clauses.bound_clause`) for ``record_id``, if any."""
        if record_id is not None:
            values.update((bound_param(bound, i), v) for i, v in enumerate(self._key_values(record_id)))

    def _page_query(self, filter: Filter | ClauseElement | None, after: bool,
                    names: Sequence[str] | None = None, upto: bool = False) -> PageQuery:
        """The page SELECT (of the columns ``names``, or all), bounded below (``after``) and
        above (``upto``) or not; without a filter (a migration's scan) built once per store and
        shape."""
        cached = filter is None and names is None
        shape = (after, upto)
        if cached and shape in self._pages:
            return self._pages[shape]
        columns = self._key_columns()
        statement = select(*self._columns(names)).where(filter_clause(self.table, filter, self._label))
        bounds: tuple[tuple[Bound, bool], ...] = (("after", after), ("upto", upto))
        for bound, wanted in bounds:
            if wanted:
                statement = statement.where(bound_clause(columns, self.impl, bound))
        query = PageQuery(statement.order_by(*columns).limit(bindparam("limit")), self.impl)
        if cached:
            self._pages[shape] = query
        return query

    def server_connections(self) -> ServerConnections | None:
        """Asked of the server in one connection of this store's pool (None for SQLite)."""
        with self._errors(), self.engine.connect() as conn:
            counts = self.impl.connection_counts(conn)
        if counts is None:
            return None
        url = self.url
        server = f"{url.get_backend_name()}://{url.host or 'localhost'}" + (f":{url.port}" if url.port else "")
        return ServerConnections(server, *counts)

    def split(self, parts: int) -> list[RecordId]:
        """Boundaries in the database's key order (its collation's for text), found by one
        query that reads the key's index once (:func:`~.split.split_query`)."""
        check_parts(parts)
        if parts == 1:
            return []
        with self._errors(), self.engine.connect() as conn:
            return [self.id_of(row) for row in as_dicts(conn.execute(split_query(self._key_columns(), parts)))]

    def _columns(self, names: Sequence[str] | None) -> list[ColumnElement[Any]]:
        """The table's columns called ``names`` (all of them for None)."""
        table = self.table
        if names is None:
            return list(table.c)
        unknown = [n for n in names if n not in table.c]
        if unknown:  # no record could be matched: the migration stops with this one error
            raise StoreUnusableError(f"{self._label}: Match columns name unknown column {unknown[0]!r}; "
                                     f"the table has {', '.join(table.c.keys())}")
        return [table.c[n] for n in names]

    # --- matching -------------------------------------------------------------------------

    def match_pages(self, filter: Filter | ClauseElement | None, batch_size: int,
                    columns: Sequence[str] | None = None) -> Iterator[list[Record]]:
        """Keyset pages as :meth:`read_pages` reads them; with ``columns``, of those columns only."""
        if columns is None:
            return super().match_pages(filter, batch_size)  # type: ignore[arg-type]  # clauses too
        names = match_fields(self.key_fields, columns)
        return keyset_pages(lambda last: self._read_page(filter, last, batch_size, names), self.id_of,
                            None, batch_size)

    def match_pages_in(self, fields: Sequence[str], values: Sequence[tuple[Any, ...]], batch_size: int,
                       columns: Sequence[str] | None = None) -> Iterator[tuple[int, list[Record]]]:
        """One SELECT per :data:`VALUES_PER_QUERY` filters, ``(a, b) IN ((..), ..)`` (``a IN
        (..)`` for one field) ordered by the filter fields, then the key, and streamed (a
        server-side cursor on PostgreSQL and MariaDB, SQLite's own stepping, :data:`FETCH_ROWS`
        at a time); each run of equal values is cut into pages for its filter.

        Only where every value compares in the database as in Python (:meth:`can_match_in`):
        a row is handed to the filter whose values equal its own, so a comparison that differs
        (a case-insensitive collation) would hand it to none. Elsewhere one query per filter."""
        if not all(self.can_match_in(f, [row[j] for row in values]) for j, f in enumerate(fields)):
            return super().match_pages_in(fields, values, batch_size, columns)
        return self._streamed_matches(tuple(fields), values, batch_size, columns)

    def _streamed_matches(self, fields: tuple[str, ...], values: Sequence[tuple[Any, ...]], batch_size: int,
                          columns: Sequence[str] | None) -> Iterator[tuple[int, list[Record]]]:
        names = None if columns is None else match_fields(self.key_fields, columns)
        table = self.table
        matched = [table.c[f] for f in fields]
        single = len(fields) == 1
        target = matched[0] if single else tuple_(*matched)
        read = None if names is None else [*names, *(f for f in fields if f not in names)]
        selected = select(*self._columns(read)).order_by(*matched, *self._key_columns())
        for start in range(0, len(values), VALUES_PER_QUERY):
            chunk = [tuple(row) for row in values[start:start + VALUES_PER_QUERY]]
            wanted = [row[0] for row in chunk] if single else chunk
            position = {value: start + k for k, value in enumerate(wanted)}
            with self._errors(), self.engine.connect() as conn:
                keys, rows = self._streamed_rows(conn, selected.where(target.in_(wanted)))
                records = _records_maker(keys, keys if names is None else names)
                for value, run in groupby(rows, itemgetter(*(keys.index(f) for f in fields))):
                    i = position[value]  # can_match_in: the database's equality is Python's
                    while page := records(islice(run, batch_size)):
                        yield i, page

    def _streamed_rows(self, conn: Connection, statement: Any) -> tuple[list[str], Iterator[Sequence[Any]]]:
        """The column names of ``statement`` and its rows, fetched :data:`FETCH_ROWS` at a time."""
        result = conn.execution_options(**self.impl.stream_options(FETCH_ROWS)).execute(statement)
        keys = list(result.keys())
        if unprocessed(result):  # plain columns: the driver's tuples, without SQLAlchemy's Rows
            return keys, chain.from_iterable(_driver_chunks(conn, result))
        return keys, chain.from_iterable(result.partitions(FETCH_ROWS))

    def get_many(self, ids: Sequence[RecordId]) -> list[Record]:
        return sorted(self._rows_of(ids, list(self.table.c)), key=self.id_of)

    def _rows_of(self, ids: Sequence[RecordId], selected: list[ColumnElement[Any]]) -> list[Record]:
        """The ``selected`` columns of the stored rows with these ids, in no order."""
        columns = self._key_columns()
        single = len(columns) == 1
        if single and set(map(type, ids)) <= PLAIN_ID_TYPES:  # ids as they are: no tuple made for each
            wanted: list[Any] = list(dict.fromkeys(ids))
        else:
            wanted = list(dict.fromkeys(self._key_values(i) for i in ids))
            if single:
                wanted = [key for (key,) in wanted]
        records: list[Record] = []
        with self._errors(), self.engine.connect() as conn:
            for start in range(0, len(wanted), IDS_PER_QUERY):
                chunk = wanted[start : start + IDS_PER_QUERY]
                if single:
                    records.extend(self._lookup_rows(conn, selected, chunk))
                else:
                    records.extend(as_dicts(conn.execute(select(*selected).where(ids_clause(columns, chunk)))))
        return records

    def _lookup_rows(self, conn: Connection, selected: list[ColumnElement[Any]], keys: list[Any]) -> list[Record]:
        """The rows whose one-column key is in ``keys``, by a SELECT made once per store, columns
        and power of two of ids (the last id repeated up to it): where its values and columns
        need no SQLAlchemy processing the driver runs it, so a lookup costs no compilation of an
        ``IN`` list (a duplicate's explanation, the retry pass's records)."""
        size = 1 << (len(keys) - 1).bit_length()
        shape = (tuple(c.name for c in selected), size)
        query = self._lookups.get(shape)
        if query is None:
            wanted: list[BindParameter[Any]] = [bindparam(name) for name in _lookup_names(size)]
            query = self._lookups[shape] = PageQuery(select(*selected).where(self._key_columns()[0].in_(wanted)),
                                                     self.impl)
        return query.read(conn, dict(zip(_lookup_names(size), chain(keys, repeat(keys[-1])))))

    def can_match_in(self, field: str, values: Sequence[Any]) -> bool:
        """Integer columns always compare like Python; text columns where the dialect says so
        (``SqlDialect.compares_like_python``: SQLite's and PostgreSQL's default collations, not
        MySQL's, which ignore case)."""
        column = self.table.c.get(field)
        if column is None:
            return False
        sql_type = getattr(column.type, "impl_instance", column.type)  # through our TypeDecorators
        try:
            kind = sql_type.python_type
        except NotImplementedError:
            return False
        if kind is str:
            if not self.impl.compares_like_python(sql_type):
                return False
        elif kind is not int:
            return False
        return list(map(type, values)).count(kind) == len(values)  # all exactly of that type, at C speed

    def count(self, filter: Filter | ClauseElement | None = None) -> int:
        query = select(func.count()).select_from(self.table).where(filter_clause(self.table, filter, self._label))
        with self._errors(), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # --- writing --------------------------------------------------------------------------

    def save_all(self, records: list[Record], *, journal: JournalEntry | None = None) -> None:
        """Insert the records (and the journal entry) in one transaction."""
        self.begin_save_all(records, journal=journal).wait()

    def begin_save_all(self, records: list[Record], *, journal: JournalEntry | None = None) -> PendingWrite:
        """:meth:`save_all`, except that where the dialect has a bulk path (PostgreSQL's COPY) a
        plain batch is sent and committed by the server while the caller goes on."""
        if not records and journal is None:
            return SAVED
        rows, groups = self._rows_to_insert(records)
        if journal is not None:
            self._ensure_journal()
            if self._committed_before(journal):
                return SAVED
        return self._begin(rows, groups, journal, fast=True)

    def _begin(self, rows: list[Record], groups: list[list[Record]], journal: JournalEntry | None,
               fast: bool) -> PendingWrite:
        with self._batch_errors(rows, journal):
            while True:
                try:
                    flight = self._start_copy(groups, journal) if fast else None
                    if flight is not None:
                        return _CopyWrite(self, rows, groups, journal, flight)
                    self._write(groups, journal, fast)
                    return SAVED
                except FastPathRefused as refused:
                    # Nothing was committed; send the batch again, more plainly.
                    fast = refused.retry_fast
                    self._log_refusal(refused)

    @contextmanager
    def _batch_errors(self, rows: list[Record], journal: JournalEntry | None) -> Iterator[None]:
        """Errors of saving ``rows`` mapped: a duplicate names its records (in batches small enough
        to look them up), a lost connection asks whether the database still answers, a batch
        refused by its fence (checked by the database or by the dialect) is a FencedOffError."""
        explain = (lambda: self._explain_duplicate(rows)) if len(rows) <= EXPLAIN_DUPLICATES_UP_TO else None
        fenced = None
        if journal is not None and journal.fence is not None:
            fenced = partial(self._fenced_off, journal.migration, journal.fence)
        try:
            with map_errors(self._label, self.impl, explain, on_lost=lambda: self._still_answers(rows),
                            constraint_columns=self._constraint_columns, fenced=fenced):
                yield
        except StaleFence as stale:
            raise FencedOffError(self._label, stale.migration, stale.epoch, stale.fence) from None

    def _fenced_off(self, migration: str, epoch: int, fence: int | None = None) -> FencedOffError:
        """The error of a batch of ``epoch`` refused by ``migration``'s fence; the fence's epoch
        read now unless known (None if it cannot be read: the message then says less)."""
        if fence is None:
            try:
                with self.engine.connect() as conn:
                    fence = fence_epoch(conn, self._journal.fences, migration)
            except sa_exc.SQLAlchemyError:
                pass
        return FencedOffError(self._label, migration, epoch, fence)

    def _constraint_columns(self, name: str) -> tuple[str, ...]:
        """The columns of the table's constraint or index ``name`` (MySQL's ``PRIMARY``: the
        primary key); () when the table knows none by that name."""
        table = self._table
        if table is None:
            return ()
        if name == "PRIMARY" or name == table.primary_key.name:
            return tuple(c.name for c in table.primary_key.columns)
        for item in (*table.indexes, *table.constraints):
            if getattr(item, "name", None) == name:
                return tuple(c.name for c in getattr(item, "columns", ()))
        return ()

    def unique_keys(self) -> list[tuple[str | None, tuple[str, ...]]]:
        """The table's unique constraints and unique indexes, as reflected, but its key."""
        return unique_keys(self.table, self.key_fields)

    def _still_answers(self, rows: list[Record]) -> str | None:
        """After saving ``rows`` lost its connection: None when the database does not answer on a
        new connection either (an outage); else what may have made it drop the connection, or
        "" (see ``driver_errors``)."""
        try:
            with self.engine.connect() as conn:
                return self.impl.why_dropped(conn, rows)
        except Exception:  # noqa: BLE001 - any failure to answer is an answer
            return None

    def _start_copy(self, groups: list[list[Record]], journal: JournalEntry | None) -> WriteInFlight | None:
        """The batch sent by the dialect's bulk path, or None if it has none for these rows."""
        return self.impl.start_copy(self.engine, self.table, groups, self.on_conflict, self._journal, journal)

    def _log_refusal(self, refused: FastPathRefused) -> None:
        log.debug("%s: %s; saving the batch again%s", self._label, refused,
                  " with text COPY" if refused.retry_fast else " with INSERT")

    def _write(self, groups: list[list[Record]], journal: JournalEntry | None, fast: bool) -> None:
        committing = False
        try:
            with self.engine.connect() as conn:
                prepare_to_write(conn)
                with conn.begin() as transaction:
                    for rows in groups:
                        self.impl.insert(conn, InsertBatch(self.table, rows, self.key_fields, self.on_conflict, fast))
                    if journal is not None:
                        committing = True  # from here a lost connection leaves the outcome in doubt
                        self.impl.append_journal(conn, self._journal, journal, commit=True)
                    transaction.commit()  # nothing left to do if the entry's INSERT committed it
        except sa_exc.DBAPIError as error:
            if not (committing and self._landed(error, journal)):
                raise

    def _landed(self, error: sa_exc.DBAPIError, journal: JournalEntry | None) -> bool:
        """After an error that may have cut the batch's commit off: was it committed after all?

        Asks the journal (:meth:`_entry_landed`: never when the fence is now above the batch's).
        When the database cannot be asked, the outcome is in doubt: raises a plain
        TransientStoreError (never split: the engine retries the same batch, whose
        :meth:`_committed_before` asks again), and never a ConnectionDroppedError.
        """
        if journal is None or classify(error, self.impl) != "lost":
            return False
        try:
            with self.engine.connect() as conn:
                landed = self._entry_landed(conn, journal)
        except sa_exc.SQLAlchemyError:
            self._in_doubt.add((journal.migration, journal.payload))
            log.warning("%s: lost the connection while committing; the outcome is checked on the "
                        "next attempt", self._label)
            raise TransientStoreError(
                f"{self._label}: lost the connection while committing, the outcome is checked before "
                f"the batch is saved again: {error_detail(error)}"
            ) from (error.orig or error)
        if landed:
            log.warning("%s: lost the connection while committing, but the batch was committed",
                        self._label)
        return landed

    def _committed_before(self, journal: JournalEntry) -> bool:
        """True if an earlier attempt with this very entry was committed after all."""
        key = (journal.migration, journal.payload)
        if key not in self._in_doubt:
            return False
        with self._errors(), self.engine.connect() as conn:
            landed = self._entry_landed(conn, journal)
        self._in_doubt.discard(key)
        return landed

    def _entry_landed(self, conn: Connection, journal: JournalEntry) -> bool:
        """True when ``journal`` is in the journal. Raises FencedOffError when its fence was
        raised above it meanwhile: the run lost its lease, and an entry with the same payload
        may be the new holder's, so it is never taken for this batch's."""
        if journal.fence is not None:
            check_fence(self._label, journal, fence_epoch(conn, self._journal.fences, journal.migration))
        return has_entry(conn, self._journal.entries, journal)

    def _rows_to_insert(self, records: Sequence[Record]) -> tuple[list[Record], list[list[Record]]]:
        """The rows to save, and the same rows grouped by their set of fields (one statement per
        group: a record may leave out columns that have defaults).

        A field the table lacks makes the store unusable for the migration, not the record
        failed: a transform gives its records the same fields, so every record would fail alike
        (the table misses a column, or the transform names one wrongly). A value the database
        would silently change (SQLite stores NaN as NULL) fails its batch, so that the engine
        finds the record and fails it alone."""
        # The records are only read from here on (upserts merge into new dicts): no copies needed.
        rows = list(records)
        groups = _by_fields(rows)
        columns = self._column_names()
        for group in groups:  # in order of first appearance, so the first bad record is named
            if not columns.issuperset(group[0].keys()):
                record = group[0]
                unknown = [f for f in record if f not in columns]
                raise StoreUnusableError(
                    f"{self._label}: {self.describe(record)} has fields the table lacks: {', '.join(unknown)}"
                )
        unkept = self.impl.unkept_value(rows)
        if unkept is not None:
            record, field, why = unkept
            raise TerminalStoreError(
                f"{self._label}: {self.describe(record)}: field {field!r} is {record[field]!r}, which the "
                f"database would not keep: {why}"
            )
        if self.on_conflict == "update":
            rows = _merged_per_key(rows, self.key_fields)
            groups = _by_fields(rows)
        return rows, groups

    def _column_names(self) -> frozenset[str]:
        table = self.table
        names = table.info.get("ferryman_columns")
        if names is None:
            names = table.info["ferryman_columns"] = frozenset(table.c.keys())
        return names

    def key_clashes(self, records: list[Record]) -> list[Record] | None:
        """One lookup of the batch's keys (the one that explains a duplicate); None when
        upserting (a clash on the key is no error) or for a batch too large to look up."""
        if self.on_conflict != "error" or len(records) > EXPLAIN_DUPLICATES_UP_TO:
            return None
        return self._explain_duplicate(records)[1]

    def _explain_duplicate(self, rows: list[Record]) -> tuple[str, list[Record]]:
        """Which records clash on the key: repeated in the batch, or already stored.

        Databases do not all say which row failed (SQLite names only the column), so ask.
        Empty when the clash is on another unique column, or when upserting.
        """
        if self.on_conflict != "error":
            return "", []
        try:
            ids: list[RecordId | None] = list(self.ids_of(rows))
        except (KeyError, ValueError):  # a row without its key (the database assigns it)
            ids = [_id_or_none(self, row) for row in rows]
        given = [i for i in ids if i is not None]
        distinct = list(dict.fromkeys(given))
        try:
            clash = self._stored_ids(distinct)
        except StoreError:
            clash = set()
        if len(distinct) < len(given):
            clash |= {i for i, n in Counter(given).items() if n > 1}
        if not clash:
            return "", []
        clashing = [(i, row) for i, row in zip(ids, rows) if i in clash]
        first_id = clashing[0][0]
        return describe_values(self.key_fields, self._key_values(first_id)), [row for _, row in clashing]

    def _stored_ids(self, ids: list[RecordId]) -> set[RecordId]:
        """Which of these distinct ids the table holds (as the table gives them), from its key
        columns only.

        Integers of an integer key are looked up as the range from the least to the greatest:
        one index seek where the table holds few rows in that range (a batch of a copy into a
        table it fills), where an ``IN`` list seeks every id. A range holding more than twice as
        many rows as there are ids is looked up id by id after all."""
        key = self.key_fields[0]
        if len(self.key_fields) == 1 and ids and type(ids[0]) is int and self.can_match_in(key, ids):
            limit = 2 * len(ids)
            with self._errors(), self.engine.connect() as conn:
                rows = self._key_range_query().read(conn, {"low": min(ids), "high": max(ids), "limit": limit})
            if len(rows) < limit:
                wanted = set(ids)
                return {i for i in map(self.id_of, rows) if i in wanted}
        return set(map(self.id_of, self._rows_of(ids, self._key_columns())))

    def _key_range_query(self) -> PageQuery:
        """The stored keys from ``low`` to ``high`` (a one-column key), at most ``limit`` of them."""
        if self._key_range is None:
            (column,) = self._key_columns()
            statement = select(column).where(column >= bindparam("low"), column <= bindparam("high"))
            self._key_range = PageQuery(statement.limit(bindparam("limit")), self.impl)
        return self._key_range

    # --- journal --------------------------------------------------------------------------

    def _ensure_journal(self) -> None:
        if not self._journal_ready:
            with self._errors():
                create_journal(self.engine, self._journal)
            self._journal_ready = True

    def _journal_missing(self) -> bool:
        return not self._journal_ready and not table_exists(self.engine, self._journal.entries)

    def read_journal(self, migration: str | None = None) -> list[JournalEntry]:
        with self._errors():
            if self._journal_missing():
                return []
            with self.engine.connect() as conn:
                return read_entries(conn, self._journal.entries, migration)

    def raise_fence(self, migration: str, epoch: int) -> None:
        """One transaction that raises the migration's row in ``ferryman_fence`` to ``epoch``;
        it waits for the batches that share-locked the row (``journal.py``)."""
        self._ensure_journal()
        with self._errors(), self.engine.connect() as conn:
            prepare_to_write(conn)
            with conn.begin():
                self.impl.raise_fence(conn, self._journal.fences, migration, epoch)

    def delete_journal(self, migration: str | None = None, *, up_to_seq: int | None = None,
                       keep_last: bool = False) -> None:
        """Forget entries the ledger holds; best effort while the database is unreachable.

        A transient failure is logged, not raised: the entries stay until the next cleanup, and
        folding them into the ledger again changes nothing. A migration is not failed for it.
        """
        try:
            with self._errors():
                if self._journal_missing():
                    return
                with self.engine.begin() as conn:
                    delete_entries(conn, self._journal.entries, migration, up_to_seq, keep_last)
        except TransientStoreError as exc:
            log.warning("journal cleanup postponed: %s", exc)

    @property
    def shown_url(self) -> str:
        """The URL with its passwords masked, in every form (``user:***@``, ``?password=***``)."""
        return mask_secrets(self.url.render_as_string(hide_password=False))

    def __repr__(self) -> str:
        known = vars(self)  # never reflects the key: a repr must not connect
        key = repr(known["key"]) if "key" in known else "<primary key>"
        return f"SqlStore({self.name!r}, {self.shown_url!r}, table={self.table_name!r}, key={key})"


class _CopyWrite(PendingWrite):
    """A batch sent by a bulk path (COPY): waiting reads its outcome, and sends it again (text
    COPY, then INSERT) if the bulk path refused a value."""

    def __init__(self, store: SqlStore, rows: list[Record], groups: list[list[Record]],
                 journal: JournalEntry | None, flight: WriteInFlight) -> None:
        self._store, self._rows, self._groups, self._journal, self._flight = store, rows, groups, journal, flight

    def wait(self) -> None:
        store = self._store
        with store._batch_errors(self._rows, self._journal):
            try:
                self._flight.finish()
                return
            except FastPathRefused as refused:
                store._log_refusal(refused)
                fast = refused.retry_fast
            except sa_exc.DBAPIError as error:
                if store._landed(error, self._journal):
                    return
                raise
        store._begin(self._rows, self._groups, self._journal, fast).wait()


def _records_maker(keys: list[str], kept: Sequence[str]) -> Callable[[Iterable[Sequence[Any]]], list[Record]]:
    """Turns rows of the columns ``keys`` into records of the fields ``kept``."""
    return records_maker(tuple(kept), tuple(keys.index(n) for n in kept))


def _driver_chunks(conn: Connection, result: Any) -> Iterator[list[Any]]:
    """The driver cursor's rows, :data:`FETCH_ROWS` at a time; its errors as SQLAlchemy raises them."""
    cursor = result.cursor
    try:
        while rows := cursor.fetchmany(FETCH_ROWS):
            yield rows
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, exc, str(result.context.statement)) from exc
    finally:
        result.close()


@cache
def _lookup_names(size: int) -> tuple[str, ...]:
    """The names of the ids bound in a lookup of ``size`` ids (:meth:`SqlStore._lookup_rows`)."""
    return tuple(f"id_{i}" for i in range(size))


def _id_or_none(store: Store, record: Record) -> RecordId | None:
    try:
        return store.id_of(record)
    except (KeyError, ValueError):
        return None  # no key yet: the database assigns it


_KEYS = methodcaller("keys")


def _by_fields(rows: list[Record]) -> list[list[Record]]:
    """The rows grouped by their set of fields, the groups in order of first appearance.

    One transform usually makes every row of a batch, so all have the first row's fields, even
    in the same order: that is checked in one pass at C speed, with no Python code run per row.
    """
    if not rows:
        return []
    first = list(rows[0])
    if all(map(eq, repeat(first), map(list, rows))) or all(map(eq, repeat(rows[0].keys()), map(_KEYS, rows))):
        return [rows]
    groups: dict[frozenset[str], list[Record]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(row)
    return list(groups.values())


def _merged_per_key(rows: list[Record], key: tuple[str, ...]) -> list[Record]:
    """One row per key, later fields winning, as MemoryStore merges an upsert batch.

    PostgreSQL refuses to update one row twice in a statement, so repeats are merged first.
    """
    merged: dict[tuple[Any, ...], Record] = {}
    keyless: list[Record] = []
    for row in rows:
        values = tuple(row.get(f) for f in key)
        if None in values:
            keyless.append(row)
        else:
            merged[values] = {**merged.get(values, {}), **row}
    return keyless + list(merged.values())
