"""A uniform random sample of the ids a ledger holds, in one pass and bounded memory.

The ledger is read once, as a stream: :func:`reservoir` keeps ``k`` ids, whatever the number
of ids, and counts them on the way. It is Li's Algorithm L: after the reservoir fills, it draws
how many ids to skip before the next one that enters, and skips them with ``islice`` (in C), so
a sample of a thousand out of a million ids costs a few thousand random draws, not a million.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from itertools import count, islice
from operator import itemgetter
from typing import TypeVar

T = TypeVar("T")

_END = object()


def reservoir(items: Iterable[T], k: int, rng: random.Random) -> tuple[list[T], int]:
    """``k`` items of ``items`` chosen uniformly at random (all of them when there are fewer),
    and how many items there were."""
    counter = count()
    it = map(itemgetter(0), zip(items, counter))  # zip pulls ``counter`` once per item read
    kept: list[T] = list(islice(it, max(k, 0)))
    if k >= 1 and len(kept) == k:
        w = math.exp(math.log(_open01(rng)) / k)
        while w < 1.0:
            skip = math.floor(math.log(_open01(rng)) / math.log1p(-w))
            found = next(islice(it, skip, None), _END)
            if found is _END:
                break
            kept[rng.randrange(k)] = found  # type: ignore[assignment]  # an item, not _END
            w *= math.exp(math.log(_open01(rng)) / k)
    for _ in it:  # k < 1, or w reached 1.0 (never, in practice): count the rest
        pass
    return kept, next(counter)


def _open01(rng: random.Random) -> float:
    """A uniform draw in (0, 1): the logarithms above need it above zero."""
    while True:
        u = rng.random()
        if u > 0.0:
            return u
