"""The one data entry point of a trial: load pool + eval set, select the subset, describe it."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from trainables.data.config import DataConfig, SelectionConfig
from trainables.data.formats import Example, load_examples
from trainables.data.selection import select


@dataclass
class Prepared:
    train: list[Example]
    eval: list[Example]
    stats: dict[str, float] = field(default_factory=dict)  # go to results.csv and W&B


def split_pool(data: DataConfig) -> tuple[list[Example], list[Example]]:
    """(selection pool, held-out eval). The split is seeded by data.split_seed, not the trial seed,
    so every trial of a sweep is scored on the same held-out examples."""
    pool = load_examples(data.train, data.format)
    if data.eval:
        return pool, load_examples(data.eval, data.format, field_name="data.eval")
    if len(pool) <= data.eval_size:
        raise ValueError(f"data.eval_size: {data.eval_size} leaves no training pool ({len(pool)} rows in {data.train})")
    order = list(range(len(pool)))
    random.Random(data.split_seed).shuffle(order)
    held = set(order[: data.eval_size])
    return [e for i, e in enumerate(pool) if i not in held], [pool[i] for i in order[: data.eval_size]]


def subset_stats(examples: list[Example], n_tokens: Callable[[Example], int]) -> dict[str, float]:
    scores = [e.score for e in examples if e.score is not None]
    return {
        "n_examples": len(examples),
        "train_tokens": sum(n_tokens(e) for e in examples),
        "mean_response_chars": statistics.fmean(len(e.response_text) for e in examples) if examples else 0.0,
        "mean_score": statistics.fmean(scores) if scores else float("nan"),
    }


def prepare(
    data: DataConfig, selection: SelectionConfig, seed: int, n_tokens: Callable[[Example], int]
) -> Prepared:
    pool, held_out = split_pool(data)
    chosen = select(pool, selection, seed, n_tokens)
    stats = {"pool_size": len(pool), **subset_stats(chosen, n_tokens)}
    return Prepared(train=chosen, eval=held_out, stats=stats)
