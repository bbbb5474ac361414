"""MariaDB's saving ahead (``mysql_ahead.py``): a plain batch's transaction is sent as one query
and the caller goes on; ``wait`` tells its outcome, as ``save_all`` would have."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import created_store
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from ferryman.errors import DuplicateDataError
from ferryman.stores import JournalEntry, SqlStore
from ferryman.stores.base import SAVED


def items(ids: range) -> list[dict[str, Any]]:
    return [{"id": i, "code": f"c{i}", "n": i * 2} for i in ids]


@pytest.fixture
def mariadb_items(mysql_url: str, stores: list[SqlStore]) -> SqlStore:
    store = created_store(mysql_url, "CREATE TABLE items (id bigint PRIMARY KEY, code varchar(20) NOT NULL, "
                                     "n bigint)", "items", stores)
    store.save_all(items(range(0)), journal=JournalEntry("warm-up", ""))  # table reflected, journal made
    return store


def test_a_batch_commits_with_its_journal_row_after_the_caller_went_on(mariadb_items: SqlStore,
                                                                       mysql_url: str) -> None:
    locker = create_engine(mysql_url, poolclass=NullPool)
    with locker.connect() as conn:
        conn.execute(text("LOCK TABLES items WRITE"))  # the batch's INSERT waits for this session
        write = mariadb_items.begin_save_all(items(range(20)), journal=JournalEntry("m", "p"))
        assert write is not SAVED  # returned while its INSERT is still waiting
        assert conn.execute(text("SELECT count(*) FROM items")).scalar_one() == 0
        conn.execute(text("UNLOCK TABLES"))
    locker.dispose()
    write.wait()
    assert mariadb_items.count() == 20
    assert [e.payload for e in mariadb_items.read_journal("m")] == ["p"]


def test_a_duplicate_met_ahead_is_raised_by_wait_and_nothing_of_the_batch_is_kept(mariadb_items: SqlStore) -> None:
    mariadb_items.save_all(items(range(10)))
    write = mariadb_items.begin_save_all(items(range(8, 30)), journal=JournalEntry("m", "dup"))
    with pytest.raises(DuplicateDataError) as caught:
        write.wait()
    assert [r["id"] for r in caught.value.records] == [8, 9]  # named, as save_all names them
    assert mariadb_items.count() == 10 and mariadb_items.read_journal("m") == []


def test_an_upsert_is_saved_at_once(mysql_url: str, mariadb_items: SqlStore, stores: list[SqlStore]) -> None:
    """Only plain batches go ahead; ``on_conflict`` batches are saved before ``begin_save_all`` returns."""
    upserting = SqlStore("items", mysql_url, "items", on_conflict="update")
    stores.append(upserting)
    assert upserting.begin_save_all(items(range(5)), journal=JournalEntry("m", "u")) is SAVED
    assert upserting.count() == 5


def test_an_engine_of_your_own_without_multi_statements_saves_at_once(mysql_url: str, mariadb_items: SqlStore,
                                                                       stores: list[SqlStore]) -> None:
    engine = create_engine(mysql_url)
    store = SqlStore("items", engine, "items")
    stores.append(store)
    try:
        assert store.begin_save_all(items(range(20)), journal=JournalEntry("m", "own")) is SAVED
        assert store.count() == 20 and [e.payload for e in store.read_journal("m")] == ["own"]
    finally:
        engine.dispose()


def test_ferrymans_engines_ask_for_multi_statements_and_keep_the_urls_flags() -> None:
    from pymysql.constants import CLIENT
    from sqlalchemy import make_url

    from ferryman.stores.sql.dialects import dialect_for

    mysql = dialect_for("mysql")
    flags = mysql.engine_kwargs(make_url("mysql+pymysql://u@h/db?client_flag=32"), {})["connect_args"]["client_flag"]
    assert flags == 32 | CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS
    given = mysql.engine_kwargs(make_url("mysql+pymysql://u@h/db"), {"connect_args": {"client_flag": 2}})
    assert given["connect_args"] == {"client_flag": 2}  # the caller's own flags, as they are


def test_rows_of_more_than_one_statement_are_saved_at_once(mariadb_items: SqlStore, mysql_url: str) -> None:
    """One query holding several 1 MB statements could pass the server's max_allowed_packet."""
    engine = create_engine(mysql_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE wide (id bigint PRIMARY KEY, body longtext)"))
    engine.dispose()
    wide = SqlStore("wide", mysql_url, "wide")
    try:
        rows = [{"id": i, "body": "x" * 200_000} for i in range(10)]  # 2 MB: two statements or more
        assert wide.begin_save_all(rows, journal=JournalEntry("m", "wide")) is SAVED
        assert wide.count() == 10 and [e.payload for e in wide.read_journal("m")] == ["wide"]
    finally:
        wide.close()
