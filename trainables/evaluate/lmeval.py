"""lm-evaluation-harness tasks as an end-of-trial evaluation (eval.lm_eval).

The trial's model, already in memory with its adapter applied, is wrapped in lm-eval's HFLM (no reload from
disk) and lm_eval.simple_evaluate runs the configured tasks on it. Columns (docs/DESIGN.md, results.csv):
  lmeval_<task>_<metric>            every metric a task reports (acc, acc_norm, exact_match, ...); with a
                                    filter other than lm-eval's "none", lmeval_<task>_<metric>_<filter>.
                                    Direction from the task's own higher_is_better: any can be search.metric
  lmeval_<task>_<metric>_stderr     its standard error (when lm-eval computes one)
  lmeval_<task>_n_scored            documents scored (fewer than the task has when limit is set)
  lmeval_<task>_shots               few-shot examples per prompt the task ran with
  lmeval_seconds                    time of the whole evaluation
A group (e.g. mmlu) writes its leaf tasks' columns and, where it defines an aggregate, its own.
Every document's scores and prediction go to <trial_dir>/lmeval_<task>.json.
"""

from __future__ import annotations

import functools
import json
import re
import time
from typing import TYPE_CHECKING, Any

from trainables.evaluate import EVALUATORS, EvalContext, EvalInputError, Evaluator
from trainables.paths import atomic_write_text

if TYPE_CHECKING:
    from trainables.schema.eval import EvalConfig
    from trainables.schema.lm_eval import LMEvalConfig

INSTALL = "pip install -e '.[lm_eval]' torch==2.13.0 (lm-eval==0.4.13)"


def column(task: str, metric: str, filt: str = "none") -> str:
    """lmeval_<task>_<metric>[_<filter>] as a results.csv column (lm-eval names hold '-', ',' or '.')."""
    name = f"lmeval_{task}_{metric}" + ("" if filt == "none" else f"_{filt}")
    return re.sub(r"[^A-Za-z0-9_]+", "_", name)


@functools.lru_cache(maxsize=8)
def _task_manager(include_path: tuple[str, ...], defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_path) or None, include_defaults=defaults)


def _manager_for(tasks: tuple[str, ...], include_path: tuple[str, ...]) -> Any:
    """Only the include_path folders when they define every task (indexing lm-eval's ~15k built-in task
    files takes 10-40 s); lm-eval's own index as well otherwise."""
    if include_path:
        local = _task_manager(include_path, False)
        if all(t in local.all_tasks for t in tasks):
            return local
    return _task_manager(include_path, True)


@functools.lru_cache(maxsize=8)
def _resolve(tasks: tuple[str, ...], include_path: tuple[str, ...]) -> tuple[tuple[str, str | None], ...] | str:
    """(column, direction) of every metric the tasks report, or the one-line problem that stops them."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return f"lm-evaluation-harness is not installed; {INSTALL}"
    manager = _manager_for(tasks, include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f"nor defined by the YAML files under {', '.join(include_path)}" if include_path else \
            "and no include_path is set"
        return (f"unknown lm-eval task(s) {', '.join(map(repr, unknown))} (not built into lm-eval {where}); fix the "
                "name, or set eval.lm_eval.include_path to the folder of the task's YAML")
    try:
        loaded = manager.load_task_or_group(list(tasks))
    except Exception as e:  # noqa: BLE001 - a task whose data or YAML cannot be loaded; lm-eval's own words
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"lm-eval cannot load {', '.join(tasks)}: {type(e).__name__}: {first}; fix the task YAML or its data"
    return tuple(_declared(loaded))


def _declared(loaded: dict[str, Any]) -> list[tuple[str, str | None]]:
    from lm_eval.api.task import Task

    out: list[tuple[str, str | None]] = []
    for item in loaded.values():
        leaves = [item] if isinstance(item, Task) else item.get_all_tasks()
        best: dict[str, bool] = {}
        for t in leaves:
            hib = t.higher_is_better()
            best.update(hib)
            for metric in t._metric_fn_list:
                out += [(column(t.task_name, metric, f.name), "max" if hib.get(metric, True) else "min")
                        for f in t._filters]
            out += [(column(t.task_name, "n_scored"), None), (column(t.task_name, "shots"), None)]
        for agg in [] if isinstance(item, Task) else (item.aggregate_metric_list or []):
            for f in agg.filter_list or ["none"]:
                out.append((column(item.name, agg.metric, f), "max" if best.get(agg.metric, True) else "min"))
    return list(dict.fromkeys(out))


def _key(spec: LMEvalConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(spec.tasks), tuple(spec.include_path)


def task_problem(spec: LMEvalConfig) -> str | None:
    """Why these tasks cannot run (unknown name, lm-eval missing, data that does not load), or None."""
    res = _resolve(*_key(spec))
    return res if isinstance(res, str) else None


def check(cfg: EvalConfig) -> list[str]:
    problem = task_problem(cfg.lm_eval) if cfg.lm_eval else None
    return [f"eval.lm_eval.tasks: {problem}"] if problem else []


def directions(cfg: EvalConfig) -> dict[str, str | None]:
    res = _resolve(*_key(cfg.lm_eval)) if cfg.lm_eval else ()
    return {} if isinstance(res, str) else {**dict(res), "lmeval_seconds": None}


def metrics(cfg: EvalConfig) -> list[str]:
    return list(directions(cfg))


def run(ctx: EvalContext) -> dict[str, float]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    spec = ctx.cfg.lm_eval
    problem = task_problem(spec)
    if problem:
        raise EvalInputError(f"eval.lm_eval.tasks: {problem}")
    t0 = time.perf_counter()
    lm = HFLM(pretrained=ctx.model, tokenizer=ctx.tokenizer, batch_size=spec.batch_size or ctx.cfg.batch_size)
    out = simple_evaluate(model=lm, tasks=list(spec.tasks), num_fewshot=spec.num_fewshot, limit=spec.limit,
                          task_manager=_manager_for(*_key(spec)), apply_chat_template=spec.apply_chat_template,
                          log_samples=True, bootstrap_iters=1000)
    metrics = _columns(out)
    missing = [m for m, d in directions(ctx.cfg).items() if d and m not in metrics]
    if missing:
        raise EvalInputError(f"eval.lm_eval.tasks: lm-eval reported no {', '.join(missing)}; check the task "
                             "YAML's metric_list and filter_list")
    for task, samples in (out.get("samples") or {}).items():
        atomic_write_text(ctx.trial_dir / f"lmeval_{re.sub(r'[^A-Za-z0-9_]+', '_', task)}.json",
                          json.dumps({"results": out["results"].get(task), "samples": samples}, default=str,
                                     ensure_ascii=False, indent=1))
    metrics["lmeval_seconds"] = time.perf_counter() - t0
    return metrics


def _columns(out: dict[str, Any]) -> dict[str, float]:
    """lm-eval's results ('acc,none': 0.31, 'acc_stderr,none': 0.04) as lmeval_ columns."""
    metrics: dict[str, float] = {}
    for task, res in out["results"].items():
        for key, value in res.items():
            metric, sep, filt = key.partition(",")
            if sep and isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[column(task, metric, filt)] = float(value)
        n = (out.get("n-samples") or {}).get(task)
        if n:
            metrics[column(task, "n_scored")] = float(n["effective"])
        if task in (out.get("n-shot") or {}):
            metrics[column(task, "shots")] = float(out["n-shot"][task])
    return metrics


EVALUATORS.register("lm_eval")(Evaluator(enabled=lambda c: c.lm_eval is not None, metrics=metrics, run=run,
                                         check=check, directions=directions))
