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
