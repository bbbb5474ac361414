"""The built-in stores and the contract they share (see :mod:`ferryman.stores.base`).

``MongoStore`` is imported on first use, so ``pymongo`` is needed only by those who use it.
"""

from typing import Any

from .base import JournalEntry, PendingWrite, ServerConnections, Store, key_ranges
from .memory import MemoryStore
from .sql import SqlDatabase, SqlStore

__all__ = [
    "JournalEntry", "MemoryStore", "MongoStore", "PendingWrite", "ServerConnections", "SqlDatabase", "SqlStore",
    "Store", "key_ranges",
]


def __getattr__(name: str) -> Any:
    if name == "MongoStore":
        from .mongo import MongoStore

        return MongoStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
