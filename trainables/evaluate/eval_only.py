"""Eval-only trials: evaluate a model without training (`eval.only: true`).

Two uses, both ordinary Ray Tune trials with the same metrics as trained ones:
  baselines        the base model zero-shot / k-shot (eval.icl_shots examples from the training pool)
  decoding sweeps  a finished trial's adapter (eval.adapter) under searched eval.generate.* settings,
                   no retraining (sweeps/decoding.yaml)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from trainables.paths import atomic_write_text


def load_for_eval(cfg: Any) -> tuple[Any, Any, dict[str, float]]:
    """Base model (+ peft adapter when eval.adapter is set), in eval mode."""
    import torch

    from trainables.models import load_model

    device = cfg.train.device if cfg.train.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, times = load_model(cfg.model.name, cfg.model.quantization, cfg.model.trust_remote_code,
                                         device)
    if cfg.eval.adapter:
        from peft import PeftModel

        t0 = time.perf_counter()
        model = PeftModel.from_pretrained(model, cfg.eval.adapter)
        if cfg.model.quantization == "none":
            model = model.merge_and_unload()  # same outputs, plain-model speed for generation
        times["adapter_load_seconds"] = time.perf_counter() - t0
    model.eval()
    return model, tokenizer, times


def icl_pool(cfg: Any) -> list | None:
    """The training pool (held-out rows excluded) when in-context examples are asked for."""
    if cfg.eval.icl_shots <= 0:
        return None
    from trainables.data.pipeline import split_pool

    return split_pool(cfg.data)[0]


def evaluate_config(cfg: Any, trial_dir: Path) -> dict[str, float]:
    """Load, evaluate, return metrics (no Ray needed: tests and scripts call this directly)."""
    import torch

    from trainables.evaluate import run_all

    torch.set_num_threads(max(1, int(cfg.resources.cpus_per_trial)))
    torch.manual_seed(cfg.train.seed)
    model, tokenizer, times = load_for_eval(cfg)
    metrics = run_all(cfg.eval, model, tokenizer, trial_dir, icl_pool(cfg))
    return {**times, **metrics, "seed": cfg.train.seed, "icl_shots": cfg.eval.icl_shots}


def eval_trial(config: dict[str, Any], *, base: dict[str, Any], run_dir: str) -> None:
    """Ray Tune function trainable. config: flat searched params ({"eval.generate.temperature": 0.7});
    base: SweepConfig.model_dump() of the sweep. Reports the metrics once."""
    from ray import tune

    from harness.config import SweepConfig
    from harness.space import resolve

    cfg = SweepConfig.model_validate(resolve(base, config, SweepConfig.model_validate(base).search.space))
    trial_dir = Path(run_dir) / "trials" / tune.get_context().get_trial_id()
    trial_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(trial_dir / "config.json", json.dumps(cfg.model_dump(mode="json"), indent=1))
    metrics = evaluate_config(cfg, trial_dir)
    # eval_loss keeps its meaning for eval-only trials when a held-out set is scored: not faked here.
    tune.report(metrics)
