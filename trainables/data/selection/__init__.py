"""Subset selection. Every strategy is a *ranking*: pool indices in order of preference.

`select()` then applies what all strategies share: skip `offset`, take `n` examples or fill
`token_budget`. So one strategy = one ranking function in its own module, declared with what the
driver and select() need to know about it (a `Strategy` in SELECTION):

    @strategy("longest")
    def longest(pool: list[Example], cfg: SelectionConfig, seed: int) -> Iterable[int]: ...
    @strategy("loss", needs_model=True)           ranks by the base model's per-example scores
    @strategy("longest_matched", budget_of="random")   fills the tokens of random's n-subset

A ranking may be lazy (a generator): select() only draws as many indices as it keeps, which is
what makes k-center diversity cheap on a large pool. A ranking may also leave indices out
(e.g. examples without a score). For a strategy with needs_model, prepare() attaches the base
model's scores to Example.meta first. Adding one: a module here (imported at the end of this file)
and a test in tests/test_selection_strategies.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainables.registry import Registry

if TYPE_CHECKING:
    from trainables.data.formats import Example
    from trainables.schema.data import SelectionConfig

Ranking = Callable[["list[Example]", "SelectionConfig", int], Iterable[int]]


@dataclass(frozen=True)
class Strategy:
    """A selection strategy: its ranking, and what must happen before it can rank."""

    name: str
    rank: Ranking
    needs_model: bool = False  # ranks by Example.meta["loss"/"ifd"] (trainables.data.difficulty, base model)
    # Fill the token count of this strategy's n-subset (same pool and seed) instead of taking n: e.g. the
    # longest examples *at the tokens of a random N*, so comparing the two is not just comparing training
    # tokens. One name, so a 1-D grid over selection.strategy can hold it.
    budget_of: str | None = None


SELECTION: Registry[Strategy] = Registry("selection strategy")


def strategy(name: str, *, needs_model: bool = False, budget_of: str | None = None) -> Callable[[Ranking], Ranking]:
    """Declare the decorated ranking as strategy `name` in SELECTION (the function itself is returned as is)."""

    def declare(rank: Ranking) -> Ranking:
        SELECTION.register(name)(Strategy(name, rank, needs_model, budget_of))
        return rank

    return declare


def needs_model(name: str) -> bool:
    return SELECTION.get(name).needs_model


def select(
    pool: list[Example], cfg: SelectionConfig, seed: int, n_tokens: Callable[[Example], int] | None = None
) -> list[Example]:
    """Rank the pool with cfg.strategy, skip cfg.offset, then take n or fill the token budget
    (the last example may overshoot the budget: totals land within one example of it)."""
    chosen_strategy = SELECTION.get(cfg.strategy)
    budget = cfg.token_budget
    if budget is None and chosen_strategy.budget_of:
        if n_tokens is None:
            raise ValueError(f"selection.strategy {cfg.strategy} matches a token count: it needs a token counter")
        reference = select(pool, cfg.model_copy(update={"strategy": chosen_strategy.budget_of}), seed, n_tokens)
        budget = sum(n_tokens(e) for e in reference)
    ranking = itertools.islice(chosen_strategy.rank(pool, cfg, seed), cfg.offset, None)
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


# Strategies declare themselves on import.
from trainables.data.selection import basic, diversity, length, model_based, score  # noqa: E402,F401
