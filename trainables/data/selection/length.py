"""Longest first ("Long Is More for Alignment"): by response or whole-conversation length."""

from __future__ import annotations

from trainables.data.selection import strategy
from trainables.data.selection.common import sorted_ranking, text_lengths


@strategy("longest")
def longest(pool, cfg, seed: int) -> list[int]:
    return sorted_ranking(text_lengths(pool, cfg.length_by, cfg.length_unit), seed, descending=not cfg.ascending)


@strategy("longest_matched", budget_of="random")
def longest_matched(pool, cfg, seed: int) -> list[int]:
    """Longest first, but only as many as fit in the tokens of the random N-subset (same seed)."""
    return longest(pool, cfg, seed)
