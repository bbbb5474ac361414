"""SqlStore and its parts, one concern per module.

``store.py`` (the Store), ``database.py`` (a database's tables as stores), ``clauses.py``
(filters, keyset conditions), ``inserts.py`` (the per-dialect insert registry), ``postgres.py``
/ ``mysql.py`` / ``sqlite.py`` (what each database does its own way: COPY, multi-row INSERTs,
sessions, reflected types), ``types.py`` (faithful column types), ``dialects.py`` (the
per-dialect registries besides inserting), ``engines.py`` (shared engines), ``driver_errors.py``
(driver errors to ferryman errors), ``driver.py`` (hot statements compiled once and run on the
DBAPI cursor), ``journal.py``.
"""

from .database import SqlDatabase
from .store import SqlStore

__all__ = ["SqlDatabase", "SqlStore"]
