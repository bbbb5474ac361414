"""The PostgreSQL ledger: progress in a schema of a PostgreSQL database, readable from every
host that reaches it; the one owner of its tables (nothing outside reads them in SQL).

- :mod:`.location`: the ``postgresql://...?schema=NAME`` URL that names a ledger;
- :mod:`.schema`: the tables, their version, and the checks that refuse a schema this code must
  not touch;
- :mod:`.lease`: the lease row (one run at a time), on the database's clock, under the rules of
  :mod:`ferryman.progress.lease`;
- :mod:`.reader`: :class:`PostgresReader`, the read API the status server and the CLI use;
- :mod:`.writer`: :class:`PostgresLedger`, what a run writes to;
- :mod:`.importer`: imported progress written in one transaction.
"""

from .lease import PgLease
from .location import DEFAULT_SCHEMA, PgLocation, is_postgres_location
from .reader import PostgresReader
from .schema import SCHEMA_VERSION
from .writer import PostgresLedger, drop_ledger

__all__ = [
    "DEFAULT_SCHEMA",
    "SCHEMA_VERSION",
    "PgLease",
    "PgLocation",
    "PostgresLedger",
    "PostgresReader",
    "drop_ledger",
    "is_postgres_location",
]
