"""Helpers shared by the sorted strategies: a tie-safe seeded sort, text lengths, normalisation."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np

from trainables.data.formats import Example
from trainables.data.hygiene import words


def sorted_ranking(values: Sequence[float], seed: int, descending: bool = True) -> list[int]:
    """Indices by value, NaN left out. Ties go in a seeded random order: file order would smuggle in
    whatever sorted the file (and score files hold hundreds of equal scores)."""
    tiebreak = list(range(len(values)))
    random.Random(seed).shuffle(tiebreak)
    keep = [i for i, v in enumerate(values) if not math.isnan(v)]
    sign = -1.0 if descending else 1.0
    return sorted(keep, key=lambda i: (sign * values[i], tiebreak[i]))


def text_lengths(pool: list[Example], by: str = "response", unit: str = "words") -> list[float]:
    """Length of each example's response (or whole conversation) in words (CJK: characters) or chars."""
    texts = (e.response_text if by == "response" else e.text for e in pool)
    return [float(len(words(t)) if unit == "words" else len(t)) for t in texts]


def normalized(values: Sequence[float], how: str) -> np.ndarray:
    """minmax -> [0, 1]; zscore -> mean 0, sd 1; rank -> average rank scaled to [0, 1]. A constant
    column becomes all zeros (it cannot rank anything)."""
    v = np.asarray(values, dtype=float)
    if how == "minmax":
        span = v.max() - v.min()
        return (v - v.min()) / span if span > 0 else np.zeros_like(v)
    if how == "zscore":
        sd = v.std()
        return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)
    if how == "rank":
        from scipy.stats import rankdata

        return (rankdata(v) - 1) / (len(v) - 1) if len(v) > 1 and v.std() > 0 else np.zeros_like(v)
    raise ValueError(f"unknown normalisation {how!r}")


POOL_COLUMNS = ("id", "conversation_words", "response_words", "score")


def pool_rows(pool: list[Example]) -> list[dict[str, object]]:
    """Each pool example's id, its lengths as the length strategies measure them (words; CJK: characters) and
    the score the score strategy ranks by ('' without one): the rows of a run's selection/pool_scores.csv."""
    conversation, response = text_lengths(pool, "conversation"), text_lengths(pool, "response")
    return [{"id": e.id, "conversation_words": int(c), "response_words": int(r),
             "score": "" if e.score is None else e.score} for e, c, r in zip(pool, conversation, response, strict=True)]
