"""Subset selection. Every strategy is a *ranking*: pool indices in order of preference.

`select()` then applies what all strategies share: skip `offset`, take `n` examples or fill
`token_budget`. So one registry entry = one ranking function in its own module:

    @SELECTION.register("longest")
    def longest(pool: list[Example], cfg: SelectionConfig, seed: int) -> list[int]: ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from trainables.registry import Registry

if TYPE_CHECKING:
    from trainables.data.config import SelectionConfig
    from trainables.data.formats import Example

Ranking = Callable[["list[Example]", "SelectionConfig", int], "list[int]"]
SELECTION: Registry[Ranking] = Registry("selection strategy")


def select(
    pool: list[Example], cfg: SelectionConfig, seed: int, n_tokens: Callable[[Example], int] | None = None
) -> list[Example]:
    """Rank the pool with cfg.strategy, skip cfg.offset, then take n or fill the token budget."""
    ranking = SELECTION.get(cfg.strategy)(pool, cfg, seed)[cfg.offset:]
    if cfg.token_budget is None:
        return [pool[i] for i in ranking[: cfg.n]]
    if n_tokens is None:
        raise ValueError("selection.token_budget needs a token counter")
    chosen, total = [], 0
    for i in ranking:
        if total >= cfg.token_budget:
            break
        chosen.append(pool[i])
        total += n_tokens(pool[i])
    return chosen


# Strategies register themselves on import.
from trainables.data.selection import basic  # noqa: E402,F401
