"""End-of-trial evaluations (perplexity, multiple choice, generation, LLM judge): a registry by name.

Each evaluator is one module that registers an `Evaluator`: whether the config switches it on, the
metric names it will produce (EvalConfig.metrics(), checked against search.metric before launch),
which of them are objectives and in which direction (`objectives`: name pattern -> "min" | "max";
counts and diagnostics match no pattern and cannot be search.metric), `check(cfg)` (the input problems it
can find before any work), `run(ctx)`, and `after`: the evaluators whose outputs it reads (the judge
reads generate's). They run in name order, each after those it names (`run_order`): generate, judge,
mcq, perplexity. Adding one: a module that registers its Evaluator, its name in the import line below,
and a test. `run_all` is what a trial calls at its end; `check_inputs` what it calls at its
start (and the driver's preflight calls `input_problems`, over every searched variant of the eval
section), so that an evaluation that cannot score its data fails before training.

An evaluation that cannot score what it was given raises EvalInputError (one line: the field and the
fix). A retry would fail the same way, so run_all leaves `eval_error.txt` in the trial dir and
check_inputs fails a retry of the same driver run at once, before it trains again; a later
`--resume --retry-errored` (another driver run) tries again.
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
    from trainables.schema.eval import EvalConfig


@dataclass
class EvalContext:
    cfg: EvalConfig
    model: Any
    tokenizer: Any
    trial_dir: Path
    train_pool: list[Example] | None = None
    shared: dict[str, Any] = field(default_factory=dict)  # e.g. "generations" for the judge


Direction = Literal["min", "max"]


class EvalInputError(ValueError):
    """An evaluation cannot score what it was given (data, references, a judge that scored nothing)."""


def _no_problems(cfg: EvalConfig) -> list[str]:
    return []


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

    check: Callable[[EvalConfig], list[str]] = _no_problems  # input problems found before any work
    after: tuple[str, ...] = ()  # evaluators that must run first (their outputs are this one's input)
    # Directions known only from the config (lm-eval tasks declare their own): metric -> direction; when set,
    # it answers instead of `objectives`.
    directions: Callable[[EvalConfig], Mapping[str, Direction | None]] | None = None

    def direction(self, metric: str, cfg: EvalConfig | None = None) -> Direction | None:
        if self.directions is not None and cfg is not None:
            return self.directions(cfg).get(metric)
        return next((d for pattern, d in self.objectives.items() if fnmatchcase(metric, pattern)), None)


class _OrderedRegistry(Registry[Evaluator]):
    def names_in_order(self) -> list[str]:
        """Run order: by name, each evaluator after the ones it declares in `after` (not import order)."""
        order: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in path:
                raise ValueError(f"evaluators {' -> '.join((*path, name))}: `after` goes round in a circle")
            for first in self.get(name).after:
                visit(first, (*path, name))
            if name not in order:
                order.append(name)

        for name in self.names():
            visit(name, ())
        return order


EVALUATORS: _OrderedRegistry = _OrderedRegistry("evaluator")

# Imported for their register side effect; the run order is names_in_order's, whatever the order here.
from trainables.evaluate import generate, judge, lmeval, mcq, mcq_data, perplexity  # noqa: E402,F401,I001


def _active(eval_cfg: EvalConfig) -> list[Evaluator]:
    return [EVALUATORS.get(n) for n in EVALUATORS.names_in_order() if EVALUATORS.get(n).enabled(eval_cfg)]


def input_problems(*eval_cfgs: EvalConfig) -> list[str]:
    """One line per input an enabled evaluator cannot use, over one or more variants of the eval section
    (searched levels; the driver's preflight) or the trial's own (check_inputs)."""
    return list(dict.fromkeys(p for cfg in eval_cfgs for ev in _active(cfg) for p in ev.check(cfg)))


FAILED = "eval_error.txt"  # in the trial dir: an EvalInputError and the driver run it happened in


def _driver_run() -> str:
    """The driver run this process works for (a retry of a trial stays in it; --resume is another)."""
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            return f"{ctx.get_session_name()}/{ctx.get_job_id()}"
    except Exception:  # noqa: BLE001 - outside Ray (tests, scripts) every call is its own run
        pass
    return ""


def check_inputs(eval_cfg: EvalConfig, trial_dir: Path) -> None:
    """Raise EvalInputError before a trial does any work when its evaluations cannot score their inputs,
    or when this trial already failed so in this driver run (a retry would only fail again)."""
    marker = Path(trial_dir) / FAILED
    if marker.exists():
        run, _, message = marker.read_text(encoding="utf-8").partition("\n")
        if run and run == _driver_run():
            raise EvalInputError(message)
        marker.unlink(missing_ok=True)  # another driver run's failure: try again
    problems = input_problems(eval_cfg)
    if problems:
        raise EvalInputError("; ".join(problems))


def run_all(
    eval_cfg: EvalConfig,
    model: Any,
    tokenizer: Any,
    trial_dir: Path,
    train_pool: list[Example] | None = None,
) -> dict[str, float]:
    """Run every configured evaluator on (model, tokenizer); files go under trial_dir. {} when none is on."""
    active = _active(eval_cfg)
    if not active:
        return {}
    trial_dir = Path(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    try:
        problems = input_problems(eval_cfg)  # again: the files may have changed since the trial started
        if problems:
            raise EvalInputError("; ".join(problems))
        return _run(active, EvalContext(eval_cfg, model, tokenizer, trial_dir, train_pool))
    except EvalInputError as e:
        from trainables.paths import atomic_write_text

        atomic_write_text(trial_dir / FAILED, f"{_driver_run()}\n{e}")
        raise


def _run(active: list[Evaluator], ctx: EvalContext) -> dict[str, float]:
    t0 = time.perf_counter()
    metrics: dict[str, float] = {}
    was_training = bool(getattr(ctx.model, "training", False))
    ctx.model.eval()  # dropout off: scores must not depend on the RNG
    try:
        for ev in active:
            metrics.update(ev.run(ctx))
    finally:
        if was_training:
            ctx.model.train()
    metrics["eval_seconds"] = time.perf_counter() - t0
    return metrics


def require_objective(metric: str, metrics: Mapping[str, Any]) -> None:
    """A trial's final report must carry the sweep's objective: the driver lifts Ray Tune's check of every
    report when the objective is only measured at the end (harness.sweep), so the trial checks its own."""
    if metric not in metrics:
        raise ValueError(f"search.metric: this trial's final report has no {metric!r} (the configured "
                         f"evaluations produced {', '.join(sorted(metrics)) or 'nothing'}); choose a metric they "
                         "produce")

