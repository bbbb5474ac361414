"""SqlStore and its parts: engines, clauses, inserts per dialect, driver error mapping, journal."""

from .store import SqlStore

__all__ = ["SqlStore"]
