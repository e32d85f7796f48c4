"""Curricula: the order in which the selected examples are seen, epoch by epoch.

A curriculum returns one list of example indices per epoch. The total number of distinct
training examples stays as selected; only their order (and, for staged curricula, which
epochs see which part) changes.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from trainables.registry import Registry

Plan = Callable[..., "list[list[int]]"]  # (examples, cfg, epochs, seed, lengths) -> per-epoch index lists
CURRICULA: Registry[Plan] = Registry("curriculum")


@CURRICULA.register("none")
def shuffled(examples, cfg, epochs: int, seed: int, lengths: list[int]) -> list[list[int]]:
    """A fresh seeded shuffle every epoch."""
    rng = random.Random(seed)
    plan = []
    for _ in range(epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        plan.append(order)
    return plan
