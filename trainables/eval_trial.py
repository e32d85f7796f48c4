"""The eval-only trial: evaluate a model without training (`eval.only: true`); beside the training trial
(trainables/trial.py).

Two uses, both ordinary Ray Tune trials that report once:
  baselines        the base model zero-shot / k-shot (eval.icl_shots examples from the training pool),
                   with eval.heldout: true also the held-out eval_loss the LoRA trials report
  decoding sweeps  a finished trial's adapter (eval.adapter) under searched eval.generate.* settings,
                   no retraining (sweeps/decoding.yaml)
The held-out rows of data.train are scored only on request (eval.heldout): an evaluation of a model on
its benchmarks has no training pool to score.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trainables.secrets import masking_errors


def load_for_eval(cfg: Any) -> tuple[Any, Any, dict[str, float]]:
    """Base model (+ peft adapter when eval.adapter is set), in eval mode."""
    from trainables.data.prompt_template import use_prompt_template
    from trainables.models import load_model
    from trainables.training import pick_device

    device = pick_device(cfg.train.device)
    model, tokenizer, times = load_model(cfg.model.name, cfg.model.quantization, cfg.model.trust_remote_code,
                                         device)
    use_prompt_template(tokenizer, cfg.data.prompt_template)  # data.prompt_template replaces the chat template
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


def held_out_loss(cfg: Any, model: Any, tokenizer: Any, pool: list | None) -> dict[str, float]:
    """eval_loss on the same held-out rows that trained trials report, so a baseline sits in the same
    column as the LoRA trials. Zero-shot rows are encoded exactly as in training (truncated at
    train.max_seq_len); k-shot rows get the in-context turns in front (eval.max_len, cut from the left)."""
    import contextlib
    import math

    from trainables.data.pipeline import split_pool
    from trainables.data.tokenize import encode
    from trainables.evaluate.common import icl_messages, pad_id
    from trainables.evaluate.perplexity import score_examples
    from trainables.training import mean_loss

    held = split_pool(cfg.data)[1]
    icl = icl_messages(pool, cfg.eval.icl_shots, cfg.eval.icl_seed)
    if icl:
        scores = score_examples(model, tokenizer, held, batch_size=cfg.eval.batch_size, max_len=cfg.eval.max_len,
                                icl=icl)
        loss = sum(s for s, _ in scores) / max(1, sum(n for _, n in scores))
    else:
        enc = [encode(tokenizer, e.messages, cfg.train.max_seq_len) for e in held]
        device = str(next(model.parameters()).device.type)
        loss = mean_loss(model, enc, cfg.eval.batch_size, pad_id(tokenizer), device, contextlib.nullcontext)
    return {"eval_loss": loss, "best_eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50))}


def evaluate_config(cfg: Any, trial_dir: Path) -> dict[str, float]:
    """Load, evaluate, return metrics (no Ray needed: tests and scripts call this directly)."""
    import torch

    from trainables.evaluate import check_inputs, run_all

    check_inputs(cfg.eval, trial_dir)  # before the model loads: inputs an evaluation cannot score
    torch.set_num_threads(max(1, int(cfg.resources.cpus_per_trial)))
    torch.manual_seed(cfg.train.seed)
    model, tokenizer, times = load_for_eval(cfg)
    pool = icl_pool(cfg)
    held = {}
    if cfg.eval.scores_heldout:  # eval.heldout: true (baselines beside LoRA trials); an evaluation needs no pool
        with torch.no_grad():
            held = held_out_loss(cfg, model, tokenizer, pool)
    metrics = run_all(cfg.eval, model, tokenizer, trial_dir, pool)
    return {**times, **held, **metrics, "seed": cfg.train.seed, "icl_shots": cfg.eval.icl_shots}


@masking_errors
def eval_trial(config: dict[str, Any], *, base: dict[str, Any], storage: str) -> None:
    """Ray Tune function trainable. config: flat searched params ({"eval.generate.temperature": 0.7});
    base: SweepConfig.model_dump() of the sweep, masked (trainables/secrets.py); storage: the sweep's
    path or URI (trainables/storage.py). Reports the metrics once. The trial's config.json is the driver's
    (harness/results.py), written masked."""
    from ray import tune

    from trainables.distributed import trial_process, where
    from trainables.evaluate import require_objective
    from trainables.schema import trial_config
    from trainables.storage import Storage

    cfg = trial_config(base, config)
    store, rel = Storage(storage), f"trials/{tune.get_context().get_trial_id()}"
    trial_dir = store.workdir(rel)
    with trial_process():
        metrics = evaluate_config(cfg, trial_dir)
    require_objective(cfg.search.metric, metrics)
    store.push(rel)
    tune.report({**metrics, **where()})
