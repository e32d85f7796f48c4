"""Subset selection. Every strategy is a *ranking*: pool indices in order of preference.

`select()` then applies what all strategies share: skip `offset`, take `n` examples or fill
`token_budget`. So one registry entry = one ranking function in its own module:

    @SELECTION.register("longest")
    def longest(pool: list[Example], cfg: SelectionConfig, seed: int) -> Iterable[int]: ...

A ranking may be lazy (a generator): select() only draws as many indices as it keeps, which is
what makes k-center diversity cheap on a large pool. A ranking may also leave indices out
(e.g. examples without a score). Strategies that need per-example scores from the base model
are marked with @model_scored; prepare() attaches those scores to Example.meta first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from trainables.registry import Registry

if TYPE_CHECKING:
    from trainables.data.config import SelectionConfig
    from trainables.data.formats import Example

Ranking = Callable[["list[Example]", "SelectionConfig", int], Iterable[int]]
SELECTION: Registry[Ranking] = Registry("selection strategy")


def model_scored(fn: Ranking) -> Ranking:
    """Mark a strategy that ranks by Example.meta["loss"/"ifd"] (computed by trainables.data.difficulty)."""
    fn.needs_model = True  # type: ignore[attr-defined]
    return fn


def needs_model(strategy: str) -> bool:
    return bool(getattr(SELECTION.get(strategy), "needs_model", False))


def matched(to: str) -> Callable[[Ranking], Ranking]:
    """Mark a variant that fills the token count of strategy `to`'s n-subset (same pool and seed)
    instead of taking n: e.g. longest examples *at the tokens of a random N*, so a comparison of
    the two is not just a comparison of training tokens. One registry name, so a 1-D grid over
    selection.strategy can hold it."""

    def mark(fn: Ranking) -> Ranking:
        fn.budget_of = to  # type: ignore[attr-defined]
        return fn

    return mark


def select(
    pool: list[Example], cfg: SelectionConfig, seed: int, n_tokens: Callable[[Example], int] | None = None
) -> list[Example]:
    """Rank the pool with cfg.strategy, skip cfg.offset, then take n or fill the token budget
    (the last example may overshoot the budget: totals land within one example of it)."""
    rank = SELECTION.get(cfg.strategy)
    budget = cfg.token_budget
    if budget is None and getattr(rank, "budget_of", None):
        if n_tokens is None:
            raise ValueError(f"selection.strategy {cfg.strategy} matches a token count: it needs a token counter")
        reference = select(pool, cfg.model_copy(update={"strategy": rank.budget_of}), seed, n_tokens)
        budget = sum(n_tokens(e) for e in reference)
    ranking = itertools.islice(rank(pool, cfg, seed), cfg.offset, None)
    if budget is None:
        return [pool[i] for i in itertools.islice(ranking, cfg.n)]
    if n_tokens is None:
        raise ValueError("selection.token_budget needs a token counter")
    chosen, total = [], 0
    for i in ranking:
        if total >= budget:
            break
        chosen.append(pool[i])
        total += n_tokens(pool[i])
    return chosen


# Strategies register themselves on import.
from trainables.data.selection import basic, diversity, length, model_based, score  # noqa: E402,F401
