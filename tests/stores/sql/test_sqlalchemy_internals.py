"""The SQLAlchemy internals the SQL stores read, guarded.

The stores skip SQLAlchemy's per-row processing where it would change nothing: they ask a
compiled statement for its ``_bind_processors``, a type for its ``_cached_bind_processor``, and
a result for its ``_metadata._processors`` and ``cursor_strategy`` (``driver.py``, ``types.py``,
``sqlite.py``, ``postgres_copy.py``). None of that is public API, so pyproject.toml holds
SQLAlchemy below the next minor release, and these tests say what broke when a release moves
them: each checks that an internal still tells a plain column from one that needs processing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, bindparam, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from ferryman.stores.sql.driver import DriverStatement, unprocessed
from ferryman.stores.sql.types import sends_natives_unchanged

TABLE = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(10)),
              Column("doc", JSON))


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    TABLE.create(engine)
    yield engine
    engine.dispose()


def test_a_type_says_whether_it_processes_values_it_is_bound_with(engine: Engine) -> None:
    dialect = engine.dialect
    assert TABLE.c.id.type._cached_bind_processor(dialect) is None
    assert callable(TABLE.c.doc.type._cached_bind_processor(dialect))  # JSON: to its text
    assert sends_natives_unchanged(TABLE.c.name.type, dialect)
    assert not sends_natives_unchanged(TABLE.c.doc.type, dialect)


def test_a_compiled_statement_lists_the_parameters_it_processes(engine: Engine) -> None:
    with engine.connect() as conn:
        plain = DriverStatement.compile(select(TABLE.c.id).where(TABLE.c.id > bindparam("after")), conn)
        processed = DriverStatement.compile(select(TABLE.c.id).where(TABLE.c.doc == bindparam("doc")), conn)
    assert plain is not None and not plain.compiled._bind_processors
    assert processed is None  # a JSON parameter needs SQLAlchemy at every run


def test_a_result_says_whether_its_rows_need_processing(engine: Engine) -> None:
    from sqlalchemy.engine.cursor import _DEFAULT_FETCH  # noqa: F401 - fails to import when it moves

    with engine.connect() as conn:
        plain = conn.execute(select(TABLE.c.id, TABLE.c.name))
        assert unprocessed(plain)
        plain.close()
        processed = conn.execute(select(TABLE.c.id, TABLE.c.doc))
        assert not unprocessed(processed)  # JSON text becomes dicts and lists
        processed.close()
