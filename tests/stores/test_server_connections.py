"""What a store says of its server's connections, and the workers a run starts from it."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import NullPool, create_engine

from ferryman import MemoryStore, ServerConnections, SqlStore, Store, migration
from ferryman.declare import spec_of
from ferryman.errors import StoreError
from ferryman.partitioned import workers_the_servers_take

HELD = 4
"""Connections a test holds open besides the store's own."""


@pytest.mark.parametrize("database", ["postgresql", "mariadb"])
def test_a_server_store_counts_the_connections_its_server_takes_and_has_open(request, database):
    url: str = request.getfixturevalue({"postgresql": "postgres_url", "mariadb": "mysql_url"}[database])
    held = create_engine(url, poolclass=NullPool)
    extra = [held.connect() for _ in range(HELD)]
    store = SqlStore("t", url, "t")
    try:
        with held.connect() as conn:
            if database == "postgresql":
                limit = int(conn.exec_driver_sql("SHOW max_connections").scalar_one()) - int(
                    conn.exec_driver_sql("SHOW superuser_reserved_connections").scalar_one())
                reserved = conn.exec_driver_sql("SELECT current_setting('reserved_connections', true)").scalar()
                limit -= int(reserved or 0)
            else:
                limit = int(conn.exec_driver_sql("SELECT @@GLOBAL.max_connections").scalar_one())
        found = store.server_connections()
        assert found is not None
        assert found.limit == limit
        assert HELD + 1 <= found.in_use <= limit + 10  # those held here, and the store's own
        assert found.free == max(found.limit - found.in_use, 0)
        assert found.server.startswith(f"{store.url.get_backend_name()}://") and "@" not in found.server
        assert store.url.database not in found.server  # one server, whichever database
    finally:
        store.close()
        for conn in extra:
            conn.close()
        held.dispose()


def test_stores_without_a_server_have_no_connections_to_count(sqlite_url):
    assert MemoryStore("m").server_connections() is None
    store = SqlStore("t", sqlite_url, "t")
    try:
        assert store.server_connections() is None
    finally:
        store.close()


class Counted(MemoryStore):
    """A store on a server with given connections (or one that cannot be asked)."""

    def __init__(self, name: str, counts: ServerConnections | Exception | None) -> None:
        super().__init__(name)
        self.counts = counts

    def server_connections(self) -> ServerConnections | None:
        if isinstance(self.counts, Exception):
            raise self.counts
        return self.counts


@migration(source="src", dest="dst", match=[])
class Copy:
    def transform(self, aggregates, record):
        return [record]


def workers_for(counts: dict[str, ServerConnections | Exception | None], workers: int) -> int:
    stores: dict[str, Store] = {name: Counted(name, c) for name, c in counts.items()}
    return workers_the_servers_take(spec_of(Copy), stores, workers)


def test_workers_are_as_many_as_asked_while_the_servers_have_room(caplog):
    roomy = ServerConnections("postgresql://db:5432", 100, 10)
    assert workers_for({"src": roomy, "dst": roomy}, 8) == 8  # 2 per worker, 90 free
    assert workers_for({"src": None, "dst": None}, 8) == 8  # files: nothing to count
    assert not caplog.records


def test_workers_are_fewer_when_a_server_lacks_connections_and_a_warning_says_why(caplog):
    tight = ServerConnections("postgresql://db:5432", 100, 93)  # 7 free
    with caplog.at_level(logging.WARNING, "ferryman"):
        assert workers_for({"src": tight, "dst": tight}, 8) == 3  # 2 per worker: both stores on it
        assert workers_for({"src": None, "dst": tight}, 8) == 7  # 1 per worker
    assert caplog.messages[0] == (
        "Copy: 3 worker(s) instead of 8: postgresql://db:5432 has 7 free connection(s) (93 in use of the 100 "
        "it takes) and each worker may open 2; raise its max_connections for more")


def test_a_full_server_still_gets_one_worker_and_an_unaskable_one_is_said(caplog):
    full = ServerConnections("mariadb://db:3306", 151, 160)
    with caplog.at_level(logging.WARNING, "ferryman"):
        assert workers_for({"src": None, "dst": full}, 4) == 1
        caplog.clear()
        assert workers_for({"src": StoreError("permission denied"), "dst": None}, 4) == 4
    assert caplog.messages == ["Copy: could not count the connections of store src's server (permission denied); "
                               "its workers start unchecked"]
