"""A trial's config from the sweep's: ties and sampled values applied by dotted path (pure; no Ray).

  tied_values(params, space)     values of tied parameters (lora.alpha = 2 * lora.r)
  resolve(base, params, space)   the full config dict of one trial (params + ties applied)
  grid_points(search)            the explicit grid (for --dry-run and tests)
  trial_config(base, params)     the trial's validated SweepConfig: resolved and validated once, here
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from trainables.schema.dotted import set_dotted
from trainables.schema.sweep import Param, SearchConfig, SweepConfig
from trainables.secrets import expand, register


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


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> SweepConfig:
    """The trial's SweepConfig, validated once: the searched values in the sweep's config (ties applied), secret
    values resolved from this process's environment (the driver hands Ray the config masked), the judge's key
    variable treated as secret here too. Only the search space's entries are read before validation (the
    driver validated the whole sweep before it launched)."""
    space = {path: Param.model_validate(p) for path, p in ((base.get("search") or {}).get("space") or {}).items()}
    full = resolve(base, params, space)
    register(((full.get("eval") or {}).get("judge") or {}).get("api_key_env", ""))  # a name, never masked
    return SweepConfig.model_validate(expand(full))
