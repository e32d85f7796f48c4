"""Curricula: the order in which the selected examples are seen, epoch by epoch.

A curriculum returns one list of example indices per epoch. The total number of distinct
training examples stays as selected; only their order (and, for staged curricula, which
epochs see which part) changes. All randomness comes from the seed.

Difficulty (curriculum.metric), higher = harder:
  length  the token lengths the trial passes in
  score   the negated quality score (a lower-rated example is the harder one to learn well from)
  loss    response loss under the base model     } Example.meta, attached by prepare() when it is
  ifd     instruction-following difficulty        } given curriculum=, model= and tokenizer=
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from trainables.data.selection.common import sorted_ranking
from trainables.registry import Registry

Plan = Callable[..., "list[list[int]]"]  # (examples, cfg, epochs, seed, lengths) -> per-epoch index lists
CURRICULA: Registry[Plan] = Registry("curriculum")


def difficulty(examples, metric: str, lengths: list[int] | None) -> list[float]:
    """One value per example, higher = harder. Unknown values (NaN loss) count as hardest."""
    if metric == "length":
        if lengths is None or len(lengths) != len(examples):
            raise ValueError("curriculum.metric length: pass one token length per example")
        return [float(n) for n in lengths]
    if metric == "score":
        if any(e.score is None for e in examples):
            raise ValueError("curriculum.metric score: some selected examples have no score; use a scored file "
                             "or another metric")
        return [-float(e.score) for e in examples]
    values = []
    for e in examples:
        if metric not in e.meta:
            raise ValueError(f"curriculum.metric {metric}: examples carry no {metric!r}; call "
                             "prepare(..., curriculum=cfg.curriculum, model=model, tokenizer=tokenizer)")
        v = float(e.meta[metric])
        values.append(math.inf if math.isnan(v) else v)
    return values


def _shuffled(indices: list[int], rng: random.Random) -> list[int]:
    out = list(indices)
    rng.shuffle(out)
    return out


@CURRICULA.register("none")
def shuffled(examples, cfg, epochs: int, seed: int, lengths: list[int]) -> list[list[int]]:
    """A fresh seeded shuffle every epoch."""
    rng = random.Random(seed)
    return [_shuffled(list(range(len(examples))), rng) for _ in range(epochs)]


@CURRICULA.register("easy_to_hard")
def easy_to_hard(examples, cfg, epochs: int, seed: int, lengths: list[int]) -> list[list[int]]:
    """Every epoch in increasing difficulty (ties in seeded random order)."""
    order = sorted_ranking(difficulty(examples, cfg.metric, lengths), seed, descending=False)
    return [list(order) for _ in range(epochs)]


@CURRICULA.register("hard_to_easy")
def hard_to_easy(examples, cfg, epochs: int, seed: int, lengths: list[int]) -> list[list[int]]:
    """Every epoch in decreasing difficulty (anti-curriculum)."""
    order = sorted_ranking(difficulty(examples, cfg.metric, lengths), seed, descending=True)
    return [list(order) for _ in range(epochs)]


def levels(examples, cfg, seed: int, lengths: list[int] | None) -> list[list[int]]:
    """cfg.stages difficulty levels of (near-)equal size, cut at the quantiles of the difficulty."""
    order = sorted_ranking(difficulty(examples, cfg.metric, lengths), seed, descending=False)
    k = min(cfg.stages, len(order)) or 1
    return [order[len(order) * s // k: len(order) * (s + 1) // k] for s in range(k)]


@CURRICULA.register("staged")
def staged(examples, cfg, epochs: int, seed: int, lengths: list[int]) -> list[list[int]]:
    """Stage s trains on level s alone (cumulative: false) or levels 0..s (cumulative: true), each for
    epochs_per_stage epochs (default epochs // stages), shuffled within the stage. Epochs left over
    after the last stage train on everything. With fewer epochs than stages, consecutive stages share
    an epoch, so every example is still seen."""
    lv = levels(examples, cfg, seed, lengths)
    k = len(lv)
    stage_sets = [sum(lv[: s + 1], []) if cfg.cumulative else lv[s] for s in range(k)]
    everything = list(range(len(examples)))
    rng = random.Random(seed)
    if cfg.epochs_per_stage is None and epochs < k:
        return [sum((_shuffled(stage_sets[s], rng) for s in range(e * k // epochs, (e + 1) * k // epochs)), [])
                for e in range(epochs)]
    per = cfg.epochs_per_stage or epochs // k
    if per * k > epochs:
        raise ValueError(f"curriculum: {k} stages x {per} epochs_per_stage = {per * k} epochs, but train.epochs "
                         f"is {epochs}; raise train.epochs or lower curriculum.epochs_per_stage")
    return [_shuffled(stage_sets[e // per] if e < per * k else everything, rng) for e in range(epochs)]
