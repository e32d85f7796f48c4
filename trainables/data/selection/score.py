"""Quality-score selection (AlpaGasus-style top-N), and a weighted mix of length and score."""

from __future__ import annotations

import numpy as np

from trainables.data.selection import strategy
from trainables.data.selection.common import normalized, sorted_ranking, text_lengths


def _scores(pool, what: str) -> list[float]:
    scores = [float("nan") if e.score is None else e.score for e in pool]
    if all(s != s for s in scores):
        raise ValueError(f"selection.{what}: no example in the pool has a score; use a scored file "
                         "(e.g. alpaca/filtered_alpaca_1k_longest.json) or map a column with data.fields.score")
    return scores


@strategy("score")
def top_score(pool, cfg, seed: int) -> list[int]:
    """Highest score first; examples without a score are left out."""
    return sorted_ranking(_scores(pool, "strategy score"), seed, descending=not cfg.ascending)


@strategy("weighted")
def weighted(pool, cfg, seed: int) -> list[int]:
    """length_weight * norm(length) + score_weight * norm(score). A missing score counts as the pool's
    mean score (neither helps nor hurts)."""
    total = np.zeros(len(pool))
    if cfg.length_weight:
        total += cfg.length_weight * normalized(text_lengths(pool, cfg.length_by, cfg.length_unit), cfg.normalize)
    if cfg.score_weight:
        scores = np.asarray(_scores(pool, "score_weight"))
        scores[np.isnan(scores)] = np.nanmean(scores)
        total += cfg.score_weight * normalized(scores, cfg.normalize)
    return sorted_ranking(total.tolist(), seed, descending=not cfg.ascending)
