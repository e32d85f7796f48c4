"""Longest first ("Long Is More for Alignment"): by response or whole-conversation length."""

from __future__ import annotations

from trainables.data.selection import SELECTION
from trainables.data.selection.common import sorted_ranking, text_lengths


@SELECTION.register("longest")
def longest(pool, cfg, seed: int) -> list[int]:
    return sorted_ranking(text_lengths(pool, cfg.length_by, cfg.length_unit), seed, descending=not cfg.ascending)
