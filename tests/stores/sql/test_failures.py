"""SqlStore when the database misbehaves: refused logins, lost connections, restarts.

Two kinds of check. Single calls: wrong password, unknown database, server down, a connection
killed mid-statement, mid-COPY or mid-commit each give the right error class (transient: retry;
dropped: the database still answers, so the batch is the suspect; unusable: stop) with a
one-line message naming the store and the URL without its password.
Whole migrations: a real run (SQLite source -> PostgreSQL or MariaDB, durable ledger, retries)
while the server is restarted or its connections are killed must end with the destination
holding exactly the expected rows, each once, and the ledger agreeing.

The restart runs on a private PostgreSQL started here (the shared one must stay up), the way
``scripts/test.sh`` starts one when none is reachable.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helpers
import psycopg
import pymysql  # type: ignore[import-untyped]
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from ferryman import Cardinality, MigrationService, Retry, migration
from ferryman.errors import ConnectionDroppedError, StoreError, StoreUnusableError, TransientStoreError
from ferryman.pipeline.pages import source_pages
from ferryman.progress.files import open_ledger
from ferryman.report import RunResult
from ferryman.stores import JournalEntry, SqlStore
from ferryman.stores.sql import engines
from ferryman.stores.sql import mysql_ahead as ahead_module
from ferryman.stores.sql import postgres as postgres_module
from ferryman.stores.sql import postgres_copy as copy_module
from ferryman.stores.sql import postgres_link as link_module
from ferryman.stores.sql import store as store_module
from ferryman.types import Record

ITEMS_DDL = "CREATE TABLE items (id bigint PRIMARY KEY, name varchar(100) NOT NULL, n integer)"
SECRET = "s3cret-pw"


# --- a private PostgreSQL -----------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL server of our own, in a temp directory, on a free loopback port.

    TCP logins need a password (scram), so wrong passwords can be tested; the superuser
    ``postgres`` has password :data:`SECRET`.
    """

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in Path(p).parent.name.split(".") if x.isdigit()])
        if not bins:
            pytest.fail("no /usr/lib/postgresql/*/bin: install Debian's postgresql (scripts/test.sh does)")
        self.bin = Path(bins[-1])
        self.port = helpers.free_port()
        # /tmp, not pytest's tmp_path: the postgres user must reach it, and socket paths stay short.
        self.root = Path(tempfile.mkdtemp(prefix="ferryman-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.runas = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self.runas, *args], cwd="/", capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}{log[-2000:]}")

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(SECRET + "\n")
        if self.runas:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync")
        self._pg_ctl("start")
        helpers.wait_for(self.url(), 30)

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
                   " -c full_page_writes=off -c synchronous_commit=off")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "-o", options, *extra, action)

    def restart(self) -> None:
        """A fast restart: every connection is cut, the server is down for a moment."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def url(self, database: str = "postgres", password: str = SECRET) -> str:
        return f"postgresql+psycopg://postgres:{password}@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except RuntimeError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def private_pg_url(private_pg: PrivatePostgres) -> Iterator[str]:
    """A fresh database on the private server (which is up)."""
    helpers.wait_for(private_pg.url(), 30)
    name = f"ft_{os.urandom(4).hex()}"
    admin = helpers.admin_engine(private_pg.url(), poolclass=NullPool)
    with admin.connect() as conn:
        helpers.create_database(conn, name)
    yield private_pg.url(name)
    helpers.wait_for(private_pg.url(), 30)
    with admin.connect() as conn:
        helpers.drop_database(conn, name)
    admin.dispose()


# --- shared helpers -----------------------------------------------------------------------



def make_items(url: str, stores: list[SqlStore], ddl: str = ITEMS_DDL,
               engine_options: dict[str, Any] | None = None) -> SqlStore:
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(ddl))
    engine.dispose()
    store = SqlStore("items", url, "items", create_engine_kwargs=engine_options)
    stores.append(store)
    return store


def rows(ids: range) -> list[Record]:
    return [{"id": i, "name": f"name {i}", "n": i % 7} for i in ids]


def assert_one_line_naming(error: StoreError, store_name: str, url: str) -> None:
    message = str(error)
    shown = make_url(url).render_as_string(hide_password=True)
    assert message.startswith(f"store {store_name!r} ({shown}, table ")
    assert "\n" not in message
    password = make_url(url).password
    if password:
        assert str(password) not in message and "***" in message


DB_FIXTURES = {"postgresql": "postgres_url", "mariadb": "mysql_url"}


@pytest.fixture(params=list(DB_FIXTURES))
def server_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(DB_FIXTURES[request.param]))


def kill_backend(url: str, conn_id: int) -> None:
    """End one server connection from an admin connection, as an operator (or a failover) would."""
    admin = helpers.admin_engine(url, poolclass=NullPool)
    try:
        with admin.connect() as conn:
            if helpers.backend(url) == "postgresql":
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": conn_id})
            else:
                conn.execute(text(f"KILL {int(conn_id)}"))
    finally:
        admin.dispose()


def connection_id(dbapi_connection: Any) -> int:
    if isinstance(dbapi_connection, psycopg.Connection):
        return int(dbapi_connection.info.backend_pid)
    return int(dbapi_connection.thread_id())


# --- refused logins and unreachable servers -----------------------------------------------


def test_wrong_password_on_postgres_makes_the_store_unusable(private_pg: PrivatePostgres) -> None:
    url = private_pg.url(password="wrong-" + SECRET)
    store = SqlStore("items", url, "items")
    try:
        with pytest.raises(StoreError) as caught:
            store.count()
        assert type(caught.value) is StoreUnusableError
        assert "password authentication failed" in str(caught.value)
        assert_one_line_naming(caught.value, "items", url)
    finally:
        store.close()


def test_wrong_password_on_mariadb_makes_the_store_unusable(mysql_url: str) -> None:
    url = make_url(mysql_url).set(password="wrong-" + SECRET).render_as_string(hide_password=False)
    store = SqlStore("items", url, "items")
    try:
        with pytest.raises(StoreError) as caught:
            store.count()
        assert type(caught.value) is StoreUnusableError
        assert "Access denied" in str(caught.value)
        assert_one_line_naming(caught.value, "items", url)
    finally:
        store.close()


@pytest.mark.parametrize("what", ["database", "role"])
def test_unknown_database_or_user_makes_the_store_unusable(server_url: str, what: str) -> None:
    url = make_url(server_url)
    url = url.set(database=f"{url.database}_missing") if what == "database" else url.set(username="nobody_here")
    store = SqlStore("items", url.render_as_string(hide_password=False), "items")
    try:
        with pytest.raises(StoreError) as caught:
            store.read_page(None, None, 10)
        assert type(caught.value) is StoreUnusableError
        assert_one_line_naming(caught.value, "items", url.render_as_string(hide_password=False))
    finally:
        store.close()


def test_server_down_is_transient_and_the_store_recovers(
    private_pg: PrivatePostgres, private_pg_url: str, stores: list[SqlStore]
) -> None:
    store = make_items(private_pg_url, stores)
    store.save_all(rows(range(10)))
    private_pg.stop()
    try:
        for call in (lambda: store.count(), lambda: store.save_all(rows(range(10, 20)))):
            with pytest.raises(StoreError) as caught:
                call()
            assert type(caught.value) is TransientStoreError
            assert "Connection refused" in str(caught.value) or "connection" in str(caught.value).lower()
            assert_one_line_naming(caught.value, "items", private_pg_url)
    finally:
        private_pg._pg_ctl("start")
    helpers.wait_for(private_pg.url(), 30)
    store.save_all(rows(range(10, 20)))  # the same store, new connections
    assert store.count() == 20


def test_journal_cleanup_while_the_server_is_down_is_postponed(
    private_pg: PrivatePostgres, private_pg_url: str, stores: list[SqlStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = make_items(private_pg_url, stores)
    store.save_all(rows(range(3)), journal=JournalEntry("m", "p"))
    private_pg.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="ferryman"):
            store.delete_journal("m")  # no error: the entries just stay for the next cleanup
        assert "journal cleanup postponed" in caplog.text
    finally:
        private_pg._pg_ctl("start")
    helpers.wait_for(private_pg.url(), 30)
    assert [e.payload for e in store.read_journal()] == ["p"]
    store.delete_journal("m")
    assert store.read_journal() == []


# --- connections lost in the middle of a call ---------------------------------------------


def test_connection_killed_mid_insert_is_dropped_and_nothing_is_saved(
    server_url: str, stores: list[SqlStore]
) -> None:
    store = make_items(server_url, stores)
    from sqlalchemy import event

    def kill_before_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO ITEMS"):
            kill_backend(server_url, connection_id(conn.connection.driver_connection))

    event.listen(store.engine, "before_cursor_execute", kill_before_insert)
    try:
        with pytest.raises(StoreError) as caught:
            store.save_all(rows(range(3)), journal=JournalEntry("m", "p"))
    finally:
        event.remove(store.engine, "before_cursor_execute", kill_before_insert)
    assert type(caught.value) is ConnectionDroppedError
    assert_one_line_naming(caught.value, "items", server_url)
    assert store.count() == 0 and store.read_journal() == []
    store.save_all(rows(range(3)), journal=JournalEntry("m", "p"))  # a retry just works
    assert store.count() == 3


def _alive(url: str, conn_id: int) -> bool:
    admin = helpers.admin_engine(url, poolclass=NullPool)
    try:
        with admin.connect() as conn:
            if helpers.backend(url) == "postgresql":
                query = "SELECT count(*) FROM pg_stat_activity WHERE pid = :id"
            else:
                query = "SELECT count(*) FROM information_schema.processlist WHERE id = :id"
            return bool(conn.execute(text(query), {"id": conn_id}).scalar_one())
    finally:
        admin.dispose()


def test_a_pooled_connection_killed_while_idle_is_replaced_unnoticed(
    server_url: str, stores: list[SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ping before handing out a connection returned moments ago, unless the server closed it."""
    store = make_items(server_url, stores)
    store.save_all(rows(range(3)))
    dialect = store.engine.dialect
    pings: list[Any] = []
    real_ping = dialect.do_ping

    def counting_ping(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counting_ping)
    for _ in range(5):
        assert store.count() == 3
    assert pings == []  # the pooled connection came back a moment ago and the server sent nothing
    with store.engine.connect() as conn:
        pooled = conn.connection.driver_connection
        killed = connection_id(pooled)
    kill_backend(server_url, killed)
    wait_until(lambda: not _alive(server_url, killed), 10)
    wait_until(lambda: engines._has_input(pooled), 10)  # the socket's end reaches us
    assert store.count() == 3  # no error: the dead connection was noticed, pinged and replaced
    assert len(pings) == 1
    with store.engine.connect() as conn:
        assert connection_id(conn.connection.driver_connection) != killed


def test_a_connection_idle_for_long_is_pinged(
    server_url: str, stores: list[SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_items(server_url, stores)
    assert store.count() == 0
    pings: list[Any] = []
    monkeypatch.setattr(store.engine.dialect, "do_ping", lambda dbapi_connection: pings.append(1) or True)
    monkeypatch.setattr(engines, "MAX_UNCHECKED_IDLE", 0.0)
    assert store.count() == 0 and store.read_page(None, None, 10) == []
    assert len(pings) == 2


def test_connection_killed_mid_copy_is_dropped(
    postgres_url: str, stores: list[SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_items(postgres_url, stores)
    real = copy_module.send_rows

    def killed_copy(raw: Any, *args: Any) -> None:
        kill_backend(postgres_url, connection_id(raw))
        real(raw, *args)

    monkeypatch.setattr(copy_module, "send_rows", killed_copy)
    with pytest.raises(StoreError) as caught:
        store.save_all(rows(range(100)), journal=JournalEntry("m", "p"))
    assert type(caught.value) is ConnectionDroppedError
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    monkeypatch.setattr(copy_module, "send_rows", real)
    assert store.count() == 0
    store.save_all(rows(range(100)), journal=JournalEntry("m", "p"))
    assert store.count() == 100


def test_connection_killed_while_a_batch_is_sent_ahead_is_dropped(
    mysql_url: str, stores: list[SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB: killed before the batch's query (rows, journal row, COMMIT) is sent."""
    store = make_items(mysql_url, stores)
    real = ahead_module.QueryInFlight.__init__

    def killed_first(self: ahead_module.QueryInFlight, conn: Any, query: str) -> None:
        kill_backend(mysql_url, connection_id(conn.connection.driver_connection))
        real(self, conn, query)

    monkeypatch.setattr(ahead_module.QueryInFlight, "__init__", killed_first)
    with pytest.raises(StoreError) as caught:
        store.save_all(rows(range(100)), journal=JournalEntry("m", "p"))
    assert type(caught.value) is ConnectionDroppedError
    assert isinstance(caught.value.__cause__, pymysql.err.OperationalError)
    monkeypatch.setattr(ahead_module.QueryInFlight, "__init__", real)
    assert store.count() == 0 and store.read_journal("m") == []
    store.save_all(rows(range(100)), journal=JournalEntry("m", "p"))
    assert store.count() == 100


def test_a_scan_whose_connection_is_killed_resumes_after_its_last_page(
    postgres_url: str, stores: list[SqlStore]
) -> None:
    """The pipelined scan holds one connection; killed mid-way, the source is read again from
    the last page handed over: every record once."""
    store = make_items(postgres_url, stores)
    store.save_all(rows(range(1, 1001)))
    database = make_url(postgres_url).database
    got: list[int] = []
    for page in source_pages(store, 50, Retry(times=2, delay=0), lambda delay: False):
        got += [r["id"] for r in page]
        if len(got) == 300:
            with psycopg.connect(make_url(postgres_url).set(drivername="postgresql").render_as_string(
                    hide_password=False), autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchone()
            assert killed is not None and killed[0] >= 1
    assert got == list(range(1, 1001))


def _lost_connection(dbapi_connection: Any) -> Exception:
    raw = getattr(dbapi_connection, "driver_connection", dbapi_connection)  # SQLAlchemy's wrapper
    raw.close()
    if isinstance(raw, psycopg.Connection):
        return psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")
    return pymysql.err.OperationalError(2013, "Lost connection to server during query")


@pytest.fixture
def cut_commit(monkeypatch: pytest.MonkeyPatch) -> Callable[[SqlStore, bool], None]:
    """Makes the store's next commit lose its connection, after (True) or before (False) it lands."""

    def cut(store: SqlStore, lands: bool) -> None:
        store.save_all([], journal=JournalEntry("warm-up", ""))  # the journal table exists now
        dialect = store.engine.dialect
        real = dialect.do_commit
        real_insert_and_commit = postgres_module.insert_and_commit
        real_finish = copy_module.CopyInFlight.finish
        copy_writer = link_module._copy_writer_class()
        real_end_copy = copy_writer.finish
        real_query_init = ahead_module.QueryInFlight.__init__
        real_query_finish = ahead_module.QueryInFlight.finish

        def once() -> None:
            monkeypatch.setattr(dialect, "do_commit", real)
            monkeypatch.setattr(postgres_module, "insert_and_commit", real_insert_and_commit)
            monkeypatch.setattr(copy_module.CopyInFlight, "finish", real_finish)
            monkeypatch.setattr(copy_writer, "finish", real_end_copy)
            monkeypatch.setattr(ahead_module.QueryInFlight, "__init__", real_query_init)
            monkeypatch.setattr(ahead_module.QueryInFlight, "finish", real_query_finish)

        def do_commit(dbapi_connection: Any) -> None:
            once()
            if lands:
                real(dbapi_connection)
            raise _lost_connection(dbapi_connection)

        def insert_and_commit(conn: Any, tables: Any, entry: JournalEntry) -> bool:
            """PostgreSQL commits with the batch's journal entry, in the same round trip."""
            once()
            if lands:
                real_insert_and_commit(conn, tables, entry)
            lost = _lost_connection(conn.connection)
            raise sa_exc.OperationalError("COMMIT", {}, lost, connection_invalidated=True)

        def end_copy(self: Any, exc: BaseException | None = None) -> None:
            """A batch sent by COPY commits unless its end says the COPY failed."""
            real_end_copy(self, exc if lands else RuntimeError("cut"))

        def finish(self: copy_module.CopyInFlight) -> None:
            """The outcome of a COPY's query never reaches us."""
            once()
            try:
                real_finish(self)
            except sa_exc.DBAPIError:
                assert not lands  # the COPY's own end cancelled it
            lost = psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")
            raise sa_exc.OperationalError("COPY", {}, lost, connection_invalidated=True)

        def send_query(self: ahead_module.QueryInFlight, conn: Any, query: str) -> None:
            """MariaDB sends a batch ahead as one query; one that does not land never commits."""
            real_query_init(self, conn, query if lands else query.removesuffix(";COMMIT"))

        def read_query(self: ahead_module.QueryInFlight) -> None:
            """The query's results are read (the connection goes back, rolled back unless it
            committed), then its connection is lost."""
            once()
            real_query_finish(self)
            lost = pymysql.err.OperationalError(2013, "Lost connection to server during query")
            raise sa_exc.OperationalError("COMMIT", {}, lost, connection_invalidated=True)

        monkeypatch.setattr(dialect, "do_commit", do_commit)
        monkeypatch.setattr(ahead_module.QueryInFlight, "__init__", send_query)
        monkeypatch.setattr(ahead_module.QueryInFlight, "finish", read_query)
        monkeypatch.setattr(postgres_module, "insert_and_commit", insert_and_commit)
        monkeypatch.setattr(copy_writer, "finish", end_copy)
        monkeypatch.setattr(copy_module.CopyInFlight, "finish", finish)

    return cut


def test_commit_cut_off_after_it_landed_counts_as_saved(
    server_url: str, stores: list[SqlStore], cut_commit: Callable[[SqlStore, bool], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = make_items(server_url, stores)
    cut_commit(store, True)
    with caplog.at_level(logging.WARNING, logger="ferryman"):
        store.save_all(rows(range(20)), journal=JournalEntry("m", "[1,2]"))  # no error: it landed
    assert "but the batch was committed" in caplog.text
    assert store.count() == 20 and [e.payload for e in store.read_journal("m")] == ["[1,2]"]


def test_commit_cut_off_before_it_landed_is_dropped(
    server_url: str, stores: list[SqlStore], cut_commit: Callable[[SqlStore, bool], None]
) -> None:
    store = make_items(server_url, stores)
    cut_commit(store, False)
    with pytest.raises(StoreError) as caught:
        store.save_all(rows(range(20)), journal=JournalEntry("m", "[1,2]"))
    assert type(caught.value) is ConnectionDroppedError
    assert store.count() == 0 and store.read_journal("m") == []
    store.save_all(rows(range(20)), journal=JournalEntry("m", "[1,2]"))
    assert store.count() == 20


def test_commit_in_doubt_is_settled_by_the_retry(
    server_url: str, stores: list[SqlStore], cut_commit: Callable[[SqlStore, bool], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commit landed, but the database cannot be asked at once; the retry asks first."""
    store = make_items(server_url, stores)
    cut_commit(store, True)
    real_has_entry = store_module.has_entry

    def unreachable(*args: Any) -> bool:
        monkeypatch.setattr(store_module, "has_entry", real_has_entry)
        raise sa_exc.OperationalError("SELECT", {}, Exception("server unreachable"), connection_invalidated=True)

    monkeypatch.setattr(store_module, "has_entry", unreachable)
    with pytest.raises(TransientStoreError):
        store.save_all(rows(range(20)), journal=JournalEntry("m", "[1,2]"))
    store.save_all(rows(range(20)), journal=JournalEntry("m", "[1,2]"))  # not a DuplicateDataError
    assert store.count() == 20 and len(store.read_journal("m")) == 1


# --- whole migrations through outages -----------------------------------------------------

ROWS = 4000


def source_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/source.db"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n INTEGER)"))
        conn.execute(text("INSERT INTO people VALUES (:id, :name, :n)"), rows(range(1, ROWS + 1)))
    engine.dispose()
    return url


def expected_rows() -> list[Record]:
    return [{"id": i, "name": f"NAME {i}", "n": (i % 7) * 2} for i in range(1, ROWS + 1)]


RETRY = Retry(times=5, delay=1.0)


@migration(source="people", dest="items", batch_size=50, save_batch_size=50,
           cardinality=Cardinality.EXACTLY_ONE, load_retry=RETRY, save_retry=RETRY)
class CopyPeople:
    pause = 0.0005  # seconds per record: the run lasts a few seconds, so outages land mid-run

    def transform(self, aggregates: Any, record: Record) -> list[Record]:
        time.sleep(self.pause)
        return [{"id": record["id"], "name": record["name"].upper(), "n": record["n"] * 2}]


def run_through(
    tmp_path: Path, dest: SqlStore, trouble: Callable[[Callable[[], int]], None], copy: type = CopyPeople
) -> RunResult:
    """Run the migration (``copy``) in a thread; ``trouble(progress)`` runs meanwhile in this one."""
    source = SqlStore("people", source_db(tmp_path), "people")
    service = MigrationService([source, dest], [copy], ledger=tmp_path / "run.db")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = service.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    counter = create_engine(dest.url, poolclass=NullPool)

    def written() -> int:
        try:
            with counter.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM items")).scalar_one())
        except sa_exc.DBAPIError:
            return -1

    try:
        trouble(written)
    finally:
        worker.join(timeout=300)
        counter.dispose()
        source.close()
    assert not worker.is_alive(), "the migration did not finish"
    if "error" in outcome:
        raise outcome["error"]
    result: RunResult = outcome["result"]
    return result


def assert_migrated_exactly_once(result: RunResult, dest: SqlStore, ledger_path: Path, copy: type = CopyPeople) -> None:
    assert result.ok, result.summary()
    assert [r for page in dest.scan(batch_size=1000) for r in page] == expected_rows()
    progress = open_ledger(ledger_path, read_only=True).progress()
    entry = progress.migrations[f"{copy.__module__}.{copy.__qualname__}"]
    assert entry.failed == {}
    assert sorted(entry.succeeded) == list(range(1, ROWS + 1))


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_postgres_restart_mid_run_loses_and_doubles_nothing(
    tmp_path: Path, private_pg: PrivatePostgres, private_pg_url: str, stores: list[SqlStore]
) -> None:
    dest = make_items(private_pg_url, stores)
    restarted: list[float] = []

    def restart_at_a_quarter(written: Callable[[], int]) -> None:
        wait_until(lambda: written() >= ROWS // 4)
        started = time.monotonic()
        private_pg.restart()
        restarted.append(time.monotonic() - started)
        assert 0 < written() < ROWS, "the restart should land mid-run"

    result = run_through(tmp_path, dest, restart_at_a_quarter)
    assert restarted
    assert result.reports[0].retried >= 1, "the restart went unnoticed; the test proved nothing"
    assert_migrated_exactly_once(result, dest, tmp_path / "run.db")


def _kill_all(url: str, admin: Any) -> int:
    """End every connection to ``url``'s database but the admin's own; how many."""
    database = make_url(url).database
    with admin.connect() as conn:
        if helpers.backend(url) == "postgresql":
            return len(conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database}).all())
        ids = conn.execute(text(
            "SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()"),
            {"db": database}).scalars().all()
        for conn_id in ids:
            try:
                conn.execute(text(f"KILL {int(conn_id)}"))
            except sa_exc.DBAPIError:
                pass  # gone meanwhile
        return len(ids)


def test_connections_killed_again_and_again_mid_run_lose_and_double_nothing(
    tmp_path: Path, server_url: str, stores: list[SqlStore]
) -> None:
    """PostgreSQL: pg_terminate_backend; MariaDB: KILL; every 50 ms while half the rows are written."""
    dest = make_items(server_url, stores)
    admin = helpers.admin_engine(server_url, poolclass=NullPool)
    killed: list[int] = []

    def keep_killing(written: Callable[[], int]) -> None:
        wait_until(lambda: written() >= ROWS // 10)
        while 0 <= written() < ROWS * 6 // 10:
            killed.append(_kill_all(server_url, admin))
            time.sleep(0.05)

    try:
        result = run_through(tmp_path, dest, keep_killing)
    finally:
        admin.dispose()
    assert sum(killed) > 0
    assert_migrated_exactly_once(result, dest, tmp_path / "run.db")


STOPPED = threading.Event()


@migration(source="people", dest="items", batch_size=50, save_batch_size=50,
           cardinality=Cardinality.EXACTLY_ONE, load_retry=RETRY, save_retry=RETRY)
class CopyPeopleStoppingTheServer(CopyPeople):
    """Stops the server between two batches: the next one finds it down, and no batch is in
    doubt (whose retry would ask the journal before anything else)."""

    server: PrivatePostgres | None = None

    def transform(self, aggregates: Any, record: Record) -> list[Record]:
        if record["id"] == ROWS // 4 and self.server is not None and not STOPPED.is_set():
            self.server.stop()
            STOPPED.set()
        return super().transform(aggregates, record)


def test_an_outage_mid_run_retries_whole_batches_and_splits_none(
    tmp_path: Path, private_pg: PrivatePostgres, private_pg_url: str, stores: list[SqlStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch that loses its connection makes the store ask whether the database still
    answers; while it is down, the batch is retried whole later, never split to find a culprit."""
    # An isolation level makes the store save by INSERT, committed before the next page is read.
    dest = make_items(private_pg_url, stores, engine_options={"isolation_level": "READ COMMITTED"})
    batches: list[int] = []
    begin = dest.begin_save_all

    def counted(records: list[Record], *, journal: JournalEntry | None = None) -> Any:
        batches.append(len(records))
        return begin(records, journal=journal)

    monkeypatch.setattr(dest, "begin_save_all", counted)
    monkeypatch.setattr(CopyPeopleStoppingTheServer, "server", private_pg)
    STOPPED.clear()
    tried_while_down: list[int] = []

    def restart_after_three_attempts(written: Callable[[], int]) -> None:
        wait_until(STOPPED.is_set)
        at_stop = len(batches)
        try:
            wait_until(lambda: len(batches) >= at_stop + 3)
            tried_while_down.append(len(batches) - at_stop)
        finally:
            private_pg._pg_ctl("start")

    result = run_through(tmp_path, dest, restart_after_three_attempts, CopyPeopleStoppingTheServer)
    assert_migrated_exactly_once(result, dest, tmp_path / "run.db", CopyPeopleStoppingTheServer)
    assert tried_while_down and result.reports[0].retried >= 3 * 50
    assert set(batches) == {50}, "a batch was split while the database was down"
    assert ROWS // 50 + 3 <= len(batches) <= ROWS // 50 + RETRY.times
