"""The two baseline strategies: the file's first N, and a seeded random N."""

from __future__ import annotations

import random

from trainables.data.selection import strategy


@strategy("first")
def first(pool, cfg, seed: int) -> list[int]:
    return list(range(len(pool)))


@strategy("random")
def random_n(pool, cfg, seed: int) -> list[int]:
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    return order
