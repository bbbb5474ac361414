"""The SQLite ledger's random sample of succeeded ids (decoding only the ids it keeps) against
the read API's plain one (a reservoir over every decoded id)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ferryman.progress.reader import LedgerReader
from ferryman.progress.sqlite import SqliteLedger

MIGRATION = "shop.Copy"
ids = st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.text(max_size=5),
                st.tuples(st.integers(), st.text(max_size=3)))


@settings(max_examples=60, deadline=None)
@given(st.lists(ids, unique=True, max_size=80), st.integers(min_value=0, max_value=80),
       st.integers(min_value=1, max_value=60), st.integers())
def test_the_fast_sample_draws_from_the_same_ids(all_ids, split, k, seed):
    folded, logged = all_ids[:split], all_ids[split:]  # ids of an earlier run (folded) and of the last
    with tempfile.TemporaryDirectory() as directory, SqliteLedger(Path(directory) / "l.db") as ledger:
        ledger.start_migration(MIGRATION)
        ledger.record(MIGRATION, folded, [])
        ledger.finish_migration(MIGRATION, completed=True)
        ledger.start_migration(MIGRATION)  # folds the log into the per-id table
        ledger.record(MIGRATION, logged, [])
        ledger.finish_migration(MIGRATION, completed=True)
        expected = list(ledger.iter_succeeded(MIGRATION))
        fast, total = ledger.sample_succeeded(MIGRATION, k, random.Random(seed))
        slow, slow_total = LedgerReader.sample_succeeded(ledger, MIGRATION, k, random.Random(seed))
    assert total == slow_total == len(expected) == len(all_ids)
    for sample in (fast, slow):
        assert len(sample) == min(k, len(expected)) and len(set(map(repr, sample))) == len(sample)
        assert all(any(i == e and type(i) is type(e) for e in expected) for i in sample)  # ids keep their type
    if k >= len(expected):
        assert sorted(map(repr, fast)) == sorted(map(repr, expected))
