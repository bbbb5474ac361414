"""SqlStore keeps values and their Python types, both ways, on SQLite, PostgreSQL and MariaDB.

The type matrix (what goes in, what comes out) is the table in ``docs/stores.md``; each row of it
is checked here on every database where the type exists, through every write path: PostgreSQL's
binary and text COPY, INSERT (a lone record), and the upsert statement. Also here: the bulk paths
themselves (COPY used, multi-row INSERT on MariaDB), their fallbacks, and bounded page reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from helpers import created_store
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from ferryman import Cardinality, MigrationService, Retry, migration
from ferryman.errors import DuplicateDataError, StopRequested, StoreError, StoreUnusableError, TerminalStoreError
from ferryman.progress.files import open_ledger
from ferryman.stores import JournalEntry, MemoryStore, SqlStore
from ferryman.stores.sql import postgres as postgres_module
from ferryman.stores.sql import postgres_copy as copy_module
from ferryman.types import Record

DATABASES = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}

TYPED_DDL = {
    "postgresql": """CREATE TABLE typed (
        id bigint PRIMARY KEY, amount numeric(30, 10), at_tz timestamptz, at_local timestamp,
        day date, doc jsonb, doc2 json, raw bytea, uid uuid, flag boolean, big bigint, label text,
        small smallint, int32 integer, num numeric(12, 2), real32 real, dbl double precision)""",
    "mariadb": """CREATE TABLE typed (
        id bigint PRIMARY KEY, amount decimal(30, 10), at_tz timestamp(6) NULL, at_local datetime(6),
        day date, doc json, doc2 json, raw longblob, uid uuid, flag boolean, big bigint,
        label varchar(100), small smallint, int32 int, num decimal(12, 2), real32 float, dbl double,
        tiny tinyint, bits bit(8))""",
    "sqlite": """CREATE TABLE typed (
        id INTEGER PRIMARY KEY, at_local DATETIME, day DATE, doc JSON, doc2 JSON, raw BLOB,
        uid TEXT, flag BOOLEAN, big BIGINT, label TEXT, small SMALLINT, int32 INTEGER,
        num NUMERIC(12, 2), real32 REAL, dbl DOUBLE)""",
}
"""One column per type; SQLite has no exact decimal, no time zone and no uuid type; TINYINT
and BIT are MariaDB's. ``real32`` is single precision (PostgreSQL's REAL, MariaDB's FLOAT)."""

NUMBERS = ("big", "small", "int32", "num", "real32", "dbl", "tiny", "bits")

PLUS_TWO = timezone(timedelta(hours=2))


def typed_row(i: int) -> Record:
    return {
        "id": i,
        "amount": Decimal("12345678901234567890.0123456789") + i,
        "at_tz": datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=PLUS_TWO) + timedelta(minutes=i),
        "at_local": datetime(1999, 12, 31, 23, 59, 59, 999999) - timedelta(days=i),
        "day": date(2024, 1, 1) + timedelta(days=i),
        "doc": {"list": [1, 2.5, "x", None, True], "nested": {"i": i}, "text": "ünïcødé"},
        "doc2": [i, "two", {"three": 3}],
        "raw": bytes(range(256)) + bytes([i % 256]),
        "uid": uuid.UUID(int=i * 7919 + 1),
        "flag": i % 2 == 0,
        "big": 2**62 + i,
        "label": f"label {i}",
        "small": -(2**15) + i,
        "int32": 2**31 - 1 - i,
        "num": Decimal("1234.25") + i,  # a double holds it exactly: SQLite's NUMERIC stores one
        "real32": 0.5 + i / 4,  # exact in single precision
        "dbl": 1 / 3 + i,  # every bit of a double
        "tiny": i - 100,
        "bits": (i * 37) % 256,
    }


def columns_of(database: str) -> set[str]:
    absent = {"sqlite": {"amount", "at_tz", "tiny", "bits"}, "postgresql": {"tiny", "bits"}}.get(database, set())
    return set(typed_row(0)) - absent


def row_for(database: str, i: int) -> Record:
    row = typed_row(i)
    return {k: v for k, v in row.items() if k in columns_of(database)}


def expected_back(database: str, row: Record) -> Record:
    """What the database gives back for ``row`` (differences from the input are the rules)."""
    out = dict(row)
    if database == "sqlite":
        out["uid"] = str(row["uid"])  # a UUID goes into a text column as its str
    return out


def assert_same_values(got: Record, want: Record) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name] == value, name
        assert type(got[name]) is type(value) or (
            isinstance(value, datetime) and isinstance(got[name], datetime)
        ), f"{name}: {type(got[name]).__name__} instead of {type(value).__name__}"
        if isinstance(value, datetime):  # aware stays aware, naive stays naive
            assert (got[name].tzinfo is None) == (value.tzinfo is None), name


@pytest.fixture(params=list(DATABASES))
def database(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(database: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(DATABASES[database]))


@pytest.fixture
def run_ddl(db_url: str) -> Iterator[Callable[[str], None]]:
    engine = create_engine(db_url, poolclass=NullPool)

    def run(statement: str) -> None:
        with engine.begin() as conn:
            conn.execute(text(statement))

    yield run
    engine.dispose()



@pytest.fixture
def typed(database: str, db_url: str, run_ddl: Callable[[str], None], stores: list[SqlStore]) -> SqlStore:
    run_ddl(TYPED_DDL[database])
    store = SqlStore("typed", db_url, "typed")
    stores.append(store)
    return store


# --- the type matrix ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["bulk", "single", "upsert"])
def test_every_type_reads_back_equal_and_of_the_same_type(
    database: str, db_url: str, typed: SqlStore, stores: list[SqlStore], path: str
) -> None:
    rows = [row_for(database, i) for i in range(20)]
    if path == "bulk":  # COPY on PostgreSQL, a multi-row INSERT on MariaDB
        typed.save_all(rows)
    elif path == "single":
        for row in rows:
            typed.save_all([row])
    else:
        upsert = SqlStore("typed", db_url, "typed", on_conflict="update")
        stores.append(upsert)
        upsert.save_all(rows)
        upsert.save_all(rows)  # idempotent
    for got, row in zip(typed.read_page(None, None, 100), rows, strict=True):
        assert_same_values(got, expected_back(database, row))
    assert [r["id"] for r in typed.get_many([19, 3])] == [3, 19]
    assert_same_values(typed.get_many([7])[0], expected_back(database, rows[7]))


@pytest.mark.parametrize("database", ["postgresql", "mariadb"])
@pytest.mark.parametrize("on_conflict", ["error", "update"])
def test_plain_python_values_still_get_the_column_types_processing(
    db_url: str, typed: SqlStore, stores: list[SqlStore], on_conflict: str
) -> None:
    """Every value is a str, int, bool or None, so the bulk paths skip SQLAlchemy's processing
    where it would change nothing; JSON columns must still get a JSON document, UUIDs a UUID."""
    store = SqlStore("typed", db_url, "typed", on_conflict=on_conflict)  # type: ignore[arg-type]
    stores.append(store)
    rows = [{"id": i, "doc": f"text {i}", "doc2": i, "flag": i % 2 == 0, "uid": str(uuid.UUID(int=i)),
             "label": None if i == 3 else f"l{i}", "big": 2**62 + i} for i in range(20)]
    store.save_all(rows)
    back = typed.read_page(None, None, 100)
    assert [r["doc"] for r in back] == [f"text {i}" for i in range(20)]
    assert [r["doc2"] for r in back] == list(range(20))
    assert [r["flag"] for r in back] == [i % 2 == 0 for i in range(20)] and type(back[0]["flag"]) is bool
    assert [r["uid"] for r in back] == [uuid.UUID(int=i) for i in range(20)]
    assert [(r["label"], r["big"]) for r in back] == [(row["label"], row["big"]) for row in rows]


def test_numbers_through_binary_copy_insert_and_upsert(
    database: str, db_url: str, typed: SqlStore, stores: list[SqlStore], copy_calls: list[tuple[bool, int]]
) -> None:
    """The number columns alone: PostgreSQL sends them by binary COPY (the whole typed row goes
    by text COPY: JSON has no binary form psycopg writes)."""
    rows = [{k: v for k, v in row_for(database, i).items() if k in ("id", *NUMBERS)} for i in range(20)]
    typed.save_all(rows[:12])
    for row in rows[12:16]:
        typed.save_all([row])
    upsert = SqlStore("typed", db_url, "typed", on_conflict="update")
    stores.append(upsert)
    upsert.save_all(rows[16:])
    if database == "postgresql":
        assert copy_calls == [(True, 12)]
    for got, row in zip(typed.read_page(None, None, 100), rows, strict=True):
        assert_same_values({k: got[k] for k in row}, row)


KEEPS_NAN_AND_INFINITY = {"postgresql": {"nan", "inf", "-inf"}, "mariadb": set(), "sqlite": {"inf", "-inf"}}


def test_nan_and_infinities_are_kept_or_refused_never_changed(typed: SqlStore, database: str) -> None:
    """Refused: the record fails with a clear cause (SQLite would store NaN as NULL)."""
    for i, name in enumerate(["nan", "inf", "-inf"]):
        value = float(name)
        if name in KEEPS_NAN_AND_INFINITY[database]:
            typed.save_all([{"id": i, "dbl": value, "real32": value}])
            got = typed.get_many([i])[0]
            assert [str(got["dbl"]), str(got["real32"])] == [name, name]
            continue
        with pytest.raises(StoreError) as caught:
            typed.save_all([{"id": 100, "dbl": 1.5}, {"id": i, "dbl": value}])
        assert type(caught.value) is TerminalStoreError
        why = "SQLite stores NaN as NULL" if database == "sqlite" else "can not be used with MySQL"
        assert why in str(caught.value)
        if database == "sqlite":
            assert f"typed(id={i}): field 'dbl' is nan" in str(caught.value)
    assert typed.count() == len(KEEPS_NAN_AND_INFINITY[database])


def test_big_integers_keep_every_digit(typed: SqlStore, database: str) -> None:
    values = [2**62, 2**63 - 1, -(2**63), 0]
    typed.save_all([{"id": i, "big": v} for i, v in enumerate(values, 1)])
    assert [r["big"] for r in typed.read_page(None, None, 10)] == values
    assert typed.get_many([2**63 - 1]) == []  # an id that is not there, no overflow
    typed.save_all([{"id": 2**63 - 1, "big": 1}])
    assert typed.id_of(typed.get_many([2**63 - 1])[0]) == 2**63 - 1


def test_aware_datetime_in_a_column_without_time_zone_is_stored_as_utc(typed: SqlStore) -> None:
    typed.save_all([{"id": 1, "at_local": datetime(2024, 6, 1, 12, 0, tzinfo=PLUS_TWO)}])
    assert typed.get_many([1])[0]["at_local"] == datetime(2024, 6, 1, 10, 0)


@pytest.mark.parametrize("database", ["postgresql", "mariadb"])  # SQLite has no such type
def test_timestamp_with_time_zone_keeps_the_instant(typed: SqlStore, database: str) -> None:
    instant = datetime(2024, 6, 1, 12, 0, 0, 1, tzinfo=PLUS_TWO)
    typed.save_all([{"id": 1, "at_tz": instant}, {"id": 2, "at_tz": datetime(2024, 6, 1, 12, 0)}])
    first, second = typed.read_page(None, None, 10)
    assert first["at_tz"] == instant and first["at_tz"].utcoffset() is not None
    assert second["at_tz"].utcoffset() is not None  # a naive value is taken as UTC (PG: session zone)


@pytest.mark.parametrize("database", ["postgresql", "mariadb"])  # SQLite has no decimal type
def test_decimal_keeps_precision_and_scale(typed: SqlStore, database: str) -> None:
    values = [Decimal("0.0000000001"), Decimal("-99999999999999999999.9999999999"), Decimal("1.5")]
    typed.save_all([{"id": i, "amount": v} for i, v in enumerate(values)])
    got = [r["amount"] for r in typed.read_page(None, None, 10)]
    assert got == values and all(isinstance(v, Decimal) for v in got)
    assert str(got[2]) == "1.5000000000"  # the column's scale


def test_json_scalars_lists_and_nesting(typed: SqlStore) -> None:
    docs = [{"a": {"b": [1, {"c": None}]}}, [], {}, ["x", 1, 2.5, False]]
    typed.save_all([{"id": i, "doc": d} for i, d in enumerate(docs)])
    assert [r["doc"] for r in typed.read_page(None, None, 10)] == docs


def test_booleans_are_bools(typed: SqlStore) -> None:
    typed.save_all([{"id": 1, "flag": True}, {"id": 2, "flag": False}, {"id": 3, "flag": None}])
    flags = [r["flag"] for r in typed.read_page(None, None, 10)]
    assert flags == [True, False, None] and [type(f) for f in flags[:2]] == [bool, bool]


# --- UUID keys ----------------------------------------------------------------------------

UUID_KEY_DDL = {
    "postgresql": "CREATE TABLE things (id uuid PRIMARY KEY, name text NOT NULL)",
    "mariadb": "CREATE TABLE things (id uuid PRIMARY KEY, name varchar(100) NOT NULL)",
    "sqlite": "CREATE TABLE things (id TEXT PRIMARY KEY, name TEXT NOT NULL)",
}


@pytest.fixture
def things(database: str, db_url: str, run_ddl: Callable[[str], None], stores: list[SqlStore]) -> SqlStore:
    run_ddl(UUID_KEY_DDL[database])
    store = SqlStore("things", db_url, "things")
    stores.append(store)
    return store


def test_uuid_key_is_a_str_id_and_str_ids_find_the_rows(things: SqlStore) -> None:
    keys = [uuid.UUID(int=n * 104729 + 17) for n in range(30)]
    things.save_all([{"id": k, "name": f"n{i}"} for i, k in enumerate(keys)])
    pages = list(things.scan(batch_size=7))
    ids = [things.id_of(r) for page in pages for r in page]
    assert sorted(ids) == sorted(str(k) for k in keys) and len(set(ids)) == 30
    assert all(type(i) is str for i in ids)
    # Paging continues after a str id; get_many takes str ids (as read back from a progress file).
    assert [things.id_of(r) for r in things.read_page(None, ids[9], 5)] == ids[10:15]
    assert [things.id_of(r) for r in things.get_many([ids[3], str(uuid.UUID(int=1)), ids[0]])] == sorted(
        [ids[0], ids[3]], key=lambda i: ids.index(i)
    )
    with pytest.raises(DuplicateDataError):
        things.save_all([{"id": ids[4], "name": "again"}])


def test_uuid_primary_key_round_trips_through_the_progress(
    things: SqlStore, tmp_path: Any, stores: list[SqlStore]
) -> None:
    keys = [uuid.UUID(int=n * 7 + 3) for n in range(12)]
    things.save_all([{"id": k, "name": f"n{i}"} for i, k in enumerate(keys)])
    out = MemoryStore("out", "id")
    broken = {str(keys[5])}

    @migration(source="things", dest="out", cardinality=Cardinality.EXACTLY_ONE, batch_size=4,
               save_retry=Retry(times=0, delay=0), load_retry=Retry(times=0, delay=0))
    class CopyThings:
        def transform(self, aggregates: Any, record: Record) -> list[Record]:
            if str(record["id"]) in broken:
                raise RuntimeError("not yet")
            return [{"id": str(record["id"]), "name": record["name"]}]

    ledger_path = tmp_path / "run.db"
    first = MigrationService([things, out], [CopyThings], ledger=ledger_path).run()
    assert first.report("CopyThings").failed == 1
    progress = open_ledger(ledger_path).progress()
    entry = progress.migrations[f"{CopyThings.__module__}.{CopyThings.__qualname__}"]
    assert set(entry.failed) == broken and len(entry.succeeded) == 11
    assert all(type(i) is str for i in entry.succeeded)

    broken.clear()  # the retry fetches the failed record by its str id
    second = MigrationService([things, out], [CopyThings], ledger=ledger_path).run()
    assert second.ok, second.summary()
    report = second.report("CopyThings")
    assert (report.succeeded, report.failed) == (1, 0)  # only the failed one ran again
    assert sorted(r["id"] for r in out.records()) == sorted(str(k) for k in keys)


# --- PostgreSQL: COPY ---------------------------------------------------------------------

INT_DDL = "CREATE TABLE items (id bigint PRIMARY KEY, code text UNIQUE, n integer, name text NOT NULL)"


@pytest.fixture
def pg_items(postgres_url: str, stores: list[SqlStore]) -> SqlStore:
    engine = create_engine(postgres_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(INT_DDL))
    engine.dispose()
    store = SqlStore("items", postgres_url, "items")
    stores.append(store)
    return store


@pytest.fixture
def copy_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """(binary?, rows) for every COPY the stores run."""
    calls: list[tuple[bool, int]] = []
    real = copy_module.send_rows

    def spy(raw: Any, link: Any, plan: Any, rows: list[Record]) -> None:
        calls.append((plan.use_binary, len(rows)))
        real(raw, link, plan, rows)

    monkeypatch.setattr(copy_module, "send_rows", spy)
    return calls


def items(ids: range | list[int]) -> list[Record]:
    return [{"id": i, "code": f"c{i}", "n": i % 3, "name": f"name {i}"} for i in ids]


def test_plain_batches_go_through_binary_copy(pg_items: SqlStore, copy_calls: list[tuple[bool, int]]) -> None:
    pg_items.save_all(items(range(100)))
    pg_items.save_all(items(range(100, 103)))  # a small batch uses INSERT
    assert copy_calls == [(True, 100)]
    assert pg_items.count() == 103


def test_copy_commits_with_the_journal_entry_or_not_at_all(
    pg_items: SqlStore, copy_calls: list[tuple[bool, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_items.save_all(items(range(20)), journal=JournalEntry("m", "first"))
    assert [e.payload for e in pg_items.read_journal()] == ["first"]

    def failing_insert(*args: Any) -> bytes:
        return b"INSERT INTO no_such_table VALUES (1)"  # the journal insert fails after the COPY

    monkeypatch.setattr(postgres_module, "journal_insert", failing_insert)
    with pytest.raises(StoreUnusableError, match="no_such_table"):
        pg_items.save_all(items(range(20, 40)), journal=JournalEntry("m", "second"))
    assert copy_calls == [(True, 20), (True, 20)]  # a missing table is not a format: not sent again
    assert pg_items.count() == 20  # the second COPY was rolled back with the journal insert
    assert [e.payload for e in pg_items.read_journal()] == ["first"]


def test_copy_unique_violation_is_a_duplicate_and_saves_nothing(
    pg_items: SqlStore, copy_calls: list[tuple[bool, int]]
) -> None:
    import psycopg

    pg_items.save_all(items(range(10)))
    with pytest.raises(DuplicateDataError) as caught:
        pg_items.save_all(items(range(10, 21)) + items([4]), journal=JournalEntry("m", "x"))
    assert isinstance(caught.value.__cause__, psycopg.errors.UniqueViolation)
    assert "(id)=(4)" in str(caught.value) and "\n" not in str(caught.value)
    assert [r["id"] for r in caught.value.records] == [4]
    assert copy_calls[-1] == (True, 12)
    assert pg_items.count() == 10 and pg_items.read_journal() == []
    with pytest.raises(DuplicateDataError):  # a clash on another unique column, also by COPY
        pg_items.save_all([{**r, "id": r["id"] + 1000} for r in items(range(20))])


@pytest.mark.parametrize(
    ("bad", "message"),
    [({"name": None}, "null value"), ({"n": "not a number"}, "invalid input syntax")],
)
def test_copy_errors_that_are_not_duplicates_are_terminal(
    pg_items: SqlStore, bad: Record, message: str
) -> None:
    rows = items(range(20))
    rows[13] = {**rows[13], **bad}
    with pytest.raises(StoreError, match=message) as caught:
        pg_items.save_all(rows)
    assert type(caught.value) is TerminalStoreError
    assert pg_items.count() == 0


def test_values_copy_cannot_send_are_saved_as_insert_would(
    pg_items: SqlStore, copy_calls: list[tuple[bool, int]]
) -> None:
    # Floats for an integer column: binary COPY refuses them, text COPY too ("3.0"); INSERT casts.
    rows = [{**r, "n": float(r["n"])} for r in items(range(20))]
    pg_items.save_all(rows)
    assert [r["n"] for r in pg_items.read_page(None, None, 3)] == [0, 1, 2]
    # Ints as text for an integer column: binary refuses, text COPY takes them (and stays chosen).
    pg_items.save_all([{**r, "n": str(r["n"])} for r in items(range(20, 40))])
    pg_items.save_all([{**r, "n": str(r["n"])} for r in items(range(40, 60))])
    assert pg_items.count() == 60
    assert copy_calls[-1] == (False, 20)


def test_a_copy_is_committed_by_the_server_while_the_caller_reads(
    pg_items: SqlStore, copy_calls: list[tuple[bool, int]]
) -> None:
    write = pg_items.begin_save_all(items(range(20)), journal=JournalEntry("m", "p"))
    assert copy_calls == [(True, 20)]  # sent: the rows are on their way
    assert pg_items.read_page(None, None, 5) in ([], items(range(5)))  # on another connection
    write.wait()
    assert pg_items.count() == 20 and [e.payload for e in pg_items.read_journal()] == ["p"]


def test_rows_of_two_field_sets_go_as_two_copies_in_one_transaction(
    pg_items: SqlStore, copy_calls: list[tuple[bool, int]]
) -> None:
    rows = items(range(10)) + [{k: v for k, v in r.items() if k != "n"} for r in items(range(10, 20))]
    pg_items.save_all(rows, journal=JournalEntry("m", "p"))
    assert copy_calls == [(True, 10), (True, 10)]
    assert [r["n"] for r in pg_items.read_page(None, 7, 4)] == [2, 0, None, None]
    with pytest.raises(DuplicateDataError):  # the second COPY fails: the first is rolled back too
        pg_items.save_all(items(range(20, 30)) + [{"id": 5, "code": "x", "name": "y"}] * 9)
    assert pg_items.count() == 20


def test_an_interrupted_copy_commits_nothing_and_its_connection_is_dropped(
    pg_items: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = copy_module.send_rows

    class Interrupted(list):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[Record]:
            yield from self[:5]
            raise StopRequested("stop now")  # a second Ctrl-C, in the middle of the rows

    connects: list[Any] = []
    pg_items.save_all(items(range(100, 120)))  # a pooled connection exists
    event.listen(pg_items.engine, "connect", lambda *args: connects.append(1))
    monkeypatch.setattr(copy_module, "send_rows", lambda raw, link, plan, rows: real(raw, link, plan, Interrupted(rows)))
    with pytest.raises(StopRequested):
        pg_items.save_all(items(range(20)), journal=JournalEntry("m", "p"))
    monkeypatch.setattr(copy_module, "send_rows", real)
    pg_items.save_all(items(range(20)), journal=JournalEntry("m", "p"))
    assert pg_items.count() == 40 and len(pg_items.read_journal()) == 1
    assert connects == [1]  # the half-way connection was not put back in the pool


def test_a_duplicate_found_by_copy_keeps_the_connection(pg_items: SqlStore) -> None:
    pg_items.save_all(items(range(20)))
    connects: list[Any] = []
    event.listen(pg_items.engine, "connect", lambda *args: connects.append(1))
    for _ in range(3):
        with pytest.raises(DuplicateDataError):
            pg_items.save_all(items(range(15, 40)))
    pg_items.save_all(items(range(20, 40)))
    assert connects == [] and pg_items.count() == 40


def test_a_session_with_an_isolation_level_saves_by_insert(
    postgres_url: str, pg_items: SqlStore, stores: list[SqlStore], copy_calls: list[tuple[bool, int]]
) -> None:
    """Sent as one query, COPY and the journal row would not run at the level psycopg's BEGIN sets."""
    store = SqlStore("items", postgres_url, "items", create_engine_kwargs={"isolation_level": "SERIALIZABLE"})
    stores.append(store)
    store.save_all(items(range(20)), journal=JournalEntry("m", "p"))
    assert copy_calls == [] and store.count() == 20 and len(store.read_journal()) == 1


@pytest.mark.parametrize("database", ["postgresql"])
def test_copy_takes_json_and_uuid_as_text(typed: SqlStore, database: str, copy_calls: list[tuple[bool, int]]) -> None:
    rows = [row_for(database, i) for i in range(20)]
    typed.save_all(rows)
    assert copy_calls == [(False, 20)]  # json columns have no binary form psycopg writes
    assert_same_values(typed.get_many([5])[0], rows[5])


# --- MariaDB: multi-row INSERT ------------------------------------------------------------


def test_mariadb_sends_a_batch_as_multi_row_inserts(mysql_url: str, stores: list[SqlStore]) -> None:
    engine = create_engine(mysql_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(INT_DDL.replace("code text", "code varchar(40)")))
    engine.dispose()
    store = SqlStore("items", mysql_url, "items")
    stores.append(store)

    def com_insert() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(text("SHOW GLOBAL STATUS LIKE 'Com_insert'")).one()[1])

    before = com_insert()
    store.save_all(items(range(2000)), journal=JournalEntry("m", "p"))
    sent = com_insert() - before
    assert store.count() == 2000
    # 2000 rows and the journal entry: the rows in multi-row statements of up to 1 MB each (one
    # here), plus the journal's INSERT; other sessions may add a few of their own.
    assert sent < 20, f"{sent} INSERT statements for one batch"


# --- bounded reads ------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["postgresql", "mariadb"])
def test_a_page_fetches_only_limit_rows_from_the_server(db_url: str, stores: list[SqlStore]) -> None:
    store = created_store(db_url, "CREATE TABLE big (id bigint PRIMARY KEY, pad varchar(200))", "big", stores)
    store.save_all([{"id": i, "pad": "x" * 200} for i in range(20_000)])
    seen: list[tuple[str, int]] = []

    @event.listens_for(store.engine, "after_cursor_execute")
    def count_rows(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "FROM big" in statement:
            seen.append((statement, cursor.rowcount))

    try:
        page = store.read_page(None, 15_000, 100)
    finally:
        event.remove(store.engine, "after_cursor_execute", count_rows)
    assert [r["id"] for r in page] == list(range(15_001, 15_101))
    ((statement, fetched),) = seen
    assert "LIMIT" in statement.upper() and fetched == 100  # the driver received 100 rows, no more


def test_postgres_composite_pages_compare_row_values(postgres_url: str, stores: list[SqlStore]) -> None:
    engine = create_engine(postgres_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE pairs (a int, b text, PRIMARY KEY (a, b))"))
    engine.dispose()
    store = SqlStore("pairs", postgres_url, "pairs", key=("a", "b"))
    stores.append(store)
    rows = [{"a": a, "b": b} for a in range(50) for b in ("x", "y", "z")]
    store.save_all(list(reversed(rows)))
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        pages = list(store.scan(batch_size=7))
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert [r for page in pages for r in page] == rows
    assert "(pairs.a, pairs.b) >" in statements[1]  # an index range, not an OR of terms


def test_bulk_foreign_key_violation_is_terminal_not_duplicate(
    database: str, run_ddl: Callable[[str], None], db_url: str, stores: list[SqlStore]
) -> None:
    """Through each database's bulk path (COPY, multi-row INSERT), not only single rows."""
    run_ddl("CREATE TABLE parents (id bigint PRIMARY KEY)")
    run_ddl("CREATE TABLE children (id bigint PRIMARY KEY, parent_id bigint NOT NULL REFERENCES parents (id))")
    parents, children = SqlStore("parents", db_url, "parents"), SqlStore("children", db_url, "children")
    stores.extend([parents, children])
    parents.save_all([{"id": i} for i in range(10)])
    batch = [{"id": i, "parent_id": i % 10} for i in range(40)]
    batch[33] = {"id": 33, "parent_id": 999}
    with pytest.raises(StoreError) as caught:
        children.save_all(batch)
    assert type(caught.value) is TerminalStoreError
    assert children.count() == 0
    del batch[33]
    children.save_all(batch)
    assert children.count() == 39
