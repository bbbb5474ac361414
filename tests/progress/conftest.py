"""Fixtures for the ledger contract: every durable ledger (an SQLite file, a PostgreSQL schema)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import ledgers
import pytest

KINDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=KINDS)
def ledger_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ledgers.Backend]:
    """A fresh durable ledger of each kind: an SQLite file, or a schema of its own on the
    PostgreSQL test server (dropped after the test)."""
    server = request.getfixturevalue("postgres_server_url") if request.param == "postgresql" else None
    yield from ledgers.backends(request.param, tmp_path, server)


@pytest.fixture(params=KINDS)
def ledger_factory(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], ledgers.Backend]]:
    """Makes fresh ledgers of one kind (one per hypothesis example), all dropped after the test."""
    server = request.getfixturevalue("postgres_server_url") if request.param == "postgresql" else None
    made: list[Iterator[ledgers.Backend]] = []

    def make() -> ledgers.Backend:
        backend = ledgers.backends(request.param, tmp_path_factory.mktemp("ledger"), server)
        made.append(backend)
        return next(backend)

    yield make
    for backend in made:
        backend.close()
