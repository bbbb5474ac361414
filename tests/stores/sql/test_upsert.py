"""Upserts act on the store's key alone, on every database: a clash on another unique key is a
duplicate (``handle_duplicate``), never an update of the other row nor a silent drop — which is
what MariaDB's ``ON DUPLICATE KEY UPDATE`` would do."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from ferryman.errors import DuplicateDataError
from ferryman.stores import SqlStore

URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}
DDL = "CREATE TABLE people (id INTEGER PRIMARY KEY, email VARCHAR(40) NOT NULL UNIQUE, n INTEGER NOT NULL)"


def _execute(url: str, *sql: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        for statement in sql:
            conn.execute(text(statement))
    engine.dispose()


def _rows(url: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text("SELECT id, email, n FROM people ORDER BY id"))]
    engine.dispose()
    return rows


@pytest.fixture(params=list(URL_FIXTURES))
def url(request) -> str:
    found: str = request.getfixturevalue(URL_FIXTURES[request.param])
    _execute(found, DDL, "INSERT INTO people VALUES (1, 'it@example.com', 1)")
    return found


@pytest.mark.parametrize("on_conflict", ["update", "ignore"])
def test_a_clash_on_another_unique_key_is_a_duplicate_and_changes_nothing(url, stores, on_conflict):
    store = SqlStore("people", url, "people", on_conflict=on_conflict)
    stores.append(store)
    with pytest.raises(DuplicateDataError) as clash:
        store.save_all([{"id": 2, "email": "it@example.com", "n": 2}])
    assert "email" in str(clash.value) or clash.value.columns == ("email",)
    assert _rows(url) == [(1, "it@example.com", 1)]  # the other row neither updated nor the record dropped
    store.save_all([{"id": 1, "email": "it@example.com", "n": 5}, {"id": 3, "email": "c@example.com", "n": 3}])
    kept = 5 if on_conflict == "update" else 1
    assert _rows(url) == [(1, "it@example.com", kept), (3, "c@example.com", 3)]


@pytest.mark.mysql
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.tuples(st.integers(1, 6), st.sampled_from(["own", "s1", "s2"]),
                                           st.integers(0, 9)), max_size=5, unique_by=lambda r: r[0]),
                        min_size=1, max_size=5),
       on_conflict=st.sampled_from(["update", "ignore"]))
def test_mariadb_upserts_as_on_conflict_on_the_key_would(mysql_url, batches, on_conflict):
    """Against a model of ``INSERT ... ON CONFLICT (id)``: stored ids are updated (or kept),
    new ones inserted; a new id whose email is taken fails its whole batch. An updated row's
    email is its own (``<id>-<n>``), so only inserts can clash."""
    _execute(mysql_url, "DROP TABLE IF EXISTS people", DDL)
    store = SqlStore("people", mysql_url, "people", on_conflict=on_conflict)
    model: dict[int, tuple[str, int]] = {}
    try:
        for batch in batches:
            rows = [{"id": i, "email": f"{i}-{n}" if kind == "own" or i in model else kind, "n": n}
                    for i, kind, n in batch]
            after = dict(model)
            for row in rows:
                if row["id"] not in after or on_conflict == "update":
                    after[row["id"]] = (row["email"], row["n"])
            emails = [email for email, _ in after.values()]
            clash = len(emails) != len(set(emails))
            if clash:
                with pytest.raises(DuplicateDataError):
                    store.save_all(rows)
            else:
                store.save_all(rows)
                model = after
            assert _rows(mysql_url) == sorted((i, e, n) for i, (e, n) in model.items())
    finally:
        store.close()
