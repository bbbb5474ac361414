"""The built-in stores and the contract they share (see :mod:`ferryman.stores.base`)."""

from .base import JournalEntry, Store
from .memory import MemoryStore
from .sql import SqlStore

__all__ = ["JournalEntry", "MemoryStore", "SqlStore", "Store"]
