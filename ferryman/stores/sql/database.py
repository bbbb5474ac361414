"""SqlDatabase: one database, its tables as stores, one engine for them all.

A migration reads many tables of one database and writes a few of another; declaring each as
``SqlStore(name, url, table, key)`` repeats the URL and the key the database already knows.
``db.table("customers")`` (or ``db["customers"]``) is that store, named after its table, keyed
by the table's primary key, reflected when the store is first used (building stores never
connects). Every table of a database shares one engine, so one connection pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import URL, Engine, make_url

from ...redact import mask_secrets
from ..common import OnConflict
from .store import SqlStore


class SqlDatabase:
    """A database whose tables become :class:`SqlStore` objects.

    Args:
        url_or_engine: a database URL (the engine is built as :class:`SqlStore` builds it, and
            shared with every store on the same URL) or your own ``Engine``.
        schema: the default schema (PostgreSQL) or database (MySQL) of its tables.
        create_engine_kwargs: extra ``create_engine`` options, for a URL only.
    """

    def __init__(self, url_or_engine: str | URL | Engine, *, schema: str | None = None,
                 create_engine_kwargs: Mapping[str, Any] | None = None) -> None:
        if isinstance(url_or_engine, Engine):
            if create_engine_kwargs:
                raise ValueError("create_engine_kwargs only applies to a URL, not to an Engine")
            self._engine: str | URL | Engine = url_or_engine
            self.url = url_or_engine.url
        else:
            self.url = make_url(url_or_engine)
            self._engine = self.url
        self.schema = schema
        self._options = dict(create_engine_kwargs or {})

    def table(self, table: str, name: str | None = None, *, key: str | Sequence[str] | None = None,
              on_conflict: OnConflict = "error", schema: str | None = None,
              dataset: str | None = None) -> SqlStore:
        """The store of ``table``, named ``name`` (default: the table's name); ``key`` (default:
        the primary key, reflected), ``on_conflict``, ``schema`` and ``dataset`` are
        :class:`SqlStore`'s."""
        return SqlStore(
            table if name is None else name, self._engine, table, key, on_conflict=on_conflict,
            schema=self.schema if schema is None else schema, dataset=dataset,
            create_engine_kwargs=self._options or None,
        )

    def __getitem__(self, table: str) -> SqlStore:
        """``db["customers"]`` is ``db.table("customers")``."""
        return self.table(table)

    def __repr__(self) -> str:
        return f"SqlDatabase({mask_secrets(self.url.render_as_string(hide_password=False))!r})"
