"""Search space: YAML entries -> Ray Tune domains; ties and overrides -> a trial's full config.

  param_space(search)            Ray Tune param_space (flat dotted keys; ties left out)
The pure half (resolve, tied_values, grid_points, trial_config) lives in trainables/schema/space.py, where
the trial can import it.
"""

from __future__ import annotations

from typing import Any

from trainables.schema.space import grid_points, resolve, tied_values  # noqa: F401 - the pure half, re-exported
from trainables.schema.sweep import Param, SearchConfig


def _domain(p: Param, algorithm: str) -> Any:
    from ray import tune

    if p.kind in ("grid", "choice"):
        values = p.grid if p.kind == "grid" else p.choice
        # A grid search enumerates choices too: every level of every factor is run.
        return tune.grid_search(values) if algorithm == "grid" or p.kind == "grid" else tune.choice(values)
    lo, hi = getattr(p, p.kind)
    if p.kind == "uniform":
        return tune.uniform(lo, hi)
    if p.kind == "loguniform":
        return tune.loguniform(lo, hi)
    return tune.randint(lo, hi + 1)  # YAML int ranges are inclusive; randint's upper bound is not


def param_space(search: SearchConfig) -> dict[str, Any]:
    """Ray Tune param_space. Seeds are one more grid dimension (`train.seed`) when several are given."""
    space = {path: _domain(p, search.algorithm) for path, p in search.space.items() if p.kind != "tie"}
    if len(search.seeds) > 1 and "train.seed" not in space:
        from ray import tune

        space["train.seed"] = tune.grid_search(list(search.seeds))
    return space
