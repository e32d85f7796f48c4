"""The levels of a searched path and their combinations: pure functions over a validated sweep config.

  levels(cfg, "lora.r")                      [4, 8, 16] for a grid/choice entry, [8] when not searched
  combos(cfg, ["selection.strategy", ...])   every combination of those paths' levels, one dict each

Every pre-launch check and plan step that asks "which values will trials use" reads these, so the
driver expands the search space one way (Axolotl's pure sweep expansion). The trials themselves come
from harness.space (param_space, grid_points).
"""

from __future__ import annotations

import itertools
from typing import Any

from harness.config import SweepConfig, get_dotted
from harness.space import tied_values


def levels(cfg: SweepConfig, path: str) -> list[Any]:
    """The values `path` takes across the sweep's trials: a grid/choice entry's values, a tie applied to its
    target's levels, the configured value when the path is not searched, [] for a sampled range (uniform,
    loguniform, int: no finite set of levels). `train.seed` includes `search.seeds` when several are given
    (one more grid dimension, as harness.space.param_space makes it)."""
    p = cfg.search.space.get(path)
    if p is None:
        if path == "train.seed" and len(cfg.search.seeds) > 1:
            return list(cfg.search.seeds)
        return [get_dotted(cfg, path)]
    if p.kind == "tie":
        return [tied_values({p.tie: v}, {path: p})[path] for v in levels(cfg, p.tie)]
    return list(p.grid or p.choice or [])


def combos(cfg: SweepConfig, paths: list[str]) -> list[dict[str, Any]]:
    """Every combination of the levels of `paths` (cartesian product, in the order given); [{}] for no paths."""
    return [dict(zip(paths, combo, strict=True)) for combo in itertools.product(*(levels(cfg, p) for p in paths))]


def searched(cfg: SweepConfig, prefix: str | tuple[str, ...]) -> list[str]:
    """The grid/choice paths starting with `prefix` (e.g. "selection."), in the sweep file's order."""
    return [p for p, q in cfg.search.space.items() if p.startswith(prefix) and q.kind in ("grid", "choice")]
