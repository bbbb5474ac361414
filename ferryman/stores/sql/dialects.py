"""The dialect classes ferryman knows, by SQLAlchemy dialect name; any other name gets the
generic :class:`~.dialect.SqlDialect`."""

from __future__ import annotations

from functools import cache

from ..common import OnConflict
from .dialect import SqlDialect
from .mysql import MySQLDialect
from .postgres import PostgreSQLDialect
from .sqlite import SQLiteDialect

DIALECTS: tuple[type[SqlDialect], ...] = (SQLiteDialect, PostgreSQLDialect, MySQLDialect)
"""A database ferryman knows its own way: one class here."""

_BY_NAME = {name: cls for cls in DIALECTS for name in cls.names}


@cache
def dialect_for(name: str) -> SqlDialect:
    """The dialect object for SQLAlchemy's dialect ``name`` (``URL.get_backend_name()``)."""
    return _BY_NAME.get(name, SqlDialect)(name)


def check_upsert(dialect: SqlDialect, on_conflict: OnConflict) -> None:
    """Raises:
        ValueError: ``on_conflict`` needs an upsert that ferryman does not know for ``dialect``.
    """
    if on_conflict != "error" and not dialect.upserts:
        supported = ", ".join(name for cls in DIALECTS if cls.upserts for name in cls.names)
        raise ValueError(f"on_conflict={on_conflict!r} is not supported on {dialect.name}; supported: {supported}")
