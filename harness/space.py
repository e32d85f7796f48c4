"""Search space: YAML entries -> Ray Tune domains; ties and overrides -> a trial's full config.

Pure functions, so the expansion is testable without Ray running:
  param_space(search)            Ray Tune param_space (flat dotted keys; ties left out)
  resolve(base, params, space)   the full config dict of one trial (params + ties applied)
  grid_points(search)            the explicit grid (for --dry-run and tests)
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from harness.config import Param, SearchConfig, set_dotted


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


def tied_values(params: dict[str, Any], space: dict[str, Param]) -> dict[str, Any]:
    """Values of tied parameters, e.g. lora.alpha = 2 * lora.r. Integers stay integers."""
    out = {}
    for path, p in space.items():
        if p.kind == "tie":
            v = p.times * params[p.tie] + p.plus
            out[path] = int(v) if float(v).is_integer() and isinstance(params[p.tie], int) else v
    return out


def resolve(base: dict[str, Any], params: dict[str, Any], space: dict[str, Param]) -> dict[str, Any]:
    """The full config dict of one trial: base sweep config + sampled params + ties."""
    cfg = copy.deepcopy(base)
    full = {**params, **tied_values(params, space)}
    for path, value in full.items():
        set_dotted(cfg, path, value)
    return cfg


def grid_points(search: SearchConfig) -> list[dict[str, Any]]:
    """Cartesian product of grid/choice entries (and seeds), ties applied; one dict per trial."""
    axes = {path: (p.grid or p.choice) for path, p in search.space.items() if p.kind in ("grid", "choice")}
    if len(search.seeds) > 1 and "train.seed" not in axes:
        axes["train.seed"] = list(search.seeds)
    points = []
    for combo in itertools.product(*axes.values()):
        params = dict(zip(axes, combo, strict=True))
        points.append({**params, **tied_values(params, search.space)})
    return points * search.num_samples if search.algorithm == "grid" else points
