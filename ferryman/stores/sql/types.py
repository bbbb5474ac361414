"""Column types that give back what was saved, on every database.

SQLAlchemy's reflection is faithful on PostgreSQL. Elsewhere a few reflected types lose
information or refuse common values, so right after reflecting a table the store replaces them
with the types below (each dialect class's ``adapt_table``):

=================  ==============================  ====================================================
database           column                          read / written as
=================  ==============================  ====================================================
MariaDB            ``JSON`` (LONGTEXT + CHECK)     dict/list both ways (reflected as plain LONGTEXT)
MariaDB/MySQL      ``BOOL`` = ``TINYINT(1)``       ``bool`` (as MySQL's JDBC driver does); any non-zero
                                                   value reads as True
MariaDB/MySQL      ``DOUBLE``, ``REAL``            ``float``, as the driver reads it (SQLAlchemy's
                                                   reflection would give ``Decimal``)
MariaDB/MySQL      ``TIMESTAMP``                   aware UTC ``datetime``; an aware value is stored as
                                                   its instant, a naive one as UTC
MariaDB            ``UUID``                        ``uuid.UUID`` (the driver gives str); str accepted
every database     timestamp without time zone     naive ``datetime``; an aware value is converted to
                                                   UTC first (never its wall time with the offset lost)
MariaDB, SQLite    CHAR/VARCHAR/TEXT               str; a ``uuid.UUID`` is written as its str
=================  ==============================  ====================================================

Tables passed in as ``sqlalchemy.Table`` objects are used as given: their types are the caller's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.types import TypeDecorator, TypeEngine


def to_utc_naive(value: Any) -> Any:
    """An aware datetime as naive UTC; anything else unchanged."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


class NaiveUtcDateTime(TypeDecorator[datetime]):
    """A timestamp without time zone: aware values are stored as their UTC wall time."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return to_utc_naive(value)


class UtcTimestamp(TypeDecorator[datetime]):
    """MySQL's TIMESTAMP (an instant, kept in UTC by the session time zone the store sets)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return to_utc_naive(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class TextAcceptingUuid(TypeDecorator[str]):
    """A text column that also takes ``uuid.UUID`` values (as their canonical str)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return str(value) if isinstance(value, uuid.UUID) else value


class UuidAsText(TypeDecorator[uuid.UUID]):
    """MariaDB's native UUID: the driver speaks str, Python gets ``uuid.UUID``."""

    impl = String(36)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return str(value) if isinstance(value, uuid.UUID) else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return uuid.UUID(value) if isinstance(value, str) else value


class TinyIntBool(TypeDecorator[bool]):
    """MySQL's BOOL (TINYINT(1)): bool out; bool or int in."""

    impl = Integer
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return int(value) if isinstance(value, bool) else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else bool(value)


KEEP_DRIVER_VALUES = (NaiveUtcDateTime, UtcTimestamp, TextAcceptingUuid, UuidAsText, TinyIntBool)
"""The types above change only values a driver cannot take (datetimes, UUIDs, bools) and leave
str, int, float, bytes and None as they are; a bool becomes the int the driver would send."""


def sends_natives_unchanged(column_type: TypeEngine[Any], dialect: Any) -> bool:
    """True when SQLAlchemy would send str, int, float, bytes, bool and None values of this type
    to the driver unchanged (no bind processing, or only :data:`KEEP_DRIVER_VALUES`')."""
    if column_type._cached_bind_processor(dialect) is None:
        return True
    return (
        isinstance(column_type, KEEP_DRIVER_VALUES)
        and column_type.impl_instance._cached_bind_processor(dialect) is None
    )


def is_naive_timestamp(column_type: TypeEngine[Any]) -> bool:
    """A date-and-time type that stores no time zone."""
    return isinstance(column_type, DateTime) and not getattr(column_type, "timezone", False)


def is_text(column_type: TypeEngine[Any]) -> bool:
    return isinstance(column_type, String) and not isinstance(column_type, TypeDecorator)
