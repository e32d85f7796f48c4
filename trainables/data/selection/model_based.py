"""Difficulty under the base model: response loss, and IFD (Cherry LLM: loss of the response with
the instruction / without it). The scores come from trainables.data.difficulty via prepare()."""

from __future__ import annotations

from trainables.data.selection import strategy
from trainables.data.selection.common import sorted_ranking


def _meta(pool, key: str) -> list[float]:
    values = [float(e.meta.get(key, float("nan"))) for e in pool]
    if all(v != v for v in values):
        raise ValueError(f"selection: no example carries a {key!r} score; prepare() computes them when given "
                         "model= and tokenizer=")
    return values


@strategy("loss", needs_model=True)
def by_loss(pool, cfg, seed: int) -> list[int]:
    """Highest response loss first (hardest for the base model); unscored examples are left out."""
    return sorted_ranking(_meta(pool, "loss"), seed, descending=not cfg.ascending)


@strategy("ifd", needs_model=True)
def by_ifd(pool, cfg, seed: int) -> list[int]:
    """Highest IFD first. IFD >= ifd_max (default 1) means the instruction does not make the response
    easier to predict: Cherry LLM drops those as misaligned pairs."""
    values = _meta(pool, "ifd")
    if cfg.ifd_max is not None:
        values = [v if v < cfg.ifd_max else float("nan") for v in values]
    return sorted_ranking(values, seed, descending=not cfg.ascending)
