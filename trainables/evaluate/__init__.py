"""End-of-trial evaluations (perplexity, multiple choice, generation, LLM judge): a registry by name.

Each evaluator is one module that registers an `Evaluator`: whether the config switches it on, the
metric names it will produce (EvalConfig.metrics(), checked against search.metric before launch),
which of them are objectives and in which direction (`objectives`: name pattern -> "min" | "max";
counts and diagnostics match no pattern and cannot be search.metric) and `run(ctx)`. They run in
registration order, so the judge sees the generation's outputs. `run_all` is what a trial calls at its end;
`data_problems` is what the driver's preflight calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trainables.registry import Registry

if TYPE_CHECKING:
    from trainables.data.formats import Example
    from trainables.evaluate.config import EvalConfig


@dataclass
class EvalContext:
    cfg: EvalConfig
    model: Any
    tokenizer: Any
    trial_dir: Path
    train_pool: list[Example] | None = None
    shared: dict[str, Any] = field(default_factory=dict)  # e.g. "generations" for the judge


Direction = Literal["min", "max"]


@dataclass(frozen=True)
class Evaluator:
    enabled: Callable[[EvalConfig], bool]
    metrics: Callable[[EvalConfig], list[str]]
    run: Callable[[EvalContext], dict[str, float]]
    # Which metrics can be search.metric, and whether lower ("min") or higher ("max") is better:
    # fnmatch patterns over the names `metrics` returns, tried in order, e.g. {"mcq_*acc": "max"}. A metric
    # no pattern matches, or one matched by a None pattern first (a count, a time, a cost), has no direction
    # and is refused as an objective.
    objectives: Mapping[str, Direction | None] = field(default_factory=dict)

    def direction(self, metric: str) -> Direction | None:
        return next((d for pattern, d in self.objectives.items() if fnmatchcase(metric, pattern)), None)


class _OrderedRegistry(Registry[Evaluator]):
    def names_in_order(self) -> list[str]:
        return list(self._items)


EVALUATORS: _OrderedRegistry = _OrderedRegistry("evaluator")

# Registration order = run order (generate before judge). Imported for their @register side effect.
from trainables.evaluate import generate, judge, mcq, mcq_data, perplexity  # noqa: E402,F401,I001


def run_all(
    eval_cfg: EvalConfig,
    model: Any,
    tokenizer: Any,
    trial_dir: Path,
    train_pool: list[Example] | None = None,
) -> dict[str, float]:
    """Run every configured evaluator on (model, tokenizer); files go under trial_dir. {} when none is on."""
    active = [EVALUATORS.get(n) for n in EVALUATORS.names_in_order() if EVALUATORS.get(n).enabled(eval_cfg)]
    if not active:
        return {}
    trial_dir = Path(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    ctx = EvalContext(eval_cfg, model, tokenizer, trial_dir, train_pool)
    t0 = time.perf_counter()
    metrics: dict[str, float] = {}
    was_training = bool(getattr(model, "training", False))
    model.eval()  # dropout off: scores must not depend on the RNG
    try:
        for ev in active:
            metrics.update(ev.run(ctx))
    finally:
        if was_training:
            model.train()
    metrics["eval_seconds"] = time.perf_counter() - t0
    return metrics


def require_objective(metric: str, metrics: Mapping[str, Any]) -> None:
    """A trial's final report must carry the sweep's objective: the driver lifts Ray Tune's check of every
    report when the objective is only measured at the end (harness.sweep), so the trial checks its own."""
    if metric not in metrics:
        raise ValueError(f"search.metric: this trial's final report has no {metric!r} (the configured "
                         f"evaluations produced {', '.join(sorted(metrics)) or 'nothing'}); choose a metric they "
                         "produce")


def data_problems(*eval_cfgs: EvalConfig) -> list[str]:
    """One line per MCQ set or perplexity file that cannot be scored as configured, over one or more
    variants of the eval section (searched levels); each distinct set is read once."""
    checked: dict[str, list[str]] = {}
    for cfg in eval_cfgs:
        for spec in cfg.mcq_sets():
            key = "mcq" + spec.model_dump_json()
            if key not in checked:
                checked[key] = mcq_data.prepare(spec).problems
        for ps in cfg.perplexity:
            key = f"ppl{cfg.perplexity_limit}" + ps.model_dump_json()
            if key not in checked:
                checked[key] = perplexity.set_problems(ps, perplexity.load_set(ps, cfg.perplexity_limit)[1])
    return list(dict.fromkeys(line for lines in checked.values() for line in lines))
