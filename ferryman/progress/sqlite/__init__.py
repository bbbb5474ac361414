"""The SQLite ledger: the one owner of the ledger's tables; nothing outside reads them in SQL.

- :mod:`.schema`: the tables, their version, upgrades of older files, and the checks that refuse
  a file this code must not touch;
- :mod:`.lease`: the lease row (one run at a time), under the rules of
  :mod:`ferryman.progress.lease`;
- :mod:`.reader`: :class:`SqliteReader`, the read API (:class:`~ferryman.progress.reader.LedgerReader`)
  the status server, the CLI and tests use;
- :mod:`.writer`: :class:`SqliteLedger`, what a run writes to (a :class:`~ferryman.progress.ledger.Ledger`);
- :mod:`.importer`: imported progress written in one transaction.
"""

from ..codec import decode_id, encode_id, encode_ids
from .lease import Lease, LeaseFile, current_holder
from .reader import SqliteReader
from .schema import FAILED_INDEX, SCHEMA_VERSION, is_ledger_file
from .writer import SqliteLedger

__all__ = [
    "FAILED_INDEX",
    "SCHEMA_VERSION",
    "Lease",
    "LeaseFile",
    "SqliteLedger",
    "SqliteReader",
    "current_holder",
    "decode_id",
    "encode_id",
    "encode_ids",
    "is_ledger_file",
]
