"""A PostgreSQL ledger's location: ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME]``.

The ledger's tables live in one PostgreSQL schema of that database: ``schema`` in the URL,
:data:`DEFAULT_SCHEMA` without it. Two independent runs keep separate ledgers on one server by
naming two schemas (or two databases); two runs on the same schema are one ledger, held by one
run at a time. The other query parameters are libpq's (``sslmode``, ``connect_timeout``...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ...errors import LedgerFileError
from ...redact import mask_secrets
from ..storage import is_postgres_location

__all__ = ["DEFAULT_SCHEMA", "PgLocation", "is_postgres_location"]

DEFAULT_SCHEMA = "ferryman"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_$]{0,62}")


@dataclass(frozen=True)
class PgLocation:
    """A parsed ledger URL."""

    conninfo: str
    """The URL without ``schema``: what libpq connects to."""
    schema: str
    shown: str
    """The URL as messages show it, its password masked."""

    @property
    def url(self) -> str:
        """The URL that names this ledger again (its password included)."""
        return f"{self.conninfo}{'&' if '?' in self.conninfo else '?'}schema={self.schema}"

    @classmethod
    def parse(cls, url: str) -> PgLocation:
        """Raises :class:`LedgerFileError` for a URL that names no database or a schema name
        that is not a plain lower-case SQL identifier."""
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for key, value in query if key == "schema"]
        schema = schemas[-1] if schemas else DEFAULT_SCHEMA
        shown = mask_secrets(url)
        if not _SCHEMA_NAME.fullmatch(schema):
            raise LedgerFileError(
                f"progress ledger {shown}: schema {schema!r} is not a plain lower-case SQL name "
                "(letters, digits, _; at most 63)")
        if not parts.path.strip("/"):
            raise LedgerFileError(f"progress ledger {shown} names no database (postgresql://USER@HOST/DB)")
        rest = urlencode([(key, value) for key, value in query if key != "schema"])
        conninfo = urlunsplit(parts._replace(scheme="postgresql", query=rest))
        return cls(conninfo, schema, shown)
