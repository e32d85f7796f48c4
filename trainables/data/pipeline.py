"""The one data entry point of a trial: load the pool, clean it, hold out the eval set, select the
subset, attach what the curriculum needs, describe it.

    load (formats) -> dedup + decontaminate (hygiene) -> split off eval -> [model scores] -> select
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainables.data.difficulty import attach_scores
from trainables.data.formats import (
    DataNotFound,
    Example,
    LoadReport,
    check_bad_rows,
    is_hub_id,
    load_examples,
    load_with_report,
    resolve_data_path,
)
from trainables.data.hygiene import decontaminate, dedup
from trainables.data.selection import needs_model, select
from trainables.schema.data import CurriculumConfig, DataConfig, SelectionConfig


@dataclass
class Prepared:
    train: list[Example]  # the selected subset, in ranking order (the curriculum orders it for training)
    eval: list[Example]
    stats: dict[str, Any] = field(default_factory=dict)  # go to results.csv and W&B (numbers, and `embedding`)
    removed: dict[str, list[str]] = field(default_factory=dict)  # why -> ids dropped by dedup / decontamination
    reports: list[LoadReport] = field(default_factory=list)  # per training file: rows, bad rows and why

    @property
    def selected_ids(self) -> list[str]:
        return [e.id for e in self.train]


@dataclass
class Pool:
    examples: list[Example]
    held_out: list[Example]
    removed: dict[str, list[str]]
    reports: list[LoadReport]


def load_pool(data: DataConfig) -> Pool:
    """All training files, deduplicated and decontaminated, with the held-out eval rows split off.
    The split is seeded by data.split_seed, not the trial seed, so every trial of a sweep is scored on
    the same held-out examples."""
    pool: list[Example] = []
    reports = []
    for path in data.train_files:
        examples, report = load_with_report(path, data.format, fields=data.fields, split=data.hf_split)
        check_bad_rows(report, data.max_bad_fraction)
        pool += examples
        reports.append(report)
    pool, removed = dedup(pool, data.dedup)
    if data.eval:
        held = load_examples(data.eval, data.format, field_name="data.eval", fields=data.fields,
                             split=data.hf_split, max_bad_fraction=data.max_bad_fraction)
    else:
        if len(pool) <= data.eval_size:
            raise ValueError(f"data.eval_size: {data.eval_size} leaves no training pool "
                             f"({len(pool)} rows in {data.train})")
        order = list(range(len(pool)))
        random.Random(data.split_seed).shuffle(order)
        held_idx = set(order[: data.eval_size])
        held = [pool[i] for i in order[: data.eval_size]]
        pool = [e for i, e in enumerate(pool) if i not in held_idx]
    # Decontamination comes after the split and touches only the training pool: the held-out rows stay
    # the same whichever evaluation sets a sweep uses, so eval_loss compares across sweeps.
    pool, dropped = decontaminate(pool, data.decontaminate, data.ngram, data.decontaminate_fields)
    removed.update(dropped)
    return Pool(pool, held, removed, reports)


def data_problems(data: DataConfig) -> list[str]:
    """One line per data path that resolves to nothing (training files, eval file, decontamination
    sets): the driver's preflight, before anything starts. Hub ids are left to load time."""
    named = [("data.train", f) for f in data.train_files] + [("data.decontaminate", f) for f in data.decontaminate]
    named += [("data.eval", data.eval)] if data.eval else []
    problems = []
    for field_name, path in named:
        if not is_hub_id(path):
            try:
                resolve_data_path(path, field_name)
            except DataNotFound as e:
                problems.append(str(e))
    return problems


def split_pool(data: DataConfig) -> tuple[list[Example], list[Example]]:
    """(selection pool, held-out eval) after hygiene."""
    p = load_pool(data)
    return p.examples, p.held_out


def subset_stats(examples: list[Example], n_tokens: Callable[[Example], int]) -> dict[str, float]:
    scores = [e.score for e in examples if e.score is not None]
    stats = {
        "n_examples": len(examples),
        "train_tokens": sum(n_tokens(e) for e in examples),
        "mean_response_chars": statistics.fmean(len(e.response_text) for e in examples) if examples else 0.0,
        "mean_score": statistics.fmean(scores) if scores else float("nan"),
    }
    for key in ("loss", "ifd"):  # model difficulty of the subset, where it was computed
        values = [e.meta[key] for e in examples if e.meta.get(key, float("nan")) == e.meta.get(key)]
        if values:
            stats[f"mean_{key}"] = statistics.fmean(values)
    return stats


def _scoring_sample(pool: list[Example], selection: SelectionConfig, seed: int) -> list[Example]:
    """The pool examples a model-based strategy scores: a fixed sample (data.split_seed, not the trial
    seed), so every trial and seed of a sweep shares one cached scoring pass."""
    if selection.score_pool is None or selection.score_pool >= len(pool):
        return pool
    picked = sorted(random.Random(seed).sample(range(len(pool)), selection.score_pool))
    return [pool[i] for i in picked]


def prepare(
    data: DataConfig, selection: SelectionConfig, seed: int, n_tokens: Callable[[Example], int], *,
    curriculum: CurriculumConfig | None = None, model: Any = None, tokenizer: Any = None,
    max_len: int | None = None, progress: bool = True,
) -> Prepared:
    """Pool -> selected subset + held-out eval + stats.

    model/tokenizer (the trial's base model, before LoRA) are needed only by model-based strategies
    (selection.strategy loss / ifd) and by curricula ordered by loss / ifd; scores land in Example.meta.
    max_len: the token length scoring truncates to (selection.score_max_len wins; default 512).
    """
    p = load_pool(data)
    score_kwargs = {
        "max_len": selection.score_max_len or max_len or 512, "batch_size": selection.score_batch_size,
        "progress": progress,
    }

    def need(what: str) -> None:
        if model is None or tokenizer is None:
            raise ValueError(f"{what} scores examples with the base model: pass model= and tokenizer= to prepare()")

    if needs_model(selection.strategy):
        need(f"selection.strategy {selection.strategy}")
        attach_scores(_scoring_sample(p.examples, selection, data.split_seed), model, tokenizer, **score_kwargs)
    chosen = select(p.examples, selection, seed, n_tokens)
    if curriculum is not None and curriculum.needs_model:
        need(f"curriculum.metric {curriculum.metric}")
        attach_scores([e for e in chosen if curriculum.metric not in e.meta], model, tokenizer, **score_kwargs)
    raw_rows = sum(r.rows for r in p.reports)
    stats = {
        "pool_rows": raw_rows, "bad_rows": sum(r.n_bad for r in p.reports), "pool_size": len(p.examples),
        **{f"removed_{why}": len(ids) for why, ids in p.removed.items()},
        **subset_stats(chosen, n_tokens),
    }
    if selection.strategy == "diversity":  # auto falls back to TF-IDF without a model: say which it was
        from trainables.data.selection.diversity import embedding_label

        stats["embedding"] = embedding_label(selection.embedding, selection.embedding_model)
    return Prepared(train=chosen, eval=p.held_out, stats=stats, removed=p.removed, reports=p.reports)
