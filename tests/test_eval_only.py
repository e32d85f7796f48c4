"""Eval-only trials: base model (zero-/k-shot from the training pool) and a saved peft adapter,
evaluated without training; the Ray Tune function trainable reports the same metrics."""

from __future__ import annotations

import json
import math

import pytest

from harness.config import SweepConfig
from trainables.eval_trial import evaluate_config


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model

    from trainables.models import load_model

    torch.manual_seed(0)
    model, _, _ = load_model("smollm2-135m-instruct")
    # init_lora_weights=False: a random (non-zero) update, so the adapter visibly changes the scores.
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(out)
    return out


def sweep(**eval_kw) -> SweepConfig:
    return SweepConfig.model_validate({
        "name": "t", "data": {"train": "alpaca/alpaca_en_demo.json", "eval_size": 4},
        "eval": {"only": True, "perplexity": ["eval/evol_instruct_gt.json"], "perplexity_limit": 2, **eval_kw},
        "search": {"metric": "ppl_evol_instruct_gt"}, "resources": {"cpus_per_trial": 1},
    })


@pytest.mark.slow
def test_base_zero_shot_k_shot_and_adapter(adapter_dir, tmp_path):
    base = evaluate_config(sweep(heldout=True), tmp_path / "base")
    kshot = evaluate_config(sweep(icl_shots=2, heldout=True), tmp_path / "kshot")
    tuned = evaluate_config(sweep(adapter=str(adapter_dir), heldout=True), tmp_path / "adapter")
    for m in (base, kshot, tuned):
        assert math.isfinite(m["ppl_evol_instruct_gt"]) and m["model_load_seconds"] >= 0
        assert m["eval_perplexity"] == pytest.approx(math.exp(m["eval_loss"]))  # held-out rows, as trials report
    assert kshot["eval_loss"] != base["eval_loss"] and tuned["eval_loss"] != base["eval_loss"]
    assert kshot["icl_shots"] == 2 and kshot["ppl_evol_instruct_gt"] != base["ppl_evol_instruct_gt"]
    assert "adapter_load_seconds" in tuned and tuned["ppl_evol_instruct_gt"] != base["ppl_evol_instruct_gt"]


def test_an_evaluation_skips_the_training_pools_held_out_rows_unless_asked(tmp_path):
    # eval.only without eval.heldout: the benchmarks only, no eval_loss on rows of data.train (which an
    # evaluation of a model on its benchmarks never asked for).
    cfg = sweep()
    assert cfg.eval.heldout is None and not cfg.eval.scores_heldout
    m = evaluate_config(cfg, tmp_path / "eval")
    assert math.isfinite(m["ppl_evol_instruct_gt"])
    assert not {"eval_loss", "best_eval_loss", "eval_perplexity", "train_loss"} & set(m)
    assert "eval_loss" not in cfg.metrics() and "train_loss" not in sweep(heldout=True).metrics()


@pytest.mark.slow
def test_eval_trial_under_ray_tune(tmp_path):
    from ray import tune

    from trainables.eval_trial import eval_trial

    cfg = SweepConfig.model_validate({
        "name": "t", "eval": {"only": True, "generate": {"data": "eval/vicuna_question.jsonl", "limit": 1,
                                                         "max_new_tokens": 4}},
        "search": {"metric": "gen_new_tokens_mean", "space": {"eval.generate.temperature": {"grid": [0.0, 0.7]}}},
        "scheduler": {"type": "fifo"}, "wandb": {"enabled": False},
    })
    trainable = tune.with_parameters(eval_trial, base=cfg.model_dump(), storage=str(tmp_path))
    tuner = tune.Tuner(trainable, param_space={"eval.generate.temperature": tune.grid_search([0.0, 0.7])},
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="t"))
    results = tuner.fit()
    assert not results.errors and len(results) == 2
    assert {r.config["eval.generate.temperature"] for r in results} == {0.0, 0.7}
    for r in results:  # each trial generated into its own directory (its config.json is the driver's to write)
        pred = json.loads((tmp_path / "trials" / r.metrics["trial_id"] / "pred.json").read_text())
        assert len(pred) == 1 and r.metrics["gen_n"] == 1
