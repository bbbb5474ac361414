"""SqlStore and its parts, one concern per module.

``store.py`` (the Store), ``database.py`` (a database's tables as stores), ``clauses.py``
(filters, keyset conditions), ``batch.py`` (a batch as the inserts see it), ``journal.py``,
``engines.py`` (shared engines), ``driver_errors.py`` (driver errors to ferryman errors),
``driver.py`` (hot statements compiled once and run on the DBAPI cursor), ``types.py``
(faithful column types), ``identity.py`` (where a store's data lives).

What a database does its own way is one object: ``dialect.py`` holds :class:`SqlDialect`, the
generic default, and each database ferryman knows has one subclass in its own module:
``sqlite.py``, ``postgres.py`` (with ``postgres_copy.py`` and ``postgres_link.py`` for COPY),
``mysql.py``; ``dialects.py`` lists them. Adding a database means adding one class there.
"""

from .database import SqlDatabase
from .store import SqlStore

__all__ = ["SqlDatabase", "SqlStore"]
