"""Default settings, mjg's own: every batch 512, one retry after one second."""

from __future__ import annotations

DEFAULT_BATCH_SIZE = 512
"""Records per page read from a source or a matching store."""

DEFAULT_SAVE_BATCH_SIZE = 512
"""Outputs per ``save_all`` call (a transaction may hold several input records' outputs)."""

DEFAULT_RETRY_TIMES = 1
"""Extra attempts after the first one (mjg ``retryTimes``)."""

DEFAULT_RETRY_DELAY = 1.0
"""Seconds slept between attempts (mjg ``retryDelayInSeconds``)."""

DEFAULT_ORDER = 0
"""Manual ordering group of a migration or a match; lower runs first."""

DEFAULT_ALL_FAILED_LIMIT = 1_000
"""A migration whose first this-many records in a run all failed stops (the default failure
budget): a run where every record fails the same way ends in seconds, not after a million."""

FAILURE_RATIO_MIN_RECORDS = 1_000
"""A failure budget given as a ratio is judged once a run attempted this many records."""

PRELOAD_MAX_RECORDS = 100_000
"""A matched store with at most this many records (``Store.count()``) is loaded into memory once
per migration when its ``Match`` leaves ``preload`` to ferryman (``preload=None``)."""

PRELOAD_MAX_MB = 256.0
"""Memory budget of one preloaded store, in MB (its records as Python objects, estimated while
loading). A store that outgrows it is not preloaded: its matches are queried page by page."""

DEFAULT_VERIFY_SAMPLE = 1_000
"""Succeeded records a verification replays per migration, chosen at random, unless told to
replay all of them."""
