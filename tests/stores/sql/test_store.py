"""SqlStore: the store contract on SQLite, PostgreSQL and MariaDB, plus SQL-only behaviour."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import psycopg
import pymysql  # type: ignore[import-untyped]
import pytest
from sqlalchemy import Column, Engine, ForeignKey, Integer, MetaData, Table, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool

from ferryman.errors import (
    DuplicateDataError,
    StoreError,
    StoreUnusableError,
    TerminalStoreError,
    TransientStoreError,
)
from ferryman.stores import JournalEntry, SqlStore
from ferryman.stores.common import OnConflict
from ferryman.stores.sql import postgres as postgres_module
from ferryman.stores.sql.dialects import dialect_for
from ferryman.stores.sql.driver_errors import classify
from ferryman.testing import COMPOSITE_KEY, INT_KEY, Layout, StoreContract, StoreFactory, create_test_table
from ferryman.testing.store_suite import shuffled
from ferryman.types import Record

DATABASES = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}


@pytest.fixture
def sql_factory() -> Iterator[Callable[[str], StoreFactory]]:
    """Builds a ``make_store`` for a database URL and closes its stores afterwards.

    Every test gets a fresh database (``tests/conftest.py``), so nothing needs dropping.
    """
    stores: list[SqlStore] = []
    ddl_engines: list[Engine] = []

    def for_url(url: str) -> StoreFactory:
        ddl = create_engine(url, poolclass=NullPool)
        ddl_engines.append(ddl)

        def make(
            layout: Layout = INT_KEY,
            rows: Iterable[Record] = (),
            *,
            name: str = "items",
            on_conflict: OnConflict = "error",
        ) -> SqlStore:
            table = create_test_table(ddl, f"{name}_{len(stores)}", layout)
            store = SqlStore(name, url, table.name, key=layout.key, on_conflict=on_conflict)
            stores.append(store)
            rows = list(rows)
            if rows:
                store.save_all(rows)
            return store

        return make

    yield for_url
    for store in stores:
        store.close()
    for ddl in ddl_engines:
        ddl.dispose()


class SqlContract(StoreContract):
    """The contract for SqlStore; subclasses name the database fixture."""

    database: str

    @pytest.fixture
    def make_store(self, request: pytest.FixtureRequest) -> StoreFactory:
        url: str = request.getfixturevalue(DATABASES[self.database])  # first, so it is dropped last
        factory: Callable[[str], StoreFactory] = request.getfixturevalue("sql_factory")
        return factory(url)


class TestSqliteStore(SqlContract):
    database = "sqlite"


@pytest.mark.postgres
class TestPostgresStore(SqlContract):
    database = "postgresql"


@pytest.mark.mysql
class TestMariaDbStore(SqlContract):
    database = "mariadb"
    not_applicable: ClassVar[dict[str, str]] = {
        "test_upsert_still_rejects_a_clash_on_another_unique_field":
            "ON DUPLICATE KEY UPDATE fires on a clash with any unique key (docs/stores.md)",
    }


# --- SQL-only behaviour, on every database ------------------------------------------------


@pytest.fixture(params=list(DATABASES))
def db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(DATABASES[request.param])
    return url


@pytest.fixture
def make_store(db_url: str, sql_factory: Callable[[str], StoreFactory]) -> StoreFactory:
    return sql_factory(db_url)


def test_duplicate_cause_is_the_drivers_integrity_error(make_store: StoreFactory) -> None:
    store = make_store(INT_KEY, INT_KEY.rows(range(3)))
    assert isinstance(store, SqlStore)
    with pytest.raises(DuplicateDataError) as caught:
        store.save_all([INT_KEY.row(1)])
    assert isinstance(caught.value.__cause__, store.engine.dialect.loaded_dbapi.IntegrityError)
    assert str(caught.value).startswith(f"store 'items' ({store.url}, table {store.table_name}): duplicate key (id)=(1): ")


def test_unknown_filter_column_makes_the_store_unusable(make_store: StoreFactory) -> None:
    store = make_store(INT_KEY, INT_KEY.rows(range(3)))
    with pytest.raises(StoreUnusableError, match=r"store 'items' .*unknown column 'colour'"):
        store.read_page({"colour": "red"}, None, 10)
    with pytest.raises(StoreUnusableError, match="unknown column 'colour'"):
        store.count({"colour": "red"})


def test_sqlalchemy_clause_is_the_native_filter(make_store: StoreFactory) -> None:
    store = make_store(INT_KEY, INT_KEY.rows(range(10)))
    assert isinstance(store, SqlStore)
    n = store.table.c.n
    assert [r["id"] for r in store.read_page((n > 0) & (store.table.c.id < 6), 1, 10)] == [2, 4, 5]
    assert store.count(n == 0) == 4


def test_record_with_a_field_the_table_lacks_is_terminal(make_store: StoreFactory) -> None:
    store = make_store(INT_KEY)
    with pytest.raises(TerminalStoreError, match="fields the table lacks: colour"):
        store.save_all([{**INT_KEY.row(1), "colour": "red"}])


def test_a_str_the_driver_cannot_encode_is_terminal_and_named(make_store: StoreFactory) -> None:
    """Raised by the driver itself, before anything reaches the server (COPY, multi-row INSERT,
    executemany): about that value, so the engine splits the batch to find its record."""
    store = make_store(INT_KEY)
    rows = INT_KEY.rows(range(20))
    rows[7] = {**rows[7], "name": "half a pair \ud800"}
    for batch in (rows, rows[7:8]):
        with pytest.raises(StoreError) as caught:
            store.save_all(batch)
        assert type(caught.value) is TerminalStoreError
        assert str(caught.value).startswith("store 'items' (") and "surrogates not allowed" in str(caught.value)
    assert store.count() == 0


def test_the_first_record_with_unknown_fields_is_named_whatever_its_field_set(make_store: StoreFactory) -> None:
    store = make_store(INT_KEY)
    batch = [INT_KEY.row(1), {"id": 2, "name": "two"}, {"id": 3, "name": "three", "colour": "red"},
             {**INT_KEY.row(4), "size": 4}]
    with pytest.raises(TerminalStoreError, match=r": items\(id=3\) has fields the table lacks: colour$"):
        store.save_all(batch)
    assert store.count() == 0


def test_a_batch_of_several_field_sets_saves_every_record(make_store: StoreFactory) -> None:
    store = make_store(INT_KEY)
    batch = [INT_KEY.row(i) if i % 3 else {"id": i, "name": f"only {i}"} for i in range(40)]
    store.save_all(batch, journal=JournalEntry("m", "p"))
    assert store.read_page(None, None, 100) == [{"code": None, "n": None, **r} for r in batch]
    assert [e.payload for e in store.read_journal("m")] == ["p"]


def test_later_pages_read_the_same_as_the_first_reads_of_a_store(make_store: StoreFactory) -> None:
    """The first read of each shape goes through SQLAlchemy, later ones straight to the driver."""
    store = make_store(INT_KEY, INT_KEY.rows(range(30)))
    first, later = [store.read_page(None, None, 7) for _ in range(2)]
    assert first == later == INT_KEY.rows(range(7))
    first, later = [store.read_page(None, 6, 7) for _ in range(2)]
    assert first == later == INT_KEY.rows(range(7, 14))
    assert [[type(v) for v in r.values()] for r in first] == [[type(v) for v in r.values()] for r in later]
    assert store.read_page(None, 29, 7) == []


def test_postgres_page_reads_leave_pooled_connections_as_they_were(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads run in autocommit (no BEGIN/ROLLBACK round trips) unless the session sets
    transaction options, and give the pool back a connection in a transaction-per-batch state."""
    ddl = create_engine(postgres_url, poolclass=NullPool)
    create_test_table(ddl, "items", INT_KEY)
    ddl.dispose()
    in_autocommit: list[bool] = []
    real = postgres_module.alone_in_autocommit

    @contextmanager
    def spy(raw: Any, driver: str) -> Iterator[None]:
        with real(raw, driver):
            in_autocommit.append(raw.autocommit)
            yield

    monkeypatch.setattr(postgres_module, "alone_in_autocommit", spy)
    for options, autocommit in (({}, True), ({"isolation_level": "REPEATABLE READ"}, False)):
        in_autocommit.clear()
        engine = create_engine(postgres_url, **options)  # type: ignore[arg-type]
        store = SqlStore("items", engine, "items")
        try:
            store.save_all(INT_KEY.rows(range(20)), journal=JournalEntry("m", "p"))
            for _ in range(3):
                assert store.read_page(None, 3, 5) == INT_KEY.rows(range(4, 9))
            assert in_autocommit == [autocommit] * 2  # the first read goes through SQLAlchemy
            with engine.connect() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None and raw.autocommit is False
            with pytest.raises(DuplicateDataError):  # still one transaction: nothing of it stays
                store.save_all([*INT_KEY.rows(range(20, 40)), INT_KEY.row(3)], journal=JournalEntry("m", "q"))
            assert store.count() == 20 and [e.payload for e in store.read_journal("m")] == ["p"]
            store.delete_journal("m")
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM items"))
        finally:
            store.close()
            engine.dispose()


@pytest.fixture
def pipelines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry each time a psycopg connection enters pipeline mode."""
    import psycopg

    entered: list[int] = []
    real = psycopg.Connection.pipeline

    def counted(self: Any) -> Any:
        entered.append(1)
        return real(self)

    monkeypatch.setattr(psycopg.Connection, "pipeline", counted)
    return entered


def test_postgres_scans_send_the_next_page_query_ahead(
    postgres_url: str, sql_factory: Callable[[str], StoreFactory], pipelines: list[int]
) -> None:
    """After the first pages, an unfiltered scan runs in psycopg's pipeline mode: each page's
    query is sent before the page before it is handed over. The pages are the same."""
    store = sql_factory(postgres_url)(COMPOSITE_KEY, shuffled(COMPOSITE_KEY.rows(range(300))))
    pages = list(store.read_pages(None, None, 7))
    assert [r for page in pages for r in page] == COMPOSITE_KEY.rows(range(300)) and pipelines == [1]
    assert [len(p) for p in pages] == [7] * 42 + [6]
    assert [r for page in store.read_pages({"n": 1}, None, 7) for r in page] == [
        r for r in COMPOSITE_KEY.rows(range(300)) if r["n"] == 1]  # filtered: page by page
    assert pipelines == [1]
    ahead = store.read_pages(None, COMPOSITE_KEY.id(6), 7)  # starts after a page's last key
    assert [next(ahead) for _ in range(4)] == pages[1:5]
    ahead.close()  # type: ignore[attr-defined]  # left while a query was ahead
    assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert pipelines == [1, 1]


def test_postgres_reads_a_key_range_ahead_too(
    postgres_url: str, sql_factory: Callable[[str], StoreFactory], pipelines: list[int]
) -> None:
    """A range ``(after, upto]`` is read ahead like a scan, its upper bound in each query: the
    pages stop at ``upto`` and no query ahead reaches past it."""
    store = sql_factory(postgres_url)(COMPOSITE_KEY, shuffled(COMPOSITE_KEY.rows(range(300))))
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    pages = list(store.read_pages(None, COMPOSITE_KEY.id(10), 7, upto=COMPOSITE_KEY.id(250)))
    assert [r for page in pages for r in page] == COMPOSITE_KEY.rows(range(11, 251)) and pipelines == [1]
    assert [len(p) for p in pages] == [7] * 34 + [2]
    assert len(statements) == 1 and "<=" in statements[0]  # the first page's query, through SQLAlchemy


def test_missing_table_is_terminal_and_named(db_url: str) -> None:
    store = SqlStore("ghosts", db_url, "no_such_table")
    if store.dialect == "sqlite":
        open(store.url.database or "", "a").close()  # a database without the table
    try:
        with pytest.raises(TerminalStoreError, match=r"store 'ghosts' .*table 'no_such_table' does not exist"):
            store.read_page(None, None, 10)
    finally:
        store.close()


def test_key_column_missing_from_the_table(make_store: StoreFactory, db_url: str) -> None:
    table_name = make_store(INT_KEY).table_name  # type: ignore[attr-defined]
    store = SqlStore("items", db_url, table_name, key="uid")
    try:
        with pytest.raises(TerminalStoreError, match=r"key column 'uid' is not in the table; it has id, code"):
            store.read_page(None, None, 10)
    finally:
        store.close()


def test_a_table_object_is_used_as_given(db_url: str) -> None:
    engine = create_engine(db_url, poolclass=NullPool)
    table = create_test_table(engine, "given")
    with pytest.raises(TerminalStoreError, match="key column 'uid'"):
        SqlStore("items", engine, table, key="uid")  # checked at once: no reflection needed
    store = SqlStore("items", engine, table)
    try:
        store.save_all(INT_KEY.rows(range(3)))
        assert store.table is table
        assert store.count() == 3
    finally:
        engine.dispose()


def test_foreign_key_violation_is_terminal_not_duplicate(db_url: str) -> None:
    engine = create_engine(db_url, poolclass=NullPool)
    metadata = MetaData()
    parents = Table("parents", metadata, Column("id", Integer, primary_key=True, autoincrement=False))
    Table(
        "children",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("parent_id", Integer, ForeignKey(parents.c.id), nullable=False),
    )
    metadata.create_all(engine)
    engine.dispose()
    store = SqlStore("children", db_url, "children")
    try:
        with pytest.raises(StoreError) as caught:
            store.save_all([{"id": 1, "parent_id": 42}])
        assert type(caught.value) is TerminalStoreError
    finally:
        store.close()


def test_journal_table_is_shared_by_the_stores_of_a_database(make_store: StoreFactory) -> None:
    first, second = make_store(INT_KEY), make_store(INT_KEY)
    first.save_all([INT_KEY.row(1)], journal=JournalEntry("m1", "a"))
    second.save_all([INT_KEY.row(1)], journal=JournalEntry("m2", "b"))
    assert [e.migration for e in first.read_journal()] == ["m1", "m2"]


def test_journal_payload_may_be_longer_than_64_kib(make_store: StoreFactory) -> None:
    store = make_store(INT_KEY)
    payload = "x" * 200_000
    store.save_all([INT_KEY.row(1)], journal=JournalEntry("m", payload))
    assert store.read_journal()[0].payload == payload


# --- one database at a time ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/nowhere",
        "mysql+pymysql://root:s3cret-pw@127.0.0.1:1/nowhere",
    ],
)
def test_unreachable_server_is_transient_and_the_password_stays_hidden(url: str) -> None:
    store = SqlStore("far", url, "far_table")  # building a store never connects
    try:
        with pytest.raises(TransientStoreError) as caught:
            store.read_page(None, None, 1)
        message = str(caught.value)
        assert message.startswith("store 'far' (") and "***" in message
        assert "s3cret-pw" not in message and "\n" not in message
    finally:
        store.close()


def test_missing_postgres_database_is_terminal(postgres_url: str) -> None:
    store = SqlStore("items", postgres_url + "_missing", "items")
    try:
        with pytest.raises(TerminalStoreError, match="does not exist"):
            store.count()
    finally:
        store.close()


def test_sqlite_files_switch_to_wal_when_first_written_and_never_when_read(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url, poolclass=NullPool)
    create_test_table(engine, "items")
    engine.dispose()
    store = SqlStore("items", sqlite_url, "items")
    try:
        assert store.count() == 0 and store.read_page(None, None, 10) == []
        with store.engine.connect() as conn:  # the pool's one connection, which has only read
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "delete"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
        store.save_all(INT_KEY.rows(range(3)))
        with store.engine.connect() as conn:  # the same connection, which has written now
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    finally:
        store.close()


def test_stores_on_one_url_share_an_engine_until_the_last_closes(sqlite_url: str) -> None:
    first, second = SqlStore("a", sqlite_url, "a"), SqlStore("b", sqlite_url, "b")
    shared = first.engine
    assert second.engine is shared
    other_options = SqlStore("c", sqlite_url, "c", create_engine_kwargs={"echo": False})
    assert other_options.engine is not shared
    other_options.close()
    first.close()
    assert second.engine is shared
    second.close()
    third = SqlStore("c", sqlite_url, "c")
    assert third.engine is not shared
    third.close()
    assert first.engine is not shared  # a closed store works again, on a fresh engine
    first.close()


def test_in_memory_sqlite_is_one_database_for_every_store() -> None:
    writer = SqlStore("items", "sqlite://", "items")
    try:
        create_test_table(writer.engine, "items")
        writer.save_all(INT_KEY.rows(range(3)))
        reader = SqlStore("again", "sqlite://", "items")
        assert reader.count() == 3
        reader.close()
    finally:
        writer.close()


def test_locked_sqlite_database_is_transient(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url, connect_args={"timeout": 0})  # no busy wait
    create_test_table(engine, "items")
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    store = SqlStore("items", engine, "items")
    try:
        with pytest.raises(TransientStoreError, match="database is locked"):
            store.save_all([INT_KEY.row(1)])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        engine.dispose()


def test_on_conflict_needs_a_known_upsert() -> None:
    with pytest.raises(ValueError, match="not supported on oracle"):
        SqlStore("items", "oracle+oracledb://u@h/db", "items", on_conflict="update")


def _wrapped(orig: BaseException, wrapper: type[sa_exc.DBAPIError] = sa_exc.OperationalError) -> sa_exc.DBAPIError:
    return wrapper("INSERT ...", {}, orig)


@pytest.mark.parametrize(
    ("error", "dialect", "kind"),
    [
        (_wrapped(sqlite3.IntegrityError("UNIQUE constraint failed: t.id"), sa_exc.IntegrityError), "sqlite", "duplicate"),
        (_wrapped(sqlite3.IntegrityError("NOT NULL constraint failed: t.name"), sa_exc.IntegrityError), "sqlite", "terminal"),
        (_wrapped(sqlite3.IntegrityError("FOREIGN KEY constraint failed"), sa_exc.IntegrityError), "sqlite", "terminal"),
        (_wrapped(sqlite3.OperationalError("database is locked")), "sqlite", "transient"),
        (_wrapped(sqlite3.OperationalError("no such table: t")), "sqlite", "unusable"),
        (_wrapped(sqlite3.OperationalError("table t has no column named x")), "sqlite", "unusable"),
        (_wrapped(sqlite3.OperationalError("no such column: x")), "sqlite", "unusable"),
        (_wrapped(sqlite3.OperationalError("attempt to write a readonly database")), "sqlite", "unusable"),
        (_wrapped(sqlite3.ProgrammingError("Error binding parameter 1: type 'dict' is not supported"),
                  sa_exc.ProgrammingError), "sqlite", "terminal"),
        (_wrapped(psycopg.errors.UniqueViolation("dup"), sa_exc.IntegrityError), "postgresql", "duplicate"),
        (_wrapped(psycopg.errors.NotNullViolation("null"), sa_exc.IntegrityError), "postgresql", "terminal"),
        (_wrapped(psycopg.errors.CheckViolation("check"), sa_exc.IntegrityError), "postgresql", "terminal"),
        (_wrapped(psycopg.errors.DeadlockDetected("deadlock")), "postgresql", "transient"),
        (_wrapped(psycopg.errors.SerializationFailure("retry")), "postgresql", "transient"),
        (_wrapped(psycopg.errors.LockNotAvailable("lock")), "postgresql", "transient"),
        (_wrapped(psycopg.errors.AdminShutdown("bye")), "postgresql", "lost"),
        (_wrapped(psycopg.errors.UndefinedTable("no t"), sa_exc.ProgrammingError), "postgresql", "unusable"),
        (_wrapped(psycopg.errors.UndefinedColumn("no c"), sa_exc.ProgrammingError), "postgresql", "unusable"),
        (_wrapped(psycopg.errors.InsufficientPrivilege("denied"), sa_exc.ProgrammingError), "postgresql", "unusable"),
        (_wrapped(psycopg.errors.ReadOnlySqlTransaction("ro"), sa_exc.InternalError), "postgresql", "unusable"),
        (_wrapped(psycopg.errors.InvalidTextRepresentation("bad int"), sa_exc.DataError), "postgresql", "terminal"),
        (_wrapped(psycopg.OperationalError("connection failed: Connection refused")), "postgresql", "lost"),
        (_wrapped(psycopg.OperationalError("consuming input failed: server closed the connection")), "postgresql", "lost"),
        (_wrapped(psycopg.InterfaceError("the connection is closed")), "postgresql", "lost"),
        # Raised by psycopg before sending: about a value, not the connection.
        (_wrapped(psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), sa_exc.DataError),
         "postgresql", "terminal"),
        (_wrapped(psycopg.OperationalError('FATAL: password authentication failed for user "u"')), "postgresql", "unusable"),
        (_wrapped(pymysql.err.IntegrityError(1062, "Duplicate entry '1' for key 'PRIMARY'"), sa_exc.IntegrityError), "mysql", "duplicate"),
        (_wrapped(pymysql.err.IntegrityError(1048, "Column 'name' cannot be null"), sa_exc.IntegrityError), "mysql", "terminal"),
        (_wrapped(pymysql.err.IntegrityError(1452, "Cannot add or update a child row"), sa_exc.IntegrityError), "mysql", "terminal"),
        (_wrapped(pymysql.err.OperationalError(1213, "Deadlock found")), "mariadb", "transient"),
        (_wrapped(pymysql.err.OperationalError(1205, "Lock wait timeout exceeded")), "mariadb", "transient"),
        (_wrapped(pymysql.err.OperationalError(2013, "Lost connection")), "mysql", "lost"),
        (_wrapped(pymysql.err.OperationalError(2006, "MySQL server has gone away")), "mysql", "lost"),
        (_wrapped(pymysql.err.OperationalError(1045, "Access denied")), "mysql", "unusable"),
        (_wrapped(pymysql.err.ProgrammingError(1146, "Table 't' doesn't exist"), sa_exc.ProgrammingError), "mysql", "unusable"),
        (_wrapped(pymysql.err.OperationalError(1054, "Unknown column 'x'")), "mariadb", "unusable"),
        (_wrapped(pymysql.err.OperationalError(1142, "INSERT command denied")), "mariadb", "unusable"),
        (_wrapped(pymysql.err.OperationalError(1290, "running with the --read-only option")), "mariadb", "unusable"),
        (_wrapped(pymysql.err.ProgrammingError("nan can not be used with MySQL"), sa_exc.ProgrammingError), "mariadb", "terminal"),
        (sa_exc.DisconnectionError("gone"), "postgresql", "lost"),
        (sa_exc.NoSuchTableError("t"), "sqlite", "unusable"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_error_classification(error: Exception, dialect: str, kind: str) -> None:
    assert classify(error, dialect_for(dialect)) == kind


def test_invalidated_connection_is_lost() -> None:
    error = sa_exc.DBAPIError("SELECT 1", {}, sqlite3.DatabaseError("boom"), connection_invalidated=True)
    assert classify(error, dialect_for("sqlite")) == "lost"


def test_can_match_in_only_where_the_database_compares_like_python(sqlite_url, mysql_url):
    import sqlalchemy as sa

    from ferryman import SqlStore

    for url in (sqlite_url, mysql_url):
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, code VARCHAR(20), n FLOAT)")
        engine.dispose()
    sqlite_items, mysql_items = SqlStore("a", sqlite_url, "items"), SqlStore("b", mysql_url, "items")
    assert sqlite_items.can_match_in("id", [1, 2]) and mysql_items.can_match_in("id", [1, 2])
    assert not sqlite_items.can_match_in("id", [1, "2"])  # SQLite would coerce "2"; Python would not
    assert sqlite_items.can_match_in("code", ["a", "B"])
    assert not mysql_items.can_match_in("code", ["a", "B"])  # MariaDB's collation ignores case
    assert not sqlite_items.can_match_in("n", [1.5]) and not sqlite_items.can_match_in("nope", [1])


def test_can_match_in_refuses_blank_padded_char_columns(postgres_url):
    """PostgreSQL's char(n) compares 'a' equal to 'a  ' and reads back 'a  ': not Python's ==."""
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, code CHAR(3), name VARCHAR(3))")
    engine.dispose()
    items = SqlStore("items", postgres_url, "items")
    try:
        assert not items.can_match_in("code", ["a"]) and items.can_match_in("name", ["a"])
    finally:
        items.close()


@pytest.mark.parametrize("database", list(DATABASES))
def test_match_pages_in_is_one_streamed_query_ordered_by_value_then_key(database, request):
    """Many equality filters: one SELECT ... IN (streamed on the servers), whose rows are cut
    into each filter's pages exactly as a query per filter pages them."""
    url = request.getfixturevalue(DATABASES[database])
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE m (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER, v INTEGER)")
        conn.execute(text("INSERT INTO m VALUES (:id, :a, :b, :v)"),
                     [{"id": i, "a": i % 7, "b": i % 3, "v": i} for i in range(1, 301)])
    engine.dispose()
    store = SqlStore("m", url, "m")
    statements: list[tuple[str, bool]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM m" in statement:
            statements.append((statement, bool(context.execution_options.get("stream_results"))))

    try:
        event.listen(store.engine, "before_cursor_execute", seen)
        for fields, values in ((("a",), [(0,), (3,), (5,), (9,)]), (("a", "b"), [(1, 1), (2, 0), (4, 4)])):
            statements.clear()
            got = list(store.match_pages_in(fields, values, 4, columns=("v",)))
            assert len(statements) == 1 and " IN " in statements[0][0].upper()
            assert statements[0][1] == (database != "sqlite")  # a server-side cursor on the servers
            statements.clear()
            expected = [(i, page) for i, row in enumerate(values)
                        for page in store.match_pages(dict(zip(fields, row)), 4, columns=("v",))]
            assert sorted(got, key=lambda item: item[0]) == expected  # per filter in key order
            assert all(set(r) == {"id", "v"} for _, page in got for r in page)
            for i in range(len(values)):  # full pages of 4 but each filter's last
                sizes = [len(page) for j, page in got if j == i]
                assert all(n == 4 for n in sizes[:-1]) and all(0 < n <= 4 for n in sizes)
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
        store.close()


def test_match_pages_in_answers_filter_by_filter_where_the_database_compares_otherwise(mysql_url):
    """MariaDB's default collation finds 'ABC' for 'abc': a set query could not tell which
    filter a row belongs to, so each filter is asked alone and keeps the database's answer."""
    engine = create_engine(mysql_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE p (id INTEGER PRIMARY KEY, sku VARCHAR(10))")
        conn.exec_driver_sql("INSERT INTO p VALUES (1, 'ABC'), (2, 'abc'), (3, 'x')")
    engine.dispose()
    store = SqlStore("p", mysql_url, "p")
    try:
        got = list(store.match_pages_in(("sku",), [("abc",), ("X",)], 10))
        assert got == [(0, [{"id": 1, "sku": "ABC"}, {"id": 2, "sku": "abc"}]), (1, [{"id": 3, "sku": "x"}])]
    finally:
        store.close()


def test_unknown_match_columns_make_the_store_unusable(sqlite_url):
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE p (id INTEGER PRIMARY KEY, sku TEXT)")
    engine.dispose()
    store = SqlStore("p", sqlite_url, "p")
    try:
        with pytest.raises(StoreUnusableError, match=r"store 'p' .*Match columns name unknown column 'price'; "
                                                     r"the table has id, sku"):
            list(store.match_pages({"sku": "a"}, 10, columns=("price",)))
    finally:
        store.close()
