"""A uniform random sample in one pass (Algorithm L): the right size, the right count, uniform."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from ferryman.sampling import reservoir


@given(st.lists(st.integers(), unique=True, max_size=300), st.integers(min_value=0, max_value=50),
       st.integers(min_value=0))
def test_a_reservoir_is_a_subset_of_the_right_size_with_the_right_count(items, k, seed):
    sample, n = reservoir(iter(items), k, random.Random(seed))
    assert n == len(items)
    assert len(sample) == min(k, len(items))
    assert len(set(sample)) == len(sample) and set(sample) <= set(items)


def test_a_reservoir_is_uniform():
    """Each of 10 items lands in a sample of 3 as often as random.sample puts it there."""
    rng = random.Random(7)
    ours: Counter[int] = Counter()
    theirs: Counter[int] = Counter()
    for _ in range(20_000):
        ours.update(reservoir(range(10), 3, rng)[0])
        theirs.update(rng.sample(range(10), 3))
    for item in range(10):  # 6,000 expected; 5 standard deviations is about 330
        assert abs(ours[item] - 6000) < 330 and abs(theirs[item] - 6000) < 330
